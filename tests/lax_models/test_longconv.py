"""Long convolutions against a direct O(L^2) convolution with a naively smoothed and squashed kernel,
the recurrent step mode, causality, finite differences and the proximal definition of the squash."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from lax_models.longconv import LongConv, smooth, squash
from lax_models.ssm import SSMParam

apply = nnx.jit(lambda layer, x: layer(x))


def _naive_kernel(raw: np.ndarray, window: int, lam: float) -> np.ndarray:
    """Smooth (zero-padded moving average, divided by the window) then squash, by loops: (n, l_max, H)."""
    n, l_max, h = raw.shape
    p = window // 2
    out = np.zeros_like(raw, dtype=np.float64)
    for c in range(n):
        for k in range(l_max):
            for j in range(k - p, k + p + 1):
                if 0 <= j < l_max:
                    out[c, k] += raw[c, j] / window
    return np.sign(out) * np.maximum(np.abs(out) - lam, 0.0)


def _naive_conv(u: np.ndarray, k: np.ndarray, d: np.ndarray, bidirectional: bool) -> np.ndarray:
    """y_i = sum_{m <= i} k0_m u_{i-m} [+ sum_{s >= 1} k1_{s-1} u_{i+s}] + D u_i, lags beyond l_max absent."""
    batch, length, h = u.shape
    l_max = k.shape[1]
    y = np.zeros((batch, length, h))
    for i in range(length):
        for m in range(min(i + 1, l_max)):
            y[:, i] += k[0, m] * u[:, i - m]
        if bidirectional:
            for s in range(1, min(length - i, l_max + 1)):
                y[:, i] += k[1, s - 1] * u[:, i + s]
    return y + d * u


def _layer(bidirectional=False, l_max=16, d_model=3, smooth_window=5, lam=0.01, seed=0, **kw):
    layer = LongConv(d_model, l_max=l_max, bidirectional=bidirectional, lam=lam, smooth_window=smooth_window,
                     rngs=nnx.Rngs(seed), **kw)
    # a kernel large enough that the squash keeps most of it (the reference init is mostly below lam);
    # a NumPy draw, so no sampler compiles per kernel shape
    layer.kernel[...] = jnp.asarray(0.1 * np.random.default_rng(seed + 1).normal(size=layer.kernel.shape), jnp.float32)
    return layer


def _inputs(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("length", [16, 11, 23])  # = l_max, shorter, longer
def test_fft_convolution_equals_the_direct_convolution(bidirectional, length):
    layer = _layer(bidirectional)
    u = _inputs((2, length, 3))
    k = _naive_kernel(np.asarray(layer.kernel[...], np.float64), 5, 0.01)
    expected = _naive_conv(np.asarray(u, np.float64), k, np.asarray(layer.D[...]), bidirectional)
    np.testing.assert_allclose(np.asarray(apply(layer, u)), expected, atol=1e-5, rtol=1e-5)
    assert np.mean(k == 0) < 0.5 and np.mean(k == 0) > 0  # the squash acted, but not everywhere


def test_smooth_and_squash_are_the_papers_operators():
    rng = np.random.default_rng(0)
    k = rng.normal(size=(9, 2))
    # smooth: a moving average keeps constants in the interior and has unit total weight
    const = np.asarray(smooth(jnp.ones((9, 2)), 3, axis=0))
    np.testing.assert_allclose(const[1:-1], 1.0, rtol=1e-6)
    np.testing.assert_allclose(const[[0, -1]], 2.0 / 3.0, rtol=1e-6)  # zero padding at the ends
    np.testing.assert_allclose(np.asarray(smooth(jnp.asarray(k), 1)), k)
    # squash = prox of lam |z|: argmin_z (z - k)^2 / 2 + lam |z|, by brute force on a fine grid
    lam = 0.3
    grid = np.linspace(-4, 4, 80001)
    prox = np.array([grid[np.argmin(0.5 * (grid - v) ** 2 + lam * np.abs(grid))] for v in k.ravel()])
    np.testing.assert_allclose(np.asarray(squash(jnp.asarray(k.ravel()), lam)), prox, atol=2e-4)


@pytest.mark.parametrize("length", [16, 30])  # the step keeps exactly the last l_max inputs
def test_convolution_equals_recurrent_step_mode(length):
    layer = _layer(False, l_max=16)
    u = _inputs((2, length, 3), seed=1)
    step = nnx.jit(lambda m, s, x: m.step(s, x))
    state, ys = layer.init_state(2), []
    for t in range(length):
        state, y_t = step(layer, state, u[:, t])
        ys.append(y_t)
    np.testing.assert_allclose(np.stack(ys, axis=1), np.asarray(apply(layer, u)), atol=1e-5, rtol=1e-5)


def _influence(layer, u, delta):
    """|y(u + delta_t e_t) - y(u)| summed over channels, for a change delta_t (H,) at each position t:
    (L, L) [i, t]. The layer is linear, so this is J delta exactly: the Jacobian along delta."""
    length = u.shape[0]
    rows = np.tile(np.asarray(u), (length + 1, 1, 1))                                  # (1 + L, L, H)
    rows[1 + np.arange(length), np.arange(length)] += np.asarray(delta)
    y = np.asarray(apply(layer, jnp.asarray(rows)))                                    # one batch
    return np.abs(y[1:] - y[:1]).sum(axis=-1).T


def test_causal_layer_is_causal():
    layer = _layer(False, l_max=12)
    u, delta = _inputs((12, 3), seed=2), _inputs((12, 3), seed=4)
    influence = _influence(layer, u, delta)                                            # (L, L)
    future = np.triu(np.ones((12, 12), bool), k=1)
    # FFT round-off leaks ~1e-8 of the scale (safari#40); the past is felt at order one
    assert influence[future].max() < 1e-6 * influence.max()
    assert np.median(influence[~future]) > 1e-3
    assert np.median(_influence(_layer(True, l_max=12), u, delta)[future]) > 1e-3


def test_gradients_match_finite_differences():
    with jax.enable_x64(True):
        layer = _layer(True, l_max=6, d_model=2, smooth_window=3, lam=0.02)
        graphdef, params = nnx.split(layer)
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a,
                              params)
        leaves, treedef = jax.tree.flatten(params)
        floats = [i for i, a in enumerate(leaves) if jnp.issubdtype(a.dtype, jnp.floating)]
        u = jnp.asarray(np.random.default_rng(3).normal(size=(1, 6, 2)))

        @jax.jit
        def loss(float_leaves, x):
            all_leaves = list(leaves)
            for i, a in zip(floats, float_leaves):
                all_leaves[i] = a
            return jnp.sum(jnp.sin(nnx.merge(graphdef, jax.tree.unflatten(treedef, all_leaves))(x)))

        check_grads(loss, ([leaves[i] for i in floats], u), order=1, modes=["rev"], eps=1e-6, atol=1e-6, rtol=1e-6)


def test_kernel_dropout_only_in_training():
    layer = _layer(False, kernel_dropout=0.5)
    u = _inputs((1, 16, 3))
    train = nnx.jit(lambda m, x: m(x))
    assert not np.allclose(np.asarray(train(layer, u)), np.asarray(train(layer, u)))  # a new mask each call
    layer.eval()
    np.testing.assert_array_equal(np.asarray(apply(layer, u)), np.asarray(apply(layer, u)))
    layer.kernel_drop.rate = 0.0
    layer.train()
    np.testing.assert_allclose(np.asarray(train(layer, u)), np.asarray(apply(layer, u)), rtol=1e-6)


def test_parameters_and_initialisation():
    layer = LongConv(8, l_max=32, bidirectional=True, rngs=nnx.Rngs(0))
    assert type(layer.kernel) is SSMParam and type(layer.D) is nnx.Param  # own lr, no weight decay
    assert layer.kernel.shape == (2, 32, 8)
    np.testing.assert_allclose(np.std(np.asarray(layer.kernel[...])), 0.002, rtol=0.1)
    dexp = np.asarray(LongConv(8, l_max=64, weight_init="double_exp", rngs=nnx.Rngs(0)).kernel[...])[0]
    assert np.abs(dexp[:8]).mean() > 3 * np.abs(dexp[-8:]).mean()  # decays along the lags


@pytest.mark.parametrize("kwargs, message", [
    (dict(l_max=None), "needs l_max"),
    (dict(l_max=8, smooth_window=4), "odd"),
    (dict(l_max=8, lam=-1.0), "lam"),
    (dict(l_max=8, weight_init="zeros"), "weight_init"),
])
def test_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LongConv(4, **kwargs, rngs=nnx.Rngs(0))


def test_bad_input_and_bidirectional_step_are_clear_errors():
    with pytest.raises(ValueError, match=r"d_model=4"):
        LongConv(4, l_max=8, rngs=nnx.Rngs(0))(jnp.zeros((1, 8, 5)))
    bi = LongConv(4, l_max=8, bidirectional=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="no recurrent"):
        bi.step(bi.init_state(1), jnp.zeros((1, 4)))
