"""The cached Burgers field dataset (experiments.data.burgers): determinism by seed, cache, striding,
clear errors. The solver and the generator: tests/operators/pde/test_burgers.py."""
from __future__ import annotations

import numpy as np
import pytest

from experiments.data.burgers import BurgersFlow
from operators.pde.burgers import cole_hopf


def test_dataset_is_deterministic_cached_and_strided(tmp_path):
    pde = BurgersFlow(resolution=128, n_steps=100, cache_dir=str(tmp_path))
    a, u = pde.load("train", 6, progress=False)
    assert a.shape == u.shape == (6, 128, 1) and a.dtype == np.float32
    assert len(list(tmp_path.iterdir())) == 1
    a2, u2 = BurgersFlow(resolution=128, n_steps=100, cache_dir=str(tmp_path)).load("train", 6, progress=False)
    np.testing.assert_array_equal(u, u2)
    a_test, _ = pde.load("test", 6, progress=False)
    assert not np.allclose(a, a_test)  # independent splits
    assert pde.spatial_shape(32) == (32,)
    np.testing.assert_array_equal(pde.subsample(u, 32), u[:, ::4])
    np.testing.assert_allclose(u[:, :, 0], cole_hopf(a[:, :, 0].astype(np.float64), 0.1, 1.0), atol=1e-6, rtol=0)


def test_bad_arguments_are_clear_errors():
    pde = BurgersFlow(resolution=128)
    with pytest.raises(ValueError, match=r"resolution 48 cannot be taken .* valid resolutions are .*64"):
        pde.spatial_shape(48)
    with pytest.raises(ValueError, match="even number of points"):
        BurgersFlow(resolution=101)
    with pytest.raises(ValueError, match="nu > 0"):
        BurgersFlow(nu=0.0)
