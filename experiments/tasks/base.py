"""The seam between the runner and a family of problems.

The trainer knows nothing about PDEs, sequences or graphs. A ``Task`` owns the data (generated or
loaded), how it is cut into batches, the training loss, the evaluation metrics and which of them is
the run's objective; the trainer owns the loop, the devices, the checkpoints and the logs. Adding a
task family (sequence classification, language modelling, graphs, inverse problems, rollouts)
means writing one subclass, nothing in the trainer.

A batch is a dict (or any pytree) of NumPy arrays whose leading axis is the example axis: the
trainer shards that axis over the devices and passes the batch to ``loss`` / ``metrics`` inside
``jax.jit``, so both must be pure, traceable functions of ``(model, batch)``. A batch may carry
whatever else an example needs: a token mask, a per-example weight, a node mask of padded graphs.

The defaults below serve the common case of in-memory splits given as dicts of equal-length arrays
(``train`` and ``evals``): an epoch is a permutation that depends only on ``(seed, epoch)``, cut
into ``n // batch_size`` batches (the incomplete last one dropped), so that a resumed run replays
exactly the batches the uninterrupted run would have seen. Tasks whose data is not such arrays
(windows cut from long sequences, ragged graphs padded per batch, generated on the fly) override
``steps_per_epoch``, ``train_batches``, ``eval_splits`` and ``eval_batches`` instead.
"""
from __future__ import annotations

import abc
import dataclasses
import pathlib
from typing import Any, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import jax
import numpy as np

from experiments.errors import UserInputError
from experiments.metrics import Mean

Arrays = Mapping[str, np.ndarray]
Batch = Any  # a pytree of arrays with a leading example axis; usually dict[str, np.ndarray]

__all__ = ["Arrays", "Batch", "FieldDataset", "GridDataset", "Mean", "Objective", "SequenceDataset", "Shard", "Task",
           "TrajectoryDataset", "UserInputError", "check_dataset", "epoch_permutation", "protocol_members",
           "split_size"]


@dataclasses.dataclass(frozen=True)
class Objective:
    """The metric a run is judged by: what ``main`` returns to a sweeper, what plots and tables show.

    ``split`` None means the first evaluation split; ``mode`` is "min" (an error) or "max" (an accuracy).
    """

    metric: str
    mode: str = "min"
    split: str | None = None

    def __post_init__(self):
        if self.mode not in ("min", "max"):
            raise ValueError(f"Objective.mode must be 'min' or 'max', got {self.mode!r}")


@dataclasses.dataclass(frozen=True)
class Shard:
    """This process's share of every batch: rows ``[index * n / count, (index + 1) * n / count)``.

    One process (``count == 1``) takes whole batches. In a multi-process run each process builds only
    its own rows; the trainer assembles the global batch from the shares.
    """

    index: int = 0
    count: int = 1

    def rows(self, n: int) -> slice:
        if n % self.count:
            raise ValueError(f"a batch of {n} examples cannot be split evenly over {self.count} processes")
        size = n // self.count
        return slice(self.index * size, (self.index + 1) * size)


def split_size(arrays: Arrays) -> int:
    """Number of examples in a split (the common leading dimension of its arrays)."""
    sizes = {k: v.shape[0] for k, v in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"arrays of one split must share their leading (example) axis, got {sizes}")
    return next(iter(sizes.values()))


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The example order of one epoch: a function of (seed, epoch) only, so resume replays it."""
    return np.random.default_rng([seed, epoch]).permutation(n)


class Task(abc.ABC):
    """A problem family: data, batches, loss, metrics and objective. Subclasses document their config.

    Class attributes a subclass sets:

    * ``objective`` (required): the ``Objective`` (metric name, "min"/"max", split).
    * ``volatile_keys``: keys of the task's config (dotted, relative to ``data``) that do not change
      the run's identity, e.g. where the data is cached or how many processes generate it; a run
      may resume with them changed.
    """

    objective: Objective
    volatile_keys: tuple[str, ...] = ()

    # -- before any data exists --------------------------------------------------------------------
    @abc.abstractmethod
    def example_batch(self, batch_size: int) -> Batch:
        """``jax.ShapeDtypeStruct``s of one training batch, known from the config alone."""

    def check_model(self, model, batch_size: int) -> None:
        """Check that ``model`` fits the data, with shapes only (``jax.eval_shape``; nothing computed).

        Called before ``setup``, so a mismatch is reported before any time is spent on data. The
        default applies the model to ``batch["x"]`` and expects the shape of ``batch["y"]``.
        """
        example = self.example_batch(batch_size)
        out = eval_shape_or_error(model, example["x"])
        if "y" in example and out.shape != example["y"].shape:
            raise UserInputError(f"the model maps {example['x'].shape} to {out.shape}, but the targets "
                                 f"have shape {example['y'].shape}; check the model's output size "
                                 f"(e.g. model.out_channels)")

    def model_settings(self) -> dict[str, Any]:
        """What the data implies about the model, known from the config alone; default: nothing.

        Keys the runner understands (``experiments.build.fit_model_config``): ``in_channels`` and
        ``out_channels`` (channels of the model's input and output fields) and ``spatial_dims`` (the
        number of axes a grid model such as the FNO must take: one mode count per axis). The runner
        sets a model option to these values only where the config's value could not fit the data, and
        logs every change, so ``data=burgers model=fno`` runs without restating the FNO's axes.
        """
        return {}

    @abc.abstractmethod
    def setup(self, progress: bool = True) -> None:
        """Generate or load the data. Called once, after the checks."""

    # -- batches (defaults: in-memory arrays ``train`` / ``evals``) ----------------------------------
    @property
    def train(self) -> Arrays:
        """The training split as a dict of arrays (leading axis = example), for the default batching."""
        raise NotImplementedError(f"{type(self).__name__} provides neither `train` arrays nor its own "
                                  f"`train_batches` / `steps_per_epoch`")

    @property
    def evals(self) -> dict[str, Arrays]:
        """Evaluation splits by name, each a dict of arrays, for the default batching."""
        raise NotImplementedError(f"{type(self).__name__} provides neither `evals` arrays nor its own "
                                  f"`eval_splits` / `eval_batches`")

    def steps_per_epoch(self, batch_size: int) -> int:
        """Training batches per epoch (the incomplete last batch is dropped)."""
        n = split_size(self.train)
        if batch_size > n:
            raise UserInputError(f"trainer.batch_size={batch_size} exceeds the training set ({n} examples); "
                                 f"lower the batch size or add data")
        return n // batch_size

    def train_batches(self, batch_size: int, *, seed: int, epoch: int, start: int = 0,
                      shard: Shard = Shard()) -> Iterator[Batch]:
        """The training batches of ``epoch`` from batch number ``start`` on (this process's rows).

        Must depend only on ``(seed, epoch)`` (and the data), so that resume replays the same batches.
        """
        train = self.train
        perm = epoch_permutation(seed, epoch, split_size(train))
        for i in range(start, self.steps_per_epoch(batch_size)):
            idx = np.sort(perm[i * batch_size:(i + 1) * batch_size])[shard.rows(batch_size)]
            yield {k: v[idx] for k, v in train.items()}

    def eval_splits(self) -> list[str]:
        """Names of the evaluation splits, in the order they are evaluated and reported."""
        return list(self.evals)

    def eval_batches(self, split: str, batch_size: int, *,
                     shard: Shard = Shard()) -> Iterator[tuple[Batch, np.ndarray]]:
        """``(batch, valid)`` pairs covering ``split`` once; ``valid`` (rows,) is False for padding.

        The last batch is padded to ``batch_size`` (repeating example 0) so that every batch has the
        same shape and the evaluation compiles once; padded rows count for nothing in the metrics.
        """
        arrays = self.evals[split]
        n = split_size(arrays)
        for lo in range(0, n, batch_size):
            idx = np.arange(lo, lo + batch_size)[shard.rows(batch_size)]
            valid = idx < n
            yield {k: v[np.where(valid, idx, 0)] for k, v in arrays.items()}, valid

    # -- the model on a batch (traced inside jax.jit) ------------------------------------------------
    @abc.abstractmethod
    def loss(self, model, batch: Batch) -> jax.Array:
        """Scalar training loss of ``model`` on ``batch``."""

    @abc.abstractmethod
    def metrics(self, model, batch: Batch, split: str) -> dict[str, Mean | jax.Array]:
        """Evaluation metrics of one batch: a ``Mean`` (per-example sums and counts) per metric.

        A plain ``(batch,)`` array is read as per-example values averaged over examples.
        """

    def summarize(self, means: dict[str, float], split: str) -> dict[str, float]:
        """Metrics derived from the split's means (e.g. perplexity = exp(mean NLL)); default: none."""
        return means

    # -- after training ------------------------------------------------------------------------------
    def plot(self, model, split: str, out_dir: pathlib.Path) -> list[pathlib.Path]:
        """Write task-specific PNGs (e.g. input / truth / prediction / error); default: none."""
        return []


def eval_shape_or_error(model, *inputs) -> Any:
    """``jax.eval_shape`` of ``model(*inputs)``; a shape error becomes a ``UserInputError``.

    The model is merged afresh inside the trace (``copy=True``), so that a model that mutates its own
    state when called (dropout's RNG counter, batch statistics) can be shape-checked in train mode.
    """
    import flax.nnx as nnx

    graphdef, state = nnx.split(model)
    try:
        return jax.eval_shape(lambda st, *a: nnx.merge(graphdef, st, copy=True)(*a), state, *inputs)
    except (ValueError, TypeError) as err:
        shapes = ", ".join(str(getattr(x, "shape", x)) for x in inputs)
        raise UserInputError(f"the model ({type(model).__name__}) does not fit the data (input of shape "
                             f"{shapes}): {err}") from None


# -- the contracts of the datasets a task takes ---------------------------------------------------------
@runtime_checkable
class GridDataset(Protocol):
    """Fields on a grid that can be subsampled: what the PDE tasks need of their ``pde`` dataset.

    * ``volatile_keys``: its constructor arguments that do not change the data (a cache directory, a
      worker count); the task prefixes them (``pde.cache_dir``) so a run may resume with them changed;
    * ``spatial_shape(resolution) -> tuple``: the grid at a resolution, or a ValueError naming the
      reachable resolutions;
    * ``load(split, n, progress) -> (inputs, outputs)``: arrays ``(n, *grid, channels)`` on its native
      grid, generated or read (and cached) on first use;
    * ``subsample(fields, resolution)``: ``(n, *grid, c)`` on the native grid -> the same at ``resolution``.
    """

    volatile_keys: Sequence[str]

    def spatial_shape(self, resolution: int) -> tuple[int, ...]: ...

    def load(self, split: str, n: int, progress: bool = True) -> tuple[np.ndarray, np.ndarray]: ...

    def subsample(self, fields: np.ndarray, resolution: int) -> np.ndarray: ...


@runtime_checkable
class FieldDataset(GridDataset, Protocol):
    """Input -> output field pairs: the ``pde`` of ``experiments.tasks.pde.OperatorTask``.

    A ``GridDataset`` whose ``load`` gives ``(inputs (n, *grid, in_channels), outputs (n, *grid,
    out_channels))``, with ``in_channels`` and ``out_channels`` known before any data exists (the model
    is shaped from them). E.g. ``experiments.data.darcy.DarcyFlow``.
    """

    in_channels: int
    out_channels: int


@runtime_checkable
class TrajectoryDataset(GridDataset, Protocol):
    """Time series of fields: the ``pde`` of ``experiments.tasks.rollout.RolloutTask`` / ``SpaceTimeTask``.

    A ``GridDataset`` whose ``load`` gives ``(initial field, snapshots)`` with the snapshots
    ``(n, *grid, T)`` as channels, ``T = n_snapshots``. E.g. ``experiments.data.navier_stokes.NavierStokesFlow``.
    Optional ``n_fields`` = C (absent: 1): C fields per snapshot, laid out time-major ``(n, *grid, T * C)``
    (channel ``t * C + c``), as ``experiments.data.pdebench`` and ``experiments.data.the_well`` give them.
    """

    n_snapshots: int


@runtime_checkable
class SequenceDataset(Protocol):
    """Sequences and their targets: the ``dataset`` of the tasks of ``experiments.tasks.sequence``.

    * ``kind``: "classification" (one integer label per sequence), "regression" (one real target per
      sequence), "tokens" (one integer target per position, scored where ``weights`` is set) or
      "stream" (one long token sequence per split, cut into windows by the task);
    * ``splits``: the split names it provides, in evaluation order after "train" (e.g. train, val, test);
    * ``vocab_size``: inputs are integer tokens in ``[0, vocab_size)``, or None for real features with
      ``d_input`` channels (then ``d_input`` is required too);
    * ``seq_len``: the (padded) length of every example; None for streams, whose windows the task chooses;
    * ``n_classes``: labels (classification) or target tokens (tokens, stream) lie in ``[0, n_classes)``;
      None for regression;
    * ``volatile_keys``: its arguments that do not change the data (where it is cached);
    * ``load(progress) -> {split: arrays}``: the data, generated or read from the cache. For examples,
      ``arrays`` is a dict of NumPy arrays with a leading example axis: ``inputs`` (n, L) integer tokens
      or (n, L, ...) stored features; ``mask`` (n, L) bool, True = a real position (absent:
      ``inputs != pad_id`` if the dataset has a ``pad_id``, else all real); and ``label`` (n,) int,
      ``target`` (n,) float, or ``targets`` (n, L) int with ``weights`` (n, L) bool (absent: every real
      position is scored). For streams it is a 1-D integer array per split.

    Optional: ``model_inputs(inputs) -> array``, the model's input for a batch of stored ``inputs``
    (e.g. uint8 pixels -> float32 intensities), so that large datasets stay compact in memory;
    ``pad_id``; ``unit`` ("char" names the bits-per-token metric ``bpc``).
    """

    kind: str
    splits: Sequence[str]
    vocab_size: int | None
    seq_len: int | None
    n_classes: int | None
    volatile_keys: Sequence[str]

    def load(self, progress: bool = True) -> Mapping[str, Any]: ...


def protocol_members(protocol: type) -> list[str]:
    """The public attributes and methods a ``Protocol`` (and the protocols it extends) declares, in order."""
    names: list[str] = []
    for base in reversed(protocol.__mro__):
        if not getattr(base, "_is_protocol", False) or base is Protocol:
            continue
        for name in [*vars(base).get("__annotations__", {}), *vars(base)]:
            if not name.startswith("_") and name not in names:
                names.append(name)
    return names


def check_dataset(dataset: Any, protocol: type, where: str) -> None:
    """A ``UserInputError`` naming the members of ``protocol`` that ``dataset`` lacks, and the protocol.

    ``where`` names the config node (e.g. "data.pde"), so the message says which option to fix.
    """
    missing = [name for name in protocol_members(protocol) if not hasattr(dataset, name)]
    if missing:
        raise UserInputError(f"{where} ({type(dataset).__name__}) is not a {protocol.__name__} "
                             f"(experiments.tasks.base.{protocol.__name__}): it lacks {', '.join(missing)}")
