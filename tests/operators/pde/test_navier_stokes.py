"""Navier-Stokes data: Taylor-Green decay, a step-for-step transcription of the original ns_2d.py update,
the GRF's Fourier variances, the 2/3 mask, gradients against finite differences, and the generator
(determinism by seed, sample i independent of n and of the batch size). The cached dataset (cache,
striding, clear errors): tests/experiments/data/test_navier_stokes_dataset.py."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from operators.pde.navier_stokes import (
    NavierStokesGenerator,
    dealias_mask,
    grf_sqrt_eig,
    navier_stokes_2d,
    navier_stokes_forcing,
    navier_stokes_grf,
    snapshot_times,
)


# One compilation per call (grid, horizon, step and records); eagerly every set-up operation compiles
# on its own. nu stays an argument (traced).
_solve = jax.jit(navier_stokes_2d, static_argnums=(3, 4, 5))


def _grid(K):
    x = np.arange(K) / K
    return np.meshgrid(x, x, indexing="ij")


def naive_ns_2d(w0, f, visc, T, delta_t, record_steps):
    """The original update written out with full complex FFTs and a Python loop over steps (float64)."""
    N = w0.shape[-1]
    k_max = N // 2
    steps = math.ceil(T / delta_t)
    record_time = steps // record_steps
    k = np.concatenate([np.arange(0, k_max), np.arange(-k_max, 0)])
    k_y = np.tile(k, (N, 1))                       # varies along axis 1
    k_x = k_y.T                                    # varies along axis 0
    lap = 4 * np.pi ** 2 * (k_x ** 2 + k_y ** 2)
    lap[0, 0] = 1.0
    dealias = ((np.abs(k_y) <= (2.0 / 3.0) * k_max) & (np.abs(k_x) <= (2.0 / 3.0) * k_max)).astype(float)
    w_h, f_h = np.fft.fft2(w0), np.fft.fft2(f)
    sol, c = [], 0
    for j in range(steps):
        psi_h = w_h / lap
        q = np.fft.ifft2(2 * np.pi * k_y * 1j * psi_h).real
        v = np.fft.ifft2(-2 * np.pi * k_x * 1j * psi_h).real
        w_x = np.fft.ifft2(2 * np.pi * k_x * 1j * w_h).real
        w_y = np.fft.ifft2(2 * np.pi * k_y * 1j * w_h).real
        F_h = dealias * np.fft.fft2(q * w_x + v * w_y)
        w_h = (-delta_t * F_h + delta_t * f_h + (1.0 - 0.5 * delta_t * visc * lap) * w_h) / (
            1.0 + 0.5 * delta_t * visc * lap)
        if (j + 1) % record_time == 0 and c < record_steps:
            sol.append(np.fft.ifft2(w_h).real)
            c += 1
    return np.stack(sol)


@pytest.mark.parametrize("K,modes", [(16, [(1, 1, 1.0)]), (32, [(3, 4, 1.0), (5, 0, 0.5), (4, -3, 0.3)])])
def test_taylor_green_decays_at_the_viscous_rate(K, modes):
    """A sum of Laplacian eigenfunctions on one shell |k|^2: u.grad(w) = 0, so without forcing
    w(t) = w0 exp(-nu (2 pi)^2 |k|^2 t); the scheme gives Crank-Nicolson's factor per step exactly."""
    X, Y = _grid(K)
    w0 = sum(a * np.cos(2 * np.pi * (kx * X + ky * Y)) for kx, ky, a in modes)
    k2 = modes[0][0] ** 2 + modes[0][1] ** 2
    nu, dt, T, R = 0.01, 1e-3, 0.5, 5
    with jax.enable_x64(True):
        w = np.asarray(_solve(w0, np.zeros((K, K)), nu, T, dt, R))
    x = dt * nu * 4 * np.pi ** 2 * k2
    n = np.arange(1, R + 1) * 100                                       # steps at each snapshot
    cn = ((1 - x / 2) / (1 + x / 2)) ** n
    np.testing.assert_allclose(w, cn[:, None, None] * w0, rtol=0, atol=1e-13)
    exact = np.exp(-nu * 4 * np.pi ** 2 * k2 * snapshot_times(T, dt, R))
    cn_error = n * x ** 3 / 12 * exact                                  # Crank-Nicolson's O(dt^2) bound
    err = np.abs(w - exact[:, None, None] * w0).max(axis=(1, 2)) / np.abs(w0).max()
    assert np.all(err <= 1.05 * cn_error), (err, cn_error)
    assert np.all(cn_error < 2e-5)


def test_matches_the_original_update_step_for_step():
    """Random rough field (Nyquist content included) with the benchmark's forcing, every step recorded,
    and the floor(steps / record_steps) recording (7 steps, 2 records: steps 3 and 6)."""
    K, nu, dt = 16, 1e-3, 2.0 ** -5
    rng = np.random.default_rng(0)
    w0 = 3 * rng.standard_normal((K, K))
    f = navier_stokes_forcing(K)
    with jax.enable_x64(True):
        w = np.asarray(_solve(w0, f, nu, 6 * dt, dt, 6))
        w_rec = np.asarray(_solve(w0, f, nu, 7 * dt, dt, 2))
    ref = naive_ns_2d(w0, f, nu, 6 * dt, dt, 6)
    np.testing.assert_allclose(w, ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    np.testing.assert_allclose(w_rec, naive_ns_2d(w0, f, nu, 7 * dt, dt, 2), rtol=0, atol=1e-12 * np.abs(ref).max())
    np.testing.assert_allclose(w_rec, ref[[2, 5]], rtol=0, atol=1e-12 * np.abs(ref).max())
    # the advection matters here: the linear part alone (Crank-Nicolson + forcing) is far from the solution
    k = np.fft.fftfreq(K, 1 / K)
    lap = 4 * np.pi ** 2 * (k[:, None] ** 2 + k[None, :] ** 2)
    lap[0, 0] = 1.0
    w_h = np.fft.fft2(w0)
    for _ in range(6):
        w_h = (dt * np.fft.fft2(f) + (1 - 0.5 * dt * nu * lap) * w_h) / (1 + 0.5 * dt * nu * lap)
    assert np.abs(np.fft.ifft2(w_h).real - w[-1]).max() > 0.1 * np.abs(w0).max()


def test_float32_solve_tracks_float64():
    K = 16
    w0 = navier_stokes_grf(np.random.default_rng(1), 1, K)[0]
    f = navier_stokes_forcing(K)
    w32 = np.asarray(_solve(w0.astype(np.float32), f.astype(np.float32), 1e-3, 0.2, 0.01, 2))
    assert w32.dtype == np.float32
    np.testing.assert_allclose(w32, naive_ns_2d(w0, f, 1e-3, 0.2, 0.01, 2), rtol=0, atol=1e-5 * np.abs(w0).max())


def test_grf_fourier_variances_match_the_normalisation():
    """E|fft2(w0)_k|^2 = sqrt_eig_k^2 / 2 with sqrt_eig = K^2 sqrt(2) 7^1.5 (4 pi^2 |k|^2 + 49)^-1.25."""
    n, K = 2000, 16
    w0 = navier_stokes_grf(np.random.default_rng(0), n, K)
    power = np.mean(np.abs(np.fft.fft2(w0)) ** 2, axis=0)                    # (K, K)
    k = np.fft.fftfreq(K, 1 / K)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    expected = (K ** 2 * math.sqrt(2) * 7 ** 1.5 * (4 * np.pi ** 2 * k2 + 49) ** -1.25) ** 2 / 2
    expected[0, 0] = 0.0
    np.testing.assert_allclose(grf_sqrt_eig(K) ** 2 / 2, expected, rtol=1e-12)
    ratio = power.ravel()[1:] / expected.ravel()[1:]
    assert abs(ratio.mean() - 1) < 0.01 and np.all(np.abs(ratio - 1) < 0.2), (ratio.mean(), ratio.min(), ratio.max())
    assert np.max(np.abs(w0.mean(axis=(1, 2)))) < 1e-12                       # no mean mode
    # pointwise variance: 7^3 * sum_k (4 pi^2 |k|^2 + 49)^-2.5 over k != 0
    var = 7 ** 3 * np.sum(np.where(k2 > 0, (4 * np.pi ** 2 * k2 + 49.0) ** -2.5, 0))
    assert abs(w0.var() / var - 1) < 0.03


def test_dealias_mask_is_the_two_thirds_rule_and_is_applied():
    m = dealias_mask(12)                                  # k_max = 6: keep |k| <= 4 (boundary included)
    k = np.fft.fftfreq(12, 1 / 12)
    np.testing.assert_array_equal(m, (np.abs(k)[:, None] <= 4) & (np.abs(k)[None, :] <= 4))
    assert m.sum() == 9 * 9 and dealias_mask(16).sum() == 11 * 11 and dealias_mask(256).sum() == 171 ** 2
    # recover the nonlinear term of one step from the solver's output: zero outside the mask only
    K, dt, nu = 12, 0.01, 0.0
    w0 = np.random.default_rng(2).standard_normal((K, K))
    with jax.enable_x64(True):
        w1 = np.asarray(_solve(w0, np.zeros((K, K)), nu, dt, dt, 1))[0]
    F_h = (np.fft.fft2(w1) - np.fft.fft2(w0)) / -dt
    assert np.abs(F_h[~m]).max() < 1e-10 * np.abs(F_h).max()
    assert np.abs(F_h[m]).mean() > 0.01 * np.abs(np.fft.fft2(w0)).mean()


def test_gradient_matches_finite_differences():
    """jax.grad in w0 (a random direction) and in nu against central differences, float64, 8^2, 4 steps."""
    K, dt, nu = 8, 0.02, 1e-2
    rng = np.random.default_rng(3)
    w0, weights, direction = (rng.standard_normal((K, K)) for _ in range(3))
    f = navier_stokes_forcing(K)
    with jax.enable_x64(True):
        def loss(w, nu):
            snapshots = navier_stokes_2d(w, jnp.asarray(f), nu, 4 * dt, dt, 2)      # (2, K, K)
            return jnp.sum(jnp.asarray(weights) * snapshots[-1] ** 2) + jnp.sum(snapshots[0])
        # one compilation: the gradient at (w0, nu), the values at the shifted points
        value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        value = lambda w, nu: float(value_and_grad(w, nu)[0])  # noqa: E731
        g_w, g_nu = value_and_grad(w0, nu)[1]
        eps = 1e-6
        fd_w = (value(w0 + eps * direction, nu) - value(w0 - eps * direction, nu)) / (2 * eps)
        fd_nu = (value(w0, nu + eps) - value(w0, nu - eps)) / (2 * eps)
    assert abs(float(fd_w)) > 1.0 and abs(float(fd_nu)) > 1e-3
    np.testing.assert_allclose(float(np.sum(np.asarray(g_w) * direction)), float(fd_w), rtol=1e-7)
    np.testing.assert_allclose(float(g_nu), float(fd_nu), rtol=1e-6)


SMALL = dict(resolution=16, store_resolution=8, nu=1e-3, t_final=2, dt=0.01)


def generate_navier_stokes(n_samples, seed, batch_size, **settings):
    """n samples of the SMALL setting from the stream np.random.default_rng(seed)."""
    return NavierStokesGenerator(**{**SMALL, **settings}).generate(np.random.default_rng(seed), n_samples,
                                                                   batch_size=batch_size, progress=False)


def test_generator_is_deterministic_independent_of_n_and_batch_and_equals_the_solver():
    a = generate_navier_stokes(3, seed=5, batch_size=2)
    b = generate_navier_stokes(2, seed=5, batch_size=1)
    assert a["w0"].shape == (3, 8, 8) and a["w"].shape == (3, 8, 8, 2) and a["w"].dtype == np.float32
    np.testing.assert_array_equal(a["w0"][:2], b["w0"])
    np.testing.assert_allclose(a["w"][:2], b["w"], rtol=0, atol=1e-5 * np.abs(a["w"]).max())
    c = generate_navier_stokes(2, seed=6, batch_size=2)
    assert not np.allclose(c["w0"], b["w0"])
    # the stored data is the solver's output at t = 1, 2, strided from the 16^2 grid
    w0_full = navier_stokes_grf(np.random.default_rng(5), 3, 16)
    np.testing.assert_allclose(a["w0"], w0_full[:, ::2, ::2], rtol=1e-6, atol=1e-6)
    f = navier_stokes_forcing(16).astype(np.float32)
    direct = np.asarray(_solve(w0_full[2].astype(np.float32), f, 1e-3, 2, 0.01, 2))
    np.testing.assert_allclose(a["w"][2], direct[:, ::2, ::2].transpose(1, 2, 0), rtol=0,
                               atol=1e-5 * np.abs(direct).max())
    # a float64 solve: the float64 solver's output, rounded to float32 for storage
    d = generate_navier_stokes(1, seed=5, batch_size=1, precision="float64")
    assert d["w"].dtype == d["w0"].dtype == np.float32
    with jax.enable_x64(True):
        direct64 = np.asarray(_solve(w0_full[0], navier_stokes_forcing(16), 1e-3, 2, 0.01, 2))
    np.testing.assert_allclose(d["w"][0], direct64[:, ::2, ::2].transpose(1, 2, 0), rtol=0,
                               atol=1e-7 * np.abs(direct64).max())                # float32 rounding only
    with pytest.raises(ValueError, match="precision='float16' is unknown"):
        NavierStokesGenerator(**SMALL, precision="float16")


def test_solver_takes_one_square_field():
    with pytest.raises(ValueError, match=r"one square \(K, K\) field"):
        navier_stokes_2d(jnp.zeros((2, 8, 8)), jnp.zeros((8, 8)), 1e-3, 1.0, 0.1)
