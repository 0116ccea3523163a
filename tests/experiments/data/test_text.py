"""Character corpus from the standard library: determinism, vocabulary, splits and cache.

Oracles: the files themselves (read here with plain Python), a character-by-character encoding loop,
and the split fractions.
"""
from __future__ import annotations

import pathlib
import sysconfig

import numpy as np
import pytest

from experiments.data import text
from experiments.data.text import VOCAB, CharCorpus, decode_chars, encode_chars, stdlib_files, stdlib_text


def test_file_selection_is_the_sorted_top_level_sources():
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    files = stdlib_files()
    assert files == sorted(root.glob("*.py")) and all(f.parent == root for f in files)
    assert {"os.py", "abc.py", "random.py"} <= {f.name for f in files}
    want = "".join(f.read_text(encoding="utf-8") for f in files[:3])
    assert stdlib_text(max_chars=len(want)) == want


def test_encoding_against_a_character_loop():
    sample = "def f(x):\n\treturn x ~ 1  # é\r"
    naive = [VOCAB.index(c) if c in VOCAB[1:] else 0 for c in sample]
    np.testing.assert_array_equal(encode_chars(sample), naive)
    assert decode_chars(encode_chars(sample)) == "def f(x):\n\treturn x ~ 1  # \ufffd\ufffd"
    assert len(VOCAB) == 98 and VOCAB[0] == "<unk>" and set(VOCAB[1:]) >= set("\n\t abcXYZ09{}~")


def test_corpus_is_deterministic_and_the_vocabulary_covers_it(tmp_path):
    a = CharCorpus(max_chars=300_000, cache_dir=str(tmp_path / "a")).load(progress=False)
    b = CharCorpus(max_chars=300_000, cache_dir=str(tmp_path / "b")).load(progress=False)  # generated again
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(a[split], b[split])
    stream = np.concatenate([a["train"], a["val"], a["test"]])
    raw = stdlib_text(300_000)
    assert len(stream) == 300_000 and decode_chars(stream) == "".join(c if c in VOCAB[1:] else "\ufffd" for c in raw)
    assert np.mean(stream == text.UNK) < 1e-3                                       # a handful of non-ASCII
    assert len(np.unique(stream)) > 80                                             # most of the vocabulary used
    # contiguous 90 / 5 / 5 split
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (270_000, 15_000, 15_000)


def test_cache_round_trip_and_split_options(tmp_path, monkeypatch):
    first = CharCorpus(max_chars=5_000, val_fraction=0.1, test_fraction=0.0, cache_dir=str(tmp_path)).load(False)
    assert set(first) == {"train", "val"} and (len(first["train"]), len(first["val"])) == (4_500, 500)
    monkeypatch.setattr(text, "encode_chars", lambda s: pytest.fail("cache not used"))
    again = CharCorpus(max_chars=5_000, val_fraction=0.1, test_fraction=0.0, cache_dir=str(tmp_path)).load(False)
    np.testing.assert_array_equal(first["val"], again["val"])
    assert len(list(tmp_path.glob("stdlib_chars-*.npz"))) == 1
    with pytest.raises(ValueError, match="fraction"):
        CharCorpus(val_fraction=0.6, test_fraction=0.5)
