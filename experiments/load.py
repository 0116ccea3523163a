"""A trained model out of the runner: ``load_run(RUN_DIR | EXPORT_DIR) -> Run``.

A ``Run`` is what a user needs after training, without the trainer::

    run = load_run("outputs/2026-01-01/12-00-00")   # a run directory of experiments.train
    u = run.predict(a)                               # raw inputs (n, *grid, c) -> outputs in physical units
    run.evaluate()                                   # the task's metrics, the numbers of the run's own eval
    run.evaluate(other_data_config)                  # the same model on other data / resolutions

* ``run.model``: the model in its latest checkpoint's state, in eval mode (``experiments.build.restore_trained``,
  the one code path that the tables and the CLIs restore through);
* ``run.cfg``: the config it was built from (``cfg.model`` as fitted to the data);
* ``run.task``: the task, its data set up on first use (``evaluate`` uses it; ``predict`` does not);
  ``run.bare_task`` is the same task before that (built from the config, no data);
* ``run.transforms``: the task's input / output transforms. For the operator task
  (``experiments.tasks.pde.OperatorTask``) the ``GaussianNormalizer`` statistics of its training fields
  at each resolution, computed as the task computes them (the training split from the data cache or
  its generator, subsampled, fitted); for the sequence tasks the token encoding of
  ``experiments.tasks.sequence`` (integer tokens or float features, and the padding mask).

An *exported* directory (``python -m experiments.export``, ``export_run``) holds everything ``load_run``
needs without the run directory or the data: ``config.yaml`` (resolved), ``checkpoints/<step>/`` (the
parameters as an Orbax checkpoint), ``normalizer.npz`` (the statistics at every resolution the dataset
reaches), ``versions.json`` (the packages that wrote it; named in the error when the installed
project builds another model) and the run's ``overrides.yaml`` (for ``experiments.evaluate``).

JAX and the models are imported by the functions that need them, so that importing this module (the
tables do) stays light.
"""
from __future__ import annotations

import functools
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any, Mapping

import numpy as np
from omegaconf import DictConfig, OmegaConf

from experiments.build import build_task, restore_trained, saved_config, trainer_config
from experiments.errors import UserInputError

EXPORT_CONFIG = "config.yaml"
EXPORT_STATISTICS = "normalizer.npz"
EXPORT_VERSIONS = "versions.json"
EXPORT_OVERRIDES = "overrides.yaml"
STAT_NAMES = ("x_mean", "x_std", "y_mean", "y_std")

__all__ = ["OperatorTransforms", "Run", "SequenceTransforms", "export_run", "load_run"]


class OperatorTransforms:
    """The operator task's normalisation: raw input fields -> model inputs, model outputs -> physical units.

    ``statistics(grid)``: the ``GaussianNormalizer`` (mean, std) of the training inputs and targets on
    ``grid``, as ``OperatorTask.setup`` fits them (the training split subsampled to that resolution).
    Given ``stored`` statistics (an export) only those are known; otherwise they are computed on first
    use from ``task.pde`` (its data cache, or its generator).
    """

    def __init__(self, task, stored: Mapping[tuple, dict[str, np.ndarray]] | None = None):
        self.task, self.stored = task, stored is not None
        self._stats: dict[tuple, dict[str, np.ndarray]] = dict(stored or {})
        self._train: tuple[np.ndarray, np.ndarray] | None = None

    def _train_fields(self) -> tuple[np.ndarray, np.ndarray]:
        if self._train is None:
            self._train = self.task.pde.load("train", self.task.n_train, progress=False)
        return self._train

    def resolutions(self) -> list[int]:
        """Every resolution the dataset reaches from its native grid (``pde.spatial_shape`` accepts it);
        for stored statistics, those stored."""
        if self.stored:
            return sorted(max(grid) for grid in self._stats)
        native = max(self._train_fields()[0].shape[1:-1])
        out = []
        for s in range(2, native + 1):
            try:
                self.task.pde.spatial_shape(s)
            except ValueError:
                continue
            out.append(s)
        return out

    def resolution_of(self, grid: tuple[int, ...]) -> int:
        """The resolution whose grid is ``grid``; a ``UserInputError`` naming the reachable ones if none."""
        for s in dict.fromkeys(grid):
            try:
                if tuple(self.task.pde.spatial_shape(s)) == grid:
                    return s
            except ValueError:
                pass
        raise UserInputError(f"inputs on a grid of {grid} points: {type(self.task.pde).__name__} reaches no "
                             f"resolution with that grid (reachable: {self.resolutions()}); subsample the inputs "
                             f"to one of them (predict(..., resolution=S) from a finer grid)")

    def statistics(self, grid: tuple[int, ...]) -> dict[str, np.ndarray]:
        grid = tuple(grid)
        if grid not in self._stats:
            if self.stored:
                raise UserInputError(f"the export holds normaliser statistics for grids {sorted(self._stats)}, "
                                     f"not {grid}; give inputs on one of them")
            s = self.resolution_of(grid)
            x_train, y_train = self._train_fields()
            x_mean, x_std = self.task.normalizer.fit(self.task.pde.subsample(x_train, s))
            y_mean, y_std = self.task.normalizer.fit(self.task.pde.subsample(y_train, s))
            self._stats[grid] = {"x_mean": x_mean, "x_std": x_std, "y_mean": y_mean, "y_std": y_std}
        return self._stats[grid]

    def encode(self, fields: np.ndarray) -> np.ndarray:
        """Raw input fields ``(n, *grid, c)`` -> the normalised float32 model inputs (as ``OperatorTask.setup``)."""
        st = self.statistics(fields.shape[1:-1])
        return ((fields - st["x_mean"]) / st["x_std"]).astype(np.float32)

    def save(self, path: pathlib.Path) -> None:
        """The statistics at every reachable resolution, as ``normalizer.npz`` (keys ``s<res>_<name>``)."""
        arrays = {}
        for s in self.resolutions():
            st = self.statistics(tuple(self.task.pde.spatial_shape(s)))
            arrays.update({f"s{s}_{name}": st[name] for name in STAT_NAMES})
        np.savez(path, **arrays)

    @classmethod
    def load(cls, task, path: pathlib.Path) -> "OperatorTransforms":
        with np.load(path) as data:
            res = sorted({k.split("_", 1)[0] for k in data.files})
            stored = {}
            for r in res:
                st = {name: data[f"{r}_{name}"] for name in STAT_NAMES}
                stored[tuple(st["x_mean"].shape[:-1])] = st
        return cls(task, stored)


class SequenceTransforms:
    """The sequence tasks' encoding of raw inputs: the task's own ``encode_inputs``
    (``experiments.tasks.sequence``), as its batches are encoded."""

    def __init__(self, task):
        self.task = task

    def encode(self, inputs: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.task.encode_inputs(inputs, mask)


def task_transforms(task, export_dir: pathlib.Path | None = None):
    """The transforms of ``task``'s family (operator / sequence), or None for the others; for an export,
    the operator task's statistics are those stored in ``export_dir``."""
    from experiments.tasks.pde import OperatorTask
    from experiments.tasks.sequence import LanguageModeling, SequenceClassification, SequenceRegression

    if isinstance(task, OperatorTask):
        if export_dir is None:
            return OperatorTransforms(task)
        if not (export_dir / EXPORT_STATISTICS).is_file():
            raise UserInputError(f"the export {export_dir} has no {EXPORT_STATISTICS} (the normaliser statistics); "
                                 f"export the run again")
        return OperatorTransforms.load(task, export_dir / EXPORT_STATISTICS)
    if isinstance(task, (SequenceClassification, SequenceRegression, LanguageModeling)):
        return SequenceTransforms(task)
    return None


class Run:
    """A trained model with its config, task and transforms (see the module docstring)."""

    def __init__(self, path: pathlib.Path, cfg: DictConfig, model, task, transforms, exported: bool):
        self.path, self.cfg, self.model, self.transforms, self.exported = path, cfg, model, transforms, exported
        self.bare_task, self._task_ready = task, False

    @property
    def task(self):
        """The run's task, its data set up (from the cache, or generated) on first use."""
        if not self._task_ready:
            self.bare_task.setup(progress=False)
            self._task_ready = True
        return self.bare_task

    @property
    def batch_size(self) -> int:
        return int(self.cfg.trainer.eval_batch_size or self.cfg.trainer.batch_size)

    # -- predict ------------------------------------------------------------------------------------
    def predict(self, inputs: np.ndarray, *, resolution: int | None = None, mask: np.ndarray | None = None,
                batch_size: int | None = None) -> np.ndarray:
        """The model's outputs for RAW ``inputs``, decoded to physical units, as a NumPy array.

        Operator task: ``inputs`` (n, *grid, in_channels) on any grid the dataset reaches (and the
        model takes), ``resolution``: subsample finer inputs to it first (``pde.subsample``); returns
        (n, *grid, out_channels). Sequence tasks: ``inputs`` (n, L) tokens or (n, L[, d]) features and an
        optional ``mask``; returns the model's outputs (logits, or regression values).
        """
        inputs = np.asarray(inputs)
        if isinstance(self.transforms, OperatorTransforms):
            return self._predict_fields(inputs, resolution, batch_size or self.batch_size)
        if isinstance(self.transforms, SequenceTransforms):
            x, m = self.transforms.encode(inputs, mask)
            return self._batched(sequence_outputs, (x, m), batch_size or self.batch_size)
        raise UserInputError(f"predict supports the operator and sequence tasks; {type(self.bare_task).__name__} is "
                             f"neither: call run.model on batches of run.task instead")

    def _predict_fields(self, inputs: np.ndarray, resolution: int | None, batch_size: int) -> np.ndarray:
        pde = self.bare_task.pde
        d = len(self.bare_task.grids[self.bare_task.train_resolution])
        if inputs.ndim != d + 2 or inputs.shape[-1] != pde.in_channels or not np.issubdtype(inputs.dtype, np.number):
            raise UserInputError(f"inputs of shape {inputs.shape} ({inputs.dtype}): the model takes real fields "
                                 f"(n, {', '.join(['x', 'y', 'z'][:d])}, {pde.in_channels}): {d} grid axes and "
                                 f"{pde.in_channels} channel(s) last")
        if resolution is not None:
            try:
                inputs = pde.subsample(inputs, resolution)
            except ValueError as err:
                raise UserInputError(f"resolution {resolution}: {err}") from None
        x = self.transforms.encode(inputs)
        st = self.transforms.statistics(x.shape[1:-1])
        try:
            return self._batched(decoded_fields, (x,), batch_size, st["y_mean"], st["y_std"])
        except (ValueError, TypeError) as err:  # the model's own check of the grid, raised while tracing
            raise UserInputError(f"the model ({type(self.model).__name__}) does not take inputs on a grid of "
                                 f"{x.shape[1:-1]} points: {str(err).splitlines()[0]}") from None

    def _batched(self, fn, arrays: tuple[np.ndarray, ...], batch_size: int, *constants) -> np.ndarray:
        """``fn(model, *batch, *constants)`` over batches of ``batch_size`` rows, the last one padded by
        repeating its last row so that every batch has one shape (one compilation per grid)."""
        import flax.nnx as nnx

        graphdef, state = nnx.split(self.model)
        n = arrays[0].shape[0]
        out = []
        for lo in range(0, n, batch_size):
            idx = np.minimum(np.arange(lo, lo + batch_size), n - 1)
            out.append(np.asarray(_jitted(fn)(graphdef, state, *(a[idx] for a in arrays), *constants))[: n - lo])
        return np.concatenate(out)

    # -- evaluate -----------------------------------------------------------------------------------
    def evaluate(self, data_config_or_task: Any = None, plots: str | os.PathLike | None = None
                 ) -> dict[str, dict[str, float]]:
        """The task's metrics of the model on every evaluation split (``Trainer.evaluate``, as the run's
        own evaluation): ``{split: {metric: value}}``.

        ``None``: the run's task (the numbers of its results.json). A data config (``cfg.data``-like:
        a mapping with ``_target_``) or a built ``Task``: that task, set up here (its normaliser fitted on
        its own training split, as the task does); the model must fit its data. ``plots``: a directory
        for the task's sample plots of every split (``Task.plot``, as the trainer draws them).
        """
        import flax.nnx as nnx

        from experiments.tasks.base import Task
        from experiments.trainer import Trainer

        if data_config_or_task is None:
            task = self.task
        else:
            task = data_config_or_task
            if not isinstance(task, Task):
                cfg = self.cfg.copy()
                cfg.data = OmegaConf.create(data_config_or_task)
                task = build_task(cfg)
            task.check_model(self.model, self.batch_size)
            task.setup(progress=False)
        trainer = Trainer(trainer_config(self.cfg), self.path, seed=int(self.cfg.seed))
        graphdef, params, rest = nnx.split(self.model, nnx.Param, ...)
        metrics = trainer.evaluate(task, graphdef, {"params": params, "rest": rest})
        if plots is not None:
            pathlib.Path(plots).mkdir(parents=True, exist_ok=True)
            for split in task.eval_splits():
                task.plot(self.model, split, pathlib.Path(plots))
        return metrics


@functools.lru_cache(maxsize=None)
def _jitted(fn):
    """``jax.jit`` of ``(graphdef, state, *args) -> fn(merged model, *args)``, the graph static: one per
    ``fn``, so that every ``Run`` of the same model (a run and its export) shares the compilations."""
    import flax.nnx as nnx
    import jax

    return jax.jit(lambda graphdef, state, *args: fn(nnx.merge(graphdef, state), *args), static_argnums=0)


def decoded_fields(model, x, mean, std):
    """The operator task's prediction in physical units (``OperatorTask.predict``): output * std + mean."""
    return model(x) * std + mean


def sequence_outputs(model, x, mask):
    """A sequence model's outputs, called as the sequence tasks call it."""
    return model(x, mask)


def _recorded_versions(path: pathlib.Path) -> dict[str, str] | None:
    for name, key in ((EXPORT_VERSIONS, None), ("results.json", "cost")):
        try:
            data = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        return data if key is None else data.get(key, {}).get("versions")
    return None


def is_export(path: str | os.PathLike) -> bool:
    path = pathlib.Path(path)
    return (path / EXPORT_VERSIONS).is_file() and (path / EXPORT_CONFIG).is_file()


def load_run(path: str | os.PathLike, *, missing: str = "train it first (or rerun its command to finish it)") -> Run:
    """The trained model of a run directory of ``experiments.train`` or of an exported directory.

    ``missing``: what the error says to do when the run has no checkpoint yet.
    """
    path = pathlib.Path(path)
    if not path.is_dir():
        raise UserInputError(f"{str(path)!r} does not exist or is not a directory; pass a run directory of "
                             f"experiments.train or a directory written by experiments.export")
    versions = _recorded_versions(path)
    if is_export(path):
        cfg = saved_config(path, EXPORT_CONFIG)
        cfg, model, task = restore_trained(path, cfg, missing="the export is incomplete; export the run again",
                                           recorded_versions=versions)
        return Run(path, cfg, model, task, task_transforms(task, path), True)
    cfg, model, task = restore_trained(path, missing=missing, recorded_versions=versions)
    return Run(path, cfg, model, task, task_transforms(task), False)


def export_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> pathlib.Path:
    """Write the self-contained directory of ``run_dir``'s trained model to ``out_dir`` (new or empty).

    Written under a temporary name beside ``out_dir`` and renamed when complete, so that an interrupted
    export never leaves a directory that looks complete.
    """
    from experiments.checkpoint import Checkpointer
    from experiments.cost import versions

    out_dir = pathlib.Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserInputError(f"{out_dir} exists and is not an empty directory; choose a new output directory")
    run = load_run(run_dir)
    import flax.nnx as nnx

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        OmegaConf.save(OmegaConf.create(OmegaConf.to_container(run.cfg, resolve=True)), tmp / EXPORT_CONFIG)
        if isinstance(run.transforms, OperatorTransforms):
            run.transforms.save(tmp / EXPORT_STATISTICS)
        _, params, rest = nnx.split(run.model, nnx.Param, ...)
        ckpt = Checkpointer(tmp / "checkpoints", max_to_keep=1)
        try:
            ckpt.save(0, {"params": params, "rest": rest}, {"exported_from": str(run.path.absolute())})
        finally:
            ckpt.close()
        run_dir = pathlib.Path(run_dir)
        for overrides in (run_dir / ".hydra" / "overrides.yaml", run_dir / EXPORT_OVERRIDES):  # a run, an export
            if overrides.is_file():  # so that experiments.evaluate can compose new data overrides onto the run's
                shutil.copyfile(overrides, tmp / EXPORT_OVERRIDES)
                break
        (tmp / EXPORT_VERSIONS).write_text(json.dumps(versions(), indent=2) + "\n")
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
