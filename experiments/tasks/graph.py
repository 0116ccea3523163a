"""Graph tasks: regress one value per node of a batch of padded graphs (the CGS benchmarks).

The task takes a *graph dataset* (``dataset``; ``experiments/data/graphs.py``) whose splits are padded
graphs (``lax_models/gnn.py`` gives the layout). The model is called as
``model(nodes, edges, src, dst, node_mask, edge_mask)`` and returns ``(graphs, nodes, 1)`` (or
``(graphs, nodes)``), as ``lax_models.cgs.CGS`` and ``lax_models.gnn.GNN`` do. Batches are the
runner's default array batches (a permutation of the graphs per epoch): a graph is an example.

* loss: the squared error averaged over the real nodes of the batch (the reference's MSE loss);
* metrics, per graph and then averaged over graphs, as the reference's ``get_pred_mse`` /
  ``get_pred_mape`` / ``get_policy_acc`` (``CGS/utils/test_utils.py``):

  - ``mse``: the mean squared error over the graph's nodes (pore pressures / p_max: the objective of
    pore networks);
  - value datasets (``kind = "values"``) also: ``mape``, 100 x the mean of ``|V - V_hat| / |V|`` (the
    objective; the reference divides by the prediction instead, which we do not copy), and
    ``policy_accuracy``, the fraction of states whose optimal action is also greedy for the predicted
    values (``argmax_a r_a + discount V_hat(next_a)``; a tie counts as agreement).

The objective is taken on the "test" split.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.errors import UserInputError
from experiments.metrics import Mean
from experiments.tasks.base import Objective, Task, eval_shape_or_error

__all__ = ["NodeRegression"]

MODEL_INPUTS = ("nodes", "edges", "src", "dst", "node_mask", "edge_mask")


class NodeRegression(Task):
    """One real target per node of generated graphs (graph value iteration, pore-network pressures).

    Args:
      dataset: a graph dataset, e.g. ``experiments.data.graphs.GraphValueIteration(...)`` or
        ``experiments.data.graphs.PoreNetwork(...)``.
    """

    def __init__(self, dataset: Any):
        kind = getattr(dataset, "kind", None)
        if kind not in ("values", "pressure"):
            raise UserInputError(f"NodeRegression takes a graph dataset (experiments.data.graphs), but data.dataset "
                                 f"({type(dataset).__name__}) is of kind {kind!r}")
        self.dataset = dataset
        self.volatile_keys = tuple(f"dataset.{k}" for k in getattr(dataset, "volatile_keys", ()))
        self.objective = Objective("mape" if kind == "values" else "mse", mode="min", split="test")
        if "test" not in dataset.splits:
            raise UserInputError(f"data.dataset ({type(dataset).__name__}) needs a test split (n_test > 0)")
        self._data: dict[str, dict[str, np.ndarray]] | None = None

    # -- shapes, before any data --------------------------------------------------------------------
    def example_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        n, e = self.dataset.padding("train")
        s = jax.ShapeDtypeStruct
        batch = {"nodes": s((batch_size, n, self.dataset.node_features), jnp.float32),
                 "edges": s((batch_size, e, self.dataset.edge_features), jnp.float32),
                 "src": s((batch_size, e), jnp.int32), "dst": s((batch_size, e), jnp.int32),
                 "node_mask": s((batch_size, n), jnp.bool_), "edge_mask": s((batch_size, e), jnp.bool_),
                 "target": s((batch_size, n), jnp.float32)}
        if self.dataset.kind == "values":
            batch["policy"] = s((batch_size, n), jnp.int32)
        return batch

    def check_model(self, model, batch_size: int) -> None:
        ex = self.example_batch(batch_size)
        out = eval_shape_or_error(model, *(ex[k] for k in MODEL_INPUTS))
        if out.shape not in (ex["target"].shape, ex["target"].shape + (1,)):
            raise UserInputError(f"the model must map a batch of graphs to one value per node, shape "
                                 f"{ex['target'].shape + (1,)}, got {out.shape}; set model.out_features=1 and "
                                 f"model.node_features={self.dataset.node_features}, "
                                 f"model.edge_features={self.dataset.edge_features}")

    # -- data ---------------------------------------------------------------------------------------
    def setup(self, progress: bool = True) -> None:
        self._data = self.dataset.load(progress=progress)

    def _loaded(self) -> dict[str, dict[str, np.ndarray]]:
        if self._data is None:
            raise RuntimeError("NodeRegression.setup() must run before the data is used")
        return self._data

    @property
    def train(self) -> dict[str, np.ndarray]:
        return self._loaded()["train"]

    @property
    def evals(self) -> dict[str, dict[str, np.ndarray]]:
        data = self._loaded()
        return {s: data[s] for s in self.dataset.splits if s != "train"}

    def eval_splits(self) -> list[str]:
        return [s for s in self.dataset.splits if s != "train"]

    # -- the model on a batch (traced) ----------------------------------------------------------------
    def predict(self, model, batch) -> jax.Array:
        """(graphs, nodes) predictions, 0 at padded nodes."""
        out = model(*(batch[k] for k in MODEL_INPUTS))
        return out.reshape(batch["target"].shape) * batch["node_mask"]

    def loss(self, model, batch) -> jax.Array:
        mask = batch["node_mask"].astype(jnp.float32)
        err = (self.predict(model, batch) - batch["target"]) ** 2 * mask
        return jnp.sum(err) / jnp.maximum(jnp.sum(mask), 1.0)

    def metrics(self, model, batch, split: str) -> dict[str, Mean]:
        pred = self.predict(model, batch)
        mask = batch["node_mask"].astype(jnp.float32)
        n = jnp.maximum(mask.sum(-1), 1.0)                                         # (B,) real nodes
        out = {"mse": Mean(jnp.sum((pred - batch["target"]) ** 2 * mask, -1) / n)}
        if self.dataset.kind == "values":
            target = batch["target"]
            ape = jnp.abs(pred - target) / jnp.maximum(jnp.abs(target), 1e-6) * mask
            out["mape"] = Mean(100.0 * jnp.sum(ape, -1) / n)
            out["policy_accuracy"] = Mean(jnp.sum(self._greedy_agrees(pred, batch) * mask, -1) / n)
        return out

    def _greedy_agrees(self, values: jax.Array, batch) -> jax.Array:
        """(B, N) 1.0 where the optimal action is greedy for ``values`` (B, N)."""
        reward = batch["edges"][..., 0]                                             # (B, E)
        q = reward + self.dataset.discount * jnp.take_along_axis(values, batch["dst"], axis=1)
        q = jnp.where(batch["edge_mask"], q, -jnp.inf)
        n_nodes = values.shape[1]
        best = jax.vmap(lambda q_, s: jax.ops.segment_max(q_, s, num_segments=n_nodes))(q, batch["src"])
        chosen = jnp.take_along_axis(q, jnp.maximum(batch["policy"], 0), axis=1)     # (B, N)
        return (chosen >= best).astype(jnp.float32)
