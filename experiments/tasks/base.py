"""The seam between the runner and a family of problems.

The trainer knows nothing about PDEs, sequences or graphs. A ``Task`` owns the data (generated or
loaded), the training loss and the evaluation metrics; the trainer owns the loop, the devices, the
checkpoints and the logs. Adding a task family (sequence classification, language modelling, graph
or inverse problems) means writing one subclass of ``Task``, nothing in the trainer.

Data crosses the seam as dicts of NumPy arrays whose leading axis is the sample axis. The trainer
slices batches out of them on the host, shards them over the devices along that axis, and passes
them to ``loss`` / ``metrics`` inside ``jax.jit``; both must therefore be pure, traceable functions
of ``(model, batch)``.
"""
from __future__ import annotations

import abc
import pathlib
from typing import Mapping

import jax
import numpy as np

Arrays = Mapping[str, np.ndarray]


class UserInputError(ValueError):
    """Bad configuration or input, reported to the user as one clear message (no traceback)."""


def split_size(arrays: Arrays) -> int:
    """Number of samples in a split (the common leading dimension of its arrays)."""
    sizes = {k: v.shape[0] for k, v in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"arrays of one split must share their leading (sample) axis, got {sizes}")
    return next(iter(sizes.values()))


class Task(abc.ABC):
    """A problem family: data, loss and metrics. Subclasses document their config."""

    @abc.abstractmethod
    def example_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        """Shapes of one training batch, known from the config alone (before any data exists).

        The runner uses it to check model and data fit together before spending time on data.
        """

    @abc.abstractmethod
    def setup(self, progress: bool = True) -> None:
        """Generate or load the data. Called once, after the checks."""

    @property
    @abc.abstractmethod
    def train(self) -> Arrays:
        """The training split: dict of arrays, leading axis = sample."""

    @property
    @abc.abstractmethod
    def evals(self) -> dict[str, Arrays]:
        """Evaluation splits by name (e.g. one per test resolution)."""

    @abc.abstractmethod
    def loss(self, model, batch: Mapping[str, jax.Array]) -> jax.Array:
        """Scalar training loss of ``model`` on ``batch`` (traced inside ``jax.jit``)."""

    @abc.abstractmethod
    def metrics(self, model, batch: Mapping[str, jax.Array], split: str) -> dict[str, jax.Array]:
        """Per-sample metric values, each of shape ``(batch,)``; the runner averages over the split."""

    def predict(self, model, batch: Mapping[str, jax.Array]) -> jax.Array:
        """Model output in the units of the target (used by plots); default: the raw model output."""
        return model(batch["x"])

    def plot(self, model, split: str, out_dir: pathlib.Path) -> list[pathlib.Path]:
        """Write task-specific PNGs (e.g. input / truth / prediction / error); default: none."""
        return []
