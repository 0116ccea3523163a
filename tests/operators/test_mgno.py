"""MgNO: convolutions and the V-cycle against naive numpy transcriptions, the paper's parameter count,
shapes on odd and even grids, periodic shift equivariance, gradients, a short training run, errors."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from operators import MgNO
from operators.mgno import MgConv, conv, conv_transpose, grid_hierarchy
from test_unet import random_model


def _n_params(model: nnx.Module) -> int:
    return sum(int(leaf.size) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.fixture(autouse=True, scope="module")
def _cheap_prng():
    """The initialisers draw with the non-partitionable threefry: the same distributions, other bits,
    and an eager draw of a new shape compiles about three times faster than with the default."""
    with jax.threefry_partitionable(False):
        yield


@partial(jax.jit, static_argnums=0)
def _apply(graphdef, state, x):
    return nnx.merge(graphdef, state)(x)


def _jit_apply(module, x):
    """module(x) in one compiled call, one compilation per model and shape (eager NNX convolutions
    compile op by op: much slower)."""
    graphdef, state = nnx.split(module)
    return _apply(graphdef, state, x)


# -- naive numpy transcriptions (the oracles) ------------------------------------------------------------
_NP_PAD = {"zeros": "constant", "circular": "wrap", "reflect": "reflect"}


def _conv_naive(x, w, stride=1, mode="zeros", bias=None):
    """y[i] = sum_a x_pad[stride i + a] . w[a], x padded by 1 (3-tap kernels), loops over output points."""
    d = x.ndim - 2
    xp = np.pad(x, [(0, 0)] + [(1, 1)] * d + [(0, 0)], mode=_NP_PAD[mode])
    out_shape = [-(-n // stride) for n in x.shape[1:-1]]
    y = np.zeros((x.shape[0], *out_shape, w.shape[-1]))
    for i in np.ndindex(*out_shape):
        for a in np.ndindex(*w.shape[:d]):
            y[(slice(None), *i)] += xp[(slice(None), *(stride * ii + aa for ii, aa in zip(i, a)))] @ w[a]
    return y if bias is None else y + bias


def _conv_transpose_naive(x, w, fine, mode="zeros"):
    """Scatter: y[2 i - 1 + a] += x[i] . w[a], a < 4 on even fine axes and < 3 on odd ones; the
    circular mode scatters periodically onto 2 * coarse points (then cut to ``fine``)."""
    coarse, d = x.shape[1:-1], x.ndim - 2
    ks = [4 if n % 2 == 0 else 3 for n in fine]
    y = np.zeros((x.shape[0], *(2 * n for n in coarse), w.shape[-1]))
    for i in np.ndindex(*coarse):
        for a in np.ndindex(*ks):
            o = tuple(2 * ii - 1 + aa for ii, aa in zip(i, a))
            if mode == "circular":
                o = tuple(oo % (2 * n) for oo, n in zip(o, coarse))
            if all(0 <= oo < n for oo, n in zip(o, fine)):
                y[(slice(None), *o)] += x[(slice(None), *i)] @ w[a]
    return y[(slice(None), *(slice(0, n) for n in fine))]


def _np_conv_module(m, x, stride=1, mode="zeros"):
    bias = None if m.bias is None else np.asarray(m.bias[...])
    return _conv_naive(x, np.asarray(m.kernel[...]), stride, mode, bias)


def _v_cycle_naive(mg: MgConv, f: np.ndarray, mode: str) -> np.ndarray:
    """The V-cycle of the paper / MgConv_DC written out level by level with the naive convolutions."""
    def smooth(step, u, f):
        if step.A is None:
            return _np_conv_module(step.S, f, mode=mode)
        return u + _np_conv_module(step.S, f - _np_conv_module(step.A, u, mode=mode), mode=mode)

    levels = len(mg.pre)
    us, fs, u = [], [], None
    for l in range(levels):
        if l > 0:
            r = f - _np_conv_module(mg.residual[l - 1], u, mode=mode) if mg.residual is not None else f
            f = _np_conv_module(mg.restrict_f[l - 1], r, 2, mode)
            u = _np_conv_module(mg.restrict_u[l - 1], u, 2, mode)
        for step in mg.pre[l]:
            u = smooth(step, u, f)
        us.append(u)
        fs.append(f)
    for l in range(levels - 2, -1, -1):
        u = us[l] + _conv_transpose_naive(u, np.asarray(mg.prolong[l].kernel[...]), us[l].shape[1:-1], mode)
        for step in mg.post[l]:
            u = smooth(step, u, fs[l])
    return u


# -- convolutions ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("spatial,stride,mode", [((7,), 2, "reflect"), ((6, 5), 1, "zeros"), ((6, 5), 2, "circular"),
                                                 ((5, 4), 2, "reflect"), ((3, 4, 3), 2, "zeros")])
def test_conv_matches_naive(spatial, stride, mode):
    rng = np.random.default_rng(0)
    d = len(spatial)
    x, w = rng.standard_normal((2, *spatial, 3)), rng.standard_normal((3,) * d + (3, 2))
    with jax.enable_x64(True):
        got = np.asarray(jax.jit(conv, static_argnums=(2, 3))(x, w, stride, mode))
    np.testing.assert_allclose(got, _conv_naive(x, w, stride, mode), atol=1e-12)
    assert got.shape[1:-1] == tuple(-(-n // stride) for n in spatial)


@pytest.mark.parametrize("fine,mode", [((6,), "zeros"), ((7,), "circular"), ((6, 7), "zeros"), ((8, 6), "circular"),
                                       ((4, 5, 3), "zeros")])
def test_conv_transpose_matches_naive_scatter_on_odd_and_even_grids(fine, mode):
    rng = np.random.default_rng(1)
    d, coarse = len(fine), tuple((n + 1) // 2 for n in fine)
    x, w = rng.standard_normal((2, *coarse, 3)), rng.standard_normal((4,) * d + (3, 2))
    with jax.enable_x64(True):
        got = np.asarray(jax.jit(conv_transpose, static_argnums=(2, 3))(x, w, fine, mode))
    np.testing.assert_allclose(got, _conv_transpose_naive(x, w, fine, mode), atol=1e-12)
    with pytest.raises(ValueError, match="not ceil"):
        conv_transpose(jnp.asarray(x), jnp.asarray(w), tuple(n + 2 for n in fine))


def test_grid_hierarchy_halves_with_ceiling():
    assert grid_hierarchy((211, 64), 6) == [(211, 64), (106, 32), (53, 16), (27, 8), (14, 4), (7, 2)]


# -- the V-cycle and the model ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,residual,bias,post", [("zeros", False, False, None), ("reflect", True, True, (1, 0)),
                                                     ("circular", False, True, (0, 2))])
def test_mg_conv_matches_naive_v_cycle(mode, residual, bias, post):
    with jax.enable_x64(True):  # random float64 parameters: the transcription holds for any
        mg = random_model(lambda: MgConv(2, 3, iterations=(2, 0, 1), post_iterations=post, padding_mode=mode,
                                         bias=bias, residual_restriction=residual, rngs=nnx.Rngs(0)), dtype=np.float64)
        f = np.random.default_rng(2).standard_normal((1, 7, 6, 2))  # 7 -> 4 -> 2 and 6 -> 3 -> 2
        got = np.asarray(_jit_apply(mg, f))
    np.testing.assert_allclose(got, _v_cycle_naive(mg, f, mode), atol=1e-11)


def _expected_params(c_in, c_out, c, layers, its, post=None, bias=False, residual=False, d=2):
    """The count read off the architecture: per layer and level, 3^d convolutions S (c_f -> c) and A
    (c -> c_f) per smoothing step (the first step of level 0 has no A), Pi (c -> c) and R (c_f -> c_f)
    per restriction (+ A with residual restriction), a 4^d prolongation (c -> c) per level below the
    top, and a 1x1 convolution with bias; a bias-free 1x1 projection at the end."""
    total, k3, k4 = 0, 3**d, 4**d
    post = post or [0] * (len(its) - 1)
    for cf in [c_in] + [c] * (layers - 1):
        steps = sum(its) + sum(post)
        total += steps * k3 * cf * c + (steps - 1) * k3 * c * cf  # S and A weights
        if bias:
            total += steps * c + (steps - 1) * cf
        restrictions = len(its) - 1
        total += restrictions * (k3 * c * c + k3 * cf * cf + k4 * c * c)
        if residual:
            total += restrictions * (k3 * c * cf + (cf if bias else 0))
        total += cf * c + c  # the pointwise W u + b
    return total + c * c_out


@pytest.mark.parametrize("kwargs", [
    dict(c_in=1, c_out=1, c=24, layers=4, its=[1, 1, 1, 1, 1, 2]),  # the paper's Darcy MgNO
    dict(c_in=1, c_out=1, c=24, layers=5, its=[1, 1, 1, 1, 1, 2]),  # the smooth-Darcy command
    dict(c_in=3, c_out=2, c=8, layers=2, its=[2, 0, 1], post=[1, 1], bias=True, residual=True),
    dict(c_in=2, c_out=1, c=4, layers=3, its=[1, 2], d=1),
    dict(c_in=1, c_out=2, c=4, layers=1, its=[1, 1], residual=True, d=3),
])
def test_parameter_count(kwargs):
    k = dict(kwargs)
    model = nnx.eval_shape(lambda: MgNO(k["c_in"], k["c_out"], k["c"], k["layers"], k["its"], k.get("post"),
                                        bias=k.get("bias", False), residual_restriction=k.get("residual", False),
                                        spatial_dims=k.get("d", 2), rngs=nnx.Rngs(0)))
    assert _n_params(model) == _expected_params(**kwargs)


def test_paper_darcy_configuration_has_572661_parameters():
    model = nnx.eval_shape(lambda: MgNO(1, 1, channels=24, n_layers=4, iterations=(1, 1, 1, 1, 1, 2),
                                        rngs=nnx.Rngs(0)))
    assert _n_params(model) == 572_661  # MgNO paper, Table 1: 0.57 M


def test_one_model_runs_on_odd_and_even_grids_and_in_1d():
    """The same parameters on odd, even and mixed hierarchies (3-D convolutions: the naive tests above);
    random parameters, the shapes do not depend on them."""
    model = random_model(lambda: MgNO(2, 3, channels=2, n_layers=1, iterations=(1, 1, 2), rngs=nnx.Rngs(0)))
    for spatial in [(9, 9), (8, 8), (9, 12)]:
        out = np.asarray(_jit_apply(model, np.random.default_rng(0).standard_normal((2, *spatial, 2), np.float32)))
        assert out.shape == (2, *spatial, 3) and np.isfinite(out).all()
    model = random_model(lambda: MgNO(2, 3, channels=2, n_layers=1, iterations=(1, 1), spatial_dims=1,
                                      rngs=nnx.Rngs(0)))
    assert _jit_apply(model, np.ones((2, 17, 2), np.float32)).shape == (2, 17, 3)


def test_circular_padding_is_equivariant_to_periodic_shifts_of_the_coarsest_cell():
    """With periodic padding on a grid divisible by 2^(L-1), shifting the input by a multiple of
    2^(L-1) points shifts the output the same way (every stride-2 level sees the same shifted grid).
    Random parameters: the symmetry holds for any."""
    model = random_model(lambda: MgNO(1, 1, channels=4, n_layers=2, iterations=(1, 1, 1), padding_mode="circular",
                                      rngs=nnx.Rngs(0)))
    a = np.random.default_rng(1).standard_normal((1, 16, 12, 1)).astype(np.float32)
    shifts = [(4, -8), (1, 0)]
    batch = np.concatenate([a] + [np.roll(a, s, axis=(1, 2)) for s in shifts])  # (3, 16, 12, 1)
    out = np.asarray(_jit_apply(model, batch))
    np.testing.assert_allclose(out[1], np.roll(out[0], shifts[0], axis=(0, 1)), atol=1e-5)
    # a shift by one point is not a symmetry of the stride-2 hierarchy
    assert float(np.abs(out[2] - np.roll(out[0], shifts[1], axis=(0, 1))).max()) > 1e-3


def test_gradient_matches_finite_differences():
    """Directional derivatives (random directions in parameter and input space) against central
    differences, float64, on a tiny model with every optional part switched on (random parameters)."""
    with jax.enable_x64(True):
        model = random_model(lambda: MgNO(1, 1, channels=2, n_layers=1, iterations=(1, 1), post_iterations=(1,),
                                          padding_mode="reflect", bias=True, residual_restriction=True,
                                          rngs=nnx.Rngs(0)), dtype=np.float64)
        graphdef, params = nnx.split(model)
        params = jax.tree.map(np.asarray, params)  # numpy: the shifts below are numpy sums, no compilation
        rng = np.random.default_rng(2)
        a, target = rng.standard_normal((2, 2, 5, 6, 1))

        def loss(p, x):
            return jnp.sum((nnx.merge(graphdef, p)(x) - target) ** 2)

        # one compilation: the gradient at (params, a), the values at the shifted points
        value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))

        def directional_fd(f, x, v, eps=1e-5):  # central differences: O(eps^2) truncation error
            shifted = lambda s: jax.tree.map(lambda xi, vi: xi + s * eps * vi, x, v)  # noqa: E731
            return (f(shifted(1.0)) - f(shifted(-1.0))) / (2 * eps)

        leaves, treedef = jax.tree.flatten(params)
        v_params = jax.tree.unflatten(treedef, [rng.standard_normal(x.shape) for x in leaves])
        v_input = rng.standard_normal(a.shape)
        g_params, g_input = value_and_grad(params, a)[1]
        analytic = sum(np.vdot(np.asarray(g), v) for g, v in zip(jax.tree.leaves(g_params), jax.tree.leaves(v_params)))
        value = lambda p, x: float(value_and_grad(p, x)[0])  # noqa: E731
        np.testing.assert_allclose(float(analytic), directional_fd(lambda p: value(p, a), params, v_params),
                                   rtol=1e-6)
        np.testing.assert_allclose(float(np.vdot(np.asarray(g_input), v_input)),
                                   directional_fd(lambda x: value(params, x), a, v_input), rtol=1e-6)


@pytest.mark.slow  # a training to a tolerance
def test_short_training_fits_a_discrete_poisson_solve():
    """Learn f -> u with -Laplacian_h u = f, u = 0 outside (5-point, 9 x 9): a linear elliptic solve,
    the problem class a V-cycle is built for. 80 Adam steps must cut the relative L2 error by 3x."""
    n = 9
    lap = (np.diag(np.full(n, 2.0)) - np.diag(np.ones(n - 1), 1) - np.diag(np.ones(n - 1), -1)) * (n + 1) ** 2
    op = np.kron(lap, np.eye(n)) + np.kron(np.eye(n), lap)  # (n^2, n^2)
    f = np.random.default_rng(3).standard_normal((32, n * n))
    u = np.linalg.solve(op, f.T).T
    scale = np.abs(u).max()
    x = jax.device_put(f.reshape(32, n, n, 1).astype(np.float32))
    y = jax.device_put((u.reshape(32, n, n, 1) / scale).astype(np.float32))

    model = MgNO(1, 1, channels=6, n_layers=1, iterations=(1, 1, 1), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    tx = optax.adam(1e-2)

    def rel(p):
        pred = nnx.merge(graphdef, p)(x)
        return jnp.mean(jnp.linalg.norm((pred - y).reshape(32, -1), axis=1) / jnp.linalg.norm(y.reshape(32, -1), axis=1))

    @jax.jit
    def train(p, state):
        def body(carry, _):
            p, state = carry
            loss, g = jax.value_and_grad(rel)(p)
            updates, state = tx.update(g, state, p)
            return (optax.apply_updates(p, updates), state), loss
        (p, state), losses = jax.lax.scan(body, (p, state), None, length=80)
        return losses[0], rel(p)

    first, last = (float(v) for v in train(params, tx.init(params)))
    assert np.isfinite(last) and last < first / 3, (first, last)


def test_input_and_constructor_errors():
    model = nnx.eval_shape(lambda: MgNO(1, 1, channels=2, n_layers=1, iterations=(1, 1, 1, 1, 1, 2), rngs=nnx.Rngs(0)))
    call = lambda *shape: nnx.eval_shape(lambda m, x: m(x), model, jax.ShapeDtypeStruct(shape, jnp.float32))  # noqa: E731
    assert call(1, 33, 33, 1).shape == (1, 33, 33, 1)
    with pytest.raises(ValueError, match=r"cannot take the grid \(32, 40\).*\(1, 2\).*at least 33 points.*fewer levels"):
        call(1, 32, 40, 1)
    with pytest.raises(ValueError, match=r"\(batch, n1, n2, in_channels\), rank 4.*got shape \(33, 33, 1\)"):
        call(33, 33, 1)
    with pytest.raises(ValueError, match="in_channels=1"):
        call(1, 33, 33, 2)
    with pytest.raises(ValueError, match="iterations"):
        MgNO(1, 1, iterations=(0, 1), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="post_iterations"):
        MgNO(1, 1, iterations=(1, 1), post_iterations=(1, 1), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="padding_mode='replicate'.*zeros"):
        MgNO(1, 1, padding_mode="replicate", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="activation"):
        MgNO(1, 1, activation="swish", rngs=nnx.Rngs(0))
