"""ListOps generator: labels, lengths, tokenizer and cache, against oracles written apart from it.

Oracles: LRA's own text format parsed back into its left-nested tuples and evaluated with NumPy's
median (an evaluator that shares nothing with the generator), hand-evaluated expressions, and the
bounds and deduplication rule of ``lra_benchmarks/data/listops.py``.
"""
from __future__ import annotations

import numpy as np
import pytest

from experiments.data import listops
from experiments.data.listops import (EOS, PAD, VOCAB, ListOps, decode, encode, evaluate_tokens, listops_source,
                                      listops_tokenize)


def parse_lra_source(text: str):
    """LRA's Source text -> its nested tuples: "( ( [MAX 2 ) ] )" -> (("[MAX", 2), "]")."""
    words = text.split()
    pos = 0

    def item():
        nonlocal pos
        word = words[pos]
        pos += 1
        if word != "(":
            return int(word) if word.isdigit() else word
        left, right = item(), item()
        assert words[pos] == ")", f"expected ')' at word {pos}"
        pos += 1
        return (left, right)

    tree = item()
    assert pos == len(words)
    return tree


def value_of(tree) -> int:
    """Evaluate LRA's tuple tree: collect each operator's arguments, then apply MIN/MAX/MED/SM."""
    def collect(t):  # ((... ((op, a1), a2) ...), "]") -> (op, [a1, a2, ...])
        if isinstance(t[0], tuple):
            op, args = collect(t[0])
            return op, args + [t[1]]
        return t[0], [t[1]]

    if isinstance(tree, int):
        return tree
    assert tree[1] == "]"
    op, args = collect(tree[0])
    vals = [value_of(a) for a in args]
    return {"[MIN": min(vals), "[MAX": max(vals), "[MED": int(np.median(vals)),
            "[SM": int(np.sum(vals) % 10)}[op]


@pytest.mark.parametrize("tokens, value", [
    (["[MAX", "2", "9", "X"], 9),
    (["[MIN", "4", "[MAX", "1", "7", "X", "6", "X"], 4),
    (["[MED", "1", "2", "3", "4", "X"], 2),          # median 2.5, truncated
    (["[MED", "9", "0", "8", "X"], 8),
    (["[SM", "9", "9", "[SM", "5", "6", "X", "X"], 9),  # 9 + 9 + 1 = 19
])
def test_hand_evaluated_expressions(tokens, value):
    assert evaluate_tokens(encode(tokens)) == value
    assert value_of(parse_lra_source(listops_source(tokens))) == value


def test_lra_text_format_and_s4_tokenizer():
    # lra_benchmarks/data/listops.py to_string of (((("[MAX", 2), 9), "]")
    assert listops_source(["[MAX", "2", "9", "X"]) == "( ( ( [MAX 2 ) 9 ) ] )"
    assert listops_tokenize("( ( ( [MAX 2 ) 9 ) ] )") == ["[MAX", "2", "9", "X"]
    assert len(VOCAB) == 18 and VOCAB[:3] == ("<pad>", "<unk>", "<eos>")
    assert encode(["[SM", "bogus"]) == [VOCAB.index("[SM"), 1]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    ds = ListOps(n_train=40, n_val=10, n_test=10, min_length=20, max_length=120, seed=3,
                 cache_dir=str(tmp_path_factory.mktemp("listops")))
    return ds, ds.load(progress=False)


def test_every_label_recomputed_from_the_lra_text(small):
    ds, data = small
    for split in ds.splits:
        for row, label in zip(data[split]["inputs"], data[split]["label"]):
            tokens = decode([t for t in row if t != EOS])
            tree = parse_lra_source(listops_source(tokens))
            assert value_of(tree) == label
            assert listops_tokenize(listops_source(tokens)) == tokens          # the tokenizer round-trips
            assert encode(decode(row)) == [int(t) for t in row if t != PAD]


def test_lengths_padding_and_deduplication(small):
    ds, data = small
    rows = np.concatenate([data[s]["inputs"] for s in ds.splits])
    assert rows.shape == (60, 120) and rows.dtype == np.uint8
    n_real = (rows != PAD).sum(1)
    assert np.all(rows[np.arange(60), n_real - 1] == EOS)                       # <eos> closes each tree
    assert np.all((rows != PAD) == (np.arange(120)[None] < n_real[:, None]))    # no padding inside
    n_tokens = n_real - 1
    assert np.all((20 < n_tokens) & (n_tokens < 120))                          # strict, as LRA
    assert len({r.tobytes() for r in rows}) == 60                              # no duplicate across splits
    assert {len(data[s]["label"]) for s in ds.splits} == {40, 10}


def test_lra_bounds():
    trees, labels = listops.listops_dataset(8, seed=1, progress=False)         # 500 < tokens < 2000
    assert all(500 < len(t) < 2000 for t in trees)
    assert all(value_of(parse_lra_source(listops_source(decode(t)))) == v for t, v in zip(trees, labels))


def test_tree_depth_and_arity_bounds():
    draws = listops._Uniforms(np.random.default_rng(0))
    for _ in range(200):
        tokens, _ = listops.generate_tree_tokens(draws, max_depth=4, max_args=3)
        arg_counts, deepest = [], 0
        for tok in decode(tokens):
            if tok == "X":
                assert 2 <= arg_counts.pop() <= 3                                  # randint(2, max_args)
                continue
            if arg_counts:
                arg_counts[-1] += 1                                               # an argument of its parent
            if tok.startswith("["):
                arg_counts.append(0)
                deepest = max(deepest, len(arg_counts))
        assert not arg_counts and deepest <= 3                                    # depth 4 holds digits only


def test_deterministic_by_seed_and_cached(tmp_path, monkeypatch):
    kw = dict(n_train=12, n_val=3, n_test=3, min_length=10, max_length=60, cache_dir=str(tmp_path))
    first = ListOps(seed=5, **kw).load(progress=False)
    assert len(list(tmp_path.glob("listops-*.npz"))) == 1
    monkeypatch.setattr(ListOps, "generate", lambda self, progress=True: pytest.fail("cache not used"))
    again = ListOps(seed=5, **kw).load(progress=False)                         # loads the cache file
    for split in first:
        for key in first[split]:
            np.testing.assert_array_equal(first[split][key], again[split][key])
    monkeypatch.undo()
    fresh = ListOps(seed=5, **{**kw, "cache_dir": str(tmp_path / "other")}).load(progress=False)
    np.testing.assert_array_equal(fresh["train"]["inputs"], first["train"]["inputs"])  # same seed, regenerated
    other = ListOps(seed=6, **kw).load(progress=False)
    assert not np.array_equal(other["train"]["inputs"], first["train"]["inputs"])


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="seq_len"):
        ListOps(min_length=10, max_length=100, seq_len=50)
    with pytest.raises(ValueError, match="min_length"):
        ListOps(min_length=300, max_length=200)
    with pytest.raises(ValueError, match="n_train"):
        ListOps(n_train=0)
