"""The Darcy-flow generator of the Fourier neural operator paper (Li et al., ICLR 2021, arXiv 2010.08895, sec. 5.2).

    -div(a(x) grad u(x)) = f(x) on (0,1)^2,  u = 0 on the boundary,  f = 1,
    a = a_pos (12) where U >= 0,  a = a_neg (3) where U < 0,
    U ~ N(0, (-Laplacian + 9 I)^(-2)) (Neumann),  i.e. GRF(alpha=2, tau=3).

Per sample, as the original MATLAB generator (github.com/zongyi-li/fourier_neural_operator,
data_generation/darcy/{GRF.m, solve_gwf.m}): draw U on the K x K cell-centre grid
(``grf.gaussian_random_field_cosine``), threshold it, and solve with ``darcy_solver.solve_darcy_cells``
(spline to the K x K nodal grid, five-point solve, spline back to the cell centres). ``coeff[i, j]`` and
``sol[i, j]`` are the same physical point ((2 i + 1) / (2 K), (2 j + 1) / (2 K)). The shipped
benchmark uses K = 421 and a_neg = 3 (the MATLAB demo.m has 4).

``DarcyGenerator`` holds the generator's settings and generates samples from a given random stream;
it reads and writes no files. The cached dataset (splits, seeds, the on-disk cache) is
``experiments.data.darcy``.

Options of this framework (not in the original generator):
* ``coefficient="lognormal"``: a = exp(U) instead of the threshold (the alternative in demo.m, and the
  Darcy family of SKR, Wang et al., "Accelerating Data Generation for Neural Operators via Krylov Subspace
  Recycling", ICLR 2024, arXiv 2401.09516, github.com/wanghong1700/NO-DataGen-SKR, with GRF(alpha=2.5,
  tau=7)); a_pos / a_neg are then unused.
* ``solver``: how the five-point systems are solved. "direct" (default): sparse LU per sample.
  "krylov": GMRES(40) with an ILU preconditioner per sample (``krylov.solve_independent``).
  "recycled": SKR (``krylov.solve_recycled``): all fields are drawn first, the systems are sorted by
  greedy nearest neighbour on the leading 8 x 8 DCT modes of the coefficient and solved in that order
  by GCRO-DR(40, 20), recycling a subspace and the solution from each system to the next; this needs
  the systems in sequence in one process, so ``workers`` is ignored. The iterative solvers stop at
  the relative residual ``ITERATIVE_RTOL`` = 1e-8, so the data equals the direct solver's to about
  1e-7 relative (stored in float32) and the solver is not part of the dataset's cache key.

Properties of the original pipeline that are reproduced on purpose:
* The data lives at the cell centres (2 i + 1) / (2 K), not on linspace(0, 1, K).
* Spline-interpolating the piecewise-constant coefficient to the nodes overshoots: interior nodal
  values reach about [-2, 17] and the extrapolated boundary nodes about [-40, 80]. Some half-point
  conductances (a_P + a_nb) / 2 next to the boundary are then non-positive, and a few samples have
  slightly negative solution values in the cells next to the boundary (rarely a few cells deep near
  a corner). Away from the boundary the solution is positive.
"""
from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from tqdm import tqdm

from operators.pde import krylov
from operators.pde.darcy_solver import cell_node_interpolation_matrices, darcy_five_point_matrix, solve_darcy_cells
from operators.pde.grf import gaussian_random_field_cosine
from operators.pde.spline_interpolation import interpolate_tensor_grid

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


@dataclasses.dataclass(frozen=True)
class DarcyGenerator:
    """The settings of the Darcy generator and the generation itself (``generate``), on a K x K grid.

    Args:
      resolution: K, points per axis of the cell-centre grid the PDE is solved on (K >= 3).
      alpha, tau: the GRF N(0, (-Laplacian + tau^2 I)^(-alpha)) (``grf.gaussian_random_field_cosine``).
      a_pos, a_neg: the two values of the thresholded coefficient (unused with "lognormal").
      coefficient: "threshold" (a_pos / a_neg, the FNO benchmark) | "lognormal" (a = exp(U)).
      solver: "direct" | "krylov" | "recycled" (module docstring); changes the data only within the
        iterative solvers' tolerance ``ITERATIVE_RTOL``.

    Raises:
      ValueError: K < 3, or ``solver`` / ``coefficient`` not one of the choices (naming them).
    """

    resolution: int
    alpha: float = 2.0
    tau: float = 3.0
    a_pos: float = 12.0
    a_neg: float = 3.0
    coefficient: str = "threshold"
    solver: str = "direct"

    def __post_init__(self):
        if self.resolution < 3:
            raise ValueError(f"the Darcy solve grid needs at least 3 points per axis, got resolution={self.resolution}")
        check_darcy_options(self.solver, self.coefficient)

    def coefficients(self, rng: np.random.Generator, n_samples: int) -> np.ndarray:
        """(n, K, K) float32 coefficients at the cell centres, fields drawn one at a time from ``rng``."""
        K = self.resolution
        coeff = np.empty((n_samples, K, K), dtype=np.float32)
        for i in range(n_samples):
            field = gaussian_random_field_cosine(rng, 1, K, self.alpha, self.tau)[0]
            if self.coefficient == "threshold":
                coeff[i] = threshold_coefficient(field, self.a_pos, self.a_neg)  # exact in float32: a_pos / a_neg
            else:
                coeff[i] = lognormal_coefficient(field)
        return coeff

    def generate(self, rng: np.random.Generator, n_samples: int, *, progress: bool = True,
                 workers: int | None = None, label: str = "") -> dict[str, np.ndarray]:
        """Generate n Darcy samples at resolution K (cell-centre grid), as the FNO MATLAB generator.

        Fields are drawn one at a time from ``rng``, so sample i does not depend on n_samples (the first
        k of n samples equal the k samples of a request for k from the same stream). The fields are drawn
        in this process; the independent solves are spread over ``workers`` processes (default:
        ``default_workers``), which changes nothing in the result. ``solver="recycled"`` solves in this
        process, in sorted order (see the module docstring). The solution is that of the stored float32
        coefficient. ``label`` names the job in the progress bar (e.g. the split).

        Returns:
            {"coeff": (n, K, K) float32 (in {a_neg, a_pos} for "threshold"), "sol": (n, K, K) float32},
            both at the cell centres (2 i + 1) / (2 K); axis 1 is x, axis 2 is y.
        """
        resolution = self.resolution
        sol = np.empty((n_samples, resolution, resolution), dtype=np.float32)
        samples = tqdm(
            range(n_samples),
            desc=" ".join(filter(None, ("Darcy", label, f"K={resolution}"))),
            unit="sample",
            file=sys.stderr,
            disable=not progress,
            dynamic_ncols=True,
        )
        coeff = self.coefficients(rng, n_samples)
        if self.solver == "recycled":  # sorted, in sequence, in this process
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
        solve = functools.partial(solve_darcy_cells, f=1.0) if self.solver == "direct" else solve_darcy_cells_krylov
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
