"""Digit images: scikit-learn's bundled 8x8 handwritten digits upsampled to size x size, in [0, 1].

The clean images of the denoising task (``experiments.tasks.inverse.ProxDenoising``), a CPU-sized
stand-in for the MNIST experiment of the LPN paper (Fang, Buchanan, Sulam, "What's in a Prior? Learned
Proximal Networks for Inverse Problems", ICLR 2024, arXiv 2310.14344). ``sklearn.datasets.load_digits``
ships its 1,797 images inside the wheel (no download); they are resized bilinearly (order-1 spline) and
split by a seeded permutation into train / val / test.

A *signal source* (see ``experiments.data.signals``): ``shape``, ``eval_names``, ``objective``,
``volatile_keys``, ``load(progress)``, ``sample_train(rng, n)``, ``eval_sets(sigma, seed)``, and
``split(name)`` (the clean images of a split, after ``load``).
"""
from __future__ import annotations

import numpy as np

from experiments.data import check_sizes
from experiments.data.digits import N_IMAGES, sklearn_digits
from experiments.data.store import DEFAULT_CACHE_DIR, cached_arrays, split_rng

__all__ = ["DigitImages", "upsampled_digits"]

DIGIT_IMAGES_VERSION = 1  # of the "lpn_digits" cache entries


def upsampled_digits(size: int) -> np.ndarray:
    """scikit-learn's 1,797 digits, intensities / 16, bilinearly resized from 8x8 to (1797, size, size, 1)."""
    from scipy.ndimage import zoom

    images = np.asarray(sklearn_digits()[0], np.float64) / 16.0       # (1797, 8, 8) in [0, 1]
    out = zoom(images, (1, size / 8, size / 8), order=1, mode="nearest", grid_mode=True)   # (n, size, size)
    return np.clip(out, 0.0, 1.0)[..., None].astype(np.float32)


class DigitImages:
    """scikit-learn's bundled 8x8 handwritten digits, upsampled to size x size, in [0, 1].

    Splits train / val / test; the objective is the PSNR on val.

    Args:
      size: output side (16: 2x; 32: 4x); bilinear (order-1 spline) upsampling.
      n_val, n_test: images held out (the rest, from a seeded permutation, train).
      seed: the permutation.
      cache_dir: where the arrays are cached (does not change the data).
    """

    kind = "images"
    volatile_keys = ("cache_dir",)
    eval_names = ("val", "test")
    objective = ("psnr", "max", "val")  # (metric, mode, split) of the task's objective

    def __init__(self, size: int = 16, n_val: int = 100, n_test: int = 200, seed: int = 0,
                 cache_dir: str = DEFAULT_CACHE_DIR):
        check_sizes("DigitImages", n_val=n_val, n_test=n_test)
        if size < 8:
            raise ValueError(f"DigitImages: size={size} must be at least 8 (the digits are 8x8)")
        if n_val + n_test >= N_IMAGES:
            raise ValueError(f"DigitImages: n_val + n_test = {n_val + n_test} leaves no training image of "
                             f"{N_IMAGES}")
        self.size, self.n_val, self.n_test, self.seed, self.cache_dir = size, n_val, n_test, seed, cache_dir
        self.shape = (size, size, 1)
        self._splits: dict[str, np.ndarray] | None = None

    def config(self) -> dict:
        return {"size": self.size, "seed": self.seed}

    def generate(self) -> dict[str, np.ndarray]:
        images = upsampled_digits(self.size)
        perm = split_rng(self.seed, "split").permutation(len(images))
        return {"images": images[perm], "index": perm.astype(np.int32)}

    def load(self, progress: bool = True) -> None:
        images = cached_arrays("lpn_digits", self.config(), self.generate, self.cache_dir,
                               version=DIGIT_IMAGES_VERSION)["images"]
        n_train = len(images) - self.n_val - self.n_test
        self._splits = {"train": images[:n_train], "val": images[n_train:n_train + self.n_val],
                        "test": images[n_train + self.n_val:]}

    def split(self, name: str) -> np.ndarray:
        if self._splits is None:
            raise RuntimeError("DigitImages.load() must run before the images are used")
        return self._splits[name]

    def sample_train(self, rng: np.random.Generator, n: int) -> np.ndarray:
        train = self.split("train")
        return train[rng.integers(0, len(train), size=n)]

    def eval_sets(self, sigma: float, seed: int) -> dict[str, dict[str, np.ndarray]]:
        out = {}
        for name in self.eval_names:
            x = self.split(name)
            y = x + sigma * split_rng(seed, name).standard_normal(x.shape).astype(np.float32)
            out[name] = {"x": x, "y": y.astype(np.float32)}
        return out
