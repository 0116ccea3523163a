"""HiPPO matrices and their NPLR / DPLR forms against closed forms and reconstructions (float64)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lax_models.ssm.hippo import MEASURES, dplr, dplr_matrix, hippo_matrices, nplr, rank_correction


def _legs_by_loops(N: int) -> tuple[np.ndarray, np.ndarray]:
    """HiPPO-LegS entry by entry (Gu et al. 2020 / 2022): the closed form, written independently."""
    A = np.zeros((N, N))
    for n in range(N):
        for k in range(N):
            if n > k:
                A[n, k] = -np.sqrt(2 * n + 1) * np.sqrt(2 * k + 1)
            elif n == k:
                A[n, k] = -(n + 1)
    return A, np.array([np.sqrt(2 * n + 1) for n in range(N)])


@pytest.mark.parametrize("N", [1, 2, 7, 16])
def test_legs_matches_closed_form(N):
    A, B = hippo_matrices("legs", N)
    A_ref, B_ref = _legs_by_loops(N)
    np.testing.assert_array_equal(A, A_ref)
    np.testing.assert_array_equal(B, B_ref)
    # the reference code's construction -(T M T^-1), M = tril(2q+1) - diag(q), T = diag(sqrt(2q+1))
    q = np.arange(N)
    M = np.tril(np.broadcast_to(2 * q + 1, (N, N))) - np.diag(q)  # M[n, k] = 2k+1 (n >= k), minus diag(q)
    T = np.diag(np.sqrt(2 * q + 1))
    np.testing.assert_allclose(A, -(T @ M @ np.linalg.inv(T)), atol=1e-12)


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("N", [8, 64])
def test_nplr_normal_part_and_reconstruction(measure, N):
    A, B, P, S = nplr(measure, N)
    scale = np.abs(A).max()
    # S = A + P^T P is normal, and equals -c I + skew-symmetric
    assert np.abs(S @ S.T - S.T @ S).max() / scale**2 < 1e-12
    c = -np.mean(np.diag(S))
    np.testing.assert_allclose(S + S.T, -2 * c * np.eye(N), atol=1e-12 * scale)
    np.testing.assert_allclose(S - P.T @ P, A, atol=1e-13 * scale)
    assert P.shape == ((2 if measure == "legt" else 1), N)


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("N", [8, 64])
def test_dplr_reconstructs_A_in_float64(measure, N):
    """A = V (diag(Lambda) - P~ P~^*) V^* and B = V B~, below 1e-5 relative (measured ~1e-14)."""
    A, B = hippo_matrices(measure, N)
    d = dplr(measure, N, conj_sym=False, B_clip=None)
    with jax.enable_x64(True):
        V = jnp.asarray(d.V)
        assert V.dtype == jnp.complex128
        A_rec = V @ jnp.asarray(dplr_matrix(d.Lambda, d.P)) @ V.conj().T
        B_rec = V @ jnp.asarray(d.B)
        err_A = float(jnp.abs(A_rec - A).max() / np.abs(A).max())
        err_B = float(jnp.abs(B_rec - B).max() / np.abs(B).max())
        unitarity = float(jnp.abs(V.conj().T @ V - jnp.eye(N)).max())
    assert err_A < 1e-5 and err_B < 1e-5 and unitarity < 1e-10, (err_A, err_B, unitarity)
    assert float(np.abs(A_rec.imag).max()) < 1e-10 * np.abs(A).max()


@pytest.mark.parametrize("N", [8, 64])
def test_half_form_is_the_conjugate_symmetric_half(N):
    full = dplr("legs", N, conj_sym=False, B_clip=None)
    half = dplr("legs", N, conj_sym=True, B_clip=None)
    h = N // 2
    np.testing.assert_array_equal(half.Lambda, full.Lambda[:h])
    np.testing.assert_allclose(full.Lambda[h:], full.Lambda[:h].conj())
    np.testing.assert_allclose(full.V[:, h:], full.V[:, :h].conj())
    np.testing.assert_allclose(full.B[h:], full.B[:h].conj(), atol=1e-12)
    np.testing.assert_allclose(full.P[:, h:], full.P[:, :h].conj(), atol=1e-12)
    # normal part from the half form: S = 2 Re(V_h diag(Lambda_h) V_h^*)
    _, _, _, S = nplr("legs", N)
    S_rec = 2 * np.real(half.V @ np.diag(half.Lambda) @ half.V.conj().T)
    np.testing.assert_allclose(S_rec, S, atol=1e-10 * np.abs(S).max())
    assert np.all(half.Lambda.imag < 0)


@pytest.mark.parametrize("N", [16, 64, 256])
def test_legs_spectrum_invariants(N):
    """S4D-LegS eigenvalues: Re = -1/2 exactly and max |Im| ~ N^2 / pi (1303 at N = 64)."""
    d = dplr("legs", N)
    np.testing.assert_allclose(d.Lambda.real, -0.5, atol=1e-12)
    ratio = np.abs(d.Lambda.imag).max() / (N**2 / np.pi)
    assert 0.99 < ratio <= 1.0, ratio


def test_b_clip_only_touches_the_imaginary_part():
    raw = dplr("legs", 64, B_clip=None).B
    clipped = dplr("legs", 64, B_clip=2.0).B
    np.testing.assert_array_equal(clipped.real, raw.real)
    np.testing.assert_array_equal(clipped.imag, np.clip(raw.imag, -2, 2))
    assert np.abs(raw.imag).max() > 2  # the clip is active at N = 64


def test_rank_correction_shapes():
    assert rank_correction("legs", 5).shape == (1, 5)
    assert rank_correction("legt", 6).shape == (2, 6)
    np.testing.assert_allclose(rank_correction("legs", 3)[0], np.sqrt([0.5, 1.5, 2.5]))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: dplr("legs", 7), "must be even"),
        (lambda: hippo_matrices("fourier", 4), "unknown HiPPO measure"),
        (lambda: nplr("legs", 0), "positive integer"),
    ],
)
def test_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
