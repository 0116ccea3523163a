"""The training loop: data-parallel ``jax.jit`` steps, Orbax checkpoints, resume, logs, evaluation.

It knows nothing about any model or problem: a ``Task`` (experiments/tasks/base.py) supplies the
batches, the loss and the metrics, and the model is whatever NNX module the config built.

Design (see ../DESIGN.md section 2):

* The model is split once, ``graphdef, params, rest = nnx.split(model, nnx.Param, ...)``; the hot
  loop is ``jax.jit`` of a pure step over the state pytree ``{step, params, rest, opt_state}`` with
  ``nnx.merge`` inside and the *full* state returned (RNG counters in ``rest`` too), the state
  buffers donated.
* Data parallel over the local devices with ``jax.sharding``: a 1-D mesh ``("data",)``, the state
  replicated, every batch sharded along its leading axis; XLA inserts the gradient all-reduce.
* The data order is a function of ``(seed, epoch)`` only, so a resumed run sees exactly the batches
  the uninterrupted run would have seen.
* Losses stay on the device and are fetched every ``log_every`` steps (one host sync per log).
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
import signal
import time
from typing import Any, Callable, Mapping, Optional

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from experiments.checkpoint import Checkpointer
from experiments.metrics import MetricsLog
from experiments.tasks.base import Task, UserInputError, split_size

log = logging.getLogger(__name__)

LossFn = Callable[[Any, Mapping[str, jax.Array]], jax.Array]


@dataclasses.dataclass
class TrainerConfig:
    """Trainer knobs (``trainer.*`` in the config). ``max_steps``, when set, wins over ``epochs``."""

    max_steps: Optional[int] = None
    epochs: int = 10
    batch_size: int = 20
    eval_batch_size: Optional[int] = None
    log_every: int = 50
    ckpt_every: int = 500
    eval_every: int = 0  # 0: evaluate only at the end
    max_to_keep: int = 2
    devices: Optional[int] = None  # use the first N local devices (default: all)
    progress: bool = True
    plots: bool = True


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class Preempted(Exception):
    """SIGTERM/SIGINT received; a checkpoint was saved. Rerun the same command to resume."""


# -- pure pieces (used by the loop, the benchmarks and the tests) -------------------------------------

def data_mesh(n_devices: int | None = None) -> jax.sharding.Mesh:
    """1-D mesh named ``data`` over the first ``n_devices`` local devices."""
    devices = jax.local_devices()
    if n_devices is not None:
        if not 1 <= n_devices <= len(devices):
            raise UserInputError(f"trainer.devices={n_devices}, but only {len(devices)} local devices exist")
        devices = devices[:n_devices]
    return jax.sharding.Mesh(np.asarray(devices), ("data",))


def init_train_state(model: nnx.Module, tx: optax.GradientTransformation) -> tuple[nnx.GraphDef, dict]:
    """Split ``model`` into its graph and the state pytree the jitted step carries."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    state = {"step": jnp.zeros((), jnp.int32), "params": params, "rest": rest, "opt_state": tx.init(params)}
    return graphdef, state


def make_train_step(graphdef: nnx.GraphDef, loss_fn: LossFn, tx: optax.GradientTransformation):
    """Pure ``(state, batch) -> (state, loss)``: one gradient step of ``loss_fn(model, batch)``."""

    def train_step(state: dict, batch: Mapping[str, jax.Array]) -> tuple[dict, jax.Array]:
        def loss_of(params):
            model = nnx.merge(graphdef, params, state["rest"])
            loss = loss_fn(model, batch)
            return loss, nnx.state(model, nnx.Not(nnx.Param))  # RNG counters etc. move on too

        (loss, rest), grads = jax.value_and_grad(loss_of, has_aux=True)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"step": state["step"] + 1, "params": params, "rest": rest, "opt_state": opt_state}, loss

    return train_step


def merge_model(graphdef: nnx.GraphDef, state: dict) -> nnx.Module:
    return nnx.merge(graphdef, state["params"], state["rest"])


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The sample order of one epoch: a function of (seed, epoch) only, so resume replays it."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def count_params(model: nnx.Module) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


# -- the loop -----------------------------------------------------------------------------------------

class _StopFlag:
    """Turns SIGTERM/SIGINT into a flag the loop checks after each step (main thread only)."""

    def __init__(self):
        self.signum: int | None = None
        self._old = {}

    def __enter__(self):
        try:
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread: leave the default handlers
            pass
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


class Trainer:
    """Fits a model to a task in a run directory (``checkpoints/``, ``metrics.jsonl``, ``plots/``)."""

    def __init__(self, cfg: TrainerConfig, run_dir: str | pathlib.Path, seed: int = 0,
                 fingerprint: dict | None = None):
        self.cfg, self.seed = cfg, seed
        self.run_dir = pathlib.Path(run_dir)
        self.fingerprint = fingerprint or {}
        self.mesh = data_mesh(cfg.devices)
        self.n_devices = self.mesh.devices.size
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P("data"))
        self._eval_fns: dict[tuple, Callable] = {}
        for name in ("batch_size", "eval_batch_size"):
            bs = getattr(cfg, name)
            if bs is not None and (bs < 1 or bs % self.n_devices):
                raise UserInputError(
                    f"trainer.{name}={bs} must be a positive multiple of the number of devices "
                    f"({self.n_devices}) so that every device gets the same share of the batch; "
                    f"use e.g. trainer.{name}={max(1, round(bs / self.n_devices)) * self.n_devices}")

    def schedule_lengths(self, n_train: int) -> tuple[int, int]:
        """(steps_per_epoch, total_steps). Incomplete last batches are dropped."""
        steps_per_epoch = n_train // self.cfg.batch_size
        if steps_per_epoch == 0:
            raise UserInputError(f"trainer.batch_size={self.cfg.batch_size} exceeds the training set "
                                 f"({n_train} samples); lower the batch size or add data")
        total = self.cfg.max_steps if self.cfg.max_steps is not None else self.cfg.epochs * steps_per_epoch
        return steps_per_epoch, int(total)

    def fit(self, model: nnx.Module, make_tx: Callable[[int, int], optax.GradientTransformation],
            task: Task) -> dict:
        """Train (or resume), evaluate every split, return ``results`` (also saved as results.json)."""
        cfg = self.cfg
        train = task.train
        n_train = split_size(train)
        steps_per_epoch, total_steps = self.schedule_lengths(n_train)
        tx = make_tx(steps_per_epoch, total_steps)
        graphdef, state = init_train_state(model, tx)
        state = jax.device_put(state, self.replicated)
        step_fn = jax.jit(make_train_step(graphdef, task.loss, tx), donate_argnums=0)

        ckpt = Checkpointer(self.run_dir / "checkpoints", max_to_keep=cfg.max_to_keep)
        start = ckpt.latest_step()
        if start is not None:
            self._check_same_run(ckpt.read_meta(start), ckpt.directory)
            state, _ = ckpt.restore(start, state)
            log.info("resumed from the checkpoint at step %d in %s", start, ckpt.directory)
            if start > total_steps:
                ckpt.close()
                raise UserInputError(
                    f"the run directory already holds a checkpoint at step {start}, past this run's length "
                    f"of {total_steps} steps; raise trainer.max_steps / trainer.epochs to continue it, or "
                    f"use a new run directory (hydra.run.dir=...)")
        metrics_log = MetricsLog(self.run_dir / "metrics.jsonl", resume_step=start)
        start = start or 0
        n_params = count_params(model)
        log.info("training %d steps (%d per epoch, batch %d over %d device(s)); %d parameters",
                 total_steps, steps_per_epoch, cfg.batch_size, self.n_devices, n_params)

        pending: list[tuple[int, jax.Array]] = []  # (step, loss on device) since the last log
        saved = {"step": start}

        def flush(step: int) -> None:
            if not pending:
                return
            values = np.asarray(jax.device_get([l for _, l in pending]), dtype=np.float64)
            bad = ~np.isfinite(values)
            if bad.any():
                first = pending[int(np.argmax(bad))][0]
                ckpt.wait()
                last = ckpt.latest_step()
                where = (f"the last good checkpoint is step {last} in {ckpt.directory}" if last is not None
                         else "no checkpoint had been saved yet")
                raise NonFiniteLossError(
                    f"the training loss became {values[bad][0]} at step {first}. Training stopped; {where} "
                    f"(nothing was saved after the loss went bad). Lower the learning rate "
                    f"(schedule.value) or check the data normalisation, and start a new run directory.")
            elapsed = time.perf_counter() - t_log[0]
            rate = len(pending) * cfg.batch_size / max(elapsed, 1e-9)
            row = {"step": step, "epoch": step / steps_per_epoch, "loss": float(values.mean()),
                   "samples_per_s": rate}
            metrics_log.write(row)
            bar.set_postfix(loss=f"{row['loss']:.4g}", refresh=False)
            pending.clear()
            t_log[0] = time.perf_counter()

        def save(step: int) -> None:
            flush(step)  # raises before saving if any loss since the last save was not finite
            if saved["step"] == step:
                return
            ckpt.save(step, state, {"step": step, "epoch": step / steps_per_epoch,
                                    "fingerprint": self.fingerprint})
            saved["step"] = step

        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=start, unit="step", disable=not cfg.progress,
                   dynamic_ncols=True, mininterval=1.0, desc="train")
        t_log = [time.perf_counter()]
        t0 = time.perf_counter()
        perm, perm_epoch = None, -1
        try:
            with _StopFlag() as stop:
                for step in range(start, total_steps):
                    epoch, i = divmod(step, steps_per_epoch)
                    if epoch != perm_epoch:
                        perm, perm_epoch = epoch_permutation(self.seed, epoch, n_train), epoch
                    idx = np.sort(perm[i * cfg.batch_size:(i + 1) * cfg.batch_size])
                    batch = jax.device_put({k: v[idx] for k, v in train.items()}, self.batch_sharding)
                    state, loss = step_fn(state, batch)
                    done = step + 1
                    pending.append((done, loss))
                    bar.update(1)
                    if done % cfg.log_every == 0:
                        flush(done)
                    if cfg.eval_every and done % cfg.eval_every == 0 and done < total_steps:
                        self._log_eval(task, graphdef, state, done, metrics_log)
                    if done % cfg.ckpt_every == 0 and done < total_steps:
                        save(done)
                    if stop.signum is not None:
                        save(done)  # committed by ckpt.close() in the finally clause
                        raise Preempted(f"received signal {stop.signum} at step {done}: saved a checkpoint "
                                        f"in {ckpt.directory}; rerun the same command to resume")
                save(total_steps)  # no-op when resuming a run that had already finished
        finally:
            bar.close()
            ckpt.close()
        train_time = time.perf_counter() - t0

        evaluation = self._log_eval(task, graphdef, state, total_steps, metrics_log)
        metrics_log.close()
        results = {"step": total_steps, "epochs": total_steps / steps_per_epoch, "n_params": n_params,
                   "n_devices": self.n_devices, "train_seconds_this_process": train_time,
                   "resumed_from_step": start, "metrics": evaluation}
        model_out = merge_model(graphdef, state)
        if cfg.plots:
            self._plot(task, model_out)
        return results

    # -- helpers ----------------------------------------------------------------------------------
    def _check_same_run(self, meta: dict, where: pathlib.Path) -> None:
        old = meta.get("fingerprint", {})
        changed = sorted(k for k in set(old) | set(self.fingerprint) if old.get(k) != self.fingerprint.get(k))
        if changed:
            raise UserInputError(
                f"the run directory holds checkpoints of a different configuration ({', '.join(changed)} "
                f"changed) in {where}. Resume with the original settings, or start a new run directory "
                f"(hydra.run.dir=...) for the new ones.")

    def evaluate(self, task: Task, graphdef: nnx.GraphDef, state: dict) -> dict[str, dict[str, float]]:
        """Mean of every per-sample metric over each evaluation split (padded batches are masked)."""
        bs = self.cfg.eval_batch_size or self.cfg.batch_size
        out = {}
        for split, arrays in task.evals.items():
            key = (id(task), id(graphdef), split)
            if key not in self._eval_fns:  # compiled once per split, reused at every evaluation
                self._eval_fns[key] = jax.jit(
                    lambda st, b, split=split: task.metrics(merge_model(graphdef, st), b, split))
            fn = self._eval_fns[key]
            n = split_size(arrays)
            sums: dict[str, float] = {}
            for lo in range(0, n, bs):
                idx = np.arange(lo, lo + bs)
                valid = idx < n
                batch = {k: v[np.where(valid, idx, 0)] for k, v in arrays.items()}  # pad with sample 0
                values = jax.device_get(fn(state, jax.device_put(batch, self.batch_sharding)))
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + float(np.sum(np.asarray(v, np.float64)[valid]))
            out[split] = {k: v / n for k, v in sums.items()}
        return out

    def _log_eval(self, task, graphdef, state, step, metrics_log) -> dict:
        evaluation = self.evaluate(task, graphdef, state)
        for split, values in evaluation.items():
            metrics_log.write({"step": step, "split": split, **values})
            log.info("step %d %s: %s", step, split, ", ".join(f"{k}={v:.5f}" for k, v in values.items()))
        return evaluation

    def _plot(self, task: Task, model: nnx.Module) -> None:
        from experiments.plots import plot_loss_curves

        plots = self.run_dir / "plots"
        plots.mkdir(exist_ok=True)
        plot_loss_curves(self.run_dir / "metrics.jsonl", plots / "loss.png")
        for split in task.evals:
            task.plot(model, split, plots)

