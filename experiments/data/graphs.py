"""Generated graph datasets of the CGS paper (Park, Choo, Park, ICLR 2022, Sec. 6.1-6.2): graph value
iteration and pore-network Stokes flow, with exact targets. Nothing is downloaded; every split is
generated from ``(seed, split)`` and cached through ``experiments.data.store.cached_arrays``.

Every graph of a split is padded to the split's ``max_nodes`` / ``max_edges`` (known from the config),
and a split is a dict of arrays with a leading graph axis (``lax_models/gnn.py`` for the layout):

    nodes (n, N, F_node) float32   edges (n, E, F_edge) float32   src, dst (n, E) int32
    node_mask (n, N) bool          edge_mask (n, E) bool          target (n, N) float32
    policy (n, N) int32            (value iteration only: the edge of the optimal action, -1 padding)

An edge ``src -> dst`` means "src reads dst": an action leading from state src to state dst, or one
direction of a throat (both directions are stored).

**Graph value iteration** (reference ``CGS/experiments/gvi/generate_graph.py``): ``nS ~ U[20, 50)``
states, ``nA ~ U[5, 10)`` actions per state, each leading to a state drawn uniformly among the others
(with replacement, as the reference), with reward ``r ~ U[-1, 1]``. Target: the optimal values
``V(s) = max_{s -> t} r_st + discount V(t)``, by value iteration run to ``max|V_k - V_{k-1}| < 1e-10``
(the reference stops at ``atol 1e-3``); ``policy``: the argmax action. Node feature: 1; edge feature: r.

**Pore-network Stokes flow** (reference ``CGS/experiments/porenet``, OpenPNM replaced by its
equations): ``n ~ U[50, 200)`` pores uniform in a 1 mm cube, the throats are the edges of their
``scipy.spatial.Delaunay`` tessellation. Pore diameters ``lognormal(log 1e-5 m, 0.1)`` clipped to 0.9 x
the distance to the nearest pore; a throat's diameter is its smaller pore's, its length the centre
distance minus both radii, its hydraulic conductance ``g = pi r^4 / (8 mu L)`` (Hagen-Poiseuille,
``mu = 1e-5``). Mass conservation at every interior pore is the weighted graph-Laplacian system
``sum_j g_ij (p_i - p_j) = 0`` with Dirichlet pressures 101,325 Pa on the "front" pores (x < 0.1 mm)
and 0 on the "back" pores (x > 0.9 mm) (at least one each); solved by ``scipy.sparse.linalg.spsolve``
of ``L_II p_I = -L_IB p_B``. Target: ``p / p_max``. Node features (5): coordinates (mm), boundary
flag, the boundary pressure / p_max (0 at interior pores). Edge features (3): throat diameter / 10 um,
length / 0.1 mm, conductance / its mean over the graph (the pressures do not change when every
conductance is scaled).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
from scipy.spatial import Delaunay

from experiments.data import check_sizes, progress_bar
from experiments.data.store import DEFAULT_CACHE_DIR, cached_arrays, split_rng

__all__ = ["GraphValueIteration", "PoreNetwork", "pad_graphs", "porenet_graph", "solve_pore_pressure",
           "value_iteration", "value_iteration_graph"]

GRAPH_KEYS = ("nodes", "edges", "src", "dst", "node_mask", "edge_mask", "target")


# -- graph value iteration ----------------------------------------------------------------------------

def value_iteration(src: np.ndarray, dst: np.ndarray, reward: np.ndarray, n_states: int, discount: float,
                    tol: float = 1e-10, max_iter: int = 10_000) -> tuple[np.ndarray, int]:
    """Optimal values ``V(s) = max_{e: src_e = s} reward_e + discount V(dst_e)`` by value iteration from 0.

    Every state needs at least one action. Returns ``(V, iterations)``; raises if not converged.
    """
    v = np.zeros(n_states)
    for k in range(1, max_iter + 1):
        q = reward + discount * v[dst]
        v_new = np.full(n_states, -np.inf)
        np.maximum.at(v_new, src, q)
        if np.max(np.abs(v_new - v)) < tol:
            return v_new, k
        v = v_new
    raise RuntimeError(f"value iteration did not reach {tol} in {max_iter} iterations")


def greedy_policy(src: np.ndarray, dst: np.ndarray, reward: np.ndarray, values: np.ndarray, n_states: int,
                  discount: float) -> np.ndarray:
    """For every state, the index of the edge (action) maximising ``reward + discount V(dst)``."""
    q = reward + discount * values[dst]
    order = np.lexsort((-q, src))                  # by state, best action first
    first = np.ones(len(order), bool)
    first[1:] = src[order][1:] != src[order][:-1]
    policy = np.empty(n_states, np.int64)
    policy[src[order][first]] = order[first]
    return policy


def value_iteration_graph(rng: np.random.Generator, n_states: int, n_actions: int, discount: float) -> dict:
    """One random MDP graph (module docstring) with its optimal values and policy."""
    if n_states - 1 <= n_actions:
        raise ValueError(f"need more states than actions + 1, got {n_states} states and {n_actions} actions")
    src = np.repeat(np.arange(n_states), n_actions)                                   # (nS * nA,)
    dst = rng.integers(0, n_states - 1, size=src.shape)
    dst = dst + (dst >= src)                                                          # any state but src
    reward = rng.uniform(-1.0, 1.0, size=src.shape)
    values, _ = value_iteration(src, dst, reward, n_states, discount)
    return {"nodes": np.ones((n_states, 1)), "edges": reward[:, None], "src": src, "dst": dst,
            "target": values, "policy": greedy_policy(src, dst, reward, values, n_states, discount)}


# -- pore networks --------------------------------------------------------------------------------------

def delaunay_edges(points: np.ndarray) -> np.ndarray:
    """Unique undirected edges (i < j) of the Delaunay tessellation of ``points`` (n, d)."""
    simplices = Delaunay(points).simplices
    k = simplices.shape[1]
    pairs = np.concatenate([simplices[:, [i, j]] for i in range(k) for j in range(i + 1, k)])
    return np.unique(np.sort(pairs, axis=1), axis=0)


def solve_pore_pressure(n: int, edges: np.ndarray, conductance: np.ndarray, fixed: np.ndarray,
                        pressure: np.ndarray) -> np.ndarray:
    """Pressures with ``sum_j g_ij (p_i - p_j) = 0`` at the free pores and ``p = pressure`` at ``fixed``.

    Args:
      n: pores; edges (T, 2) undirected throats; conductance (T,); fixed (n,) bool; pressure (n,)
      (read where fixed). Returns p (n,).
    """
    i, j = edges[:, 0], edges[:, 1]
    w = scipy.sparse.coo_matrix((np.r_[conductance, conductance], (np.r_[i, j], np.r_[j, i])), shape=(n, n)).tocsr()
    laplacian = (scipy.sparse.diags(np.asarray(w.sum(axis=1)).ravel()) - w).tocsr()
    free = ~fixed
    p = np.where(fixed, pressure, 0.0)
    rhs = -laplacian[free][:, fixed] @ p[fixed]
    p[free] = scipy.sparse.linalg.spsolve(laplacian[free][:, free].tocsc(), rhs)
    return p


def porenet_graph(rng: np.random.Generator, n_pores: int, side: float = 1e-3, viscosity: float = 1e-5,
                  inlet_pressure: float = 101_325.0, boundary: float = 0.1) -> dict:
    """One random pore network (module docstring) with its Stokes-flow pressures."""
    points = rng.uniform(0.0, side, size=(n_pores, 3))
    throats = delaunay_edges(points)                                                  # (T, 2)
    length = np.linalg.norm(points[throats[:, 0]] - points[throats[:, 1]], axis=1)
    nearest = np.full(n_pores, np.inf)
    np.minimum.at(nearest, throats[:, 0], length)
    np.minimum.at(nearest, throats[:, 1], length)
    diameter = np.minimum(rng.lognormal(np.log(1e-5), 0.1, size=n_pores), 0.9 * nearest)
    t_diameter = np.minimum(diameter[throats[:, 0]], diameter[throats[:, 1]])
    t_length = length - diameter[throats[:, 0]] / 2 - diameter[throats[:, 1]] / 2
    conductance = np.pi * (t_diameter / 2) ** 4 / (8 * viscosity * t_length)
    x = points[:, 0] / side
    front, back = x < boundary, x > 1 - boundary
    front[np.argmin(x)] = True
    back[np.argmax(x)] = True
    fixed = front | back
    p = solve_pore_pressure(n_pores, throats, conductance, fixed, np.where(front, inlet_pressure, 0.0))
    target = p / inlet_pressure
    nodes = np.concatenate([points / side, fixed[:, None], np.where(fixed, target, 0.0)[:, None]], axis=1)
    features = np.stack([t_diameter / 1e-5, t_length / 1e-4, conductance / conductance.mean()], axis=1)
    both = np.concatenate([throats, throats[:, ::-1]])                                 # both directions
    return {"nodes": nodes, "edges": np.concatenate([features, features]), "src": both[:, 0],
            "dst": both[:, 1], "target": target}


# -- padding and datasets ------------------------------------------------------------------------------

def pad_graphs(graphs: Sequence[dict], max_nodes: int, max_edges: int, what: str) -> dict[str, np.ndarray]:
    """Stack graphs padded to ``max_nodes`` / ``max_edges`` (module docstring); ValueError if one is larger."""
    n = len(graphs)
    f_node, f_edge = graphs[0]["nodes"].shape[1], graphs[0]["edges"].shape[1]
    out = {"nodes": np.zeros((n, max_nodes, f_node), np.float32), "edges": np.zeros((n, max_edges, f_edge), np.float32),
           "src": np.zeros((n, max_edges), np.int32), "dst": np.zeros((n, max_edges), np.int32),
           "node_mask": np.zeros((n, max_nodes), bool), "edge_mask": np.zeros((n, max_edges), bool),
           "target": np.zeros((n, max_nodes), np.float32)}
    if "policy" in graphs[0]:
        out["policy"] = np.full((n, max_nodes), -1, np.int32)
    for g, graph in enumerate(graphs):
        nn_, ne = len(graph["nodes"]), len(graph["src"])
        if nn_ > max_nodes or ne > max_edges:
            raise ValueError(f"{what}: a graph of {nn_} nodes and {ne} edges does not fit the padding of "
                             f"{max_nodes} nodes and {max_edges} edges; raise the dataset's max_edges")
        for key in ("nodes", "target", "policy"):
            if key in graph:
                out[key][g, :nn_] = graph[key]
        for key in ("edges", "src", "dst"):
            out[key][g, :ne] = graph[key]
        out["node_mask"][g, :nn_] = True
        out["edge_mask"][g, :ne] = True
    return out


def _check_range(name: str, key: str, bounds: Sequence[int], low: int) -> tuple[int, int]:
    bounds = tuple(int(x) for x in bounds)
    if len(bounds) != 2 or not low <= bounds[0] < bounds[1]:
        raise ValueError(f"{name}: {key}={list(bounds)} must be [low, high) with {low} <= low < high")
    return bounds


class _GraphDataset:
    """Splits generated graph by graph from ``(seed, split, index)`` and cached as padded arrays."""

    name: str
    kind: str
    node_features: int
    edge_features: int
    volatile_keys = ("cache_dir",)

    def __init__(self, sizes: dict[str, int], seed: int, cache_dir: str):
        check_sizes(type(self).__name__, **{f"n_{s}": n for s, n in sizes.items()})
        self.sizes = {s: n for s, n in sizes.items() if n > 0 or s == "train"}
        self.splits = tuple(self.sizes)
        self.seed, self.cache_dir = int(seed), cache_dir

    def padding(self, split: str) -> tuple[int, int]:
        """``(max_nodes, max_edges)`` of a split."""
        raise NotImplementedError

    def generator_config(self, split: str) -> dict:
        raise NotImplementedError

    def make_graph(self, rng: np.random.Generator, split: str) -> dict:
        raise NotImplementedError

    def load(self, progress: bool = True) -> dict[str, dict[str, np.ndarray]]:
        return {split: self.load_split(split, progress) for split in self.splits}

    def load_split(self, split: str, progress: bool = True) -> dict[str, np.ndarray]:
        n = self.sizes[split]
        max_nodes, max_edges = self.padding(split)

        def generate():
            graphs = [self.make_graph(split_rng(self.seed, split, i), split)
                      for i in progress_bar(range(n), n, f"{self.name} {split}", progress, unit="graph")]
            return pad_graphs(graphs, max_nodes, max_edges, f"{type(self).__name__} {split}")

        config = {"split": split, "n": n, "seed": self.seed, "max_nodes": max_nodes, "max_edges": max_edges,
                  **self.generator_config(split)}
        return cached_arrays(f"{self.name}-{split}", config, generate, self.cache_dir)


class GraphValueIteration(_GraphDataset):
    """Random MDP graphs and their optimal values (module docstring).

    Args:
      n_train, n_test: graphs per split (the reference draws 64 fresh graphs every 32 updates).
      n_states: [low, high) of the uniform number of states (reference [20, 50)).
      n_actions: [low, high) of the uniform number of actions per state (reference [5, 10)).
      discount: of the values (reference 0.9).
      seed: of the generator; cache_dir: where the splits are cached.
    """

    name, kind, node_features, edge_features = "gvi", "values", 1, 1

    def __init__(self, n_train: int = 2048, n_test: int = 256, n_states: Sequence[int] = (20, 50),
                 n_actions: Sequence[int] = (5, 10), discount: float = 0.9, seed: int = 0,
                 cache_dir: str = DEFAULT_CACHE_DIR):
        super().__init__({"train": n_train, "test": n_test}, seed, cache_dir)
        self.n_states = _check_range("GraphValueIteration", "n_states", n_states, 3)
        self.n_actions = _check_range("GraphValueIteration", "n_actions", n_actions, 1)
        if self.n_actions[1] - 1 >= self.n_states[0] - 1:
            raise ValueError(f"GraphValueIteration: every state needs more other states than actions; "
                             f"n_actions={list(self.n_actions)} must stay below n_states[0] - 1 = {self.n_states[0] - 1}")
        if not 0.0 < discount < 1.0:
            raise ValueError(f"GraphValueIteration: discount={discount} must lie in (0, 1)")
        self.discount = float(discount)

    def padding(self, split):
        n = self.n_states[1] - 1
        return n, n * (self.n_actions[1] - 1)

    def generator_config(self, split):
        return {"n_states": list(self.n_states), "n_actions": list(self.n_actions), "discount": self.discount}

    def make_graph(self, rng, split):
        n_states = int(rng.integers(*self.n_states))
        n_actions = int(rng.integers(*self.n_actions))
        return value_iteration_graph(rng, n_states, n_actions, self.discount)


class PoreNetwork(_GraphDataset):
    """Random pore networks and their Stokes-flow pressures (module docstring).

    Args:
      n_train, n_test: graphs per split.
      n_pores: [low, high) of the uniform number of pores of train and test (reference: 50-200).
      n_test_large, large_pores: an extra split "test_large" of larger networks (MIGNN's protocol for
        CGS: 200-500 pores); 0 graphs: no such split.
      edges_per_pore: padding of the directed edges, per pore of the largest graph (a 3-D Delaunay
        tessellation has about 7 throats, 14 directed edges, per pore).
      seed: of the generator; cache_dir: where the splits are cached.
    """

    name, kind, node_features, edge_features = "porenet", "pressure", 5, 3

    def __init__(self, n_train: int = 1024, n_test: int = 256, n_pores: Sequence[int] = (50, 200),
                 n_test_large: int = 0, large_pores: Sequence[int] = (200, 500), edges_per_pore: int = 16,
                 seed: int = 0, cache_dir: str = DEFAULT_CACHE_DIR):
        super().__init__({"train": n_train, "test": n_test, "test_large": n_test_large}, seed, cache_dir)
        self.n_pores = _check_range("PoreNetwork", "n_pores", n_pores, 5)
        self.large_pores = _check_range("PoreNetwork", "large_pores", large_pores, 5)
        if edges_per_pore < 1:
            raise ValueError(f"PoreNetwork: edges_per_pore={edges_per_pore} must be >= 1")
        self.edges_per_pore = int(edges_per_pore)

    def pores(self, split: str) -> tuple[int, int]:
        return self.large_pores if split == "test_large" else self.n_pores

    def padding(self, split):
        n = self.pores(split)[1] - 1
        return n, n * self.edges_per_pore

    def generator_config(self, split):
        return {"n_pores": list(self.pores(split))}

    def make_graph(self, rng, split):
        return porenet_graph(rng, int(rng.integers(*self.pores(split))))
