"""Perturb-then-diagonalize (PTD): a well-conditioned diagonalisation of HiPPO-LegS (S4-PTD, S5-PTD).

Yu, Nigmetov, Morozov, Mahoney, Erichson, "Robustifying State-space Models for Long Sequences via
Approximate Diagonalization", ICLR 2024, arXiv:2310.01698, Section 4. HiPPO-LegS ``A`` is non-normal:
its eigenvalues are -1..-N (real) and its eigenvector matrix has cond ~ 1e16..1e20 at N = 64 (saturated
in float64), so diagonalising it exactly is ill-posed. PTD diagonalises a nearby matrix instead,

    A + E = V diag(Lambda) V^{-1},     E = argmin_E  kappa_2(V(A + E)) + gamma ||E||_2 / ||A||_2  (+ a barrier),

and S4-PTD / S5-PTD are the diagonal models initialised with ``Lambda``, ``V^{-1} B`` (and ``C V``).
The paper states the objective ``kappa(V) + gamma ||E||`` and "gradient descent"; the solver below is
ours. Our choices (each one documented, none from a reference implementation):

* kappa_2 is the 2-norm condition number of V with unit-norm columns (the column scaling is free;
  unit columns are within sqrt(N) of the optimal scaling, van der Sluis).
* The norm is the spectral norm, relative to ``||A||_2`` so that ``gamma`` means the same for every N;
  in the paper's absolute form our gamma is ``gamma_paper = gamma / ||A||_2`` (2608 at N = 64).
* E is skew-symmetric, ``E = K - K^T`` with K strictly upper triangular (N (N-1)/2 unknowns). Then
  the Hermitian part of ``A + E`` equals that of A, which for HiPPO-LegS is ``-I/2 - P P^T``, so the
  numerical range of ``A + E`` lies in Re z <= -1/2: every PTD eigenvalue has Re <= -1/2 (a stable SSM
  for every E, no constraint needed) and ``||(s I - A - E)^{-1}||_2 <= 2`` on the imaginary axis.
  (A dense random E of the same size moves eigenvalues into the right half-plane.)
* Real eigenvalues must be avoided: S4D / S5 keep N/2 conjugate pairs, and a real eigenvalue has no
  partner. The start is ``E_0 = s_0 (A - A^T) / 2`` (a multiple of A's own skew part), ``s_0 = 0.03``,
  doubled until ``A + E_0`` has no real eigenvalue (at ``s_0 = 0.03``: cond(V) ~ 60 and
  ||E||/||A|| = 0.015 for N = 16..256, none real). The optimiser must then stay there. A pair can only
  become real through a defective matrix (kappa infinite), but that spike is narrow (square-root
  branch point) and L-BFGS steps jumped over it (at N = 2, 128, 256; the slowest pair sits near
  -0.5 +- 0.2i at the start). So the objective gets a barrier
  ``(1/2) sum_k (tau / Im lambda_k)^2`` with ``tau = 0.1`` (units of A's eigenvalues; at the
  optimum it is < 1e-2 of J), a trial point with a real eigenvalue gets J + 1e12 (the line search
  backtracks), the result is the best iterate without one, and L-BFGS restarts from it when a line
  search gives up (within ``maxiter`` iterations in all). The full objective is

      J(E) = kappa_2(V) + gamma ||E||_2 / ||A||_2 + (1/2) sum_k (tau / Im lambda_k)^2.
* L-BFGS (SciPy) in float64 on the N (N-1)/2 entries of K with the exact gradient (NumPy/SciPy only,
  so the initialisation also works inside a traced model constructor): for
  ``A V = V Lambda``, ``dV = V (F o (V^{-1} dA V))`` with ``F_ij = 1/(lambda_j - lambda_i)``
  (i != j; the diagonal gauge does not change kappa of the column-normalised V), so for a real A
  ``grad_A kappa = Re(V^{-H} (conj(F) o (V^H G_V)) V^H)`` with ``G_V`` the gradient of kappa in V
  (through the column normalisation and the two extreme singular values), and
  ``grad_A Im lambda_k = Im(V^{-1}[k, :]^T V[:, k]^T)`` for the barrier. Checked against finite
  differences in the tests.
* Default ``gamma = 1000``: at N = 64 the solve gives cond(V) ~ 16 at ||E||/||A|| ~ 0.014 (the
  paper's ablation finds ||E||/||A|| in 1e-2..1 works best); larger gamma = smaller E, larger cond.

The solve of HiPPO-LegS (:func:`ptd_legs`) is done once per process and (N, settings) and kept in
memory (``functools.lru_cache``; about 2 s at N = 64 on one contended core, 0.2 s at N = 16); nothing
is written to disk. S4-PTD is ``S4D(init="ptd")`` (:mod:`lax_models.ssm.s4d`), S5-PTD
``S5(init="ptd")`` (:mod:`lax_models.ssm.s5`).

Conventions of the returned eigendecomposition (:func:`ptd_init`, stable API used by S5-PTD): entries
``0..N/2-1`` hold one eigenvalue of each conjugate pair (Im < 0, sorted by imaginary part), entry
``N/2 + k`` is the conjugate of entry ``k`` and ``V[:, N/2 + k] = conj(V[:, k])``; V has unit-norm
columns and ``Vinv = V^{-1}``. So ``Lambda[:N/2]``, ``V[:, :N/2]``, ``Vinv[:N/2]`` is the
conjugate-symmetric half form (output 2 Re(...)).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import NamedTuple

import numpy as np
import scipy.optimize

from lax_models.ssm.common import single_threaded_blas
from lax_models.ssm.hippo import hippo_matrices

__all__ = [
    "DEFAULT_GAMMA",
    "DEFAULT_MAXITER",
    "DEFAULT_START_SCALE",
    "DEFAULT_PAIR_BARRIER",
    "PTDResult",
    "eigenvector_condition",
    "ptd_objective",
    "perturb_then_diagonalize",
    "ptd_legs",
    "ptd_init",
]

logger = logging.getLogger(__name__)

DEFAULT_GAMMA = 1000.0
DEFAULT_MAXITER = 100
DEFAULT_START_SCALE = 0.03
DEFAULT_PAIR_BARRIER = 0.1
_INFEASIBLE = 1e12  # added to the objective where A + E has a real eigenvalue


# ----------------------------------------------------------------------------------------------
# Objective and its gradient
# ----------------------------------------------------------------------------------------------
def _condition_and_gradient(M: np.ndarray):
    """``(kappa, grad, w, V, V^{-1})`` for a real square M; see :func:`eigenvector_condition`."""
    w, V = np.linalg.eig(M)  # (N,), (N, N) complex
    norms = np.linalg.norm(V, axis=0)  # (N,)
    U, s, Wh = np.linalg.svd(V / norms)
    kappa = s[0] / s[-1]
    # d kappa / d Vn: d sigma_i = Re(u_i^H dVn v_i) -> gradient u_i v_i^H (rows of Wh are v_i^H)
    G = np.outer(U[:, 0], Wh[0]) / s[-1] - (s[0] / s[-1] ** 2) * np.outer(U[:, -1], Wh[-1])
    # through Vn = V / ||V_j||: G_V[:, j] = G_j / n_j - V_j Re(G_j^H V_j) / n_j^3
    G_V = G / norms - V * (np.real(np.sum(G.conj() * V, axis=0)) / norms**3)
    # through the eigenvectors: dV = V (F o (V^{-1} dM V)),  F_ij = 1 / (lambda_j - lambda_i)
    diff = w[None, :] - w[:, None]  # (N, N): lambda_j - lambda_i
    np.fill_diagonal(diff, 1.0)
    F = 1.0 / diff
    np.fill_diagonal(F, 0.0)
    Vinv = np.linalg.inv(V)
    Y = F.conj() * (V.conj().T @ G_V)
    grad = np.real(Vinv.conj().T @ Y @ V.conj().T)  # (N, N)
    return kappa, grad, w, V, Vinv


def eigenvector_condition(M: np.ndarray, *, with_grad: bool = False):
    """``kappa_2`` of the column-normalised eigenvector matrix of a real square ``M`` (and its gradient).

    Returns ``kappa`` or ``(kappa, grad)`` with ``grad`` (N, N) real: ``d kappa = sum(grad * dM)``.
    """
    if not with_grad:
        _, V = np.linalg.eig(M)
        return float(np.linalg.cond(V / np.linalg.norm(V, axis=0)))
    kappa, grad, *_ = _condition_and_gradient(M)
    return kappa, grad


def _skew_from_upper(x: np.ndarray, N: int) -> np.ndarray:
    """Strictly-upper entries ``x`` (N (N-1)/2,) -> skew-symmetric ``E = K - K^T`` (N, N)."""
    K = np.zeros((N, N))
    K[np.triu_indices(N, 1)] = x
    return K - K.T


def _objective(x: np.ndarray, A: np.ndarray, gamma: float, tau: float, norm_A: float):
    """``(J, grad_x, number of real eigenvalues of A + E)``; J as in :func:`ptd_objective`."""
    N = A.shape[0]
    E = _skew_from_upper(x, N)
    kappa, g_A, w, V, Vinv = _condition_and_gradient(A + E)
    # pair barrier (1/2) sum_k (tau / Im lambda_k)^2 over all N eigenvalues (each pair counted once);
    # d lambda_k = (V^{-1} dM V)_kk, so grad_M Im lambda_k = Im(V^{-1}[k, :]^T V[:, k]^T)
    im = w.imag
    off_axis = np.abs(im) > 0
    barrier = 0.5 * np.sum((tau / im[off_axis]) ** 2)
    coef = np.zeros(N)
    coef[off_axis] = -(tau**2) / im[off_axis] ** 3  # d barrier / d Im lambda_k
    g_A = g_A + np.imag(Vinv.T @ (coef[:, None] * V.T))
    U, s, Vt = np.linalg.svd(E)
    g_E = g_A + (gamma / norm_A) * np.outer(U[:, 0], Vt[0])  # (N, N) gradient in E
    g_x = (g_E - g_E.T)[np.triu_indices(N, 1)]  # E depends on x through K - K^T
    return kappa + gamma * s[0] / norm_A + barrier, g_x, _n_real(w)


def ptd_objective(
    x: np.ndarray, A: np.ndarray, gamma: float, tau: float = 0.0, norm_A: float | None = None
) -> tuple[float, np.ndarray]:
    """The PTD objective for ``E = K - K^T`` (``x``: the strictly-upper entries of K) and its gradient in x:

        J(E) = kappa_2(V(A + E)) + gamma ||E||_2 / ||A||_2 + (1/2) sum_k (tau / Im lambda_k(A + E))^2.
    """
    norm_A = np.linalg.norm(A, 2) if norm_A is None else norm_A
    J, g_x, _ = _objective(x, A, gamma, tau, norm_A)
    return J, g_x


# ----------------------------------------------------------------------------------------------
# Solver
# ----------------------------------------------------------------------------------------------
class PTDResult(NamedTuple):
    """A PTD solve: ``A + E = V diag(Lambda) Vinv`` (ordering: see the module docstring)."""

    Lambda: np.ndarray  # (N,) complex128
    V: np.ndarray  # (N, N) complex128, unit-norm columns
    Vinv: np.ndarray  # (N, N) complex128
    E: np.ndarray  # (N, N) float64, skew-symmetric
    cond_V: float  # 2-norm condition number of V
    norm_E: float  # ||E||_2
    rel_norm_E: float  # ||E||_2 / ||A||_2
    iterations: int


def _n_real(w: np.ndarray, tol: float = 1e-9) -> int:
    return int(np.sum(np.abs(w.imag) <= tol * np.maximum(np.abs(w), 1.0)))


def _paired_eigendecomposition(M: np.ndarray):
    """Eigendecomposition of a real M without real eigenvalues in the paired half/conjugate ordering."""
    N = M.shape[0]
    w, V = np.linalg.eig(M)
    if _n_real(w):
        raise ValueError(f"the perturbed matrix has {_n_real(w)} real eigenvalues; cannot pair them")
    neg = np.flatnonzero(w.imag < 0)  # one of each conjugate pair
    if len(neg) != N // 2:
        raise ValueError(f"expected {N // 2} eigenvalues with Im < 0, found {len(neg)}")
    neg = neg[np.lexsort((w[neg].real, w[neg].imag))]  # by imaginary part, then real part
    V_half = V[:, neg] / np.linalg.norm(V[:, neg], axis=0)  # (N, N/2) unit columns
    Lambda = np.concatenate([w[neg], w[neg].conj()])  # (N,)
    V_full = np.concatenate([V_half, V_half.conj()], axis=1)  # (N, N)
    return Lambda, V_full, np.linalg.inv(V_full)


def perturb_then_diagonalize(
    A: np.ndarray,
    *,
    gamma: float = DEFAULT_GAMMA,
    maxiter: int = DEFAULT_MAXITER,
    start_scale: float = DEFAULT_START_SCALE,
    pair_barrier: float = DEFAULT_PAIR_BARRIER,
) -> PTDResult:
    """Minimise :func:`ptd_objective` over skew-symmetric E (module docstring).

    Args:
      A: real ``(N, N)``, N even (HiPPO-LegS in :func:`ptd_legs`; any matrix whose Hermitian part is
        negative definite keeps the stability guarantee).
      gamma: weight of the relative perturbation size (> 0).
      maxiter: L-BFGS iterations.
      start_scale: initial ``E_0 = start_scale (A - A^T) / 2``, doubled until no eigenvalue is real.
      pair_barrier: ``tau`` of the barrier keeping conjugate pairs off the real axis (units of A's
        eigenvalues; 0 disables it).

    Returns:
      :class:`PTDResult` in float64 / complex128.

    Raises:
      ValueError: bad arguments, or no start without real eigenvalues up to ``start_scale = 1``.
    """
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square matrix; got shape {A.shape}")
    N = A.shape[0]
    if N < 2 or N % 2:
        raise ValueError(f"PTD needs an even size N >= 2 (N/2 conjugate pairs); got N={N}")
    if not gamma > 0 or maxiter < 0 or not start_scale > 0 or pair_barrier < 0:
        raise ValueError(
            f"need gamma > 0, maxiter >= 0, start_scale > 0, pair_barrier >= 0; got {gamma}, {maxiter}, "
            f"{start_scale}, {pair_barrier}"
        )
    with single_threaded_blas():
        return _solve(A, float(gamma), int(maxiter), float(start_scale), float(pair_barrier))


def _solve(A: np.ndarray, gamma: float, maxiter: int, start_scale: float, tau: float) -> PTDResult:
    N = A.shape[0]
    norm_A = np.linalg.norm(A, 2)
    skew_part = (A - A.T) / 2
    scale = start_scale
    while _n_real(np.linalg.eigvals(A + scale * skew_part)):
        scale *= 2
        if scale > 1.0:
            raise ValueError(
                f"A + s (A - A^T)/2 keeps real eigenvalues for every s <= 1 (N={N}); PTD pairs complex "
                f"eigenvalues only: try another start_scale"
            )
    x0 = scale * skew_part[np.triu_indices(N, 1)]
    best = {"J": np.inf, "x": x0}

    def fun(x):
        J, g, n_real = _objective(x, A, gamma, tau, norm_A)
        if n_real:  # outside the basin without real eigenvalues: reject, the line search backtracks
            return J + _INFEASIBLE, g
        if J < best["J"]:
            best.update(J=J, x=x.copy())
        return J, g

    iterations = 0
    while iterations < maxiter:  # restart from the best point when a line search gives up
        J_before = best["J"]
        result = scipy.optimize.minimize(
            fun, best["x"], jac=True, method="L-BFGS-B", options={"maxiter": maxiter - iterations}
        )
        iterations += max(int(result.nit), 1)
        if result.success or not best["J"] < J_before - 1e-9 * abs(J_before):
            break
    E = _skew_from_upper(best["x"], N)  # the best iterate without real eigenvalues (x0 is one)
    Lambda, V, Vinv = _paired_eigendecomposition(A + E)
    norm_E = float(np.linalg.norm(E, 2))
    return PTDResult(
        Lambda=Lambda, V=V, Vinv=Vinv, E=E, cond_V=float(np.linalg.cond(V)), norm_E=norm_E,
        rel_norm_E=norm_E / norm_A, iterations=iterations,
    )


# ----------------------------------------------------------------------------------------------
# The HiPPO-LegS solve, once per process and settings, and the stable initialisation API
# ----------------------------------------------------------------------------------------------
def _read_only(a: np.ndarray) -> np.ndarray:
    a = np.array(a)  # own copy
    a.setflags(write=False)  # shared by every caller of the cached solve
    return a


@functools.lru_cache(maxsize=32)
def _solve_legs(N: int, gamma: float, maxiter: int, start_scale: float, pair_barrier: float) -> PTDResult:
    """The solve behind :func:`ptd_legs` (arguments normalised there), arrays read-only."""
    A, _ = hippo_matrices("legs", N)
    start = time.perf_counter()
    r = perturb_then_diagonalize(A, gamma=gamma, maxiter=maxiter, start_scale=start_scale, pair_barrier=pair_barrier)
    logger.info(
        "PTD of HiPPO-LegS N=%d: cond(V)=%.3g, ||E||/||A||=%.3g, %d iterations, %.1f s",
        N, r.cond_V, r.rel_norm_E, r.iterations, time.perf_counter() - start,
    )
    return r._replace(Lambda=_read_only(r.Lambda), V=_read_only(r.V), Vinv=_read_only(r.Vinv), E=_read_only(r.E))


def ptd_legs(
    N: int,
    *,
    gamma: float = DEFAULT_GAMMA,
    maxiter: int = DEFAULT_MAXITER,
    start_scale: float = DEFAULT_START_SCALE,
    pair_barrier: float = DEFAULT_PAIR_BARRIER,
) -> PTDResult:
    """PTD of HiPPO-LegS of size N (:func:`perturb_then_diagonalize` of ``hippo_matrices("legs", N)``).

    Solved once per process and settings (an in-memory cache of the last 32); the arrays of the result
    are shared between callers and read-only (copy them to modify).
    """
    if int(N) != N or N < 2 or N % 2:
        raise ValueError(f"PTD state size N must be an even integer >= 2; got {N!r}")
    return _solve_legs(int(N), float(gamma), int(maxiter), float(start_scale), float(pair_barrier))


def ptd_init(
    N: int,
    *,
    gamma: float = DEFAULT_GAMMA,
    maxiter: int = DEFAULT_MAXITER,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(Lambda, V, Vinv)`` of the PTD of HiPPO-LegS of size N: ``A_legs + E = V diag(Lambda) Vinv``.

    Stable API (S4D and S5 use it for ``init="ptd"``): complex128 NumPy arrays ``Lambda`` (N,),
    ``V`` (N, N) with unit-norm columns, ``Vinv`` (N, N), read-only (see :func:`ptd_legs`). Entries
    ``[:N/2]`` are one eigenvalue of each conjugate pair (Im < 0, by imaginary part), ``[N/2 + k]``
    the conjugate of ``[k]`` (columns of V likewise), so ``Lambda[:N/2], V[:, :N/2], Vinv[:N/2]`` is
    the conjugate-symmetric half form. Every ``Re Lambda <= -1/2``. For an S5/S4D init use
    ``B~ = Vinv @ B`` and ``C~ = C @ V``.

    Args:
      N: state size (even).
      gamma: weight of ``||E||_2 / ||A||_2`` in the objective (default 1000).
      maxiter: L-BFGS iterations (default 100).
    """
    r = ptd_legs(N, gamma=gamma, maxiter=maxiter)
    return r.Lambda, r.V, r.Vinv
