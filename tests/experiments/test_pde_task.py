"""The operator task: its normaliser against numpy statistics, its splits and losses, and the check of its
field dataset (experiments.tasks.base.FieldDataset)."""
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
    from experiments.data.darcy import DarcyFlow

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


def test_hs_loss_option_uses_relative_hs_with_its_parameters_and_reports_rel_hs():
    import jax
    import jax.numpy as jnp
    import pytest

    from experiments.errors import UserInputError
    from experiments.tasks.pde import OperatorTask
    from operators.losses import relative_hs, relative_lp
    from experiments.data.darcy import DarcyFlow

    pde = DarcyFlow(resolution=33)  # nothing is generated: the loss is checked on given fields
    task = OperatorTask(pde, train_resolution=17, loss="hs", hs_a=[0.5, 0.1], hs_truncation=4)
    grid = (17, 17)
    rng = np.random.default_rng(0)
    task._y_stats[grid] = (jnp.asarray(rng.normal(size=(*grid, 1)), jnp.float32),
                           jnp.asarray(rng.uniform(1, 2, size=(*grid, 1)), jnp.float32))
    batch = {"x": jnp.asarray(rng.normal(size=(3, *grid, 1)), jnp.float32),
             "y": jnp.asarray(rng.normal(size=(3, *grid, 1)), jnp.float32)}
    model = lambda x: 0.5 * x  # noqa: E731
    pred = task.predict(model, batch)
    # the task's loss and metrics traced, as the runner calls them (one compilation each, not per operation)
    loss = jax.jit(lambda b: task.loss(model, b))(batch)
    np.testing.assert_allclose(loss, relative_hs(pred, batch["y"], a=(0.5, 0.1), truncation=4), rtol=1e-6)
    assert abs(float(loss) - float(relative_hs(pred, batch["y"]))) > 1e-4  # parameters used
    metrics = jax.eval_shape(lambda b: task.metrics(model, b, "test_s17"), batch)
    assert set(metrics) == {"rel_l2", "rel_h1", "rel_hs"}
    l2 = OperatorTask(pde, train_resolution=17)
    l2._y_stats = task._y_stats
    np.testing.assert_allclose(jax.jit(lambda b: l2.loss(model, b))(batch), relative_lp(pred, batch["y"]), rtol=1e-6)
    assert "rel_hs" not in jax.eval_shape(lambda b: l2.metrics(model, b, "test_s17"), batch)
    with pytest.raises(UserInputError, match="hs_truncation"):
        OperatorTask(pde, train_resolution=17, loss="hs", hs_truncation=0)
    with pytest.raises(UserInputError, match="'hs'"):
        OperatorTask(pde, train_resolution=17, loss="sobolev")


def test_a_field_dataset_missing_members_is_refused_naming_them_and_the_protocol():
    import pytest

    from experiments.data.darcy import DarcyFlow
    from experiments.errors import UserInputError
    from experiments.tasks.base import FieldDataset
    from experiments.tasks.pde import OperatorTask

    class NoChannels:
        volatile_keys = ()

        def spatial_shape(self, resolution):
            return (resolution, resolution)

        def load(self, split, n, progress=True):
            raise AssertionError("not reached")

    assert isinstance(DarcyFlow(resolution=33), FieldDataset) and not isinstance(NoChannels(), FieldDataset)
    with pytest.raises(UserInputError, match=r"data\.pde \(NoChannels\) is not a FieldDataset "
                                             r"\(experiments\.tasks\.base\.FieldDataset\): it lacks subsample, "
                                             r"in_channels, out_channels"):
        OperatorTask(NoChannels(), train_resolution=17)
