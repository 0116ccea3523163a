"""Tests of the on-disk array cache (experiments.data.store)."""
import json
import logging

import numpy as np
import pytest

from experiments.data.store import CONFIG_ENTRY, DatasetCacheError, cache_file_path, cached_arrays

CONFIG = {"resolution": 17, "alpha": 2.0, "split": "train"}


class CountingGenerator:
    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return {"x": np.arange(12, dtype=np.float32).reshape(3, 4), "y": np.ones(5)}


def test_second_call_loads_without_generating(tmp_path, caplog):
    generate = CountingGenerator()
    with caplog.at_level(logging.INFO, logger="experiments.data.store"):
        first = cached_arrays("toy", CONFIG, generate, tmp_path)
        second = cached_arrays("toy", dict(reversed(list(CONFIG.items()))), generate, tmp_path)
    assert generate.calls == 1
    path = cache_file_path("toy", CONFIG, tmp_path)
    assert path.exists() and path.name.startswith("toy-") and len(path.stem) == len("toy-") + 16
    assert sorted(second) == ["x", "y"]
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
        assert first[key].dtype == second[key].dtype
    assert f"Wrote toy data to {path}" in caplog.text
    assert f"Loaded cached toy data from {path}" in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary files left


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failing_generator_leaves_no_files(tmp_path, error):
    def generate():
        raise error

    with pytest.raises(type(error)):
        cached_arrays("toy", CONFIG, generate, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_removes_temporary_and_final_file(tmp_path, monkeypatch):
    import experiments.data.store as store

    def interrupted_fsync(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(store.os, "fsync", interrupted_fsync)
    with pytest.raises(KeyboardInterrupt):
        cached_arrays("toy", CONFIG, CountingGenerator(), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_truncated_file_raises_naming_the_file(tmp_path):
    cached_arrays("toy", CONFIG, CountingGenerator(), tmp_path)
    path = cache_file_path("toy", CONFIG, tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetCacheError, match="corrupt or truncated") as info:
        cached_arrays("toy", CONFIG, CountingGenerator(), tmp_path)
    assert str(path) in str(info.value) and "Delete" in str(info.value)


def test_corrupted_payload_raises(tmp_path):
    """Same length, flipped bytes inside an array: caught by the zip CRC check on full read."""
    cached_arrays("toy", CONFIG, CountingGenerator(), tmp_path)
    path = cache_file_path("toy", CONFIG, tmp_path)
    data = bytearray(path.read_bytes())
    offset = data.index(np.arange(12, dtype=np.float32).tobytes())
    data[offset + 8 : offset + 12] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetCacheError, match=str(path)):
        cached_arrays("toy", CONFIG, CountingGenerator(), tmp_path)


def test_changed_config_or_version_gives_a_different_file(tmp_path):
    generate = CountingGenerator()
    cached_arrays("toy", CONFIG, generate, tmp_path)
    cached_arrays("toy", {**CONFIG, "alpha": 2.5}, generate, tmp_path)
    cached_arrays("toy", CONFIG, generate, tmp_path, version=2)
    cached_arrays("other", CONFIG, generate, tmp_path)
    assert generate.calls == 4
    assert len(list(tmp_path.glob("*.npz"))) == 4


def test_tampered_stored_config_raises(tmp_path):
    cached_arrays("toy", CONFIG, CountingGenerator(), tmp_path)
    path = cache_file_path("toy", CONFIG, tmp_path)
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    stored = json.loads(str(arrays[CONFIG_ENTRY]))
    stored["config"]["alpha"] = 3.0
    arrays[CONFIG_ENTRY] = np.array(json.dumps(stored, sort_keys=True, separators=(",", ":")))
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    with pytest.raises(DatasetCacheError, match="different configuration") as info:
        cached_arrays("toy", CONFIG, CountingGenerator(), tmp_path)
    assert str(path) in str(info.value)


def test_file_without_stored_config_raises(tmp_path):
    path = cache_file_path("toy", CONFIG, tmp_path)
    with open(path, "wb") as handle:
        np.savez(handle, x=np.zeros(3))
    with pytest.raises(DatasetCacheError, match=str(path)):
        cached_arrays("toy", CONFIG, CountingGenerator(), tmp_path)


def test_split_rng_streams_are_independent_per_split_seed_and_chunk():
    from experiments.data.store import split_rng

    draws = {key: split_rng(*key).standard_normal(4) for key in [(0, "train"), (0, "test"), (1, "train"),
                                                                  (0, "train", 1), (0, "train", 2)]}
    assert len({tuple(v) for v in draws.values()}) == len(draws)
    np.testing.assert_array_equal(split_rng(0, "train").standard_normal(4), draws[(0, "train")])
    # NumPy's SeedSequence ignores trailing zero words: chunk 0 is the split's own stream
    np.testing.assert_array_equal(split_rng(0, "train", 0).standard_normal(4), draws[(0, "train")])
    # [seed, crc32(split)] with nothing more is the two-word seed of the first datasets (caches stay valid)
    import zlib

    np.testing.assert_array_equal(draws[(0, "test")],
                                  np.random.default_rng([0, zlib.crc32(b"test")]).standard_normal(4))
