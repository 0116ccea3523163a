"""Tests of the cached Darcy dataset (experiments.data.darcy): split streams, the cache, its key, DarcyFlow.
The generator's numerics are tested in tests/operators/pde/test_darcy_generator.py."""
import numpy as np
import pytest

from experiments.data.darcy import DarcyFlow, darcy_dataset
from experiments.data.store import cache_file_path, split_rng
from operators.pde.darcy import DarcyGenerator


def test_train_test_and_seeds_use_different_streams(tmp_path):
    generator = DarcyGenerator(17)
    train = darcy_dataset("train", 2, generator, seed=0, cache_dir=tmp_path, progress=False)
    test = darcy_dataset("test", 2, generator, seed=0, cache_dir=tmp_path, progress=False)
    other_seed = darcy_dataset("train", 2, generator, seed=1, cache_dir=tmp_path, progress=False)
    assert not np.array_equal(train["coeff"], test["coeff"])
    assert not np.array_equal(train["coeff"], other_seed["coeff"])


def test_darcy_dataset_generates_once_then_loads_the_same_arrays(tmp_path, monkeypatch):
    calls = []
    real_generate = DarcyGenerator.generate

    def counting_generate(*args, **kwargs):
        calls.append(args)
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(DarcyGenerator, "generate", counting_generate)
    first = darcy_dataset("train", 2, DarcyGenerator(17), cache_dir=tmp_path, progress=False)
    second = darcy_dataset("train", 2, DarcyGenerator(17), cache_dir=tmp_path, progress=False)
    assert len(calls) == 1
    assert len(list(tmp_path.glob("darcy-*.npz"))) == 1
    expected = real_generate(DarcyGenerator(17), split_rng(0, "train"), 2, progress=False)
    for key in ("coeff", "sol"):
        np.testing.assert_array_equal(first[key], expected[key])
        np.testing.assert_array_equal(second[key], expected[key])
        assert second[key].dtype == np.float32
    darcy_dataset("test", 2, DarcyGenerator(17), cache_dir=tmp_path, progress=False)
    assert len(calls) == 2 and len(list(tmp_path.glob("darcy-*.npz"))) == 2


def test_solver_is_volatile_and_threshold_cache_key_is_unchanged(tmp_path):
    old_key_config = {"split": "train", "n_samples": 2, "resolution": 17, "alpha": 2.0, "tau": 3.0,
                      "a_pos": 12.0, "a_neg": 3.0, "seed": 0, "rhs": 1.0}
    first = darcy_dataset("train", 2, DarcyGenerator(17), cache_dir=tmp_path, progress=False)
    assert cache_file_path("darcy", old_key_config, tmp_path, version=1).exists()
    recycled = darcy_dataset("train", 2, DarcyGenerator(17, solver="recycled"), cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("darcy-*.npz"))) == 1  # loaded, not regenerated
    np.testing.assert_array_equal(recycled["sol"], first["sol"])
    darcy_dataset("train", 2, DarcyGenerator(17, coefficient="lognormal"), cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("darcy-*.npz"))) == 2
    assert "solver" in DarcyFlow.volatile_keys
    with pytest.raises(ValueError, match="unknown Darcy solver 'lu'.*direct"):
        DarcyFlow(solver="lu")
    with pytest.raises(ValueError, match="unknown Darcy coefficient.*lognormal"):
        DarcyFlow(coefficient="gaussian")


def test_darcy_flow_loads_the_split_stream_and_strides(tmp_path):
    pde = DarcyFlow(resolution=17, seed=3, cache_dir=str(tmp_path))
    a, u = pde.load("val", 2, progress=False)
    assert a.shape == u.shape == (2, 17, 17, 1) and a.dtype == u.dtype == np.float32
    expected = DarcyGenerator(17).generate(split_rng(3, "val"), 2, progress=False)
    np.testing.assert_array_equal(a[..., 0], expected["coeff"])
    np.testing.assert_array_equal(u[..., 0], expected["sol"])
    assert pde.spatial_shape(9) == (9, 9)
    np.testing.assert_array_equal(pde.subsample(u, 9), u[:, ::2, ::2])
    with pytest.raises(ValueError, match="valid resolutions are"):
        pde.spatial_shape(10)
    with pytest.raises(ValueError, match="at least 3 points per axis"):
        DarcyFlow(resolution=2)
