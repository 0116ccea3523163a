"""Graph datasets of the CGS benchmarks against exact oracles: Bellman optimality by a linear solve of
the greedy policy, Kirchhoff's law and closed forms for pore pressures, padding and caching."""
from __future__ import annotations

import numpy as np
import pytest

from experiments.data.graphs import (GraphValueIteration, PoreNetwork, greedy_policy, pad_graphs, porenet_graph,
                                     solve_pore_pressure, value_iteration, value_iteration_graph)
from experiments.data.store import split_rng


def test_value_iteration_values_are_those_of_the_greedy_policy():
    """V = (I - discount P_pi)^{-1} r_pi for the greedy policy pi, and no action improves on it."""
    rng = np.random.default_rng(0)
    g = value_iteration_graph(rng, 25, 6, 0.9)
    n = 25
    src, dst, r = g["src"], g["dst"], g["edges"][:, 0]
    policy = g["policy"]
    assert (src[policy] == np.arange(n)).all()                 # each state's chosen action leaves it
    P = np.zeros((n, n))
    P[np.arange(n), dst[policy]] = 1.0
    exact = np.linalg.solve(np.eye(n) - 0.9 * P, r[policy])
    np.testing.assert_allclose(g["target"], exact, atol=1e-8)
    q = r + 0.9 * g["target"][dst]
    assert (q <= g["target"][src] + 1e-9).all()                # Bellman optimality
    assert (dst != src).all() and np.bincount(src, minlength=n).tolist() == [6] * n


def test_greedy_policy_equals_a_naive_loop():
    rng = np.random.default_rng(1)
    src = rng.integers(0, 7, 40)
    src[:7] = np.arange(7)
    dst = rng.integers(0, 7, 40)
    r = rng.normal(size=40)
    v = rng.normal(size=7)
    got = greedy_policy(src, dst, r, v, 7, 0.8)
    for s in range(7):
        edges = np.flatnonzero(src == s)
        assert got[s] == edges[np.argmax(r[edges] + 0.8 * v[dst[edges]])]


def test_value_iteration_on_a_two_state_loop_has_the_closed_form():
    # 0 -> 1 (reward 1), 1 -> 0 (reward 0): V0 = 1 + g V1, V1 = g V0.
    v, _ = value_iteration(np.array([0, 1]), np.array([1, 0]), np.array([1.0, 0.0]), 2, 0.5)
    np.testing.assert_allclose(v, [1 / (1 - 0.25), 0.5 / (1 - 0.25)], atol=1e-9)


def test_pore_pressure_on_a_chain_is_the_series_resistance_law():
    # Pores 0-1-2-3 in series, p0 = 1, p3 = 0: the flux g_k (p_k - p_{k+1}) is the same in every throat.
    g = np.array([1.0, 3.0, 0.5])
    p = solve_pore_pressure(4, np.array([[0, 1], [1, 2], [2, 3]]), g, np.array([1, 0, 0, 1], bool),
                            np.array([1.0, 0, 0, 0]))
    flux = 1.0 / np.sum(1.0 / g)
    np.testing.assert_allclose(p, [1.0, 1 - flux / g[0], flux / g[2], 0.0], atol=1e-12)


def test_porenet_pressures_conserve_mass_and_obey_the_maximum_principle():
    rng = np.random.default_rng(2)
    g = porenet_graph(rng, 80)
    n = len(g["nodes"])
    boundary = g["nodes"][:, 3].astype(bool)
    half = len(g["src"]) // 2                                  # the first half: one direction per throat
    src, dst, k = g["src"][:half], g["dst"][:half], g["edges"][:half, 2]
    p = g["target"]
    flow = k * (p[src] - p[dst])
    net = np.zeros(n)
    np.add.at(net, src, flow)
    np.add.at(net, dst, -flow)
    assert np.abs(net[~boundary]).max() < 1e-9 * np.abs(flow).max()
    front = boundary & (p == 1.0)
    assert net[front].sum() > 0.1 * np.abs(flow).max()         # fluid leaves the high-pressure pores
    assert p.min() >= -1e-12 and p.max() <= 1 + 1e-12
    np.testing.assert_array_equal(g["nodes"][boundary, 4], p[boundary])
    assert set(np.unique(p[boundary])) == {0.0, 1.0}
    assert (g["edges"][:, :2] > 0).all()                      # positive diameters and lengths
    np.testing.assert_array_equal(g["src"][half:], dst)       # both directions stored


def test_pad_graphs_keeps_every_graph_and_refuses_an_overflow():
    rng = np.random.default_rng(3)
    graphs = [value_iteration_graph(rng, n, 2, 0.9) for n in (5, 7)]
    out = pad_graphs(graphs, 8, 16, "test")
    assert out["node_mask"].sum(1).tolist() == [5, 7] and out["edge_mask"].sum(1).tolist() == [10, 14]
    np.testing.assert_allclose(out["target"][1, :7], graphs[1]["target"], rtol=1e-6)
    assert (out["policy"][0, 5:] == -1).all()
    with pytest.raises(ValueError, match="max_edges"):
        pad_graphs(graphs, 8, 12, "test")


def test_datasets_are_deterministic_cached_and_padded_as_declared(tmp_path):
    ds = GraphValueIteration(n_train=6, n_test=3, n_states=(6, 10), n_actions=(2, 4), cache_dir=str(tmp_path))
    first = ds.load(progress=False)
    assert len(list(tmp_path.glob("*.npz"))) == 2
    again = GraphValueIteration(n_train=6, n_test=3, n_states=(6, 10), n_actions=(2, 4),
                                cache_dir=str(tmp_path)).load(progress=False)
    for split in ("train", "test"):
        for key in first[split]:
            np.testing.assert_array_equal(first[split][key], again[split][key])
    assert first["train"]["nodes"].shape == (6, 9, 1) and first["train"]["edges"].shape == (6, 27, 1)
    # Graph i of a split is drawn from (seed, split, i): it is the same whatever the split's size.
    g0 = ds.make_graph(split_rng(0, "train", 0), "train")
    np.testing.assert_allclose(first["train"]["target"][0, :len(g0["target"])], g0["target"], rtol=1e-6)

    pn = PoreNetwork(n_train=2, n_test=1, n_pores=(10, 20), n_test_large=1, large_pores=(30, 40),
                     cache_dir=str(tmp_path)).load(progress=False)
    assert list(pn) == ["train", "test", "test_large"]
    assert pn["train"]["nodes"].shape == (2, 19, 5) and pn["test_large"]["edges"].shape == (1, 39 * 16, 3)


def test_bad_dataset_arguments_are_named():
    with pytest.raises(ValueError, match="n_actions"):
        GraphValueIteration(n_states=(5, 8), n_actions=(5, 10))
    with pytest.raises(ValueError, match="discount"):
        GraphValueIteration(discount=1.0)
    with pytest.raises(ValueError, match="n_pores"):
        PoreNetwork(n_pores=(50, 20))
