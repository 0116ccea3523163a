"""Three task families of different shapes train through the same trainer and evaluate correctly.

Oracles: hand-computed values (a batch with padding whose token-level average differs from the mean
of per-example or per-batch averages), naive NumPy loops over the real tokens / nodes / examples, and
the learning itself (each toy problem is learnable to near-perfect accuracy).
"""
from __future__ import annotations

import math

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.errors import UserInputError
from experiments.metrics import read_metrics
from experiments.trainer import Trainer, TrainerConfig, init_train_state, mode_graphdef
from optim import adam

from toy_tasks import (BigramLM, GraphRegressor, MaskedMeanClassifier, NextTokenTask, PaddedGraphTask,
                       SequenceClassificationTask)


def fit(tmp_path, task, model, *, steps, lr=1e-2, batch_size=16, eval_batch_size=None, name="run"):
    cfg = TrainerConfig(max_steps=steps, batch_size=batch_size, eval_batch_size=eval_batch_size, log_every=10,
                        ckpt_every=1000, devices=2, progress=False, plots=False)
    return Trainer(cfg, tmp_path / name, seed=0).fit(model, lambda spe, total: adam(lr), task)


def evaluate(task, model, eval_batch_size, tmp_path):
    trainer = Trainer(TrainerConfig(batch_size=2, eval_batch_size=eval_batch_size, devices=2), tmp_path)
    graphdef = mode_graphdef(model, train=False)
    _, state = init_train_state(model, adam(1e-3))
    return trainer.evaluate(task, graphdef, state)


def test_sequence_classification_with_masks(tmp_path):
    task = SequenceClassificationTask()
    model = MaskedMeanClassifier(rngs=nnx.Rngs(0))
    res = fit(tmp_path, task, model, steps=100, lr=2e-2, eval_batch_size=24)  # 64 test examples: last batch padded
    assert res["objective"] == {"metric": "accuracy", "split": "test", "mode": "max",
                                "value": res["metrics"]["test"]["accuracy"]}
    assert res["objective"]["value"] > 0.9
    # Oracle: a loop over the test examples with the trained model.
    data = task.evals["test"]
    graphdef, state = nnx.split(model)
    logits = np.asarray(jax.jit(lambda st, x, m: nnx.merge(graphdef, st)(x, m))(state, data["x"], data["mask"]))
    want = np.mean([np.argmax(logits[i]) == data["label"][i] for i in range(len(logits))])
    got = evaluate(task, model, 24, tmp_path / "eval")["test"]["accuracy"]
    assert got == pytest.approx(want, abs=1e-7)


class TableLM(nnx.Module):
    """logits = table[token]: a fixed bigram table, to hand-compute token metrics."""

    def __init__(self, table):
        self.table = nnx.Param(jnp.asarray(table, jnp.float32))

    def __call__(self, tokens):
        return self.table[...][tokens]


def test_token_metrics_are_averaged_over_real_tokens_only(tmp_path):
    # Vocabulary 4; the model predicts (t + 1) mod 4 with probability 1/2 (logit log 3 vs 0 for the
    # other three: e^c / (e^c + 3) = 1/2), so a right prediction costs log 2 and a wrong one log 6.
    table = np.log(3.0) * np.eye(4)[(np.arange(4) + 1) % 4]
    task = NextTokenTask(vocab=4, max_len=4)
    tokens = np.array([[0, 1, 2, 3],      # targets 1 2 3, all right: 3 of 3
                       [2, 0, 0, 0],      # one real target (0), predicted 3: 0 of 1
                       [1, 2, 3, 1]],     # targets 2 3 1, predicted 2 3 0: 2 of 3
                      np.int32)
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]], bool)
    task._evals = {"test": {"tokens": tokens, "mask": mask}}
    model = TableLM(table)
    want_acc = 5 / 7                                   # not (1 + 0 + 2/3) / 3 = 0.556 per example,
    want_nll = (5 * math.log(2) + 2 * math.log(6)) / 7  # nor (3/4 + 2/3) / 2 = 0.708 per batch of 2
    for eval_batch_size in (2, 4):  # 2: the last batch holds one example and one padded row
        got = evaluate(task, model, eval_batch_size, tmp_path / f"b{eval_batch_size}")["test"]
        assert got["accuracy"] == pytest.approx(want_acc, rel=1e-6)
        assert got["nll"] == pytest.approx(want_nll, rel=1e-6)
        assert got["perplexity"] == pytest.approx(math.exp(want_nll), rel=1e-6)
    batch = {"tokens": jnp.asarray(tokens), "mask": jnp.asarray(mask)}
    assert float(nnx.jit(task.loss)(model, batch)) == pytest.approx(want_nll, rel=1e-6)  # the training loss too


def test_next_token_prediction_trains_through_the_trainer(tmp_path):
    task = NextTokenTask()
    res = fit(tmp_path, task, BigramLM(rngs=nnx.Rngs(0)), steps=50, lr=5e-2)
    test = res["metrics"]["test"]
    assert test["accuracy"] > 0.99 and test["nll"] < 0.1
    assert test["perplexity"] == pytest.approx(math.exp(test["nll"]))
    assert res["objective"]["metric"] == "nll" and res["objective"]["mode"] == "min"


def test_padded_graphs_with_the_tasks_own_batching(tmp_path):
    task = PaddedGraphTask()
    model = GraphRegressor(rngs=nnx.Rngs(0))
    res = fit(tmp_path, task, model, steps=100, lr=3e-2)
    var = np.var(np.concatenate([y for _, _, y in task.test_graphs]))
    assert res["objective"]["value"] < 0.05 * var
    # Oracle: each test graph alone, unpadded, error summed over its real nodes (one compilation per size).
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda st, x, a: nnx.merge(graphdef, st)(x, a))
    errs = [np.asarray(forward(state, x[None], a[None]))[0] - y for x, a, y in task.test_graphs]
    want = np.sum([np.sum(e**2) for e in errs]) / np.sum([len(e) for e in errs])
    got = evaluate(task, model, 6, tmp_path / "eval")["test"]["node_mse"]  # 40 graphs: padded last batch
    assert got == pytest.approx(want, rel=1e-5)


def test_resume_replays_a_custom_iterator(tmp_path):
    const = lambda spe, total: adam(1e-2)  # noqa: E731
    cfg = dict(batch_size=16, log_every=4, ckpt_every=8, devices=2, progress=False, plots=False)
    full = Trainer(TrainerConfig(max_steps=20, **cfg), tmp_path / "full").fit(
        GraphRegressor(rngs=nnx.Rngs(0)), const, PaddedGraphTask())
    Trainer(TrainerConfig(max_steps=8, **cfg), tmp_path / "split").fit(
        GraphRegressor(rngs=nnx.Rngs(0)), const, PaddedGraphTask())
    resumed = Trainer(TrainerConfig(max_steps=20, **cfg), tmp_path / "split").fit(
        GraphRegressor(rngs=nnx.Rngs(0)), const, PaddedGraphTask())  # 12 per epoch: resumes mid-epoch
    assert resumed["resumed_from_step"] == 8
    assert resumed["objective"]["value"] == pytest.approx(full["objective"]["value"], rel=1e-6)


def test_evaluation_runs_in_eval_mode_and_training_in_train_mode(tmp_path):
    task = NextTokenTask()
    model = BigramLM(dropout=0.5, rngs=nnx.Rngs(0))
    first = evaluate(task, model, 8, tmp_path / "a")["test"]
    assert evaluate(task, model, 8, tmp_path / "b")["test"] == first  # deterministic: no dropout
    no_dropout = BigramLM(dropout=0.0, rngs=nnx.Rngs(0))  # same initial parameters
    assert evaluate(task, no_dropout, 8, tmp_path / "c")["test"]["nll"] == pytest.approx(first["nll"], rel=1e-6)
    # Training sees dropout: the logged training loss (rate 0.5) is above the same model's eval loss.
    res = fit(tmp_path, task, BigramLM(dropout=0.5, rngs=nnx.Rngs(0)), steps=10, lr=0.0, name="train")
    rows = [r for r in read_metrics(tmp_path / "train" / "metrics.jsonl") if "loss" in r]
    assert rows[0]["loss"] > res["metrics"]["test"]["nll"] + 0.01


def test_a_model_that_does_not_fit_the_task_is_reported_before_any_data(tmp_path):
    with pytest.raises(UserInputError, match="logits of shape"):
        SequenceClassificationTask().check_model(MaskedMeanClassifier(classes=3, rngs=nnx.Rngs(0)), 4)
    with pytest.raises(UserInputError, match="does not fit the data"):
        PaddedGraphTask().check_model(MaskedMeanClassifier(rngs=nnx.Rngs(0)), 4)


def test_a_model_with_dropout_is_shape_checked_in_train_mode():
    model = BigramLM(dropout=0.5, rngs=nnx.Rngs(0))
    model.train()  # dropout on: calling it advances its RNG counter, which eval_shape must allow
    NextTokenTask().check_model(model, 4)
