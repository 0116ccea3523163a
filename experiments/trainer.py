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

import logging
import pathlib
import signal
import time
from typing import Any, Callable, Iterator

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from experiments import cost
from experiments.checkpoint import Checkpointer, check_same_run, check_writable, restore_latest_readable
from experiments.config import TrainerConfig  # defined beside the other schemas; re-exported here
from experiments.distributed import any_process, global_batch, global_mesh, is_primary
from experiments.errors import NonFiniteLossError, Preempted, UserInputError
from experiments.metrics import LossBuffer, MetricsLog, finish_means, masked_sums
from experiments.tasks.base import Batch, Objective, Shard, Task

log = logging.getLogger(__name__)

LossFn = Callable[[Any, Batch], jax.Array]

__all__ = ["NonFiniteLossError", "Preempted", "Trainer", "TrainerConfig", "count_params", "init_train_state",
           "make_train_step", "merge_model", "mode_graphdef"]


# -- pure pieces (used by the loop, the benchmarks and the tests) -------------------------------------

def init_train_state(model: nnx.Module, tx: optax.GradientTransformation) -> tuple[nnx.GraphDef, dict]:
    """Split ``model`` into its graph and the state pytree the jitted step carries."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    state = {"step": jnp.zeros((), jnp.int32), "params": params, "rest": rest, "opt_state": tx.init(params)}
    return graphdef, state


def make_train_step(graphdef: nnx.GraphDef, loss_fn: LossFn, tx: optax.GradientTransformation):
    """Pure ``(state, batch) -> (state, {"loss", "grad_norm"})``: one gradient step of ``loss_fn``.

    ``grad_norm`` is the global L2 norm of the gradient (before the optimizer), logged so that a run
    can feed the refined learning-rate schedule of the next (``optim.schedules.refined``).
    """

    def train_step(state: dict, batch: Batch) -> tuple[dict, dict[str, jax.Array]]:
        def loss_of(params):
            # copy=True: fresh Variables in this (gradient) trace, so that e.g. dropout's RNG counter can
            # advance here; the ones in state["rest"] belong to the enclosing trace.
            model = nnx.merge(graphdef, params, state["rest"], copy=True)
            loss = loss_fn(model, batch)
            return loss, nnx.state(model, nnx.Not(nnx.Param))  # RNG counters etc. move on too

        (loss, rest), grads = jax.value_and_grad(loss_of, has_aux=True)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new_state = {"step": state["step"] + 1, "params": params, "rest": rest, "opt_state": opt_state}
        return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

    return train_step


def merge_model(graphdef: nnx.GraphDef, state: dict) -> nnx.Module:
    return nnx.merge(graphdef, state["params"], state["rest"])


def mode_graphdef(model: nnx.Module, train: bool) -> nnx.GraphDef:
    """Put ``model`` in train or eval mode (``nnx`` ``train()`` / ``eval()``) and return its graph."""
    model.train() if train else model.eval()
    return nnx.graphdef(model)


def count_params(model: nnx.Module) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _nbytes(tree: Any) -> int:
    """Size of one copy of ``tree``'s arrays (per device: the state is replicated), in bytes."""
    return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))


def _megabytes(tree: Any) -> float:
    """``_nbytes`` in MiB."""
    return round(_nbytes(tree) / 2**20, 3)


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
        if not isinstance(getattr(task, "objective", None), Objective):
            raise TypeError(f"{type(task).__name__} must name its objective metric: set the class attribute "
                            f"objective = Objective('<metric>', mode='min' or 'max')")
        steps_per_epoch, total_steps = self.schedule_lengths(task)
        tx = make_tx(steps_per_epoch, total_steps)
        eval_graphdef = mode_graphdef(model, train=False)
        mode_graphdef(model, train=True)
        graphdef, state = init_train_state(model, tx)
        step_fn = jax.jit(make_train_step(graphdef, task.loss, tx), donate_argnums=0,
                          out_shardings=self.replicated)
        n_params = count_params(model)

        run = _Run(self, task, eval_graphdef, jax.device_put(state, self.replicated), steps_per_epoch)
        try:
            run.resume(total_steps)
            log.info("training %d steps (%d per epoch, batch %d over %d device(s)); %d parameters",
                     total_steps, steps_per_epoch, self.cfg.batch_size, self.n_devices, n_params)
            run.train(step_fn, total_steps)
        finally:
            run.close_training()
        evaluation = run.evaluate(total_steps)
        run.metrics_log.close()

        steps_run = total_steps - run.start
        results = {
            "objective": self.objective(task, evaluation),
            "metrics": evaluation, "n_params": n_params, "step": total_steps,
            "epochs": total_steps / steps_per_epoch, "resumed_from_step": run.start,
            "cost": {"compile_seconds": self.compile_seconds, "train_seconds": run.train_seconds,
                     "optimizer_state_mb": _megabytes(run.state["opt_state"]),
                     "params_mb": _megabytes(run.state["params"]),
                     "eval_seconds": run.eval_seconds, "steps_timed": steps_run,
                     "seconds_per_step": run.train_seconds / steps_run if steps_run else None,
                     **cost.machine(self.devices)},
        }
        # The caller's model becomes the trained one (its own buffers were donated to the first step),
        # in eval mode, on this process's first device.
        local = jax.tree.map(lambda x: x.addressable_data(0), (run.state["params"], run.state["rest"]))
        nnx.update(model, *local)
        model.eval()
        if self.cfg.plots and self.primary:
            self._plot(task, model, results["objective"])
        return results

    # -- helpers ----------------------------------------------------------------------------------
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

    def _plot(self, task: Task, model: nnx.Module, objective: dict) -> None:
        from experiments.plots import plot_loss_curves  # matplotlib (a second to import) only when plotting

        plots = self.run_dir / "plots"
        plots.mkdir(exist_ok=True)
        plot_loss_curves(self.run_dir / "metrics.jsonl", plots / "loss.png", objective["metric"])
        for split in task.eval_splits():
            task.plot(model, split, plots)


class _Run:
    """The state of one ``Trainer.fit``: the training state, checkpoints, logs, progress and timings."""

    def __init__(self, trainer: Trainer, task: Task, eval_graphdef: nnx.GraphDef, state: dict,
                 steps_per_epoch: int):
        self.trainer, self.task, self.eval_graphdef, self.state = trainer, task, eval_graphdef, state
        self.cfg, self.steps_per_epoch = trainer.cfg, steps_per_epoch
        check_writable(trainer.run_dir / "checkpoints", _nbytes(state))  # before any work: refused, not lost
        self.ckpt = Checkpointer(trainer.run_dir / "checkpoints", max_to_keep=self.cfg.max_to_keep)
        self.losses = LossBuffer(self.cfg.batch_size, steps_per_epoch, self.where_saved)
        self.start = self.saved = 0
        self.metrics_log: MetricsLog | None = None
        self.bar = None
        self.train_seconds = self.eval_seconds = 0.0

    def resume(self, total_steps: int) -> None:
        """Restore the latest checkpoint of the run directory, if any; open the metrics log."""
        def accept(step: int, meta: dict) -> None:
            check_same_run(meta, self.trainer.identity, self.ckpt.directory)
            written_for = meta.get("total_steps")  # absent in checkpoints of older versions
            if written_for is not None and written_for != total_steps:
                log.warning("the checkpoint at step %d was written by a run of %d steps; this run has %d. The "
                            "learning-rate schedule is rebuilt for %d steps, so unless it is constant the resumed "
                            "run is not the uninterrupted %d-step run (it continues on the new schedule)",
                            step, written_for, total_steps, total_steps, total_steps)
            if step > total_steps:
                raise UserInputError(
                    f"the run directory already holds a checkpoint at step {step}, past this run's length "
                    f"of {total_steps} steps; raise trainer.max_steps / trainer.epochs to continue it, or "
                    f"use a new run directory (hydra.run.dir=...)")

        start, self.state = restore_latest_readable(self.ckpt, self.state, accept,
                                                    self.trainer.run_dir / "damaged_checkpoints", self.trainer.primary)
        if start is not None:
            log.info("resumed from the checkpoint at step %d in %s", start, self.ckpt.directory)
        self.metrics_log = MetricsLog(self.trainer.run_dir / "metrics.jsonl", resume_step=start,
                                      enabled=self.trainer.primary,
                                      tensorboard=self.trainer.run_dir / "tensorboard" if self.cfg.tensorboard else None)
        self.start = self.saved = start or 0
        self.total_steps = total_steps

    def where_saved(self) -> str:
        self.ckpt.wait()
        last = self.ckpt.latest_step()
        return (f"the last good checkpoint is step {last} in {self.ckpt.directory}" if last is not None
                else "no checkpoint had been saved yet")

    def log_losses(self, step: int) -> None:
        row = self.losses.flush(step)  # raises if any loss since the last flush was not finite
        if row is not None:
            self.metrics_log.write(row)
            self.bar.set_postfix(loss=f"{row['loss']:.4g}", refresh=False)

    def save(self, step: int) -> None:
        self.log_losses(step)  # so nothing saved ever follows a non-finite loss
        if self.saved != step:
            self.ckpt.save(step, self.state, {"step": step, "epoch": step / self.steps_per_epoch,
                                              "total_steps": self.total_steps, "fingerprint": self.trainer.identity})
            self.saved = step

    def evaluate(self, step: int) -> dict[str, dict[str, float]]:
        """Evaluate every split in eval mode, log the metrics, add the time to ``eval_seconds``."""
        t = time.perf_counter()
        evaluation = self.trainer.evaluate(self.task, self.eval_graphdef, self.state)
        for split, values in evaluation.items():
            self.metrics_log.write({"step": step, "split": split, **values})
            log.info("step %d %s: %s", step, split, ", ".join(f"{k}={v:.5f}" for k, v in values.items()))
        self.eval_seconds += time.perf_counter() - t
        return evaluation

    def batches(self, total_steps: int) -> Iterator[tuple[int, Batch]]:
        """(step, global batch) from ``start`` to ``total_steps``, epoch by epoch, from the task."""
        trainer, spe, step = self.trainer, self.steps_per_epoch, self.start
        while step < total_steps:
            epoch, first = divmod(step, spe)
            wanted = min(spe, first + total_steps - step)
            batches = self.task.train_batches(self.cfg.batch_size, seed=trainer.seed, epoch=epoch, start=first,
                                              shard=trainer.shard)
            for _, local in zip(range(first, wanted), batches):
                yield step, global_batch(local, trainer.batch_sharding)
                step += 1
            if step < epoch * spe + wanted:
                raise RuntimeError(f"{type(self.task).__name__}.train_batches gave {step - epoch * spe} batches "
                                   f"in epoch {epoch}; its steps_per_epoch promised {spe}")

    def train(self, step_fn: Callable, total_steps: int) -> None:
        """Steps from ``start`` to ``total_steps``: log, evaluate, checkpoint, stop on a signal."""
        cfg, trainer = self.cfg, self.trainer
        self.bar = tqdm(total=total_steps, initial=self.start, unit="step", dynamic_ncols=True,
                        mininterval=1.0, desc="train", disable=not (cfg.progress and trainer.primary))
        compiled, t0, eval_before = None, 0.0, self.eval_seconds
        with _StopFlag() as stop:
            for step, batch in self.batches(total_steps):
                if compiled is None:
                    compiled, seconds = _compile(step_fn, self.state, batch)
                    trainer.compile_seconds += seconds
                    self.losses.restart_clock()
                    t0 = time.perf_counter()
                self.state, scalars = compiled(self.state, batch)
                done = step + 1
                self.losses.add(done, scalars)
                self.bar.update(1)
                at_log = done % cfg.log_every == 0
                if at_log:
                    self.log_losses(done)
                if cfg.eval_every and done % cfg.eval_every == 0 and done < total_steps:
                    self.evaluate(done)
                if done % cfg.ckpt_every == 0 and done < total_steps:
                    self.save(done)
                stopping = stop.signum is not None
                if jax.process_count() > 1:  # every process must stop at the same step
                    stopping = any_process(stopping) if at_log else False
                if stopping:
                    self.save(done)  # committed by close_training()
                    raise Preempted(f"received signal {stop.signum or 'in another process'} at step {done}: "
                                    f"saved a checkpoint in {self.ckpt.directory}; rerun the same command "
                                    f"to resume")
            if compiled is not None:
                jax.block_until_ready(self.state)
                self.train_seconds = time.perf_counter() - t0 - (self.eval_seconds - eval_before)
            self.save(total_steps)  # a no-op when resuming a run that had already finished

    def close_training(self) -> None:
        """Commit pending checkpoints and close the progress bar (also after an error or a signal)."""
        if self.bar is not None:
            self.bar.close()
        self.ckpt.close()
