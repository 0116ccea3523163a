"""A user's own sequences from .npz files (``data=sequence_arrays``), as the sequence tasks see them.

Files are saved with ``numpy.savez`` from our own generated datasets (ListOps tokens with their
lengths, the adding problem's real features and targets, split by index). The training step through
a file-backed task is in test_lra_files.py; here the model is checked against the files' headers.
Oracles: the generated arrays, and the batches the generated dataset's own task gives (same seed,
same epoch), which the file-backed task must reproduce exactly, masks included.
"""
from __future__ import annotations

import flax.nnx as nnx
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.build import build_task
from experiments.config import compose
from experiments.data.listops import PAD, ListOps
from experiments.data.sequence_arrays import SequenceArrays, npz_headers
from experiments.data.synthetics import Adding
from experiments.errors import UserInputError
from experiments.tasks.sequence import SequenceClassification, SequenceRegression


@pytest.fixture(scope="module")
def listops(tmp_path_factory):
    """(the ListOps dataset, its splits, folder with train.npz / test.npz holding inputs, labels, lengths)."""
    root = tmp_path_factory.mktemp("sequence_arrays")
    ds = ListOps(n_train=20, n_val=0, n_test=6, min_length=10, max_length=40, seed=4, cache_dir=str(root / "cache"))
    data = ds.load(progress=False)
    for split in ("train", "test"):
        x = data[split]["inputs"]
        np.savez(root / f"{split}.npz", inputs=x, labels=data[split]["label"], lengths=(x != PAD).sum(1))
    return ds, data, root


def test_token_files_give_the_batches_of_the_generated_dataset(listops):
    ds, data, root = listops
    task = build_task(compose(["data=sequence_arrays", f"data.dataset.train_path={root / 'train.npz'}",
                               f"data.dataset.test_path={root / 'test.npz'}"]))
    assert isinstance(task.dataset, SequenceArrays) and task.dataset.splits == ("train", "test")
    assert (task.dataset.seq_len, task.dataset.vocab_size, task.dataset.kind) == (40, 18, "classification")
    assert task.dataset.n_classes == int(max(data["train"]["label"].max(), data["test"]["label"].max())) + 1
    task.setup(progress=False)
    assert np.array_equal(task.evals["test"]["inputs"], data["test"]["inputs"])
    reference = SequenceClassification(ds)
    reference.setup(progress=False)
    for ours, theirs in zip(task.train_batches(4, seed=3, epoch=1), reference.train_batches(4, seed=3, epoch=1)):
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert ours[key].dtype == theirs[key].dtype and np.array_equal(ours[key], theirs[key]), key
    (ours, valid), (theirs, _) = next(task.eval_batches("test", 8)), next(reference.eval_batches("test", 8))
    assert valid.sum() == 6 and all(np.array_equal(ours[k], theirs[k]) for k in ours)


def test_real_features_and_regression_split_by_index(tmp_path):
    adding = Adding(l_max=16, n_train=12, n_val=6, cache_dir=str(tmp_path)).load(progress=False)
    x = np.concatenate([adding["train"]["inputs"], adding["val"]["inputs"]])            # (18, 16, 2)
    y = np.concatenate([adding["train"]["target"], adding["val"]["target"]])
    mask = np.arange(16)[None, :] < np.arange(3, 21)[:, None] % 16 + 1                   # ragged rows
    np.savez_compressed(tmp_path / "adding.npz", inputs=x, labels=y.astype(np.float64), mask=mask)
    task = build_task(compose(["data=sequence_arrays", f"data.dataset.train_path={tmp_path / 'adding.npz'}",
                               "data.dataset.n_val=4", "data.dataset.n_test=2",
                               "data._target_=experiments.tasks.sequence.SequenceRegression"]))
    assert isinstance(task, SequenceRegression) and task.dataset.splits == ("train", "val", "test")
    assert (task.dataset.kind, task.dataset.d_input, task.dataset.vocab_size) == ("regression", 2, None)
    task.setup(progress=False)
    for split, rows in {"train": slice(0, 12), "val": slice(12, 16), "test": slice(16, 18)}.items():
        arrays = task.train if split == "train" else task.evals[split]
        assert np.array_equal(arrays["inputs"], x[rows]) and np.array_equal(arrays["mask"], mask[rows]), split
        assert np.array_equal(arrays["target"], y[rows]), split
    batch, valid = next(task.eval_batches("val", 4))
    assert batch["inputs"].shape == (4, 16, 2) and batch["target"].dtype == np.float32
    assert np.array_equal(batch["mask"], mask[12:16])

    np.savez(tmp_path / "signs.npz", inputs=x[..., 0], labels=(y > 1).astype(np.int64))              # (18, 16)
    ds = SequenceArrays(str(tmp_path / "signs.npz"), n_test=5)
    assert (ds.d_input, ds.seq_len, ds.vocab_size, ds.kind, ds.n_classes) == (1, 16, None, "classification", 2)
    task = SequenceClassification(ds)
    task.setup(progress=False)
    batch, valid = next(task.eval_batches("test", 5))
    assert valid.all() and np.array_equal(batch["inputs"], x[13:, :, :1]) and batch["mask"].all()
    assert np.array_equal(batch["label"], y[13:] > 1)


class PooledLinear(nnx.Module):
    """Tokens -> masked mean of a NumPy-drawn embedding -> logits: a stand-in model for shape checks."""

    def __init__(self, vocab: int, classes: int, width: int = 8):
        rng = np.random.default_rng(0)
        self.table = nnx.Param(jnp.asarray(rng.normal(size=(vocab, width)).astype(np.float32)))
        self.head = nnx.Param(jnp.asarray(rng.normal(size=(width, classes)).astype(np.float32)))

    def __call__(self, x, mask):
        w = mask[..., None].astype(jnp.float32)                                  # (B, L, 1)
        return ((self.table[...][x] * w).sum(1) / w.sum(1)) @ self.head[...]     # (B, classes)


def test_the_model_is_checked_against_the_file_headers_before_any_data_is_read(listops, tmp_path):
    _, _, root = listops
    task = build_task(compose(["data=sequence_arrays", f"data.dataset.train_path={root / 'train.npz'}",
                               "data.dataset.n_test=4", "data.dataset.vocab_size=18", "data.dataset.n_classes=10"]))
    task.check_model(PooledLinear(18, 10), 8)                                     # shapes only
    with pytest.raises(UserInputError, match=r"logits of shape \(8, 10\)"):
        task.check_model(PooledLinear(18, 3), 8)
    with pytest.raises(RuntimeError, match="setup"):
        task.train                                                                # nothing read yet


def test_bad_files_are_clear_errors(listops, tmp_path):
    _, data, root = listops
    train = str(root / "train.npz")
    x, y = data["train"]["inputs"], data["train"]["label"]
    with pytest.raises(UserInputError, match=r"missing.npz does not exist; .* holds \[.*'test.npz', 'train.npz'\]"):
        SequenceArrays(train, test_path=str(root / "missing.npz"))
    (tmp_path / "notes.npz").write_text("not a zip")
    with pytest.raises(UserInputError, match="notes.npz is not a readable .npz file"):
        SequenceArrays(str(tmp_path / "notes.npz"), n_test=1)
    cases = {
        "keys": (dict(x=x, y=y), r"lacks inputs, labels; it holds \['x', 'y'\]"),
        "labels": (dict(inputs=x, labels=y[:5]), r"labels is int32 of shape \(5,\); expected numbers of shape \(20,\)"),
        "float": (dict(inputs=x, labels=y + 0.5), "labels are float64, but classification takes integer classes"),
        "both": (dict(inputs=x, labels=y, lengths=np.ones(20, int), mask=x > 0), "holds both lengths and mask"),
        "tokens3d": (dict(inputs=x[..., None], labels=y), "expected integer tokens"),
    }
    for name, (arrays, message) in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(UserInputError, match=message):
            SequenceArrays(str(tmp_path / f"{name}.npz"), n_test=2, kind="classification" if name == "float" else None)
    np.savez(tmp_path / "short.npz", inputs=x[:, :30], labels=y)
    with pytest.raises(UserInputError, match=r"short.npz: inputs is uint8 \(20, 30\), unlike uint8 \(20, 40\)"):
        SequenceArrays(train, test_path=str(tmp_path / "short.npz"))
    with pytest.raises(UserInputError, match="no evaluation split"):
        SequenceArrays(train)
    with pytest.raises(UserInputError, match="test_path is given, so n_test=3"):
        SequenceArrays(train, test_path=train, n_test=3)
    with pytest.raises(UserInputError, match="leaves no training row"):
        SequenceArrays(train, n_val=10, n_test=10)
    with pytest.raises(UserInputError, match=r"tokens range over 0..17, outside \[0, vocab_size=12\)"):
        SequenceArrays(train, n_test=2, vocab_size=12).load()
    with pytest.raises(UserInputError, match=r"labels range over .*, outside \[0, n_classes=1\)"):
        SequenceArrays(train, n_test=2, n_classes=1).load()
    np.savez(tmp_path / "nan.npz", inputs=np.where(np.arange(8)[:, None] == 5, np.nan, 1.0) * np.ones((8, 3)),
             labels=np.zeros(8, int))
    with pytest.raises(UserInputError, match=r"nan.npz: inputs hold NaN or infinite values at rows \[5\]"):
        SequenceArrays(str(tmp_path / "nan.npz"), n_test=2).load()
    np.savez(tmp_path / "lengths.npz", inputs=x, labels=y, lengths=np.full(20, 41))
    with pytest.raises(UserInputError, match=r"lengths range over 41..41, outside 1..40"):
        SequenceArrays(str(tmp_path / "lengths.npz"), n_test=2).load()
    with pytest.raises(UserInputError, match="vocab_size=5 applies to integer tokens"):
        SequenceArrays(str(tmp_path / "nan.npz"), n_test=2, vocab_size=5)
    assert npz_headers(train)["inputs"].shape == (20, 40)
