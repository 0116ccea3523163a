"""Relative L^p and H^1 losses against naive numpy and analytic values."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from operators import relative_h1, relative_hs, relative_lp
from operators.losses import finite_difference_gradient

# Whole-function jit: one compile per shape instead of one per primitive in eager mode (faster tests).
_h1 = jax.jit(relative_h1, static_argnames=("spacing", "periodic", "reduction"))
_lp = jax.jit(relative_lp, static_argnames=("p", "reduction"))
_gradient = jax.jit(finite_difference_gradient, static_argnames=("spacing", "periodic"))


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
        got = _lp(jax.device_put(pred), jax.device_put(target), p=p)
        got_none = _lp(jax.device_put(pred), jax.device_put(target), p=p, reduction="none")
    np.testing.assert_allclose(float(got), per_sample.mean(), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(got_none), per_sample, rtol=1e-12)


def test_relative_lp_zero_for_equal_inputs_with_finite_gradient():
    _, target = _samples()
    y = jax.device_put(target.astype(np.float32))
    assert float(_lp(y, y)) == 0.0
    assert float(_h1(y, y)) == 0.0
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
        return np.asarray(_h1(jax.device_put(pred), jax.device_put(target), reduction="none"))


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
        mean = float(_h1(jax.device_put(pred), jax.device_put(target)))
    np.testing.assert_allclose(mean, _h1_ratio_dirichlet(65, eps).mean(), rtol=1e-12)


def test_periodic_gradient_is_exact_central_difference():
    """For sin(2 pi k x) the periodic central difference is exactly sin(2 pi k h) / h cos(2 pi k x)."""
    n, k1, k2 = 24, 2, 3
    t = np.arange(n) / n
    x, y = np.meshgrid(t, t, indexing="ij")
    u = np.sin(2 * np.pi * k1 * x) + 0.5 * np.cos(2 * np.pi * k2 * y)
    h = 1.0 / n
    with jax.enable_x64(True):
        gx, gy = _gradient(jax.device_put(u[None, ..., None]), spacing=(h, h), periodic=True)
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
            errors.append(abs(float(_h1(jax.device_put(pred), jax.device_put(target), periodic=True)) - exact))
    for coarse, fine in zip(errors, errors[1:]):
        assert 3.6 < coarse / fine < 4.4, errors


def test_nonperiodic_gradient_exact_for_quadratics():
    """Central and second-order one-sided differences are exact for quadratics, corners included."""
    nx, ny = 7, 5
    hx, hy = 0.3, 0.2
    x, y = np.meshgrid(np.arange(nx) * hx, np.arange(ny) * hy, indexing="ij")
    u = 3 * x**2 - 2 * x * y + y**2 + x - 4 * y
    with jax.enable_x64(True):
        gx, gy = _gradient(jax.device_put(u[None, ..., None]), spacing=(hx, hy))
    np.testing.assert_allclose(gx[0, ..., 0], 6 * x - 2 * y + 1, atol=1e-12)
    np.testing.assert_allclose(gy[0, ..., 0], -2 * x + 2 * y - 4, atol=1e-12)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("loss", ["lp", "h1"])
def test_non_finite_prediction_gives_non_finite_loss(bad, loss):
    # A diverged model must show up as a non-finite loss, never as a silent 0.
    target = np.ones((2, 8, 8, 1), np.float32)
    pred = target.copy()
    pred[0, 3, 3, 0] = bad
    fn = _lp if loss == "lp" else _h1
    assert not np.isfinite(float(fn(pred, target)))
    assert np.isfinite(np.asarray(fn(pred, target, reduction="none"))[1])


# -- relative_hs (MgNO's HsLoss) ----------------------------------------------------------------------
_hs = jax.jit(relative_hs, static_argnames=("a", "truncation", "balanced", "reduction"))


def _periodic_fields(n1: int, n2: int):
    """Trig polynomials on the periodic grid [0, 1)^2 with closed-form gradients and Laplacians.

    Returns (u, grad u, Laplacian u) for target u and error e, each (1, n1, n2, 1) / list of them.
    """
    x, y = np.meshgrid(np.arange(n1) / n1, np.arange(n2) / n2, indexing="ij")
    tp = 2 * np.pi
    u = np.sin(tp * x) * np.cos(tp * 2 * y) + 0.3
    u_grad = [tp * np.cos(tp * x) * np.cos(tp * 2 * y), -2 * tp * np.sin(tp * x) * np.sin(tp * 2 * y)]
    u_lap = -(1 + 4) * tp**2 * np.sin(tp * x) * np.cos(tp * 2 * y)
    e = 0.2 * np.cos(tp * (3 * x - y)) + 0.05 * np.sin(tp * 4 * y)
    e_grad = [-0.6 * tp * np.sin(tp * (3 * x - y)), 0.2 * tp * np.sin(tp * (3 * x - y)) + 0.2 * tp * np.cos(tp * 4 * y)]
    e_lap = -10 * tp**2 * 0.2 * np.cos(tp * (3 * x - y)) - 16 * tp**2 * 0.05 * np.sin(tp * 4 * y)
    return (u, u_grad, u_lap), (e, e_grad, e_lap)


@pytest.mark.parametrize("n1,n2,a", [(16, 16, (0.5,)), (15, 12, (2 * np.pi,)), (11, 13, (0.3, 0.05))])
def test_relative_hs_equals_sobolev_ratio_of_closed_form_derivatives(n1, n2, a):
    """Parseval: for band-limited periodic fields (frequencies < n/2, below the truncation)
    sum_k |k|^2 |U_k|^2 = sum_x |grad u|^2 / (2 pi)^2 and sum_k |k|^4 |U_k|^2 = sum_x (Lap u)^2 / (2 pi)^4,
    so the Fourier-space ratio equals the ratio of the directly computed Sobolev sums (odd grids too)."""
    (u, ug, ul), (e, eg, el) = _periodic_fields(n1, n2)

    def sq_norm(v, grad, lap):
        total = np.sum(v**2) + a[0] ** 2 * sum(np.sum(g**2) for g in grad) / (2 * np.pi) ** 2
        if len(a) > 1:
            total += a[1] ** 2 * np.sum(lap**2) / (2 * np.pi) ** 4
        return total

    exact = np.sqrt(sq_norm(e, eg, el) / sq_norm(u, ug, ul))
    target, pred = u[None, ..., None], (u + e)[None, ..., None]
    with jax.enable_x64(True):
        got = float(_hs(jax.device_put(pred), jax.device_put(target), a=a, truncation=None))
        got_truncated = float(_hs(jax.device_put(pred), jax.device_put(target), a=a, truncation=5))  # all |k_j| < 5
    np.testing.assert_allclose(got, exact, rtol=1e-12)
    np.testing.assert_allclose(got_truncated, exact, rtol=1e-12)


def test_relative_hs_truncation_drops_the_derivative_weight_of_high_wavenumbers():
    """target = u1 + u2, pred = u1: ratio^2 = w2^2 |u2|^2 / (w1^2 |u1|^2 + w2^2 |u2|^2) with hand-computed
    weights. u2 = cos(2 pi (7 x + y)): with truncation 5, k_x = 7 counts as 0, so w2^2 = 1 + a^2 * 1."""
    n, a = 24, 0.7
    x, y = np.meshgrid(np.arange(n) / n, np.arange(n) / n, indexing="ij")
    u1 = np.sin(2 * np.pi * (x + 2 * y))  # |k|^2 = 5 for both truncations
    u2 = np.cos(2 * np.pi * (7 * x + y))
    sq1, sq2 = np.sum(u1**2), np.sum(u2**2)
    target, pred = (u1 + u2)[None, ..., None], u1[None, ..., None]
    for truncation, k2_of_u2 in [(None, 50.0), (20, 50.0), (5, 1.0), (1, 0.0)]:
        k2_of_u1 = 5.0 if truncation is None or truncation > 2 else 0.0
        w1, w2 = 1 + a**2 * k2_of_u1, 1 + a**2 * k2_of_u2
        exact = np.sqrt(w2 * sq2 / (w1 * sq1 + w2 * sq2))
        with jax.enable_x64(True):
            got = float(_hs(jax.device_put(pred), jax.device_put(target), a=(a,), truncation=truncation))
        np.testing.assert_allclose(got, exact, rtol=1e-12, err_msg=f"truncation={truncation}")


def test_relative_hs_balanced_averages_the_per_order_ratios_and_reductions():
    (u, ug, ul), (e, eg, el) = _periodic_fields(16, 16)
    a = (0.5, 0.1)
    l2 = np.sqrt(np.sum(e**2) / np.sum(u**2))
    h1 = np.sqrt(sum(np.sum(g**2) for g in eg) / sum(np.sum(g**2) for g in ug))  # a_1 cancels
    h2 = np.sqrt(np.sum(el**2) / np.sum(ul**2))
    target = np.stack([u, 2 * u])[..., None]  # (2, 16, 16, 1): the second sample has half the error ratio
    pred = target + e[None, ..., None]
    with jax.enable_x64(True):
        got = np.asarray(_hs(jax.device_put(pred), jax.device_put(target), a=a, truncation=None, balanced=True,
                             reduction="none"))
        mean = float(_hs(jax.device_put(pred), jax.device_put(target), a=a, truncation=None, balanced=True))
        total = float(_hs(jax.device_put(pred), jax.device_put(target), a=a, truncation=None, balanced=True,
                          reduction="sum"))
    np.testing.assert_allclose(got, [(l2 + h1 + h2) / 3, (l2 + h1 + h2) / 6], rtol=1e-12)
    np.testing.assert_allclose([mean, total], [got.mean(), got.sum()], rtol=1e-12)


def test_relative_hs_zero_error_finite_gradient_and_errors():
    _, target = _samples()
    y = jax.device_put(target.astype(np.float32))
    assert float(_hs(y, y)) == 0.0
    grad = jax.jit(jax.grad(lambda pr: relative_hs(pr, y)))(y)
    assert np.all(np.isfinite(np.asarray(grad)))
    bad = np.array(target, np.float32)
    bad[0, 1, 1, 0] = np.nan
    assert not np.isfinite(float(_hs(bad, y)))
    with pytest.raises(ValueError, match="at least one weight"):
        relative_hs(y, y, a=())
    with pytest.raises(ValueError, match="truncation"):
        relative_hs(y, y, truncation=0)
    with pytest.raises(ValueError, match=r"\(batch, \*spatial, channels\)"):
        relative_hs(jnp.ones((2, 5)), jnp.ones((2, 5)))
