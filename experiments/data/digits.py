"""Sequential digits: scikit-learn's bundled 8x8 handwritten digits read pixel by pixel.

``sklearn.datasets.load_digits`` ships its 1,797 images inside the wheel (UCI optical recognition of
handwritten digits, test part; no download). Each image is read row by row (row-major: position
8 * row + col), giving a length-64 sequence of one feature, the intensity 0..16 divided by 16; the
label is the digit (10 classes). The small, CPU-sized cousin of sequential MNIST (sMNIST, L = 784).

The split is a seeded permutation of the 1,797 images: n_val for validation, n_test for testing and
the rest for training (default 1,257 / 180 / 360).
"""
from __future__ import annotations

import numpy as np

from experiments.data import check_sizes
from experiments.data.store import DEFAULT_CACHE_DIR, cached_arrays, split_rng

DIGITS_VERSION = 1
N_IMAGES = 1797

__all__ = ["SequentialDigits", "digits_sequences", "sklearn_digits"]


def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled images (1797, 8, 8) float64 with intensities 0..16, and their labels (1797,)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target


def digits_sequences() -> tuple[np.ndarray, np.ndarray]:
    """All images as (1797, 64, 1) float32 sequences in [0, 1] (row-major) and their labels (1797,) int32."""
    raw, target = sklearn_digits()
    images = np.asarray(raw, np.float32)                             # (n, 8, 8), values 0..16
    seqs = images.reshape(len(images), 64, 1) / 16.0                 # (n, 64, 1): position 8 * row + col
    return seqs.astype(np.float32), np.asarray(target, np.int32)


class SequentialDigits:
    """The 8x8 digits as length-64 sequences of intensities, 10 classes.

    Args:
      n_val, n_test: images held out for validation and testing (the rest trains).
      seed: the permutation that assigns images to splits.
      cache_dir: where the arrays are cached (does not change the data).
    """

    kind = "classification"
    splits = ("train", "val", "test")
    vocab_size = None
    d_input = 1
    seq_len = 64
    n_classes = 10
    volatile_keys = ("cache_dir",)

    def __init__(self, n_val: int = 180, n_test: int = 360, seed: int = 0, cache_dir: str = DEFAULT_CACHE_DIR):
        check_sizes("SequentialDigits", n_val=n_val, n_test=n_test)
        if n_val + n_test >= N_IMAGES:
            raise ValueError(f"SequentialDigits: n_val + n_test = {n_val + n_test} leaves no training image of "
                             f"the {N_IMAGES}")
        self.n_val, self.n_test, self.seed, self.cache_dir = n_val, n_test, seed, cache_dir

    def config(self) -> dict:
        return {"n_val": self.n_val, "n_test": self.n_test, "seed": self.seed}

    def generate(self) -> dict[str, np.ndarray]:
        seqs, labels = digits_sequences()
        perm = split_rng(self.seed, "split").permutation(len(seqs))
        return {"inputs": seqs[perm], "label": labels[perm], "index": perm.astype(np.int32)}

    def load(self, progress: bool = True) -> dict[str, dict[str, np.ndarray]]:
        data = cached_arrays("digits", self.config(), self.generate, self.cache_dir, version=DIGITS_VERSION)
        n_train = len(data["label"]) - self.n_val - self.n_test
        bounds = np.cumsum([0, n_train, self.n_val, self.n_test])
        return {split: {"inputs": data["inputs"][lo:hi], "label": data["label"][lo:hi]}
                for split, lo, hi in zip(self.splits, bounds[:-1], bounds[1:])}
