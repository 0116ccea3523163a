"""Synthetic tasks: every answer recomputed from the sequence by a naive loop, plus cache and seeds.

Oracles: associative recall's answer is the value paired with the query key earlier in the sequence;
induction head's is the token after the earlier copy prefix; copying's targets are the non-blank
tokens before the markers; adding's target is the sum of the two marked values. Scoring masks as in
safari (train: every token; test: the answer) and S4 (the copied span).
"""
from __future__ import annotations

import numpy as np
import pytest

from experiments.data.synthetics import Adding, AssociativeRecall, Copying, InductionHead


def full_sequences(split_arrays):
    """inputs (n, T-1) and targets (n, T-1) of a next-token split -> the sequences (n, T)."""
    x, y = split_arrays["inputs"].astype(int), split_arrays["targets"].astype(int)
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
    return np.concatenate([x, y[:, -1:]], axis=1)


@pytest.mark.parametrize("num_keys", [1, 2])
def test_associative_recall_answers(tmp_path, num_keys):
    ds = AssociativeRecall(vocab_size=12, input_seq_len=30, num_keys=num_keys, n_train=200, n_test=50, seed=1,
                           cache_dir=str(tmp_path))
    data = ds.load(progress=False)
    prefix, keys, values = 11, set(range(1, 6)), set(range(6, 11))      # 10 ordinary tokens: 5 keys, 5 values
    for split in ds.splits:
        seqs = full_sequences(data[split])
        assert seqs.shape[1] == ds.seq_len + 1
        for seq in seqs:
            body, query, answer = seq[:-(num_keys + 2)], seq[-(num_keys + 1):-1], seq[-1]
            assert seq[-(num_keys + 2)] == prefix and prefix not in body and 0 not in seq
            entries = body.reshape(-1, num_keys + 1)
            assert len(entries) == 30 // (num_keys + 1)
            assert set(entries[:, :-1].ravel()) <= keys and set(entries[:, -1]) <= values
            paired = {tuple(e[:-1]): set() for e in entries}
            for e in entries:
                paired[tuple(e[:-1])].add(e[-1])
            assert all(len(v) == 1 for v in paired.values())               # one value per key in an example
            assert paired[tuple(query)] == {answer}                         # the query is present: its value
    assert "weights" not in data["train"]                                    # train: every next token
    w = data["test"]["weights"]
    assert w[:, -1].all() and not w[:, :-1].any()                            # test: the answer only
    assert len({r.tobytes() for r in full_sequences(data["train"])}) == 200  # deduplicated


def test_induction_head_answers(tmp_path):
    ds = InductionHead(vocab_size=8, input_seq_len=12, n_train=300, n_test=40, seed=2, cache_dir=str(tmp_path))
    data = ds.load(progress=False)
    for split in ds.splits:
        seqs = full_sequences(data[split])
        assert seqs.shape == (len(seqs), 14)
        for seq in seqs:
            triggers = [i for i in range(12) if seq[i] == 7]
            assert len(triggers) == 1 and triggers[0] <= 9                   # one trigger, in [0, L - 3]
            assert seq[12] == 7 and seq[13] == seq[triggers[0] + 1]          # => then the token after it
            assert set(seq) <= set(range(1, 8))
    positions = [int(np.argmax(s[:12] == 7)) for s in full_sequences(data["train"])]
    assert min(positions) == 0 and max(positions) == 9                       # the whole range is used
    assert data["test"]["weights"][:, -1].all() and data["test"]["weights"].sum() == 40


@pytest.mark.parametrize("variable, reverse", [(False, False), (True, False), (False, True)])
def test_copying_targets(tmp_path, variable, reverse):
    ds = Copying(l_noise=15, l_memorize=4, n_tokens=6, variable=variable, reverse=reverse, n_train=50, n_val=10,
                 seed=3, cache_dir=str(tmp_path))
    data = ds.load(progress=False)
    for split in ds.splits:
        x, y, w = (data[split][k].astype(int) for k in ("inputs", "targets", "weights"))
        assert x.shape == (len(x), 23)
        for row, target, weight in zip(x, y, w):
            memorised = [t for t in row[:19] if t != 0]                      # blanks are 0
            assert len(memorised) == 4 and set(memorised) <= set(range(1, 5))
            if not variable:
                assert list(row[:4]) == memorised
            assert list(row[19:]) == [5] * 4                                 # markers
            want = memorised[::-1] if reverse else memorised
            assert list(target[19:]) == want and list(np.nonzero(weight)[0]) == [19, 20, 21, 22]
    if variable:
        assert any(data["train"]["inputs"][:, 0] == 0)                       # tokens not always leading


def test_adding_targets(tmp_path):
    ds = Adding(l_max=21, n_train=100, n_val=20, seed=4, cache_dir=str(tmp_path))
    data = ds.load(progress=False)
    for split in ds.splits:
        x, t = data[split]["inputs"], data[split]["target"]
        assert x.shape == (len(t), 21, 2) and x.dtype == np.float32
        for row, target in zip(x, t):
            marked = np.nonzero(row[:, 1])[0]
            assert len(marked) == 2 and marked[0] < 10 <= marked[1]           # one in each half (mid = 10)
            assert target == pytest.approx(row[marked, 0].sum(), abs=1e-6)
            assert np.all((0 <= row[:, 0]) & (row[:, 0] < 1))


def test_deterministic_by_seed_and_cached(tmp_path, monkeypatch):
    kw = dict(n_train=30, n_test=10, cache_dir=str(tmp_path))
    first = InductionHead(seed=7, **kw).load(progress=False)
    monkeypatch.setattr(InductionHead, "sample", lambda *a: pytest.fail("cache not used"))
    again = InductionHead(seed=7, **kw).load(progress=False)
    monkeypatch.undo()
    for split in first:
        for k in first[split]:
            np.testing.assert_array_equal(first[split][k], again[split][k])
    regenerated = InductionHead(seed=7, **{**kw, "cache_dir": str(tmp_path / "b")}).load(progress=False)
    np.testing.assert_array_equal(regenerated["train"]["inputs"], first["train"]["inputs"])
    other = InductionHead(seed=8, **kw).load(progress=False)
    assert not np.array_equal(other["train"]["inputs"], first["train"]["inputs"])
    # a split's examples do not depend on another split's size
    bigger = InductionHead(seed=7, n_train=60, n_test=10, cache_dir=str(tmp_path)).load(progress=False)
    np.testing.assert_array_equal(bigger["test"]["inputs"], first["test"]["inputs"])


def test_too_few_distinct_sequences_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="distinct"):
        InductionHead(vocab_size=4, input_seq_len=3, n_train=50, n_test=1, cache_dir=str(tmp_path)).load(False)
