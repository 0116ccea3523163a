"""The Darcy task's normaliser against numpy statistics."""
import numpy as np

from experiments.tasks.pde import GaussianNormalizer


def test_normalizer_statistics():
    fields = np.random.default_rng(0).normal([2.0, -1.0], [3.0, 0.5], size=(50, 6, 6, 2))  # 2 channels
    mean, std = GaussianNormalizer("pointwise", eps=1e-5).fit(fields)
    np.testing.assert_allclose(mean, fields.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, fields.std(0) + 1e-5, rtol=1e-6)
    mean, std = GaussianNormalizer("global", eps=1e-5).fit(fields)
    assert mean.shape == std.shape == (6, 6, 2)
    for c in range(2):  # one statistic per channel, over samples and grid
        np.testing.assert_allclose(mean[..., c], fields[..., c].mean(), rtol=1e-6)
        np.testing.assert_allclose(std[..., c], fields[..., c].std() + 1e-5, rtol=1e-6)
    mean, std = GaussianNormalizer("none").fit(fields)
    assert mean.shape == std.shape == (6, 6, 2)
    assert (mean == 0).all() and (std == 1).all()


def test_validation_split_is_separate_data_and_becomes_the_objective(tmp_path):
    from experiments.tasks.pde import OperatorTask
    from operators.pde.darcy import DarcyFlow

    pde = DarcyFlow(resolution=33, cache_dir=str(tmp_path))
    task = OperatorTask(pde, n_train=6, n_test=4, n_val=3, train_resolution=17, test_resolutions=[33])
    task.setup(progress=False)
    assert list(task.evals) == ["test_s17", "val_s17", "test_s33"]
    assert task.objective.split == "val_s17"
    val, test, train = task.evals["val_s17"]["y"], task.evals["test_s17"]["y"], task.train["y"]
    assert val.shape == (3, 17, 17, 1)
    for other in (test, train):  # an independent random stream: no sample repeats another split's
        assert min(np.abs(v - o).max() for v in val for o in other) > 1e-3
    plain = OperatorTask(pde, n_train=6, n_test=4, train_resolution=17)
    assert plain.objective.split is None  # no validation split: the first test split, as before
