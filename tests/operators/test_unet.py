"""U-Net baseline (the LSM backbone): up-/down-sampling against SciPy and loops, the parameter count
derived by hand, shapes on odd and even grids, padding errors, a float64 gradient check, and a short
fit in which the loss falls."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.ndimage
from flax import nnx

from operators.unet import UNet, auto_padding, bilinear_upsample_2x, max_pool_2x


def n_params(model: nnx.Module) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def gradient_check(model: nnx.Module, x: jax.Array, seed: int = 0, eps: float = 1e-6) -> tuple[float, float]:
    """(autodiff, central difference) directional derivative of sum(w * model(x)) along a random
    direction of all parameters, in float64 (train mode: BatchNorm uses the batch statistics)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    to64 = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), t)  # noqa: E731
    params, rest, x = to64(params), to64(rest), jnp.asarray(x, jnp.float64)
    out_shape = nnx.merge(graphdef, params, rest, copy=True)(x).shape
    keys = jax.random.split(jax.random.key(seed), 2)
    w = jax.random.normal(keys[0], out_shape, jnp.float64)
    leaves, treedef = jax.tree.flatten(params)
    dirs = [jax.random.normal(k, leaf.shape, jnp.float64) for k, leaf in
            zip(jax.random.split(keys[1], len(leaves)), leaves)]
    norm = jnp.sqrt(sum(jnp.sum(d * d) for d in dirs))
    dirs = [d / norm for d in dirs]  # a unit step: eps is the distance moved (crossing a ReLU kink is unlikely)
    direction = jax.tree.unflatten(treedef, dirs)

    @jax.jit
    def loss(p):
        return jnp.sum(w * nnx.merge(graphdef, p, rest, copy=True)(x))

    auto = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(jax.jit(jax.grad(loss))(params)), dirs))
    shift = lambda s: jax.tree.map(lambda p, d: p + s * d, params, direction)  # noqa: E731
    numeric = (loss(shift(eps)) - loss(shift(-eps))) / (2 * eps)
    return float(auto), float(numeric)


def fit_losses(model: nnx.Module, x: jax.Array, y: jax.Array, steps: int, lr: float = 3e-3) -> list[float]:
    """Relative-L2 losses of ``steps`` Adam steps on one fixed batch."""
    tx = optax.adam(lr)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt = tx.init(params)

    @jax.jit
    def step(params, rest, opt):
        def loss_of(p):
            m = nnx.merge(graphdef, p, rest, copy=True)
            pred = m(x)
            loss = jnp.mean(jnp.linalg.norm((pred - y).reshape(len(y), -1), axis=1)
                            / jnp.linalg.norm(y.reshape(len(y), -1), axis=1))
            return loss, nnx.state(m, nnx.Not(nnx.Param))
        (loss, rest), g = jax.value_and_grad(loss_of, has_aux=True)(params)
        updates, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, updates), rest, opt, loss

    losses = []
    for _ in range(steps):
        params, rest, opt, loss = step(params, rest, opt)
        losses.append(float(loss))
    return losses


def smooth_target(x: jax.Array) -> jax.Array:
    """A fixed nonlinear local map to learn: a 3x3 box average of x, squared plus x."""
    k = jnp.ones((3, 3, 1, 1)) / 9
    avg = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return avg ** 2 + x


@pytest.mark.parametrize("shape", [(1, 5, 4, 3), (2, 1, 6, 1), (1, 7, 7, 2)])
def test_bilinear_upsample_matches_scipy_zoom_with_aligned_corners(shape):
    x = np.random.default_rng(0).normal(size=shape)
    ours = np.asarray(bilinear_upsample_2x(jnp.asarray(x)))
    # scipy's zoom with grid_mode=False maps the first and last samples onto each other: align_corners.
    ref = scipy.ndimage.zoom(x, (1, 2, 2, 1), order=1, grid_mode=False, mode="nearest")
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_max_pool_drops_the_odd_row_like_torch():
    x = np.random.default_rng(1).normal(size=(2, 7, 6, 3)).astype(np.float32)
    ours = np.asarray(max_pool_2x(jnp.asarray(x)))
    ref = np.empty((2, 3, 3, 3), np.float32)
    for i in range(3):
        for j in range(3):
            ref[:, i, j] = x[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].max(axis=(1, 2))
    np.testing.assert_array_equal(ours, ref)


def hand_count(d: int, in_ch: int = 1, out_ch: int = 1, proj: int = 128) -> int:
    """Parameters by hand: DoubleConv(a, b, mid) = 9 a mid + 2 mid + 9 mid b + 2 b (no conv bias;
    BatchNorm scale + bias)."""
    def double(a, b, mid=None):
        mid = mid or b
        return 9 * a * mid + 2 * mid + 9 * mid * b + 2 * b
    backbone = (double(d, d) + double(d, 2 * d) + double(2 * d, 4 * d) + double(4 * d, 8 * d) + double(8 * d, 8 * d)
                + double(16 * d, 4 * d, 8 * d) + double(8 * d, 2 * d, 4 * d) + double(4 * d, d, 2 * d)
                + double(2 * d, d, d) + d * d + d)
    return (in_ch + 2) * d + d + backbone + d * proj + proj + proj * out_ch + out_ch


@pytest.mark.parametrize("width", [8, 64])
def test_parameter_count(width):
    model = nnx.eval_shape(lambda: UNet(1, 1, width, rngs=nnx.Rngs(0)))
    assert n_params(model) == hand_count(width) == 4222 * width ** 2 + 271 * width + 257
    assert n_params(nnx.eval_shape(lambda: UNet(1, 1, 32, rngs=nnx.Rngs(0)))) == 4_332_257  # the docstring's


@pytest.mark.parametrize("spatial", [(13, 10), (16, 16), (9, 17)])
def test_shapes_on_odd_and_even_grids(spatial):
    """Tiny (3 levels) to keep compilation short; the 5-level network by shape inference only."""
    model = UNet(2, 3, 4, pad_multiple=4, n_levels=3, rngs=nnx.Rngs(0))
    out = model(jnp.ones((2, *spatial, 2)))
    assert out.shape == (2, *spatial, 3)
    assert auto_padding(spatial, (16, 16)) == tuple((-n) % 16 for n in spatial)
    full = UNet(2, 3, 4, rngs=nnx.Rngs(0))
    assert nnx.eval_shape(lambda m, x: m(x), full, jnp.ones((2, *spatial, 2))).shape == (2, *spatial, 3)


def test_eval_mode_uses_running_statistics():
    model = UNet(1, 1, 4, pad_multiple=2, n_levels=2, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 1))
    model.eval()
    full = model(x)
    single = model(x[:1])  # with running statistics a sample's output does not depend on the batch
    np.testing.assert_allclose(full[:1], single, rtol=1e-5, atol=1e-5)


def test_fixed_padding_errors_name_the_fix():
    model = UNet(1, 1, 4, padding=(3, 3), n_levels=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"20 x 20 padded by \[3, 3\] is 23 x 23.*padding=\[12, 12\]"):
        model(jnp.ones((1, 20, 20, 1)))
    assert UNet(1, 1, 4, padding=(12, 12), n_levels=2, rngs=nnx.Rngs(0)).pads((20, 20)) == (12, 12)
    with pytest.raises(ValueError, match=r"rank 4.*2-D model"):
        model(jnp.ones((1, 20, 1)))
    with pytest.raises(ValueError, match="in_channels=1"):
        model(jnp.ones((1, 20, 20, 3)))


def test_gradient_matches_finite_differences_float64():
    with jax.enable_x64(True):
        model = UNet(1, 1, 2, pad_multiple=2, projection_channels=4, n_levels=2, rngs=nnx.Rngs(0))
        x = jax.random.normal(jax.random.key(1), (2, 9, 7, 1), jnp.float64)
        auto, numeric = gradient_check(model, x)
    assert abs(auto - numeric) <= 1e-6 * max(1.0, abs(auto))


def test_short_fit_reduces_the_loss():
    x = jax.random.normal(jax.random.key(2), (4, 16, 16, 1))
    model = UNet(1, 1, 4, pad_multiple=2, projection_channels=16, n_levels=2, rngs=nnx.Rngs(0))
    losses = fit_losses(model, x, smooth_target(x), steps=40, lr=1e-2)
    assert losses[-1] < 0.5 * losses[0], losses[::8]
