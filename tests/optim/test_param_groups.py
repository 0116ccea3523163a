"""Parameter groups route each parameter to its group's learning rate, weight decay and projection.

Oracles: the update written out by hand in NumPy (bit for bit), and the same optimizer applied to the
group's parameters alone.
"""
from __future__ import annotations

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optim import adam
from optim.param_groups import ParamGroup, group_labels, partition_optimizer


class Marked(nnx.Param):
    """A parameter type a model marks for special treatment (as S4/S5 mark Lambda, B, log_dt)."""


class Model(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.linear = nnx.Linear(3, 4, rngs=rngs)
        self.scale = Marked(jnp.linspace(-1.0, 1.0, 4))

    def __call__(self, x):
        return self.linear(x) * self.scale[...]


def sgd_with_decay(learning_rate, weight_decay: float = 0.1):
    """g + weight_decay * p, times -learning_rate (coupled decay, as torch SGD)."""
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate))


def params_and_grads():
    params = nnx.state(Model(nnx.Rngs(0)), nnx.Param)
    grads = jax.tree.map(lambda p: jnp.cos(3.0 * p) + 0.5, params)  # arbitrary, non-zero
    return params, grads


def one_update(tx, params, grads, steps=1):
    state = tx.init(params)
    for _ in range(steps):
        updates, state = tx.update(grads, state, params)
    return updates


def test_marked_parameter_gets_its_learning_rate_and_no_decay_bit_for_bit():
    params, grads = params_and_grads()
    lr = optax.constant_schedule(0.3)
    tx = partition_optimizer(sgd_with_decay, lr, [ParamGroup("ssm", variable_type=Marked, lr_scale=0.25,
                                                              weight_decay=0.0)])
    updates = jax.jit(lambda g, p: one_update(tx, p, g))(grads, params)
    f32 = np.float32
    p, g = np.asarray(params["scale"][...]), np.asarray(grads["scale"][...])
    np.testing.assert_array_equal(updates["scale"][...], -(f32(0.25) * f32(0.3)) * (g + f32(0.0) * p))
    for name in ("kernel", "bias"):  # the default group: the schedule's rate and the optimizer's decay
        p, g = np.asarray(params["linear"][name][...]), np.asarray(grads["linear"][name][...])
        np.testing.assert_array_equal(updates["linear"][name][...], -f32(0.3) * (g + f32(0.1) * p))


def test_each_group_equals_its_optimizer_applied_alone():
    """Adam's state is per group: three steps routed equal three steps of each group's Adam alone.
    (Weight-decay routing is checked with SGD above: Adam with constant gradients is sign-like.)"""
    params, grads = params_and_grads()
    groups = [ParamGroup("no_decay", path=r"bias$", weight_decay=0.0),
              ParamGroup("ssm", variable_type=Marked, lr_scale=0.1)]
    tx = partition_optimizer(adam, 1e-2, groups)
    updates = one_update(tx, params, grads, steps=3)  # Adam's moments carry over between steps
    alone = {
        ("linear", "kernel"): adam(1e-2), ("linear", "bias"): adam(1e-2, weight_decay=0.0),
        ("scale",): adam(1e-3),
    }
    for path, opt in alone.items():
        p, g, u = params, grads, updates
        for k in path:
            p, g, u = p[k], g[k], u[k]
        want = one_update(opt, p[...], g[...], steps=3)
        np.testing.assert_array_equal(u[...], want)


def test_projection_keeps_the_group_non_negative_after_every_step():
    params, grads = params_and_grads()
    big = jax.tree.map(lambda g: 10.0 * g, grads)  # steps large enough to cross zero
    tx = partition_optimizer(lambda learning_rate: optax.sgd(learning_rate), 1.0,
                             [ParamGroup("psi", variable_type=Marked,
                                         projection=optax.projections.projection_non_negative)])
    state = tx.init(params)
    for _ in range(3):
        updates, state = tx.update(big, state, params)
        params = optax.apply_updates(params, updates)
        assert (np.asarray(params["scale"][...]) >= 0).all()  # exactly, not up to round-off
    assert (np.asarray(params["linear"]["kernel"][...]) < 0).any()  # other parameters are not projected


def test_no_groups_is_the_optimizer_itself():
    params, grads = params_and_grads()
    for got, want in zip(jax.tree.leaves(one_update(partition_optimizer(adam, 1e-3), params, grads, 2)),
                         jax.tree.leaves(one_update(adam(1e-3), params, grads, 2))):
        np.testing.assert_array_equal(got, want)


def test_first_matching_group_wins_and_unmatched_is_default():
    params, _ = params_and_grads()
    labels = group_labels(params, [ParamGroup("a", path="linear"), ParamGroup("b", path="bias|scale")])
    assert (labels["linear"]["kernel"], labels["linear"]["bias"], labels["scale"]) == ("a", "a", "b")
    both = group_labels(params, [ParamGroup("k", variable_type=nnx.Param, path="kernel$")])
    assert (both["linear"]["kernel"], both["linear"]["bias"], both["scale"]) == ("k", "default", "default")
    with pytest.raises(ValueError, match=r"\['b'\] select no parameter"):  # shadowed by an earlier group
        group_labels(params, [ParamGroup("a", path="linear"), ParamGroup("b", path="bias")])


@pytest.mark.parametrize("groups, message", [
    ([ParamGroup("typo", path="lnear")], r"select no parameter.*linear/kernel"),
    ([ParamGroup("a", path="bias"), ParamGroup("a", path="kernel")], "unique"),
])
def test_bad_groups_are_reported_with_the_parameter_paths(groups, message):
    params, grads = params_and_grads()
    with pytest.raises(ValueError, match=message):
        tx = partition_optimizer(adam, 1e-3, groups)
        tx.init(params)


def test_group_definition_errors():
    with pytest.raises(ValueError, match="selects nothing"):
        ParamGroup("empty")
    with pytest.raises(ValueError, match="default"):
        ParamGroup("default", path="x")
