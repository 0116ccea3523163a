"""The LPN training task: its batches and losses, the projected optimizer step, and the toy's oracles."""
from __future__ import annotations

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.special import erfc

from experiments.data.signals import LaplaceSignals, soft_threshold
from experiments.errors import UserInputError
from experiments.tables.lpn_laplacian import posterior_estimators
from experiments.tasks.inverse import ProxDenoising
from experiments.trainer import init_train_state, make_train_step
from lax_models.lpn import LPN, ConvexWeight
from optim.param_groups import ParamGroup, partition_optimizer


def laplace_task(**kw):
    task = ProxDenoising(LaplaceSignals(dim=1, n_test=50, grid_points=21), sigma=1.0, **kw)
    task.setup(progress=False)
    return task


def test_loss_schedule_l1_pretraining_then_gamma_stages():
    task = laplace_task(pretrain_steps=10, gammas=[0.5, 0.2, 0.1], stage_steps=5, steps_per_epoch=7)
    phases = [task.phase(s) for s in (0, 9, 10, 14, 15, 20, 1000)]
    assert phases == [(False, 0.1), (False, 0.1), (True, 0.5), (True, 0.5), (True, 0.2), (True, 0.1), (True, 0.1)]
    # the batch of global step 15 = epoch 2, batch 1 carries its phase; batches depend on (seed, step) only
    batch = list(task.train_batches(8, seed=3, epoch=2, start=1))[0]
    again = list(task.train_batches(8, seed=3, epoch=2))[1]
    assert np.all(batch["pm"] == 1.0) and np.allclose(batch["gamma"], 0.2)
    np.testing.assert_array_equal(batch["y"], again["y"])
    assert ProxDenoising(LaplaceSignals(), loss="l1").phase(10**6) == (False, ProxDenoising(LaplaceSignals()).gammas[-1])


def test_reference_gamma_ladder_and_bad_settings():
    task = ProxDenoising(LaplaceSignals(dim=16))
    np.testing.assert_allclose(task.gammas, [0.08 * 4 * f for f in (8, 4, 2, 1)])   # 0.08 sqrt(n) (8,4,2,1)
    with pytest.raises(UserInputError, match="data.loss"):
        ProxDenoising(LaplaceSignals(), loss="l3")
    with pytest.raises(UserInputError, match="data.sigma"):
        ProxDenoising(LaplaceSignals(), sigma=0.0)


def test_losses_and_metrics_against_numpy():
    task = laplace_task(gammas=[0.3])
    model = lambda y: 0.5 * y                                        # a stand-in denoiser
    batch = next(task.train_batches(16, seed=0, epoch=5))            # past pre-training: pm rows
    err = 0.5 * batch["y"][:, 0] - batch["x"][:, 0]
    assert float(task.loss(model, batch)) == pytest.approx(np.mean(1 - np.exp(-(err / 0.3) ** 2)), rel=1e-5)
    pre = next(task.train_batches(16, seed=0, epoch=0))
    err0 = 0.5 * pre["y"][:, 0] - pre["x"][:, 0]
    assert float(task.loss(model, pre)) == pytest.approx(np.mean(np.abs(err0)), rel=1e-5)
    task.loss_name = "l2"
    assert float(task.loss(model, batch)) == pytest.approx(np.mean(err ** 2), rel=1e-5)
    grid = task.evals["grid"]
    np.testing.assert_allclose(grid["prox"][:, 0], soft_threshold(np.linspace(-4, 4, 21), 1.0), atol=1e-6)
    m = task.metrics(model, {**grid, "gamma": np.full(21, 0.1, np.float32)}, "grid")
    np.testing.assert_allclose(np.asarray(m["prox_mae"].total), np.abs(0.5 * grid["y"] - grid["prox"])[:, 0],
                               rtol=1e-6)


def test_projection_keeps_convex_weights_non_negative_after_every_step():
    """The runner's path: parameter group {ConvexWeight: projection_non_negative} over Adam, the
    trainer's jitted step on the task's loss. Without the projection the same steps go negative."""
    task = laplace_task(pretrain_steps=3, gammas=[0.5], steps_per_epoch=12)

    def run(groups):
        model = LPN(dim=1, hidden=8, n_layers=3, rngs=nnx.Rngs(0))
        tx = partition_optimizer(lambda learning_rate: optax.adam(learning_rate), 1e-2, groups)
        graphdef, state = init_train_state(model, tx)
        step = jax.jit(make_train_step(graphdef, task.loss, tx))
        minima = []
        for batch in task.train_batches(64, seed=0, epoch=0):
            state, _ = step(state, batch)
            leaves = [v for v in jax.tree.leaves(state["params"], is_leaf=lambda v: isinstance(v, nnx.Variable))
                      if isinstance(v, ConvexWeight)]
            assert len(leaves) == 2
            minima.append(min(float(jnp.min(v[...])) for v in leaves))
        return np.array(minima)

    projected = run([ParamGroup("convex", variable_type=ConvexWeight,
                                projection=optax.projections.projection_non_negative)])
    assert np.all(projected >= 0.0)
    assert np.any(projected == 0.0)                                  # the projection was active
    assert np.any(run([]) < 0.0)                                     # and needed


def test_posterior_oracles_of_the_laplace_toy():
    """MMSE by quadrature == Tweedie's formula y + sigma^2 d/dy log p_y(y) on the closed-form marginal
    p_y = Laplace(0, 1) * N(0, 1); the posterior median is odd, zero on a dead zone's centre, ~ y - 1 far out."""
    def log_marginal(y):                                             # b = sigma = 1
        return np.log(np.exp(-y) * erfc((1 - y) / np.sqrt(2)) + np.exp(y) * erfc((1 + y) / np.sqrt(2)))

    y = np.linspace(-4, 4, 17)
    mmse, median = posterior_estimators(y)
    h = 1e-5
    tweedie = y + (log_marginal(y + h) - log_marginal(y - h)) / (2 * h)
    np.testing.assert_allclose(mmse, tweedie, atol=1e-6)
    np.testing.assert_allclose(median, -median[::-1], atol=1e-6)
    assert abs(median[8]) < 1e-9 and abs(median[-1] - 3.0) < 0.01
    assert np.all(np.abs(median[:9]) >= np.abs(soft_threshold(y, 1.0)[:9]))   # the median shrinks less
