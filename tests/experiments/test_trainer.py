"""The trainer against oracles: one device == eight devices, resume == uninterrupted, NaN stops cleanly."""
from __future__ import annotations

import logging

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from experiments.metrics import read_metrics
from experiments.errors import NonFiniteLossError, UserInputError
from experiments.tasks.base import epoch_permutation
from experiments.distributed import global_mesh
from experiments.trainer import Trainer, TrainerConfig, init_train_state, make_train_step
from operators.fno import FNO
from operators.losses import relative_lp
from optim import adam

from toy_tasks import MLP, ToyRegressionTask


@pytest.fixture(scope="module")
def small_fno():
    """``nnx.split`` of a small FNO (lifting, one Fourier layer, projection) whose parameters are seeded
    NumPy draws (its own random init would spend seconds compiling one XLA kernel per parameter
    shape); each test merges its own copy."""
    graphdef, state = nnx.split(nnx.eval_shape(
        lambda: FNO(1, 1, modes=(3, 3), width=4, n_layers=1, projection_channels=8, rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(0)
    return graphdef, jax.tree.map(lambda x: jnp.asarray(rng.uniform(-0.5, 0.5, x.shape), x.dtype), state)


def _fno_step_on(n_devices: int, batch: dict, tx, fno):
    model = nnx.merge(*fno)
    graphdef, state = init_train_state(model, tx)
    mesh = global_mesh(n_devices)
    state = jax.device_put(state, NamedSharding(mesh, P()))
    batch = jax.device_put(batch, NamedSharding(mesh, P("data")))
    step = jax.jit(make_train_step(graphdef, lambda m, b: relative_lp(m(b["x"]), b["y"]), tx))
    new_state, scalars = step(state, batch)
    assert len(batch["x"].sharding.device_set) == n_devices
    return jax.device_get(new_state), float(scalars["loss"]), jax.device_get(state)


def _batch(seed: int) -> dict:
    """16 random input/target fields on an 8 x 8 grid: two per device of eight."""
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(16, 8, 8, 1)).astype(np.float32),
            "y": rng.normal(size=(16, 8, 8, 1)).astype(np.float32)}


def test_train_step_on_eight_devices_matches_one_device(small_fno):
    """Same loss and same update (SGD: update = -gradient) with the batch sharded over 8 devices."""
    assert jax.local_device_count() >= 8, "tests/conftest.py must provide 8 CPU devices"
    batch = _batch(0)
    s1, loss1, before = _fno_step_on(1, batch, optax.sgd(1.0), small_fno)
    s8, loss8, _ = _fno_step_on(8, batch, optax.sgd(1.0), small_fno)
    assert loss8 == pytest.approx(loss1, rel=1e-5)
    upd1 = jax.tree.leaves(jax.tree.map(lambda a, b: a - b, s1["params"], before["params"]))
    upd8 = jax.tree.leaves(jax.tree.map(lambda a, b: a - b, s8["params"], before["params"]))
    assert sum(np.abs(u).sum() for u in upd1) > 0  # the step did change the parameters
    for u1, u8 in zip(upd1, upd8):
        np.testing.assert_allclose(u8, u1, rtol=1e-4, atol=1e-7)


def test_adam_state_on_eight_devices_matches_one_device(small_fno):
    # Adam's first update is ~ lr * sign(g) and amplifies summation-order noise where g ~ 0, so the
    # oracle is its state: first and second moments, (1-b1) g and (1-b2) g^2.
    batch = _batch(1)
    s1, loss1, _ = _fno_step_on(1, batch, adam(1e-3, weight_decay=1e-4), small_fno)
    s8, loss8, _ = _fno_step_on(8, batch, adam(1e-3, weight_decay=1e-4), small_fno)
    assert loss8 == pytest.approx(loss1, rel=1e-5)
    for a1, a8 in zip(jax.tree.leaves(s1["opt_state"]), jax.tree.leaves(s8["opt_state"])):
        scale = float(np.abs(a1).max()) or 1.0
        np.testing.assert_allclose(a8, a1, rtol=1e-4, atol=1e-5 * scale)


def _fit(tmp_path, name, *, max_steps=40, devices=2, make_tx=None, ckpt_every=10, **kw):
    cfg = TrainerConfig(max_steps=max_steps, batch_size=8, log_every=5, ckpt_every=ckpt_every, devices=devices,
                        progress=False, plots=False, **kw)
    trainer = Trainer(cfg, tmp_path / name, seed=3, identity={"model": "mlp"})
    model = MLP(rngs=nnx.Rngs(0))
    make_tx = make_tx or (lambda spe, total: adam(optax.cosine_decay_schedule(1e-2, total)))
    return trainer.fit(model, make_tx, ToyRegressionTask())


def test_fit_learns_and_writes_logs(tmp_path):
    res = _fit(tmp_path, "run", max_steps=200, ckpt_every=200)  # one checkpoint, at the end
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    train_rows = [r for r in rows if "split" not in r]
    assert [r["step"] for r in train_rows] == list(range(5, 201, 5))
    assert train_rows[-1]["loss"] < 0.5 * train_rows[0]["loss"]
    y = ToyRegressionTask().evals["test"]["y"]
    assert res["metrics"]["test"]["mse"] < 0.05 * float(np.var(y))
    assert res["step"] == 200 and res["resumed_from_step"] == 0


def test_a_finished_run_extended_to_more_steps_continues_from_its_checkpoint(tmp_path, caplog):
    # A constant learning rate, so that the 20-step run is a prefix of the 40-step one. (Interruptions
    # are tested bit for bit in test_resume_exact.py.)
    const = lambda spe, total: adam(3e-3)  # noqa: E731
    full = _fit(tmp_path, "full", max_steps=40, make_tx=const)
    _fit(tmp_path, "split", max_steps=20, make_tx=const)             # stops at step 20 (checkpointed)
    with caplog.at_level(logging.WARNING, logger="experiments.trainer"):
        resumed = _fit(tmp_path, "split", max_steps=40, make_tx=const)   # same run dir: resumes at 20
    assert resumed["resumed_from_step"] == 20
    assert "written by a run of 20 steps; this run has 40" in caplog.text  # the schedule is rebuilt: said
    assert resumed["metrics"]["test"]["mse"] == pytest.approx(full["metrics"]["test"]["mse"], rel=1e-6)
    steps = [r["step"] for r in read_metrics(tmp_path / "split" / "metrics.jsonl") if "split" not in r]
    assert steps == sorted(set(steps))  # no duplicated rows after resume


def test_resume_refuses_a_shorter_run_than_the_checkpoint(tmp_path):
    _fit(tmp_path, "run", max_steps=20)
    with pytest.raises(UserInputError, match="checkpoint at step 20, past this run's length of 10"):
        _fit(tmp_path, "run", max_steps=10)


def test_resume_refuses_a_different_configuration(tmp_path):
    _fit(tmp_path, "run", max_steps=10)
    trainer = Trainer(TrainerConfig(max_steps=20, batch_size=8, devices=2, progress=False, plots=False),
                      tmp_path / "run", identity={"model": "something-else"})
    with pytest.raises(UserInputError, match="different configuration"):
        trainer.fit(MLP(rngs=nnx.Rngs(0)), lambda s, t: adam(1e-3), ToyRegressionTask())


def test_nan_loss_stops_with_clear_message_and_keeps_last_good_checkpoint(tmp_path):
    # SGD with an absurd learning rate: the parameters overflow within a few steps.
    def blow_up(spe, total):
        return optax.chain(optax.sgd(optax.piecewise_constant_schedule(1e-3, {12: 1e30})))
    with pytest.raises(NonFiniteLossError, match=r"became (nan|inf) at step \d+.*last good checkpoint is step 10"):
        _fit(tmp_path, "nan", max_steps=40, make_tx=blow_up)
    ckpts = sorted(int(p.name) for p in (tmp_path / "nan" / "checkpoints").iterdir() if p.name.isdigit())
    assert ckpts == [10]


def test_nan_before_any_checkpoint_says_so(tmp_path):
    with pytest.raises(NonFiniteLossError, match="no checkpoint had been saved yet"):
        _fit(tmp_path, "nan0", max_steps=40, make_tx=lambda spe, total: optax.sgd(1e30))


def test_batch_size_must_divide_over_devices(tmp_path):
    with pytest.raises(UserInputError, match="multiple of the number of devices"):
        Trainer(TrainerConfig(batch_size=6, devices=4), tmp_path)


def test_epoch_order_depends_only_on_seed_and_epoch():
    a, b = epoch_permutation(0, 3, 50), epoch_permutation(0, 3, 50)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, epoch_permutation(0, 4, 50))
    assert sorted(a) == list(range(50))


def test_eval_masks_padding(tmp_path):
    # 20 test samples, eval batch 8: the padded tail must not change the mean.
    trainer = Trainer(TrainerConfig(max_steps=1, batch_size=8, devices=2, progress=False, plots=False),
                      tmp_path)
    task = ToyRegressionTask()
    model = MLP(rngs=nnx.Rngs(1))
    graphdef, state = init_train_state(model, adam(1e-3))
    got = trainer.evaluate(task, graphdef, state)["test"]["mse"]
    x, y = task.evals["test"]["x"], task.evals["test"]["y"]
    want = float(jnp.mean((model(jnp.asarray(x)) - y) ** 2))
    assert got == pytest.approx(want, rel=1e-5)


def test_train_step_and_evaluation_compile_once(tmp_path):
    """30 steps with evaluation every 10: the loss is traced once and each eval split once."""
    traces = {"loss": 0, "metrics": 0}

    class CountingTask(ToyRegressionTask):
        def loss(self, model, batch):
            traces["loss"] += 1  # Python side effect: runs only while tracing
            return super().loss(model, batch)

        def metrics(self, model, batch, split):
            traces["metrics"] += 1
            return super().metrics(model, batch, split)

    cfg = TrainerConfig(max_steps=30, batch_size=8, log_every=5, ckpt_every=10, eval_every=10, devices=2,
                        progress=False, plots=False)
    Trainer(cfg, tmp_path).fit(MLP(rngs=nnx.Rngs(0)), lambda s, t: adam(1e-3), CountingTask())
    assert traces == {"loss": 1, "metrics": 1}


def test_logged_gradient_norm_and_optimizer_state_size(tmp_path):
    """The logged grad_norm is the global norm of the loss gradient; cost records the state sizes."""
    task = ToyRegressionTask()
    model = MLP(rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    batch = next(task.train_batches(8, seed=3, epoch=0))
    graphdef = nnx.graphdef(model)
    grads = jax.jit(jax.grad(lambda p: task.loss(nnx.merge(graphdef, p, nnx.state(model, nnx.Not(nnx.Param))),
                                                 batch)))(params)
    want = float(np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in jax.tree.leaves(grads))))
    cfg = TrainerConfig(max_steps=1, batch_size=8, log_every=1, devices=2, progress=False, plots=False)
    res = Trainer(cfg, tmp_path, seed=3).fit(model, lambda spe, total: adam(1e-3), task)
    row = next(r for r in read_metrics(tmp_path / "metrics.jsonl") if "grad_norm" in r)
    assert row["grad_norm"] == pytest.approx(want, rel=1e-5)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    assert res["cost"]["params_mb"] == pytest.approx(n_params * 4 / 2**20, abs=1e-3)
    # Adam keeps two moments per parameter (plus a step count): about twice the parameters.
    assert res["cost"]["optimizer_state_mb"] == pytest.approx(2 * n_params * 4 / 2**20, abs=1e-3)
