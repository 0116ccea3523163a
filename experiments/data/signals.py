"""Laplace-distributed signals: the clean source of the LPN paper's 1-D denoising toy.

Fang, Buchanan, Sulam, "What's in a Prior? Learned Proximal Networks for Inverse Problems", ICLR 2024
(arXiv 2310.14344), Sec. 4 and github.com/ZhenghanFang/learned-proximal-networks,
``exps/laplacian/laplacian_train.ipynb``: x has i.i.d. Laplace(0, b) entries (density exp(-|x| / b) / 2b),
y = x + sigma * N(0, I). The MAP denoiser prox_{-sigma^2 log p}(y) is soft thresholding at sigma^2 / b
(the regularizer sigma^2 / b |x|), the exact answer the learned prox is scored against.

A *signal source* of ``experiments.tasks.inverse.ProxDenoising``: ``shape`` of one example,
``eval_names``, ``objective`` (metric, mode, split), ``volatile_keys``, ``load(progress)``,
``sample_train(rng, n)`` and ``eval_sets(sigma, seed)``.
"""
from __future__ import annotations

import numpy as np

from experiments.data.store import split_rng

__all__ = ["LaplaceSignals", "soft_threshold"]


def soft_threshold(y: np.ndarray, threshold: float) -> np.ndarray:
    """prox of threshold * |x|: sign(y) max(|y| - threshold, 0)."""
    return np.sign(y) * np.maximum(np.abs(y) - threshold, 0.0)


class LaplaceSignals:
    """Vectors with i.i.d. Laplace(0, scale) entries, drawn afresh for every training batch.

    Evaluation splits "test" (``n_test`` noisy Laplace samples) and "grid" (y on [-grid_max, grid_max]
    against the soft threshold: the error to the true prox, the objective ``prox_mae``).

    Args:
      dim: entries per example (1 for the paper's 1-D toy).
      scale: the Laplace scale b (density exp(-|x| / b) / 2b).
      n_test: noisy samples in the "test" split.
      grid_points: points of the "grid" split, y evenly spaced on [-grid_max, grid_max] (dim 1 only
        uses them as they are; for dim > 1 each entry of an example takes the grid values in turn).
      grid_max: half-width of the grid (the paper plots [-4, 4]).
    """

    kind = "sampler"
    volatile_keys: tuple[str, ...] = ()
    eval_names = ("test", "grid")
    objective = ("prox_mae", "min", "grid")  # (metric, mode, split) of the task's objective

    def __init__(self, dim: int = 1, scale: float = 1.0, n_test: int = 2000, grid_points: int = 401,
                 grid_max: float = 4.0):
        if dim < 1 or scale <= 0 or n_test < 1 or grid_points < 2 or grid_max <= 0:
            raise ValueError(f"LaplaceSignals needs dim >= 1, scale > 0, n_test >= 1, grid_points >= 2 and "
                             f"grid_max > 0, got {dim}, {scale}, {n_test}, {grid_points}, {grid_max}")
        self.dim, self.scale, self.n_test = dim, scale, n_test
        self.grid_points, self.grid_max = grid_points, grid_max
        self.shape = (dim,)

    def load(self, progress: bool = True) -> None:
        del progress                                                     # nothing to generate ahead

    def sample_train(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.laplace(0.0, self.scale, size=(n, self.dim)).astype(np.float32)

    def exact_prox(self, y: np.ndarray, sigma: float) -> np.ndarray:
        """The MAP denoiser prox_{-sigma^2 log p}(y): soft thresholding at sigma^2 / b."""
        return soft_threshold(y, sigma ** 2 / self.scale).astype(np.float32)

    def eval_sets(self, sigma: float, seed: int) -> dict[str, dict[str, np.ndarray]]:
        rng = split_rng(seed, "test")
        x = self.sample_train(rng, self.n_test)
        y = (x + sigma * rng.standard_normal(x.shape)).astype(np.float32)
        grid = np.linspace(-self.grid_max, self.grid_max, self.grid_points, dtype=np.float32)
        y_grid = np.repeat(grid[:, None], self.dim, axis=1)             # (points, dim)
        return {"test": {"x": x, "y": y, "prox": self.exact_prox(y, sigma)},
                "grid": {"x": self.exact_prox(y_grid, sigma), "y": y_grid,
                         "prox": self.exact_prox(y_grid, sigma)}}
