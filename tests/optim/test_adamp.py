"""AdamP / SGDP against a naive transcription of clovaai/AdamP, and the properties the paper relies on.

Heo, Chun, Oh, Han, Yun, Kim, Uh, Ha, "AdamP: Slowing Down the Slowdown for Momentum Optimizers on
Scale-invariant Weights", ICLR 2021, arXiv:2006.08217; code clovaai/AdamP (``adamp/adamp.py``,
``adamp/sgdp.py``). Oracles: the reference ``step`` / ``_projection`` written out with loops in NumPy,
on the kernel with its output-channel axis moved first (the PyTorch layout the reference assumes);
optax.adamw / torch-style momentum SGD where nothing is projected; the update orthogonal to each
weight row when it is; the detector on real gradients of a conv + BatchNorm, a weight-normalised layer
and a classifier; the 2-D scale-invariant toy of the paper's project page (clovaai.github.io/AdamP).
"""
from __future__ import annotations

import math

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optim import adamp, sgdp
from optim.adamp import CHANNEL_VIEW, LAYER_VIEW, NO_PROJECTION, channel_rows, projection_view
from optim.param_groups import ParamGroup, partition_optimizer

# ------------------------------------------------------------------------------------------------
# The reference, naively (float64, loops, PyTorch layout inside the projection).
# ------------------------------------------------------------------------------------------------


def naive_projection(p, grad, perturb, delta, wd_ratio, eps):
    """clovaai/AdamP ``_projection`` for a Flax-layout tensor (output channel last): (perturb, wd, view)."""
    to_torch = lambda x: np.moveaxis(x, -1, 0)  # (out, ...) as the reference's p.size(0)
    P, G, U = to_torch(p), to_torch(grad), to_torch(perturb)
    views = [(CHANNEL_VIEW, lambda x: x.reshape(x.shape[0], -1)), (LAYER_VIEW, lambda x: x.reshape(1, -1))]
    for name, view in views:
        Pv, Gv, Uv = view(P), view(G), view(U)
        cosines = []
        for r in range(Pv.shape[0]):  # F.cosine_similarity(grad, p, dim=1, eps).abs()
            norms = max(np.linalg.norm(Gv[r]), eps) * max(np.linalg.norm(Pv[r]), eps)
            cosines.append(abs(np.dot(Gv[r], Pv[r])) / norms)
        if max(cosines) < delta / math.sqrt(Pv.shape[1]):
            out = Uv.copy()
            for r in range(Pv.shape[0]):
                unit = Pv[r] / (np.linalg.norm(Pv[r]) + eps)
                out[r] = Uv[r] - unit * np.dot(unit, Uv[r])
            return np.moveaxis(out.reshape(P.shape), 0, -1), wd_ratio, name
    return perturb, 1.0, NO_PROJECTION


def naive_adamp(params, grad_fn, steps, lr, b1, b2, eps, weight_decay, delta, wd_ratio, nesterov):
    """clovaai/AdamP ``AdamP.step``; ``lr(t)`` the learning rate of step t (0-based)."""
    params = {k: v.astype(np.float64).copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v2 = {k: np.zeros_like(v) for k, v in params.items()}
    views = []
    for t in range(steps):
        grads, seen = grad_fn(params, t), {}
        for k, p in params.items():
            g = grads[k]
            m[k] = b1 * m[k] + (1 - b1) * g
            v2[k] = b2 * v2[k] + (1 - b2) * g * g
            bias1, bias2 = 1 - b1 ** (t + 1), 1 - b2 ** (t + 1)
            denom = np.sqrt(v2[k]) / math.sqrt(bias2) + eps
            step_size = lr(t) / bias1
            perturb = (b1 * m[k] + (1 - b1) * g) / denom if nesterov else m[k] / denom
            ratio, seen[k] = 1.0, NO_PROJECTION
            if p.ndim > 1:
                perturb, ratio, seen[k] = naive_projection(p, g, perturb, delta, wd_ratio, eps)
            if weight_decay > 0:
                p = p * (1 - lr(t) * weight_decay * ratio)
            params[k] = p - step_size * perturb
        views.append(seen)
    return params, views


def naive_sgdp(params, grad_fn, steps, lr, momentum, dampening, weight_decay, nesterov, eps, delta, wd_ratio):
    """clovaai/AdamP ``SGDP.step``."""
    params = {k: v.astype(np.float64).copy() for k, v in params.items()}
    buf = {k: np.zeros_like(v) for k, v in params.items()}
    views = []
    for t in range(steps):
        grads, seen = grad_fn(params, t), {}
        for k, p in params.items():
            g = grads[k]
            buf[k] = momentum * buf[k] + (1 - dampening) * g
            d_p = g + momentum * buf[k] if nesterov else buf[k]
            ratio, seen[k] = 1.0, NO_PROJECTION
            if p.ndim > 1:
                d_p, ratio, seen[k] = naive_projection(p, g, d_p, delta, wd_ratio, eps)
                if not nesterov:  # d_p is buf there, and the reference's _projection edits it in place
                    buf[k] = d_p
            if weight_decay > 0:
                p = p * (1 - lr(t) * weight_decay * ratio / (1 - momentum))
            params[k] = p - lr(t) * d_p
        views.append(seen)
    return params, views


# ------------------------------------------------------------------------------------------------
# A problem with every branch: bias, plain weights, a row-wise and a layer-wise scale-invariant one.
# ------------------------------------------------------------------------------------------------

SHAPES = {"bias": (3,), "dense": (4, 5), "conv": (3, 3, 2, 4), "weightnorm": (4, 5)}
EXPECTED_VIEW = {"bias": NO_PROJECTION, "dense": NO_PROJECTION, "conv": CHANNEL_VIEW,
                 "weightnorm": LAYER_VIEW}


def without_row_components(r, p):
    """r minus its component along each output-channel row of p (last axis = output channel)."""
    num = np.sum(r * p, axis=tuple(range(p.ndim - 1)), keepdims=True)
    den = np.sum(p * p, axis=tuple(range(p.ndim - 1)), keepdims=True)
    return r - p * num / den


def problem_grads(params, t):
    """Random gradients (NumPy, float64, seeded by t): with a radial part in every row of "dense"
    (as weight decay gives, so no view passes), ⟂ each row of "conv", and ⟂ "weightnorm" as a whole
    while its rows keep radial parts of alternating sign."""
    rng = np.random.default_rng(100 + t)
    raw = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    raw["dense"] = raw["dense"] + 3 * p["dense"] / np.sqrt(np.mean(p["dense"] ** 2))
    raw["conv"] = without_row_components(raw["conv"], p["conv"])
    w = p["weightnorm"]
    g = raw["weightnorm"] + w * np.array([1.0, -1.0, 1.0, -1.0, 1.0])  # (in, out): a sign per row
    raw["weightnorm"] = g - w * np.sum(g * w) / np.sum(w * w)
    return raw


def initial_params(seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}


def run_jax(tx, params, grad_fn, steps, dtype=jnp.float32):
    params = {k: jnp.asarray(v, dtype) for k, v in params.items()}
    state, update = tx.init(params), jax.jit(tx.update)
    for t in range(steps):
        g = {k: jnp.asarray(v, dtype) for k, v in grad_fn(params, t).items()}
        u, state = update(g, state, params)
        params = optax.apply_updates(params, u)
    return {k: np.asarray(v) for k, v in params.items()}


SCHEDULE = lambda t: 0.05 * 0.8**t  # a callable learning rate, as the runner's schedules


# float64 shows the algebra is the reference's; float32 that nothing beyond round-off is lost (Adam's
# normalisation amplifies the float32 error of small gradient entries, hence 2e-5 there).
PRECISIONS = {"float64": 1e-12, "float32": 2e-5}


def compare_with_reference(naive, tx, kw, lr, dtype):
    lr_of = lr if callable(lr) else (lambda t: lr)
    p0, steps = initial_params(), 6
    want, naive_views = naive(p0, problem_grads, steps, lr_of, **kw)
    with jax.enable_x64(dtype == "float64"):
        got = run_jax(tx(lr, **kw), p0, problem_grads, steps, jnp.dtype(dtype))
    assert naive_views == [EXPECTED_VIEW] * steps  # every branch of the projection is exercised
    for k in SHAPES:
        np.testing.assert_allclose(got[k], want[k], rtol=PRECISIONS[dtype], atol=PRECISIONS[dtype], err_msg=k)
        assert np.abs(want[k] - p0[k]).max() > 0.02  # every tensor moved


CASES = [(0.05, "float64"), (SCHEDULE, "float64"), (SCHEDULE, "float32")]
CASE_IDS = ["constant-float64", "schedule-float64", "schedule-float32"]


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("lr, dtype", CASES, ids=CASE_IDS)
def test_adamp_matches_the_reference(nesterov, lr, dtype):
    kw = dict(b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.5, delta=0.1, wd_ratio=0.1, nesterov=nesterov)
    compare_with_reference(naive_adamp, adamp, kw, lr, dtype)


@pytest.mark.parametrize("momentum, dampening, nesterov",
                         [(0.9, 0.0, True), (0.9, 0.1, False), (0.0, 0.0, False)])
@pytest.mark.parametrize("lr, dtype", CASES, ids=CASE_IDS)
def test_sgdp_matches_the_reference(momentum, dampening, nesterov, lr, dtype):
    kw = dict(momentum=momentum, dampening=dampening, weight_decay=0.5, nesterov=nesterov, eps=1e-8,
              delta=0.1, wd_ratio=0.1)
    compare_with_reference(naive_sgdp, sgdp, kw, lr, dtype)


# ------------------------------------------------------------------------------------------------
# What the projection does and does not touch.
# ------------------------------------------------------------------------------------------------

def momentum_sgd_decoupled(lr, momentum, weight_decay, nesterov):
    """torch SGD momentum (buffer from zero, no dampening) with decoupled decay λ/(1 − μ), from optax."""
    return optax.chain(optax.trace(momentum, nesterov=nesterov),
                       optax.add_decayed_weights(weight_decay / (1 - momentum)),
                       optax.scale_by_learning_rate(lr))


@pytest.mark.parametrize("name", ["adamp", "sgdp"])
def test_projection_touches_only_scale_invariant_weights(name):
    lr, wd, steps = 0.05, 0.3, 4
    if name == "adamp":
        ours, plain = adamp(lr, weight_decay=wd), optax.adamw(lr, 0.9, 0.999, 1e-8, weight_decay=wd)
        ours_no_decay = adamp(lr)
    else:
        ours, plain = sgdp(lr, 0.9, weight_decay=wd, nesterov=True), momentum_sgd_decoupled(lr, 0.9, wd, True)
        ours_no_decay = sgdp(lr, 0.9, nesterov=True)
    p0 = initial_params(1)
    got = run_jax(ours, p0, problem_grads, steps)
    reference = run_jax(plain, p0, problem_grads, steps)
    for k in ("bias", "dense"):  # ndim 1, and a weight that is not scale invariant: plain optimizer
        np.testing.assert_allclose(got[k], reference[k], rtol=1e-6, atol=1e-7, err_msg=k)
    for k in ("conv", "weightnorm"):
        assert np.abs(got[k] - reference[k]).max() > 1e-3, k  # projected: not the plain step

    # Without decay the update of a scale-invariant weight is orthogonal to it (per row / overall).
    params = {k: jnp.asarray(v) for k, v in p0.items()}
    state, update = ours_no_decay.init(params), jax.jit(ours_no_decay.update)
    for t in range(steps):
        grads = {k: jnp.asarray(v, jnp.float32) for k, v in problem_grads(params, t).items()}
        updates, state = update(grads, state, params)
        rows_w, rows_u = channel_rows(params["conv"]), channel_rows(updates["conv"])  # (4, 18)
        norms = np.linalg.norm(rows_w, axis=1) * np.linalg.norm(rows_u, axis=1)
        cos_rows = np.sum(rows_w * rows_u, 1) / norms
        assert np.abs(cos_rows).max() < 1e-5, cos_rows
        w, u = np.ravel(params["weightnorm"]), np.ravel(updates["weightnorm"])
        assert abs(w @ u) / np.linalg.norm(w) / np.linalg.norm(u) < 1e-5
        rows_w, rows_u = channel_rows(params["weightnorm"]), channel_rows(updates["weightnorm"])
        assert np.abs(np.sum(rows_w * rows_u, 1)).max() > 1e-4  # layer view: rows keep radial parts
        params = optax.apply_updates(params, updates)


def test_detector_on_real_gradients():
    """Conv followed by BatchNorm -> channel view; weight-normalised layer -> layer
    view; final classifier -> no projection."""
    rng = np.random.default_rng(7)
    normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
    images = normal(8, 6, 6, 2)       # (batch, x, y, channels)
    conv_kernel = normal(3, 3, 2, 4)  # HWIO
    target = normal(8, 4, 4, 4)

    def conv_bn_loss(kernel):
        y = jax.lax.conv_general_dilated(images, kernel, (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))  # (8, 4, 4, 4)
        y = (y - y.mean((0, 1, 2))) / jnp.sqrt(y.var((0, 1, 2)))  # BatchNorm (train mode), no eps
        return jnp.sum(jnp.tanh(y) * target)

    x, w = normal(16, 4), normal(4, 5)
    labels = jnp.asarray(rng.integers(0, 5, size=16))
    weight_norm_loss = lambda w: jnp.sum(jnp.sin(x @ (w / jnp.linalg.norm(w))))
    classifier_loss = lambda w: optax.softmax_cross_entropy_with_integer_labels(x @ w, labels).mean()

    cases = [(conv_kernel, conv_bn_loss, CHANNEL_VIEW), (w, weight_norm_loss, LAYER_VIEW),
             (w, classifier_loss, NO_PROJECTION)]
    view_of = jax.jit(projection_view, static_argnames="channel_axis")
    for weight, loss, view in cases:
        grad = jax.jit(jax.grad(loss))(weight)
        assert int(view_of(weight, grad)) == view, view
        # The PyTorch layout needs channel_axis=0: the same kernel, transposed, gives the same view.
        torch_layout = lambda a: jnp.moveaxis(a, -1, 0)
        assert int(view_of(torch_layout(weight), torch_layout(grad), channel_axis=0)) == view, view


# ------------------------------------------------------------------------------------------------
# The 2-D scale-invariant toy of the project page: SGDP stops the norm growth of momentum SGD.
# ------------------------------------------------------------------------------------------------

def toy_run(tx, steps=200):
    """min_w −<w/‖w‖, w*> with ‖w*‖ = 1, from 135° off w* at ‖w‖ = 1. w is a (2, 1) kernel: one
    output channel, a row of two entries. Returns (norms, angles) after each step."""
    w_star = jnp.array([[1.0], [0.0]])
    loss = lambda w: -jnp.sum(w * w_star) / jnp.linalg.norm(w)
    w0 = jnp.array([[math.cos(0.75 * math.pi)], [math.sin(0.75 * math.pi)]])

    @jax.jit
    def go(w0):
        def step(carry, _):
            w, state = carry
            updates, state = tx.update(jax.grad(loss)(w), state, w)
            w = optax.apply_updates(w, updates)
            norm = jnp.linalg.norm(w)
            return (w, state), (norm, jnp.arccos(jnp.clip(jnp.sum(w * w_star) / norm, -1.0, 1.0)))

        return jax.lax.scan(step, (w0, tx.init(w0)), None, length=steps)[1]

    return jax.tree.map(np.asarray, go(w0))


def test_sgdp_keeps_the_norm_and_converges_faster_on_the_scale_invariant_toy():
    # The paper's SGDP (projected copy of the buffer), as the project page; the public in-place
    # projection (the default) keeps the norm a little higher (1.53) and needs 40 steps, not 13.
    norms_p, angles_p = toy_run(sgdp(0.1, momentum=0.9, project_buffer=False))
    norms_pub, angles_pub = toy_run(sgdp(0.1, momentum=0.9))
    norms_m, angles_m = toy_run(optax.sgd(0.1, momentum=0.9))
    first = lambda angles: int(np.argmax(angles < 1e-2)) + 1 if (angles < 1e-2).any() else 10**9
    assert norms_p.max() < 1.5, norms_p.max()
    assert norms_pub.max() < 1.6 and first(angles_pub) < first(angles_m) and angles_pub[-1] < 1e-2
    assert norms_m[-1] > 3.0, norms_m[-1]
    assert first(angles_p) < first(angles_m), (first(angles_p), first(angles_m))
    assert angles_p[-1] < 1e-2


# ------------------------------------------------------------------------------------------------
# The runner: parameter groups and schedules.
# ------------------------------------------------------------------------------------------------

class TinyModel(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.linear = nnx.Linear(3, 4, rngs=rngs)


@pytest.mark.parametrize("make", [adamp, lambda **kw: sgdp(momentum=0.9, nesterov=True, **kw)],
                         ids=["adamp", "sgdp"])
def test_parameter_groups_with_a_schedule(make):
    params = nnx.state(TinyModel(nnx.Rngs(0)), nnx.Param)
    params = jax.tree.map(lambda p: p + 0.3, params)  # a non-zero bias
    factory = lambda **kw: make(**{"weight_decay": 0.2, **kw})
    # The kernel's gradient is orthogonal to each of its output-channel rows: its group projects.
    kernel = np.asarray(params["linear"]["kernel"][...])
    grads = jax.tree.map(jnp.ones_like, params)
    grads["linear"]["kernel"] = nnx.Param(jnp.asarray(
        without_row_components(np.cos(3.0 * kernel), kernel.astype(np.float64)), jnp.float32))
    tx = partition_optimizer(factory, SCHEDULE, [ParamGroup("kernels", path="kernel$", lr_scale=0.5,
                                                            weight_decay=0.0)])
    alone = {"kernel": factory(learning_rate=lambda s: 0.5 * SCHEDULE(s), weight_decay=0.0),
             "bias": factory(learning_rate=SCHEDULE)}

    @jax.jit(static_argnums=0)
    def three_updates(tx, p, g):
        state, out = tx.init(p), []
        for _ in range(3):
            u, state = tx.update(g, state, p)
            out.append(u)
        return out

    routed = three_updates(tx, params, grads)
    for name, opt in alone.items():
        want = three_updates(opt, params["linear"][name][...], grads["linear"][name][...])
        for u, w in zip(routed, want):
            np.testing.assert_allclose(u["linear"][name][...], w, rtol=1e-6, atol=1e-9)
    u = np.asarray(routed[0]["linear"]["kernel"][...])
    assert np.abs(np.sum(u * kernel, axis=0)).max() < 1e-6 * np.abs(u).max()  # projected, no decay


def test_update_without_params_is_a_clear_error():
    for tx in (adamp(1e-3), sgdp(1e-2)):
        p = jnp.ones((2, 2))
        with pytest.raises(ValueError, match="needs the parameters"):
            tx.update(p, tx.init(p))
