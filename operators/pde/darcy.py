"""Darcy-flow benchmark data of the Fourier neural operator paper (Li et al. 2021, ICLR, sec. 5.2).

    -div(a(x) grad u(x)) = f(x) on (0,1)^2,  u = 0 on the boundary,  f = 1,
    a = a_pos (12) where U >= 0,  a = a_neg (3) where U < 0,
    U ~ N(0, (-Laplacian + 9 I)^(-2)) (Neumann),  i.e. GRF(alpha=2, tau=3).

Per sample, as the original MATLAB generator (github.com/zongyi-li/fourier_neural_operator,
data_generation/darcy/{GRF.m, solve_gwf.m}): draw U on the K x K cell-centre grid
(``grf.gaussian_random_field_cosine``), threshold it, and solve with ``darcy_solver.solve_darcy_cells``
(spline to the K x K nodal grid, five-point solve, spline back to the cell centres). ``coeff[i, j]`` and
``sol[i, j]`` are the same physical point ((2 i + 1) / (2 K), (2 j + 1) / (2 K)). The shipped
benchmark uses K = 421 and a_neg = 3 (the MATLAB demo.m has 4).

Properties of the original pipeline that are reproduced on purpose:
* The data lives at the cell centres (2 i + 1) / (2 K), not on linspace(0, 1, K).
* Spline-interpolating the piecewise-constant coefficient to the nodes overshoots: interior nodal
  values reach about [-2, 17] and the extrapolated boundary nodes about [-40, 80]. Some half-point
  conductances (a_P + a_nb) / 2 next to the boundary are then non-positive, and a few samples have
  slightly negative solution values in the cells next to the boundary (rarely a few cells deep near
  a corner). Away from the boundary the solution is positive.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import zlib
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from tqdm import tqdm

from operators.pde.darcy_solver import solve_darcy_cells, solve_darcy_nodal  # noqa: F401 (re-export)
from operators.pde.grf import gaussian_random_field_cosine
from operators.pde.store import cached_arrays

DARCY_GENERATOR_VERSION = 1
DEFAULT_CACHE_DIR = ".cache/neural_lax"
# Below this many grid points in all (n_samples * K^2) the solves run in this process: starting worker
# processes (about a second each) would cost more than it saves. 50e6 is ~280 samples at K = 421.
PARALLEL_MIN_POINTS = 50_000_000


def default_workers(n_samples: int, resolution: int) -> int:
    """Worker processes for the solves: all CPUs (at most 32) for large jobs, else 1 (in-process)."""
    if n_samples * resolution**2 < PARALLEL_MIN_POINTS:
        return 1
    return max(1, min(32, os.cpu_count() or 1, n_samples))


def threshold_coefficient(field: np.ndarray, a_pos: float = 12.0, a_neg: float = 3.0) -> np.ndarray:
    """Piecewise-constant coefficient a = a_pos where field >= 0, a_neg where field < 0 (same shape)."""
    return np.where(np.asarray(field) >= 0.0, a_pos, a_neg)


def split_rng(seed: int, split: str) -> np.random.Generator:
    """Random stream of one split: PCG64 seeded with [seed, crc32(split)] (train/test independent)."""
    return np.random.default_rng([int(seed), zlib.crc32(split.encode("utf-8"))])


def generate_darcy(
    n_samples: int,
    resolution: int,
    alpha: float = 2.0,
    tau: float = 3.0,
    a_pos: float = 12.0,
    a_neg: float = 3.0,
    seed: int = 0,
    split: str = "train",
    progress: bool = True,
    workers: int | None = None,
) -> dict[str, np.ndarray]:
    """Generate n Darcy samples at resolution K (cell-centre grid), as the FNO MATLAB generator.

    Fields are drawn one at a time from ``split_rng(seed, split)``, so sample i does not depend on
    n_samples (the first k of n samples equal the k samples of a request for k). The fields are drawn
    in this process; the independent solves are spread over ``workers`` processes (default:
    ``default_workers``), which changes nothing in the result.

    Returns:
        {"coeff": (n, K, K) float32 in {a_neg, a_pos}, "sol": (n, K, K) float32}, both at the cell
        centres (2 i + 1) / (2 K); axis 1 is x, axis 2 is y.
    """
    rng = split_rng(seed, split)
    coeff = np.empty((n_samples, resolution, resolution), dtype=np.float32)
    sol = np.empty((n_samples, resolution, resolution), dtype=np.float32)
    samples = tqdm(
        range(n_samples),
        desc=f"Darcy {split} K={resolution}",
        unit="sample",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    )
    for i in range(n_samples):
        coeff[i] = threshold_coefficient(gaussian_random_field_cosine(rng, 1, resolution, alpha, tau)[0],
                                         a_pos, a_neg)  # exact in float32: values are a_pos / a_neg
    workers = default_workers(n_samples, resolution) if workers is None else int(workers)
    if workers <= 1:
        for i in samples:
            sol[i] = solve_darcy_cells(coeff[i], 1.0)
    else:
        # "spawn": the parent may hold JAX's threads, which must not be forked.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            chunk = max(1, min(16, n_samples // (4 * workers)))
            for i, u in zip(samples, pool.map(solve_darcy_cells, coeff, chunksize=chunk)):
                sol[i] = u
    return {"coeff": coeff, "sol": sol}


def darcy_dataset(
    split: str,
    n_samples: int,
    resolution: int,
    alpha: float = 2.0,
    tau: float = 3.0,
    a_pos: float = 12.0,
    a_neg: float = 3.0,
    seed: int = 0,
    cache_dir: str | os.PathLike = DEFAULT_CACHE_DIR,
    progress: bool = True,
    workers: int | None = None,
) -> dict[str, np.ndarray]:
    """``generate_darcy`` at the fine resolution K = resolution, through the on-disk cache.

    The cache entry is keyed by (split, n_samples, resolution, alpha, tau, a_pos, a_neg, seed) and
    ``DARCY_GENERATOR_VERSION``; see ``store.cached_arrays``. Subsample with ``subsample``.
    """
    config = {
        "split": str(split),
        "n_samples": int(n_samples),
        "resolution": int(resolution),
        "alpha": float(alpha),
        "tau": float(tau),
        "a_pos": float(a_pos),
        "a_neg": float(a_neg),
        "seed": int(seed),
        "rhs": 1.0,
    }

    def generate() -> dict[str, np.ndarray]:
        return generate_darcy(
            n_samples, resolution, alpha, tau, a_pos, a_neg, seed, split, progress=progress,
            workers=workers,  # not part of the cache key: it does not change the data
        )

    return cached_arrays("darcy", config, generate, cache_dir, version=DARCY_GENERATOR_VERSION)


def subsampled_resolution(resolution: int, r: int) -> int:
    """Resolution (K - 1) // r + 1 after taking every r-th point; requires r >= 1 dividing K - 1.

    With r | (K - 1) the first and last grid points are kept (e.g. 421 -> 85 for r = 5).

    Raises:
        ValueError: naming K, r and the valid choices of r.
    """
    if not isinstance(r, (int, np.integer)) or r < 1 or (resolution - 1) % r != 0:
        valid = [d for d in range(1, resolution) if (resolution - 1) % d == 0]
        raise ValueError(
            f"subsampling rate r={r!r} is invalid for resolution K={resolution}: r must be a positive "
            f"divisor of K-1={resolution - 1}; valid choices are {valid} "
            f"(giving resolutions {[(resolution - 1) // d + 1 for d in valid]})"
        )
    return (resolution - 1) // int(r) + 1


def subsample_stride(resolution: int, target: int) -> int:
    """The stride r that takes a K = ``resolution`` grid to ``target`` points: (K - 1) / r + 1 = target.

    Raises:
        ValueError: naming K, the target and the resolutions reachable by striding.
    """
    if target >= 2 and (resolution - 1) % (target - 1) == 0:
        return (resolution - 1) // (target - 1)
    reachable = [(resolution - 1) // d + 1 for d in range(1, resolution) if (resolution - 1) % d == 0]
    raise ValueError(
        f"resolution {target} cannot be taken from a grid of K={resolution} points by striding; "
        f"valid resolutions are {reachable}"
    )


def subsample(fields: np.ndarray, r: int) -> np.ndarray:
    """Every r-th point on the last two (spatial) axes: (..., K, K) -> (..., (K-1)//r + 1, ...).

    Validates r with ``subsampled_resolution`` (r must divide K - 1).
    """
    K = fields.shape[-1]
    if fields.shape[-2] != K:
        raise ValueError(f"expected square spatial axes (..., K, K), got shape {fields.shape}")
    subsampled_resolution(K, r)
    return fields[..., ::r, ::r]


class DarcyFlow:
    """The Darcy benchmark as a field dataset for operator learning: a -> u, one channel each.

    Generates (through the cache) ``n`` pairs of a split on the K x K solve grid, K = ``resolution``,
    and subsamples them by striding to any resolution s with (K - 1) / r + 1 = s (421 gives 211, 141,
    106, 85, ...). This is the data half of the generic operator-learning task
    (``experiments.tasks.pde.OperatorTask``); its arguments are the generator's.

    Args:
      resolution: K, points per axis of the grid the PDE is solved on.
      alpha, tau, a_pos, a_neg, seed: the generator's (see ``darcy_dataset``).
      cache_dir: where generated splits are cached (does not change the data).
      workers: processes for the solves; None: all CPUs for large jobs (does not change the data).
    """

    in_channels = 1
    out_channels = 1
    volatile_keys = ("cache_dir", "workers")  # settings that leave the data unchanged

    def __init__(self, resolution: int = 127, alpha: float = 2.0, tau: float = 3.0, a_pos: float = 12.0,
                 a_neg: float = 3.0, seed: int = 0, cache_dir: str = DEFAULT_CACHE_DIR,
                 workers: int | None = None):
        if resolution < 3:
            raise ValueError(f"the Darcy solve grid needs at least 3 points per axis, got resolution={resolution}")
        self.resolution, self.cache_dir, self.workers = resolution, cache_dir, workers
        self.generator = dict(alpha=alpha, tau=tau, a_pos=a_pos, a_neg=a_neg, seed=seed)

    def spatial_shape(self, resolution: int) -> tuple[int, int]:
        """(s, s) for a reachable resolution s; a ValueError listing the reachable ones otherwise."""
        subsample_stride(self.resolution, resolution)
        return (resolution, resolution)

    def load(self, split: str, n: int, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(a, u), each (n, K, K, 1) float32, generated on first use and cached."""
        data = darcy_dataset(split, n, self.resolution, cache_dir=self.cache_dir, progress=progress,
                             workers=self.workers, **self.generator)
        return data["coeff"][..., None], data["sol"][..., None]

    def subsample(self, fields: np.ndarray, resolution: int) -> np.ndarray:
        """(n, K, K, c) -> (n, s, s, c): every r-th point of the solve grid, r = (K - 1) / (s - 1)."""
        r = subsample_stride(fields.shape[1], resolution)
        return fields[:, ::r, ::r]
