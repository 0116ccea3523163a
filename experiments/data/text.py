"""A character-level corpus that every machine has without a download: the Python standard library.

The text is the concatenation, in file-name order, of the top-level ``*.py`` files of
``sysconfig.get_paths()["stdlib"]`` (subpackages and site-packages are not read; 168 files and
4.7 million characters on CPython 3.11.7), optionally cut to its first ``max_chars`` characters.
Characters map to a fixed 98-token vocabulary: ``<unk>`` (0), tab (1), newline (2) and printable
ASCII ``' '``..``'~'`` (3..97); anything else (a few dozen non-ASCII characters) becomes ``<unk>``.
The stream is split contiguously into train / val / test by fractions (default 90% / 5% / 5%, as
enwik8 and text8 are).

The corpus depends on the Python installation, so its identity (the cache key) includes the Python
version and a SHA-256 of the text read: another installation gives another, equally valid, corpus
and its own cache file, never a stale one.
"""
from __future__ import annotations

import hashlib
import pathlib
import sys
import sysconfig

import numpy as np

from experiments.data.store import DEFAULT_CACHE_DIR, cached_arrays

TEXT_VERSION = 1
UNK = 0
CHARS = "\t\n" + "".join(chr(c) for c in range(32, 127))
VOCAB = ("<unk>",) + tuple(CHARS)                  # 98 tokens
_LOOKUP = np.zeros(128, np.uint8)
_LOOKUP[[ord(c) for c in CHARS]] = np.arange(1, len(CHARS) + 1)

__all__ = ["CharCorpus", "VOCAB", "decode_chars", "encode_chars", "stdlib_files", "stdlib_text"]


def encode_chars(text: str) -> np.ndarray:
    """Characters -> uint8 ids of the fixed vocabulary (non-ASCII and control characters -> ``<unk>``)."""
    codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    ids = np.zeros(len(codes), np.uint8)
    ascii_ = codes < 128
    ids[ascii_] = _LOOKUP[codes[ascii_]]
    return ids


def decode_chars(ids: np.ndarray) -> str:
    """Ids -> text, ``<unk>`` shown as U+FFFD."""
    table = np.array(["\ufffd", *CHARS])
    return "".join(table[np.asarray(ids, np.int64)])


def stdlib_files(stdlib: str | None = None) -> list[pathlib.Path]:
    """The top-level ``*.py`` files of the standard library directory, sorted by name."""
    root = pathlib.Path(stdlib or sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if p.is_file())
    if not files:
        raise FileNotFoundError(f"no *.py files in the standard library directory {root}; the character corpus "
                                f"needs the Python sources (some minimal installations strip them)")
    return files


def stdlib_text(max_chars: int | None = None, stdlib: str | None = None) -> str:
    """The corpus text: the files' contents concatenated in order, cut to ``max_chars`` characters."""
    parts, total = [], 0
    for path in stdlib_files(stdlib):
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        total += len(text)
        if max_chars is not None and total >= max_chars:
            break
    text = "".join(parts)
    return text if max_chars is None else text[:max_chars]


class CharCorpus:
    """Character-level language-model data from the standard library's sources (a token stream per split).

    Args:
      max_chars: use the first ``max_chars`` characters of the corpus; None: all of it.
      val_fraction, test_fraction: contiguous tail portions held out (the first part trains).
      cache_dir: where the encoded streams are cached (does not change the data).
    """

    kind = "stream"
    splits = ("train", "val", "test")
    vocab_size = n_classes = len(VOCAB)
    seq_len = None  # a stream: the task cuts it into windows of its own length
    unit = "char"
    volatile_keys = ("cache_dir",)

    def __init__(self, max_chars: int | None = None, val_fraction: float = 0.05, test_fraction: float = 0.05,
                 cache_dir: str = DEFAULT_CACHE_DIR):
        if max_chars is not None and max_chars < 100:
            raise ValueError(f"CharCorpus: max_chars={max_chars} is too small (use >= 100, or null for all)")
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError(f"CharCorpus: val_fraction={val_fraction} and test_fraction={test_fraction} must be "
                             f"in [0, 1) and leave a training part")
        self.max_chars, self.val_fraction, self.test_fraction = max_chars, float(val_fraction), float(test_fraction)
        self.cache_dir = cache_dir
        self.splits = ("train",) + (("val",) if val_fraction else ()) + (("test",) if test_fraction else ())

    def split_bounds(self, n: int) -> dict[str, tuple[int, int]]:
        """Character ranges [lo, hi) of the splits of an ``n``-character stream."""
        n_val, n_test = int(round(n * self.val_fraction)), int(round(n * self.test_fraction))
        n_train = n - n_val - n_test
        return {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}

    def load(self, progress: bool = True) -> dict[str, np.ndarray]:
        text = stdlib_text(self.max_chars)
        config = {"max_chars": self.max_chars, "val_fraction": self.val_fraction,
                  "test_fraction": self.test_fraction, "python": ".".join(map(str, sys.version_info[:3])),
                  "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
        data = cached_arrays("stdlib_chars", config, lambda: {"stream": encode_chars(text)}, self.cache_dir,
                             version=TEXT_VERSION)
        stream = data["stream"]
        return {split: stream[lo:hi] for split, (lo, hi) in self.split_bounds(len(stream)).items()
                if split in self.splits}
