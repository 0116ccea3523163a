"""Relative L^p and H^1 losses against naive numpy and analytic values."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from operators import relative_h1, relative_lp
from operators.losses import finite_difference_gradient

# Whole-function jit: one compile per shape instead of one per primitive in eager mode (faster tests).
_h1 = jax.jit(relative_h1, static_argnames=("spacing", "periodic", "reduction"))


def _samples(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Batch of 4 samples (4, 8, 6, 2) whose targets have very different norms."""
    rng = np.random.default_rng(seed)
    scales = np.array([1.0, 10.0, 0.1, 100.0])[:, None, None, None]
    target = rng.standard_normal((4, 8, 6, 2)) * scales
    pred = target + rng.standard_normal((4, 8, 6, 2)) * np.array([0.5, 0.1, 0.3, 2.0])[:, None, None, None]
    return pred, target


@pytest.mark.parametrize("p", [1, 2, 3])
def test_relative_lp_matches_naive(p):
    pred, target = _samples()
    per_sample = np.array(
        [np.sum(np.abs(pr - t) ** p) ** (1 / p) / np.sum(np.abs(t) ** p) ** (1 / p) for pr, t in zip(pred, target)]
    )
    pooled = np.sum(np.abs(pred - target) ** p) ** (1 / p) / np.sum(np.abs(target) ** p) ** (1 / p)
    assert abs(per_sample.mean() - pooled) > 0.1 * per_sample.mean()  # the data tell the two apart
    with jax.enable_x64(True):
        got = relative_lp(jnp.asarray(pred), jnp.asarray(target), p=p)
        got_none = relative_lp(jnp.asarray(pred), jnp.asarray(target), p=p, reduction="none")
    np.testing.assert_allclose(float(got), per_sample.mean(), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(got_none), per_sample, rtol=1e-12)


def test_relative_lp_zero_for_equal_inputs_with_finite_gradient():
    _, target = _samples()
    y = jnp.asarray(target, jnp.float32)
    assert float(relative_lp(y, y)) == 0.0
    assert float(relative_h1(y, y)) == 0.0
    for loss in (relative_lp, relative_h1):
        grad = jax.jit(jax.grad(lambda pr: loss(pr, y)))(y)
        assert np.all(np.isfinite(np.asarray(grad)))


def test_loss_argument_errors():
    y = jnp.ones((2, 5, 1))
    with pytest.raises(ValueError, match="shapes differ"):
        relative_lp(y, jnp.ones((2, 6, 1)))
    with pytest.raises(ValueError, match="p >= 1"):
        relative_lp(y, y, p=0.5)
    with pytest.raises(ValueError, match="reduction"):
        relative_lp(y, y, reduction="max")
    with pytest.raises(ValueError, match="one per spatial axis"):
        relative_h1(y, y, spacing=(0.1, 0.1))


def _h1_ratio_dirichlet(n: int, eps: np.ndarray) -> np.ndarray:
    """relative_h1 of u + eps v vs u on a nodal n x n grid of [0, 1]^2, per sample."""
    t = np.linspace(0.0, 1.0, n)
    x, y = np.meshgrid(t, t, indexing="ij")
    u = np.sin(np.pi * x) * np.sin(np.pi * y)
    v = np.sin(2 * np.pi * x) * np.sin(3 * np.pi * y)
    target = np.broadcast_to(u, (len(eps), n, n))[..., None]  # (batch, n, n, 1)
    pred = target + eps[:, None, None, None] * v[None, ..., None]
    with jax.enable_x64(True):
        return np.asarray(_h1(jnp.asarray(pred), jnp.asarray(target), reduction="none"))


def test_relative_h1_converges_to_analytic_ratio():
    # ||u||^2 = 1/4, ||grad u||^2 = pi^2/2; ||v||^2 = 1/4, ||grad v||^2 = (4 + 9) pi^2 / 4 on [0, 1]^2.
    eps = np.array([0.1, 0.02, 0.5])
    exact = eps * np.sqrt((0.25 + 13 * np.pi**2 / 4) / (0.25 + np.pi**2 / 2))
    # Measured: 1.2e-2, 5.5e-3, 1.5e-3, 2.8e-4 (rectangle-rule boundary terms and O(h^2) differences).
    errors = [np.max(np.abs(_h1_ratio_dirichlet(n, eps) / exact - 1)) for n in (17, 33, 65, 129)]
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-3, errors
    with jax.enable_x64(True):  # the mean reduction is the mean of the per-sample ratios
        t = np.linspace(0.0, 1.0, 65)
        u = (np.sin(np.pi * t)[:, None] * np.sin(np.pi * t)[None, :])[None, ..., None]
        v = (np.sin(2 * np.pi * t)[:, None] * np.sin(3 * np.pi * t)[None, :])[None, ..., None]
        target = np.repeat(u, 3, axis=0)
        pred = target + eps[:, None, None, None] * v
        mean = float(_h1(jnp.asarray(pred), jnp.asarray(target)))
    np.testing.assert_allclose(mean, _h1_ratio_dirichlet(65, eps).mean(), rtol=1e-12)


def test_periodic_gradient_is_exact_central_difference():
    """For sin(2 pi k x) the periodic central difference is exactly sin(2 pi k h) / h cos(2 pi k x)."""
    n, k1, k2 = 24, 2, 3
    t = np.arange(n) / n
    x, y = np.meshgrid(t, t, indexing="ij")
    u = np.sin(2 * np.pi * k1 * x) + 0.5 * np.cos(2 * np.pi * k2 * y)
    h = 1.0 / n
    with jax.enable_x64(True):
        gx, gy = finite_difference_gradient(jnp.asarray(u[None, ..., None]), (h, h), periodic=True)
    np.testing.assert_allclose(gx[0, ..., 0], np.sin(2 * np.pi * k1 * h) / h * np.cos(2 * np.pi * k1 * x), atol=1e-11)
    np.testing.assert_allclose(gy[0, ..., 0], -0.5 * np.sin(2 * np.pi * k2 * h) / h * np.sin(2 * np.pi * k2 * y), atol=1e-11)


def test_periodic_relative_h1_second_order():
    """Trig polynomials on [0, 1)^2: the rectangle rule is exact, so the only error is the O(h^2)
    central difference. Analytic: ||y||^2 = 1/4, ||grad y||^2 = 2 pi^2; ||e||^2 = eps^2 / 2,
    ||grad e||^2 = 8 pi^2 eps^2."""
    eps = 0.1
    exact = eps * np.sqrt((0.5 + 8 * np.pi**2) / (0.25 + 2 * np.pi**2))
    errors = []
    for n in (16, 32, 64):
        t = np.arange(n) / n
        x, y = np.meshgrid(t, t, indexing="ij")
        target = (np.sin(2 * np.pi * x) * np.cos(2 * np.pi * y))[None, ..., None]
        pred = target + eps * np.sin(4 * np.pi * x)[None, ..., None]
        with jax.enable_x64(True):
            errors.append(abs(float(_h1(jnp.asarray(pred), jnp.asarray(target), periodic=True)) - exact))
    for coarse, fine in zip(errors, errors[1:]):
        assert 3.6 < coarse / fine < 4.4, errors


def test_nonperiodic_gradient_exact_for_quadratics():
    """Central and second-order one-sided differences are exact for quadratics, corners included."""
    nx, ny = 7, 5
    hx, hy = 0.3, 0.2
    x, y = np.meshgrid(np.arange(nx) * hx, np.arange(ny) * hy, indexing="ij")
    u = 3 * x**2 - 2 * x * y + y**2 + x - 4 * y
    with jax.enable_x64(True):
        gx, gy = finite_difference_gradient(jnp.asarray(u[None, ..., None]), (hx, hy))
    np.testing.assert_allclose(gx[0, ..., 0], 6 * x - 2 * y + 1, atol=1e-12)
    np.testing.assert_allclose(gy[0, ..., 0], -2 * x + 2 * y - 4, atol=1e-12)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("loss", ["lp", "h1"])
def test_non_finite_prediction_gives_non_finite_loss(bad, loss):
    # A diverged model must show up as a non-finite loss, never as a silent 0.
    target = jnp.ones((2, 8, 8, 1))
    pred = target.at[0, 3, 3, 0].set(bad)
    fn = relative_lp if loss == "lp" else relative_h1
    assert not np.isfinite(float(fn(pred, target)))
    assert np.isfinite(np.asarray(fn(pred, target, reduction="none"))[1])
