"""A tiny regression task for testing the runner without PDE data: y = x^2 + x / 2 pointwise."""
from __future__ import annotations

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from experiments.tasks.base import Objective, Task


class ToyRegressionTask(Task):
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

    def setup(self, progress=True):
        pass

    @property
    def train(self):
        return self._train

    @property
    def evals(self):
        return self._evals

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
