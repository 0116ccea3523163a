"""Lion and Lion-𝒦 against optax, a naive transcription of the update, and the problems they solve.

Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023, arXiv:2302.06675 (code
google/automl ``lion/lion_pytorch.py``); Chen, Liu, Liang, Liu, "Lion Secretly Solves Constrained
Optimization: As Lyapunov Predicts", ICLR 2024, arXiv:2310.05898 (Lion-𝒦).
Oracles, on f(x) = ½‖x − c‖², c ~ 3·N(0, I), d = 50, λ = 2, η = 1e-2: optax.lion bit for bit;
the torch-style Lion of google/automl and the paper's Lion-𝒦 written out in NumPy; the box invariance
x⁺ = (1 − ηλ)x − ηs, |s| ≤ 1; the entry rate (1 − ηλ); and the fixed point ∇𝒦(c − x) = λx of every 𝒦,
solved independently (closed forms, or bisection in NumPy).
"""
from __future__ import annotations

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optim import lion, lion_k, scale_by_lion_k
from optim.lion import resolve_grad_k
from optim.param_groups import ParamGroup, partition_optimizer

D, LAM, LR, B1, B2 = 50, 2.0, 1e-2, 0.9, 0.99


def target(seed: int = 0) -> np.ndarray:
    return 3.0 * np.random.default_rng(seed).normal(size=D)


def run(tx, grad_fn, x0, steps: int, trajectory: bool = False):
    """``steps`` updates of ``tx`` from ``x0`` with gradients ``grad_fn(x, t)``, in one jitted scan.

    Returns the final iterate and, with ``trajectory``, all iterates (steps, *x0.shape)."""

    @jax.jit
    def go(x0):
        def step(carry, t):
            x, state = carry
            updates, state = tx.update(grad_fn(x, t), state, x)
            x = optax.apply_updates(x, updates)
            return (x, state), (x if trajectory else None)

        (x, _), xs = jax.lax.scan(step, (x0, tx.init(x0)), jnp.arange(steps))
        return x, xs

    return jax.tree.map(np.asarray, go(x0))


def quadratic_grad(c):
    c = jnp.asarray(c)
    return lambda x, t: x - c


def random_grad(scale: float = 100.0, seed: int = 1):
    key = jax.random.key(seed)
    return lambda x, t: scale * jax.random.normal(jax.random.fold_in(key, t), x.shape, x.dtype)


# ------------------------------------------------------------------------------------------------
# Lion-K with K = sign is Lion; Lion is the update of the reference code.
# ------------------------------------------------------------------------------------------------

def test_lion_k_sign_and_its_chain_equal_optax_lion_bit_for_bit():
    """Our own Lion-K code (``lion_k("sign")``, ``scale_by_lion_k(jnp.sign)``) against optax's Lion.

    ``optim.lion`` *is* optax's chain (see its docstring), so ours == theirs only checks the wiring
    (the weight decay reaches it); the oracle of the update rule itself is the NumPy transcription of
    the reference code in ``test_lion_matches_the_reference_update``.
    """
    rng = np.random.default_rng(0)
    c = {"a": jnp.asarray(target()), "b": jnp.asarray(3 * rng.normal(size=(4, 5)))}
    x0 = jax.tree.map(lambda v: jnp.asarray(rng.normal(size=v.shape), jnp.float32), c)
    noise = random_grad(scale=1.0)
    grad_fn = lambda x, t: jax.tree.map(lambda xi, ci: xi - ci + noise(xi, t), x, c)
    schedule = lambda step: LR * 0.999**step
    ours = run(lion(schedule, B1, B2, weight_decay=LAM), grad_fn, x0, 500, trajectory=True)[1]
    theirs = run(optax.lion(schedule, B1, B2, weight_decay=LAM), grad_fn, x0, 500, trajectory=True)[1]
    sign_k = run(lion_k(schedule, "sign", B1, B2, weight_decay=LAM), grad_fn, x0, 500, trajectory=True)[1]
    general = optax.chain(scale_by_lion_k(jnp.sign, B1, B2), optax.add_decayed_weights(LAM),
                          optax.scale_by_learning_rate(schedule))
    general = run(general, grad_fn, x0, 500, trajectory=True)[1]
    for other in (theirs, sign_k, general):
        for k in ours:
            np.testing.assert_array_equal(ours[k], other[k])
    assert np.abs(ours["a"][-1] - ours["a"][0]).max() > 0.1  # it moved


def naive_lion(x, grads, lr, b1, b2, wd):
    """google/automl lion_pytorch.py: p *= 1 - lr*wd; c = b1*m + (1-b1)*g; p -= lr*sign(c);
    m = b2*m + (1-b2)*g. float64, one step per gradient."""
    m = np.zeros_like(x)
    for g in grads:
        x = x * (1 - lr * wd)
        x = x - lr * np.sign(b1 * m + (1 - b1) * g)
        m = b2 * m + (1 - b2) * g
    return x


def naive_lion_k(x, grad_fn, steps, lr, b1, b2, wd, grad_k):
    """The paper's Lion-𝒦 with the momentum m̃ of the *negative* gradient:
    m̃' = b2 m̃ − (1−b2)∇f, c̃ = b1 m̃ − (1−b1)∇f, x' = x + lr(∇𝒦(c̃) − λx)."""
    m = np.zeros_like(x)
    for t in range(steps):
        g = grad_fn(x, t)
        c = b1 * m - (1 - b1) * g
        m = b2 * m - (1 - b2) * g
        x = x + lr * (grad_k(c) - wd * x)
    return x


def test_lion_matches_the_reference_update():
    rng = np.random.default_rng(1)
    x0, grads = rng.normal(size=D), 3 * rng.normal(size=(300, D))
    want = naive_lion(x0, grads, LR, B1, B2, LAM)
    with jax.enable_x64(True):
        g = jnp.asarray(grads)
        got, _ = run(lion(LR, B1, B2, weight_decay=LAM), lambda x, t: g[t], jnp.asarray(x0), 300)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def asymmetric_grad_k(x):
    """A non-odd ∇𝒦 (𝒦 convex, piecewise quadratic): tells −∇𝒦(−c) from ∇𝒦(c)."""
    return jnp.where(x > 0, x, 0.25 * x)


def test_scale_by_lion_k_follows_the_papers_sign_convention():
    c = target(2)
    grad_fn = lambda x, t: x - c + np.sin(t + np.arange(D))  # deterministic, non-trivial
    np_k = lambda x: np.where(x > 0, x, 0.25 * x)
    want = naive_lion_k(np.zeros(D), grad_fn, 200, LR, B1, B2, LAM, np_k)
    with jax.enable_x64(True):
        tx = lion_k(LR, asymmetric_grad_k, B1, B2, weight_decay=LAM)
        jax_grad = lambda x, t: x - jnp.asarray(c) + jnp.sin(t + jnp.arange(D))
        got, _ = run(tx, jax_grad, jnp.zeros(D), 200)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Lion solves min f s.t. ‖x‖∞ ≤ 1/λ (Lion-𝒦 paper: box invariance, exponential entry, constrained optimum).
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", ["sign", "clip", "tanh", "jax.nn.soft_sign"])
def test_box_is_invariant_under_arbitrary_gradients(k):
    """‖∇𝒦‖∞ ≤ 1 and ηλ ≤ 1: x⁺ = (1 − ηλ)x − ηs with |s| ≤ 1 never leaves ‖x‖∞ ≤ 1/λ."""
    with jax.enable_x64(True):
        x0 = jnp.asarray(np.random.default_rng(3).uniform(-1 / LAM, 1 / LAM, size=D))
        _, xs = run(lion_k(LR, k, weight_decay=LAM), random_grad(), x0, 2000, trajectory=True)
    worst = np.abs(xs).max()
    assert worst <= 1 / LAM, worst
    assert worst > 0.9 / LAM  # the gradients push hard: the bound is nearly reached


def test_l2_ball_is_invariant_under_arbitrary_gradients():
    with jax.enable_x64(True):
        x0 = jnp.asarray(np.random.default_rng(4).normal(size=D))
        x0 = x0 / jnp.linalg.norm(x0) * (0.9 / LAM)
        _, xs = run(lion_k(LR, "l2", weight_decay=LAM), random_grad(), x0, 2000, trajectory=True)
    worst = np.linalg.norm(xs, axis=1).max()
    assert worst <= 1 / LAM + 1e-15, worst


def box_excess(xs):
    return np.abs(xs).max(axis=-1) - 1 / LAM


def test_entry_into_the_box_at_rate_one_minus_lr_lambda():
    """Outside the box, ‖x‖∞ − 1/λ shrinks by at least (1 − ηλ) per step, for any gradients; on f,
    while the gradient points outward, by exactly (1 − ηλ)."""
    c = target()
    with jax.enable_x64(True):
        x0 = jnp.asarray(c)
        _, on_f = run(lion(LR, weight_decay=LAM), quadratic_grad(c), x0, 400, trajectory=True)
        x0_far = jnp.asarray(10 * np.random.default_rng(5).normal(size=D))
        _, on_noise = run(lion(LR, weight_decay=LAM), random_grad(), x0_far, 400, trajectory=True)
    rate = 1 - LR * LAM
    for xs, x0 in ((on_f, c), (on_noise, np.asarray(x0_far))):
        e = box_excess(np.concatenate([x0[None], xs]))
        outside = e[:-1] > 1e-6
        assert outside[:100].all()
        ratios = e[1:][outside] / e[:-1][outside]
        assert ratios.max() <= rate + 1e-12, ratios.max()
    e = box_excess(np.concatenate([c[None], on_f]))
    ratios = e[2:][e[1:-1] > 1e-6] / e[1:-1][e[1:-1] > 1e-6]  # from step 2 the gradient points outward
    np.testing.assert_allclose(ratios, rate, rtol=0, atol=1e-8)


def test_lion_converges_to_the_clipped_target_within_two_lr():
    c = target()
    x, _ = run(lion(LR, weight_decay=LAM), quadratic_grad(c.astype(np.float32)), jnp.zeros(D), 3000)
    err = np.abs(x - np.clip(c, -1 / LAM, 1 / LAM)).max()
    assert err <= 2 * LR, err


# ------------------------------------------------------------------------------------------------
# Every 𝒦 reaches the optimum of its problem min f + K*(λx)/λ: ∇𝒦(c − x) = λx.
# ------------------------------------------------------------------------------------------------

def bisect_root(h, lo, hi, iters=200):
    """The root of a decreasing function h on [lo, hi], per coordinate (NumPy)."""
    lo, hi = np.full(D, lo), np.full(D, hi)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        pos = h(mid) > 0
        lo, hi = np.where(pos, mid, lo), np.where(pos, hi, mid)
    return 0.5 * (lo + hi)


def fixed_point_oracle(name, c, beta=2.0):
    bound = np.abs(c).max() + 1.0
    if name == "clip":
        return np.clip(c / (1 + LAM), -1 / LAM, 1 / LAM)  # argmin ½‖x−c‖² + λ/2‖x‖², ‖x‖∞ ≤ 1/λ
    if name == "l2":
        return c / max(1.0, LAM * np.linalg.norm(c))       # projection of c on ‖x‖₂ ≤ 1/λ
    grad_k = {"tanh": lambda y: np.tanh(beta * y),
              "jax.nn.soft_sign": lambda y: y / (1 + np.abs(y)),
              "asymmetric": lambda y: np.where(y > 0, y, 0.25 * y)}[name]
    return bisect_root(lambda x: grad_k(c - x) - LAM * x, -bound, bound)


@pytest.mark.parametrize("name", ["clip", "l2", "tanh", "jax.nn.soft_sign", "asymmetric"])
def test_each_k_reaches_the_optimum_of_its_problem(name):
    c = target()
    want = fixed_point_oracle(name, c)
    k = {"asymmetric": asymmetric_grad_k}.get(name, name)
    with jax.enable_x64(True):
        tx = lion_k(LR, k, weight_decay=LAM, beta=2.0 if name == "tanh" else 1.0)
        x, _ = run(tx, quadratic_grad(c), jnp.zeros(D), 4000)
    err = np.abs(x - want).max()
    assert err <= 1e-10, (name, err)
    if name == "clip":  # the constraint is active on some coordinates and not on others
        assert 0 < (np.abs(want) == 1 / LAM).sum() < D


# ------------------------------------------------------------------------------------------------
# The runner: parameter groups, schedules, config errors.
# ------------------------------------------------------------------------------------------------

class TinyModel(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.linear = nnx.Linear(3, 4, rngs=rngs)


@pytest.mark.parametrize("make", [lion, lambda **kw: lion_k(k="l2", **kw)], ids=["lion", "lion_k_l2"])
def test_parameter_groups_route_learning_rate_and_decay(make):
    params = nnx.state(TinyModel(nnx.Rngs(0)), nnx.Param)
    params = jax.tree.map(lambda p: p + 0.3, params)  # a non-zero bias
    grads = jax.tree.map(lambda p: jnp.cos(3.0 * p) - 0.2, params)
    schedule = lambda step: 1e-2 * 0.5**step
    factory = lambda **kw: make(**{"weight_decay": 0.1, **kw})
    tx = partition_optimizer(factory, schedule, [ParamGroup("bias", path="bias$", lr_scale=0.25,
                                                            weight_decay=0.0)])
    alone = {"kernel": factory(learning_rate=schedule),
             "bias": factory(learning_rate=lambda s: 0.25 * schedule(s), weight_decay=0.0)}

    def three_steps(tx, p, g):
        state = tx.init(p)
        for _ in range(3):
            u, state = tx.update(g, state, p)
            p = optax.apply_updates(p, u)
        return p

    routed = three_steps(tx, params, grads)
    for name, opt in alone.items():
        want = three_steps(opt, params["linear"][name][...], grads["linear"][name][...])
        np.testing.assert_allclose(routed["linear"][name][...], want, rtol=1e-6, atol=1e-9)
    moved = np.abs(routed["linear"]["bias"][...] - params["linear"]["bias"][...])
    assert moved.max() < 0.25 * 1e-2 * 1.75 + 1e-7  # lr_scale applied (sum of 3 scheduled steps)


def test_bad_k_and_beta_are_clear_errors():
    with pytest.raises(ValueError, match="k must be one of"):
        lion_k(1e-3, k="signum")
    with pytest.raises(ValueError, match="cannot import"):
        lion_k(1e-3, k="no_such_module.fn")
    with pytest.raises(ValueError, match="only applies to k='tanh'"):
        lion_k(1e-3, k="l2", beta=2.0)
    assert resolve_grad_k("jax.nn.soft_sign") is jax.nn.soft_sign
