"""A user's own input -> output fields, read from their files: the field dataset of ``data=arrays``.

``ArrayFields`` reads ``x`` (inputs) and ``y`` (outputs) of every example from one file per split, in any
of the formats people keep fields in:

* ``.npz`` (``x_key`` / ``y_key`` name its members), ``.h5`` / ``.hdf5`` (dataset paths, row-major as
  h5py / NumPy write them), ``.mat`` (variables; v5/v7 or v7.3, ``experiments.data.matfile``);
* a pair ``[x.npy, y.npy]`` of NumPy files (the keys are then unused).

The layout is declared (``channels``): "last" (n, *grid, c), "first" (n, c, *grid) or "none" (n, *grid), one
channel. Channel counts and the number of spatial axes are taken from the files' headers when the dataset
is built (before any data is read), so the runner fits the model to them (``experiments.build.
fit_model_config``). Train and test come from separate files, or from one file split by index (train = the
first ``n_train`` rows, test = the last ``n_test``, as the FNO scripts cut ``burgers_data_R10.mat``); a
validation split is the ``n_val`` rows right after the training rows of the training file. Splits that
would share rows are an error. Nothing is copied or converted on disk: the files are read where they are,
and HDF5 / v7.3 / ``.npy`` files only for the rows a split takes.

``FileFields`` is the machinery, shared with the FNO paper's published files (``experiments.data.fno_files``).
"""
from __future__ import annotations

import os
import pathlib
import zipfile
from typing import Any, Sequence

import numpy as np

from experiments.data.matfile import MatFile, require_h5py
from experiments.errors import UserInputError

__all__ = ["ArrayFields", "FileFields", "LAYOUTS", "grid_stride", "grid_strides", "npy_member_header", "open_fields"]

LAYOUTS = ("last", "first", "none")
SUFFIXES = (".npz", ".h5", ".hdf5", ".mat", "a pair [x.npy, y.npy]")


# -- strides: which resolutions a grid reaches -------------------------------------------------------------
def grid_strides(grid: Sequence[int], periodic: bool) -> dict[int, int]:
    """{resolution: stride r} of every r that fits every axis of ``grid``; a resolution counts the points of
    the first axis. Periodic: r divides K, K / r points (Burgers' 8192 -> 4096, ..., 256); else the grid
    holds both end points, r divides K - 1, (K - 1) / r + 1 points (Darcy's 421 -> 211, 141, 106, 85, ...)."""
    out = {}
    for r in range(1, grid[0] + 1):
        if all((K if periodic else K - 1) % r == 0 for K in grid):
            out.setdefault(len(range(0, grid[0], r)), r)
    return out


def grid_stride(grid: Sequence[int], periodic: bool, resolution: int) -> int:
    """The stride that takes ``grid`` to ``resolution`` points on its first axis; a ValueError listing the
    reachable resolutions otherwise."""
    strides = grid_strides(grid, periodic)
    if resolution not in strides:
        rule = "periodic: K / r points" if periodic else "end points included: (K - 1) / r + 1 points"
        raise ValueError(f"resolution {resolution} cannot be taken from the grid {tuple(grid)} by striding every "
                         f"axis alike ({rule}); valid resolutions are {sorted(strides, reverse=True)}")
    return strides[resolution]


# -- reading one array's rows from a file -----------------------------------------------------------------
class _NpyArray:
    """A ``.npy`` file, memory-mapped: its shape from the header, rows read on demand."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        try:
            self._array = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as err:
            raise UserInputError(f"{str(path)!r} is not a readable .npy file (truncated or corrupt?): {err}") from None

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._array.shape)

    def read(self, key: str, rows: slice) -> np.ndarray:
        return np.asarray(self._array[rows])


class _NpzFile:
    """A ``.npz`` archive: shapes from its members' headers; a member is loaded whole, then sliced."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        try:
            with zipfile.ZipFile(path) as archive:
                self._shapes = {name[:-4]: npy_member_header(archive, name)[0] for name in archive.namelist()
                                if name.endswith(".npy")}
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
            raise UserInputError(f"{str(path)!r} is not a readable .npz file (truncated or corrupt?): {err}") from None

    def shape(self, key: str) -> tuple[int, ...]:
        if key not in self._shapes:
            raise UserInputError(f"{str(self.path)!r} has no array {key!r}; it has {sorted(self._shapes)}. Set "
                                 f"the key option (x_key / y_key) to one of them")
        return self._shapes[key]

    def read(self, key: str, rows: slice) -> np.ndarray:
        self.shape(key)
        try:
            with np.load(self.path, allow_pickle=False) as archive:
                return archive[key][rows]
        except Exception as err:
            raise UserInputError(f"{str(self.path)!r}: array {key!r} cannot be read (truncated or corrupt?): "
                                 f"{err}") from None


def npy_member_header(archive: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) in the .npy header of an archive member, without its data (formats 1.0 and 2.0, what
    ``np.savez`` writes; a member of another format version is loaded to find them)."""
    with archive.open(name) as f:
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is not None:
            shape, _, dtype = read_header(f)
            return tuple(shape), np.dtype(dtype)
    with archive.open(name) as f:
        array = np.load(f, allow_pickle=False)
        return array.shape, array.dtype


class _H5File:
    """An HDF5 file of row-major datasets (h5py / NumPy order, no transposition); keys are dataset paths."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        h5py = require_h5py()
        try:
            found: dict[str, tuple[int, ...]] = {}

            def record(name: str, obj) -> None:  # visititems stops at the first callback returning a value
                if isinstance(obj, h5py.Dataset):
                    found[name] = tuple(obj.shape)

            with h5py.File(path, "r") as f:
                f.visititems(record)
        except OSError as err:
            raise UserInputError(f"{str(path)!r} is not a readable HDF5 file (truncated or corrupt?): {err}") from None
        self._shapes = found

    def shape(self, key: str) -> tuple[int, ...]:
        if key.strip("/") not in self._shapes:
            raise UserInputError(f"{str(self.path)!r} has no dataset {key!r}; it has {sorted(self._shapes)}. Set "
                                 f"the key option (x_key / y_key) to one of them")
        return self._shapes[key.strip("/")]

    def read(self, key: str, rows: slice) -> np.ndarray:
        self.shape(key)
        try:
            with require_h5py().File(self.path, "r") as f:
                return f[key][rows]
        except OSError as err:
            raise UserInputError(f"{str(self.path)!r}: dataset {key!r} cannot be read (truncated or corrupt?): "
                                 f"{err}") from None


def open_fields(path: str | os.PathLike):
    """The reader of one file by its suffix (``shape(key)``, ``read(key, rows)``); a UserInputError naming
    the path if it is missing or of an unknown kind."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise UserInputError(f"data file {str(path)!r} does not exist (or is not a file); check the path")
    readers = {".npy": _NpyArray, ".npz": _NpzFile, ".h5": _H5File, ".hdf5": _H5File, ".mat": MatFile}
    if path.suffix.lower() not in readers:
        raise UserInputError(f"data file {str(path)!r}: unknown kind {path.suffix!r}; use one of {SUFFIXES}")
    return readers[path.suffix.lower()](path)


class _SplitFile:
    """x and y of one split's file (or ``.npy`` pair): their shapes and their rows."""

    def __init__(self, spec: Any, x_key: str, y_key: str):
        if isinstance(spec, (list, tuple)):
            if len(spec) != 2 or not all(str(p).lower().endswith(".npy") for p in spec):
                raise UserInputError(f"a pair of files must be [x.npy, y.npy]; got {list(spec)}")
            self.name = f"[{spec[0]}, {spec[1]}]"
            self._sources = [(open_fields(spec[0]), "x"), (open_fields(spec[1]), "y")]
        else:
            if str(spec).lower().endswith(".npy"):
                raise UserInputError(f"{spec!r} is one .npy file; give the inputs and outputs as a pair "
                                     f"[x.npy, y.npy]")
            self.name = str(spec)
            reader = open_fields(spec)
            self._sources = [(reader, x_key), (reader, y_key)]
        self.x_shape, self.y_shape = (reader.shape(key) for reader, key in self._sources)
        if not self.x_shape or not self.y_shape or self.x_shape[0] != self.y_shape[0]:
            raise UserInputError(f"{self.name}: inputs {self.x_shape} and outputs {self.y_shape} must have the same "
                                 f"number of examples on their first axis")
        self.n_rows = self.x_shape[0]

    def read(self, rows: slice) -> tuple[np.ndarray, np.ndarray]:
        return tuple(reader.read(key, rows) for reader, key in self._sources)


# -- the field dataset ------------------------------------------------------------------------------------
def _grid_and_channels(shape: tuple[int, ...], layout: str, what: str) -> tuple[tuple[int, ...], int]:
    """(grid, channels) of an array of ``shape`` in ``layout``; a UserInputError naming both if it cannot be."""
    need = {"last": "(n, *grid, channels)", "first": "(n, channels, *grid)", "none": "(n, *grid)"}[layout]
    if len(shape) < (2 if layout == "none" else 3):
        raise UserInputError(f"{what} has shape {shape}, which cannot be the layout channels={layout!r} {need} "
                             f"with at least one grid axis; set the channels option to the arrays' layout "
                             f"(one of {LAYOUTS})")
    if layout == "last":
        return tuple(shape[1:-1]), shape[-1]
    if layout == "first":
        return tuple(shape[2:]), shape[1]
    return tuple(shape[1:]), 1


def _to_channels_last(array: np.ndarray, layout: str) -> np.ndarray:
    """(n, ...) in ``layout`` -> (n, *grid, c) float32."""
    if layout == "first":
        array = np.moveaxis(array, 1, -1)
    elif layout == "none":
        array = array[..., None]
    return np.ascontiguousarray(array, dtype=np.float32)


class FileFields:
    """Input -> output fields read from files: the ``FieldDataset`` machinery of ``ArrayFields`` and the
    FNO paper's ``.mat`` files (module docstring).

    Subclasses set ``x_layout`` / ``y_layout`` (one of ``LAYOUTS``), ``periodic`` (the stride rule of
    ``grid_strides``) and ``test_rows`` ("first" or "last": which rows
    of a separate test file the test split takes), and call ``FileFields.__init__``.
    """

    volatile_keys: tuple[str, ...] = ()  # a path is part of the data's identity
    x_layout = y_layout = "last"
    periodic = False
    test_rows = "first"

    def __init__(self, train_path: Any, test_path: Any, x_key: str, y_key: str):
        self.files = {"train": _SplitFile(train_path, x_key, y_key)}
        self.one_file = test_path is None or test_path == train_path
        self.files["test"] = self.files["train"] if self.one_file else _SplitFile(test_path, x_key, y_key)
        layouts = {}
        for split, f in self.files.items():
            x = _grid_and_channels(f.x_shape, self.x_layout, f"the inputs ({x_key}) of {f.name}")
            y = _grid_and_channels(f.y_shape, self.y_layout, f"the outputs ({y_key}) of {f.name}")
            if x[0] != y[0]:
                raise UserInputError(f"{f.name}: the inputs' grid {x[0]} (shape {f.x_shape}) and the outputs' grid "
                                     f"{y[0]} (shape {f.y_shape}) differ; check the channels option")
            layouts[split] = (x, y)
        if layouts["train"] != layouts["test"]:
            raise UserInputError(f"the train file {self.files['train'].name} and the test file "
                                 f"{self.files['test'].name} hold different grids or channels: "
                                 f"{layouts['train']} against {layouts['test']} ((grid, channels) of x and y)")
        (self.grid, self.in_channels), (_, self.out_channels) = layouts["train"]
        self._taken: dict[str, tuple[int, int]] = {}

    # -- resolutions ------------------------------------------------------------------------------------
    def _stride(self, resolution: int) -> int:
        return grid_stride(self.grid, self.periodic, resolution)

    def spatial_shape(self, resolution: int) -> tuple[int, ...]:
        """The grid at ``resolution`` points along the first spatial axis (every axis strided alike); a
        ValueError listing the reachable resolutions otherwise."""
        r = self._stride(resolution)
        return tuple(len(range(0, K, r)) for K in self.grid)

    def subsample(self, fields: np.ndarray, resolution: int) -> np.ndarray:
        """(n, *grid, c) -> the same at ``resolution``: every r-th point of every spatial axis."""
        r = self._stride(resolution)
        return fields[(slice(None), *[slice(None, None, r)] * len(self.grid))]

    # -- splits -----------------------------------------------------------------------------------------
    def _rows(self, split: str, n: int) -> tuple[_SplitFile, int, int]:
        if split == "train":
            return self.files["train"], 0, n
        if split == "val":
            if "train" not in self._taken:
                raise RuntimeError("the validation rows follow the training rows: load 'train' first")
            lo = self._taken["train"][1]
            return self.files["train"], lo, lo + n
        if split == "test":
            f = self.files["test"]
            return (f, f.n_rows - n, f.n_rows) if self.one_file or self.test_rows == "last" else (f, 0, n)
        raise UserInputError(f"split {split!r} is not one of train, val, test")

    def _check_rows(self, split: str, f: _SplitFile, lo: int, hi: int) -> None:
        if lo < 0 or hi > f.n_rows:
            raise UserInputError(f"the {split} split asks for {hi - lo} examples, but {f.name} holds {f.n_rows} "
                                 f"(after the splits taken before it: {self._taken}); lower data.n_{split}")
        for other, (a, b) in self._taken.items():
            same_file = self.files["test" if other == "test" else "train"] is f
            if other != split and same_file and lo < b and a < hi:
                raise UserInputError(f"the {split} rows [{lo}, {hi}) and the {other} rows [{a}, {b}) of {f.name} "
                                     f"overlap ({f.n_rows} examples); lower data.n_train / data.n_test / "
                                     f"data.n_val, or give a separate test file (test_path)")

    def load(self, split: str, n: int, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(x (n, *grid, in_channels), y (n, *grid, out_channels)) float32, read from the split's file rows."""
        f, lo, hi = self._rows(split, int(n))
        self._check_rows(split, f, lo, hi)
        x, y = f.read(slice(lo, hi))
        self._taken[split] = (lo, hi)
        return _to_channels_last(x, self.x_layout), _to_channels_last(y, self.y_layout)


class ArrayFields(FileFields):
    """A user's own (x, y) field pairs from ``.npz`` / ``.npy`` pairs / ``.h5`` / ``.mat`` (module docstring).

    Args:
      train_path: the training file, or a pair ``[x.npy, y.npy]``.
      test_path: the test file (or pair); None (or the same path): one file, train = its first n_train rows,
        test = its last n_test.
      x_key, y_key: the inputs' and outputs' names in the file (npz member, HDF5 dataset path, MATLAB variable).
      channels: the arrays' layout: "last" (n, *grid, c), "first" (n, c, *grid) or "none" (n, *grid).
      periodic: the stride rule of resolutions: True, a periodic grid of K points reaches K / r; False, a grid
        holding both end points reaches (K - 1) / r + 1. A resolution counts the points of the first spatial
        axis; every axis is strided alike.
    """

    def __init__(self, train_path: str | Sequence[str], test_path: str | Sequence[str] | None = None,
                 x_key: str = "x", y_key: str = "y", channels: str = "last", periodic: bool = False):
        if channels not in LAYOUTS:
            raise UserInputError(f"data.pde.channels={channels!r} is unknown; choose one of {LAYOUTS}")
        self.x_layout = self.y_layout = channels
        self.periodic = bool(periodic)
        super().__init__(train_path, test_path, x_key, y_key)
