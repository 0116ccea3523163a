"""S4 (DPLR) against naive oracles: dense powered kernel, dense recurrence, direct convolution sums."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from ssm_test_oracles import check_layer_grads, input_jacobian, normal_input, recurrent_output

from lax_models.ssm import SSMParam
from lax_models.ssm.common import ssm_convolution
from lax_models.ssm.hippo import dplr
from lax_models.ssm.s4 import (
    S4,
    dplr_c_from_c_tilde,
    dplr_c_tilde,
    dplr_kernel,
    dplr_step,
)


# ----------------------------------------------------------------------------------------------
# Naive float64 NumPy oracle over the full (conjugate-augmented) state
# ----------------------------------------------------------------------------------------------
def _random_dplr(H: int, N: int, seed: int):
    """HiPPO-LegS DPLR half-form parameters plus random complex noise (a generic DPLR system)."""
    rng = np.random.default_rng(seed)
    d = dplr("legs", N)
    noise = lambda scale: scale * (rng.standard_normal((H, N // 2)) + 1j * rng.standard_normal((H, N // 2)))  # noqa: E731
    Lambda = d.Lambda + noise(0.1)
    P = d.P[0] + noise(0.1)
    B = d.B + noise(0.1)
    C = noise(1.0)
    return Lambda, P, B, C


def _naive_discrete(Lambda, P, B, dt):
    """Dense full-state bilinear discretisation, one channel: A_bar (N, N), B_bar (N,)."""
    lam, p, b = (np.concatenate([v, v.conj()]) for v in (Lambda, P, B))
    N = lam.size
    A = np.diag(lam) - np.outer(p, p.conj())
    inv = np.linalg.inv(np.eye(N) - dt / 2 * A)
    return inv @ (np.eye(N) + dt / 2 * A), inv @ (dt * b)


def _naive_kernel(Lambda, P, B, C, dt, L):
    """K_l = C A_bar^l B_bar by explicit powers (real, since the full system is conjugate-symmetric)."""
    A_bar, B_bar = _naive_discrete(Lambda, P, B, dt)
    c = np.concatenate([C, C.conj()])
    out, v = [], B_bar
    for _ in range(L):
        out.append(c @ v)
        v = A_bar @ v
    out = np.array(out)
    assert np.abs(out.imag).max() < 1e-10 * np.abs(out).max()
    return out.real


@pytest.mark.parametrize("L", [16, 15])
def test_generating_function_kernel_matches_naive_powers(L):
    """Cauchy + Woodbury kernel from C~ == C A_bar^l B_bar (N=8, float64, three step sizes)."""
    H, N = 3, 8
    Lambda, P, B, C = _random_dplr(H, N, seed=L)
    dt = np.array([1e-3, 0.1, 0.7])
    naive = np.stack([_naive_kernel(Lambda[h], P[h], B[h], C[h], dt[h], L) for h in range(H)])
    # C~ = C (I - A_bar^L), computed here independently of the code under test
    C_tilde = []
    for h in range(H):
        A_bar, _ = _naive_discrete(Lambda[h], P[h], B[h], dt[h])
        c = np.concatenate([C[h], C[h].conj()])
        C_tilde.append((c @ (np.eye(N) - np.linalg.matrix_power(A_bar, L)))[: N // 2])
    C_tilde = np.stack(C_tilde)
    with jax.enable_x64(True):
        K = np.asarray(dplr_kernel(*map(jnp.asarray, (Lambda, P, B, C_tilde, dt)), L))
        Ct = np.asarray(dplr_c_tilde(*map(jnp.asarray, (C, Lambda, P, dt)), L))
        C_back = np.asarray(dplr_c_from_c_tilde(*map(jnp.asarray, (C_tilde, Lambda, P, dt)), L))
    err = np.abs(K - naive).max() / np.abs(naive).max()
    assert err < 1e-10, err
    np.testing.assert_allclose(Ct, C_tilde, rtol=0, atol=1e-10 * np.abs(C_tilde).max())
    np.testing.assert_allclose(C_back, C, rtol=0, atol=1e-9 * np.abs(C).max())


def test_dplr_step_matches_dense_recurrence():
    """The O(N) Woodbury step == A_bar x + B_bar u with the dense matrices (float64, 5 steps)."""
    H, N, batch = 2, 8, 3
    Lambda, P, B, _ = _random_dplr(H, N, seed=1)
    dt = np.array([0.05, 0.3])
    u = np.random.default_rng(2).standard_normal((5, batch, H))
    x_ref = np.zeros((batch, H, N), dtype=complex)
    with jax.enable_x64(True):
        x = jnp.zeros((batch, H, N // 2), dtype=jnp.complex128)
        for t in range(5):
            x = dplr_step(*map(jnp.asarray, (Lambda, P, B, dt)), x, jnp.asarray(u[t]))
            for h in range(H):
                A_bar, B_bar = _naive_discrete(Lambda[h], P[h], B[h], dt[h])
                x_ref[:, h] = x_ref[:, h] @ A_bar.T + u[t, :, h, None] * B_bar
    np.testing.assert_allclose(np.asarray(x), x_ref[..., : N // 2], atol=1e-12 * np.abs(x_ref).max())
    np.testing.assert_allclose(x_ref[..., N // 2 :], x_ref[..., : N // 2].conj(), atol=1e-12)


# ----------------------------------------------------------------------------------------------
# FFT convolution against direct sums
# ----------------------------------------------------------------------------------------------
def test_ssm_convolution_matches_direct_sums():
    rng = np.random.default_rng(0)
    batch, L, H = 2, 7, 3
    u = rng.standard_normal((batch, L, H))
    k = rng.standard_normal((2, H, L))
    D = rng.standard_normal(H)
    causal = np.zeros((batch, L, H))
    bidir = np.zeros((batch, L, H))
    for i in range(L):
        for j in range(L):
            if j <= i:
                causal[:, i] += k[0, :, i - j] * u[:, j]
            if j >= i:
                bidir[:, i] += k[1, :, j - i] * u[:, j]
    bidir += causal
    with jax.enable_x64(True):
        y_c = np.asarray(ssm_convolution(jnp.asarray(u), jnp.asarray(k[0]), jnp.asarray(D)))
        y_b = np.asarray(ssm_convolution(jnp.asarray(u), jnp.asarray(k), jnp.asarray(D)))
    np.testing.assert_allclose(y_c, causal + u * D, atol=1e-12)
    np.testing.assert_allclose(y_b, bidir + u * D, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# The layer
# ----------------------------------------------------------------------------------------------
# one shape for the layer tests (H channels, state N, length L) so that compiled code is reused
H, N, L = 3, 8, 16


@pytest.mark.parametrize("l_max", [None, 24])
def test_convolution_equals_recurrence_float32(l_max):
    """CNN == RNN in float32: max |y_conv - y_rnn| <= 1e-4 max |y| (measured ~4e-6)."""
    model = S4(H, d_state=N, l_max=l_max, rngs=nnx.Rngs(0))
    x = normal_input(1, (2, L, H))
    y = model(x)
    assert y.shape == x.shape and y.dtype == jnp.float32
    err = float(jnp.abs(y - recurrent_output(model, x)).max() / jnp.abs(y).max())
    assert err < 1e-4, err


def test_convolution_equals_recurrence_float64():
    """CNN == RNN in float64 to 1e-10 (C~ parametrisation: step converts C~ back to C)."""
    with jax.enable_x64(True):
        model = S4(H, d_state=N, l_max=24, dt_min=0.01, dt_max=0.5, param_dtype=jnp.float64,
                   rngs=nnx.Rngs(3))
        x = normal_input(4, (2, L, H), jnp.float64)
        err = float(jnp.abs(model(x) - recurrent_output(model, x)).max())
    assert err < 1e-10, err


def test_causal_and_bidirectional_jacobians():
    """d y_i / d x_j == 0 for j > i (causal); the bidirectional layer depends on the future."""
    with jax.enable_x64(True):
        x = normal_input(0, (1, L, H), jnp.float64)
        kw = dict(d_state=N, l_max=L, dt_min=0.05, dt_max=0.5, param_dtype=jnp.float64)
        J = np.asarray(input_jacobian(S4(H, rngs=nnx.Rngs(0), **kw), x))  # (L, L, H)
        Jb = np.asarray(input_jacobian(S4(H, bidirectional=True, rngs=nnx.Rngs(0), **kw), x))
    future = np.triu(np.ones((L, L), bool), k=1)[..., None].repeat(H, -1)
    assert np.abs(J[future]).max() < 1e-12 * np.abs(J).max()
    assert np.abs(J[~future]).max() > 0.1
    assert np.abs(Jb[future]).max() > 1e-3 * np.abs(Jb).max()


@pytest.mark.parametrize("l_max", [None, 8])
def test_gradients_float64(l_max):
    with jax.enable_x64(True):
        # the layer shape of the other tests (its initialiser compiles once); a short input
        model = S4(H, d_state=N, l_max=l_max, dt_min=0.05, dt_max=0.5, param_dtype=jnp.float64,
                   rngs=nnx.Rngs(0))
        x = normal_input(1, (1, 6, H), jnp.float64)
        check_layer_grads(model, x)


def test_parameters_and_init():
    model = S4(H, d_state=N, bidirectional=True, rngs=nnx.Rngs(0))
    ssm = nnx.state(model, SSMParam)
    assert set(ssm.keys()) == {"log_dt", "Lambda_re_log", "Lambda_im", "P", "B"}
    assert not isinstance(model.D, SSMParam) and isinstance(model.D, nnx.Param)
    assert model.C[...].shape == (2, 3, 4, 2) and model.P[...].shape == (3, 4, 2)
    Lambda, P, B, C, dt = model.ssm_parameters()
    ref = dplr("legs", 8, B_clip=2.0)
    np.testing.assert_allclose(np.asarray(Lambda[1]), ref.Lambda, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(P[2]), ref.P[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(B[0]), ref.B, rtol=1e-5, atol=1e-6)
    assert np.all((np.asarray(dt) >= 1e-3) & (np.asarray(dt) < 1e-1))


@pytest.mark.parametrize(
    "make, call, message",
    [
        (lambda: S4(3, d_state=8, rngs=nnx.Rngs(0)), lambda m: m(jnp.zeros((4, 3))), "rank 3"),
        (lambda: S4(3, d_state=8, rngs=nnx.Rngs(0)), lambda m: m(jnp.zeros((1, 4, 2))), "d_model=3"),
        (lambda: S4(3, d_state=8, l_max=8, rngs=nnx.Rngs(0)), lambda m: m(jnp.zeros((1, 9, 3))), "l_max=8"),
        (lambda: S4(3, d_state=8, bidirectional=True, rngs=nnx.Rngs(0)), lambda m: m.init_state(1), "not causal"),
        (lambda: S4(3, d_state=7, rngs=nnx.Rngs(0)), None, "even"),
        (lambda: S4(3, dt_min=0.1, dt_max=0.01, rngs=nnx.Rngs(0)), None, "dt_min"),
    ],
)
def test_errors(make, call, message):
    with pytest.raises(ValueError, match=message):
        model = make()
        call(model)
