"""Burgers data: the solver against the Cole-Hopf exact solution, its order in dt, the GRF1 field's
spectrum, and the generator. The cached field dataset: tests/experiments/data/test_burgers_dataset.py."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from operators.pde.burgers import BurgersGenerator, cole_hopf, grf1_periodic, solve_burgers


def _u0(resolution, seed=0, n=2):
    return grf1_periodic(np.random.default_rng(seed), n, resolution)


@pytest.mark.parametrize("resolution", [256, 1024, 8192])
def test_matches_cole_hopf_in_float64(resolution):
    u0 = _u0(resolution)
    with jax.enable_x64(True):
        u = np.asarray(solve_burgers(jnp.asarray(u0), nu=0.1, t_final=1.0, n_steps=1000))
    exact = cole_hopf(u0, 0.1, 1.0)
    assert np.linalg.norm(u - exact) / np.linalg.norm(exact) < 1e-6


def test_cole_hopf_at_a_shock_forming_viscosity_and_a_short_time():
    """nu = 0.01 up to t = 0.1 (steep fronts, far from the linear heat flow) on 1024 points."""
    u0 = _u0(1024, seed=3)
    with jax.enable_x64(True):
        u = np.asarray(solve_burgers(jnp.asarray(u0), nu=0.01, t_final=0.1, n_steps=400))
    exact = cole_hopf(u0, 0.01, 0.1)
    assert np.linalg.norm(u - exact) / np.linalg.norm(exact) < 1e-6
    assert np.linalg.norm(exact - u0) > 0.01 * np.linalg.norm(u0)  # the solution did move


def test_error_falls_towards_fourth_order_in_dt():
    """ETDRK4 on a stiff problem: the observed order climbs to 4 as dt falls (measured 2.3, 3.0, 3.5)."""
    u0 = _u0(64, seed=1, n=1)
    exact = cole_hopf(u0, 0.1, 1.0)
    with jax.enable_x64(True):
        errs = [np.linalg.norm(np.asarray(solve_burgers(jnp.asarray(u0), 0.1, 1.0, n)) - exact)
                for n in (20, 40, 80, 160)]
    rates = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(np.diff(rates) > 0) and rates[-1] > 3.2, (errs, rates)


def test_grf1_field_has_the_documented_spectrum():
    n, K = 4000, 64
    u0 = grf1_periodic(np.random.default_rng(0), n, K, sigma=25.0, tau=5.0, gamma=2.0)
    coeff = np.fft.rfft(u0, axis=-1) / (K / 2)            # alpha_k - i beta_k for 1 <= k < K/2
    k = np.arange(1, K // 2)
    lam = np.sqrt(2) * 25.0 * ((2 * np.pi * k) ** 2 + 25.0) ** -1.0
    var = np.mean(np.abs(coeff[:, 1:K // 2]) ** 2, axis=0) / 2  # per real part
    np.testing.assert_allclose(var, lam ** 2, rtol=0.1)
    assert np.abs(np.mean(u0)) < 1e-12  # no mean mode


def test_generator_draws_from_the_given_stream_and_checks_its_settings():
    generator = BurgersGenerator(128, n_steps=100)
    data = generator.generate(np.random.default_rng(7), 3, progress=False)
    assert data["u0"].shape == data["u"].shape == (3, 128) and data["u"].dtype == np.float32
    np.testing.assert_array_equal(data["u0"], grf1_periodic(np.random.default_rng(7), 3, 128).astype(np.float32))
    np.testing.assert_allclose(data["u"], cole_hopf(data["u0"].astype(np.float64), 0.1, 1.0), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="even number of points"):
        BurgersGenerator(101)
    with pytest.raises(ValueError, match="nu > 0"):
        BurgersGenerator(128, nu=0.0)
