"""U-Net baseline (the LSM backbone): up-/down-sampling against SciPy and loops, the parameter count
derived by hand, shapes on odd and even grids, padding errors, a float64 gradient check, and a short
fit in which the loss falls."""

from __future__ import annotations

from functools import partial

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


@pytest.fixture(autouse=True, scope="module")
def _cheap_prng():
    """The initialisers draw with the non-partitionable threefry: the same distributions, other bits,
    and an eager draw of a new shape compiles about three times faster than with the default."""
    with jax.threefry_partitionable(False):
        yield


# Every distinct (function, shape) is one XLA compilation, the bulk of these tests' time on CPU: models
# are built once per module, their forward passes jitted (an eager call compiles op by op), abstract
# models (nnx.eval_shape) wherever only shapes or errors are checked.
@partial(jax.jit, static_argnums=0)
def _apply(graphdef, state, x):
    return nnx.merge(graphdef, state)(x)


def jit_apply(model: nnx.Module, x: jax.Array) -> jax.Array:
    """``model(x)`` as one compiled call (the model itself is not updated)."""
    graphdef, state = nnx.split(model)
    return _apply(graphdef, state, x)


def abstract_apply(model: nnx.Module, x: jax.Array) -> jax.ShapeDtypeStruct:
    """The shape of ``model(x)`` by tracing only (raises the ValueErrors a real call would)."""
    return nnx.eval_shape(lambda m, x: m(x), model, x)


def random_model(make, seed: int = 0, dtype=None) -> nnx.Module:
    """The module ``make()`` builds, with seeded numpy draws for its parameters instead of its
    initialisers (which compile once per parameter shape), for tests whose property holds for any
    parameters (shapes, transcriptions, equivalences, symmetries, gradients): N(0, 1 / fan_in) for
    arrays (fan_in: the product of all axes but the last), N(0, 0.01) for vectors (biases; 1 + that for
    BatchNorm scales); BatchNorm statistics 0 (means) and 1 (variances). ``dtype``: of every array
    (float64 only under ``jax.enable_x64``)."""
    graphdef, params, stats, rest = nnx.split(nnx.eval_shape(make), nnx.Param, nnx.BatchStat, ...)
    if jax.tree.leaves(rest):
        raise TypeError(f"random_model fills parameters and batch statistics only; found {rest}")
    rng = np.random.default_rng(seed)

    def name(path):
        return [k.key for k in path if isinstance(k, jax.tree_util.DictKey)][-1]

    def param(path, leaf):
        if len(leaf.shape) >= 2:
            value = rng.standard_normal(leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
        else:
            value = 0.1 * rng.standard_normal(leaf.shape) + (name(path) == "scale")
        return jax.device_put(value.astype(dtype or leaf.dtype))  # a device array (jnp.asarray would compile)

    def stat(path, leaf):
        return jax.device_put(np.full(leaf.shape, float(name(path) == "var"), dtype or leaf.dtype))

    params = jax.tree_util.tree_map_with_path(param, params)
    return nnx.merge(graphdef, params, jax.tree_util.tree_map_with_path(stat, stats), rest)


class FitAndGradient:
    """A model, one batch ``x`` and its target ``y`` in float64, and the relative-L2 loss
    ``mean_i |model(x_i) - y_i| / |y_i|`` with its gradient in the parameters as ONE compiled function,
    shared by the gradient check and the short fit (train mode: BatchNorm uses the batch statistics).

    float64 for the finite differences; the fit runs in it too because a second (float32) compilation
    of the model's forward and backward pass would cost more than the whole fit."""

    def __init__(self, model: nnx.Module, x, y) -> None:
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        to64 = lambda t: jax.tree.map(lambda a: np.asarray(a, np.float64), t)  # noqa: E731
        self.params, self.rest = to64(params), to64(rest)
        self.x, self.y = np.asarray(x, np.float64), np.asarray(y, np.float64)

        def loss_of(p, rest, x, y):
            m = nnx.merge(graphdef, p, rest, copy=True)
            err = (m(x) - y).reshape(len(y), -1)
            loss = jnp.mean(jnp.linalg.norm(err, axis=1) / jnp.linalg.norm(y.reshape(len(y), -1), axis=1))
            return loss, nnx.state(m, nnx.Not(nnx.Param))  # the updated batch statistics

        self._value_and_grad = jax.jit(jax.value_and_grad(loss_of, has_aux=True))

    def value_and_grad(self, params, rest=None):
        """((loss, new rest), gradient) at ``params``."""
        with jax.enable_x64(True):
            return self._value_and_grad(params, self.rest if rest is None else rest, self.x, self.y)

    def gradient_check(self, seed: int = 0, eps: float = 1e-6) -> tuple[float, float]:
        """(autodiff, central difference) directional derivative of the loss along a random unit
        direction of all parameters (a seeded numpy draw; shifts and projection in numpy)."""
        leaves, treedef = jax.tree.flatten(self.params)
        rng = np.random.default_rng(seed)
        dirs = [rng.standard_normal(leaf.shape) for leaf in leaves]
        norm = np.sqrt(sum(np.sum(d * d) for d in dirs))
        # a unit step: eps is the distance moved (crossing a ReLU kink is unlikely)
        direction = jax.tree.unflatten(treedef, [d / norm for d in dirs])
        grad = self.value_and_grad(self.params)[1]
        auto = sum(np.vdot(np.asarray(g), d) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction)))
        shift = lambda s: jax.tree.map(lambda a, b: a + s * b, self.params, direction)  # noqa: E731
        loss = lambda p: float(self.value_and_grad(p)[0][0])  # noqa: E731
        return float(auto), (loss(shift(eps)) - loss(shift(-eps))) / (2 * eps)

    def fit_losses(self, steps: int, lr: float = 3e-3) -> list[float]:
        """The losses of ``steps`` Adam steps from the initial parameters, on the one batch."""
        tx = optax.adam(lr)

        @jax.jit
        def update(g, opt, p):
            updates, opt = tx.update(g, opt, p)
            return optax.apply_updates(p, updates), opt

        params, rest, losses = self.params, self.rest, []
        with jax.enable_x64(True):
            opt = jax.jit(tx.init)(params)
            for _ in range(steps):
                (loss, rest), g = self.value_and_grad(params, rest)
                params, opt = update(g, opt, params)
                losses.append(float(loss))
        return losses


@jax.jit
def smooth_target(x: jax.Array) -> jax.Array:
    """A fixed nonlinear local map to learn: a 3x3 box average of x, squared plus x."""
    k = jnp.ones((3, 3, 1, 1)) / 9
    avg = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return avg ** 2 + x


@pytest.mark.parametrize("shape", [(1, 5, 4, 3), (2, 1, 6, 1), (1, 7, 7, 2)])
def test_bilinear_upsample_matches_scipy_zoom_with_aligned_corners(shape):
    x = np.random.default_rng(0).normal(size=shape)
    ours = np.asarray(jax.jit(bilinear_upsample_2x)(x))
    # scipy's zoom with grid_mode=False maps the first and last samples onto each other: align_corners.
    ref = scipy.ndimage.zoom(x, (1, 2, 2, 1), order=1, grid_mode=False, mode="nearest")
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_max_pool_drops_the_odd_row_like_torch():
    x = np.random.default_rng(1).normal(size=(2, 7, 6, 3)).astype(np.float32)
    ours = np.asarray(jax.jit(max_pool_2x)(x))
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


@pytest.fixture(scope="module")
def small_unet():
    """The 2-level U-Net (its own initialisers) of the mode, gradient and fitting tests, built once:
    each parameter shape costs a compilation of its initialiser. Width 8: XLA's CPU compiler takes
    twice as long over float64 convolutions of 4 or 6 channels as over 8, 12 or 16."""
    return UNet(1, 1, 8, pad_multiple=2, projection_channels=16, n_levels=2, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def unet_fit(small_unet):
    """On an odd grid (padded to 14 x 12): a 3x3 box average of x, squared plus x, to learn."""
    x = np.random.default_rng(1).standard_normal((4, 13, 11, 1))
    return FitAndGradient(small_unet, x, smooth_target(x))


@pytest.fixture(scope="module")
def three_level_unet():
    """Random parameters: the shapes do not depend on them."""
    return random_model(lambda: UNet(2, 3, 4, pad_multiple=4, projection_channels=16, n_levels=3, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("spatial", [(13, 10), (16, 16), (9, 17)])
def test_shapes_on_odd_and_even_grids(spatial, three_level_unet):
    """Tiny (3 levels) to keep compilation short; the 5-level network by shape inference only."""
    out = np.asarray(jit_apply(three_level_unet, np.ones((2, *spatial, 2), np.float32)))
    assert out.shape == (2, *spatial, 3) and np.isfinite(out).all()
    assert auto_padding(spatial, (16, 16)) == tuple((-n) % 16 for n in spatial)
    full = nnx.eval_shape(lambda: UNet(2, 3, 4, rngs=nnx.Rngs(0)))
    assert abstract_apply(full, jax.ShapeDtypeStruct((2, *spatial, 2), jnp.float32)).shape == (2, *spatial, 3)


def test_eval_mode_uses_running_statistics(small_unet):
    model = nnx.clone(small_unet)
    x = np.random.default_rng(0).standard_normal((2, 16, 16, 1)).astype(np.float32)
    model.eval()
    full = jit_apply(model, x)
    single = jit_apply(model, x[:1])  # with running statistics a sample's output does not depend on the batch
    np.testing.assert_allclose(full[:1], single, rtol=1e-5, atol=1e-5)


def test_fixed_padding_errors_name_the_fix():
    model = nnx.eval_shape(lambda: UNet(1, 1, 4, padding=(3, 3), n_levels=2, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"20 x 20 padded by \[3, 3\] is 23 x 23.*padding=\[12, 12\]"):
        abstract_apply(model, jax.ShapeDtypeStruct((1, 20, 20, 1), jnp.float32))
    assert nnx.eval_shape(lambda: UNet(1, 1, 4, padding=(12, 12), n_levels=2, rngs=nnx.Rngs(0))).pads((20, 20)) == (12, 12)
    with pytest.raises(ValueError, match=r"rank 4.*2-D model"):
        abstract_apply(model, jax.ShapeDtypeStruct((1, 20, 1), jnp.float32))
    with pytest.raises(ValueError, match="in_channels=1"):
        abstract_apply(model, jax.ShapeDtypeStruct((1, 20, 20, 3), jnp.float32))


def test_gradient_matches_finite_differences_float64(unet_fit):
    auto, numeric = unet_fit.gradient_check()
    assert abs(auto - numeric) <= 1e-6 * max(1.0, abs(auto))


def test_short_fit_reduces_the_loss(unet_fit):
    losses = unet_fit.fit_losses(steps=40, lr=1e-2)
    assert losses[-1] < 0.5 * losses[0], losses[::8]
