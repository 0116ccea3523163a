"""PDEBench's published HDF5 files as datasets of the operator and rollout tasks (``data=pdebench``).

PDEBench (Takamoto, Praditia, Leiteritz, MacKinlay, Alesiani, Pflüger, Niepert; NeurIPS 2022 Datasets and
Benchmarks, arXiv 2210.07182) ships its data in three HDF5 layouts. Which one a file holds is read from
its contents (``pdebench_layout``), following the public loaders of pdebench/PDEBench,
``pdebench/models/fno/utils.py`` (``FNODatasetSingle``, ``FNODatasetMult``), and the writers of
``pdebench/data_gen/data_gen_NLE/Data_Merge.py``, ``data_gen_NLE/BurgersEq/burgers_multi_solution_Hydra.py``
and ``data_gen/gen_diff_react.py``:

* ``single-1d`` (1-D Burgers, advection, ...): ``tensor`` (N, T, X) float32, ``x-coordinate`` (X,) and
  ``t-coordinate`` (T + 1,) (the generators save one time more than they record). A rollout task:
  the T snapshots of each sample, one field.
* ``darcy`` (2-D Darcy flow): ``nu`` (N, X, Y) the coefficient, ``tensor`` (N, 1, X, Y) the steady
  solution. An operator task nu -> u.
* ``groups`` (2-D reaction-diffusion, shallow water, 1-D diffusion-sorption): one group per sample,
  ``"0000"``, ``"0001"``, ..., each with ``data`` (T, *spatial, C) and ``grid/x`` (, ``grid/y``), ``grid/t``.
  A rollout task with C fields per snapshot.

Splits follow the loaders: single-file layouts put the first ``int(N * test_ratio)`` samples in the test
split and the rest in the training split (``FNODatasetSingle``); the grouped layout sorts the sample
names and puts the first ``int(N * (1 - test_ratio))`` in the training split and the rest in the test
split (``FNODatasetMult``). A validation split, which PDEBench does not have, is taken from the end of
the training block and may not overlap the training samples taken.

Reading is lazy: the datasets keep the path and the layout's shapes, and ``load(split, n)`` opens the
file and reads the n samples it returns (an h5py slice of the block, or one group per sample). The
tasks (``OperatorTask``, ``RolloutTask``) keep the splits they load in memory, so exactly the requested
``n_train`` / ``n_test`` (/ ``n_val``) samples are read, once, at set-up.

The helpers ``open_hdf5``, ``strided_shape`` and ``SampleBlocks`` serve ``experiments.data.the_well`` too.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any, Optional, Sequence

import h5py
import numpy as np

from experiments.data import progress_bar
from experiments.data.arrays import grid_stride
from experiments.errors import UserInputError
from experiments.tasks.pde import OperatorTask
from experiments.tasks.rollout import RolloutTask

__all__ = ["LAYOUTS", "PDEBenchDarcy", "PDEBenchTrajectories", "SampleBlocks", "open_hdf5", "pdebench_layout",
           "pdebench_task", "strided_shape"]

LAYOUTS = {
    "single-1d": "'tensor' (N, T, X) with 'x-coordinate' (X,) and 't-coordinate' (T+1,) (1-D Burgers / advection)",
    "darcy": "'nu' (N, X, Y) with 'tensor' (N, 1, X, Y) (2-D Darcy flow)",
    "groups": "one group per sample ('0000', '0001', ...) holding 'data' (T, *spatial, C) and 'grid/x' "
              "(, 'grid/y'), 'grid/t' (2-D reaction-diffusion / shallow water)",
}


def open_hdf5(path: str | os.PathLike) -> h5py.File:
    """The HDF5 file at ``path``, open for reading; a ``UserInputError`` naming it if it is absent or unreadable."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: no such file; check data.path")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise UserInputError(f"{path} cannot be read as an HDF5 file (corrupt or truncated?): {err}. "
                             f"Download or write it again") from None


def strided_shape(native: Sequence[int], resolution: int) -> tuple[tuple[int, ...], int]:
    """(grid, stride) when every axis of ``native`` is taken every ``stride``-th point, ``resolution`` points
    along the first axis (``experiments.data.arrays.grid_stride``'s periodic rule: the stride divides every
    axis); a ValueError listing the reachable resolutions otherwise."""
    stride = grid_stride(native, True, resolution)
    return tuple(int(n) // stride for n in native), stride


def subsample_strided(fields: np.ndarray, native: Sequence[int], resolution: int) -> np.ndarray:
    """(n, *native, c) -> (n, *grid, c): every stride-th point of every spatial axis (``strided_shape``)."""
    _, stride = strided_shape(native, resolution)
    return fields[(slice(None), *[slice(None, None, stride)] * len(native))]


class StridedGrid:
    """``spatial_shape`` / ``subsample`` of a dataset on a file's grid ``self.native``, strided alike on
    every axis (``strided_shape``)."""

    native: tuple[int, ...]

    def spatial_shape(self, resolution: int) -> tuple[int, ...]:
        return strided_shape(self.native, resolution)[0]

    def subsample(self, fields: np.ndarray, resolution: int) -> np.ndarray:
        return subsample_strided(fields, self.native, resolution)


class SampleBlocks:
    """Which samples of a file each split takes: the first n of its block, the validation split the last n
    of the training block. Remembers what it handed out and refuses an overlap of train and val."""

    def __init__(self, path: str, train: range, test: range):
        self.path, self.blocks, self.taken = path, {"train": train, "test": test}, {}

    def take(self, split: str, n: int) -> range:
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}; the file splits are train, val and test")
        block = self.blocks["train" if split == "val" else split]
        if not 1 <= n <= len(block):
            raise UserInputError(f"data.n_{split}={n} samples asked of the {split} split of {self.path}, which "
                                 f"has {len(block)} ({block.start}..{block.stop - 1}); lower data.n_{split}")
        rows = block[:n] if split != "val" else block[len(block) - n:]
        other = self.taken.get({"train": "val", "val": "train"}.get(split, ""))
        if other is not None and set(rows) & set(other):
            raise UserInputError(f"data.n_train + data.n_val exceed the {len(block)} training samples of "
                                 f"{self.path} (validation is taken from the end of the training block); "
                                 f"lower one of them")
        self.taken[split] = rows
        return rows


def _group_layout(f: h5py.File, path: str) -> tuple[list[str], tuple[int, ...]]:
    """Sorted sample names and the shape (T, *spatial, C) they share; errors name what differs."""
    names = sorted(f.keys())
    missing = [k for k in names if not isinstance(f[k], h5py.Group) or "data" not in f[k]]
    if missing:
        first = f[missing[0]]
        held = list(first.keys())[:10] if isinstance(first, h5py.Group) else f"a dataset of shape {first.shape}"
        raise UserInputError(f"{path}: {missing[:5]} ({len(missing)} of {len(names)} entries) lack 'data'; "
                             f"'{missing[0]}' holds {held}. Layout 'groups' is {LAYOUTS['groups']}")
    shape = tuple(f[names[0]]["data"].shape)
    if len(shape) < 3:
        raise UserInputError(f"{path}: {names[0]}/data has shape {shape}; expected (T, *spatial, C)")
    for name in names:
        if tuple(f[name]["data"].shape) != shape:
            raise UserInputError(f"{path}: {name}/data has shape {tuple(f[name]['data'].shape)} but "
                                 f"{names[0]}/data has {shape}; every sample must share one shape")
    grid = f[names[0]].get("grid")
    axes = ("x", "y", "z")[:len(shape) - 2]
    want = {**{a: shape[1 + i] for i, a in enumerate(axes)}, "t": shape[0]}
    for axis, n in want.items():
        if grid is None or axis not in grid:
            have = list(grid.keys()) if grid is not None else list(f[names[0]].keys())
            raise UserInputError(f"{path}: {names[0]}/grid/{axis} is missing (found {have}); layout 'groups' "
                                 f"needs grid/{', grid/'.join(want)} for data of shape {shape}")
        if grid[axis].shape != (n,):
            raise UserInputError(f"{path}: {names[0]}/grid/{axis} has shape {grid[axis].shape} but "
                                 f"{names[0]}/data {shape} needs ({n},)")
    return names, shape


def pdebench_layout(f: h5py.File, path: str) -> str:
    """The layout of an open PDEBench file ("single-1d", "darcy" or "groups"), checked; a
    ``UserInputError`` naming what was found and what was expected otherwise."""
    keys = sorted(f.keys())
    if "tensor" not in keys and any(isinstance(f[k], h5py.Group) for k in keys):
        return "groups"  # checked in full by the dataset (every sample's shape and grid)
    if "tensor" in keys and "nu" in keys:
        tensor, nu = f["tensor"].shape, f["nu"].shape
        if len(tensor) != 4 or tensor[1] != 1 or nu != (tensor[0], *tensor[2:]):
            raise UserInputError(f"{path}: 'tensor' has shape {tensor} and 'nu' {nu}; the Darcy layout needs "
                                 f"'tensor' (N, 1, X, Y) and 'nu' (N, X, Y)")
        return "darcy"
    if "tensor" in keys and f["tensor"].ndim == 3:
        n, t, x = f["tensor"].shape
        for key, allowed in (("x-coordinate", [(x,)]), ("t-coordinate", [(t + 1,), (t,)])):
            if key not in keys:
                raise UserInputError(f"{path}: '{key}' is missing; the file has {keys}, layout 'single-1d' "
                                     f"needs {LAYOUTS['single-1d']}")
            if f[key].shape not in allowed:
                raise UserInputError(f"{path}: '{key}' has shape {f[key].shape} but 'tensor' {(n, t, x)} needs "
                                     f"{allowed[0]}")
        return "single-1d"
    found = {k: (f[k].shape if isinstance(f[k], h5py.Dataset) else "group") for k in keys}
    expected = "; ".join(f"{name}: {text}" for name, text in LAYOUTS.items())
    raise UserInputError(f"{path} is in none of the PDEBench layouts this reader takes: it holds {found}. "
                         f"Expected one of: {expected}. (The compressible-flow files with 'density', "
                         f"'pressure', 'Vx' are not read here.)")


class PDEBenchTrajectories(StridedGrid):
    """A PDEBench file of time series as a ``TrajectoryDataset`` (layouts "single-1d" and "groups").

    ``load`` gives ``(first snapshot (n, *grid, C), snapshots (n, *grid, T * C))``, channels time-major
    (channel t * C + c = field c at time t, ``experiments.tasks.rollout``), ``n_fields`` = C.

    Args:
      path: the HDF5 file.
      test_ratio: the share of the file's samples in the test split (PDEBench's loaders: 0.1).
      time_stride: every time_stride-th recorded snapshot (PDEBench's ``reduced_resolution_t``).
    """

    volatile_keys: tuple[str, ...] = ()

    def __init__(self, path: str, test_ratio: float = 0.1, time_stride: int = 1):
        if not 0 < test_ratio < 1 or time_stride < 1:
            raise UserInputError(f"test_ratio must lie in (0, 1) and time_stride be >= 1 (got {test_ratio}, "
                                 f"{time_stride})")
        self.path, self.time_stride = str(path), int(time_stride)
        with open_hdf5(path) as f:
            self.layout = pdebench_layout(f, self.path)
            if self.layout == "groups":
                self.names, shape = _group_layout(f, self.path)
                n, t, self.native, c = len(self.names), shape[0], shape[1:-1], shape[-1]
                cut = int(n * (1 - test_ratio))          # FNODatasetMult: train first, test last
                train, test = range(0, cut), range(cut, n)
            elif self.layout == "single-1d":
                n, t, x = f["tensor"].shape
                self.native, c = (x,), 1
                cut = int(n * test_ratio)                # FNODatasetSingle: test first, train after
                train, test = range(cut, n), range(0, cut)
            else:
                raise UserInputError(f"{path} holds the Darcy layout ({LAYOUTS['darcy']}), a field pair, not "
                                     f"time series; use it with the operator task (data=pdebench picks it)")
        self.n_fields, self.n_snapshots = int(c), len(range(0, t, self.time_stride))
        self.blocks = SampleBlocks(self.path, train, test)

    def load(self, split: str, n: int, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(first snapshot (n, *grid, C), snapshots (n, *grid, T * C)) float32 of the split's n samples."""
        rows = self.blocks.take(split, n)
        with open_hdf5(self.path) as f:
            if self.layout == "single-1d":
                block = f["tensor"][rows.start:rows.stop, ::self.time_stride]       # (n, T, X)
                series = np.ascontiguousarray(np.swapaxes(block, 1, 2), np.float32)  # (n, X, T)
            else:
                series = np.empty((n, *self.native, self.n_snapshots * self.n_fields), np.float32)
                for i, row in enumerate(progress_bar(rows, n, f"reading {split}", progress, unit="sample")):
                    data = f[self.names[row]]["data"][::self.time_stride]            # (T, *spatial, C)
                    series[i] = np.moveaxis(data, 0, -2).reshape(*self.native, -1)   # (*spatial, T * C)
        return series[..., :self.n_fields], series


class PDEBenchDarcy(StridedGrid):
    """PDEBench's 2-D Darcy file as a ``FieldDataset``: nu (n, X, Y, 1) -> u (n, X, Y, 1), layout "darcy".

    Args:
      path: the HDF5 file (e.g. ``2D_DarcyFlow_beta1.0_Train.hdf5``).
      test_ratio: the share of the file's samples in the test split (the first ones, ``FNODatasetSingle``).
    """

    in_channels = 1
    out_channels = 1
    volatile_keys: tuple[str, ...] = ()

    def __init__(self, path: str, test_ratio: float = 0.1):
        if not 0 < test_ratio < 1:
            raise UserInputError(f"test_ratio must lie in (0, 1) (got {test_ratio})")
        self.path = str(path)
        with open_hdf5(path) as f:
            layout = pdebench_layout(f, self.path)
            if layout != "darcy":
                raise UserInputError(f"{path} holds the '{layout}' layout, not the Darcy one ({LAYOUTS['darcy']})")
            n, _, *native = f["tensor"].shape
        self.native = tuple(native)
        cut = int(n * test_ratio)
        self.blocks = SampleBlocks(self.path, range(cut, n), range(0, cut))

    def load(self, split: str, n: int, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(nu (n, X, Y, 1), u (n, X, Y, 1)) float32 of the split's n samples."""
        rows = self.blocks.take(split, n)
        with open_hdf5(self.path) as f:
            nu = f["nu"][rows.start:rows.stop]                 # (n, X, Y)
            u = f["tensor"][rows.start:rows.stop, 0]           # (n, X, Y)
        return nu[..., None].astype(np.float32), u[..., None].astype(np.float32)


def pdebench_task(path: str, n_train: int = 900, n_test: int = 100, n_val: int = 0,
                  train_resolution: Optional[int] = None, test_resolutions: Sequence[int] = (),
                  t_in: int = 10, t_out: Optional[int] = None, time_stride: int = 1,
                  normalizer: str = "pointwise", loss: str = "l2", test_ratio: float = 0.1) -> Any:
    """The task a PDEBench file asks for: ``OperatorTask`` for the Darcy layout, ``RolloutTask`` otherwise.

    Args:
      path: the HDF5 file; its layout is read from its contents (module docstring).
      n_train, n_test, n_val: samples of each split (the first of its block; module docstring).
      train_resolution: points along the first spatial axis to train at (None: the file's grid);
        test_resolutions: further ones evaluated (each a strided subgrid of the file's).
      t_in, t_out, time_stride: the rollout's window (time series only; t_out None: every remaining snapshot;
        PDEBench's FNO: t_in = 10) and the stride through the recorded snapshots.
      normalizer, loss: the operator task's (Darcy only).
      test_ratio: the share of samples in the test split (PDEBench: 0.1).
    """
    with open_hdf5(path) as f:
        layout = pdebench_layout(f, str(path))
    if layout == "darcy":
        pde: Any = PDEBenchDarcy(path, test_ratio=test_ratio)
    else:
        pde = PDEBenchTrajectories(path, test_ratio=test_ratio, time_stride=time_stride)
    resolution = pde.native[0] if train_resolution is None else int(train_resolution)
    common = dict(n_train=n_train, n_test=n_test, n_val=n_val, train_resolution=resolution,
                  test_resolutions=test_resolutions)
    if layout == "darcy":
        return OperatorTask(pde, normalizer=normalizer, loss=loss, **common)
    return RolloutTask(pde, t_in=t_in, t_out=t_out, **common)
