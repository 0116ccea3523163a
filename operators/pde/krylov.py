"""Sequences of related sparse linear systems: independent GMRES, or sorted Krylov subspace recycling.

Data generation for a neural operator solves N systems A_i x_i = b_i that come from one PDE family
with random parameters (e.g. Darcy flow with N random coefficient fields). SKR (Wang, Hao, Wang,
Geng, Wang, Li, Wu, "Accelerating Data Generation for Neural Operators via Krylov Subspace
Recycling", ICLR 2024) solves them

1. **sorted** (``greedy_nearest_neighbour_order``): start at system 0 and repeatedly append the
   unvisited system whose parameter features are nearest (Euclidean) to the last one. Here the
   features are the leading ``modes x modes`` orthonormal DCT-II coefficients of the parameter field
   (``low_frequency_modes``): the Frobenius distance of the fields restricted to their low
   frequencies (the orthonormal DCT preserves the norm), which for the Darcy matrices, linear in the
   coefficient, measures how far apart two matrices are;
2. in that order by **GCRO-DR** (``gcrodr``; Parks, de Sturler, Mackey, Johnson, Maiti, "Recycling
   Krylov subspaces for sequences of linear systems", SIAM J. Sci. Comput. 28, 2006): each solve
   starts from the previous solution and from k approximate eigenvectors Z (harmonic Ritz vectors
   for the eigenvalues of smallest magnitude) carried over from the previous solve. With
   C = orthonormal basis of M^-1 A Z the residual is first projected, r <- (I - C C^T) r, and every
   cycle runs Arnoldi on (I - C C^T) M^-1 A, so the recycled directions are deflated from the
   spectrum; at the end of each cycle Z is replaced by the harmonic Ritz vectors of the enlarged
   space [Z, V]. With k = 0 the method is restarted GMRES.

Why not ``scipy.sparse.linalg.gcrotmk`` with its ``CU`` argument: its recycled space is the span of
the last outer correction directions of GCROT(m, k), not of approximate eigenvectors. Measured on
the lognormal Darcy family (64^2 unknowns, ILU, tolerance 1e-8, 40 sorted systems), carrying ``CU``
between systems took the first solve's 80 matrix-vector products only to about 70 (with harmonic
Ritz selection inside the span of ``CU``: about 57), and its Python-level inner loops cost about
3x more per iteration than the vectorised Arnoldi below. Deflated restarting with harmonic Ritz
vectors (what SKR runs through PETSc/HPDDM) is the piece SciPy lacks; it is written here.

Preconditioning is from the left (M^-1 A x = M^-1 b), as in ``scipy.sparse.linalg.gmres``; both
methods stop on the *true* residual, ||b - A x|| <= rtol ||b|| (the preconditioned residual only
decides when to check it). The default preconditioner is an incomplete LU factorisation
(``ilu_preconditioner``: SuperLU's ILUTP through ``scipy.sparse.linalg.spilu`` with drop tolerance
1e-2, fill factor 2, minimum-degree ordering of A + A^T and no pivoting, which suits the symmetric
Darcy matrices), rebuilt for every system.

Every product with A is counted (``KrylovSolve.matvecs``), including the k products that map the
recycled space into a new system and the true-residual checks.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import numpy as np
import scipy.fft
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg

PRECONDITIONERS = ("ilu", "jacobi", "none")
DEFAULT_RTOL = 1e-8


# ----------------------------------------------------------------------------------------------
# Ordering
# ----------------------------------------------------------------------------------------------


def low_frequency_modes(fields: np.ndarray, modes: int = 8) -> np.ndarray:
    """Leading orthonormal DCT-II coefficients of 2-D fields: (N, s, s) -> (N, modes * modes).

    ``dctn(field, type=2, norm="ortho")[:modes, :modes]``, flattened. The orthonormal DCT preserves the
    Frobenius norm, so distances between these vectors are the distances of the low-pass filtered
    fields (the cosine modes of the GRF's Karhunen-Loeve expansion).
    """
    fields = np.asarray(fields, dtype=np.float64)
    if fields.ndim != 3:
        raise ValueError(f"fields must have shape (N, s, s), got {fields.shape}")
    if not 1 <= modes <= min(fields.shape[1:]):
        raise ValueError(f"modes must be in [1, {min(fields.shape[1:])}] for fields of shape "
                         f"{fields.shape}, got {modes}")
    coefficients = scipy.fft.dctn(fields, type=2, norm="ortho", axes=(1, 2))[:, :modes, :modes]
    return coefficients.reshape(fields.shape[0], modes * modes)


def greedy_nearest_neighbour_order(features: np.ndarray, start: int = 0) -> np.ndarray:
    """Greedy nearest-neighbour tour through N feature vectors (SKR's sorting step), shape (N,).

    order[0] = start; order[t + 1] = argmin over unvisited j of ||features[j] - features[order[t]]||
    (ties: the smallest index). O(N^2 d) time and O(N d) memory.
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must have shape (N, d), got {features.shape}")
    count = features.shape[0]
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    if not 0 <= start < count:
        raise ValueError(f"start must index one of the {count} systems, got {start}")
    squared_norms = np.einsum("nd,nd->n", features, features)
    visited = np.zeros(count, dtype=bool)
    order = np.empty(count, dtype=np.int64)
    current = int(start)
    for t in range(count):
        order[t] = current
        visited[current] = True
        if t == count - 1:
            break
        # ||f_j - f_c||^2 up to the constant ||f_c||^2, which does not change the argmin
        distances = squared_norms - 2.0 * (features @ features[current])
        distances[visited] = np.inf
        current = int(np.argmin(distances))
    return order


# ----------------------------------------------------------------------------------------------
# Preconditioners
# ----------------------------------------------------------------------------------------------


def ilu_preconditioner(matrix, drop_tol: float = 1e-2, fill_factor: float = 2.0) -> Callable:
    """v -> (L U)^-1 v for an incomplete LU factorisation L U ~ A (``scipy.sparse.linalg.spilu``).

    SuperLU's threshold ILU with the given drop tolerance and fill factor (at most ``fill_factor``
    times the non-zeros of A), minimum-degree ordering of A + A^T and diagonal pivots only
    (``diag_pivot_thresh=0``): with the default partial pivoting the factors of the symmetric Darcy
    matrices are much worse preconditioners (measured: 3-10x more iterations at equal fill).
    """
    factor = scipy.sparse.linalg.spilu(scipy.sparse.csc_matrix(matrix), drop_tol=drop_tol,
                                       fill_factor=fill_factor, permc_spec="MMD_AT_PLUS_A",
                                       diag_pivot_thresh=0.0)
    return factor.solve


def make_preconditioner(matrix, kind: str = "ilu", drop_tol: float = 1e-2,
                        fill_factor: float = 2.0) -> Callable | None:
    """The preconditioner ``kind`` of ``PRECONDITIONERS`` for ``matrix``: a callable v -> M^-1 v.

    "ilu": ``ilu_preconditioner``; "jacobi": v / diag(A); "none": None (identity).
    """
    if kind == "ilu":
        return ilu_preconditioner(matrix, drop_tol, fill_factor)
    if kind == "jacobi":
        inverse_diagonal = 1.0 / np.asarray(matrix.diagonal(), dtype=np.float64)
        return lambda v: inverse_diagonal * v
    if kind == "none":
        return None
    raise ValueError(f"unknown preconditioner {kind!r}; choose one of {PRECONDITIONERS}")


# ----------------------------------------------------------------------------------------------
# GCRO-DR
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class KrylovSolve:
    """One iterative solve: the solution, the recycle space for the next system and the counts."""

    x: np.ndarray              # (n,) solution
    recycle: np.ndarray | None  # (n, k) approximate eigenvectors for the next system (None: none)
    matvecs: int               # products with A, all included
    residual: float            # ||b - A x|| / ||b|| (true residual)
    converged: bool


def _harmonic_ritz_basis(G: np.ndarray, WtV: np.ndarray, k: int) -> np.ndarray | None:
    """Orthonormal real basis P (m, k) of the k harmonic Ritz vectors of smallest |theta|.

    Solves G^T G p = theta G^T (W^T V) p (Parks et al. 2006, eq. 2.9 in the augmented form), where
    A V = W G, V the search space and W an orthonormal basis of its image. Complex conjugate pairs
    contribute their real and imaginary parts. None if the pencil gives no finite eigenvalue.
    """
    left = G.T @ G
    right = G.T @ WtV
    try:
        theta, vectors = scipy.linalg.eig(left, right)
    except (np.linalg.LinAlgError, ValueError):
        return None
    finite = np.isfinite(theta) & np.all(np.isfinite(vectors), axis=0)
    if not finite.any():
        return None
    candidates = np.flatnonzero(finite)[np.argsort(np.abs(theta[finite]), kind="stable")]
    columns = []
    for j in candidates:
        if len(columns) >= k:
            break
        columns.append(vectors[:, j].real)
        if abs(theta[j].imag) > 0 and len(columns) < k:
            columns.append(vectors[:, j].imag)
    basis, diagonal, _ = scipy.linalg.qr(np.stack(columns, axis=1), mode="economic", pivoting=True)
    rank = int(np.sum(np.abs(np.diag(diagonal)) > 1e-12 * abs(diagonal[0, 0])))
    return basis[:, :rank] if rank else None


def gcrodr(matrix, rhs: np.ndarray, *, preconditioner: Callable | None = None,
           x0: np.ndarray | None = None, recycle: np.ndarray | None = None,
           rtol: float = DEFAULT_RTOL, restart: int = 40, recycle_dim: int = 20,
           max_matvecs: int = 20_000) -> KrylovSolve:
    """Solve A x = b by GCRO-DR(m, k) with left preconditioning, recycling ``recycle`` (n, k').

    Parks et al. 2006 (Algorithm 1) applied to M^-1 A x = M^-1 b. Each cycle spends m - k products
    with A (Arnoldi on (I - C C^T) M^-1 A, V_{j+1} orthonormal by classical Gram-Schmidt with
    reorthogonalisation) and solves

        min_y || W^T r - G y ||,   M^-1 A [Z D, V_j] = [C, V_{j+1}] G,   G = [[D, B], [0, H]],

    (D = diag(1 / ||z_i||)), then updates Z, C to the k harmonic Ritz vectors of smallest magnitude.
    The first cycle without a recycle space is GMRES(m). Stops when the true residual satisfies
    ||b - A x|| <= rtol ||b||.

    Args:
        matrix: (n, n) sparse matrix (or anything with ``@``).
        rhs: (n,) right-hand side b.
        preconditioner: v -> M^-1 v, or None.
        x0: (n,) initial guess (default 0).
        recycle: (n, k') vectors to recycle (any scaling; near-dependent ones are dropped), or None.
        rtol: relative tolerance on the true residual.
        restart: m, Krylov vectors per cycle, recycled ones included (as PETSc's gcrodr).
        recycle_dim: k < m, vectors kept for the next cycle and the next system (0: GMRES(m)).
        max_matvecs: budget of products with A; ``converged`` is False if it runs out.

    Returns:
        ``KrylovSolve`` with x, the next recycle space (n, k) and the exact matvec count.
    """
    if not 0 <= recycle_dim < restart:
        raise ValueError(f"need 0 <= recycle_dim < restart, got recycle_dim={recycle_dim}, restart={restart}")
    b = np.asarray(rhs, dtype=np.float64)
    n = b.shape[0]
    identity = (lambda v: v)
    precondition = identity if preconditioner is None else preconditioner
    matvecs = 0

    def product(v):  # A v, counted
        nonlocal matvecs
        matvecs += 1
        return matrix @ v

    b_norm = float(np.linalg.norm(b))
    x = np.zeros(n) if x0 is None else np.array(x0, dtype=np.float64)
    if b_norm == 0.0:
        return KrylovSolve(np.zeros(n), recycle, 0, 0.0, True)
    target = rtol * b_norm
    r = b - product(x) if x0 is not None else b.copy()
    r_norm = float(np.linalg.norm(r))
    if r_norm <= target:
        return KrylovSolve(x, recycle, matvecs, r_norm / b_norm, True)
    rhat = precondition(r)
    # the preconditioned residual that should correspond to the target; refined on each check
    ptol = target * float(np.linalg.norm(rhat)) / r_norm

    C = Z = None  # M^-1 A Z = C, C^T C = I
    if recycle is not None and recycle.shape[1] > 0 and recycle_dim > 0:
        images = np.stack([precondition(product(z)) for z in recycle.T], axis=1)  # (n, k')
        q, upper, pivots = scipy.linalg.qr(images, mode="economic", pivoting=True)
        rank = int(np.sum(np.abs(np.diag(upper)) > 1e-10 * abs(upper[0, 0])))
        rank = min(rank, recycle_dim)
        if rank:
            C = q[:, :rank]
            # Z R = recycle[:, pivots] on the kept columns -> Z = recycle P R^-1
            Z = scipy.linalg.solve_triangular(upper[:rank, :rank], recycle[:, pivots[:rank]].T,
                                              trans="T").T
            coefficients = C.T @ rhat
            x += Z @ coefficients
            rhat -= C @ coefficients

    converged = False
    while matvecs < max_matvecs:
        beta = float(np.linalg.norm(rhat))
        if beta <= ptol:  # check the true residual; tighten ptol if it is not yet small enough
            r = b - product(x)
            r_norm = float(np.linalg.norm(r))
            if r_norm <= target:
                converged = True
                break
            rhat = precondition(r)
            beta = float(np.linalg.norm(rhat))
            ptol = min(ptol, beta) * max(0.1, 0.5 * target / r_norm)
        k = 0 if C is None else C.shape[1]
        steps = restart - k
        V = np.empty((steps + 1, n))           # Arnoldi basis, one vector per row
        H = np.zeros((steps + 1, steps))       # Hessenberg matrix of (I - C C^T) M^-1 A
        B = np.zeros((k, steps))               # C^T M^-1 A V
        R = np.zeros((steps + 1, steps))       # H after the Givens rotations
        rotations = np.zeros((steps, 2))
        g = np.zeros(steps + 1)
        g[0] = beta
        V[0] = rhat / beta
        j = 0
        for j in range(steps):
            w = precondition(product(V[j]))
            if k:
                B[:, j] = C.T @ w
                w -= C @ B[:, j]
            h = V[:j + 1] @ w
            w -= h @ V[:j + 1]
            correction = V[:j + 1] @ w          # second Gram-Schmidt pass
            w -= correction @ V[:j + 1]
            h += correction
            h_next = float(np.linalg.norm(w))
            H[:j + 1, j], H[j + 1, j] = h, h_next
            breakdown = h_next <= 1e-14 * float(np.linalg.norm(h))
            if not breakdown:
                V[j + 1] = w / h_next
            column = H[:j + 2, j].copy()
            for i in range(j):
                c, s = rotations[i]
                column[i], column[i + 1] = c * column[i] + s * column[i + 1], -s * column[i] + c * column[i + 1]
            c, s, radius = _givens(column[j], column[j + 1])
            rotations[j] = c, s
            column[j], column[j + 1] = radius, 0.0
            R[:j + 2, j] = column
            g[j], g[j + 1] = c * g[j], -s * g[j]
            if abs(g[j + 1]) <= ptol or breakdown or matvecs >= max_matvecs:
                break
        size = j + 1
        y2 = scipy.linalg.solve_triangular(R[:size, :size], g[:size])
        Hbar = H[:size + 1, :size]
        Vj = V[:size + 1] if not breakdown else V[:size]
        if k:
            scale = 1.0 / np.linalg.norm(Z, axis=0)  # D
            y1 = (C.T @ rhat - B[:, :size] @ y2) / scale
            x += Z @ (scale * y1) + y2 @ V[:size]
            rhat = rhat - C @ (scale * y1 + B[:, :size] @ y2) - (Hbar @ y2)[:Vj.shape[0]] @ Vj
        else:
            x += y2 @ V[:size]
            rhat = rhat - (Hbar @ y2)[:Vj.shape[0]] @ Vj
        if breakdown or recycle_dim == 0:
            continue
        # New recycle space: harmonic Ritz vectors of M^-1 A on [Z D, V_size] (image [C, V_{size+1}]).
        if k:
            G = np.zeros((k + size + 1, k + size))
            G[:k, :k] = np.diag(scale)
            G[:k, k:] = B[:, :size]
            G[k:, k:] = Hbar
            U = Z * scale
            WtV = np.zeros((k + size + 1, k + size))
            WtV[:k, :k] = C.T @ U
            WtV[k:, :k] = V[:size + 1] @ U
            WtV[k:k + size, k:] = np.eye(size)
        else:
            G, WtV = Hbar, np.eye(size + 1, size)
        P = _harmonic_ritz_basis(G, WtV, min(recycle_dim, size))
        if P is None:
            continue
        q, upper = np.linalg.qr(G @ P)
        if k:
            Z_new = U @ P[:k] + V[:size].T @ P[k:]
            C = C @ q[:k] + V[:size + 1].T @ q[k:]
        else:
            Z_new = V[:size].T @ P
            C = V[:size + 1].T @ q
        Z = scipy.linalg.solve_triangular(upper, Z_new.T, trans="T").T  # Z_new R^-1

    if not converged:
        r_norm = float(np.linalg.norm(b - product(x)))
        converged = r_norm <= target
    next_recycle = None if Z is None else Z / np.linalg.norm(Z, axis=0)
    return KrylovSolve(x, next_recycle, matvecs, r_norm / b_norm, converged)


def _givens(a: float, b: float) -> tuple[float, float, float]:
    """(c, s, r) with [c s; -s c] [a; b] = [r; 0]."""
    if b == 0.0:
        return 1.0, 0.0, a
    radius = float(np.hypot(a, b))
    return a / radius, b / radius, radius


# ----------------------------------------------------------------------------------------------
# Sequences of systems
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SequenceSolve:
    """Solutions of N systems and what it cost. Arrays are indexed by system, not by solve order."""

    solutions: np.ndarray | None  # (N, n); None when a ``store`` callback took them
    matvecs: np.ndarray     # (N,) products with A per system (0 for the direct solver)
    order: np.ndarray       # (N,) the order in which the systems were solved
    seconds: float          # wall time: sorting, preconditioners and solves (not building matrices)


def _keep(solutions, store, count: int, i: int, x: np.ndarray):
    """Hand x to ``store`` or write it into the (count, n) array (allocated on the first call)."""
    if store is not None:
        store(i, x)
        return None
    if solutions is None:
        solutions = np.empty((count, x.shape[0]))
    solutions[i] = x
    return solutions


def _rhs_of(rhs: np.ndarray, i: int) -> np.ndarray:
    return rhs if rhs.ndim == 1 else rhs[i]


def _not_converged(i: int, result, method: str) -> RuntimeError:
    return RuntimeError(
        f"{method} did not reach the tolerance on system {i} (relative residual {result:.2e}); use "
        f"solver='direct', a stronger preconditioner, or a larger restart length")


def solve_independent(matrices: Sequence, rhs: np.ndarray, *, rtol: float = DEFAULT_RTOL,
                      restart: int = 40, preconditioner: str = "ilu", drop_tol: float = 1e-2,
                      fill_factor: float = 2.0, maxiter: int = 500,
                      store: Callable[[int, np.ndarray], None] | None = None) -> SequenceSolve:
    """Each system on its own by ``scipy.sparse.linalg.gmres`` (restart m, left preconditioned, x0 = 0).

    ``matrices`` is any sequence of N sparse (n, n) matrices (a lazy one is fine); ``rhs`` (n,) is
    shared or (N, n). Products with A are counted through a ``LinearOperator``. ``store(i, x)``, if
    given, receives each solution instead of the returned array (``solutions`` is then None).
    """
    rhs = np.asarray(rhs, dtype=np.float64)
    count = len(matrices)
    solutions, counts = None, np.zeros(count, dtype=np.int64)
    start = time.perf_counter()
    for i in range(count):
        matrix = matrices[i]
        M = make_preconditioner(matrix, preconditioner, drop_tol, fill_factor)
        calls = [0]

        def product(v, matrix=matrix, calls=calls):
            calls[0] += 1
            return matrix @ v

        operator = scipy.sparse.linalg.LinearOperator(matrix.shape, matvec=product, dtype=np.float64)
        M_op = None if M is None else scipy.sparse.linalg.LinearOperator(matrix.shape, matvec=M, dtype=np.float64)
        b = _rhs_of(rhs, i)
        x, info = scipy.sparse.linalg.gmres(operator, b, rtol=rtol, restart=restart, maxiter=maxiter, M=M_op)
        if info != 0:
            raise _not_converged(i, np.linalg.norm(b - matrix @ x) / np.linalg.norm(b), "GMRES")
        counts[i] = calls[0]
        solutions = _keep(solutions, store, count, i, x)
    return SequenceSolve(solutions, counts, np.arange(count), time.perf_counter() - start)


def solve_recycled(matrices: Sequence, rhs: np.ndarray, *, features: np.ndarray | None = None,
                   order: np.ndarray | None = None, rtol: float = DEFAULT_RTOL, restart: int = 40,
                   recycle_dim: int = 20, preconditioner: str = "ilu", drop_tol: float = 1e-2,
                   fill_factor: float = 2.0, warm_start: bool = True, max_matvecs: int = 20_000,
                   store: Callable[[int, np.ndarray], None] | None = None) -> SequenceSolve:
    """SKR: sort the systems, then solve them in that order by ``gcrodr``, recycling from each to the next.

    Args:
        matrices: sequence of N sparse (n, n) matrices (may be lazy: each is taken once).
        rhs: (n,) shared right-hand side or (N, n).
        features: (N, d) parameter features for ``greedy_nearest_neighbour_order`` (e.g.
            ``low_frequency_modes`` of the coefficient fields); timed as part of the solve.
        order: an explicit solve order instead (for ablations); neither: the given order.
        rtol, restart, recycle_dim: see ``gcrodr``; preconditioner, drop_tol, fill_factor: see
            ``make_preconditioner`` (rebuilt for every system).
        warm_start: start each solve from the previous system's solution (else from 0).
        store: ``store(i, x)`` receives each solution instead of the returned array.

    Raises:
        RuntimeError: a system did not converge within ``max_matvecs`` products.
    """
    rhs = np.asarray(rhs, dtype=np.float64)
    count = len(matrices)
    start = time.perf_counter()
    if order is None:
        order = np.arange(count) if features is None else greedy_nearest_neighbour_order(features)
    order = np.asarray(order, dtype=np.int64)
    if sorted(order.tolist()) != list(range(count)):
        raise ValueError(f"order must be a permutation of range({count})")
    solutions, counts = None, np.zeros(count, dtype=np.int64)
    recycle, previous = None, None
    for i in order:
        matrix = matrices[i]
        M = make_preconditioner(matrix, preconditioner, drop_tol, fill_factor)
        result = gcrodr(matrix, _rhs_of(rhs, i), preconditioner=M, x0=previous if warm_start else None,
                        recycle=recycle, rtol=rtol, restart=restart, recycle_dim=recycle_dim,
                        max_matvecs=max_matvecs)
        if not result.converged:
            raise _not_converged(int(i), result.residual, "GCRO-DR")
        counts[i] = result.matvecs
        solutions = _keep(solutions, store, count, int(i), result.x)
        recycle, previous = result.recycle, result.x
    return SequenceSolve(solutions, counts, order, time.perf_counter() - start)


def solve_direct(matrices: Sequence, rhs: np.ndarray,
                 store: Callable[[int, np.ndarray], None] | None = None) -> SequenceSolve:
    """Each system by sparse LU (SuperLU, ``splu`` with the minimum-degree ordering of A + A^T), as
    ``darcy_solver.solve_darcy_nodal``."""
    rhs = np.asarray(rhs, dtype=np.float64)
    count = len(matrices)
    solutions = None
    start = time.perf_counter()
    for i in range(count):
        factor = scipy.sparse.linalg.splu(scipy.sparse.csc_matrix(matrices[i]), permc_spec="MMD_AT_PLUS_A")
        solutions = _keep(solutions, store, count, i, factor.solve(_rhs_of(rhs, i)))
    return SequenceSolve(solutions, np.zeros(count, dtype=np.int64), np.arange(count),
                         time.perf_counter() - start)
