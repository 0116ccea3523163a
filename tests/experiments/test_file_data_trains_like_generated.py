"""Every reader of published files trains exactly like the generated data it was written from (issue 16).

For each file option (``data=darcy_mat`` in v5 and v7.3, ``burgers_mat``, ``navier_stokes_mat``, ``arrays``,
``pdebench`` as Darcy and as per-sample groups, ``the_well``, ``listops`` on the LRA release's TSV files,
``sequence_arrays``), the arrays a generated option's task loads are written into a file in the published
layout, ordered so that the reader's own split takes the same train and test examples in the same order:

* the FNO scripts (zongyi-li/fourier_neural_operator): ``fourier_2d.py`` the first rows of the train and
  the test file, ``fourier_1d.py`` train = the first rows and test = the LAST rows of one file,
  ``fourier_2d_time.py`` the LAST rows of the test file;
* a user's arrays in one file (``experiments.data.arrays``): train the first rows, test the last;
* PDEBench (pdebench/PDEBench, ``pdebench/models/fno/utils.py``): ``FNODatasetSingle`` tests on the first
  ``int(N * 0.1)`` samples, ``FNODatasetMult`` on the groups after the first ``int(N * 0.9)``;
* The Well (PolymathicAI/the_well, ``the_well/data/datasets.py``): every window of t_in + t_out steps of a
  split's trajectories, shuffled by ``np.random.default_rng(seed)`` (``restrict_num_samples``); with a
  window as long as the trajectory, one window per trajectory, so the file holds the trajectories in the
  inverse of that shuffle;
* the LRA release's ``basic_{train,val,test}.tsv`` and ``.npz`` files per split: the whole file, in order.

Rows a reader must not take are NaN: a reader that takes them trains on NaN and the comparison fails.
Both runs go through ``experiments.train.run`` with a tiny model and must agree on every evaluation
metric to 1e-6 (the same model initialisation, batches and arithmetic on the same arrays).

A 1-D PDEBench time series ('tensor' (N, T, X)) has no generated counterpart (the Burgers generator gives
u0 -> u(., 1) pairs, not trajectories), so PDEBench's rollout is shown with the grouped layout.
"""
from __future__ import annotations

import math
import pathlib
from typing import Callable

import numpy as np
import pytest

from experiments.build import build_task
from experiments.config import compose
from experiments.data.listops import PAD
from experiments.train import run

from published_layouts import (velocity_of, write_listops_release, write_mat, write_pdebench_darcy,
                               write_pdebench_groups, write_well_file)

TRAINER = ["trainer.batch_size=4", "trainer.max_steps=3", "trainer.devices=1", "trainer.progress=false",
           "trainer.plots=false"]
FNO_2D = ["model.modes=[3,3]", "model.width=4", "model.n_layers=1", "model.projection_channels=4", *TRAINER]
FNO_1D = ["model.modes=[3]", "model.width=4", "model.n_layers=1", "model.projection_channels=4", *TRAINER]
LONGCONV = ["model=longconv", "model.vocab_size=18", "model.d_output=10", "model.d_model=8", "model.n_layers=1",
            "model.l_max=80", *TRAINER]

# The task settings a generated option and its file counterpart share.
DARCY_S9 = ["data.n_train=8", "data.n_test=4", "data.train_resolution=9", "data.test_resolutions=[17]", *FNO_2D]
DARCY_S17 = ["data.n_train=8", "data.n_test=4", "data.train_resolution=17", "data.test_resolutions=[]", *FNO_2D]
BURGERS = ["data.n_train=6", "data.n_test=3", "data.train_resolution=16", "data.test_resolutions=[32]",
           "data.normalizer=pointwise", *FNO_1D]  # u(., 1) ~ 1e-2: unnormalised, 3 steps leave rel_l2 >> 1
ROLLOUT = ["data.n_train=5", "data.n_test=3", "data.t_in=2", "data.t_out=2", "data.train_resolution=8",
           "data.test_resolutions=[16]", *FNO_2D]
SEQUENCES = LONGCONV  # ListOps (18 tokens, 10 classes), padded to max_length 80

# Generated options: (overrides, the cache_dir key), each with the shared task settings above.
GENERATORS = {
    "darcy_s9": (["data=darcy", "data.pde.resolution=17", *DARCY_S9], "data.pde.cache_dir"),
    "darcy_s17": (["data=darcy", "data.pde.resolution=17", *DARCY_S17], "data.pde.cache_dir"),
    "burgers": (["data=burgers", "data.pde.resolution=32", "data.pde.n_steps=10", *BURGERS], "data.pde.cache_dir"),
    "navier_stokes": (["data=navier_stokes", "data.pde.resolution=16", "data.pde.store_resolution=16",
                       "data.pde.t_final=4", "data.pde.dt=1e-2", *ROLLOUT], "data.pde.cache_dir"),
    "listops": (["data=listops", "data.dataset.n_train=24", "data.dataset.n_val=6", "data.dataset.n_test=6",
                 "data.dataset.min_length=10", "data.dataset.max_length=80", "data.dataset.seed=2", *SEQUENCES],
                "data.dataset.cache_dir"),
}


class Generated:
    """Each generated option's splits (as its task loads them) and its run, made once per module, on first use."""

    def __init__(self, root: pathlib.Path):
        self.root, self._data, self._runs = root, {}, {}

    def overrides(self, option: str) -> list[str]:
        settings, cache_key = GENERATORS[option]
        return [*settings, f"{cache_key}={self.root / 'cache'}"]

    def data(self, option: str) -> dict:
        """{split: (inputs, outputs)} of a field or trajectory dataset; the splits' arrays of a sequence one."""
        if option not in self._data:
            task = build_task(compose(self.overrides(option)))
            if hasattr(task, "dataset"):
                self._data[option] = task.dataset.load(progress=False)
            else:
                self._data[option] = {s: task.pde.load(s, n, progress=False)
                                      for s, n in (("train", task.n_train), ("test", task.n_test))}
        return self._data[option]

    def results(self, option: str) -> dict:
        if option not in self._runs:
            self.data(option)  # generated and cached before the run reads it
            self._runs[option] = train(self.overrides(option), self.root / option)
        return self._runs[option]


def train(overrides: list[str], run_dir: pathlib.Path) -> dict:
    """The results of ``python -m experiments.train <overrides>`` run in ``run_dir``."""
    return run(compose(overrides), run_dir)


def rows(*blocks: np.ndarray | int) -> np.ndarray:
    """The blocks stacked along the first axis; an int n stands for n rows of NaN (rows the reader must not
    take), shaped as the arrays' rows."""
    like = next(b for b in blocks if not isinstance(b, int))
    return np.concatenate([np.full((b, *like.shape[1:]), np.nan, like.dtype) if isinstance(b, int) else b
                           for b in blocks])


# -- the files, each written from a generated option's splits; returns the file option's overrides ----------
def darcy_mat(version: str) -> Callable:
    def write(d: pathlib.Path, data: dict) -> list[str]:
        files = {}
        for split, name in (("train", "smooth1"), ("test", "smooth2")):  # fourier_2d.py: the first rows of each
            a, u = (x[..., 0] for x in data[split])                          # (n, 17, 17)
            files[split] = write_mat(d / f"piececonst_r17_N12_{name}.mat", {"coeff": rows(a, 4), "sol": rows(u, 4)},
                                     version)
        return ["data=darcy_mat", f"data.pde.train_path={files['train']}", f"data.pde.test_path={files['test']}"]
    return write


def burgers_mat(d: pathlib.Path, data: dict) -> list[str]:
    (a_tr, u_tr), (a_te, u_te) = ((x[..., 0] for x in data[s]) for s in ("train", "test"))  # (n, 32)
    path = write_mat(d / "burgers_data_R10.mat", {"a": rows(a_tr, 2, a_te), "u": rows(u_tr, 2, u_te)}, "5")
    return ["data=burgers_mat", f"data.pde.train_path={path}"]  # one file: train first, test LAST


def navier_stokes_mat(d: pathlib.Path, data: dict) -> list[str]:
    (w0_tr, w_tr), (w0_te, w_te) = data["train"], data["test"]   # (n, 16, 16, 1), (n, 16, 16, T)
    t = np.arange(1.0, w_tr.shape[-1] + 1)
    train = write_mat(d / "ns_1.mat", {"a": rows(w0_tr[..., 0], 2), "u": rows(w_tr, 2), "t": t}, "7.3")
    test = write_mat(d / "ns_2.mat", {"a": rows(2, w0_te[..., 0]), "u": rows(2, w_te), "t": t}, "7.3")  # LAST rows
    return ["data=navier_stokes_mat", f"data.pde.train_path={train}", f"data.pde.test_path={test}"]


def arrays(d: pathlib.Path, data: dict) -> list[str]:
    (a_tr, u_tr), (a_te, u_te) = data["train"], data["test"]    # (n, 17, 17, 1), channels last
    np.savez(d / "fields.npz", x=rows(a_tr, 3, a_te), y=rows(u_tr, 3, u_te))
    return ["data=arrays", f"data.pde.train_path={d / 'fields.npz'}"]  # one file: train first, test last


def pdebench_darcy(d: pathlib.Path, data: dict) -> list[str]:
    (a_tr, u_tr), (a_te, u_te) = ((x[..., 0] for x in data[s]) for s in ("train", "test"))
    rest = 10 * len(a_te) - len(a_te) - len(a_tr)  # N = 10 n_test: int(N * 0.1) test samples first, then train
    write_pdebench_darcy(d / "2D_DarcyFlow_beta1.0_Train.hdf5", rows(a_te, a_tr, rest), rows(u_te, u_tr, rest))
    return ["data=pdebench", f"data.path={d / '2D_DarcyFlow_beta1.0_Train.hdf5'}"]


def time_first(series: np.ndarray) -> np.ndarray:
    """(n, s, s, T) snapshots, time last -> (n, T, s, s)."""
    return series.transpose(0, 3, 1, 2)


def pdebench_groups(d: pathlib.Path, data: dict) -> list[str]:
    w_tr, w_te = time_first(data["train"][1]), time_first(data["test"][1])   # (n, T, s, s)
    n = 10 * len(w_te)                       # the groups after the first int(N * 0.9) are the test split
    assert int(n * 0.9) == n - len(w_te)
    groups = rows(w_tr, n - len(w_te) - len(w_tr), w_te)[..., None]       # (N, T, s, s, 1): one field
    write_pdebench_groups(d / "2D_ns_NA_NA.h5", groups)
    return ["data=pdebench", f"data.path={d / '2D_ns_NA_NA.h5'}"]


def well_shuffled(trajectories: np.ndarray, seed: int = 0) -> np.ndarray:
    """Trajectories placed so that The Well's shuffle of the one-window-per-trajectory index gives them
    back in order: window k is trajectory order[k] of the file."""
    order = np.arange(len(trajectories))
    np.random.default_rng(seed).shuffle(order)
    placed = np.empty_like(trajectories)
    placed[order] = trajectories
    return placed


def the_well(d: pathlib.Path, data: dict) -> list[str]:
    root = d / "ns_test" / "data"
    for split in ("train", "test"):
        w = well_shuffled(time_first(data[split][1]))                        # (n_traj, T, s, s)
        (root / split).mkdir(parents=True)
        write_well_file(root / split / "ns_test_0.hdf5", w, velocity_of(w))
    return ["data=the_well", f"data.path={root.parent}", "data.fields=[vorticity]"]


def listops_tsv(d: pathlib.Path, data: dict) -> list[str]:
    write_listops_release(d / "listops-1000", data)
    return ["data=listops", f"data.dataset.path={d / 'listops-1000'}", "data.dataset.n_train=null",
            "data.dataset.n_val=null", "data.dataset.n_test=null", "data.dataset.max_length=80"]


def sequence_arrays(d: pathlib.Path, data: dict) -> list[str]:
    for split, arrays_ in data.items():
        x = arrays_["inputs"]
        np.savez(d / f"{split}.npz", inputs=x, labels=arrays_["label"], lengths=(x != PAD).sum(1))
    return ["data=sequence_arrays", *(f"data.dataset.{s}_path={d / f'{s}.npz'}" for s in ("train", "val", "test")),
            "data.dataset.vocab_size=18", "data.dataset.n_classes=10"]


CASES = {  # file option -> (the generated option it was written from, its writer, the task settings)
    "darcy_mat_v5": ("darcy_s9", darcy_mat("5"), DARCY_S9),
    "darcy_mat_v7.3": ("darcy_s9", darcy_mat("7.3"), DARCY_S9),
    "burgers_mat": ("burgers", burgers_mat, BURGERS),
    "navier_stokes_mat": ("navier_stokes", navier_stokes_mat, ROLLOUT),
    "arrays": ("darcy_s9", arrays, DARCY_S9),
    "pdebench_darcy": ("darcy_s17", pdebench_darcy, DARCY_S17),
    "pdebench_groups": ("navier_stokes", pdebench_groups, ROLLOUT),
    "the_well": ("navier_stokes", the_well, ROLLOUT),
    "listops_tsv": ("listops", listops_tsv, SEQUENCES),
    "sequence_arrays": ("listops", sequence_arrays, SEQUENCES),
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Generated:
    return Generated(tmp_path_factory.mktemp("generated"))


@pytest.mark.slow  # two short runs of the runner per case (the generated one shared), mostly compilation
@pytest.mark.parametrize("case", list(CASES))
def test_training_on_the_file_equals_training_on_the_generated_data(case, generated, tmp_path):
    option, write, settings = CASES[case]
    files = tmp_path / "files"
    files.mkdir()
    from_files = train([*write(files, generated.data(option)), *settings], tmp_path / "run")
    want, got = generated.results(option), from_files
    assert sorted(got["metrics"]) == sorted(want["metrics"]), (got["metrics"], want["metrics"])
    for split, metrics in want["metrics"].items():
        assert sorted(got["metrics"][split]) == sorted(metrics), split
        for name, value in metrics.items():
            assert math.isfinite(value) and abs(got["metrics"][split][name] - value) <= 1e-6, (split, name)
    objective = want["objective"]
    low, high = (0.0, 1.0) if objective["metric"] == "accuracy" else (1e-9, 2.0)
    assert objective["metric"] == got["objective"]["metric"] and low <= objective["value"] <= high
    assert abs(got["objective"]["value"] - objective["value"]) <= 1e-6
