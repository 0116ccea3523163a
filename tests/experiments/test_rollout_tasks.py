"""Rollout (FNO-2D) and space-time (FNO-3D) tasks on trajectories with a known next-step operator."""
from __future__ import annotations

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from omegaconf import OmegaConf

from experiments.errors import UserInputError
from experiments.tasks.rollout import RolloutTask, SpaceTimeTask
from experiments.build import fit_model_config


class ShiftTrajectories:
    """Trajectories w_t(x, y) = w_0(x - t, y) on a periodic 8 x 8 grid (one cell per step), T snapshots.

    The exact next-step operator is a roll of the last snapshot by one cell along x.
    """

    in_channels, out_channels, volatile_keys = 1, 12, ()
    n_snapshots = 12

    def spatial_shape(self, resolution):
        if 8 % resolution:
            raise ValueError(f"resolution must divide 8, got {resolution}")
        return (resolution, resolution)

    def load(self, split, n, progress=True):
        rng = np.random.default_rng({"train": 0, "test": 1, "val": 2}[split])
        w0 = rng.standard_normal((n, 8, 8)).astype(np.float32)
        series = np.stack([np.roll(w0, t + 1, axis=1) for t in range(self.n_snapshots)], axis=-1)
        return w0[..., None], series

    def subsample(self, fields, resolution):
        return fields[:, ::8 // resolution, ::8 // resolution]


class RollLast(nnx.Module):
    """The exact next step: the window's last snapshot rolled by one cell along x."""

    def __call__(self, x):
        return jnp.roll(x[..., -1:], 1, axis=1)


class Zeros(nnx.Module):
    def __init__(self, out_shape_fn):
        self.out_shape_fn = out_shape_fn

    def __call__(self, x):
        return jnp.zeros(self.out_shape_fn(x.shape), x.dtype)


def _task(cls, **kw):
    task = cls(ShiftTrajectories(), n_train=6, n_test=4, t_in=4, t_out=5, train_resolution=8, **kw)
    task.setup(progress=False)
    return task


def test_rollout_of_the_exact_step_has_zero_error_and_the_naive_loss():
    task = _task(RolloutTask)
    batch = {k: jnp.asarray(v) for k, v in task.evals["test_s8"].items()}
    exact = task.metrics(RollLast(), batch, "test_s8")
    assert float(jnp.max(exact["rel_l2"].total)) < 1e-6
    assert set(exact) == {"rel_l2", "rel_l2_step", *(f"rel_l2_t{k}" for k in range(5, 10))}
    # A model that predicts the window's last snapshot unchanged: the error of step k is
    # ||w0(x - t) - w0(x - t_in)|| / ||w0||, computed here with a Python loop.
    frozen = lambda x: x[..., -1:]  # noqa: E731
    loss = task.loss(frozen, batch)
    x, y = np.asarray(batch["x"]), np.asarray(batch["y"])
    naive = np.mean([sum(np.linalg.norm(y[b, ..., k] - x[b, ..., -1]) / np.linalg.norm(y[b, ..., k])
                         for k in range(5)) for b in range(4)])
    np.testing.assert_allclose(float(loss), naive, rtol=1e-5)
    assert task.model_settings() == {"in_channels": 4, "out_channels": 1, "spatial_dims": 2}


def test_a_trajectory_dataset_missing_members_is_refused_naming_them_and_the_protocol():
    from experiments.data.navier_stokes import NavierStokesFlow
    from experiments.tasks.base import TrajectoryDataset

    class NoSnapshots(ShiftTrajectories):
        n_snapshots = property(lambda self: self.missing)  # hasattr is False: reading it raises AttributeError

    class NoSubsample:
        n_snapshots, volatile_keys = 12, ()
        spatial_shape, load = ShiftTrajectories.spatial_shape, ShiftTrajectories.load

    assert isinstance(NavierStokesFlow(resolution=16, store_resolution=8), TrajectoryDataset)
    assert isinstance(ShiftTrajectories(), TrajectoryDataset) and not isinstance(NoSubsample(), TrajectoryDataset)
    for cls, missing in ((NoSnapshots, "n_snapshots"), (NoSubsample, "subsample")):
        for task in (RolloutTask, SpaceTimeTask):
            with pytest.raises(UserInputError, match=rf"data\.pde \({cls.__name__}\) is not a TrajectoryDataset "
                                                     rf"\(experiments\.tasks\.base\.TrajectoryDataset\): it lacks "
                                                     rf"{missing}$"):
                task(cls(), t_in=4, t_out=5, train_resolution=8)


def test_rollout_window_and_errors():
    with pytest.raises(UserInputError, match="t_in"):
        RolloutTask(ShiftTrajectories(), t_in=10, t_out=5)  # 15 > 12 snapshots
    task = _task(RolloutTask)
    with pytest.raises(UserInputError, match="in_channels=4"):
        task.check_model(Zeros(lambda s: (*s[:-1], 2)), batch_size=2)
    task.check_model(RollLast(), batch_size=2)
    np.testing.assert_array_equal(task.train["y"][..., 0], np.roll(task.train["x"][..., -1], 1, axis=1))


def test_space_time_decodes_with_training_statistics_and_repeats_the_window():
    task = _task(SpaceTimeTask)
    batch = {k: jnp.asarray(v) for k, v in task.evals["test_s8"].items()}
    seen = {}

    class Probe(nnx.Module):
        def __call__(self, x):
            seen["shape"] = x.shape
            seen["x"] = x
            return jnp.zeros((*x.shape[:-1], 1), x.dtype)

    pred = task.predict(Probe(), batch)
    assert seen["shape"] == (4, 8, 8, 5, 4)
    train = task.train
    x_mean, x_std = train["x"].mean(0), train["x"].std(0) + 1e-5
    expect = (np.asarray(batch["x"]) - x_mean) / x_std
    for t in range(5):  # the same normalised window at every output time
        np.testing.assert_allclose(np.asarray(seen["x"])[..., t, :], expect, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(pred), np.broadcast_to(train["y"].mean(0), pred.shape), atol=1e-6)
    with pytest.raises(UserInputError, match="3-D model"):
        task.check_model(Zeros(lambda s: (*s[:-2], 1)), batch_size=2)  # drops the time axis
    assert task.model_settings()["spatial_dims"] == 3


def test_fit_model_config_changes_only_what_cannot_fit():
    cfg = OmegaConf.create({"in_channels": 1, "out_channels": 1, "modes": [12, 12], "width": 32})
    changes = fit_model_config(cfg, {"in_channels": 10, "out_channels": 1, "spatial_dims": 3})
    assert cfg.in_channels == 10 and list(cfg.modes) == [12, 12, 12] and cfg.width == 32
    assert changes == ["model.in_channels: 1 -> 10", "model.modes: [12, 12] -> [12, 12, 12]"]
    cfg = OmegaConf.create({"modes": [16, 8]})  # unequal: left for the model's own error
    assert fit_model_config(cfg, {"spatial_dims": 1}) == [] and list(cfg.modes) == [16, 8]
    cfg = OmegaConf.create({"d_model": 4})  # no such keys: nothing
    assert fit_model_config(cfg, {"in_channels": 3, "spatial_dims": 2}) == []
