"""Generated sequence datasets: ListOps, Pathfinder, in-context-learning and memory synthetics, a
character corpus and pixel-by-pixel digits. Nothing is downloaded; every dataset is either generated
from a seed or read from files that ship with Python or one of our dependencies, and cached through
``operators.pde.store.cached_arrays`` (a key hashed from the generator's config, an atomic write).

A dataset is a small object the sequence tasks (``experiments.tasks.sequence``) take as ``dataset``;
its constructor arguments are the generator's (split sizes included), so one YAML node names it.
Every dataset has

* ``kind``: "classification" (one integer label per sequence), "regression" (one real target per
  sequence), "tokens" (one integer target per position, scored where ``weights`` is set) or "stream"
  (one long token sequence per split, cut into windows by the task);
* ``splits``: the split names it provides, in evaluation order after "train" (e.g. train, val, test);
* ``vocab_size``: inputs are integer tokens in ``[0, vocab_size)``, or None for real features with
  ``d_input`` channels;
* ``seq_len``: the (padded) length of every example (not for streams, whose windows the task chooses);
* ``n_classes``: labels (classification) or target tokens (tokens, stream) lie in ``[0, n_classes)``;
* ``volatile_keys``: its arguments that do not change the data (where it is cached);
* ``load(progress) -> {split: arrays}``: the data, generated or read from the cache. For examples,
  ``arrays`` is a dict of NumPy arrays with a leading example axis:
  ``inputs`` (n, L) integer tokens or (n, L, ...) stored features; ``mask`` (n, L) bool, True = a
  real position (absent: ``inputs != pad_id`` if the dataset has a ``pad_id``, else all real); and
  ``label`` (n,) int, ``target`` (n,) float, or ``targets`` (n, L) int with ``weights`` (n, L) bool
  (absent: every real position is scored). For streams it is a 1-D integer array per split.
* optionally ``model_inputs(inputs) -> array``: the model's input for a batch of stored ``inputs``
  (e.g. uint8 pixels -> float32 intensities), so that large datasets stay compact in memory.
"""
from __future__ import annotations

import sys
import zlib
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

DEFAULT_CACHE_DIR = ".cache/neural_lax"

__all__ = ["DEFAULT_CACHE_DIR", "check_sizes", "progress_bar", "split_rng", "token_dtype"]


def split_rng(seed: int, split: str, *more: int) -> np.random.Generator:
    """Random stream of one split (and chunk): PCG64 seeded with [seed, crc32(split), *more].

    Splits drawn from their own streams are independent and do not change when another split's
    size does.
    """
    return np.random.default_rng([int(seed), zlib.crc32(split.encode("utf-8")), *map(int, more)])


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type holding tokens 0..vocab_size-1 (storage; batches are int32)."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"vocabulary of {vocab_size} tokens is too large")


def check_sizes(name: str, **sizes: int) -> None:
    """Split sizes must be integers >= 0, and the training split non-empty; ValueError naming them."""
    for key, n in sizes.items():
        if not isinstance(n, (int, np.integer)) or n < 0 or (key == "n_train" and n < 1):
            raise ValueError(f"{name}: {key}={n!r} must be an integer >= {1 if key == 'n_train' else 0}")


def progress_bar(iterable: Iterable, total: int, desc: str, progress: bool, unit: str = "example") -> Iterator:
    """tqdm on stderr with rate and ETA (disabled when ``progress`` is False)."""
    return iter(tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, disable=not progress,
                     dynamic_ncols=True, mininterval=1.0))
