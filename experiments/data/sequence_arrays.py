"""A user's own sequences, from NumPy ``.npz`` files: ``data=sequence_arrays``.

The sequence tasks (``experiments.tasks.sequence``) take any ``SequenceDataset``; this one reads the
arrays a user saved with ``numpy.savez`` / ``savez_compressed``, one file per split or one file split
by index. A file holds:

* ``inputs``: (n, L) integer tokens (the model embeds them: ``vocab_size``), or (n, L) / (n, L, d)
  real features (``d_input`` = d, 1 for (n, L));
* ``labels``: (n,) integer classes (classification) or real targets (regression; the task
  ``experiments.tasks.sequence.SequenceRegression``);
* optionally ``lengths`` (n,): the number of real positions, the first ones of each row (sequences
  padded at the end); or ``mask`` (n, L) bool, True at real positions. Without either every position
  is real. The model sees the mask (``model(inputs, mask)``).

Splits: ``train_path``, and ``val_path`` / ``test_path`` where given; a split without a file is cut
from the end of the training file (the last ``n_test`` rows are the test split and the ``n_val`` rows
before them the validation split, as the FNO scripts take their test set with ``[-ntest:]``). What the
task and the model need before the data is read (length, features, token or real, the kind) comes from
the files' array headers; ``vocab_size`` and ``n_classes`` left null are read from the arrays (the
largest token or label plus one), so set them to spare that read. Nothing is copied or cached.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from experiments.data.arrays import npy_member_header
from experiments.errors import UserInputError

__all__ = ["SequenceArrays", "npz_headers"]

KINDS = ("classification", "regression")
REQUIRED = ("inputs", "labels")


class Header(NamedTuple):
    """Shape and dtype of one array of an ``.npz`` file, read without reading the array."""

    shape: tuple[int, ...]
    dtype: np.dtype


def _missing_file(file: Path, what: str) -> UserInputError:
    """The error for a file that is not there, listing what its folder holds."""
    folder = file.parent
    if not folder.is_dir():
        return UserInputError(f"{what}: {file} does not exist, nor does its folder {folder}")
    names = sorted(p.name for p in folder.iterdir())
    return UserInputError(f"{what}: {file} does not exist; {folder} holds {names if names else 'nothing'}")


def npz_headers(file: str | Path, what: str = "file") -> dict[str, Header]:
    """``{key: Header}`` of every array in an ``.npz`` file (the ``.npy`` headers only)."""
    file = Path(file).expanduser()
    if not file.is_file():
        raise _missing_file(file, what)
    headers = {}
    try:
        with zipfile.ZipFile(file) as archive:
            for name in archive.namelist():
                if not name.endswith(".npy"):
                    continue
                headers[name[:-len(".npy")]] = Header(*npy_member_header(archive, name))
    except (zipfile.BadZipFile, ValueError, OSError) as err:
        raise UserInputError(f"{what}: {file} is not a readable .npz file ({err}); save the arrays with "
                             f"numpy.savez(file, inputs=..., labels=...)") from None
    return headers


class SequenceArrays:
    """Sequences and their labels from ``.npz`` files (module docstring), for the sequence tasks.

    Args:
      train_path: the training file (with ``n_val`` / ``n_test``, also the source of those splits).
      val_path, test_path: files of the validation / test split; None: cut from the training file.
      n_val, n_test: rows cut from the end of the training file for a split without a file (test last).
      kind: "classification" or "regression"; None: from the labels' dtype (integer: classification).
      vocab_size: tokens lie in [0, vocab_size); None: the largest token + 1 (integer inputs only).
      n_classes: labels lie in [0, n_classes); None: the largest label + 1 (classification only).
    """

    volatile_keys = ()

    def __init__(self, train_path: str, val_path: str | None = None, test_path: str | None = None,
                 n_val: int = 0, n_test: int = 0, kind: str | None = None, vocab_size: int | None = None,
                 n_classes: int | None = None):
        for name, n in (("n_val", n_val), ("n_test", n_test)):
            if not isinstance(n, (int, np.integer)) or n < 0:
                raise UserInputError(f"SequenceArrays: {name}={n!r} must be an integer >= 0")
        self.files = {"train": Path(train_path).expanduser()}
        self.cut = {}
        for split, path, n in (("val", val_path, n_val), ("test", test_path, n_test)):
            if path is not None and n:
                raise UserInputError(f"SequenceArrays: {split}_path is given, so n_{split}={n} (rows cut from "
                                     f"train_path) does not apply; set n_{split}=0")
            if path is not None:
                self.files[split] = Path(path).expanduser()
            elif n:
                self.cut[split] = int(n)
        self.splits = tuple(s for s in ("train", "val", "test") if s in self.files or s in self.cut)
        if len(self.splits) < 2:
            raise UserInputError("SequenceArrays: no evaluation split; give test_path (or val_path), or cut "
                                 "rows from the training file with n_test (and n_val)")
        self.headers = {split: self._check_header(split, file) for split, file in self.files.items()}
        self._describe(kind)
        if not self.tokens and vocab_size is not None:
            raise UserInputError(f"SequenceArrays: vocab_size={vocab_size} applies to integer tokens; the inputs "
                                 f"of {self.files['train']} are real features, so leave it null")
        if self.kind == "regression" and n_classes is not None:
            raise UserInputError(f"SequenceArrays: n_classes={n_classes} applies to classification; the labels "
                                 f"are regression targets, so leave it null")
        self.vocab_size, self.n_classes = vocab_size, n_classes
        if self.tokens and vocab_size is None:
            self.vocab_size = int(max(self._array(s, "inputs").max(initial=0) for s in self.files)) + 1
        if self.kind == "classification" and n_classes is None:
            self.n_classes = int(max(self._array(s, "labels").max(initial=0) for s in self.files)) + 1

    # -- what is known from the headers -------------------------------------------------------------
    def _check_header(self, split: str, file: Path) -> dict[str, Header]:
        where = f"data.dataset.{split}_path"
        headers = npz_headers(file, where)
        missing = [k for k in REQUIRED if k not in headers]
        if missing:
            raise UserInputError(f"{file} lacks {', '.join(missing)}; it holds {sorted(headers)} (expected inputs "
                                 f"(n, L[, d]), labels (n,), optionally lengths (n,) or mask (n, L))")
        x, y = headers["inputs"], headers["labels"]
        if len(x.shape) not in (2, 3) or x.dtype.kind not in "iuf" or (x.dtype.kind in "iu" and len(x.shape) != 2):
            raise UserInputError(f"{file}: inputs is {x.dtype} of shape {x.shape}; expected integer tokens (n, L) "
                                 f"or real features (n, L) / (n, L, d)")
        n, length = x.shape[:2]
        if y.shape != (n,) or y.dtype.kind not in "iuf":
            raise UserInputError(f"{file}: labels is {y.dtype} of shape {y.shape}; expected numbers of shape ({n},), "
                                 f"one per row of inputs {x.shape}")
        if "lengths" in headers and "mask" in headers:
            raise UserInputError(f"{file} holds both lengths and mask; keep one of them")
        if "lengths" in headers and (headers["lengths"].shape != (n,) or headers["lengths"].dtype.kind not in "iu"):
            raise UserInputError(f"{file}: lengths is {headers['lengths'].dtype} of shape {headers['lengths'].shape}; "
                                 f"expected integers of shape ({n},)")
        if "mask" in headers and (headers["mask"].shape != (n, length) or headers["mask"].dtype != np.bool_):
            raise UserInputError(f"{file}: mask is {headers['mask'].dtype} of shape {headers['mask'].shape}; "
                                 f"expected bool of shape ({n}, {length})")
        return headers

    def _describe(self, kind: str | None) -> None:
        """seq_len, d_input, tokens and kind from the headers; every file must agree with the training file."""
        first = self.headers["train"]
        for split, headers in self.headers.items():
            for key in REQUIRED:
                a, b = headers[key], first[key]
                if a.shape[1:] != b.shape[1:] or (a.dtype.kind == "f") != (b.dtype.kind == "f"):
                    raise UserInputError(f"{self.files[split]}: {key} is {a.dtype} {a.shape}, unlike {b.dtype} "
                                         f"{b.shape} in {self.files['train']}; every split needs the same length, "
                                         f"features and kind of values")
        n_rows = first["inputs"].shape[0] - sum(self.cut.values())
        if n_rows < 1:
            raise UserInputError(f"{self.files['train']} has {first['inputs'].shape[0]} rows: cutting "
                                 f"{self.cut} leaves no training row; lower n_val / n_test")
        x, y = first["inputs"], first["labels"]
        self.seq_len = x.shape[1]
        self.tokens = x.dtype.kind in "iu"
        self.d_input = 1 if len(x.shape) == 2 else x.shape[2]
        inferred = "classification" if y.dtype.kind in "iu" else "regression"
        if kind is None:
            kind = inferred
        if kind not in KINDS:
            raise UserInputError(f"SequenceArrays: kind={kind!r} is unknown; choose one of {KINDS} (or null)")
        if kind == "classification" and inferred == "regression":
            raise UserInputError(f"{self.files['train']}: labels are {y.dtype}, but classification takes integer "
                                 f"classes; save them as integers, or use kind=regression")
        self.kind = kind

    # -- the data ----------------------------------------------------------------------------------
    def _array(self, split: str, key: str) -> np.ndarray:
        try:
            with np.load(self.files[split], allow_pickle=False) as f:
                return f[key]
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise UserInputError(f"{self.files[split]}: cannot read {key} ({err})") from None

    def _check_values(self, file: Path, arrays: dict[str, np.ndarray]) -> None:
        x, y = arrays["inputs"], arrays["labels"]
        if self.tokens and x.size and (x.min() < 0 or x.max() >= self.vocab_size):
            raise UserInputError(f"{file}: tokens range over {x.min()}..{x.max()}, outside [0, vocab_size="
                                 f"{self.vocab_size}); raise vocab_size (or leave it null)")
        if not self.tokens and not np.isfinite(x).all():
            raise UserInputError(f"{file}: inputs hold NaN or infinite values at rows "
                                 f"{np.unique(np.nonzero(~np.isfinite(x))[0])[:10].tolist()}")
        if self.kind == "classification" and y.size and (y.min() < 0 or y.max() >= self.n_classes):
            raise UserInputError(f"{file}: labels range over {y.min()}..{y.max()}, outside [0, n_classes="
                                 f"{self.n_classes}); raise n_classes (or leave it null)")
        if self.kind == "regression" and not np.isfinite(y).all():
            raise UserInputError(f"{file}: labels hold NaN or infinite values")
        lengths = arrays.get("lengths")
        if lengths is not None and lengths.size and (lengths.min() < 1 or lengths.max() > self.seq_len):
            raise UserInputError(f"{file}: lengths range over {lengths.min()}..{lengths.max()}, outside "
                                 f"1..{self.seq_len} (the rows' length)")

    def _read(self, split: str) -> dict[str, np.ndarray]:
        """One file's arrays as the task takes them: inputs, mask (if any), label / target."""
        file = self.files[split]
        keys = [k for k in ("inputs", "labels", "lengths", "mask") if k in self.headers[split]]
        arrays = {k: self._array(split, k) for k in keys}
        self._check_values(file, arrays)
        out = {"inputs": arrays["inputs"]}
        if "lengths" in arrays:
            out["mask"] = np.arange(self.seq_len)[None, :] < arrays["lengths"][:, None]     # (n, L)
        elif "mask" in arrays:
            out["mask"] = arrays["mask"]
        labels = arrays["labels"]
        if self.kind == "classification":
            out["label"] = labels.astype(np.int32)
        else:
            out["target"] = labels.astype(np.float32)
        return out

    def load(self, progress: bool = True) -> dict[str, dict[str, np.ndarray]]:
        out = {split: self._read(split) for split in self.files}
        train = out["train"]
        n = len(train["inputs"])
        n_test, n_val = self.cut.get("test", 0), self.cut.get("val", 0)
        bounds = {"train": (0, n - n_val - n_test), "val": (n - n_val - n_test, n - n_test), "test": (n - n_test, n)}
        for split in ("train", *self.cut):
            lo, hi = bounds[split]
            out[split] = {k: v[lo:hi] for k, v in train.items()}
        return out
