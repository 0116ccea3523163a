"""Learned proximal networks against the properties that make them proximal operators.

Oracles: convexity of psi (Hessian eigenvalues, the chord inequality), the Jacobian of f = grad psi
(symmetric, PSD, eigenvalues >= alpha), the definition of the prox (f(y) minimises 1/2 ||y - x||^2 + R(x),
checked by a numerical minimisation), and the conjugate inversion (f(y*) = x, R = its closed form).
The networks get non-negative weights of ordinary size (not the tiny init), so the curvature is real;
a negative weight on the hidden path must break convexity (the checks can fail).

Every evaluation is jitted with the model as an argument (``nnx.jit``), so a model structure and input
shape compile once, shared between tests; the inputs are NumPy draws (no compilation of a sampler).
"""
from __future__ import annotations

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from lax_models.lpn import LPN, ConvexWeight, ConvLPN, conjugate_argmin, scaled_softplus


def _randomize(model, seed: int, scale: float = 1.0, dtype=jnp.float64):
    """Every parameter ~ N(0, scale^2) in float64; ConvexWeights |N(0, scale^2)| (convex by construction)."""
    rng = np.random.default_rng(seed)
    state = nnx.state(model, nnx.Param)

    def draw(v):
        x = scale * rng.standard_normal(v.shape)
        return v.replace(jnp.asarray(np.abs(x) if isinstance(v, ConvexWeight) else x, dtype))

    nnx.update(model, jax.tree.map(draw, state, is_leaf=lambda v: isinstance(v, nnx.Variable)))
    return model


@pytest.fixture(scope="module")
def x64():
    with jax.enable_x64(True):
        yield


def vector_lpn(alpha=0.1, seed=0):
    return _randomize(LPN(dim=3, hidden=6, n_layers=3, beta=2.0, alpha=alpha, rngs=nnx.Rngs(seed)), seed)


def conv_lpn(alpha=0.05, seed=0):
    model = ConvLPN(image_size=4, in_channels=1, hidden=2, strides=(1, 2), beta=2.0, alpha=alpha,
                    rngs=nnx.Rngs(seed))
    return _randomize(model, seed, scale=0.5)


def _normal(seed, shape, scale=1.0):
    return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(shape), jnp.float64)


psi = nnx.jit(lambda model, y: model.psi(y))
prox = nnx.jit(lambda model, y: model(y))


@nnx.jit
def _jacobians(model, ys):
    shape = ys.shape[1:]
    f_one = lambda v: model(v.reshape(1, *shape)).reshape(-1)
    return jax.vmap(jax.jacfwd(f_one))(ys.reshape(len(ys), -1))


def jacobians(model, ys):
    """Jacobian of f = grad psi (i.e. the Hessian of psi) at each example: (B, n, n), n entries per example."""
    return np.asarray(_jacobians(model, ys))


@pytest.mark.parametrize("make, shape", [(vector_lpn, (3,)), (conv_lpn, (4, 4, 1))], ids=["vector", "conv"])
def test_hessian_of_psi_jacobian_of_prox_is_symmetric_psd_above_alpha(x64, make, shape):
    model = make()
    ys = _normal(1, (6, *shape), scale=2.0)
    jac = jacobians(model, ys)
    np.testing.assert_allclose(jac, np.swapaxes(jac, 1, 2), atol=1e-12)
    eig = np.linalg.eigvalsh(jac)
    assert eig.min() >= model.alpha - 1e-10
    assert eig.max() > model.alpha + 1e-3                   # the network part is curved, not just alpha
    # f is grad psi: a central difference of psi along a random direction
    d = _normal(5, ys.shape)
    h = 1e-5
    both = np.asarray(psi(model, jnp.concatenate([ys + h * d, ys - h * d])))   # (2B,): +h then -h
    fd = (both[:len(ys)] - both[len(ys):]) / (2 * h)
    np.testing.assert_allclose(np.sum(np.asarray(prox(model, ys) * d).reshape(len(ys), -1), -1), fd, rtol=1e-7)


@pytest.mark.parametrize("make, shape", [(vector_lpn, (3,)), (conv_lpn, (4, 4, 1))], ids=["vector", "conv"])
def test_psi_is_convex_along_random_segments(x64, make, shape):
    model = make(alpha=0.0)
    a, b = _normal(2, (20, *shape), scale=2.0), _normal(3, (20, *shape), scale=2.0)
    t = np.linspace(0, 1, 11)[1:-1].reshape(-1, 1, *[1] * len(shape))                 # (9, 1, ...)
    points = t * a[None] + (1 - t) * b[None]                                             # (9, 20, ...)
    values = np.asarray(psi(model, jnp.concatenate([a, b, points.reshape(-1, *shape)])))  # one batch
    psi_a, psi_b, psi_mix = values[:20], values[20:40], values[40:].reshape(9, 20)
    chord = t.reshape(9, 1) * psi_a + (1 - t.reshape(9, 1)) * psi_b
    assert np.all(psi_mix <= chord + 1e-12)


def test_a_negative_hidden_weight_breaks_convexity(x64):
    """The checks above can fail: with a negative W_k, at the same points, the Hessian has an eigenvalue
    below alpha (negative, even)."""
    model = vector_lpn()
    model.w_hidden[...] = -3.0 * model.w_hidden[...]
    assert np.linalg.eigvalsh(jacobians(model, _normal(1, (6, 3), scale=2.0))).min() < -1e-3


def test_prox_minimises_the_proximal_objective(x64):
    """f(y) = argmin_x 1/2 ||y - x||^2 + R(x). R is +inf off the image of f, so x = f(u) and R(f(u)) has
    the closed form <u, f(u)> - ||f(u)||^2/2 - psi(u); minimise over u with BFGS from several starts."""
    model = vector_lpn()
    ys = np.asarray(_normal(6, (3, 3), scale=1.5))

    def obj(u, y):
        x, r = model.regularizer_at_prox(u[None])
        return 0.5 * jnp.sum((y - x[0]) ** 2) + r[0]

    value_and_grad = jax.jit(jax.value_and_grad(obj))

    def objective_and_grad(u, y):
        v, g = value_and_grad(jnp.asarray(u), jnp.asarray(y))
        return float(v), np.asarray(g)

    rng = np.random.default_rng(0)
    for y in ys:
        fy = np.asarray(prox(model, jnp.asarray(y[None])))[0]
        at_prox = objective_and_grad(y, y)[0]
        for start in [y + 2 * rng.standard_normal(3) for _ in range(3)]:
            res = scipy.optimize.minimize(objective_and_grad, start, args=(y,), jac=True, method="BFGS",
                                          options={"gtol": 1e-10})
            assert res.fun >= at_prox - 1e-9
            x_min = np.asarray(prox(model, jnp.asarray(res.x[None])))[0]
            np.testing.assert_allclose(x_min, fy, atol=1e-5)


@pytest.fixture(scope="module")
def conjugate_solve(x64):
    """R(x) by the conjugate problem at x = f(y) for 3 centres y and, around each, 6 neighbours at
    +-0.02 along each axis (whose objectives nearly tie with the centre's), solved once."""
    model = vector_lpn()
    centres = np.asarray(_normal(7, (3, 3)))
    offsets = 0.02 * np.concatenate([np.eye(3), -np.eye(3)])                             # (6, 3)
    ys = jnp.asarray(np.concatenate([centres, (centres[:, None] + offsets).reshape(-1, 3)]))   # (21, 3)
    x, r_closed = nnx.jit(lambda m, y: m.regularizer_at_prox(y))(model, ys)
    r, y_star, residual = jax.jit(lambda x: model.regularizer(x, max_steps=300, tol=1e-10))(x)
    return ys, x, r_closed, r, y_star, residual


def test_prox_minimises_the_objective_with_R_from_the_conjugate_solve(conjugate_solve):
    """Over the points x_i = f(y_i), with R(x_i) from the conjugate solve, 1/2 ||y - x||^2 + R(x) is
    least at x = f(y) for y = each centre, strictly, also against its near neighbours."""
    ys, x, _, r, _, residual = conjugate_solve
    assert float(residual.max()) < 1e-7
    for i in range(3):                                     # y = ys[i]: its prox is x[i]
        total = np.asarray(0.5 * jnp.sum((ys[i] - x) ** 2, axis=-1) + r)
        assert int(np.argmin(total)) == i
        assert np.all(total[np.arange(len(total)) != i] > total[i])


def test_conjugate_inversion_round_trip(conjugate_solve):
    ys, _, r_closed, r, y_star, residual = conjugate_solve
    assert float(residual.max()) < 1e-7
    np.testing.assert_allclose(np.asarray(y_star), np.asarray(ys), atol=1e-6)   # alpha > 0: unique inverse
    np.testing.assert_allclose(np.asarray(r), np.asarray(r_closed), atol=1e-9)


def test_conjugate_argmin_of_a_quadratic_is_exact(x64):
    """psi = 1/2 y^T A y: argmin psi - <x, y> = A^{-1} x."""
    a = jnp.array([[3.0, 1.0], [1.0, 2.0]])
    x = jnp.array([1.0, -2.0])
    y = conjugate_argmin(lambda v: 0.5 * v @ a @ v, x, jnp.zeros(2), tol=1e-12)
    np.testing.assert_allclose(np.asarray(y), np.linalg.solve(np.asarray(a), np.asarray(x)), atol=1e-10)


def test_scaled_softplus_tends_to_relu_and_is_convex():
    t = jnp.linspace(-2, 2, 41)
    np.testing.assert_allclose(scaled_softplus(t, 1e3), jnp.maximum(t, 0), atol=1e-3)
    second = scaled_softplus(t[2:], 3.0) - 2 * scaled_softplus(t[1:-1], 3.0) + scaled_softplus(t[:-2], 3.0)
    assert float(second.min()) >= -1e-6


def test_init_is_tiny_positive_and_bad_inputs_are_named():
    model = LPN(dim=2, hidden=4, n_layers=3, rngs=nnx.Rngs(0))
    w = np.asarray(model.w_hidden[...])
    assert w.min() > 0 and w.max() < 1e-4                       # exp(N(-10, 0.1)) ~ 4.5e-5
    with pytest.raises(ValueError, match="dim=2"):
        model(jnp.zeros((3, 5)))
    with pytest.raises(ValueError, match="vectors of shape"):
        model(jnp.zeros((3,)))
    conv = ConvLPN(image_size=8, hidden=2, strides=(1, 2), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="image_size"):
        conv(jnp.zeros((2, 6, 6, 1)))
    with pytest.raises(ValueError, match="beta > 0"):
        LPN(beta=0.0, rngs=nnx.Rngs(0))
