"""The training loop: data-parallel ``jax.jit`` steps, Orbax checkpoints, resume, logs, evaluation.

It knows nothing about any model or problem: a ``Task`` (experiments/tasks/base.py) supplies the
batches, the loss, the metrics and the objective, and the model is whatever NNX module the config
built.

Design (see DESIGN.md section 2):

* The model is split once, ``graphdef, params, rest = nnx.split(model, nnx.Param, ...)``; the hot
  loop is a compiled pure step over the state pytree ``{step, params, rest, opt_state}`` with
  ``nnx.merge`` inside and the *full* state returned (RNG counters in ``rest`` too), the state
  buffers donated. Training uses the model's train-mode graph (dropout on), evaluation its
  eval-mode graph (``model.eval()``: dropout off, running averages used); the state is shared.
* Data parallel with ``jax.sharding``: a 1-D mesh ``("data",)`` over the devices of every process,
  the state replicated, every batch sharded along its leading axis; XLA inserts the all-reduce.
  Each process builds only its rows of a batch (``Shard``); process 0 writes logs, plots, results.
* The data order is a function of ``(seed, epoch)`` only (the task's ``train_batches``), so a
  resumed run sees exactly the batches the uninterrupted run would have seen.
* Losses stay on the device and are fetched every ``log_every`` steps (one host sync per log).
* Metrics are per-example sums and counts reduced inside the compiled evaluation step, so a split's
  value is a true mean over its examples (or tokens, or nodes), padding excluded.
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
import signal
import time
from typing import Any, Callable, Iterator, Optional

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from experiments import cost
from experiments.checkpoint import Checkpointer, check_same_run
from experiments.distributed import any_process, global_batch, global_mesh, is_primary
from experiments.errors import NonFiniteLossError, Preempted, UserInputError
from experiments.metrics import LossBuffer, MetricsLog, finish_means, masked_sums
from experiments.tasks.base import Batch, Objective, Shard, Task

log = logging.getLogger(__name__)

LossFn = Callable[[Any, Batch], jax.Array]

__all__ = ["NonFiniteLossError", "Preempted", "Trainer", "TrainerConfig", "count_params", "data_mesh",
           "init_train_state", "make_train_step", "merge_model", "mode_graphdef"]


@dataclasses.dataclass
class TrainerConfig:
    """Trainer knobs (``trainer.*`` in the config; this dataclass is their only copy of the defaults).

    ``max_steps``, when set, wins over ``epochs``. Batch sizes are global (all devices, all processes)
    and must be multiples of the device count. ``coordinator_address`` / ``num_processes`` /
    ``process_id`` launch one process of a multi-process run (see experiments/distributed.py).
    """

    max_steps: Optional[int] = None
    epochs: int = 15
    batch_size: int = 20
    eval_batch_size: Optional[int] = None
    log_every: int = 25
    ckpt_every: int = 500
    eval_every: int = 0  # 0: evaluate only at the end
    max_to_keep: int = 2
    devices: Optional[int] = None  # use the first N local devices (default: all)
    progress: bool = True
    plots: bool = True
    coordinator_address: Optional[str] = None
    num_processes: Optional[int] = None
    process_id: Optional[int] = None


# -- pure pieces (used by the loop, the benchmarks and the tests) -------------------------------------

def data_mesh(n_devices: int | None = None) -> jax.sharding.Mesh:
    """1-D mesh named ``data`` over all devices (or the first ``n_devices`` local ones)."""
    return global_mesh(n_devices)


def init_train_state(model: nnx.Module, tx: optax.GradientTransformation) -> tuple[nnx.GraphDef, dict]:
    """Split ``model`` into its graph and the state pytree the jitted step carries."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    state = {"step": jnp.zeros((), jnp.int32), "params": params, "rest": rest, "opt_state": tx.init(params)}
    return graphdef, state


def make_train_step(graphdef: nnx.GraphDef, loss_fn: LossFn, tx: optax.GradientTransformation):
    """Pure ``(state, batch) -> (state, loss)``: one gradient step of ``loss_fn(model, batch)``."""

    def train_step(state: dict, batch: Batch) -> tuple[dict, jax.Array]:
        def loss_of(params):
            # copy=True: fresh Variables in this (gradient) trace, so that e.g. dropout's RNG counter can
            # advance here; the ones in state["rest"] belong to the enclosing trace.
            model = nnx.merge(graphdef, params, state["rest"], copy=True)
            loss = loss_fn(model, batch)
            return loss, nnx.state(model, nnx.Not(nnx.Param))  # RNG counters etc. move on too

        (loss, rest), grads = jax.value_and_grad(loss_of, has_aux=True)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"step": state["step"] + 1, "params": params, "rest": rest, "opt_state": opt_state}, loss

    return train_step


def merge_model(graphdef: nnx.GraphDef, state: dict) -> nnx.Module:
    return nnx.merge(graphdef, state["params"], state["rest"])


def mode_graphdef(model: nnx.Module, train: bool) -> nnx.GraphDef:
    """Put ``model`` in train or eval mode (``nnx`` ``train()`` / ``eval()``) and return its graph."""
    model.train() if train else model.eval()
    return nnx.graphdef(model)


def count_params(model: nnx.Module) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _compile(fn, *args) -> tuple[Callable, float]:
    """Ahead-of-time compile ``fn`` (a ``jax.jit``) for ``args``; (executable, seconds)."""
    t = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return compiled, time.perf_counter() - t


# -- the loop -----------------------------------------------------------------------------------------

class _StopFlag:
    """Turns SIGTERM/SIGINT into a flag the loop checks between steps (main thread only)."""

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
                 identity: dict | None = None):
        self.cfg, self.seed = cfg, seed
        self.run_dir = pathlib.Path(run_dir)
        self.identity = identity or {}
        self.mesh = global_mesh(cfg.devices)
        self.devices = list(self.mesh.devices.flat)
        self.n_devices = len(self.devices)
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P("data"))
        self.shard = Shard(jax.process_index(), jax.process_count())
        self.primary = is_primary()
        self.compile_seconds = 0.0
        self._eval_fns: dict[tuple, Callable] = {}
        for name in ("batch_size", "eval_batch_size"):
            bs = getattr(cfg, name)
            if bs is not None and (bs < 1 or bs % self.n_devices):
                raise UserInputError(
                    f"trainer.{name}={bs} must be a positive multiple of the number of devices "
                    f"({self.n_devices}) so that every device gets the same share of the batch; "
                    f"use e.g. trainer.{name}={max(1, round(bs / self.n_devices)) * self.n_devices}")

    def schedule_lengths(self, task: Task) -> tuple[int, int]:
        """(steps_per_epoch, total_steps)."""
        steps_per_epoch = task.steps_per_epoch(self.cfg.batch_size)
        if steps_per_epoch < 1:
            raise UserInputError(f"the task gives no training batch of size {self.cfg.batch_size}; "
                                 f"lower trainer.batch_size or add data")
        total = self.cfg.max_steps if self.cfg.max_steps is not None else self.cfg.epochs * steps_per_epoch
        return steps_per_epoch, int(total)

    def fit(self, model: nnx.Module, make_tx: Callable[[int, int], optax.GradientTransformation],
            task: Task) -> dict:
        """Train (or resume) ``model``, evaluate every split, return ``results`` (train.py saves them).

        ``model`` is updated in place to the trained state and left in eval mode.
        """
        cfg = self.cfg
        if not isinstance(getattr(task, "objective", None), Objective):
            raise TypeError(f"{type(task).__name__} must name its objective metric: set the class attribute "
                            f"objective = Objective('<metric>', mode='min' or 'max')")
        steps_per_epoch, total_steps = self.schedule_lengths(task)
        tx = make_tx(steps_per_epoch, total_steps)
        eval_graphdef = mode_graphdef(model, train=False)
        mode_graphdef(model, train=True)
        graphdef, state = init_train_state(model, tx)
        state = jax.device_put(state, self.replicated)
        step_fn = jax.jit(make_train_step(graphdef, task.loss, tx), donate_argnums=0,
                          out_shardings=self.replicated)

        ckpt = Checkpointer(self.run_dir / "checkpoints", max_to_keep=cfg.max_to_keep)
        state, start = self._resume(ckpt, state, total_steps)
        metrics_log = MetricsLog(self.run_dir / "metrics.jsonl", resume_step=start, enabled=self.primary)
        start = start or 0
        n_params = count_params(model)
        log.info("training %d steps (%d per epoch, batch %d over %d device(s)); %d parameters",
                 total_steps, steps_per_epoch, cfg.batch_size, self.n_devices, n_params)

        losses = LossBuffer(cfg.batch_size, steps_per_epoch, lambda: self._where_saved(ckpt))
        saved = start

        def log_losses(step: int) -> None:
            row = losses.flush(step)  # raises if any loss since the last flush was not finite
            if row is not None:
                metrics_log.write(row)
                bar.set_postfix(loss=f"{row['loss']:.4g}", refresh=False)

        def save(step: int) -> None:
            nonlocal saved
            log_losses(step)  # nothing bad is ever saved
            if saved != step:
                ckpt.save(step, state, {"step": step, "epoch": step / steps_per_epoch,
                                        "fingerprint": self.identity})
                saved = step

        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=start, unit="step", disable=not (cfg.progress and self.primary),
                   dynamic_ncols=True, mininterval=1.0, desc="train")
        compiled, t_train, eval_seconds = None, 0.0, 0.0
        try:
            with _StopFlag() as stop:
                for step, batch in self._train_batches(task, start, total_steps, steps_per_epoch):
                    if compiled is None:
                        compiled, seconds = _compile(step_fn, state, batch)
                        self.compile_seconds += seconds
                        losses.restart_clock()
                        t0 = time.perf_counter()
                    state, loss = compiled(state, batch)
                    done = step + 1
                    losses.add(done, loss)
                    bar.update(1)
                    at_log = done % cfg.log_every == 0
                    if at_log:
                        log_losses(done)
                    if cfg.eval_every and done % cfg.eval_every == 0 and done < total_steps:
                        t_eval = time.perf_counter()
                        self._log_eval(task, eval_graphdef, state, done, metrics_log)
                        eval_seconds += time.perf_counter() - t_eval
                    if done % cfg.ckpt_every == 0 and done < total_steps:
                        save(done)
                    stopping = stop.signum is not None
                    if jax.process_count() > 1:  # every process must stop at the same step
                        stopping = any_process(stopping) if at_log else False
                    if stopping:
                        save(done)  # committed by ckpt.close() in the finally clause
                        raise Preempted(f"received signal {stop.signum or 'in another process'} at step "
                                        f"{done}: saved a checkpoint in {ckpt.directory}; rerun the same "
                                        f"command to resume")
                if compiled is not None:
                    jax.block_until_ready(state)
                    t_train = time.perf_counter() - t0 - eval_seconds
                save(total_steps)  # no-op when resuming a run that had already finished
        finally:
            bar.close()
            ckpt.close()

        t_eval = time.perf_counter()
        evaluation = self._log_eval(task, eval_graphdef, state, total_steps, metrics_log)
        eval_seconds += time.perf_counter() - t_eval
        metrics_log.close()
        steps_run = total_steps - start
        results = {
            "objective": self.objective(task, evaluation),
            "metrics": evaluation, "n_params": n_params, "step": total_steps,
            "epochs": total_steps / steps_per_epoch, "resumed_from_step": start,
            "cost": {"compile_seconds": self.compile_seconds, "train_seconds": t_train,
                     "eval_seconds": eval_seconds, "steps_timed": steps_run,
                     "seconds_per_step": t_train / steps_run if steps_run else None,
                     **cost.machine(self.devices)},
        }
        # The caller's model becomes the trained one (its own buffers were donated to the first step),
        # in eval mode, on this process's first device.
        local = jax.tree.map(lambda x: x.addressable_data(0), (state["params"], state["rest"]))
        nnx.update(model, *local)
        model.eval()
        if cfg.plots and self.primary:
            self._plot(task, model, results["objective"])
        return results

    # -- helpers ----------------------------------------------------------------------------------
    def _resume(self, ckpt: Checkpointer, state: dict, total_steps: int) -> tuple[dict, int | None]:
        start = ckpt.latest_step()
        if start is None:
            return state, None
        check_same_run(ckpt.read_meta(start), self.identity, ckpt.directory)
        if start > total_steps:
            ckpt.close()
            raise UserInputError(
                f"the run directory already holds a checkpoint at step {start}, past this run's length "
                f"of {total_steps} steps; raise trainer.max_steps / trainer.epochs to continue it, or "
                f"use a new run directory (hydra.run.dir=...)")
        state, _ = ckpt.restore(start, state)
        log.info("resumed from the checkpoint at step %d in %s", start, ckpt.directory)
        return state, start

    @staticmethod
    def _where_saved(ckpt: Checkpointer) -> str:
        ckpt.wait()
        last = ckpt.latest_step()
        return (f"the last good checkpoint is step {last} in {ckpt.directory}" if last is not None
                else "no checkpoint had been saved yet")

    def _train_batches(self, task: Task, start: int, total: int,
                       steps_per_epoch: int) -> Iterator[tuple[int, Batch]]:
        """(step, global batch) from ``start`` to ``total``, epoch by epoch, from the task's iterator."""
        step = start
        while step < total:
            epoch, first = divmod(step, steps_per_epoch)
            wanted = min(steps_per_epoch, first + total - step)
            batches = task.train_batches(self.cfg.batch_size, seed=self.seed, epoch=epoch, start=first,
                                         shard=self.shard)
            for _, local in zip(range(first, wanted), batches):
                yield step, global_batch(local, self.batch_sharding)
                step += 1
            if step < epoch * steps_per_epoch + wanted:
                raise RuntimeError(f"{type(task).__name__}.train_batches gave {step - epoch * steps_per_epoch} "
                                   f"batches in epoch {epoch}; steps_per_epoch promised {steps_per_epoch}")

    def objective(self, task: Task, evaluation: dict[str, dict[str, float]]) -> dict:
        """The task's objective metric on its split (default: the first evaluation split)."""
        obj = task.objective
        split = obj.split or next(iter(evaluation), None)
        if split not in evaluation or obj.metric not in evaluation[split]:
            raise ValueError(f"{type(task).__name__}.objective names {obj.metric!r} on split {split!r}, but "
                             f"the evaluation gave {({k: sorted(v) for k, v in evaluation.items()})}")
        return {"metric": obj.metric, "split": split, "mode": obj.mode, "value": evaluation[split][obj.metric]}

    def evaluate(self, task: Task, graphdef: nnx.GraphDef, state: dict) -> dict[str, dict[str, float]]:
        """Every metric over each evaluation split: sum of totals / sum of counts, padding excluded."""
        bs = self.cfg.eval_batch_size or self.cfg.batch_size
        state = jax.device_put(state, self.replicated)  # a no-op for the training state
        out = {}
        for split in task.eval_splits():
            sums = []
            for local, valid in task.eval_batches(split, bs, shard=self.shard):
                batch = global_batch(local, self.batch_sharding)
                valid = global_batch(np.asarray(valid, bool), self.batch_sharding)
                key = (id(task), id(graphdef), split)
                if key not in self._eval_fns:  # compiled once per split, reused at every evaluation
                    fn = jax.jit(lambda st, b, v, split=split: masked_sums(
                        task.metrics(merge_model(graphdef, st), b, split), v), out_shardings=self.replicated)
                    self._eval_fns[key], seconds = _compile(fn, state, batch, valid)
                    self.compile_seconds += seconds
                sums.append(self._eval_fns[key](state, batch, valid))
            if not sums:
                raise ValueError(f"{type(task).__name__}.eval_batches gave no batch for split {split!r}")
            host = jax.device_get(sums)  # one sync per split
            totals = {k: np.sum([np.asarray(s[k], np.float64) for s in host], axis=0) for k in host[0]}
            out[split] = task.summarize(finish_means(totals), split)
        return out

    def _log_eval(self, task, graphdef, state, step, metrics_log) -> dict:
        evaluation = self.evaluate(task, graphdef, state)
        for split, values in evaluation.items():
            metrics_log.write({"step": step, "split": split, **values})
            log.info("step %d %s: %s", step, split, ", ".join(f"{k}={v:.5f}" for k, v in values.items()))
        return evaluation

    def _plot(self, task: Task, model: nnx.Module, objective: dict) -> None:
        from experiments.plots import plot_loss_curves

        plots = self.run_dir / "plots"
        plots.mkdir(exist_ok=True)
        plot_loss_curves(self.run_dir / "metrics.jsonl", plots / "loss.png", objective["metric"])
        for split in task.eval_splits():
            task.plot(model, split, plots)
