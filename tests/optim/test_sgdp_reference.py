"""SGDP against an independent NumPy transcription of the public ``SGDP.step``, on a scale-invariant toy
where projecting the momentum buffer in place (the public code) and projecting a copy (the paper's
text) give different trajectories.

Heo, Chun, Oh, Han, Yun, Kim, Uh, Ha, "AdamP: Slowing Down the Slowdown for Momentum Optimizers on
Scale-invariant Weights", ICLR 2021, arXiv:2006.08217; code clovaai/AdamP ``adamp/sgdp.py``. There,
without Nesterov, ``d_p = buf`` is the momentum buffer itself and ``_projection`` does
``perturb -= p_n * view_func(p_n * perturb).sum(dim=1).view(expand_size)`` on it, in place, so the
stored buffer is projected; with Nesterov ``d_p = grad + momentum * buf`` is a new tensor. The
transcription below keeps those semantics literally: NumPy in-place operators on an aliased array
(``project_buffer=False`` is the same code on ``buf.copy()``). Weights are in PyTorch layout (output
channel first) and the optimizer runs with ``channel_axis=0``, except in the Flax-layout check.
"""
from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from optim import sgdp

# ------------------------------------------------------------------------------------------------
# clovaai/AdamP adamp/sgdp.py, transcribed (float64, loops, in-place ops as in the PyTorch code).
# ------------------------------------------------------------------------------------------------


def _channel_view(x):
    return x.reshape(x.shape[0], -1)          # x.view(x.size(0), -1)


def _layer_view(x):
    return x.reshape(1, -1)                   # x.view(1, -1)


def _cosine_similarity(x, y, eps, view_func):
    """F.cosine_similarity(view(x), view(y), dim=1, eps=eps).abs_(): each norm floored at eps."""
    x, y = view_func(x), view_func(y)
    out = np.empty(x.shape[0])
    for r in range(x.shape[0]):
        out[r] = abs(np.dot(x[r], y[r])) / (max(np.linalg.norm(x[r]), eps) * max(np.linalg.norm(y[r]), eps))
    return out


def _projection(p, grad, perturb, delta, wd_ratio, eps):
    """SGDP._projection: edits ``perturb`` in place and returns it with the weight-decay ratio."""
    wd = 1.0
    expand_size = (-1,) + (1,) * (p.ndim - 1)
    for view_func in (_channel_view, _layer_view):
        cosine_sim = _cosine_similarity(grad, p, eps, view_func)
        if cosine_sim.max() < delta / math.sqrt(view_func(p).shape[1]):
            p_n = p / (np.linalg.norm(view_func(p), axis=1).reshape(expand_size) + eps)
            perturb -= p_n * view_func(p_n * perturb).sum(axis=1).reshape(expand_size)   # in place
            wd = wd_ratio
            return perturb, wd
    return perturb, wd


def public_sgdp(params, grad_fn, steps, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
                nesterov=False, eps=1e-8, delta=0.1, wd_ratio=0.1, project_buffer=True):
    """SGDP.step ``steps`` times; ``project_buffer=False`` hands the projection a copy of the buffer.
    Returns the parameters after each step and the ratio (1 or wd_ratio) each tensor got."""
    params = {k: np.array(v, np.float64) for k, v in params.items()}
    state, trajectory, ratios = {}, [], []
    for _ in range(steps):
        grads, seen = grad_fn(params), {}
        for name, p in params.items():
            grad = grads[name]
            if name not in state:
                state[name] = np.zeros_like(p)                    # state['momentum']
            buf = state[name]
            buf *= momentum                                       # buf.mul_(momentum)
            buf += (1 - dampening) * grad                         # .add_(grad, alpha=1 - dampening)
            if nesterov:
                d_p = grad + momentum * buf
            else:
                d_p = buf if project_buffer else buf.copy()
            ratio = 1.0
            if p.ndim > 1:
                d_p, ratio = _projection(p, grad, d_p, delta, wd_ratio, eps)
            if weight_decay > 0:
                p *= 1 - lr * weight_decay * ratio / (1 - momentum)
            p += -lr * d_p                                        # p.data.add_(d_p, alpha=-lr)
            seen[name] = ratio
        trajectory.append({k: v.copy() for k, v in params.items()})
        ratios.append(seen)
    return trajectory, ratios


# ------------------------------------------------------------------------------------------------
# The toy: weight-normalised rows (channel view), a weight-normalised tensor (layer view), a plain
# weight (no projection) and a bias; losses and gradients in closed form.
# ------------------------------------------------------------------------------------------------

RNG = np.random.default_rng(0)
TARGETS = {"rows": RNG.normal(size=(3, 4)), "tensor": RNG.normal(size=(3, 4)),
           "plain": np.zeros((2, 3)), "bias": RNG.normal(size=(3,))}
START = {k: RNG.normal(size=v.shape) for k, v in TARGETS.items()}


def toy_grads(params):
    """loss = -sum_r <w_r/|w_r|, T_r> - <v/|v|, S> + |a|^2/2 + |b - c|^2/2 (out channel first); the
    gradient a of the plain weight is radial (|cos| = 1), so it is never detected as scale invariant."""
    w, v = params["rows"], params["tensor"]
    wn = np.linalg.norm(w, axis=1, keepdims=True)                          # (3, 1)
    g_rows = -(TARGETS["rows"] / wn - w * np.sum(w * TARGETS["rows"], axis=1, keepdims=True) / wn**3)
    vn = np.linalg.norm(v)
    g_tensor = -(TARGETS["tensor"] / vn - v * np.sum(v * TARGETS["tensor"]) / vn**3)
    return {"rows": g_rows, "tensor": g_tensor, "plain": params["plain"] + 0.0,
            "bias": params["bias"] - TARGETS["bias"]}


EXPECTED_RATIO = {"rows": 0.1, "tensor": 0.1, "plain": 1.0, "bias": 1.0}


def run_ours(tx, params, steps, to_ours=lambda x: x, from_ours=lambda x: x):
    """Our SGDP in float64 with the same closed-form gradients; returns the trajectory."""
    with jax.enable_x64(True):
        p = {k: jnp.asarray(to_ours(v), jnp.float64) for k, v in params.items()}
        state, update, out = tx.init(p), jax.jit(tx.update), []
        for _ in range(steps):
            numpy_p = {k: from_ours(np.asarray(v)) for k, v in p.items()}
            g = {k: jnp.asarray(to_ours(v), jnp.float64) for k, v in toy_grads(numpy_p).items()}
            u, state = update(g, state, p)
            p = optax.apply_updates(p, u)
            out.append({k: from_ours(np.asarray(v)) for k, v in p.items()})
        return out


def assert_same_trajectory(got, want, tol=1e-10):  # measured: ~1e-15
    for t, (g, w) in enumerate(zip(got, want)):
        for k in w:
            np.testing.assert_allclose(g[k], w[k], rtol=0, atol=tol, err_msg=f"{k} after step {t + 1}")


STEPS, LR, MOMENTUM = 40, 0.1, 0.9


@pytest.mark.parametrize("project_buffer", [True, False], ids=["public-in-place", "paper-copy"])
@pytest.mark.parametrize("nesterov, dampening, weight_decay", [(False, 0.0, 0.0), (False, 0.1, 0.05),
                                                                (True, 0.0, 0.05)])
def test_sgdp_matches_the_public_step(project_buffer, nesterov, dampening, weight_decay):
    kw = dict(momentum=MOMENTUM, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
              eps=1e-8, delta=0.1, wd_ratio=0.1)
    want, ratios = public_sgdp(START, toy_grads, STEPS, lr=LR, project_buffer=project_buffer, **kw)
    assert ratios == [EXPECTED_RATIO] * STEPS               # both views and no-projection, every step
    got = run_ours(sgdp(LR, channel_axis=0, project_buffer=project_buffer, **kw), START, STEPS)
    assert_same_trajectory(got, want)


def max_difference(a, b):
    return max(np.abs(a[k] - b[k]).max() for k in a)


def test_in_place_and_copy_differ_without_nesterov_only():
    """The two behaviours are different algorithms on scale-invariant weights without Nesterov (the
    measured gap is printed), and the same one with Nesterov or where nothing is projected."""
    kw = dict(momentum=MOMENTUM, eps=1e-8, delta=0.1, wd_ratio=0.1)
    public, _ = public_sgdp(START, toy_grads, STEPS, lr=LR, **kw)
    paper, _ = public_sgdp(START, toy_grads, STEPS, lr=LR, project_buffer=False, **kw)
    gap = {k: float(np.abs(public[-1][k] - paper[-1][k]).max()) for k in START}
    print(f"max |w_public - w_paper| after {STEPS} steps at lr {LR}, momentum {MOMENTUM}: {gap}")
    assert gap["rows"] > 0.1 and gap["tensor"] > 0.1
    assert gap["plain"] == 0.0 and gap["bias"] == 0.0           # never projected: identical
    ours = {pb: run_ours(sgdp(LR, momentum=MOMENTUM, channel_axis=0, project_buffer=pb), START, STEPS)[-1]
            for pb in (True, False)}
    assert max_difference(ours[True], ours[False]) > 0.1
    assert max_difference(ours[True], public[-1]) < 1e-6 < max_difference(ours[True], paper[-1])
    # Nesterov: the public code projects a new tensor, so project_buffer changes nothing.
    nest = [run_ours(sgdp(LR, momentum=MOMENTUM, nesterov=True, channel_axis=0, project_buffer=pb),
                     START, 10)[-1] for pb in (True, False)]
    assert max_difference(*nest) == 0.0


def test_the_stored_buffer_is_the_projected_direction():
    """After one step from a zero buffer, the public code's buffer is g with its radial part removed,
    orthogonal to each row of the weight; the paper's buffer is g itself."""
    w = START["rows"]
    g = {"rows": toy_grads(START)["rows"] + 0.0}
    g["rows"] = g["rows"] + 1e-4 * w          # a small radial part, still under the detection threshold
    with jax.enable_x64(True):
        params = {"rows": jnp.asarray(w)}
        grads = {"rows": jnp.asarray(g["rows"])}
        for project_buffer in (True, False):
            tx = sgdp(LR, momentum=MOMENTUM, channel_axis=0, project_buffer=project_buffer)
            _, state = tx.update(grads, tx.init(params), params)
            buf = np.asarray(state[0].momentum["rows"])
            if project_buffer:
                unit = w / (np.linalg.norm(w, axis=1, keepdims=True) + 1e-8)
                want = g["rows"] - unit * np.sum(unit * g["rows"], axis=1, keepdims=True)
                np.testing.assert_allclose(buf, want, rtol=0, atol=1e-14)
                assert np.abs(np.sum(buf * w, axis=1)).max() < 1e-7    # up to the eps in w/(|w| + eps)
            else:
                np.testing.assert_allclose(buf, g["rows"], rtol=0, atol=0)


def test_flax_layout_matches_the_public_step():
    """channel_axis=-1 on the transposed (Flax (in, out)) kernels gives the same trajectory."""
    want, _ = public_sgdp(START, toy_grads, 12, lr=LR, momentum=MOMENTUM)
    flip = lambda x: x.T                                      # (out, in) <-> (in, out); a bias stays
    got = run_ours(sgdp(LR, momentum=MOMENTUM), START, 12, to_ours=flip, from_ours=flip)
    assert_same_trajectory(got, want)


def test_the_config_gives_the_public_behaviour():
    root = Path(__file__).resolve().parents[2] / "configs"
    with initialize_config_dir(config_dir=str(root / "optim"), version_base="1.3"):
        cfg = compose(config_name="sgdp")
    assert cfg.project_buffer is True
    tx = instantiate(cfg, learning_rate=LR, channel_axis=0)
    kw = {k: cfg[k] for k in ("momentum", "dampening", "weight_decay", "nesterov", "eps", "delta",
                              "wd_ratio")}
    want, _ = public_sgdp(START, toy_grads, 10, lr=LR, **kw)
    assert_same_trajectory(run_ours(tx, START, 10), want)
