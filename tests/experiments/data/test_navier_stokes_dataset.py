"""The cached Navier-Stokes dataset (experiments.data.navier_stokes): the field-dataset API, the cache
(batch_size volatile), independent splits, striding, clear errors. The solver and the generator:
tests/operators/pde/test_navier_stokes.py."""
from __future__ import annotations

import numpy as np
import pytest

from experiments.data.navier_stokes import NavierStokesFlow
from experiments.data.store import split_rng
from operators.pde.navier_stokes import navier_stokes_grf

SMALL = dict(resolution=16, store_resolution=8, nu=1e-3, t_final=2, dt=0.01)


def test_field_dataset_api_cache_and_errors(tmp_path):
    pde = NavierStokesFlow(**SMALL, cache_dir=str(tmp_path), batch_size=4)
    assert (pde.in_channels, pde.out_channels, pde.n_snapshots) == (1, 2, 2)
    x, y = pde.load("train", 3, progress=False)
    assert x.shape == (3, 8, 8, 1) and y.shape == (3, 8, 8, 2) and x.dtype == y.dtype == np.float32
    assert len(list(tmp_path.iterdir())) == 1
    w0 = navier_stokes_grf(split_rng(0, "train"), 3, 16)                  # the split's stream, seed 0
    np.testing.assert_array_equal(x[..., 0], np.ascontiguousarray(w0[:, ::2, ::2], np.float32))
    x2, y2 = NavierStokesFlow(**SMALL, cache_dir=str(tmp_path), batch_size=1).load("train", 3, progress=False)
    np.testing.assert_array_equal(y, y2)                                   # batch_size is volatile: a cache hit
    assert len(list(tmp_path.iterdir())) == 1 and "batch_size" in pde.volatile_keys
    x_test, _ = pde.load("test", 3, progress=False)
    assert not np.allclose(x, x_test)                                      # independent splits
    assert pde.spatial_shape(4) == (4, 4) and pde.spatial_shape(8) == (8, 8)
    np.testing.assert_array_equal(pde.subsample(y, 4), y[:, ::2, ::2])
    with pytest.raises(ValueError, match=r"resolution 3 cannot be taken .* valid resolutions are .*\[8, 4, 2, 1\]"):
        pde.spatial_shape(3)
    with pytest.raises(ValueError, match="store_resolution=48 must divide"):
        NavierStokesFlow(resolution=64, store_resolution=48)
    with pytest.raises(ValueError, match="even number of points"):
        NavierStokesFlow(resolution=31, store_resolution=31)
    with pytest.raises(ValueError, match="positive whole number"):
        NavierStokesFlow(t_final=2.5)
    with pytest.raises(ValueError, match="nu > 0"):
        NavierStokesFlow(nu=0.0)
