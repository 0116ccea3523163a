"""Sequence tasks: classify or regress a whole sequence, or predict a token at every position.

The tasks take a *sequence dataset* (``dataset``; the protocol ``experiments.tasks.base.SequenceDataset``,
checked when a task is built) and own the batching, the loss, the metrics and the objective. The model is called as
``model(inputs, mask)``: ``inputs`` (B, L) int32 tokens when the dataset has a vocabulary, else
(B, L, d_input) float32 features; ``mask`` (B, L) bool, True at real positions (as
``lax_models.sequence.SequenceModel``; ``head="pool"`` for the first two families, ``"token"`` for
the third). Batches are dicts of NumPy arrays, completed per batch (the model's input dtype, the
mask, the scored positions) so that large datasets stay compact in memory.

* ``SequenceClassification``: logits (B, n_classes); loss mean cross-entropy; metrics ``accuracy``
  and ``loss`` averaged over examples; objective accuracy (max). ListOps, Pathfinder, digits.
* ``SequenceRegression``: predictions (B, 1) or (B,); loss and metric ``mse`` over examples (``rmse``
  derived); objective mse (min). The S4 adding problem.
* ``LanguageModeling``: logits (B, L, n_classes) against ``targets`` at the positions ``weights``
  marks; loss the cross-entropy averaged over scored tokens; metrics ``nll`` and ``accuracy``
  averaged over scored tokens (not examples, not batches), ``perplexity`` = exp(nll) and bits per
  token (``bpc`` for a character corpus) derived; objective nll (min) or accuracy (max). Two sources:

  - a token stream (the character corpus): training windows of ``seq_len`` + 1 tokens start at
    random offsets drawn from ``(seed, epoch)`` (each process builds only its rows), an epoch being
    about one pass over the training characters; evaluation cuts the split into consecutive windows,
    the last one padded, so that every token of the split after the first is scored exactly once;
  - examples with per-position targets (the synthetics, on the runner's default array batching).
    Associative recall and induction head are next-token prediction scored on every token in
    training and on the answer (the last token) in evaluation, as H3 / Hyena; copying is scored on
    the copied span (the last ``l_memorize`` positions), as S4.

Every task evaluates the dataset's splits other than "train" in its order; the objective is taken on
"val" if the dataset has it, else on "test" (else on its first evaluation split).
"""
from __future__ import annotations

import math
from typing import Any, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.errors import UserInputError
from experiments.metrics import Mean
from experiments.tasks.base import Objective, SequenceDataset, Shard, Task, check_dataset, eval_shape_or_error

Batch = dict[str, np.ndarray]

__all__ = ["LanguageModeling", "SequenceClassification", "SequenceRegression"]


class _SequenceTask(Task):
    """The dataset, its splits and the per-batch completion shared by the three families."""

    kinds: tuple[str, ...] = ()

    def __init__(self, dataset: Any):
        check_dataset(dataset, SequenceDataset, "data.dataset")
        kind = dataset.kind
        if kind not in self.kinds:
            raise UserInputError(f"{type(self).__name__} takes a dataset of kind {' or '.join(self.kinds)}, but "
                                 f"data.dataset ({type(dataset).__name__}) is of kind {kind!r}; use "
                                 f"{_FAMILY.get(kind, 'another task')} for it")
        if dataset.vocab_size is None and not hasattr(dataset, "d_input"):
            raise UserInputError(f"data.dataset ({type(dataset).__name__}) has real features (vocab_size None) but no "
                                 f"d_input, their channels (experiments.tasks.base.SequenceDataset)")
        self.dataset = dataset
        self.volatile_keys = tuple(f"dataset.{k}" for k in dataset.volatile_keys)
        self._eval_names = [s for s in dataset.splits if s != "train"]
        if "train" not in dataset.splits or not self._eval_names:
            raise UserInputError(f"data.dataset ({type(dataset).__name__}) must provide a 'train' split and at "
                                 f"least one other, got {list(dataset.splits)}")
        self.objective_split = next((s for s in ("val", "test") if s in self._eval_names), self._eval_names[0])
        self._data: dict[str, Any] | None = None

    # -- data ---------------------------------------------------------------------------------------
    def setup(self, progress: bool = True) -> None:
        self._data = self.dataset.load(progress=progress)
        missing = [s for s in self.dataset.splits if s not in self._data]
        if missing:
            raise RuntimeError(f"{type(self.dataset).__name__}.load() gave no split {missing}")

    def _loaded(self) -> dict[str, Any]:
        if self._data is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before the data is used")
        return self._data

    @property
    def train(self) -> Mapping[str, np.ndarray]:
        return self._loaded()["train"]

    @property
    def evals(self) -> dict[str, Mapping[str, np.ndarray]]:
        data = self._loaded()
        return {s: data[s] for s in self._eval_names}

    def eval_splits(self) -> list[str]:
        return list(self._eval_names)

    def train_batches(self, batch_size: int, *, seed: int, epoch: int, start: int = 0,
                      shard: Shard = Shard()) -> Iterator[Batch]:
        for batch in super().train_batches(batch_size, seed=seed, epoch=epoch, start=start, shard=shard):
            yield self._complete(batch)

    def eval_batches(self, split: str, batch_size: int, *,
                     shard: Shard = Shard()) -> Iterator[tuple[Batch, np.ndarray]]:
        for batch, valid in super().eval_batches(split, batch_size, shard=shard):
            yield self._complete(batch), valid

    def encode_inputs(self, inputs: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Stored inputs -> what the model reads: the dataset's ``model_inputs`` if it has one, else int32
        tokens (a vocabulary) or float32 features with a channel axis; and the mask, True at real
        positions (``inputs != pad_id`` where the dataset pads and no mask is given)."""
        if hasattr(self.dataset, "model_inputs"):
            x = self.dataset.model_inputs(inputs)
        elif self.dataset.vocab_size is not None:
            x = inputs.astype(np.int32)
        else:
            x = inputs.astype(np.float32)
            x = x[..., None] if x.ndim == 2 else x                          # (B, L) -> (B, L, 1)
        if mask is None:
            pad = getattr(self.dataset, "pad_id", None)
            mask = inputs != pad if pad is not None else np.ones(inputs.shape[:2], bool)
        return x, np.asarray(mask, bool)

    def _complete(self, batch: Mapping[str, np.ndarray]) -> Batch:
        """Stored arrays of a batch -> what the model and the metrics read (dtypes, mask)."""
        x, mask = self.encode_inputs(batch["inputs"], batch.get("mask"))
        return {"inputs": x, "mask": mask, **self._complete_targets(batch, mask)}

    def _complete_targets(self, batch: Mapping[str, np.ndarray], mask: np.ndarray) -> Batch:
        raise NotImplementedError

    # -- shapes -------------------------------------------------------------------------------------
    def _input_struct(self, batch_size: int, length: int) -> dict[str, jax.ShapeDtypeStruct]:
        if self.dataset.vocab_size is not None:
            x = jax.ShapeDtypeStruct((batch_size, length), jnp.int32)
        else:
            x = jax.ShapeDtypeStruct((batch_size, length, self.dataset.d_input), jnp.float32)
        return {"inputs": x, "mask": jax.ShapeDtypeStruct((batch_size, length), jnp.bool_)}

    def _model_output(self, model, batch_size: int):
        ex = self.example_batch(batch_size)
        return ex, eval_shape_or_error(model, ex["inputs"], ex["mask"])


class SequenceClassification(_SequenceTask):
    """Classify whole sequences (ListOps, Pathfinder, sequential digits).

    Args:
      dataset: a classification dataset (``kind = "classification"``), e.g.
        ``experiments.data.listops.ListOps(...)``.
    """

    kinds = ("classification",)

    def __init__(self, dataset: Any):
        super().__init__(dataset)
        self.objective = Objective("accuracy", mode="max", split=self.objective_split)

    def example_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        return {**self._input_struct(batch_size, self.dataset.seq_len),
                "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32)}

    def check_model(self, model, batch_size: int) -> None:
        _, out = self._model_output(model, batch_size)
        want = (batch_size, self.dataset.n_classes)
        if out.shape != want:
            raise UserInputError(f"the classifier must map a batch to logits of shape {want} (one per class of "
                                 f"{type(self.dataset).__name__}), got {out.shape}; set the model's output size "
                                 f"(d_output={self.dataset.n_classes}) and a pooled head")

    def _complete_targets(self, batch, mask):
        return {"label": np.asarray(batch["label"], np.int32)}

    def _cross_entropy(self, model, batch):
        logits = model(batch["inputs"], batch["mask"])                          # (B, n_classes)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        return ce, (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)

    def loss(self, model, batch) -> jax.Array:
        return jnp.mean(self._cross_entropy(model, batch)[0])

    def metrics(self, model, batch, split: str) -> dict[str, Mean]:
        ce, correct = self._cross_entropy(model, batch)
        return {"accuracy": Mean(correct), "loss": Mean(ce)}


class SequenceRegression(_SequenceTask):
    """Regress one real number per sequence (the adding problem).

    Args:
      dataset: a regression dataset (``kind = "regression"``), e.g. ``experiments.data.synthetics.Adding``.
    """

    kinds = ("regression",)

    def __init__(self, dataset: Any):
        super().__init__(dataset)
        self.objective = Objective("mse", mode="min", split=self.objective_split)

    def example_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        return {**self._input_struct(batch_size, self.dataset.seq_len),
                "target": jax.ShapeDtypeStruct((batch_size,), jnp.float32)}

    def check_model(self, model, batch_size: int) -> None:
        _, out = self._model_output(model, batch_size)
        if out.shape not in ((batch_size,), (batch_size, 1)):
            raise UserInputError(f"the regressor must map a batch to shape {(batch_size, 1)} (one value per "
                                 f"sequence), got {out.shape}; set the model's d_output=1 and a pooled head")

    def _complete_targets(self, batch, mask):
        return {"target": np.asarray(batch["target"], np.float32)}

    def _squared_error(self, model, batch):
        pred = model(batch["inputs"], batch["mask"]).reshape(batch["target"].shape)   # (B,)
        return (pred - batch["target"]) ** 2

    def loss(self, model, batch) -> jax.Array:
        return jnp.mean(self._squared_error(model, batch))

    def metrics(self, model, batch, split: str) -> dict[str, Mean]:
        return {"mse": Mean(self._squared_error(model, batch))}

    def summarize(self, means: dict[str, float], split: str) -> dict[str, float]:
        return {**means, "rmse": math.sqrt(means["mse"])}


class LanguageModeling(_SequenceTask):
    """Predict a token at every position: next-token language modelling and per-position synthetics.

    Args:
      dataset: a token stream (``kind = "stream"``, e.g. ``experiments.data.text.CharCorpus``) or
        examples with per-position targets (``kind = "tokens"``, e.g. ``experiments.data.synthetics.Copying``).
      seq_len: window length for a stream (tokens in, the next ``seq_len`` tokens out); None for examples,
        whose length is the dataset's.
      objective: "nll" (minimised) or "accuracy" (maximised; H3 / Hyena monitor the answer's accuracy).
    """

    kinds = ("tokens", "stream")

    def __init__(self, dataset: Any, seq_len: int | None = None, objective: str = "nll"):
        super().__init__(dataset)
        self.stream = dataset.kind == "stream"
        if self.stream and (seq_len is None or seq_len < 1):
            raise UserInputError(f"data.seq_len must be a positive window length for the token stream of "
                                 f"{type(dataset).__name__}, got {seq_len}")
        if not self.stream and seq_len is not None and seq_len != dataset.seq_len:
            raise UserInputError(f"data.seq_len applies to token streams only; {type(dataset).__name__} has "
                                 f"examples of {dataset.seq_len} positions (leave data.seq_len null)")
        if objective not in ("nll", "accuracy"):
            raise UserInputError(f"data.objective={objective!r} is unknown; choose 'nll' or 'accuracy'")
        self.seq_len = seq_len if self.stream else dataset.seq_len
        self.objective = Objective(objective, mode="min" if objective == "nll" else "max", split=self.objective_split)
        self.bits_name = "bpc" if getattr(dataset, "unit", "token") == "char" else "bits_per_token"

    # -- shapes ---------------------------------------------------------------------------------------
    def example_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        shape = (batch_size, self.seq_len)
        return {**self._input_struct(batch_size, self.seq_len), "targets": jax.ShapeDtypeStruct(shape, jnp.int32),
                "weights": jax.ShapeDtypeStruct(shape, jnp.bool_)}

    def check_model(self, model, batch_size: int) -> None:
        _, out = self._model_output(model, batch_size)
        want = (batch_size, self.seq_len, self.dataset.n_classes)
        if out.shape != want:
            raise UserInputError(f"the model must give per-token logits of shape {want} (one per token of "
                                 f"{type(self.dataset).__name__}'s vocabulary), got {out.shape}; set "
                                 f"d_output={self.dataset.n_classes} and head='token'")

    # -- examples (default array batching, completed per batch) --------------------------------------
    def _complete_targets(self, batch, mask):
        weights = batch.get("weights")
        return {"targets": np.asarray(batch["targets"], np.int32),
                "weights": np.asarray(mask if weights is None else weights, bool)}

    # -- streams: windows --------------------------------------------------------------------------------
    def _stream(self, split: str) -> np.ndarray:
        stream = self._loaded()[split]
        if len(stream) < 2:
            raise UserInputError(f"the {split} split of {type(self.dataset).__name__} has {len(stream)} tokens; "
                                 f"it needs at least 2")
        return stream

    def _windows(self, stream: np.ndarray, starts: np.ndarray) -> Batch:
        """Windows of ``seq_len`` inputs and their next tokens starting at ``starts``; positions past the
        stream's end are padding (mask and weights False)."""
        L = self.seq_len
        idx = starts[:, None] + np.arange(L + 1)[None, :]                  # (B, L + 1)
        real = idx < len(stream)
        tokens = np.where(real, stream[np.minimum(idx, len(stream) - 1)], 0).astype(np.int32)
        scored = real[:, 1:]                                                # the target exists
        return {"inputs": tokens[:, :-1], "mask": real[:, :-1], "targets": tokens[:, 1:], "weights": scored}

    def steps_per_epoch(self, batch_size: int) -> int:
        if not self.stream:
            return super().steps_per_epoch(batch_size)
        n = len(self._stream("train"))
        if n <= self.seq_len:
            raise UserInputError(f"data.seq_len={self.seq_len} is not shorter than the training stream ({n} "
                                 f"tokens); lower data.seq_len")
        return max(1, (n - 1) // (batch_size * self.seq_len))

    def train_batches(self, batch_size: int, *, seed: int, epoch: int, start: int = 0,
                      shard: Shard = Shard()) -> Iterator[Batch]:
        if not self.stream:
            yield from super().train_batches(batch_size, seed=seed, epoch=epoch, start=start, shard=shard)
            return
        stream = self._stream("train")
        steps = self.steps_per_epoch(batch_size)
        # Window starts of the whole epoch, a function of (seed, epoch) only: resume and shards agree.
        starts = np.random.default_rng([seed, epoch]).integers(0, len(stream) - self.seq_len,
                                                               size=(steps, batch_size))
        for i in range(start, steps):
            yield self._windows(stream, starts[i][shard.rows(batch_size)])

    def eval_batches(self, split: str, batch_size: int, *,
                     shard: Shard = Shard()) -> Iterator[tuple[Batch, np.ndarray]]:
        if not self.stream:
            yield from super().eval_batches(split, batch_size, shard=shard)
            return
        stream = self._stream(split)
        n_windows = -(-(len(stream) - 1) // self.seq_len)   # every target token once
        for lo in range(0, n_windows, batch_size):
            idx = np.arange(lo, lo + batch_size)[shard.rows(batch_size)]
            valid = idx < n_windows
            yield self._windows(stream, np.where(valid, idx, 0) * self.seq_len), valid

    # -- loss and metrics (traced) ---------------------------------------------------------------------
    def _token_stats(self, model, batch):
        logits = model(batch["inputs"], batch["mask"])                        # (B, L, V)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        correct = (jnp.argmax(logits, -1) == batch["targets"]).astype(jnp.float32)
        return nll, correct, batch["weights"].astype(jnp.float32)

    def loss(self, model, batch) -> jax.Array:
        nll, _, w = self._token_stats(model, batch)
        return jnp.sum(nll * w) / jnp.maximum(jnp.sum(w), 1.0)

    def metrics(self, model, batch, split: str) -> dict[str, Mean]:
        nll, correct, w = self._token_stats(model, batch)
        count = w.sum(-1)
        return {"nll": Mean((nll * w).sum(-1), count), "accuracy": Mean((correct * w).sum(-1), count)}

    def summarize(self, means: dict[str, float], split: str) -> dict[str, float]:
        nll = means["nll"]
        return {**means, "perplexity": math.exp(nll) if nll < 700 else math.inf, self.bits_name: nll / math.log(2)}


_FAMILY = {"classification": "SequenceClassification", "regression": "SequenceRegression",
           "tokens": "LanguageModeling", "stream": "LanguageModeling"}

