"""Synthetic memory and in-context-learning tasks: associative recall and induction head (H3 / Hyena),
copying and adding (S4). All vectorised NumPy, generated per split from its own seeded stream, cached.

**Associative recall and induction head** follow ``HazyResearch/safari: src/dataloaders/synthetics.py``
(``ICLDataModule``, ``configs/dataset/icl_synthetics.yaml``, ``configs/pipeline/*.yaml``). The
``vocab_size`` tokens are the no-op ``.`` (id 0), the ``vocab_size - 2`` ordinary tokens (ids
1..vocab_size-2) and the copy prefix ``=>`` (id vocab_size-1): the ids safari's sorted string
vocabulary gives them. An example of ``T`` tokens is scored as a language model: inputs are tokens
0..T-2, targets tokens 1..T-1. As in safari, the training split is scored on every target (plain
next-token prediction) and the test split on the last target only (its ``accuracy_ignore_index``).

* Associative recall: keys are the first half of the ordinary tokens, values the second half. Each
  example draws its own key -> value map (``num_keys`` keys per entry, each value uniform), then
  ``input_seq_len // (num_keys + 1)`` entries with uniformly drawn keys, then ``=>``, a query key
  drawn uniformly from the keys present (safari's ``allow_dot=False``) and its value. Defaults:
  vocab 20, input_seq_len 40, 5,000 / 500 examples. Hyena's long setting: vocab 30,
  input_seq_len 131,072, 4,000 training examples.
* Induction head: ``input_seq_len`` ordinary tokens drawn uniformly, ``=>`` written at one uniform
  position p in [0, input_seq_len - 3] (``induction_len`` 1; safari draws ``num_triggers`` = 1), then
  ``=>`` and the token that followed the trigger (T = input_seq_len + 2). Defaults: vocab 20,
  input_seq_len 30, 5,000 / 500 examples.

Examples are deduplicated within each split, as safari does (it regenerates until the split is full).

**Copying and adding** follow ``state-spaces/s4: src/dataloaders/synthetic.py`` and
``datasets/{copying,adding}.py`` with ``configs/dataset/{copying,adding}.yaml``.

* Copying (a per-position task, scored on the copied span): ``l_memorize`` tokens drawn uniformly
  from 1..n_tokens-2, then ``l_noise`` blanks (0), then ``l_memorize`` markers (n_tokens-1); the
  targets of the last ``l_memorize`` positions are the memorised tokens (reversed if ``reverse``).
  ``variable``: the tokens are scattered over the first l_noise + l_memorize positions (sorted random
  positions) instead of leading. Defaults: l_noise 100, l_memorize 10, n_tokens 10, 10,000 training
  / 1,000 evaluation examples. S4 draws fresh training examples every epoch; here the training set
  is fixed (S4's ``static: true``): raise n_train to approach fresh draws.
* Adding (sequence regression): L = l_max positions of (u ~ U[0, 1], marker); one marker uniformly
  in the first half (positions < L // 2), one in the second half; the target is the sum of the two
  marked u. S4: l_max 1000, 50,000 samples, 10% held out for validation. Predicting 1 everywhere
  scores MSE 1/6.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from experiments.data import check_sizes, progress_bar, token_dtype
from experiments.data.store import DEFAULT_CACHE_DIR, cached_arrays, split_rng

SYNTHETICS_GENERATOR_VERSION = 1
NOOP = 0
CHUNK = 1024  # examples drawn per call of a vectorised sampler

__all__ = ["Adding", "AssociativeRecall", "Copying", "InductionHead", "adding_examples", "assoc_recall_examples",
           "copying_examples", "induction_head_examples"]


# -- samplers: rng, n -> arrays -------------------------------------------------------------------

def assoc_recall_examples(rng: np.random.Generator, n: int, vocab_size: int, input_seq_len: int,
                          num_keys: int = 1) -> np.ndarray:
    """(n, T) int64 associative-recall sequences, T = pairs * (num_keys + 1) + num_keys + 2."""
    n_ordinary = vocab_size - 2
    n_key_tokens = n_ordinary // 2
    keys_tokens = 1 + np.arange(n_key_tokens)                       # ids of the key half
    value_tokens = 1 + n_key_tokens + np.arange(n_ordinary - n_key_tokens)
    n_entries = n_key_tokens ** num_keys                            # distinct (multi-token) keys
    pairs = input_seq_len // (num_keys + 1)
    kv_map = rng.integers(0, len(value_tokens), size=(n, n_entries))  # per-example key -> value index
    entry = rng.integers(0, n_entries, size=(n, pairs))             # (n, pairs) which key
    present = np.zeros((n, n_entries), bool)
    np.put_along_axis(present, entry, True, axis=1)
    scores = np.where(present, rng.random((n, n_entries)), -1.0)
    query = np.argmax(scores, axis=1)                               # uniform over the present keys
    digits = num_keys - 1 - np.arange(num_keys)                     # most significant key token first

    def key_tokens(e):                                              # (..., ) entries -> (..., num_keys)
        return keys_tokens[(e[..., None] // n_key_tokens ** digits) % n_key_tokens]

    values = value_tokens[np.take_along_axis(kv_map, entry, axis=1)]            # (n, pairs)
    body = np.concatenate([key_tokens(entry), values[..., None]], axis=-1)      # (n, pairs, num_keys + 1)
    answer = value_tokens[kv_map[np.arange(n), query]]
    tail = np.concatenate([np.full((n, 1), vocab_size - 1), key_tokens(query), answer[:, None]], axis=1)
    return np.concatenate([body.reshape(n, -1), tail], axis=1)


def induction_head_examples(rng: np.random.Generator, n: int, vocab_size: int, input_seq_len: int) -> np.ndarray:
    """(n, input_seq_len + 2) int64 induction-head sequences (induction_len 1, one trigger)."""
    prefix = vocab_size - 1
    seq = rng.integers(1, vocab_size - 1, size=(n, input_seq_len + 2))   # ordinary tokens
    pos = rng.integers(0, input_seq_len - 2, size=n)                     # trigger in [0, input_seq_len - 3]
    rows = np.arange(n)
    seq[rows, pos] = prefix
    seq[:, input_seq_len] = prefix
    seq[:, input_seq_len + 1] = seq[rows, pos + 1]
    return seq


def copying_examples(rng: np.random.Generator, n: int, l_noise: int, l_memorize: int, n_tokens: int,
                     variable: bool = False, reverse: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """S4 copying: inputs (n, l_noise + 2 l_memorize) and the memorised tokens (n, l_memorize)."""
    tokens = rng.integers(1, n_tokens - 1, size=(n, l_memorize))
    head = np.zeros((n, l_noise + l_memorize), np.int64)
    if variable:
        where = np.sort(np.argsort(rng.random((n, l_noise + l_memorize)), axis=1)[:, :l_memorize], axis=1)
    else:
        where = np.broadcast_to(np.arange(l_memorize), (n, l_memorize))
    np.put_along_axis(head, where, tokens, axis=1)
    inputs = np.concatenate([head, np.full((n, l_memorize), n_tokens - 1)], axis=1)
    return inputs, tokens[:, ::-1] if reverse else tokens


def adding_examples(rng: np.random.Generator, n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """S4 adding: inputs (n, L, 2) float32 = (u, marker) and targets (n,) = sum of the marked u."""
    mid = length // 2
    first = rng.integers(0, mid, size=n)
    second = mid + rng.integers(0, length - mid, size=n)
    u = rng.random((n, length))
    marker = np.zeros((n, length))
    rows = np.arange(n)
    marker[rows, first] = 1.0
    marker[rows, second] = 1.0
    x = np.stack([u, marker], axis=-1).astype(np.float32)
    return x, (u[rows, first] + u[rows, second]).astype(np.float32)


def _unique_examples(sample: Callable[[np.random.Generator, int], np.ndarray], rng: np.random.Generator, n: int,
                     length: int, dtype: np.dtype, desc: str, progress: bool, max_rounds: int = 1000) -> np.ndarray:
    """``n`` distinct rows (of ``length`` tokens) drawn chunk by chunk from ``sample``, in order of first
    appearance, stored as ``dtype``."""
    rows: list[np.ndarray] = []
    seen: set[bytes] = set()
    bar = progress_bar(range(n), n, desc, progress)
    per_chunk = max(1, min(CHUNK, (1 << 23) // length))   # about 64 MB of int64 per draw at most
    for _ in range(max_rounds + n // per_chunk):
        if len(rows) >= n:
            break
        chunk = sample(rng, min(per_chunk, max(n - len(rows), 1))).astype(dtype)
        for row in chunk:
            key = row.tobytes()
            if key not in seen and len(rows) < n:
                seen.add(key)
                rows.append(row)
                next(bar, None)
    if len(rows) < n:
        raise ValueError(f"{desc}: found only {len(rows)} distinct examples of the {n} asked for; the setting "
                         f"has too few possible sequences (raise vocab_size or input_seq_len, or ask for fewer)")
    for _ in bar:
        pass
    return np.stack(rows)


# -- the datasets ----------------------------------------------------------------------------------

class _InContextTask:
    """Shared by associative recall and induction head: splits train/test, LM scoring as safari."""

    kind = "tokens"
    splits = ("train", "test")
    name = ""
    volatile_keys = ("cache_dir",)

    def __init__(self, vocab_size: int, input_seq_len: int, n_train: int, n_test: int, seed: int, cache_dir: str):
        check_sizes(type(self).__name__, n_train=n_train, n_test=n_test)
        if vocab_size < 4:
            raise ValueError(f"{type(self).__name__}: vocab_size={vocab_size} must be >= 4 (no-op, copy prefix "
                             f"and at least two ordinary tokens)")
        self.vocab_size = self.n_classes = vocab_size
        self.input_seq_len, self.n_train, self.n_test, self.seed, self.cache_dir = (
            input_seq_len, n_train, n_test, seed, cache_dir)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        raise NotImplementedError

    def config(self) -> dict:
        raise NotImplementedError

    def load(self, progress: bool = True) -> dict[str, dict[str, np.ndarray]]:
        def generate():
            dtype = token_dtype(self.vocab_size)
            return {split: _unique_examples(self.sample, split_rng(self.seed, split), n, self.seq_len + 1, dtype,
                                            f"{type(self).__name__} {split}", progress)
                    for split, n in (("train", self.n_train), ("test", self.n_test))}

        data = cached_arrays(self.name, self.config(), generate, self.cache_dir, version=SYNTHETICS_GENERATOR_VERSION)
        out = {}
        for split, tokens in data.items():
            arrays = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
            if split != "train":  # scored on the answer only; training sees every next token (safari)
                weights = np.zeros(arrays["targets"].shape, bool)
                weights[:, -1] = True
                arrays["weights"] = weights
            out[split] = arrays
        return out


class AssociativeRecall(_InContextTask):
    """Associative recall (H3 / Hyena): recall the value paired with the query key earlier in the sequence.

    Args:
      vocab_size: tokens including the no-op and the copy prefix (safari: 20; Hyena's long run: 30).
      input_seq_len: length of the key-value part (safari: 40; Hyena: 131,072).
      num_keys: tokens per key (safari: 1).
      n_train, n_test: examples per split (safari: 5,000 / 500).
      seed: the random streams (one per split).
      cache_dir: where the generated data is cached (does not change the data).
    """

    name = "assoc_recall"

    def __init__(self, vocab_size: int = 20, input_seq_len: int = 40, num_keys: int = 1, n_train: int = 5000,
                 n_test: int = 500, seed: int = 0, cache_dir: str = DEFAULT_CACHE_DIR):
        super().__init__(vocab_size, input_seq_len, n_train, n_test, seed, cache_dir)
        if num_keys < 1 or input_seq_len < num_keys + 1:
            raise ValueError(f"AssociativeRecall: need num_keys >= 1 and input_seq_len >= num_keys + 1, got "
                             f"{num_keys}, {input_seq_len}")
        self.num_keys = num_keys
        pairs = input_seq_len // (num_keys + 1)
        self.seq_len = pairs * (num_keys + 1) + num_keys + 1        # tokens per example minus one

    def config(self) -> dict:
        return {"vocab_size": self.vocab_size, "input_seq_len": self.input_seq_len, "num_keys": self.num_keys,
                "n_train": self.n_train, "n_test": self.n_test, "seed": self.seed}

    def sample(self, rng, n):
        return assoc_recall_examples(rng, n, self.vocab_size, self.input_seq_len, self.num_keys)


class InductionHead(_InContextTask):
    """Induction head (H3 / Hyena): after the final ``=>``, output the token that followed the earlier ``=>``.

    Args:
      vocab_size: tokens including the no-op and the copy prefix (safari: 20).
      input_seq_len: length of the random part (safari: 30).
      n_train, n_test: examples per split (safari: 5,000 / 500).
      seed: the random streams (one per split).
      cache_dir: where the generated data is cached (does not change the data).
    """

    name = "induction_head"

    def __init__(self, vocab_size: int = 20, input_seq_len: int = 30, n_train: int = 5000, n_test: int = 500,
                 seed: int = 0, cache_dir: str = DEFAULT_CACHE_DIR):
        super().__init__(vocab_size, input_seq_len, n_train, n_test, seed, cache_dir)
        if input_seq_len < 3:
            raise ValueError(f"InductionHead: input_seq_len={input_seq_len} must be >= 3")
        self.seq_len = input_seq_len + 1

    def config(self) -> dict:
        return {"vocab_size": self.vocab_size, "input_seq_len": self.input_seq_len, "n_train": self.n_train,
                "n_test": self.n_test, "seed": self.seed}

    def sample(self, rng, n):
        return induction_head_examples(rng, n, self.vocab_size, self.input_seq_len)


class Copying:
    """S4 copying: reproduce the ``l_memorize`` leading tokens at the last ``l_memorize`` positions.

    Args:
      l_noise, l_memorize, n_tokens: blanks, tokens to memorise, alphabet size incl. blank and marker
        (S4: 100, 10, 10).
      variable: scatter the tokens over the first l_noise + l_memorize positions (S4 option).
      reverse: the targets are the tokens in reverse order (S4 option).
      n_train, n_val: examples per split (S4: 10,000 per epoch, 1,000 for evaluation).
      seed: the random streams (one per split).
      cache_dir: where the generated data is cached (does not change the data).
    """

    kind = "tokens"
    splits = ("train", "val")
    volatile_keys = ("cache_dir",)

    def __init__(self, l_noise: int = 100, l_memorize: int = 10, n_tokens: int = 10, variable: bool = False,
                 reverse: bool = False, n_train: int = 10_000, n_val: int = 1_000, seed: int = 0,
                 cache_dir: str = DEFAULT_CACHE_DIR):
        check_sizes("Copying", n_train=n_train, n_val=n_val)
        if n_tokens < 3 or l_memorize < 1 or l_noise < 0:
            raise ValueError(f"Copying: need n_tokens >= 3, l_memorize >= 1, l_noise >= 0 (got {n_tokens}, "
                             f"{l_memorize}, {l_noise})")
        self.l_noise, self.l_memorize, self.n_tokens = l_noise, l_memorize, n_tokens
        self.variable, self.reverse = variable, reverse
        self.n_train, self.n_val, self.seed, self.cache_dir = n_train, n_val, seed, cache_dir
        self.vocab_size = self.n_classes = n_tokens
        self.seq_len = l_noise + 2 * l_memorize

    def config(self) -> dict:
        return {"l_noise": self.l_noise, "l_memorize": self.l_memorize, "n_tokens": self.n_tokens,
                "variable": self.variable, "reverse": self.reverse, "n_train": self.n_train, "n_val": self.n_val,
                "seed": self.seed}

    def load(self, progress: bool = True) -> dict[str, dict[str, np.ndarray]]:
        def generate():
            out, dtype = {}, token_dtype(self.n_tokens)
            for split, n in (("train", self.n_train), ("val", self.n_val)):
                x, y = copying_examples(split_rng(self.seed, split), n, self.l_noise, self.l_memorize, self.n_tokens,
                                        self.variable, self.reverse)
                out[f"{split}_inputs"], out[f"{split}_copied"] = x.astype(dtype), y.astype(dtype)
            return out

        data = cached_arrays("copying", self.config(), generate, self.cache_dir, version=SYNTHETICS_GENERATOR_VERSION)
        out = {}
        for split in self.splits:
            inputs = data[f"{split}_inputs"]
            targets = np.zeros_like(inputs)
            targets[:, -self.l_memorize:] = data[f"{split}_copied"]
            weights = np.zeros(inputs.shape, bool)
            weights[:, -self.l_memorize:] = True
            out[split] = {"inputs": inputs, "targets": targets, "weights": weights}
        return out


class Adding:
    """S4 adding problem: regress the sum of the two marked values of a length-``l_max`` sequence.

    Args:
      l_max: sequence length (S4: 1000).
      n_train, n_val: examples per split (S4: 50,000 samples split 45,000 / 5,000).
      seed: the random streams (one per split).
      cache_dir: where the generated data is cached (does not change the data).
    """

    kind = "regression"
    splits = ("train", "val")
    vocab_size = None
    d_input = 2
    n_classes = None  # a real target, no classes
    volatile_keys = ("cache_dir",)

    def __init__(self, l_max: int = 1000, n_train: int = 45_000, n_val: int = 5_000, seed: int = 0,
                 cache_dir: str = DEFAULT_CACHE_DIR):
        check_sizes("Adding", n_train=n_train, n_val=n_val)
        if l_max < 2:
            raise ValueError(f"Adding: l_max={l_max} must be >= 2")
        self.seq_len = self.l_max = l_max
        self.n_train, self.n_val, self.seed, self.cache_dir = n_train, n_val, seed, cache_dir

    def config(self) -> dict:
        return {"l_max": self.l_max, "n_train": self.n_train, "n_val": self.n_val, "seed": self.seed}

    def load(self, progress: bool = True) -> dict[str, dict[str, np.ndarray]]:
        def generate():
            out = {}
            for split, n in (("train", self.n_train), ("val", self.n_val)):
                out[f"{split}_inputs"], out[f"{split}_target"] = adding_examples(split_rng(self.seed, split), n,
                                                                                 self.l_max)
            return out

        data = cached_arrays("adding", self.config(), generate, self.cache_dir, version=SYNTHETICS_GENERATOR_VERSION)
        return {split: {"inputs": data[f"{split}_inputs"], "target": data[f"{split}_target"]} for split in self.splits}
