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

Options of this framework (not in the original generator):
* ``coefficient="lognormal"``: a = exp(U) instead of the threshold (the alternative in demo.m, and the
  Darcy family of SKR, Wang et al. 2024, with GRF(alpha=2.5, tau=7)); a_pos / a_neg are then unused.
* ``solver``: how the five-point systems are solved. "direct" (default): sparse LU per sample.
  "krylov": GMRES(40) with an ILU preconditioner per sample (``krylov.solve_independent``).
  "recycled": SKR (``krylov.solve_recycled``): all fields are drawn first, the systems are sorted by
  greedy nearest neighbour on the leading 8 x 8 DCT modes of the coefficient and solved in that order
  by GCRO-DR(40, 20), recycling a subspace and the solution from each system to the next; this needs
  the systems in sequence in one process, so ``workers`` is ignored. The iterative solvers stop at
  the relative residual ``ITERATIVE_RTOL`` = 1e-8, so the data equals the direct solver's to about
  1e-7 relative (stored in float32) and the solver is not part of the cache key.

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
import functools
import zlib
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from tqdm import tqdm

from operators.pde import krylov
from operators.pde.darcy_solver import (  # noqa: F401 (solve_darcy_nodal: re-export)
    cell_node_interpolation_matrices,
    darcy_five_point_matrix,
    solve_darcy_cells,
    solve_darcy_nodal,
)
from operators.pde.grf import gaussian_random_field_cosine
from operators.pde.spline_interpolation import interpolate_tensor_grid
from operators.pde.store import cached_arrays

DARCY_GENERATOR_VERSION = 1
DEFAULT_CACHE_DIR = ".cache/neural_lax"
# Below this many grid points in all (n_samples * K^2) the solves run in this process: starting worker
# processes (about a second each) would cost more than it saves. 50e6 is ~280 samples at K = 421.
PARALLEL_MIN_POINTS = 50_000_000
SOLVERS = ("direct", "krylov", "recycled")
COEFFICIENTS = ("threshold", "lognormal")
ITERATIVE_RTOL = 1e-8  # relative residual of the "krylov" and "recycled" solvers


def default_workers(n_samples: int, resolution: int) -> int:
    """Worker processes for the solves: all CPUs (at most 32) for large jobs, else 1 (in-process)."""
    if n_samples * resolution**2 < PARALLEL_MIN_POINTS:
        return 1
    return max(1, min(32, os.cpu_count() or 1, n_samples))


def threshold_coefficient(field: np.ndarray, a_pos: float = 12.0, a_neg: float = 3.0) -> np.ndarray:
    """Piecewise-constant coefficient a = a_pos where field >= 0, a_neg where field < 0 (same shape)."""
    return np.where(np.asarray(field) >= 0.0, a_pos, a_neg)


def lognormal_coefficient(field: np.ndarray) -> np.ndarray:
    """Lognormal coefficient a = exp(field) (same shape)."""
    return np.exp(np.asarray(field))


def check_darcy_options(solver: str, coefficient: str) -> None:
    """ValueError naming the choices if ``solver`` or ``coefficient`` is not one of them."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown Darcy solver {solver!r}; choose one of {SOLVERS}")
    if coefficient not in COEFFICIENTS:
        raise ValueError(f"unknown Darcy coefficient {coefficient!r}; choose one of {COEFFICIENTS}")


class DarcySystems:
    """The five-point systems of cell-centred coefficients as a lazy sequence of sparse matrices.

    Item i is ``darcy_five_point_matrix(S a_i S^T)`` in CSR form (S: the cells -> nodes spline of
    ``solve_darcy_cells``), built when it is asked for, so N systems never sit in memory at once.
    """

    def __init__(self, coefficients: np.ndarray):
        self.coefficients = coefficients  # (N, K, K) at the cell centres
        self.cells_to_nodes, self.nodes_to_cells = cell_node_interpolation_matrices(coefficients.shape[-1])

    def __len__(self) -> int:
        return self.coefficients.shape[0]

    def __getitem__(self, i: int):
        a_nodes = interpolate_tensor_grid(self.cells_to_nodes, np.asarray(self.coefficients[i], dtype=np.float64))
        return darcy_five_point_matrix(a_nodes).tocsr()

    def cell_values(self, x: np.ndarray) -> np.ndarray:
        """Interior nodal solution ((K-2)^2,) -> (K, K) values at the cell centres (zero boundary nodes)."""
        K = self.coefficients.shape[-1]
        u_nodes = np.zeros((K, K))
        u_nodes[1:-1, 1:-1] = x.reshape(K - 2, K - 2)
        return interpolate_tensor_grid(self.nodes_to_cells, u_nodes)


def solve_darcy_cells_krylov(a_cells: np.ndarray) -> np.ndarray:
    """``solve_darcy_cells`` with f = 1 by ILU-preconditioned GMRES (``krylov.solve_independent``)."""
    systems = DarcySystems(np.asarray(a_cells)[None])
    result = krylov.solve_independent(systems, np.ones((a_cells.shape[0] - 2) ** 2), rtol=ITERATIVE_RTOL)
    return systems.cell_values(result.solutions[0])


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
    solver: str = "direct",
    coefficient: str = "threshold",
) -> dict[str, np.ndarray]:
    """Generate n Darcy samples at resolution K (cell-centre grid), as the FNO MATLAB generator.

    Fields are drawn one at a time from ``split_rng(seed, split)``, so sample i does not depend on
    n_samples (the first k of n samples equal the k samples of a request for k). The fields are drawn
    in this process; the independent solves are spread over ``workers`` processes (default:
    ``default_workers``), which changes nothing in the result. ``solver="recycled"`` solves in this
    process, in sorted order (see the module docstring); ``coefficient`` picks threshold (a_pos /
    a_neg) or lognormal (exp(U)) fields. The solution is that of the stored float32 coefficient.

    Returns:
        {"coeff": (n, K, K) float32 (in {a_neg, a_pos} for "threshold"), "sol": (n, K, K) float32},
        both at the cell centres (2 i + 1) / (2 K); axis 1 is x, axis 2 is y.
    """
    check_darcy_options(solver, coefficient)
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
        field = gaussian_random_field_cosine(rng, 1, resolution, alpha, tau)[0]
        if coefficient == "threshold":
            coeff[i] = threshold_coefficient(field, a_pos, a_neg)  # exact in float32: a_pos / a_neg
        else:
            coeff[i] = lognormal_coefficient(field)
    if solver == "recycled":  # sorted, in sequence, in this process
        systems = DarcySystems(coeff)
        bar = iter(samples)

        def store(i: int, x: np.ndarray) -> None:
            sol[i] = systems.cell_values(x)
            next(bar, None)

        krylov.solve_recycled(systems, np.ones((resolution - 2) ** 2),
                              features=krylov.low_frequency_modes(coeff, min(8, resolution)),
                              rtol=ITERATIVE_RTOL, store=store)
        samples.close()
        return {"coeff": coeff, "sol": sol}
    solve = functools.partial(solve_darcy_cells, f=1.0) if solver == "direct" else solve_darcy_cells_krylov
    workers = default_workers(n_samples, resolution) if workers is None else int(workers)
    if workers <= 1:
        for i in samples:
            sol[i] = solve(coeff[i])
    else:
        # "spawn": the parent may hold JAX's threads, which must not be forked.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            chunk = max(1, min(16, n_samples // (4 * workers)))
            for i, u in zip(samples, pool.map(solve, coeff, chunksize=chunk)):
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
    solver: str = "direct",
    coefficient: str = "threshold",
) -> dict[str, np.ndarray]:
    """``generate_darcy`` at the fine resolution K = resolution, through the on-disk cache.

    The cache entry is keyed by (split, n_samples, resolution, alpha, tau, a_pos, a_neg, seed) and
    ``DARCY_GENERATOR_VERSION``; see ``store.cached_arrays``. Subsample with ``subsample``.
    ``coefficient="lognormal"`` adds "coefficient" to the key and drops a_pos / a_neg (unused); the
    threshold key is unchanged, so existing caches stay valid. ``solver`` and ``workers`` are not
    in the key: they do not change the data beyond the solver tolerance.
    """
    check_darcy_options(solver, coefficient)
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
    if coefficient != "threshold":
        config["coefficient"] = coefficient
        del config["a_pos"], config["a_neg"]

    def generate() -> dict[str, np.ndarray]:
        return generate_darcy(
            n_samples, resolution, alpha, tau, a_pos, a_neg, seed, split, progress=progress,
            workers=workers, solver=solver,  # not part of the cache key: they do not change the data
            coefficient=coefficient,
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
      solver: "direct" | "krylov" | "recycled" (see the module docstring; changes the data only
        within the solver tolerance, so it is not part of the cache key).
      coefficient: "threshold" (a_pos / a_neg, the FNO benchmark) | "lognormal" (a = exp(U)).
    """

    in_channels = 1
    out_channels = 1
    volatile_keys = ("cache_dir", "workers", "solver")  # settings that leave the data unchanged

    def __init__(self, resolution: int = 127, alpha: float = 2.0, tau: float = 3.0, a_pos: float = 12.0,
                 a_neg: float = 3.0, seed: int = 0, cache_dir: str = DEFAULT_CACHE_DIR,
                 workers: int | None = None, solver: str = "direct", coefficient: str = "threshold"):
        if resolution < 3:
            raise ValueError(f"the Darcy solve grid needs at least 3 points per axis, got resolution={resolution}")
        check_darcy_options(solver, coefficient)
        self.resolution, self.cache_dir, self.workers, self.solver = resolution, cache_dir, workers, solver
        self.generator = dict(alpha=alpha, tau=tau, a_pos=a_pos, a_neg=a_neg, seed=seed, coefficient=coefficient)

    def spatial_shape(self, resolution: int) -> tuple[int, int]:
        """(s, s) for a reachable resolution s; a ValueError listing the reachable ones otherwise."""
        subsample_stride(self.resolution, resolution)
        return (resolution, resolution)

    def load(self, split: str, n: int, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(a, u), each (n, K, K, 1) float32, generated on first use and cached."""
        data = darcy_dataset(split, n, self.resolution, cache_dir=self.cache_dir, progress=progress,
                             workers=self.workers, solver=self.solver, **self.generator)
        return data["coeff"][..., None], data["sol"][..., None]

    def subsample(self, fields: np.ndarray, resolution: int) -> np.ndarray:
        """(n, K, K, c) -> (n, s, s, c): every r-th point of the solve grid, r = (K - 1) / (s - 1)."""
        r = subsample_stride(fields.shape[1], resolution)
        return fields[:, ::r, ::r]
