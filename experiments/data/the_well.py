"""The Well's published HDF5 files as the dataset of a rollout task (``data=the_well``).

The Well (Ohana, McCabe, Meyer, Morel, Agocs, Beneitez, Berger, Burkhart, Dalziel, Fielding, Fortunato,
Goldberg, Hirashima, Jiang, Kerswell, Maddu, Miller, Mukhopadhyay, Nixon, Shen, Watteaux, Blancard,
Rozet, Parker, Cranmer, Ho; NeurIPS 2024 Datasets and Benchmarks, arXiv 2412.00568). The file format
followed here is the one of PolymathicAI/the_well ``docs/data_format.md`` and its reader
``the_well/data/datasets.py`` (``WellDataset``): root attributes ``n_trajectories``, ``n_spatial_dims``;
a group ``dimensions`` (attribute ``spatial_dims``, datasets ``time`` (T,) and one coordinate per
spatial axis); groups ``boundary_conditions`` and ``scalars``; and the fields in ``t0_fields`` (scalars,
``(n_traj, T, *spatial)``), ``t1_fields`` (vectors, ``(n_traj, T, *spatial, D)``) and ``t2_fields``
(tensors, ``(n_traj, T, *spatial, D, D)``), each group listing its fields in the attribute
``field_names`` and each field carrying ``time_varying``, ``sample_varying`` and ``dim_varying``.

The task is The Well's benchmark problem (``docs/benchmarks.md``: the next snapshot from a short
history, ``n_steps_input`` = 4 in ``the_well/benchmark/configs/config.yaml``): a sample is a window of
``t_in + t_out`` consecutive steps of one trajectory, starting at any step, indexed as
``WellDataset`` does (file, trajectory, start step; ``raw_steps_to_possible_sample_t0s`` with stride 1);
the fields chosen by ``fields`` are the channels, a t1 field giving D of them (x, y, z order) and a t2
field D * D (row-major), the order of ``fields``, time-major (``experiments.tasks.rollout``).

Splits: a directory in The Well's layout (``<dataset>/data/{train,valid,test}/*.hdf5``; ``path`` may be
``<dataset>`` or ``<dataset>/data``) gives train / val / test from its folders. A single file or a
directory of files without those folders is split by trajectory: the last ``int(n * test_ratio)``
trajectories (in file order) are the test split, the others the training split; it has no
validation split. The n samples of a split are its first n windows after a shuffle by ``seed``
(``WellDataset``'s ``restrict_num_samples`` with ``restriction_seed``), so a larger n keeps the smaller
one's windows.

Reading is lazy: the dataset keeps the files' paths, shapes and its index of (file, trajectory, windows);
``load(split, n)`` opens each file once and reads, per chosen window, the slice ``field[trajectory,
start:start + window]`` of every field. ``RolloutTask.setup`` keeps the windows it loads in memory, so
exactly the ``n_train`` / ``n_test`` (/ ``n_val``) windows asked for are read, once; a whole file never is.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Optional, Sequence

import h5py
import numpy as np

from experiments.data import progress_bar
from experiments.data.pdebench import StridedGrid, open_hdf5
from experiments.errors import UserInputError
from experiments.tasks.rollout import RolloutTask

__all__ = ["FIELD_GROUPS", "SPLIT_FOLDERS", "WellTrajectories", "the_well_task"]

FIELD_GROUPS = ("t0_fields", "t1_fields", "t2_fields")  # tensor order 0, 1, 2
SPLIT_FOLDERS = {"train": "train", "val": "valid", "test": "test"}


@dataclasses.dataclass(frozen=True)
class _Field:
    group: str        # "t0_fields", "t1_fields" or "t2_fields"
    name: str
    components: int   # 1, D or D * D channels


@dataclasses.dataclass(frozen=True)
class _FileInfo:
    path: pathlib.Path
    n_trajectories: int
    n_steps: int
    spatial: tuple[int, ...]


def _split_folders(path: pathlib.Path) -> pathlib.Path | None:
    """The folder holding train/ (valid/, test/) in The Well's layout, or None."""
    for root in (path, path / "data"):
        if (root / "train").is_dir():
            return root
    return None


def _hdf5_files(folder: pathlib.Path) -> list[pathlib.Path]:
    files = sorted([*folder.glob("*.hdf5"), *folder.glob("*.h5")])
    if not files:
        raise UserInputError(f"{folder} holds no .hdf5 / .h5 files; point data.path at a file of The Well or a "
                             f"directory of them")
    return files


def _names(values: Any) -> list[str]:
    """A list-of-names attribute as str, whether h5py gives str or bytes (fixed-length strings)."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _attr(obj: h5py.HLObject, name: str, path: pathlib.Path) -> Any:
    if name not in obj.attrs:
        raise UserInputError(f"{path}: {obj.name} lacks the attribute '{name}' (it has {sorted(obj.attrs)}); "
                             f"is this a file of The Well?")
    return obj.attrs[name]


def _find_field(f: h5py.File, name: str, path: pathlib.Path) -> _Field:
    listed = {g: _names(f[g].attrs.get("field_names", [])) for g in FIELD_GROUPS if g in f}
    for order, group in enumerate(FIELD_GROUPS):
        if name in listed.get(group, []):
            d = int(_attr(f, "n_spatial_dims", path))
            return _Field(group, name, d ** order)
    raise UserInputError(f"{path}: no field '{name}'; the file has {listed}. Set data.fields to some of them "
                         f"(a t1 field gives one channel per spatial dimension)")


def _check_field(f: h5py.File, field: _Field, info: _FileInfo) -> None:
    ds = f[field.group][field.name]
    for flag in ("time_varying", "sample_varying"):
        if not bool(_attr(ds, flag, info.path)):
            raise UserInputError(f"{info.path}: field '{field.name}' has {flag}=False; a rollout reads fields "
                                 f"that vary in time and between trajectories. Drop it from data.fields")
    if not np.all(_attr(ds, "dim_varying", info.path)):
        raise UserInputError(f"{info.path}: field '{field.name}' is constant along some spatial axes "
                             f"(dim_varying={list(ds.attrs['dim_varying'])}); drop it from data.fields")
    d = len(info.spatial)
    order = FIELD_GROUPS.index(field.group)
    want = (info.n_trajectories, info.n_steps, *info.spatial, *([d] * order))
    if ds.shape != want:
        raise UserInputError(f"{info.path}: {field.group}/{field.name} has shape {ds.shape}, but n_trajectories, "
                             f"the time axis and the grid give {want}")


def _read_file_info(f: h5py.File, path: pathlib.Path) -> _FileInfo:
    if "dimensions" not in f:
        raise UserInputError(f"{path}: no group 'dimensions' (the file has {sorted(f.keys())}); is this a file "
                             f"of The Well?")
    dims = f["dimensions"]
    names = _names(_attr(dims, "spatial_dims", path))
    missing = [n for n in ("time", *names) if n not in dims]
    if missing:
        raise UserInputError(f"{path}: dimensions/ lacks {missing} (it has {sorted(dims.keys())})")
    spatial = tuple(int(dims[n].shape[-1]) for n in names)
    if int(_attr(f, "n_spatial_dims", path)) != len(spatial):
        raise UserInputError(f"{path}: n_spatial_dims={f.attrs['n_spatial_dims']} but dimensions.spatial_dims "
                             f"names {names}")
    return _FileInfo(path, int(_attr(f, "n_trajectories", path)), int(dims["time"].shape[-1]), spatial)


class WellTrajectories(StridedGrid):
    """Windows of ``window`` consecutive steps of The Well's trajectories as a ``TrajectoryDataset``.

    ``load`` gives ``(first snapshot (n, *grid, C), snapshots (n, *grid, window * C))`` float32, channels
    time-major, ``n_fields`` = C (module docstring).

    Args:
      path: a file of The Well, a directory of them, or a dataset directory with data/{train,valid,test}/.
      fields: the t0 / t1 / t2 fields to use, by name, in channel order (e.g. ["buoyancy", "velocity"]).
      window: steps per sample (the task's t_in + t_out).
      seed: the shuffle that picks each split's windows.
      test_ratio: the share of trajectories in the test split of a file or a flat directory.
    """

    volatile_keys: tuple[str, ...] = ()

    def __init__(self, path: str, fields: Sequence[str], window: int = 5, seed: int = 0, test_ratio: float = 0.1):
        if not fields:
            raise UserInputError("data.fields is empty; name the fields of the file to use (its t0_fields / "
                                 "t1_fields / t2_fields)")
        if window < 2 or not 0 < test_ratio < 1:
            raise UserInputError(f"the window needs >= 2 steps and test_ratio must lie in (0, 1) (got {window}, "
                                 f"{test_ratio})")
        self.path, self.window, self.seed = str(path), int(window), int(seed)
        root = pathlib.Path(path)
        if not root.exists():
            raise UserInputError(f"{root}: no such file or directory; check data.path")
        folders = _split_folders(root) if root.is_dir() else None
        if folders is not None:
            files = {s: _hdf5_files(folders / d) for s, d in SPLIT_FOLDERS.items() if (folders / d).is_dir()}
        else:
            files = {"all": [root] if root.is_file() else _hdf5_files(root)}
        self.native: tuple[int, ...] | None = None  # the grid and fields of the first file; all must match
        self.fields: list[_Field] = []
        infos = {s: [self._check(p, list(fields)) for p in paths] for s, paths in files.items()}
        self.n_fields, self.n_snapshots = sum(fl.components for fl in self.fields), self.window
        self.splits = self._trajectories(infos, test_ratio)

    def _check(self, path: pathlib.Path, names: list[str]) -> _FileInfo:
        """Check one file's layout against the fields (and the grid of the first file); its shapes."""
        with open_hdf5(path) as f:
            info = _read_file_info(f, path)
            fields = [_find_field(f, name, path) for name in names]
            for field in fields:
                _check_field(f, field, info)
        if self.native is None:
            self.native, self.fields = info.spatial, fields
        elif (info.spatial, fields) != (self.native, self.fields):
            raise UserInputError(f"{path} has the grid {info.spatial} and fields {fields}, the first file "
                                 f"{self.native} and {self.fields}; all files must match")
        if info.n_steps < self.window:
            raise UserInputError(f"{path} records {info.n_steps} steps, fewer than the window of {self.window} "
                                 f"(data.t_in + data.t_out); lower them")
        return info

    @staticmethod
    def _trajectories(infos: dict[str, list[_FileInfo]], test_ratio: float) -> dict[str, list[tuple]]:
        """Per split, its trajectories as (file path, trajectory, steps), in file order."""
        def of(items: list[_FileInfo]) -> list[tuple]:
            return [(i.path, t, i.n_steps) for i in items for t in range(i.n_trajectories)]

        if "all" not in infos:
            return {s: of(items) for s, items in infos.items()}
        trajs = of(infos["all"])
        cut = len(trajs) - int(len(trajs) * test_ratio)
        return {"train": trajs[:cut], "test": trajs[cut:]}

    def windows(self, split: str, n: int) -> list[tuple[pathlib.Path, int, int]]:
        """The split's n windows as (file, trajectory, first step), in the order ``load`` returns them."""
        if split not in self.splits:
            raise UserInputError(f"{self.path} has no {split} split (it has {sorted(self.splits)}); a file or a flat "
                                 f"directory has train and test only; use The Well's data/{{train,valid,test}}/ "
                                 f"folders for a validation split, or set data.n_val=0")
        trajs = [(p, t, steps - self.window + 1) for p, t, steps in self.splits[split]]
        offsets = np.cumsum([0] + [w for _, _, w in trajs])
        if not 1 <= n <= offsets[-1]:
            hint = "raise data.test_ratio" if not trajs else f"lower data.n_{split}"
            raise UserInputError(f"data.n_{split}={n} windows asked of the {split} split of {self.path}, which has "
                                 f"{offsets[-1]} ({len(trajs)} trajectories, window {self.window}); {hint}")
        order = np.arange(offsets[-1])
        np.random.default_rng(self.seed).shuffle(order)  # WellDataset._build_restriction_set
        chosen = []
        for index in order[:n]:
            k = int(np.searchsorted(offsets, index, side="right") - 1)
            chosen.append((trajs[k][0], trajs[k][1], int(index - offsets[k])))
        return chosen

    def load(self, split: str, n: int, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(first snapshot (n, *grid, C), snapshots (n, *grid, window * C)) float32 of the split's n windows."""
        chosen = self.windows(split, n)
        series = np.empty((n, *self.native, self.window * self.n_fields), np.float32)
        bar = iter(progress_bar(range(n), n, f"reading {split}", progress, unit="window"))
        for path in dict.fromkeys(p for p, _, _ in chosen):
            with open_hdf5(path) as f:
                for i, (p, traj, start) in enumerate(chosen):
                    if p != path:
                        continue
                    parts = [f[fl.group][fl.name][traj, start:start + self.window].reshape(
                        self.window, *self.native, fl.components) for fl in self.fields]  # (window, *grid, k)
                    window = np.concatenate(parts, axis=-1)                                # (window, *grid, C)
                    series[i] = np.moveaxis(window, 0, -2).reshape(*self.native, -1)       # (*grid, window * C)
                    next(bar, None)
        return series[..., :self.n_fields], series


def the_well_task(path: str, fields: Sequence[str], n_train: int = 1000, n_test: int = 100, n_val: int = 0,
                  t_in: int = 4, t_out: int = 1, train_resolution: Optional[int] = None,
                  test_resolutions: Sequence[int] = (), seed: int = 0, test_ratio: float = 0.1) -> RolloutTask:
    """The rollout task on The Well's files: ``t_in`` steps of ``fields`` -> the next ``t_out``, one at a time.

    Args:
      path, fields, seed, test_ratio: the dataset's (``WellTrajectories``); a sample is a window of
        t_in + t_out steps.
      n_train, n_test, n_val: windows of each split.
      t_in, t_out: steps given and steps rolled out (The Well's benchmark: 4 and 1).
      train_resolution: points along the first spatial axis to train at (None: the files' grid);
        test_resolutions: further ones evaluated (strided subgrids).
    """
    if t_in < 1 or t_out < 1:
        raise UserInputError(f"data.t_in and data.t_out must be >= 1 (got {t_in}, {t_out})")
    pde = WellTrajectories(path, fields, window=t_in + t_out, seed=seed, test_ratio=test_ratio)
    resolution = pde.native[0] if train_resolution is None else int(train_resolution)
    return RolloutTask(pde, n_train=n_train, n_test=n_test, n_val=n_val, t_in=t_in, t_out=t_out,
                       train_resolution=resolution, test_resolutions=test_resolutions)
