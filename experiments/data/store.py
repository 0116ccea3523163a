"""The one on-disk cache of generated arrays, its default directory and the one seed splitter.

Every dataset of ``experiments.data`` generates its arrays from a seed and caches them here:

    key  = sha256(canonical JSON of {"name", "config", "version", "store_format"})
    file = <cache_dir>/<name>-<key[:16]>.npz            (cache_dir default: DEFAULT_CACHE_DIR)

The canonical JSON (sorted keys, no whitespace, no NaN/inf) is also stored inside the file (entry
``__config__``) and compared on load, so a hash-prefix collision or an edited file is detected.
Files are written atomically: a temporary file in the same directory (``.tmp-<pid>-<random>-...``,
not ending in ``.npz``) is written, flushed and fsynced, then renamed over the final name with
``os.replace``; on any failure (including KeyboardInterrupt) the temporary file is removed, so a
final file, if present, is always complete.

Random streams: ``split_rng(seed, split, *more)`` is PCG64 seeded with ``[seed, crc32(split), *more]``,
so the splits of one seed are independent and a split does not change when another one's size does.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

__all__ = ["CONFIG_ENTRY", "DEFAULT_CACHE_DIR", "DatasetCacheError", "cache_file_path", "cached_arrays",
           "canonical_config_json", "split_rng"]

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = ".cache/neural_lax"  # the configs' default: ${oc.env:NEURAL_LAX_CACHE,.cache/neural_lax}
STORE_FORMAT_VERSION = 1
CONFIG_ENTRY = "__config__"


def split_rng(seed: int, split: str, *more: int) -> np.random.Generator:
    """Random stream of one split (and chunk): PCG64 seeded with [seed, crc32(split), *more].

    Splits drawn from their own streams are independent and do not change when another split's
    size does.
    """
    return np.random.default_rng([int(seed), zlib.crc32(split.encode("utf-8")), *map(int, more)])


class DatasetCacheError(RuntimeError):
    """A cache file exists but cannot be used (corrupt, truncated, or for a different config)."""


def canonical_config_json(name: str, config: Mapping[str, Any], version: int = 1) -> str:
    """Canonical JSON text of {name, config, generator version, store format} (the hashed identity).

    Keys are sorted and separators fixed so equal configs give equal text; values must be JSON
    types (note 12 and 12.0 differ: callers should normalise numbers before calling).
    """
    identity = {
        "name": name,
        "config": dict(config),
        "version": version,
        "store_format": STORE_FORMAT_VERSION,
    }
    return json.dumps(identity, sort_keys=True, separators=(",", ":"), allow_nan=False)


def cache_file_path(
    name: str, config: Mapping[str, Any], cache_dir: str | os.PathLike, version: int = 1
) -> Path:
    """Path <cache_dir>/<name>-<sha256(canonical JSON)[:16]>.npz of the cache entry."""
    if not name or any(c in name for c in "/\\\0") or name.startswith("."):
        raise ValueError(f"cache name must be a plain file-name stem, got {name!r}")
    key = hashlib.sha256(canonical_config_json(name, config, version).encode()).hexdigest()
    return Path(cache_dir) / f"{name}-{key[:16]}.npz"


def _regenerate_hint(path: Path) -> str:
    return (
        f"Delete {path} to regenerate it (or pass a different cache_dir, "
        f"e.g. an empty directory, to keep it)."
    )


def _load(path: Path, expected_json: str) -> dict[str, np.ndarray]:
    """Read every array of a cache file (checking zip CRCs) and verify the stored config."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise DatasetCacheError(
            f"Cache file {path} is corrupt or truncated ({type(error).__name__}: {error}). "
            + _regenerate_hint(path)
        ) from error
    stored = arrays.pop(CONFIG_ENTRY, None)
    if stored is None or stored.shape != () or stored.dtype.kind != "U":
        raise DatasetCacheError(
            f"Cache file {path} has no stored configuration entry {CONFIG_ENTRY!r}. "
            + _regenerate_hint(path)
        )
    if str(stored[()]) != expected_json:
        raise DatasetCacheError(
            f"Cache file {path} was written for a different configuration:\n"
            f"  stored:   {stored[()]}\n  expected: {expected_json}\n" + _regenerate_hint(path)
        )
    return arrays


def _write_atomically(path: Path, arrays: Mapping[str, np.ndarray], config_json: str) -> None:
    """Write arrays + config to a temporary file in path's directory, fsync, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}-{path.name}.part"
    try:
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays, **{CONFIG_ENTRY: np.array(config_json)})
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    try:  # make the rename durable; best effort (not supported on every platform)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError:
        pass


def cached_arrays(
    name: str,
    config: Mapping[str, Any],
    generate: Callable[[], Mapping[str, np.ndarray]],
    cache_dir: str | os.PathLike,
    *,
    version: int = 1,
) -> dict[str, np.ndarray]:
    """Return the arrays for (name, config, version), generating and caching them on first use.

    Args:
        name: file-name stem of the entry (e.g. "darcy").
        config: JSON-serialisable parameters that determine the data completely.
        generate: called with no arguments on a cache miss; returns {array name: ndarray}.
        cache_dir: directory of the cache files (created if missing).
        version: generator format version; bump it when the generator's output changes.

    Returns:
        {array name: ndarray} as produced by ``generate`` (loaded from disk on a hit).

    Raises:
        DatasetCacheError: the cache file exists but is corrupt/truncated or stores another config.
    """
    config_json = canonical_config_json(name, config, version)
    path = cache_file_path(name, config, cache_dir, version)
    if path.exists():
        arrays = _load(path, config_json)
        logger.info("Loaded cached %s data from %s", name, path)
        return arrays
    logger.info("No cached %s data at %s; generating it", name, path)
    arrays = {key: np.asarray(value) for key, value in generate().items()}
    if CONFIG_ENTRY in arrays:
        raise ValueError(f"generated array name {CONFIG_ENTRY!r} is reserved by the cache")
    _write_atomically(path, arrays, config_json)
    logger.info("Wrote %s data to %s (%.1f MB)", name, path, path.stat().st_size / 1e6)
    return arrays
