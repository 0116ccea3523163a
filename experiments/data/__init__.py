"""Every dataset the runner reads, and the one on-disk cache (``experiments.data.store``).

Nothing is downloaded. A generated dataset is made from a seed (or from files that ship with Python or one
of our dependencies) and cached through ``experiments.data.store.cached_arrays`` (a key hashed from the
generator's config, an atomic write, ``DEFAULT_CACHE_DIR``, ``split_rng``); a reader of files the user
already has reads them where they lie (nothing copied or cached). The modules:

* readers of published benchmark files and a user's own arrays: ``matfile`` / ``fno_files`` (the FNO
  paper's MATLAB files), ``pdebench``, ``the_well`` (HDF5), ``arrays`` (fields), ``sequence_arrays``;
  ``listops`` and ``pathfinder`` also read the LRA release (``path``);
* field datasets of the operator tasks (``experiments.tasks.base.FieldDataset`` / ``TrajectoryDataset``),
  calling the numerics of ``operators.pde``: ``darcy``, ``burgers``, ``navier_stokes``;
* sequence datasets (``experiments.tasks.base.SequenceDataset``, the contract of the sequence tasks):
  ``listops``, ``pathfinder``, ``synthetics`` (in-context learning and memory), ``text`` (a character
  corpus), ``digits`` (pixel-by-pixel digits);
* graph datasets of the node-regression task: ``graphs``;
* clean-signal sources of the denoising task: ``signals`` (Laplace vectors), ``images`` (digit images).

A dataset is a small object a task takes as ``dataset`` / ``pde`` / ``source``; its constructor
arguments are the generator's (split sizes included), so one YAML node names it. This module holds the
helpers the generators share (token dtypes, split sizes, progress bars).
"""
from __future__ import annotations

import sys
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

__all__ = ["check_sizes", "progress_bar", "token_dtype"]


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
