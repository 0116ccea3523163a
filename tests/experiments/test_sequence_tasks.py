"""The sequence task families: metrics by hand on tiny padded batches, batching, shapes and training.

Oracles: hand-computed accuracies and losses where the token-level average differs from the mean of
per-example or per-batch averages; naive loops over every scored token of a stream; the batches'
own invariants (determinism in (seed, epoch), resume, shards adding up to the whole batch); and
learning itself (two stand-in models trained through the trainer).
"""
from __future__ import annotations

import math

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.data.digits import SequentialDigits
from experiments.data.listops import ListOps
from experiments.data.pathfinder import Pathfinder
from experiments.data.synthetics import Adding, AssociativeRecall, Copying, InductionHead
from experiments.data.text import CharCorpus
from experiments.errors import UserInputError
from experiments.tasks.base import Shard
from experiments.tasks.sequence import LanguageModeling, SequenceClassification, SequenceRegression
from experiments.trainer import Trainer, TrainerConfig, init_train_state, mode_graphdef
from optim import adam


class ArraysDataset:
    """A dataset following the protocol of experiments/data/__init__.py, with arrays given here."""

    volatile_keys = ("cache_dir",)

    def __init__(self, kind, data, seq_len=None, vocab_size=None, d_input=1, n_classes=2, pad_id=None, unit="token"):
        self.kind, self.data, self.seq_len, self.vocab_size = kind, data, seq_len, vocab_size
        self.d_input, self.n_classes, self.unit = d_input, n_classes, unit
        self.splits = tuple(data)
        if pad_id is not None:
            self.pad_id = pad_id

    def load(self, progress=True):
        return self.data


# -- stand-in models (the real ones live in lax_models; the tasks only call model(inputs, mask)) --------

class TableLM(nnx.Module):
    """logits[b, i] = table[inputs[b, i]]: a fixed bigram table, to hand-compute token metrics."""

    def __init__(self, table):
        self.table = nnx.Param(jnp.asarray(table, jnp.float32))

    def __call__(self, x, mask=None):
        return self.table[...][x]


class LengthClassifier(nnx.Module):
    """Predicts class (number of real positions) mod C with logit 2 (others 0): reads only the mask."""

    def __init__(self, classes):
        self.classes = classes

    def __call__(self, x, mask):
        return 2.0 * jax.nn.one_hot(mask.sum(-1) % self.classes, self.classes)


class ConstantRegressor(nnx.Module):
    def __init__(self, value):
        self.value = nnx.Param(jnp.asarray(value, jnp.float32))

    def __call__(self, x, mask):
        return jnp.full((x.shape[0], 1), 1.0) * self.value[...]


class FlattenMLP(nnx.Module):
    """(B, L, F) features -> (B, classes) through a hidden layer (ignores the mask: full-length inputs)."""

    def __init__(self, length, features, classes, hidden=64, *, rngs):
        self.l1 = nnx.Linear(length * features, hidden, rngs=rngs)
        self.l2 = nnx.Linear(hidden, classes, rngs=rngs)

    def __call__(self, x, mask):
        return self.l2(nnx.gelu(self.l1(x.reshape(x.shape[0], -1))))


class BigramLM(nnx.Module):
    def __init__(self, vocab, hidden=32, *, rngs):
        self.embed = nnx.Embed(vocab, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, vocab, rngs=rngs)

    def __call__(self, x, mask=None):
        return self.out(self.embed(x))


def evaluate(task, model, eval_batch_size, tmp_path):
    trainer = Trainer(TrainerConfig(batch_size=2, eval_batch_size=eval_batch_size, devices=2), tmp_path)
    _, state = init_train_state(model, adam(1e-3))
    return trainer.evaluate(task, mode_graphdef(model, train=False), state)


def fit(tmp_path, task, model, steps, lr=1e-2, batch_size=32):
    cfg = TrainerConfig(max_steps=steps, batch_size=batch_size, log_every=50, ckpt_every=10_000, devices=2,
                        progress=False, plots=False)
    return Trainer(cfg, tmp_path, seed=0).fit(model, lambda spe, total: adam(lr), task)


def log_softmax_row(logits, k):
    return logits[k] - math.log(sum(math.exp(v) for v in logits))


# -- metrics by hand ----------------------------------------------------------------------------------

def test_classification_metrics_with_padding_and_derived_masks(tmp_path):
    # tokens padded with 0 (pad_id): lengths 3, 1, 4, 2, 3; LengthClassifier predicts length mod 3
    inputs = np.array([[5, 6, 7, 0], [5, 0, 0, 0], [1, 2, 3, 4], [9, 9, 0, 0], [1, 1, 1, 0]], np.uint8)
    labels = np.array([0, 1, 2, 2, 1], np.int32)   # predicted 0, 1, 1, 2, 0: right, right, wrong, right, wrong
    ds = ArraysDataset("classification", {"train": {"inputs": inputs, "label": labels},
                                          "test": {"inputs": inputs, "label": labels}},
                       seq_len=4, vocab_size=10, n_classes=3, pad_id=0)
    task = SequenceClassification(ds)
    task.setup()
    ce_right = -math.log(math.exp(2) / (math.exp(2) + 2))
    ce_wrong = -math.log(1 / (math.exp(2) + 2))
    for bs in (2, 4):                                           # last batch padded with invalid rows
        got = evaluate(task, LengthClassifier(3), bs, tmp_path / f"b{bs}")["test"]
        assert got["accuracy"] == pytest.approx(3 / 5)
        assert got["loss"] == pytest.approx((3 * ce_right + 2 * ce_wrong) / 5, rel=1e-6)
    assert task.objective.metric == "accuracy" and task.objective.mode == "max" and task.objective.split == "test"


def test_token_metrics_average_over_scored_tokens(tmp_path):
    # vocabulary 4; the table predicts (t + 1) mod 4 with probability 1/2: right costs log 2, wrong log 6
    table = np.log(3.0) * np.eye(4)[(np.arange(4) + 1) % 4]
    inputs = np.array([[0, 1, 2], [2, 0, 3], [1, 2, 3]], np.uint8)
    targets = np.array([[1, 2, 0], [3, 1, 0], [2, 3, 1]], np.uint8)
    weights = np.array([[1, 1, 1], [1, 0, 0], [0, 1, 1]], bool)   # scored: 2 right 1 wrong; 1 right; 1 and 1
    mask = np.array([[1, 1, 1], [1, 1, 0], [1, 1, 1]], bool)
    ds = ArraysDataset("tokens", {"train": {"inputs": inputs, "targets": targets, "mask": mask},
                                  "test": {"inputs": inputs, "targets": targets, "weights": weights}},
                       seq_len=3, vocab_size=4, n_classes=4)
    task = LanguageModeling(ds, objective="accuracy")
    task.setup()
    model = TableLM(table)
    # 4 of 6 scored tokens right: not (2/3 + 1 + 1/2) / 3 per example, nor per batch of 2
    want_acc, want_nll = 4 / 6, (4 * math.log(2) + 2 * math.log(6)) / 6
    for bs in (2, 4):
        got = evaluate(task, model, bs, tmp_path / f"b{bs}")["test"]
        assert got["accuracy"] == pytest.approx(want_acc, rel=1e-6)
        assert got["nll"] == pytest.approx(want_nll, rel=1e-6)
        assert got["perplexity"] == pytest.approx(math.exp(want_nll), rel=1e-6)
        assert got["bits_per_token"] == pytest.approx(want_nll / math.log(2), rel=1e-6)
    assert task.objective.metric == "accuracy" and task.objective.mode == "max"
    # training batches without weights score every real position (the mask): 8 of 9
    batch = next(task.train_batches(3, seed=0, epoch=0))
    assert batch["weights"].sum() == 8 and batch["inputs"].dtype == np.int32
    train_nll = float(nnx.jit(task.loss)(model, jax.tree.map(jnp.asarray, batch)))       # traced, as in training
    right = (table.argmax(1)[batch["inputs"]] == batch["targets"]) & batch["weights"]
    assert train_nll == pytest.approx((right.sum() * math.log(2) + (8 - right.sum()) * math.log(6)) / 8, rel=1e-6)


def test_stream_evaluation_scores_every_token_once(tmp_path):
    rng = np.random.default_rng(0)
    stream = {"train": rng.integers(0, 5, 200).astype(np.uint8), "val": rng.integers(0, 5, 23).astype(np.uint8)}
    ds = ArraysDataset("stream", stream, vocab_size=5, n_classes=5, unit="char")
    task = LanguageModeling(ds, seq_len=5)
    task.setup()
    table = rng.normal(size=(5, 5))
    val = stream["val"].astype(int)
    nll = [-log_softmax_row(table[val[t - 1]], val[t]) for t in range(1, 23)]      # every token after the first
    acc = [table[val[t - 1]].argmax() == val[t] for t in range(1, 23)]
    windows = list(task.eval_batches("val", 2))
    assert len(windows) == 3 and windows[-1][1].tolist() == [True, False]            # 5 windows, padded last batch
    assert sum(int(b["weights"][v].sum()) for b, v in windows) == 22
    got = evaluate(task, TableLM(table), 2, tmp_path)["val"]
    assert got["nll"] == pytest.approx(np.mean(nll), rel=1e-5)
    assert got["accuracy"] == pytest.approx(np.mean(acc), rel=1e-6)
    assert got["bpc"] == pytest.approx(np.mean(nll) / math.log(2), rel=1e-5)
    assert task.objective.metric == "nll" and task.objective.mode == "min" and task.objective.split == "val"


def test_regression_metric(tmp_path):
    x = np.zeros((5, 4, 2), np.float32)
    t = np.array([0.0, 1.0, 2.0, 0.5, 1.5], np.float32)
    ds = ArraysDataset("regression", {"train": {"inputs": x, "target": t}, "val": {"inputs": x, "target": t}},
                       seq_len=4, d_input=2)
    task = SequenceRegression(ds)
    task.setup()
    got = evaluate(task, ConstantRegressor(0.5), 2, tmp_path)["val"]
    want = np.mean((0.5 - t) ** 2)
    assert got["mse"] == pytest.approx(want) and got["rmse"] == pytest.approx(math.sqrt(want))
    assert task.objective.metric == "mse" and task.objective.split == "val"


# -- batches --------------------------------------------------------------------------------------------

def stacked(batches):
    return [{k: np.asarray(v) for k, v in b.items()} for b in batches]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def check_batching(task, bs):
    full = stacked(task.train_batches(bs, seed=3, epoch=1))
    assert len(full) == task.steps_per_epoch(bs) >= 3
    assert_same(full, stacked(task.train_batches(bs, seed=3, epoch=1)))            # deterministic
    other = stacked(task.train_batches(bs, seed=3, epoch=2))
    assert not all(np.array_equal(a["inputs"], b["inputs"]) for a, b in zip(full, other))
    assert_same(full[2:], stacked(task.train_batches(bs, seed=3, epoch=1, start=2)))  # resume mid-epoch
    halves = [stacked(task.train_batches(bs, seed=3, epoch=1, shard=Shard(i, 2))) for i in range(2)]
    joined = [{k: np.concatenate([h0[k], h1[k]]) for k in h0} for h0, h1 in zip(*halves)]
    assert_same(full, joined)                                                       # shards add up
    for split in task.eval_splits():
        whole = stacked(b for b, _ in task.eval_batches(split, bs))
        parts = [stacked(b for b, _ in task.eval_batches(split, bs, shard=Shard(i, 2))) for i in range(2)]
        assert_same(whole, [{k: np.concatenate([p0[k], p1[k]]) for k in p0} for p0, p1 in zip(*parts)])
    return full


def test_stream_windows_deterministic_resumable_and_sharded():
    stream = np.arange(300) % 7
    ds = ArraysDataset("stream", {"train": stream.astype(np.uint8), "test": stream[:40].astype(np.uint8)},
                       vocab_size=7, n_classes=7)
    task = LanguageModeling(ds, seq_len=8)
    task.setup()
    full = check_batching(task, 6)
    assert task.steps_per_epoch(6) == 299 // 48
    for b in full:                       # each row is a window of the stream and its next tokens
        assert b["inputs"].shape == (6, 8) and b["mask"].all() and b["weights"].all()
        np.testing.assert_array_equal(b["inputs"][:, 1:], b["targets"][:, :-1])
        np.testing.assert_array_equal((b["inputs"] + 1) % 7, b["targets"])


def test_array_batches_deterministic_resumable_and_sharded(tmp_path):
    task = SequenceClassification(ListOps(n_train=48, n_val=8, n_test=8, min_length=5, max_length=40,
                                          cache_dir=str(tmp_path)))
    task.setup(progress=False)
    full = check_batching(task, 8)
    assert all(np.array_equal(b["mask"], b["inputs"] != 0) for b in full)


@pytest.fixture(scope="module")
def tiny_tasks(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("cache"))
    return [
        SequenceClassification(ListOps(n_train=8, n_val=4, n_test=4, min_length=5, max_length=60, cache_dir=d)),
        SequenceClassification(Pathfinder(n_train=4, n_val=2, n_test=2, cache_dir=d)),
        SequenceClassification(Pathfinder(n_train=4, n_val=2, n_test=2, features="tokens", cache_dir=d)),
        SequenceClassification(SequentialDigits(cache_dir=d)),
        SequenceRegression(Adding(l_max=16, n_train=8, n_val=4, cache_dir=d)),
        LanguageModeling(AssociativeRecall(n_train=8, n_test=4, cache_dir=d), objective="accuracy"),
        LanguageModeling(InductionHead(n_train=8, n_test=4, cache_dir=d)),
        LanguageModeling(Copying(n_train=8, n_val=4, cache_dir=d)),
        LanguageModeling(CharCorpus(max_chars=2000, cache_dir=d), seq_len=16),
    ]


def test_batches_match_the_example_batch(tiny_tasks):
    """What check_model traces is what training and evaluation feed (shapes and dtypes, every family)."""
    for task in tiny_tasks:
        task.setup(progress=False)
        want = jax.tree.map(lambda s: (s.shape, np.dtype(s.dtype)), task.example_batch(4))
        first_eval, _ = next(task.eval_batches(task.eval_splits()[-1], 4))
        for batch in (next(task.train_batches(4, seed=0, epoch=0)), first_eval):
            got = jax.tree.map(lambda a: (a.shape, a.dtype), batch)
            assert got == want, type(task.dataset).__name__
        assert all(k.startswith("dataset.") for k in task.volatile_keys) and "dataset.cache_dir" in task.volatile_keys


def test_check_model_reports_a_misfit_before_any_data(tmp_path):
    # check_model only traces: models with their parameters as shapes (nnx.eval_shape), no initialisation
    abstract = nnx.eval_shape
    digits = SequenceClassification(SequentialDigits(cache_dir=str(tmp_path)))
    digits.check_model(abstract(lambda: FlattenMLP(64, 1, 10, rngs=nnx.Rngs(0))), 4)
    with pytest.raises(UserInputError, match=r"logits of shape \(4, 10\)"):
        digits.check_model(abstract(lambda: FlattenMLP(64, 1, 3, rngs=nnx.Rngs(0))), 4)
    lm = LanguageModeling(CharCorpus(cache_dir=str(tmp_path)), seq_len=16)
    lm.check_model(abstract(lambda: BigramLM(98, rngs=nnx.Rngs(0))), 4)
    with pytest.raises(UserInputError, match=r"per-token logits of shape \(4, 16, 98\)"):
        lm.check_model(abstract(lambda: BigramLM(50, rngs=nnx.Rngs(0))), 4)
    adding = SequenceRegression(Adding(l_max=16, cache_dir=str(tmp_path)))
    adding.check_model(ConstantRegressor(0.0), 4)
    with pytest.raises(UserInputError, match="does not fit"):
        digits.check_model(abstract(lambda: BigramLM(10, rngs=nnx.Rngs(0))), 4)  # float features into an embedding
    assert not list(tmp_path.iterdir())                          # nothing generated


def test_wrong_family_or_settings_are_clear_errors(tmp_path):
    with pytest.raises(UserInputError, match="LanguageModeling"):
        SequenceClassification(Copying(cache_dir=str(tmp_path)))
    with pytest.raises(UserInputError, match="SequenceRegression"):
        LanguageModeling(Adding(cache_dir=str(tmp_path)))
    with pytest.raises(UserInputError, match="seq_len"):
        LanguageModeling(CharCorpus(cache_dir=str(tmp_path)))
    with pytest.raises(UserInputError, match="streams only"):
        LanguageModeling(Copying(cache_dir=str(tmp_path)), seq_len=7)
    with pytest.raises(UserInputError, match="objective"):
        LanguageModeling(Copying(cache_dir=str(tmp_path)), objective="bleu")


def test_a_sequence_dataset_missing_members_is_refused_naming_them_and_the_protocol():
    from experiments.tasks.base import SequenceDataset

    every = [ListOps(n_train=8, n_val=4, n_test=4, min_length=5, max_length=60), Pathfinder(n_train=4, n_val=2,
             n_test=2), SequentialDigits(), Adding(), AssociativeRecall(), InductionHead(), Copying(), CharCorpus()]
    assert all(isinstance(ds, SequenceDataset) for ds in every)

    class Unlabelled:                        # neither its classes nor what of it is volatile
        kind, splits, vocab_size, seq_len = "classification", ("train", "test"), 10, 4

        def load(self, progress=True):
            raise AssertionError("not reached")

    assert not isinstance(Unlabelled(), SequenceDataset)
    with pytest.raises(UserInputError, match=r"data\.dataset \(Unlabelled\) is not a SequenceDataset "
                                             r"\(experiments\.tasks\.base\.SequenceDataset\): it lacks n_classes, "
                                             r"volatile_keys$"):
        SequenceClassification(Unlabelled())
    features = ArraysDataset("regression", {"train": {}, "val": {}}, seq_len=4)
    del features.d_input                     # real features (no vocabulary) of unknown width
    with pytest.raises(UserInputError, match=r"no d_input"):
        SequenceRegression(features)


# -- training through the trainer -----------------------------------------------------------------------

@pytest.mark.slow  # a training to high accuracy
def test_digits_train_to_high_accuracy(tmp_path):
    task = SequenceClassification(SequentialDigits(cache_dir=str(tmp_path / "cache")))
    task.setup(progress=False)
    res = fit(tmp_path / "run", task, FlattenMLP(64, 1, 10, rngs=nnx.Rngs(0)), steps=60)
    assert res["objective"]["split"] == "val" and res["objective"]["value"] > 0.85
    assert res["metrics"]["test"]["accuracy"] > 0.85


@pytest.mark.slow  # a training to a target loss
def test_char_lm_learns_bigrams(tmp_path):
    task = LanguageModeling(CharCorpus(max_chars=20_000, cache_dir=str(tmp_path / "cache")), seq_len=32)
    task.setup(progress=False)
    res = fit(tmp_path / "run", task, BigramLM(98, rngs=nnx.Rngs(0)), steps=100, lr=3e-2)
    val = res["metrics"]["val"]
    assert val["nll"] < 3.0 < math.log(98)                      # well below the uniform 4.58 nats
    assert val["bpc"] == pytest.approx(val["nll"] / math.log(2))
