"""Convergent graph solvers (CGS): a learned, input-dependent contracting linear map and its fixed point.

Park, Choo, Park, "Convergent Graph Solvers", ICLR 2022 (arXiv 2106.01680); reference code
``Junyoungpark/CGS`` (``CGS/gnn/CGS/{CGS.py, fixedpoint.py, fp_utils.py}``). Three steps:

1. An encoder (attention message passing, ``lax_models.gnn.AttnMPNN``) reads the graph and outputs,
   for each of ``m`` heads, a logit ``a_e^h`` per edge and a bias ``b_i^h`` per node. The transition
   matrix of head ``h`` is

       A^h[i, j] = clip(a_{i->j}^h, 0, 1) / outdeg(i)          for every edge i -> j,

   so every row sums to at most 1, ``||A^h||_inf <= 1`` and ``||gamma A^h||_inf <= gamma < 1``.
2. The fixed point ``H* = phi(gamma A H* + b)`` (one scalar per node and head; ``phi`` identity as
   in every configuration of the paper, or any 1-Lipschitz map with phi(0) = 0) is unique by
   Banach's theorem. It is found by iterating ``H <- phi(gamma A H + b)`` from ``H_0 = phi(b)`` (one
   free step from 0) under ``lax.while_loop`` until ``||H_k - H_{k-1}||_inf < tol``, or, for a
   linear map on small graphs, by the dense solve ``(I - gamma A^h) H^h = b^h``.
3. A decoder MLP maps each node's ``H*_i`` (m values) to the output.

Backward (implicit function theorem; reference ``fixedpoint.py``): with ``J = d phi(gamma A z + b)/dz``
at ``z = H*``, the cotangent ``v`` of ``H*`` becomes ``u = (I - J^T)^{-1} v``, found by iterating
``u <- J^T u + v`` (a contraction too: ``||J^T||_1 = ||J||_inf <= gamma``), and flows to ``A`` and
``b`` through one step ``phi(gamma A H* + b)``. Nothing of the forward iteration is stored.

Iteration count. From ``H_0 = phi(b)`` the steps satisfy ``||H_k - H_{k-1}||_inf <= gamma^k ||b||_inf``,
so the loop stops after ``k <= log(tol / ||b||_inf) / log(gamma) + 1`` steps (``log(tol)/log(gamma) + 1``
when ``||b||_inf <= 1``), independently of the graph's size or diameter; on exit
``||H_k - H*||_inf <= tol * gamma / (1 - gamma)``.

A batch of padded graphs is flattened into one graph (``lax_models.gnn.flatten_graphs``); the
matrix-vector product is a gather and a ``jax.ops.segment_sum`` over the edges, O(E m) per step.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from lax_models.gnn import MLP, AttnMPNN, check_graph_inputs, flatten_graphs, out_degree

__all__ = ["CGS", "contraction_matrix", "dense_fixed_point", "fixed_point", "iterate_to_tolerance",
           "transition_weights"]

NONLINEARITIES = {"identity": lambda x: x, "tanh": jnp.tanh}


def transition_weights(logits: jax.Array, src: jax.Array, edge_mask: jax.Array, num_nodes: int) -> jax.Array:
    """Per-edge entries of the transition matrices: ``clip(logits, 0, 1) / outdeg(src)``, 0 on padded edges.

    Args:
      logits: (E, m) encoder outputs per edge and head.
      src: (E,) source node of each edge (the row of A it fills).
      edge_mask: (E,) True at real edges.
      num_nodes: number of nodes (segments).
    Returns:
      (E, m) values ``A^h[src_e, dst_e]``.
    """
    mask = edge_mask.astype(logits.dtype)
    deg = jax.ops.segment_sum(mask, src, num_segments=num_nodes)                      # (N,)
    return jnp.clip(logits, 0.0, 1.0) * (mask / jnp.maximum(deg[src], 1.0))[:, None]


def _matvec(a: jax.Array, h: jax.Array, src: jax.Array, dst: jax.Array) -> jax.Array:
    """``(A h)_i = sum_{e: src_e = i} a_e h_{dst_e}`` per head: a (E, m), h (N, m) -> (N, m)."""
    return jax.ops.segment_sum(a * h[dst], src, num_segments=h.shape[0])


def iterate_to_tolerance(step, x0: jax.Array, tol: float, max_iter: int) -> tuple[jax.Array, jax.Array]:
    """Iterate ``x <- step(x)`` from ``x0`` until ``max|x_k - x_{k-1}| < tol`` or ``max_iter`` steps.

    Returns ``(x_k, k)`` with ``k`` the number of steps taken (int32).
    """

    def cond(carry):
        k, _, delta = carry
        return (k < max_iter) & (delta >= tol)

    def body(carry):
        k, x, _ = carry
        x_new = step(x)
        return k + 1, x_new, jnp.max(jnp.abs(x_new - x))

    init = (jnp.zeros((), jnp.int32), x0, jnp.asarray(jnp.inf, x0.dtype))
    k, x, _ = jax.lax.while_loop(cond, body, init)
    return x, k


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def fixed_point(a: jax.Array, b: jax.Array, src: jax.Array, dst: jax.Array, gamma: float,
                nonlinearity: str = "identity", tol: float = 1e-6, max_iter: int = 50):
    """The fixed point ``H* = phi(gamma A H* + b)`` by iteration, differentiated implicitly.

    Args:
      a: (E, m) transition weights (``transition_weights``): ``A^h[src_e, dst_e] = a[e, h]``; the rows
        of every ``A^h`` must sum to at most 1 (then ``gamma A^h`` contracts in the max norm).
      b: (N, m) bias per node and head.
      src, dst: (E,) int edge endpoints.
      gamma: contraction factor in (0, 1).
      nonlinearity: "identity" (the paper's) or "tanh".
      tol: stop when ``max|H_k - H_{k-1}| < tol``.
      max_iter: at most this many steps (forward, and again backward).
    Returns:
      ``(H, k)``: H (N, m) and the number of forward steps k (int32).
    """
    return _forward(a, b, src, dst, gamma, nonlinearity, tol, max_iter)


def _step_fn(a, b, src, dst, gamma, nonlinearity):
    phi = NONLINEARITIES[nonlinearity]
    return lambda h: phi(gamma * _matvec(a, h, src, dst) + b)


def _forward(a, b, src, dst, gamma, nonlinearity, tol, max_iter):
    if not 0.0 < gamma < 1.0:
        raise ValueError(f"gamma must lie in (0, 1) for a contraction, got {gamma}")
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity={nonlinearity!r} is unknown; choose one of {sorted(NONLINEARITIES)}")
    step = _step_fn(a, b, src, dst, gamma, nonlinearity)
    return iterate_to_tolerance(step, NONLINEARITIES[nonlinearity](b), tol, max_iter)


def _fixed_point_fwd(a, b, src, dst, gamma, nonlinearity, tol, max_iter):
    h, k = _forward(a, b, src, dst, gamma, nonlinearity, tol, max_iter)
    return (h, k), (a, b, src, dst, h)


def _fixed_point_bwd(gamma, nonlinearity, tol, max_iter, residuals, cotangents):
    a, b, src, dst, h = residuals
    v, _ = cotangents                                   # the iteration count has no cotangent
    h = jax.lax.stop_gradient(h)
    # J^T u by the VJP of one step in z at z = H*; u = J^T u + v by the same iteration.
    _, vjp_z = jax.vjp(lambda z: _step_fn(a, b, src, dst, gamma, nonlinearity)(z), h)
    u, _ = iterate_to_tolerance(lambda u: vjp_z(u)[0] + v, v, tol, max_iter)
    # Gradients to A and b through one re-attached step phi(gamma A H* + b).
    _, vjp_ab = jax.vjp(lambda a_, b_: _step_fn(a_, b_, src, dst, gamma, nonlinearity)(h), a, b)
    grad_a, grad_b = vjp_ab(u)
    return grad_a, grad_b, None, None


fixed_point.defvjp(_fixed_point_fwd, _fixed_point_bwd)


def contraction_matrix(a: jax.Array, src: jax.Array, dst: jax.Array, num_nodes: int) -> jax.Array:
    """Dense transition matrices (m, N, N) from edge weights a (E, m) (duplicate edges add up)."""
    dense = jnp.zeros((a.shape[1], num_nodes, num_nodes), a.dtype)
    return dense.at[:, src, dst].add(a.T)


def dense_fixed_point(a: jax.Array, b: jax.Array, src: jax.Array, dst: jax.Array, gamma: float) -> jax.Array:
    """``H^h = (I - gamma A^h)^{-1} b^h`` for every head by a dense solve (the linear map only).

    a (E, m), b (N, m) -> (N, m). Costs O(m N^3): for small graphs (one graph, or call per graph).
    """
    n = b.shape[0]
    A = contraction_matrix(a, src, dst, n)                                    # (m, N, N)
    system = jnp.eye(n, dtype=a.dtype)[None] - gamma * A
    return jnp.linalg.solve(system, b.T[..., None])[..., 0].T                 # (N, m)


class CGS(nnx.Module):
    """Convergent graph solver (module docstring) on a batch of padded graphs -> (graphs, nodes, out).

    Args:
      node_features, edge_features: input channels of the data.
      out_features: outputs per node.
      heads: m, the number of fixed-point heads (reference: 16 porenet, 64 gvi).
      gamma: contraction factor (reference: 0.5 everywhere).
      encoder_layers: attention MPNN layers of the encoder (the reference's ``num_hidden_gn + 1``).
      node_hidden, edge_hidden: channels between encoder layers (reference: 32 porenet, 64 gvi).
      mlp_hidden: hidden widths of the encoder's MLPs (reference: [64] porenet, [128] gvi).
      decoder_hidden: hidden widths of the decoder (reference: [64, 32]).
      activation: of the MLPs (reference: "leaky_relu").
      nonlinearity: phi of the fixed point: "identity" (reference) or "tanh".
      solver: "iterative" (``lax.while_loop``, implicit backward) or "direct" (a dense solve per
        graph and head, differentiated by autodiff; O(m N^3), small graphs and linear phi only).
      tol, max_iter: the iteration's stopping rule (reference: 1e-6, 50).
    """

    def __init__(self, node_features: int, edge_features: int, out_features: int = 1, heads: int = 16,
                 gamma: float = 0.5, encoder_layers: int = 1, node_hidden: int = 32, edge_hidden: int = 32,
                 mlp_hidden: Sequence[int] = (64,), decoder_hidden: Sequence[int] = (64, 32),
                 activation: str = "leaky_relu", nonlinearity: str = "identity", solver: str = "iterative",
                 tol: float = 1e-6, max_iter: int = 50, *, rngs: nnx.Rngs):
        if not 0.0 < gamma < 1.0:
            raise ValueError(f"gamma={gamma} must lie in (0, 1): the map gamma A is a contraction only then")
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity={nonlinearity!r} is unknown; choose one of {sorted(NONLINEARITIES)}")
        if solver not in ("iterative", "direct"):
            raise ValueError(f"solver={solver!r} is unknown; choose 'iterative' or 'direct'")
        if solver == "direct" and nonlinearity != "identity":
            raise ValueError("solver='direct' solves the linear map only; use nonlinearity='identity' or "
                             "solver='iterative'")
        if tol <= 0 or max_iter < 1:
            raise ValueError(f"need tol > 0 and max_iter >= 1, got tol={tol}, max_iter={max_iter}")
        self.node_features, self.edge_features = node_features, edge_features
        self.heads, self.gamma, self.nonlinearity, self.solver = heads, gamma, nonlinearity, solver
        self.tol, self.max_iter = tol, max_iter
        self.encoder = AttnMPNN(node_features, edge_features, node_hidden, edge_hidden, heads, heads,
                                encoder_layers, list(mlp_hidden), activation=activation, rngs=rngs)
        self.decoder = MLP(heads, out_features, list(decoder_hidden), activation=activation, rngs=rngs)

    def transition(self, nodes, edges, src, dst, node_mask, edge_mask):
        """The encoder: ``(a, b, graph)`` with a (B*E, m) transition weights, b (B*N, m), the flat graph."""
        check_graph_inputs(nodes, edges, src, dst, node_mask, edge_mask, self.node_features, self.edge_features)
        n_graphs, n_nodes, _ = nodes.shape
        graph = flatten_graphs(src, dst, node_mask, edge_mask)
        h = nodes.reshape(n_graphs * n_nodes, -1) * graph.node_mask[:, None]        # (B*N, F_node)
        e = edges.reshape(graph.src.shape[0], -1) * graph.edge_mask[:, None]        # (B*E, F_edge)
        b, logits = self.encoder(h, e, graph)                                       # (B*N, m), (B*E, m)
        a = transition_weights(logits, graph.src, graph.edge_mask, graph.num_nodes)
        return a, b * graph.node_mask[:, None], graph

    def solve(self, nodes, edges, src, dst, node_mask, edge_mask) -> tuple[jax.Array, jax.Array]:
        """The fixed points ``(H, k)``: H (B, N, m), k the number of forward steps (0 for the dense solve)."""
        n_graphs, n_nodes, _ = nodes.shape
        a, b, graph = self.transition(nodes, edges, src, dst, node_mask, edge_mask)
        if self.solver == "iterative":
            h, k = fixed_point(a, b, graph.src, graph.dst, self.gamma, self.nonlinearity, self.tol, self.max_iter)
            return h.reshape(n_graphs, n_nodes, -1), k
        # One dense system per graph: local indices, (B, E, m) weights, (B, N, m) biases.
        local = lambda x: x.reshape(n_graphs, -1) - (jnp.arange(n_graphs, dtype=x.dtype) * n_nodes)[:, None]
        h = jax.vmap(dense_fixed_point, in_axes=(0, 0, 0, 0, None))(
            a.reshape(n_graphs, -1, self.heads), b.reshape(n_graphs, n_nodes, self.heads),
            local(graph.src), local(graph.dst), self.gamma)
        return h, jnp.zeros((), jnp.int32)

    def __call__(self, nodes, edges, src, dst, node_mask, edge_mask) -> jax.Array:
        h, _ = self.solve(nodes, edges, src, dst, node_mask, edge_mask)             # (B, N, m)
        y = self.decoder(h)                                                         # (B, N, out)
        return y * node_mask[..., None].astype(y.dtype)
