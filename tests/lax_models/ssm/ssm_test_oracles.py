"""Shared oracles of the S4 / S4D / PTD tests: the recurrent mode, input-output Jacobians, gradient checks.

A plain helper module (not a conftest) so that it adds nothing to other tests in this directory.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.test_util import check_grads


def normal_input(seed: int, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """Standard normal test input drawn by NumPy (a jax.random draw compiles once per shape and dtype)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def recurrent_output(model: nnx.Module, x: jax.Array) -> jax.Array:
    """Step ``model`` through ``x`` (batch, L, H) from ``init_state``: the RNN side of CNN == RNN."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, x):
        m = nnx.merge(graphdef, state)
        _, ys = jax.lax.scan(m.step, m.init_state(x.shape[0]), jnp.swapaxes(x, 0, 1))  # (L, batch, H)
        return jnp.swapaxes(ys, 0, 1)  # (batch, L, H)

    return run(state, x)


def input_jacobian(model: nnx.Module, x: jax.Array) -> jax.Array:
    """``d y[0, i, h] / d x[0, j, h]`` for a (1, L, H) input: (L, L, H), i = output, j = input time."""
    graphdef, state = nnx.split(model)
    jac = jax.jit(jax.jacrev(lambda x, state: nnx.merge(graphdef, state)(x)[0]))(x, state)  # (L, H, 1, L, H)
    return jnp.einsum("ihjh->ijh", jac[:, :, 0])


def check_layer_grads(model: nnx.Module, x: jax.Array) -> None:
    """``check_grads`` (reverse mode, order 1) of the output with respect to every parameter and x."""
    graphdef, state = nnx.split(model)
    leaves, treedef = jax.tree.flatten(state)

    @jax.jit
    def f(x, *leaves):
        return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))(x)

    check_grads(f, (x, *leaves), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)
