"""HiPPO state matrices and their normal-plus-low-rank / diagonal-plus-low-rank forms.

Gu, Dao, Ermon, Rudra, Re, "HiPPO: Recurrent Memory with Optimal Polynomial Projections", NeurIPS 2020,
arXiv:2008.07669 (the matrices); Gu, Goel, Re, "Efficiently Modeling Long Sequences with Structured State
Spaces", ICLR 2022, arXiv:2111.00396, Theorem 1 and Section 3.3 (the NPLR / DPLR forms).

HiPPO-LegS (``measure="legs"``), state size N, indices n, k = 0..N-1:

    A_nk = -sqrt(2n+1) sqrt(2k+1)   (n > k),    A_nn = -(n+1),    A_nk = 0   (n < k),
    B_n  = sqrt(2n+1).

Normal plus low rank (NPLR): with the rank-1 correction P_n = sqrt(n + 1/2),

    A = S - P P^T,     S = A + P P^T = -I/2 + (skew-symmetric),

so S is normal. Diagonalising S = V diag(Lambda) V^* with V unitary gives the diagonal plus low rank
(DPLR) form in the eigenbasis, unitarily equivalent to A:

    A = V (diag(Lambda) - P~ P~^*) V^*,     P~ = V^* P,   B~ = V^* B,   Re Lambda = -1/2.

Because S is real, its eigenvalues come in conjugate pairs; the "half" form keeps one eigenvalue of each
pair (Im < 0, as the reference code ``state-spaces/s4`` does) and the SSM output is then 2 Re(...).

Also provided (cheap to add, same recipe): HiPPO-LegT (rank-2 correction) and HiPPO-LagT (rank 1), with
the normalisation of ``state-spaces/s4`` (``transition`` / ``rank_correction``); their normal parts have
Re Lambda = 0.

Everything here is NumPy float64 / complex128 (the eigendecomposition must be done in double precision;
the reference code does the same with ``diagonalize_precision=True``); models cast to their own dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lax_models.ssm.common import single_threaded_blas

__all__ = [
    "MEASURES",
    "hippo_matrices",
    "rank_correction",
    "NPLR",
    "nplr",
    "DPLR",
    "dplr",
    "dplr_matrix",
]

MEASURES = ("legs", "legt", "lagt")


def _check_size(N: int, *, even: bool) -> int:
    if int(N) != N or N < 1:
        raise ValueError(f"state size N must be a positive integer; got {N!r}")
    if even and N % 2:
        raise ValueError(
            f"state size N={N} must be even: the conjugate-symmetric forms keep N/2 conjugate pairs"
        )
    return int(N)


def _check_measure(measure: str) -> None:
    if measure not in MEASURES:
        raise ValueError(f"unknown HiPPO measure {measure!r}; choose one of {MEASURES}")


def hippo_matrices(measure: str, N: int) -> tuple[np.ndarray, np.ndarray]:
    """HiPPO transition ``A`` (N, N) and input vector ``B`` (N,), float64.

    ``legs``: the matrix of the module docstring. ``legt`` (translated Legendre, window 1, with the
    reference code's halving): ``A_nk = -(1/2) sqrt(2n+1) sqrt(2k+1) * (1 if n >= k else (-1)^(n-k))``,
    ``B_n = (1/2) sqrt(2n+1)``. ``lagt`` (translated Laguerre, beta = 1):
    ``A = I/2 - tril(ones)``, ``B = ones``.
    """
    _check_measure(measure)
    N = _check_size(N, even=False)
    q = np.arange(N, dtype=np.float64)
    r = np.sqrt(2.0 * q + 1.0)
    row, col = q[:, None], q[None, :]  # (N, 1), (1, N): A[n, k] with n = row, k = col
    if measure == "legs":
        A = -np.where(row > col, np.outer(r, r), 0.0) - np.diag(q + 1.0)
        B = r.copy()
    elif measure == "legt":
        sign = np.where(row >= col, 1.0, (-1.0) ** (row - col))
        A = -0.5 * np.outer(r, r) * sign
        B = 0.5 * r
    else:  # lagt
        A = 0.5 * np.eye(N) - np.tril(np.ones((N, N)))
        B = np.ones(N)
    return A, B


def rank_correction(measure: str, N: int) -> np.ndarray:
    """Low-rank ``P`` of shape (rank, N) such that ``A + P^T P`` is normal (rank 1, or 2 for LegT)."""
    _check_measure(measure)
    N = _check_size(N, even=False)
    q = np.arange(N, dtype=np.float64)
    if measure == "legs":
        return np.sqrt(q + 0.5)[None, :]  # (1, N)
    if measure == "legt":
        r = np.sqrt(2.0 * q + 1.0) / np.sqrt(2.0)
        even_part = np.where(q % 2 == 0, 0.0, r)  # zero on even indices
        odd_part = np.where(q % 2 == 1, 0.0, r)  # zero on odd indices
        return np.stack([even_part, odd_part])  # (2, N)
    return np.full((1, N), np.sqrt(0.5))  # lagt


class NPLR(NamedTuple):
    """``A = S - P^T P`` with ``S`` normal; ``A, S``: (N, N), ``B``: (N,), ``P``: (rank, N)."""

    A: np.ndarray
    B: np.ndarray
    P: np.ndarray
    S: np.ndarray


def nplr(measure: str, N: int) -> NPLR:
    """Normal plus low-rank form of a HiPPO matrix (float64)."""
    A, B = hippo_matrices(measure, N)
    P = rank_correction(measure, N)
    S = A + P.T @ P  # (N, N), normal: -c I + skew-symmetric
    return NPLR(A=A, B=B, P=P, S=S)


class DPLR(NamedTuple):
    """Diagonal plus low-rank form ``A = V (diag(Lambda) - P^* P) V^*`` (complex128).

    Full form: ``Lambda`` (N,), ``P`` (rank, N), ``B`` (N,), ``V`` (N, N) unitary. Half form
    (``conj_sym=True``): ``Lambda`` (N/2,) with Im < 0, ``P`` (rank, N/2), ``B`` (N/2,), ``V`` (N, N/2);
    the other half is the complex conjugate of this one (``Lambda``, ``P``, ``B`` and the columns of V).
    ``P`` here is the transformed ``V^* P`` stored as rows, so the state matrix in the eigenbasis is
    ``diag(Lambda) - sum_r P[r]^H-outer``: ``diag(Lambda) - P.T @ P.conj()``.
    """

    Lambda: np.ndarray
    P: np.ndarray
    B: np.ndarray
    V: np.ndarray


def dplr(measure: str, N: int, *, conj_sym: bool = True, B_clip: float | None = None) -> DPLR:
    """Diagonalise the normal part of a HiPPO matrix: the S4 (DPLR) parameters, complex128.

    ``S = -c I + W`` with ``W`` real skew-symmetric, so ``Re Lambda = -c`` is read off the diagonal and
    ``Im Lambda`` comes from the Hermitian eigenproblem ``eigh(-i W)`` (stable, unlike ``eig`` of the
    non-normal ``A``). Eigenvalues are ordered by imaginary part (ascending), and in the full form the
    second half holds the conjugates of the first in the same order (entry ``N/2 + k`` is the conjugate of
    entry ``k``), so that ``[:N/2]`` is the half form.

    Args:
      measure: "legs", "legt" or "lagt".
      N: full state size (even).
      conj_sym: return the half form (N/2 states) instead of the full one.
      B_clip: clip ``Im B~`` to ``[-B_clip, B_clip]`` (the reference code clips at 2 for stability);
        ``None`` keeps the exact transform, as needed to reconstruct ``B``.

    Raises:
      ValueError: odd N, unknown measure, or a normal part that is not ``-c I + skew`` (numerically).
    """
    N = _check_size(N, even=True)
    A, B, P, S = nplr(measure, N)
    c = -float(np.mean(np.diag(S)))
    c = 0.0 if abs(c) < 1e-12 else c  # LegT / LagT: exactly skew-symmetric normal part
    W = S + c * np.eye(N)  # (N, N), should be skew-symmetric
    asym = np.abs(W + W.T).max() / max(np.abs(W).max(), 1.0)
    if asym > 1e-10:
        raise ValueError(f"the normal part of HiPPO-{measure} is not -c I + skew (error {asym:.2e})")
    with single_threaded_blas():
        w_im, U = np.linalg.eigh(-1j * W)  # -i W is Hermitian; eigenvalues ascending, U unitary
    # Eigenvalues of W are i * w_im; for real W they come in conjugate pairs (+-w), so after the
    # ascending sort the first half has Im <= 0. Pair column k with the conjugate column, so that
    # entry N/2 + k is exactly the conjugate of entry k.
    half = N // 2
    if np.min(np.abs(w_im)) < 1e-8:
        raise ValueError(f"HiPPO-{measure} with N={N} has a zero eigenvalue in its normal part")
    lam_half = -c + 1j * w_im[:half]  # (N/2,) Im < 0
    V_half = U[:, :half]  # (N, N/2)
    Lambda = np.concatenate([lam_half, lam_half.conj()])  # (N,)
    V = np.concatenate([V_half, V_half.conj()], axis=1)  # (N, N): real W => conj vectors pair up
    P_t = (V.conj().T @ P.T.astype(np.complex128)).T  # (rank, N): rows V^* P_r
    B_t = V.conj().T @ B.astype(np.complex128)  # (N,)
    if B_clip is not None:
        B_t = B_t.real + 1j * np.clip(B_t.imag, -B_clip, B_clip)
    if conj_sym:
        return DPLR(Lambda=Lambda[:half], P=P_t[:, :half], B=B_t[:half], V=V[:, :half])
    return DPLR(Lambda=Lambda, P=P_t, B=B_t, V=V)


def dplr_matrix(Lambda: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Dense ``diag(Lambda) - sum_r P_r P_r^*`` for full-form ``Lambda`` (N,) and ``P`` (rank, N)."""
    P = np.atleast_2d(P)
    return np.diag(Lambda) - P.T @ P.conj()  # (N, N)
