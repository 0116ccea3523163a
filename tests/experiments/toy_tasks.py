"""Toy tasks of different shapes, for testing that the runner serves every problem family unchanged.

* ``ToyRegressionTask``: y = x^2 + x / 2 pointwise (the default array batching).
* ``SequenceClassificationTask``: variable-length sequences with a mask and integer labels;
  accuracy averaged over examples. Padding holds large values, so a model that ignores the mask fails.
* ``NextTokenTask``: causal next-token prediction on padded sequences; accuracy and NLL averaged over
  real tokens only, perplexity derived from the mean NLL.
* ``PaddedGraphTask``: ragged graphs of 3 to 8 nodes, padded per batch by the task's own iterator
  (the trainer never sees the ragged storage); node-level regression averaged over real nodes.
"""
from __future__ import annotations

from typing import Iterator

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.errors import UserInputError
from experiments.metrics import Mean
from experiments.tasks.base import Objective, Shard, Task, epoch_permutation, eval_shape_or_error


class InMemoryTask(Task):
    """Data made at construction as ``self._train`` / ``self._evals`` dicts of arrays (default batching)."""

    def setup(self, progress=True):
        pass

    @property
    def train(self):
        return self._train

    @property
    def evals(self):
        return self._evals


class ToyRegressionTask(InMemoryTask):
    objective = Objective("mse")

    def __init__(self, n_train: int = 64, n_test: int = 20, size: int = 16, seed: int = 0):
        rng = np.random.default_rng(seed)

        def make(n):
            x = rng.uniform(-1, 1, size=(n, size, 1)).astype(np.float32)
            return {"x": x, "y": (x**2 + 0.5 * x).astype(np.float32)}

        self._train, self._evals = make(n_train), {"test": make(n_test)}
        self.size = size

    def example_batch(self, batch_size):
        s = jax.ShapeDtypeStruct((batch_size, self.size, 1), jnp.float32)
        return {"x": s, "y": s}

    def loss(self, model, batch):
        return jnp.mean((model(batch["x"]) - batch["y"]) ** 2)

    def metrics(self, model, batch, split):
        err = (model(batch["x"]) - batch["y"]) ** 2
        return {"mse": jnp.mean(err, axis=(1, 2))}


class MLP(nnx.Module):
    def __init__(self, hidden: int = 16, *, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(1, hidden, rngs=rngs)
        self.l2 = nnx.Linear(hidden, 1, rngs=rngs)

    def __call__(self, x):
        return self.l2(nnx.gelu(self.l1(x)))


# -- sequence classification with masks -----------------------------------------------------------

class SequenceClassificationTask(InMemoryTask):
    """Label = 1 if the mean of the real (unmasked) values is positive. Batches: x (B, L, 1), mask (B, L),
    label (B,). Padding is filled with +3, so averaging over the padded length flips many labels."""

    objective = Objective("accuracy", mode="max")

    def __init__(self, n_train: int = 256, n_test: int = 64, max_len: int = 12, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.max_len = max_len

        def make(n):
            lengths = rng.integers(3, max_len + 1, size=n)
            mask = np.arange(max_len)[None, :] < lengths[:, None]
            values = rng.normal(size=(n, max_len)).astype(np.float32)
            label = ((values * mask).sum(1) > 0).astype(np.int32)
            x = np.where(mask, values, 3.0).astype(np.float32)[..., None]
            return {"x": x, "mask": mask, "label": label}

        self._train, self._evals = make(n_train), {"test": make(n_test)}

    def example_batch(self, batch_size):
        return {"x": jax.ShapeDtypeStruct((batch_size, self.max_len, 1), jnp.float32),
                "mask": jax.ShapeDtypeStruct((batch_size, self.max_len), jnp.bool_),
                "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32)}

    def check_model(self, model, batch_size):
        ex = self.example_batch(batch_size)
        out = eval_shape_or_error(model, ex["x"], ex["mask"])
        if out.shape != (batch_size, 2):
            raise UserInputError(f"the classifier must give logits of shape {(batch_size, 2)}, got {out.shape}")

    def _ce_and_correct(self, model, batch):
        logits = model(batch["x"], batch["mask"])
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        return ce, (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)

    def loss(self, model, batch):
        return jnp.mean(self._ce_and_correct(model, batch)[0])

    def metrics(self, model, batch, split):
        ce, correct = self._ce_and_correct(model, batch)
        return {"accuracy": Mean(correct), "loss": Mean(ce)}


class MaskedMeanClassifier(nnx.Module):
    """Per-position MLP, mean over the real positions, linear head: (B, L, 1), (B, L) -> (B, classes)."""

    def __init__(self, hidden: int = 16, classes: int = 2, *, rngs: nnx.Rngs):
        self.embed = nnx.Linear(1, hidden, rngs=rngs)
        self.head = nnx.Linear(hidden, classes, rngs=rngs)

    def __call__(self, x, mask):
        h = nnx.gelu(self.embed(x))                                   # (B, L, H)
        w = mask[..., None].astype(h.dtype)                           # (B, L, 1)
        pooled = (h * w).sum(1) / jnp.maximum(w.sum(1), 1.0)          # (B, H)
        return self.head(pooled)


# -- next-token prediction with padding ----------------------------------------------------------

class NextTokenTask(InMemoryTask):
    """Sequences t_{i+1} = (3 t_i + 1) mod vocab of 4 to ``max_len`` tokens, padded with 0.

    Batches: tokens (B, L) int32 and mask (B, L); the model predicts tokens[:, 1:] from tokens[:, :-1]
    and only targets whose mask is set count. Metrics are averaged over real target tokens.
    """

    objective = Objective("nll")

    def __init__(self, n_train: int = 128, n_test: int = 32, vocab: int = 8, max_len: int = 10, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.vocab, self.max_len = vocab, max_len

        def make(n):
            lengths = rng.integers(4, max_len + 1, size=n)
            tokens = np.zeros((n, max_len), np.int32)
            tokens[:, 0] = rng.integers(0, vocab, size=n)
            for i in range(1, max_len):
                tokens[:, i] = (3 * tokens[:, i - 1] + 1) % vocab
            mask = np.arange(max_len)[None, :] < lengths[:, None]
            return {"tokens": np.where(mask, tokens, 0).astype(np.int32), "mask": mask}

        self._train, self._evals = make(n_train), {"test": make(n_test)}

    def example_batch(self, batch_size):
        return {"tokens": jax.ShapeDtypeStruct((batch_size, self.max_len), jnp.int32),
                "mask": jax.ShapeDtypeStruct((batch_size, self.max_len), jnp.bool_)}

    def check_model(self, model, batch_size):
        tokens = self.example_batch(batch_size)["tokens"]
        out = eval_shape_or_error(model, tokens)
        if out.shape != (*tokens.shape, self.vocab):
            raise UserInputError(f"the language model must give logits of shape {(*tokens.shape, self.vocab)}, "
                                 f"got {out.shape}")

    def _token_stats(self, model, batch):
        """Per-token NLL and correctness of the next-token predictions, and which targets are real."""
        logits = model(batch["tokens"][:, :-1])                      # (B, L-1, V)
        targets = batch["tokens"][:, 1:]                              # (B, L-1)
        real = batch["mask"][:, 1:].astype(jnp.float32)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
        return nll, correct, real

    def loss(self, model, batch):
        nll, _, real = self._token_stats(model, batch)
        return jnp.sum(nll * real) / jnp.maximum(jnp.sum(real), 1.0)

    def metrics(self, model, batch, split):
        nll, correct, real = self._token_stats(model, batch)
        count = real.sum(-1)
        return {"nll": Mean((nll * real).sum(-1), count), "accuracy": Mean((correct * real).sum(-1), count)}

    def summarize(self, means, split):
        return {**means, "perplexity": float(np.exp(means["nll"]))}


class BigramLM(nnx.Module):
    """logits[b, i] = W dropout(embed(tokens[b, i])): (B, L) int -> (B, L, vocab). Dropout tests eval mode."""

    def __init__(self, vocab: int = 8, hidden: int = 32, dropout: float = 0.0, *, rngs: nnx.Rngs):
        self.embed = nnx.Embed(vocab, hidden, rngs=rngs)
        self.drop = nnx.Dropout(dropout, rngs=rngs)
        self.out = nnx.Linear(hidden, vocab, rngs=rngs)

    def __call__(self, tokens):
        return self.out(self.drop(self.embed(tokens)))


# -- padded graphs ----------------------------------------------------------------------------------

class PaddedGraphTask(Task):
    """Node regression on ragged random graphs: y_v = x_v / 2 + mean of x over v's neighbours.

    Graphs (3 to ``max_nodes`` nodes, features (n, 2), symmetric 0/1 adjacency without self loops)
    are stored as Python lists; ``train_batches`` / ``eval_batches`` pad each batch to ``max_nodes``:
    x (B, N, 2), adj (B, N, N), node_mask (B, N), y (B, N).
    """

    objective = Objective("node_mse")

    def __init__(self, n_train: int = 192, n_test: int = 40, max_nodes: int = 8, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.max_nodes = max_nodes

        def graph():
            n = int(rng.integers(3, max_nodes + 1))
            x = rng.normal(size=(n, 2)).astype(np.float32)
            upper = np.triu(rng.random((n, n)) < 0.5, 1)
            adj = (upper | upper.T).astype(np.float32)
            deg = np.maximum(adj.sum(1), 1.0)
            y = 0.5 * x[:, 0] + (adj @ x[:, 0]) / deg
            return x, adj, y.astype(np.float32)

        self.train_graphs = [graph() for _ in range(n_train)]
        self.test_graphs = [graph() for _ in range(n_test)]

    def _pad(self, graphs) -> dict[str, np.ndarray]:
        b, n = len(graphs), self.max_nodes
        out = {"x": np.zeros((b, n, 2), np.float32), "adj": np.zeros((b, n, n), np.float32),
               "node_mask": np.zeros((b, n), bool), "y": np.zeros((b, n), np.float32)}
        for i, (x, adj, y) in enumerate(graphs):
            k = len(y)
            out["x"][i, :k], out["adj"][i, :k, :k], out["node_mask"][i, :k], out["y"][i, :k] = x, adj, True, y
        return out

    def example_batch(self, batch_size):
        b, n = batch_size, self.max_nodes
        return {"x": jax.ShapeDtypeStruct((b, n, 2), jnp.float32), "adj": jax.ShapeDtypeStruct((b, n, n), jnp.float32),
                "node_mask": jax.ShapeDtypeStruct((b, n), jnp.bool_), "y": jax.ShapeDtypeStruct((b, n), jnp.float32)}

    def check_model(self, model, batch_size):
        ex = self.example_batch(batch_size)
        out = eval_shape_or_error(model, ex["x"], ex["adj"])
        if out.shape != ex["y"].shape:
            raise UserInputError(f"the graph model must give one value per node {ex['y'].shape}, got {out.shape}")

    def setup(self, progress=True):
        pass

    def steps_per_epoch(self, batch_size):
        return len(self.train_graphs) // batch_size

    def train_batches(self, batch_size, *, seed, epoch, start=0, shard=Shard()) -> Iterator[dict]:
        perm = epoch_permutation(seed, epoch, len(self.train_graphs))
        for i in range(start, self.steps_per_epoch(batch_size)):
            rows = perm[i * batch_size:(i + 1) * batch_size][shard.rows(batch_size)]
            yield self._pad([self.train_graphs[j] for j in rows])

    def eval_splits(self):
        return ["test"]

    def eval_batches(self, split, batch_size, *, shard=Shard()):
        graphs = self.test_graphs
        for lo in range(0, len(graphs), batch_size):
            idx = np.arange(lo, lo + batch_size)[shard.rows(batch_size)]
            valid = idx < len(graphs)
            yield self._pad([graphs[j] if ok else graphs[0] for j, ok in zip(idx, valid)]), valid

    def _sq_err(self, model, batch):
        real = batch["node_mask"].astype(jnp.float32)
        return (model(batch["x"], batch["adj"]) - batch["y"]) ** 2 * real, real

    def loss(self, model, batch):
        err, real = self._sq_err(model, batch)
        return err.sum() / jnp.maximum(real.sum(), 1.0)

    def metrics(self, model, batch, split):
        err, real = self._sq_err(model, batch)
        return {"node_mse": Mean(err.sum(-1), real.sum(-1))}


class GraphRegressor(nnx.Module):
    """One message-passing layer: h = gelu(W_s x + W_n mean_neighbours(x)), y = w h: -> (B, N)."""

    def __init__(self, hidden: int = 16, *, rngs: nnx.Rngs):
        self.self_ = nnx.Linear(2, hidden, rngs=rngs)
        self.neigh = nnx.Linear(2, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, 1, rngs=rngs)

    def __call__(self, x, adj):
        deg = jnp.maximum(adj.sum(-1, keepdims=True), 1.0)          # (B, N, 1)
        neighbours = (adj @ x) / deg                                  # (B, N, 2)
        return self.out(nnx.gelu(self.self_(x) + self.neigh(neighbours)))[..., 0]
