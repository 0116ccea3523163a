"""The node-regression task on padded graphs: metrics by hand, shape checks, and a short fit of CGS on
graph value iteration through the runner's trainer."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments.data.graphs import GraphValueIteration, pad_graphs, value_iteration_graph
from experiments.errors import UserInputError
from experiments.tasks.graph import NodeRegression
from experiments.trainer import Trainer, TrainerConfig
from lax_models.cgs import CGS
from lax_models.gnn import GNN
from optim import adam


class FixedPrediction:
    """A stand-in model returning given per-node values, whatever the graph."""

    def __init__(self, values):
        self.values = jnp.asarray(values, jnp.float32)

    def __call__(self, nodes, edges, src, dst, node_mask, edge_mask):
        return self.values[..., None]


def gvi_batch(seed=0):
    rng = np.random.default_rng(seed)
    graphs = [value_iteration_graph(rng, n, a, 0.9) for n, a in ((6, 3), (9, 2))]
    return pad_graphs(graphs, 10, 30, "test"), graphs


def test_value_metrics_by_hand():
    task = NodeRegression(GraphValueIteration(n_states=(6, 11), n_actions=(2, 4)))
    batch, graphs = gvi_batch()
    rng = np.random.default_rng(1)
    pred = batch["target"] * (1 + 0.3 * rng.normal(size=batch["target"].shape))
    pred[~batch["node_mask"]] = 99.0                           # ignored at padded nodes
    # traced, as the runner calls them (and compiled once for both predictions)
    metrics = jax.jit(lambda values, b: task.metrics(FixedPrediction(values), b, "test"))
    got = {k: np.asarray(v.total) for k, v in metrics(pred, batch).items()}
    for g, graph in enumerate(graphs):
        n = len(graph["target"])
        v, p = graph["target"], pred[g, :n].astype(np.float64)
        np.testing.assert_allclose(got["mse"][g], np.mean((p - v) ** 2), rtol=1e-5)
        np.testing.assert_allclose(got["mape"][g], 100 * np.mean(np.abs(p - v) / np.abs(v)), rtol=1e-5)
        src, dst, r = graph["src"], graph["dst"], graph["edges"][:, 0]
        agree = [graph["policy"][s] == np.flatnonzero(src == s)[np.argmax((r + 0.9 * p[dst])[src == s])]
                 for s in range(n)]
        np.testing.assert_allclose(got["policy_accuracy"][g], np.mean(agree), rtol=1e-6)
    assert 0 < got["policy_accuracy"].min() and got["policy_accuracy"].max() < 1  # the check can fail
    exact = metrics(batch["target"], batch)
    assert float(exact["mape"].total.max()) == 0 and float(exact["policy_accuracy"].total.min()) == 1
    mask = batch["node_mask"]
    want_loss = np.sum(((pred - batch["target"]) ** 2)[mask]) / mask.sum()
    loss = jax.jit(lambda values, b: task.loss(FixedPrediction(values), b))
    np.testing.assert_allclose(float(loss(pred, batch)), want_loss, rtol=1e-5)


def abstract(make):
    """The model with its parameters as shapes only (``nnx.eval_shape``): enough for ``check_model``,
    which traces the model without reading a value, and no eager initialisation to pay for."""
    return nnx.eval_shape(make)


def test_check_model_names_the_feature_sizes():
    task = NodeRegression(GraphValueIteration(n_states=(6, 11), n_actions=(2, 4)))
    with pytest.raises(UserInputError, match="edge_features"):
        task.check_model(abstract(lambda: GNN(1, 3, hidden=4, n_layers=1, rngs=nnx.Rngs(0))), 4)
    with pytest.raises(UserInputError, match="out_features=1"):
        task.check_model(abstract(lambda: GNN(1, 1, out_features=2, hidden=4, n_layers=1, rngs=nnx.Rngs(0))), 4)
    task.check_model(abstract(lambda: CGS(1, 1, heads=2, rngs=nnx.Rngs(0))), 4)
    with pytest.raises(UserInputError, match="graph dataset"):
        NodeRegression(object())


@pytest.mark.slow  # a training through the trainer (~18 s of CPU)
def test_cgs_trains_on_graph_value_iteration_through_the_trainer(tmp_path):
    """The runner's loop with padded graph batches sharded over 2 devices: the loss falls and the test
    metrics come out per split (predicting 0 everywhere would score MAPE 100). The smallest CGS (4 heads, one
    encoder layer, width 8): compiling its training step is the cost here."""
    data = GraphValueIteration(n_train=64, n_test=16, n_states=(6, 11), n_actions=(2, 4), cache_dir=str(tmp_path))
    task = NodeRegression(data)
    model = CGS(1, 1, heads=4, encoder_layers=1, node_hidden=8, edge_hidden=8, mlp_hidden=[8],
                decoder_hidden=[8], rngs=nnx.Rngs(0))
    task.check_model(model, 16)
    task.setup(progress=False)
    cfg = TrainerConfig(max_steps=40, batch_size=16, log_every=20, ckpt_every=10_000, devices=2, progress=False,
                        plots=False)
    res = Trainer(cfg, tmp_path / "run", seed=0).fit(model, lambda spe, total: adam(1e-2), task)
    test = res["metrics"]["test"]
    assert res["objective"]["metric"] == "mape" and set(test) == {"mse", "mape", "policy_accuracy"}
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert losses[-1] < 0.5 * losses[0]
    assert test["mape"] < 50 and 0 < test["policy_accuracy"] <= 1
