"""PDEBench's HDF5 layouts as ``data=pdebench`` (experiments.data.pdebench).

Files are written here in the published layouts (keys, shapes, dtypes, groups as pdebench/PDEBench's
``data_gen`` writers: ``Data_Merge.py``, ``burgers_multi_solution_Hydra.py``, ``gen_diff_react.py``) from
our own generated data (exact Burgers trajectories by Cole-Hopf, Darcy solves, Navier-Stokes vorticity),
read through the config option, and the arrays the task sees must equal the written ones exactly, in
the splits of PDEBench's loaders (``pdebench/models/fno/utils.py``).
"""
from __future__ import annotations


import h5py
import numpy as np
import pytest

from experiments.build import build_task
from experiments.config import compose
from experiments.data.pdebench import PDEBenchTrajectories, pdebench_task, strided_shape
from experiments.errors import UserInputError
from operators.pde.burgers import cole_hopf, grf1_periodic
from operators.pde.darcy import DarcyGenerator
from operators.pde.navier_stokes import NavierStokesGenerator

from published_layouts import CountingFile, one_training_step

N, X, T = 10, 16, 8  # samples, grid, snapshots; test_ratio 0.1: one test sample


def write_burgers_1d(path, n: int = N) -> np.ndarray:
    """A 1-D Burgers file as PDEBench's ``transform``: tensor (N, T, X), x-/t-coordinate (T + 1); the tensor."""
    u0 = grf1_periodic(np.random.default_rng(0), n, X)
    u0 -= u0.mean(-1, keepdims=True)
    dt = 0.01
    tensor = np.stack([cole_hopf(u0, 0.1, k * dt) for k in range(T)], axis=1).astype(np.float32)  # (N, T, X)
    with h5py.File(path, "w") as f:
        f.create_dataset("tensor", data=tensor)
        f.create_dataset("x-coordinate", data=((np.arange(X) + 0.5) / X).astype(np.float32))
        f.create_dataset("t-coordinate", data=(np.arange(T + 1) * dt).astype(np.float32))
        f.attrs["Nu"] = 0.1
    return tensor


def write_darcy(path) -> tuple[np.ndarray, np.ndarray]:
    """A 2-D Darcy file as PDEBench's ``Data_Merge`` (ReacDiff): tensor (N, 1, X, Y), nu (N, X, Y)."""
    data = DarcyGenerator(X).generate(np.random.default_rng(1), N, progress=False)
    with h5py.File(path, "w") as f:
        f.create_dataset("tensor", data=data["sol"][:, None])
        f.create_dataset("nu", data=data["coeff"])
        f.create_dataset("x-coordinate", data=((np.arange(X) + 0.5) / X).astype(np.float32))
        f.create_dataset("y-coordinate", data=((np.arange(X) + 0.5) / X).astype(np.float32))
        f.attrs["beta"] = 1.0
    return data["coeff"], data["sol"]


@pytest.fixture(scope="module")
def vorticity() -> np.ndarray:
    """(2N, s, s, T) float32 Navier-Stokes vorticity on the 8 x 8 grid, one snapshot per unit time."""
    gen = NavierStokesGenerator(resolution=16, store_resolution=8, nu=1e-3, t_final=T, dt=0.05)
    return gen.generate(np.random.default_rng(2), 2 * N, batch_size=2 * N, progress=False)["w"]


def write_groups(path, vorticity: np.ndarray) -> np.ndarray:
    """Groups '0000'... each with data (T, X, Y, 2) and grid/x, grid/y, grid/t, as ``gen_diff_react.py``."""
    data = np.stack([vorticity[:N], vorticity[N:]], axis=-1).transpose(0, 3, 1, 2, 4)  # (N, T, s, s, 2)
    s = data.shape[2]
    with h5py.File(path, "w") as f:
        for i in range(N):
            seed = str(i).zfill(4)
            f.create_dataset(f"{seed}/data", data=data[i], dtype="float32", compression="lzf")
            f.create_dataset(f"{seed}/grid/x", data=np.linspace(-1, 1, s), dtype="float32")
            f.create_dataset(f"{seed}/grid/y", data=np.linspace(-1, 1, s), dtype="float32")
            f.create_dataset(f"{seed}/grid/t", data=np.linspace(0, 5, T), dtype="float32")
            f[seed].attrs["config"] = "sim: {seed: %d}" % i
    return data


def test_burgers_1d_file_is_a_rollout_task_with_pdebench_splits(tmp_path):
    tensor = write_burgers_1d(tmp_path / "1D_Burgers_Sols_Nu0.1.hdf5")
    cfg = compose(["data=pdebench", f"data.path={tmp_path / '1D_Burgers_Sols_Nu0.1.hdf5'}", "data.n_train=6",
                   "data.n_test=1", "data.n_val=2", "data.t_in=3", "data.t_out=2", "data.test_resolutions=[8]"])
    task = build_task(cfg)
    assert type(task).__name__ == "RolloutTask" and task.pde.layout == "single-1d"
    task.setup(progress=False)
    series = tensor.transpose(0, 2, 1)                       # (N, X, T)
    # FNODatasetSingle: the first int(N * 0.1) samples are the test split, the rest train; val: the end.
    assert np.array_equal(task.train["x"], series[1:7, :, :3]) and np.array_equal(task.train["y"], series[1:7, :, 3:5])
    assert np.array_equal(task.evals["test_s16"]["x"], series[:1, :, :3])
    assert np.array_equal(task.evals["val_s16"]["y"], series[8:10, :, 3:5])
    assert np.array_equal(task.evals["test_s8"]["y"], series[:1, ::2, 3:5])
    one_training_step(task)


def test_darcy_file_is_an_operator_task(tmp_path):
    coeff, sol = write_darcy(tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5")
    cfg = compose(["data=pdebench", f"data.path={tmp_path / '2D_DarcyFlow_beta1.0_Train.hdf5'}", "data.n_train=8",
                   "data.n_test=1", "data.normalizer=none"])
    task = build_task(cfg)
    assert type(task).__name__ == "OperatorTask"
    task.setup(progress=False)
    assert np.array_equal(task.train["x"][..., 0], coeff[1:9]) and np.array_equal(task.train["y"][..., 0], sol[1:9])
    assert np.array_equal(task.evals["test_s16"]["y"][..., 0], sol[:1])
    one_training_step(task)


def test_grouped_file_is_a_rollout_of_all_its_fields(tmp_path, vorticity):
    data = write_groups(tmp_path / "2D_diff-react_NA_NA.h5", vorticity)
    task = pdebench_task(str(tmp_path / "2D_diff-react_NA_NA.h5"), n_train=3, n_test=1, t_in=2, t_out=3)
    task.setup(progress=False)
    assert task.pde.n_fields == 2 and task.model_settings() == {"in_channels": 4, "out_channels": 2, "spatial_dims": 2}
    # FNODatasetMult: sorted names, the first int(N * 0.9) train, the rest test; channels time-major.
    time_major = data.transpose(0, 2, 3, 1, 4).reshape(N, 8, 8, T * 2)   # channel t * 2 + c
    assert np.array_equal(task.train["x"], time_major[:3, ..., :4])
    assert np.array_equal(task.train["y"], time_major[:3, ..., 4:10])
    assert np.array_equal(task.evals["test_s8"]["x"], time_major[9:, ..., :4])
    assert np.array_equal(task.train["y"][0, ..., 1::2], data[0, 2:5, ..., 1].transpose(1, 2, 0))  # field 1


def test_reading_is_lazy_only_the_requested_samples(tmp_path, monkeypatch, vorticity):
    write_burgers_1d(tmp_path / "b.hdf5", n=400)
    write_groups(tmp_path / "g.h5", vorticity)
    real_file = h5py.File
    monkeypatch.setattr(h5py, "File", lambda path, mode="r", **kw: real_file(CountingFile(path, "rb"), mode, **kw))
    for name, n, sample_bytes in (("b.hdf5", 2, T * X * 4), ("g.h5", 1, T * 8 * 8 * 2 * 4)):
        pde = PDEBenchTrajectories(str(tmp_path / name))
        assert not any(isinstance(v, np.ndarray) for v in vars(pde).values())   # holds no data
        CountingFile.read_bytes = 0
        _, series = pde.load("train", n, progress=False)
        assert series.shape[0] == n
        total = (tmp_path / name).stat().st_size
        assert CountingFile.read_bytes < n * sample_bytes + 40_000 < total / 2, (name, CountingFile.read_bytes)


def _write(path, **arrays):
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)


BAD_FILES = {
    "no t-coordinate": (dict(tensor=np.zeros((4, 3, 16), "f4"), **{"x-coordinate": np.zeros(16, "f4")}),
                        r"'t-coordinate' is missing; the file has \['tensor', 'x-coordinate'\]"),
    "x-coordinate shape": (dict(tensor=np.zeros((4, 3, 16), "f4"), **{"x-coordinate": np.zeros(15, "f4"),
                                                                      "t-coordinate": np.zeros(4, "f4")}),
                           r"'x-coordinate' has shape \(15,\) but 'tensor' \(4, 3, 16\) needs \(16,\)"),
    "darcy shapes": (dict(tensor=np.zeros((4, 1, 8, 8), "f4"), nu=np.zeros((4, 8, 9), "f4")),
                     r"'tensor' has shape \(4, 1, 8, 8\) and 'nu' \(4, 8, 9\); the Darcy layout needs"),
    "CFD layout": (dict(density=np.zeros((4, 3, 16), "f4"), Vx=np.zeros((4, 3, 16), "f4")),
                   r"none of the PDEBench layouts .* holds \{'Vx': \(4, 3, 16\), 'density': \(4, 3, 16\)\}\. "
                   r"Expected one of: single-1d: 'tensor' \(N, T, X\)"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_file_of_another_layout_names_what_it_found_and_expected(tmp_path, case):
    arrays, message = BAD_FILES[case]
    _write(tmp_path / "bad.hdf5", **arrays)
    with pytest.raises(UserInputError, match=message):
        pdebench_task(str(tmp_path / "bad.hdf5"))


def test_group_and_file_errors_name_the_problem(tmp_path, vorticity):
    path = tmp_path / "g.h5"
    write_groups(path, vorticity)
    with h5py.File(path, "a") as f:
        del f["0000/grid/t"]
    with pytest.raises(UserInputError, match=r"0000/grid/t is missing \(found \['x', 'y'\]\)"):
        PDEBenchTrajectories(str(path))
    write_groups(path, vorticity)
    with h5py.File(path, "a") as f:
        del f["0004/data"]
        f["0004/data"] = np.zeros((T, 8, 8, 1), "f4")
    with pytest.raises(UserInputError, match=r"0004/data has shape \(8, 8, 8, 1\) but 0000/data has \(8, 8, 8, 2\)"):
        PDEBenchTrajectories(str(path))
    write_burgers_1d(tmp_path / "b.hdf5")
    blob = (tmp_path / "b.hdf5").read_bytes()
    (tmp_path / "cut.hdf5").write_bytes(blob[:len(blob) // 3])
    with pytest.raises(UserInputError, match=r"cut\.hdf5 cannot be read as an HDF5 file \(corrupt or truncated\?\)"):
        pdebench_task(str(tmp_path / "cut.hdf5"))
    with pytest.raises(UserInputError, match=r"nothere\.hdf5: no such file; check data\.path"):
        pdebench_task(str(tmp_path / "nothere.hdf5"))


def test_split_sizes_and_resolutions_are_checked(tmp_path):
    write_burgers_1d(tmp_path / "b.hdf5")
    with pytest.raises(UserInputError, match=r"data\.n_train=10 samples asked of the train split .* which has 9"):
        pdebench_task(str(tmp_path / "b.hdf5"), n_train=10, n_test=1, t_in=2).setup(progress=False)
    with pytest.raises(UserInputError, match=r"data\.n_train \+ data\.n_val exceed the 9 training samples"):
        pdebench_task(str(tmp_path / "b.hdf5"), n_train=5, n_test=1, n_val=5, t_in=2).setup(progress=False)
    with pytest.raises(UserInputError, match=r"resolution 5 cannot be taken .* \[16, 8, 4, 2, 1\]"):
        pdebench_task(str(tmp_path / "b.hdf5"), train_resolution=5, t_in=2)
    assert strided_shape((8, 24), 4) == ((4, 12), 2)     # every axis strided alike
    with pytest.raises(ValueError, match=r"\(8, 12\) .* are \[8, 4, 2\]"):
        strided_shape((8, 12), 1)
