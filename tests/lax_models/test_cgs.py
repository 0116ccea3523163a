"""Convergent graph solvers and the stacked GNN, against oracles: the dense solve, autodiff through an
unrolled loop, the contraction bound, a naive softmax, and padding invariance."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lax_models.cgs import (CGS, contraction_matrix, dense_fixed_point, fixed_point, iterate_to_tolerance,
                            transition_weights)
from lax_models.gnn import GNN, flatten_graphs, segment_softmax

solve = jax.jit(fixed_point, static_argnums=(4, 5, 6, 7))


def random_graph(rng, n_nodes, n_edges, heads, dtype=np.float64, spread=2.0):
    """Random edges (duplicates and self-loops allowed; some nodes may have no out-edge), logits that
    reach outside [0, 1], biases in [-1, 1]."""
    src = rng.integers(0, n_nodes, n_edges).astype(np.int32)
    dst = rng.integers(0, n_nodes, n_edges).astype(np.int32)
    logits = rng.uniform(-spread / 2, spread, (n_edges, heads)).astype(dtype)
    b = rng.uniform(-1, 1, (n_nodes, heads)).astype(dtype)
    return src, dst, logits, b


def test_transition_matrix_contracts_in_the_max_norm():
    rng = np.random.default_rng(0)
    src, dst, logits, _ = random_graph(rng, 12, 60, 3, np.float32)
    mask = np.ones(60, bool)
    mask[-5:] = False                                     # padded edges contribute nothing
    a = transition_weights(jnp.asarray(logits), jnp.asarray(src), jnp.asarray(mask), 12)
    A = np.asarray(contraction_matrix(a, jnp.asarray(src), jnp.asarray(dst), 12))       # (m, N, N)
    gamma = 0.7
    assert (A >= 0).all()
    assert np.abs(gamma * A).sum(-1).max() <= gamma * (1 + 1e-6)
    # The bound is attained: logits >= 1 give rows summing to exactly 1 where a node has out-edges.
    a1 = transition_weights(jnp.full_like(jnp.asarray(logits), 5.0), jnp.asarray(src), jnp.asarray(mask), 12)
    rows = np.asarray(contraction_matrix(a1, jnp.asarray(src), jnp.asarray(dst), 12)).sum(-1)
    has_out = np.isin(np.arange(12), src[mask])
    np.testing.assert_allclose(rows[:, has_out], 1.0, rtol=1e-6)
    np.testing.assert_array_equal(rows[:, ~has_out], 0.0)


@pytest.mark.parametrize("gamma", [0.5, 0.9])
def test_iterative_fixed_point_equals_dense_solve(gamma):
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        src, dst, logits, b = random_graph(rng, 15, 70, 4)
        a = transition_weights(jnp.asarray(logits), jnp.asarray(src), jnp.ones(70, bool), 15)
        h, k = solve(a, jnp.asarray(b), jnp.asarray(src), jnp.asarray(dst), gamma, "identity", 1e-13, 1000)
        want = dense_fixed_point(a, jnp.asarray(b), jnp.asarray(src), jnp.asarray(dst), gamma)
        np.testing.assert_allclose(np.asarray(h), np.asarray(want), atol=1e-11)
        assert 5 < int(k) < 1000


def unrolled(a, b, src, dst, gamma, phi, steps=200):
    """The fixed point by a plain Python loop of ``steps`` steps from phi(b) (autodiff goes through all)."""
    step = lambda _, h: phi(gamma * jax.ops.segment_sum(a * h[dst], src, num_segments=b.shape[0]) + b)
    return jax.lax.fori_loop(0, steps, step, phi(b))


@pytest.mark.parametrize("nonlinearity", ["identity", "tanh"])
def test_implicit_gradient_equals_autodiff_through_the_unrolled_loop(nonlinearity):
    phi = {"identity": lambda x: x, "tanh": jnp.tanh}[nonlinearity]
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        src, dst, logits, b = random_graph(rng, 8, 30, 2)
        src, dst = jnp.asarray(src), jnp.asarray(dst)
        a = transition_weights(jnp.asarray(logits), src, jnp.ones(30, bool), 8)
        w = jnp.asarray(rng.normal(size=(8, 2)))
        gamma = 0.8

        def implicit(a, b):
            return jnp.sum(w * fixed_point(a, b, src, dst, gamma, nonlinearity, 1e-14, 500)[0] ** 2)

        def explicit(a, b):
            return jnp.sum(w * unrolled(a, b, src, dst, gamma, phi) ** 2)

        got = jax.jit(jax.grad(implicit, argnums=(0, 1)))(a, jnp.asarray(b))
        want = jax.jit(jax.grad(explicit, argnums=(0, 1)))(a, jnp.asarray(b))
        for g, r in zip(got, want):
            assert np.abs(np.asarray(r)).max() > 1e-3            # a gradient that is not trivially zero
            np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-9, atol=1e-11)


def test_iteration_count_respects_the_contraction_bound():
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        for gamma, tol in [(0.5, 1e-6), (0.9, 1e-8)]:
            src, dst, logits, b = random_graph(rng, 20, 90, 3)
            src, dst = jnp.asarray(src), jnp.asarray(dst)
            a = transition_weights(jnp.asarray(logits), src, jnp.ones(90, bool), 20)
            for scale in (1.0, 40.0):
                bs = jnp.asarray(b * scale)
                _, k = solve(a, bs, src, dst, gamma, "identity", tol, 10_000)
                bound = math.log(tol / float(jnp.abs(bs).max())) / math.log(gamma) + 1
                assert int(k) <= bound
            assert int(solve(a, jnp.asarray(b), src, dst, gamma, "identity", tol, 10_000)[1]) <= \
                math.log(tol) / math.log(gamma) + 1            # the bound as stated for ||b|| <= 1
            # The worst case attains it: rows summing to 1 and b = 1 give steps of exactly gamma^k.
            ring = jnp.arange(20, dtype=jnp.int32)
            a1 = transition_weights(jnp.ones((20, 1)), ring, jnp.ones(20, bool), 20)
            _, k = solve(a1, jnp.ones((20, 1)), ring, (ring + 1) % 20, gamma, "identity", tol, 10_000)
            assert int(k) == math.floor(math.log(tol) / math.log(gamma)) + 1


def test_iteration_stops_at_max_iter():
    x, k = iterate_to_tolerance(lambda x: x + 1.0, jnp.zeros(3), 1e-6, 7)
    assert int(k) == 7 and float(x[0]) == 7.0


def test_segment_softmax_equals_naive_per_node_softmax():
    rng = np.random.default_rng(4)
    src = np.array([0, 0, 0, 2, 2, 3, 0, 3], np.int32)
    mask = np.array([1, 1, 1, 1, 1, 1, 0, 1], bool)
    logits = rng.normal(size=(8, 2)).astype(np.float32) * 3
    graph = flatten_graphs(jnp.asarray(src[None]), jnp.asarray(src[None]), jnp.ones((1, 5), bool),
                           jnp.asarray(mask[None]))
    got = np.asarray(segment_softmax(jnp.asarray(logits), graph))
    want = np.zeros_like(logits)
    for node in range(5):
        sel = (src == node) & mask
        if sel.any():
            z = np.exp(logits[sel] - logits[sel].max(0))
            want[sel] = z / z.sum(0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def padded_batch(rng, sizes, n_max, e_max, f_node=2, f_edge=3):
    """A batch of random graphs padded to (n_max, e_max), and each graph unpadded."""
    B = len(sizes)
    nodes = np.zeros((B, n_max, f_node), np.float32)
    edges = np.zeros((B, e_max, f_edge), np.float32)
    src = np.zeros((B, e_max), np.int32)
    dst = np.zeros((B, e_max), np.int32)
    node_mask = np.zeros((B, n_max), bool)
    edge_mask = np.zeros((B, e_max), bool)
    singles = []
    for g, (n, e) in enumerate(sizes):
        nodes[g, :n] = rng.normal(size=(n, f_node))
        edges[g, :e] = rng.normal(size=(e, f_edge))
        src[g, :e] = rng.integers(0, n, e)
        dst[g, :e] = rng.integers(0, n, e)
        node_mask[g, :n] = True
        edge_mask[g, :e] = True
        singles.append(tuple(x[g:g + 1, :k] for x, k in
                             [(nodes, n), (edges, e), (src, e), (dst, e), (node_mask, n), (edge_mask, e)]))
    nodes[~node_mask] = 7.0                                   # garbage in padding must not leak
    edges[~edge_mask] = -3.0
    return (nodes, edges, src, dst, node_mask, edge_mask), singles


def small_gnn():
    return GNN(2, 3, out_features=2, hidden=8, n_layers=3, mlp_hidden=[8], decoder_hidden=[8], rngs=nnx.Rngs(0))


# Layer widths shared with the float64 model test below, so that the initialisers compile once.
@pytest.mark.parametrize("make", [
    lambda: CGS(2, 3, out_features=2, heads=3, encoder_layers=2, node_hidden=8, edge_hidden=8, mlp_hidden=[8],
                decoder_hidden=[8], rngs=nnx.Rngs(0)),
    small_gnn,
], ids=["cgs", "gnn"])
def test_padded_batch_equals_each_graph_alone(make):
    graphdef, state = nnx.split(make())
    apply = jax.jit(lambda state, *xs: nnx.merge(graphdef, state)(*xs))
    # Graphs 0 and 2 have the same size (one compilation alone), graph 1 another: a graph read with
    # another's masks or offsets shows.
    batch, singles = padded_batch(np.random.default_rng(5), [(6, 14), (9, 30), (6, 14)], 10, 32)
    out = np.asarray(apply(state, *batch))
    assert out.shape == (3, 10, 2)
    for g, single in enumerate(singles):
        alone = np.asarray(apply(state, *single))[0]
        np.testing.assert_allclose(out[g, :alone.shape[0]], alone, rtol=2e-4, atol=2e-5)
        assert (out[g, alone.shape[0]:] == 0).all()


@pytest.mark.slow  # compiles both solvers and their gradients (~16 s of CPU)
def test_cgs_iterative_model_equals_direct_model_values_and_gradients():
    """The whole model: while_loop + implicit backward against dense solves + autodiff (float64)."""
    with jax.enable_x64(True):
        kw = dict(heads=3, encoder_layers=1, node_hidden=8, edge_hidden=8, mlp_hidden=[8], decoder_hidden=[8],
                  gamma=0.6, tol=1e-13, max_iter=300)
        iterative = CGS(2, 3, solver="iterative", rngs=nnx.Rngs(1), **kw)
        direct = CGS(2, 3, solver="direct", rngs=nnx.Rngs(1), **kw)
        batch, _ = padded_batch(np.random.default_rng(6), [(7, 20), (5, 9)], 8, 24)
        batch = [jnp.asarray(x, jnp.float64) if x.dtype == np.float32 else jnp.asarray(x) for x in batch]
        graphdef, params = nnx.split(iterative)
        params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
        direct_graphdef, _ = nnx.split(direct)

        def loss(graphdef, params):
            y = nnx.merge(graphdef, params)(*batch)
            return jnp.sum(jnp.sin(y))

        v1, g1 = jax.jit(jax.value_and_grad(lambda p: loss(graphdef, p)))(params)
        v2, g2 = jax.jit(jax.value_and_grad(lambda p: loss(direct_graphdef, p)))(params)
        np.testing.assert_allclose(float(v1), float(v2), rtol=1e-11)
        norms = [float(jnp.abs(x).max()) for x in jax.tree.leaves(g2)]
        assert max(norms) > 1e-3
        for x, y in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-7, atol=1e-10)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="gamma"):
        CGS(2, 3, gamma=1.0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="solver"):
        CGS(2, 3, solver="newton", rngs=nnx.Rngs(0))
    model = small_gnn()
    batch, _ = padded_batch(np.random.default_rng(7), [(3, 4)], 4, 4, f_node=5)
    with pytest.raises(ValueError, match="node_features"):
        model(*map(jnp.asarray, batch))
