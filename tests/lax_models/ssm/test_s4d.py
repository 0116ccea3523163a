"""S4D against naive oracles: quadrature ZOH, explicit powers, the diagonal recurrence."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from ssm_test_oracles import check_layer_grads, input_jacobian, normal_input, recurrent_output

from lax_models.ssm import SSMParam
from lax_models.ssm.hippo import dplr
from lax_models.ssm.s4d import S4D, discretize_diagonal, s4d_init, vandermonde_kernel

H, N, L = 3, 8, 16  # one shape for the layer tests so that compiled code is reused


def _random_diagonal(seed: int, n: int = 4):
    rng = np.random.default_rng(seed)
    Lambda = -rng.uniform(0.1, 1.0, (H, n)) + 1j * rng.uniform(-5, 5, (H, n))
    B = rng.standard_normal((H, n)) + 1j * rng.standard_normal((H, n))
    C = rng.standard_normal((H, n)) + 1j * rng.standard_normal((H, n))
    dt = np.array([1e-3, 0.1, 0.5])
    return Lambda, B, C, dt


def test_zoh_matches_quadrature_and_bilinear_matches_closed_form():
    """ZOH: Lambda_bar = e^{dt Lambda}, B_bar = int_0^dt e^{Lambda s} ds B (Simpson); bilinear: closed form."""
    Lambda, B, _, dt = _random_diagonal(0)
    s = np.linspace(0.0, 1.0, 2001)[:, None, None] * dt[:, None]  # (2001, H, 1) nodes on [0, dt]
    w = np.ones(2001)
    w[1:-1:2], w[2:-1:2] = 4, 2
    integral = np.tensordot(w, np.exp(Lambda * s), axes=1) * (dt[:, None] / 2000 / 3)  # (H, n)
    with jax.enable_x64(True):
        _, Lb, Bb = map(np.asarray, discretize_diagonal(jnp.asarray(Lambda), jnp.asarray(B), jnp.asarray(dt), "zoh"))
        _, Lb2, Bb2 = map(np.asarray, discretize_diagonal(jnp.asarray(Lambda), jnp.asarray(B), jnp.asarray(dt), "bilinear"))
    np.testing.assert_allclose(Lb, np.exp(dt[:, None] * Lambda), rtol=1e-14)
    np.testing.assert_allclose(Bb, integral * B, rtol=1e-10)
    z = dt[:, None] * Lambda / 2
    np.testing.assert_allclose(Lb2, (1 + z) / (1 - z), rtol=1e-14)
    np.testing.assert_allclose(Bb2, dt[:, None] / (1 - z) * B, rtol=1e-14)


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_vandermonde_kernel_matches_powers_and_recurrence(method):
    """K_l = 2 Re sum C B_bar Lambda_bar^l by explicit powers == impulse response of the recurrence."""
    Lambda, B, C, dt = _random_diagonal(1)
    with jax.enable_x64(True):
        logLb, Lb, Bb = discretize_diagonal(jnp.asarray(Lambda), jnp.asarray(B), jnp.asarray(dt), method)
        K = np.asarray(vandermonde_kernel(logLb, Bb, jnp.asarray(C), L))
    Lb, Bb = np.asarray(Lb), np.asarray(Bb)
    powers = np.stack([Lb**l for l in range(L)], axis=-1)  # (H, n, L) by explicit powers
    naive = 2 * np.real(np.einsum("hn,hnl->hl", C * Bb, powers))
    np.testing.assert_allclose(K, naive, atol=1e-12 * np.abs(naive).max())
    # the recurrence x_k = Lambda_bar x_{k-1} + B_bar u_k, y_k = 2 Re(C x_k), driven by a unit impulse
    x, impulse = np.zeros_like(Bb), []
    for t in range(L):
        x = Lb * x + Bb * (t == 0)
        impulse.append(2 * np.real(np.sum(C * x, axis=-1)))
    np.testing.assert_allclose(K, np.stack(impulse, -1), atol=1e-12 * np.abs(naive).max())


def test_inits():
    n = np.arange(N // 2)
    lam, b = s4d_init("lin", N)
    np.testing.assert_allclose(lam, -0.5 - 1j * np.pi * n)
    np.testing.assert_array_equal(b, 1)
    lam, _ = s4d_init("inv", N)
    np.testing.assert_allclose(lam, -0.5 - 1j * N / np.pi * (N / (2 * n + 1) - 1))
    lam, b = s4d_init("legs", 64)
    ref = dplr("legs", 64, B_clip=2.0)
    np.testing.assert_array_equal(lam, ref.Lambda)
    np.testing.assert_array_equal(b, ref.B)
    np.testing.assert_allclose(lam.real, -0.5)
    assert 0.99 < np.abs(lam.imag).max() / (64**2 / np.pi) <= 1


@pytest.mark.parametrize("init", ["lin", "inv", "legs"])
@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_convolution_equals_recurrence_float32(init, discretization):
    """CNN == RNN in float32: max |y_conv - y_rnn| <= 1e-4 max |y| (measured <= 1e-6)."""
    model = S4D(H, d_state=N, init=init, discretization=discretization, rngs=nnx.Rngs(0))
    x = normal_input(1, (2, L, H))
    y = model(x)
    assert y.shape == x.shape and y.dtype == jnp.float32
    err = float(jnp.abs(y - recurrent_output(model, x)).max() / jnp.abs(y).max())
    assert err < 1e-4, err


def test_causal_and_bidirectional_jacobians():
    with jax.enable_x64(True):
        x = normal_input(0, (1, L, H), jnp.float64)
        kw = dict(d_state=N, dt_min=0.05, dt_max=0.5, param_dtype=jnp.float64)
        J = np.asarray(input_jacobian(S4D(H, rngs=nnx.Rngs(0), **kw), x))  # (L, L, H)
        Jb = np.asarray(input_jacobian(S4D(H, bidirectional=True, rngs=nnx.Rngs(0), **kw), x))
    future = np.triu(np.ones((L, L), bool), k=1)[..., None].repeat(H, -1)
    assert np.abs(J[future]).max() < 1e-12 * np.abs(J).max()
    assert np.abs(J[~future]).max() > 0.1
    assert np.abs(Jb[future]).max() > 1e-3 * np.abs(Jb).max()


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_gradients_float64(discretization):
    with jax.enable_x64(True):
        model = S4D(2, d_state=4, discretization=discretization, dt_min=0.05, dt_max=0.5,
                    param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        x = normal_input(1, (1, 6, 2), jnp.float64)
        check_layer_grads(model, x)


def test_parameters_and_l_max_is_ignored():
    model = S4D(H, d_state=N, l_max=4, bidirectional=True, rngs=nnx.Rngs(0))
    assert set(nnx.state(model, SSMParam).keys()) == {"log_dt", "Lambda_re_log", "Lambda_im", "B"}
    assert isinstance(model.D, nnx.Param) and not isinstance(model.D, SSMParam)
    assert model.C[...].shape == (2, H, N // 2, 2) and model.B[...].shape == (H, N // 2, 2)
    assert model(jnp.ones((1, L, H))).shape == (1, L, H)  # longer than l_max: the kernel is per call


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: S4D(3, d_state=8, init="hippo", rngs=nnx.Rngs(0)), "unknown S4D init"),
        (lambda: S4D(3, d_state=8, discretization="euler", rngs=nnx.Rngs(0)), "unknown discretization"),
        (lambda: S4D(3, d_state=5, rngs=nnx.Rngs(0)), "even"),
        (lambda: S4D(3, d_state=8, rngs=nnx.Rngs(0))(jnp.zeros((2, 3))), "rank 3"),
        (lambda: S4D(3, d_state=8, rngs=nnx.Rngs(0)).step(jnp.zeros((1, 3, 4)), jnp.zeros((1, 2))), "x_t"),
    ],
)
def test_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()
