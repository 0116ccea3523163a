"""Message passing on batches of padded graphs, and the stacked GNN baseline of the CGS paper.

A batch of ``B`` graphs is a set of padded arrays (every graph padded to ``N`` nodes and ``E`` edges):

    nodes      (B, N, F_node)   node features            node_mask (B, N)  True at real nodes
    edges      (B, E, F_edge)   edge features            edge_mask (B, E)  True at real edges
    src, dst   (B, E) int       the edge src -> dst, as node indices *within* its graph

Convention: **an edge src -> dst means "src reads dst"**. Every aggregation sums over the edges that
*leave* a node (``segment_sum(..., src)``), as the rows of the CGS transition matrix are indexed by
the edge's source and normalised by its out-degree (Park, Choo, Park, ICLR 2022; reference
``CGS/gnn/CGS/fp_utils.py``: rows of DGL's ``adj()`` are sources). For an undirected graph (both
directions stored) this is ordinary message passing; for the graph value iteration task an edge is
an action from a state to its successor, whose value the state reads.

Inside a model the batch is flattened into one graph of ``B * N`` nodes (indices offset by
``graph * N``), so that one ``jax.ops.segment_sum`` serves the whole batch. Padded edges carry zero
weight and padded nodes have no edges.

``AttnMPNNLayer`` is the encoder layer of the reference (``CGS/nn/MPNNLayer.py``):

    e'_ij   = MLP_e([e_ij, h_i, h_j])                     edge update
    w_ij    = softmax over the edges leaving i of MLP_w([e_ij, h_i, h_j])
    h'_i    = MLP_n([sum_j w_ij e'_ij, h_i])             node update

``GNN`` stacks ``n_layers`` of them and decodes every node with an MLP (the reference's
``CGS/gnn/StackGNN.py``): the explicit, fixed-depth baseline the paper compares CGS with.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["ACTIVATIONS", "AttnMPNN", "AttnMPNNLayer", "FlatGraph", "GNN", "MLP", "flatten_graphs",
           "out_degree", "segment_softmax"]

ACTIVATIONS = {"leaky_relu": nnx.leaky_relu, "relu": nnx.relu, "silu": nnx.silu, "gelu": nnx.gelu,
               "tanh": jnp.tanh}


def activation_fn(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r} is unknown; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class FlatGraph(NamedTuple):
    """A batch of padded graphs as one graph of ``num_nodes = B * N`` nodes (see the module docstring)."""

    src: jax.Array          # (B * E,) int32, global node index of each edge's source
    dst: jax.Array          # (B * E,) int32
    node_mask: jax.Array    # (B * N,) bool
    edge_mask: jax.Array    # (B * E,) bool
    num_nodes: int          # B * N (static)


def flatten_graphs(src: jax.Array, dst: jax.Array, node_mask: jax.Array, edge_mask: jax.Array) -> FlatGraph:
    """Padded per-graph indices (B, E) -> one flat graph; a padded edge is re-pointed at its graph's
    node 0 (its weight is zero wherever it is used)."""
    if src.ndim != 2 or src.shape != dst.shape or edge_mask.shape != src.shape or node_mask.ndim != 2:
        raise ValueError(f"expected src, dst, edge_mask of shape (graphs, edges) and node_mask of shape "
                         f"(graphs, nodes); got {src.shape}, {dst.shape}, {edge_mask.shape}, {node_mask.shape}")
    n_graphs, n_nodes = node_mask.shape
    offset = (jnp.arange(n_graphs, dtype=jnp.int32) * n_nodes)[:, None]            # (B, 1)
    src = jnp.where(edge_mask, src, 0).astype(jnp.int32) + offset                   # (B, E)
    dst = jnp.where(edge_mask, dst, 0).astype(jnp.int32) + offset
    return FlatGraph(src.reshape(-1), dst.reshape(-1), node_mask.reshape(-1).astype(bool),
                     edge_mask.reshape(-1).astype(bool), n_graphs * n_nodes)


def out_degree(graph: FlatGraph) -> jax.Array:
    """Number of real edges leaving each node, (num_nodes,) float32."""
    return jax.ops.segment_sum(graph.edge_mask.astype(jnp.float32), graph.src, num_segments=graph.num_nodes)


def segment_softmax(logits: jax.Array, graph: FlatGraph) -> jax.Array:
    """Softmax of per-edge ``logits`` (E, k) over the real edges leaving each node (padded edges: 0)."""
    mask = graph.edge_mask[:, None]
    masked = jnp.where(mask, logits, -jnp.inf)
    peak = jax.ops.segment_max(masked, graph.src, num_segments=graph.num_nodes)          # (N, k)
    peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
    w = jnp.where(mask, jnp.exp(logits - jax.lax.stop_gradient(peak)[graph.src]), 0.0)
    total = jax.ops.segment_sum(w, graph.src, num_segments=graph.num_nodes)
    return w / jnp.where(total > 0, total, 1.0)[graph.src]


class MLP(nnx.Module):
    """Dense layers ``in -> hidden... -> out``; ``activation`` after every hidden layer, and after the
    output too when ``out_activation`` (as the reference's encoder MLPs)."""

    def __init__(self, in_features: int, out_features: int, hidden: Sequence[int] = (), *,
                 activation: str = "leaky_relu", out_activation: bool = False, rngs: nnx.Rngs):
        sizes = [in_features, *hidden, out_features]
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.activation = activation
        self.out_activation = out_activation
        activation_fn(activation)

    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation_fn(self.activation)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1 or self.out_activation:
                x = act(x)
        return x


class AttnMPNNLayer(nnx.Module):
    """One attention message-passing layer (module docstring): (h, e) -> (h', e')."""

    def __init__(self, node_in: int, edge_in: int, node_out: int, edge_out: int, hidden: Sequence[int], *,
                 activation: str = "leaky_relu", rngs: nnx.Rngs):
        both = edge_in + 2 * node_in
        kw = dict(activation=activation, out_activation=True, rngs=rngs)
        self.edge_model = MLP(both, edge_out, hidden, **kw)
        self.attn_model = MLP(both, 1, hidden, **kw)
        self.node_model = MLP(edge_out + node_in, node_out, hidden, **kw)

    def __call__(self, h: jax.Array, e: jax.Array, graph: FlatGraph) -> tuple[jax.Array, jax.Array]:
        z = jnp.concatenate([e, h[graph.src], h[graph.dst]], axis=-1)                # (E, edge_in + 2 node_in)
        e_new = self.edge_model(z)                                                  # (E, edge_out)
        w = segment_softmax(self.attn_model(z), graph)                              # (E, 1)
        agg = jax.ops.segment_sum(w * e_new, graph.src, num_segments=graph.num_nodes)  # (N, edge_out)
        h_new = self.node_model(jnp.concatenate([agg, h], axis=-1))                 # (N, node_out)
        return h_new * graph.node_mask[:, None], e_new * graph.edge_mask[:, None]


class AttnMPNN(nnx.Module):
    """``n_layers`` attention MPNN layers; the last one outputs ``node_out`` / ``edge_out`` channels."""

    def __init__(self, node_in: int, edge_in: int, node_hidden: int, edge_hidden: int, node_out: int,
                 edge_out: int, n_layers: int, mlp_hidden: Sequence[int], *, activation: str = "leaky_relu",
                 rngs: nnx.Rngs):
        if n_layers < 1:
            raise ValueError(f"a message-passing stack needs n_layers >= 1, got {n_layers}")
        node_in_dims = [node_in] + [node_hidden] * (n_layers - 1)
        edge_in_dims = [edge_in] + [edge_hidden] * (n_layers - 1)
        node_out_dims = [node_hidden] * (n_layers - 1) + [node_out]
        edge_out_dims = [edge_hidden] * (n_layers - 1) + [edge_out]
        self.layers = nnx.List([AttnMPNNLayer(ni, ei, no, eo, mlp_hidden, activation=activation, rngs=rngs)
                                for ni, ei, no, eo in zip(node_in_dims, edge_in_dims, node_out_dims, edge_out_dims)])

    def __call__(self, h: jax.Array, e: jax.Array, graph: FlatGraph) -> tuple[jax.Array, jax.Array]:
        for layer in self.layers:
            h, e = layer(h, e, graph)
        return h, e


def check_graph_inputs(nodes, edges, src, dst, node_mask, edge_mask, node_features: int, edge_features: int):
    """ValueError naming the problem when a batch of padded graphs does not have the documented shapes."""
    if nodes.ndim != 3 or nodes.shape[-1] != node_features:
        raise ValueError(f"nodes must have shape (graphs, nodes, {node_features}) (node_features={node_features}), "
                         f"got {nodes.shape}; set the model's node_features to the data's")
    if edges.ndim != 3 or edges.shape[-1] != edge_features:
        raise ValueError(f"edges must have shape (graphs, edges, {edge_features}) (edge_features={edge_features}), "
                         f"got {edges.shape}; set the model's edge_features to the data's")
    if src.shape != edges.shape[:2] or dst.shape != edges.shape[:2] or edge_mask.shape != edges.shape[:2]:
        raise ValueError(f"src, dst and edge_mask must have shape {edges.shape[:2]} (graphs, edges), got "
                         f"{src.shape}, {dst.shape}, {edge_mask.shape}")
    if node_mask.shape != nodes.shape[:2]:
        raise ValueError(f"node_mask must have shape {nodes.shape[:2]} (graphs, nodes), got {node_mask.shape}")


class GNN(nnx.Module):
    """Stacked attention message passing + a per-node decoder: (graphs, nodes, out_features).

    The reference's ``StackGNN``: an explicit GNN of fixed depth ``n_layers``, information travels at
    most ``n_layers`` edges. Called on a batch of padded graphs (module docstring).

    Args:
      node_features, edge_features: input channels of the data.
      out_features: outputs per node.
      hidden: node and edge channels between the layers.
      n_layers: message-passing layers (the depth the table compares CGS's iteration count with).
      mlp_hidden: hidden widths of the edge / attention / node MLPs of every layer (reference: [128]).
      decoder_hidden: hidden widths of the node decoder (reference: [64, 32]).
      activation: "leaky_relu" (reference), "relu", "silu", "gelu" or "tanh".
    """

    def __init__(self, node_features: int, edge_features: int, out_features: int = 1, hidden: int = 32,
                 n_layers: int = 4, mlp_hidden: Sequence[int] = (64,), decoder_hidden: Sequence[int] = (64, 32),
                 activation: str = "leaky_relu", *, rngs: nnx.Rngs):
        self.node_features, self.edge_features = node_features, edge_features
        self.mpnn = AttnMPNN(node_features, edge_features, hidden, hidden, hidden, hidden, n_layers,
                             list(mlp_hidden), activation=activation, rngs=rngs)
        self.decoder = MLP(hidden, out_features, list(decoder_hidden), activation=activation, rngs=rngs)
        self.n_layers = n_layers

    def __call__(self, nodes, edges, src, dst, node_mask, edge_mask) -> jax.Array:
        check_graph_inputs(nodes, edges, src, dst, node_mask, edge_mask, self.node_features, self.edge_features)
        n_graphs, n_nodes, _ = nodes.shape
        graph = flatten_graphs(src, dst, node_mask, edge_mask)
        h = nodes.reshape(n_graphs * n_nodes, -1) * graph.node_mask[:, None]        # (B*N, F_node)
        e = edges.reshape(graph.src.shape[0], -1) * graph.edge_mask[:, None]        # (B*E, F_edge)
        h, _ = self.mpnn(h, e, graph)
        y = self.decoder(h) * graph.node_mask[:, None]                              # (B*N, out)
        return y.reshape(n_graphs, n_nodes, -1)                                     # (B, N, out)
