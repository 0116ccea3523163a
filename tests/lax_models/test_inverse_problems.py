"""Inverse-problem operators, plug-and-play solvers and baselines against their oracles.

Oracles: dot-product tests of the adjoints, a naive periodic convolution, the Radon transform of a disk
(2 sqrt(r^2 - s^2)) and mass conservation, FBP reconstructing a disk; PnP-PGD / PnP-ADMM with the closed-form
proxes of 1/2 lam ||x||^2 and mu ||x||_1 (+ a ridge) against a direct solve and an independent L-BFGS-B lasso solve;
Chambolle-Pock TV against the closed-form TV denoising of a step; Wiener against the dense Tikhonov solve;
SSIM against a value from scikit-image 0.26 (structural_similarity, gaussian_weights, no sample
covariance), its constant-image closed form and a naive per-pixel transcription; PSNR against its formula.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from lax_models.inverse_problems import (LinearOperator, gaussian_window, blur_operator, filtered_back_projection,
                                         gaussian_kernel, pnp_admm, pnp_pgd, psnr, radon_matrix, radon_operator,
                                         ssim, tv_reconstruct, wiener_deconvolve)


def dense(op: LinearOperator) -> np.ndarray:
    """The matrix of ``op`` (outputs x inputs), by applying it to the standard basis."""
    n = int(np.prod(op.in_shape))
    basis = jnp.eye(n, dtype=jnp.float64).reshape(n, *op.in_shape)
    return np.asarray(op(basis)).reshape(n, -1).T


def identity(shape) -> LinearOperator:
    return LinearOperator("identity", lambda x: x, lambda x: x, shape, shape)


# -- operators -------------------------------------------------------------------------------------------

def test_adjoints_pass_the_dot_product_test():
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        ops = [blur_operator((9, 8), rng.uniform(size=(3, 5))),          # a non-symmetric kernel
               blur_operator((8, 8), gaussian_kernel(1.0)), radon_operator(8, 5)]
        for op in ops:
            x = jnp.asarray(rng.standard_normal((3, *op.in_shape)))
            y = jnp.asarray(rng.standard_normal((3, *op.out_shape)))
            lhs, rhs = jnp.sum(op(x) * y), jnp.sum(x * op.adjoint(y))
            assert abs(float(lhs - rhs)) <= 1e-10 * abs(float(lhs)), op.name


def test_blur_is_the_naive_periodic_convolution():
    rng = np.random.default_rng(1)
    h, w, k = 7, 6, rng.uniform(size=(3, 5))
    x = rng.standard_normal((h, w))
    naive = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            for a in range(3):
                for b in range(5):
                    naive[i, j] += k[a, b] * x[(i - a + 1) % h, (j - b + 2) % w]
    with jax.enable_x64(True):
        got = np.asarray(blur_operator((h, w), k)(jnp.asarray(x[None])))[0]
    np.testing.assert_allclose(got, naive, atol=1e-6)
    assert gaussian_kernel(2.0).shape == (7, 7) and gaussian_kernel(1.0).shape == (5, 5)
    np.testing.assert_allclose(gaussian_kernel(1.3).sum(), 1.0)


def test_radon_keeps_mass_and_matches_the_disk_line_integrals():
    # a disk of radius r centred at (x0, y0) (x to the right, y up) projects at angle theta to the chord
    # 2 sqrt(r^2 - (s - s0)^2), s0 = x0 cos theta + y0 sin theta; pixel-driven linear interpolation smooths
    # it by the unit triangle (the hat of the interpolation), so the oracle is the chord convolved with it
    size, radius, x0, y0 = 48, 10.0, 5.0, -3.0
    angles = np.linspace(0, np.pi, 7, endpoint=False)
    mat = radon_matrix(size, angles)
    dets = mat.shape[0] // angles.size
    c = (size - 1) / 2
    i, j = np.mgrid[:size, :size]
    sub = (np.arange(8) + 0.5) / 8 - 0.5                                # 8 x 8 supersampling of each pixel
    disk = np.zeros((size, size))
    for a in sub:
        for b in sub:
            disk += ((j + b - c - x0) ** 2 + (c - i - a - y0) ** 2 <= radius ** 2) / 64
    sino = (mat @ disk.ravel()).reshape(angles.size, dets)
    np.testing.assert_allclose(sino.sum(1), disk.sum(), rtol=1e-12)               # every view keeps the mass
    s = np.arange(dets) - (dets - 1) / 2
    t = np.linspace(-1, 1, 2001)
    s0 = x0 * np.cos(angles) + y0 * np.sin(angles)                                # (views,)
    arg = s[None, :, None] + t[None, None, :] - s0[:, None, None]                 # (views, dets, t)
    exact = np.sum((1 - np.abs(t)) * 2 * np.sqrt(np.maximum(radius ** 2 - arg ** 2, 0)), -1) * (t[1] - t[0])
    err = np.abs(sino - exact)
    assert err.max() < 0.8 and err.mean() < 0.05, (err.max(), err.mean())
    flipped = np.sum((1 - np.abs(t)) * 2 * np.sqrt(np.maximum(radius ** 2 - (arg + 2 * s0[:, None, None]) ** 2, 0)),
                     -1) * (t[1] - t[0])                                          # the mirrored geometry is wrong
    assert np.abs(sino - flipped).mean() > 0.5


def test_filtered_back_projection_reconstructs_a_disk():
    size = 32
    op = radon_operator(size, 64)
    c = (size - 1) / 2
    i, j = np.mgrid[:size, :size]
    r = np.hypot(j - c, c - i)
    blob = np.exp(-(r / 6.0) ** 2)                                              # smooth: little aliasing
    rec = np.asarray(filtered_back_projection(op, op(jnp.asarray(blob[None], jnp.float32))))[0]
    inside = r < 12
    rel = lambda a: np.linalg.norm((a - blob)[inside]) / np.linalg.norm(blob[inside])
    assert rel(rec) < 0.05 and np.max(np.abs(rec - blob)[inside]) < 0.05       # interpolation smooths ~3%
    sparse = radon_operator(size, 4)                                             # 4 views: streaks, worse
    rec4 = np.asarray(filtered_back_projection(sparse, sparse(jnp.asarray(blob[None], jnp.float32))))[0]
    assert rel(rec4) > 0.2


# -- plug-and-play solvers on closed-form proxes -----------------------------------------------------------

def lasso_oracle(mat: np.ndarray, y: np.ndarray, mu: float, ridge: float) -> np.ndarray:
    """argmin 1/2 ||M x - y||^2 + mu ||x||_1 + ridge / 2 ||x||^2 (elastic net: unique even when M is
    rank-deficient, as sparse-view CT is) by L-BFGS-B on x = p - n, p, n >= 0 (an independent solver)."""
    n = mat.shape[1]

    def fg(v):
        x = v[:n] - v[n:]
        r = mat @ x - y
        g = mat.T @ r
        g = g + ridge * x
        return 0.5 * r @ r + mu * v.sum() + 0.5 * ridge * x @ x, np.concatenate([g + mu, -g + mu])

    res = scipy.optimize.minimize(fg, np.zeros(2 * n), jac=True, method="L-BFGS-B", bounds=[(0, None)] * 2 * n,
                                  options={"maxiter": 5000, "ftol": 1e-16, "gtol": 1e-12})
    return res.x[:n] - res.x[n:]


@pytest.mark.parametrize("which", ["ct", "blur"])
def test_pnp_pgd_and_admm_converge_to_the_minimisers_of_closed_form_proxes(which):
    rng = np.random.default_rng(2)
    with jax.enable_x64(True):
        op = radon_operator(6, 6) if which == "ct" else blur_operator((6, 6), gaussian_kernel(0.5, 3))
        mat = dense(op)
        x_true = rng.uniform(size=(2, 6, 6))
        y = jnp.asarray(np.asarray(op(jnp.asarray(x_true))) + 0.05 * rng.standard_normal((2, *op.out_shape)))
        x0 = jnp.zeros((2, 6, 6))
        lip = np.linalg.norm(mat, 2) ** 2                      # ||A||^2; the curvatures scale with it
        eta, lam, mu, mu2, rho = 1.0 / lip, 0.05 * lip, 0.05, 0.02 * lip, 0.05 * lip
        ridge = np.stack([np.linalg.solve(mat.T @ mat + lam * np.eye(36), mat.T @ np.ravel(y[b]))
                          for b in range(2)]).reshape(2, 6, 6)
        lasso = np.stack([lasso_oracle(mat, np.ravel(y[b]), mu, mu2) for b in range(2)]).reshape(2, 6, 6)
        soft = lambda v, t: jnp.sign(v) * jnp.maximum(jnp.abs(v) - t, 0.0)
        l1 = lambda x: mu * jnp.sum(jnp.abs(x), (1, 2)) + 0.5 * mu2 * jnp.sum(x * x, (1, 2))
        run_pgd = jax.jit(pnp_pgd, static_argnames=("op", "prox", "n_iters", "regularizer"))
        ridge_pgd, ridge_admm = (lambda v: v / (1 + eta * lam)), (lambda v: v / (1 + lam / rho))
        l1_pgd, l1_admm = (lambda v: soft(v, eta * mu) / (1 + eta * mu2)), (lambda v: soft(v, mu / rho) / (1 + mu2 / rho))
        # each operator with one prox per solver (CT: ADMM's x-step by CG; blur: exactly in Fourier space)
        pgd_prox, pgd_oracle = (ridge_pgd, ridge) if which == "ct" else (l1_pgd, lasso)
        x, hist = run_pgd(op, y, pgd_prox, x0, eta=eta, n_iters=1000, regularizer=l1 if which == "blur" else None)
        np.testing.assert_allclose(x, pgd_oracle, atol=1e-6)
        assert hist["residual"].shape == (1000, 2) and hist["residual"][-1].max() < 1e-8
        if which == "blur":
            obj = np.asarray(hist["objective"])
            assert np.all(np.diff(obj, axis=0) <= 1e-12)                         # ISTA descends monotonically
        admm_prox, admm_oracle = (l1_admm, lasso) if which == "ct" else (ridge_admm, ridge)
        x, hist = pnp_admm(op, y, admm_prox, x0, rho=rho, n_iters=100, cg_iters=40, cg_tol=1e-14)
        np.testing.assert_allclose(x, admm_oracle, atol=1e-6)
        assert hist["primal"][-1].max() < 1e-6 and hist["residual"][-1].max() < 1e-6
        # a prox of the wrong scale (rho changed, the prox not) converges elsewhere: the check can fail
        x, _ = pnp_admm(op, y, admm_prox, x0, rho=rho * 4, n_iters=100, cg_iters=40)
        assert np.max(np.abs(np.asarray(x) - admm_oracle)) > 1e-3


# -- baselines -------------------------------------------------------------------------------------------

def test_tv_denoising_of_a_step_has_the_closed_form():
    # rows of f = (a, ..., a, b, ..., b): the solution stays row-constant; on a row the pieces move by
    # lam / n1 and lam / n2 toward each other (1-D TV denoising of a step, no merging while the jump is > 0)
    n1, n2, a, b, lam = 4, 6, 0.8, 0.2, 0.5
    f = np.concatenate([np.full((5, n1), a), np.full((5, n2), b)], 1)[None]
    with jax.enable_x64(True):
        u = np.asarray(tv_reconstruct(identity((5, n1 + n2)), jnp.asarray(f), lam, n_iters=3000, op_norm=1.0))[0]
    expected = np.concatenate([np.full((5, n1), a - lam / n1), np.full((5, n2), b + lam / n2)], 1)
    np.testing.assert_allclose(u, expected, atol=1e-6)


def test_wiener_is_the_tikhonov_solution():
    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        op = blur_operator((8, 8), gaussian_kernel(1.0))
        y = rng.standard_normal((1, 8, 8))
        mat = dense(op)
        direct = np.linalg.solve(mat.T @ mat + 0.01 * np.eye(64), mat.T @ y.ravel()).reshape(1, 8, 8)
        np.testing.assert_allclose(wiener_deconvolve(op, jnp.asarray(y), 0.01), direct, atol=1e-8)
    with pytest.raises(ValueError, match="convolution"):
        wiener_deconvolve(radon_operator(4, 2), jnp.zeros((1, 2, 9)), 0.1)


# -- metrics -----------------------------------------------------------------------------------------------

def naive_ssim(x: np.ndarray, ref: np.ndarray) -> float:
    """Wang et al. (2004) eq. 13 pixel by pixel with explicit windowed sums (reflected borders)."""
    g = gaussian_window()
    w, r = np.outer(g, g), (g.size - 1) // 2
    xp, rp = np.pad(x, r, mode="symmetric"), np.pad(ref, r, mode="symmetric")
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    vals = []
    for i in range(r, x.shape[0] - r):
        for j in range(r, x.shape[1] - r):
            px, py = xp[i:i + 2 * r + 1, j:j + 2 * r + 1], rp[i:i + 2 * r + 1, j:j + 2 * r + 1]
            mx, my = np.sum(w * px), np.sum(w * py)
            vx, vy = np.sum(w * (px - mx) ** 2), np.sum(w * (py - my) ** 2)
            cxy = np.sum(w * (px - mx) * (py - my))
            vals.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return float(np.mean(vals))


def test_ssim_and_psnr_against_known_values():
    x = np.outer(np.linspace(0, 1, 16), np.linspace(1, 0, 16))
    with jax.enable_x64(True):
        # scikit-image 0.26: structural_similarity(x**2, x, data_range=1, gaussian_weights=True, sigma=1.5,
        # use_sample_covariance=False) = 0.4209315435735539
        assert float(ssim(jnp.asarray(x[None] ** 2), jnp.asarray(x[None]))[0]) == pytest.approx(0.4209315435735539,
                                                                                                  abs=1e-9)
        rng = np.random.default_rng(4)
        a, b = rng.uniform(size=(2, 17, 15))
        assert float(ssim(jnp.asarray(a[None]), jnp.asarray(b[None]))[0]) == pytest.approx(naive_ssim(a, b), abs=1e-10)
        assert float(ssim(jnp.asarray(a[None]), jnp.asarray(a[None]))[0]) == pytest.approx(1.0, abs=1e-12)
        c1, c2 = 0.3, 0.7                                          # constant images: the luminance term alone
        got = float(ssim(jnp.full((1, 12, 12), c1), jnp.full((1, 12, 12), c2))[0])
        assert got == pytest.approx((2 * c1 * c2 + 1e-4) / (c1 ** 2 + c2 ** 2 + 1e-4), abs=1e-12)
        assert float(psnr(jnp.full((1, 4, 4), 0.1), jnp.zeros((1, 4, 4)))[0]) == pytest.approx(20.0, abs=1e-9)
    with pytest.raises(ValueError, match="larger than 11"):
        ssim(jnp.zeros((1, 8, 8)), jnp.zeros((1, 8, 8)))
