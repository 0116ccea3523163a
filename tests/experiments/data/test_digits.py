"""Sequential digits: pixel order against scikit-learn's images, labels, splits and cache."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from experiments.data import digits
from experiments.data.digits import SequentialDigits, digits_sequences


def test_pixels_are_read_row_by_row():
    seqs, labels = digits_sequences()
    ref = load_digits()
    assert seqs.shape == (1797, 64, 1) and seqs.dtype == np.float32
    for i in (0, 1, 500, 1796):
        for row in range(8):
            for col in range(8):
                assert seqs[i, 8 * row + col, 0] == ref.images[i][row, col] / 16.0
    np.testing.assert_array_equal(labels, ref.target)
    assert seqs.min() == 0.0 and seqs.max() == 1.0


def test_splits_partition_the_images_and_are_cached(tmp_path, monkeypatch):
    data = SequentialDigits(n_val=100, n_test=200, seed=3, cache_dir=str(tmp_path)).load(progress=False)
    sizes = {s: len(data[s]["label"]) for s in data}
    assert sizes == {"train": 1497, "val": 100, "test": 200}
    seqs, labels = digits_sequences()
    together = np.concatenate([data[s]["inputs"] for s in ("train", "val", "test")])
    order = lambda a: a[np.lexsort(a.reshape(len(a), -1).T)]  # noqa: E731
    np.testing.assert_array_equal(order(together), order(seqs))          # each image exactly once
    for s in data:
        assert set(np.unique(data[s]["label"])) <= set(range(10)) and data[s]["label"].dtype == np.int32
    monkeypatch.setattr(digits, "digits_sequences", lambda: pytest.fail("cache not used"))
    again = SequentialDigits(n_val=100, n_test=200, seed=3, cache_dir=str(tmp_path)).load(progress=False)
    np.testing.assert_array_equal(again["test"]["inputs"], data["test"]["inputs"])
    monkeypatch.undo()
    other = SequentialDigits(n_val=100, n_test=200, seed=4, cache_dir=str(tmp_path)).load(progress=False)
    assert not np.array_equal(other["test"]["label"], data["test"]["label"])
    with pytest.raises(ValueError, match="no training image"):
        SequentialDigits(n_val=1000, n_test=797)
