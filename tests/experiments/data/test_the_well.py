"""The Well's HDF5 files as ``data=the_well`` (experiments.data.the_well).

Files are written here in the published layout (PolymathicAI/the_well ``docs/data_format.md``: root
attributes, ``dimensions``, ``boundary_conditions``, ``scalars``, ``t0_fields`` / ``t1_fields`` /
``t2_fields`` with their attributes, arrays (n_traj, n_steps, *spatial[, D])) from our own Navier-Stokes
vorticity and the velocity it induces, read through the config option; the windows the task sees must
equal the written arrays exactly, chosen as ``WellDataset`` indexes and restricts them
(``the_well/data/datasets.py``).
"""
from __future__ import annotations


import h5py
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.build import build_task
from experiments.config import compose
from experiments.data.the_well import WellTrajectories, the_well_task
from experiments.errors import UserInputError
from operators.pde.navier_stokes import NavierStokesGenerator

from published_layouts import CountingFile, one_training_step, velocity_of, write_well_file

S, T, N_TRAJ = 8, 6, 2  # grid, steps per trajectory, trajectories per file


@pytest.fixture(scope="module")
def flows() -> tuple[np.ndarray, np.ndarray]:
    """Six trajectories: vorticity (6, T, s, s) and velocity (6, T, s, s, 2), float32."""
    gen = NavierStokesGenerator(resolution=16, store_resolution=S, nu=1e-3, t_final=T, dt=0.05)
    w = np.moveaxis(gen.generate(np.random.default_rng(3), 3 * N_TRAJ, batch_size=6, progress=False)["w"], -1, 1)
    return w, velocity_of(w)


@pytest.fixture(scope="module")
def well_dir(tmp_path_factory, flows):
    """A dataset directory in The Well's layout: data/train (2 files), data/valid, data/test (1 file each)."""
    w, u = flows
    root = tmp_path_factory.mktemp("ns_test")
    for split, files in (("train", [(0, 2), (2, 4)]), ("valid", [(4, 5)]), ("test", [(5, 6)])):
        (root / "data" / split).mkdir(parents=True)
        for k, (lo, hi) in enumerate(files):
            write_well_file(root / "data" / split / f"ns_test_{k}.hdf5", w[lo:hi], u[lo:hi])
    return root


def expected_windows(trajectories: list[int], window: int, n: int, seed: int) -> list[tuple[int, int]]:
    """The Well's choice of n windows, transcribed: every (trajectory, start) in file / trajectory / time
    order (``raw_steps_to_possible_sample_t0s``, stride 1), the indices shuffled by ``default_rng(seed)``."""
    every = [(traj, start) for traj in trajectories for start in range(T - window + 1)]
    order = np.arange(len(every))
    np.random.default_rng(seed).shuffle(order)
    return [every[i] for i in order[:n]]


def as_channels(w: np.ndarray, u: np.ndarray, traj: int, start: int, steps: int) -> np.ndarray:
    """(s, s, steps * 3): vorticity, velocity x, velocity y per step, time-major."""
    fields = np.concatenate([w[traj, start:start + steps, ..., None], u[traj, start:start + steps]], axis=-1)
    return np.moveaxis(fields, 0, -2).reshape(S, S, -1)


def test_the_well_directory_feeds_the_rollout_task_exactly(well_dir, flows):
    w, u = flows
    cfg = compose(["data=the_well", f"data.path={well_dir}", "data.fields=[vorticity,velocity]", "data.n_train=7",
                   "data.n_test=3", "data.n_val=2", "data.t_in=2", "data.t_out=2", "data.test_resolutions=[4]"])
    task = build_task(cfg)
    task.setup(progress=False)
    assert task.pde.n_fields == 3 and task.model_settings() == {"in_channels": 6, "out_channels": 3, "spatial_dims": 2}
    for split, trajectories, n in (("train", [0, 1, 2, 3], 7), ("test_s8", [5], 3), ("val_s8", [4], 2)):
        arrays = task.train if split == "train" else task.evals[split]
        for i, (traj, start) in enumerate(expected_windows(trajectories, 4, n, seed=0)):
            assert np.array_equal(arrays["x"][i], as_channels(w, u, traj, start, 2)), (split, i)
            assert np.array_equal(arrays["y"][i], as_channels(w, u, traj, start + 2, 2)), (split, i)
    assert np.array_equal(task.evals["test_s4"]["y"], task.evals["test_s8"]["y"][:, ::2, ::2])
    one_training_step(task)


def test_rollout_of_several_fields_predicts_and_scores_whole_steps(well_dir):
    """The rollout feeds each predicted step (all C fields) back, and every per-step error is over the C
    fields of that step: against a Python loop for a model that repeats the last step, and a model that
    adds 1 to every field (its k-th prediction is the last input step + k)."""
    task = the_well_task(str(well_dir), ["vorticity", "velocity"], n_train=2, n_test=3, t_in=2, t_out=2)
    task.setup(progress=False)
    x, y = task.evals["test_s8"]["x"], task.evals["test_s8"]["y"]
    metrics = task.metrics(lambda a: a[..., -3:], {"x": jnp.asarray(x), "y": jnp.asarray(y)}, "test_s8")
    for k in range(2):
        step = y[..., 3 * k:3 * k + 3]                                   # the 3 fields of step t_in + k + 1
        naive = [np.linalg.norm(step[b] - x[b, ..., -3:]) / np.linalg.norm(step[b]) for b in range(3)]
        np.testing.assert_allclose(np.asarray(metrics[f"rel_l2_t{3 + k}"].total), naive, rtol=1e-5)
    pred = np.asarray(task.predict(lambda a: a[..., -3:] + 1, {"x": jnp.asarray(x)}))
    np.testing.assert_allclose(pred, np.concatenate([x[..., -3:] + 1, x[..., -3:] + 2], axis=-1), rtol=1e-6)


def test_a_single_file_is_split_by_trajectory(tmp_path, flows):
    w, u = flows
    write_well_file(tmp_path / "one.hdf5", w, u)                       # 6 trajectories: the last is the test split
    with h5py.File(tmp_path / "one.hdf5", "a") as f:                    # names as fixed-length byte strings
        f["dimensions"].attrs["spatial_dims"] = np.array([b"x", b"y"])
        f["t1_fields"].attrs["field_names"] = np.array([b"velocity"])
    pde = WellTrajectories(str(tmp_path / "one.hdf5"), ["velocity"], window=3, test_ratio=0.2)
    assert pde.n_fields == 2 and [t for _, t, _ in pde.splits["test"]] == [5]
    _, series = pde.load("test", 4, progress=False)
    for i, (traj, start) in enumerate(expected_windows([5], 3, 4, seed=0)):
        want = np.moveaxis(u[traj, start:start + 3], 0, -2).reshape(S, S, 6)
        assert np.array_equal(series[i], want)
    with pytest.raises(UserInputError, match=r"has no val split .* data/\{train,valid,test\}/ folders"):
        pde.load("val", 1, progress=False)


def test_reading_is_lazy_one_window_at_a_time(tmp_path, monkeypatch, flows):
    w, u = flows
    big_w, big_u = np.tile(w, (4, 4, 1, 1)), np.tile(u, (4, 4, 1, 1, 1))  # 24 trajectories of 24 steps
    write_well_file(tmp_path / "big.hdf5", big_w, big_u)
    real_file = h5py.File
    monkeypatch.setattr(h5py, "File", lambda path, mode="r", **kw: real_file(CountingFile(path, "rb"), mode, **kw))
    pde = WellTrajectories(str(tmp_path / "big.hdf5"), ["vorticity", "velocity"], window=3)
    assert not any(isinstance(v, np.ndarray) for v in vars(pde).values())   # holds no data
    CountingFile.read_bytes = 0
    pde.load("train", 2, progress=False)
    window_bytes = 3 * S * S * 3 * 4
    assert CountingFile.read_bytes < 2 * window_bytes + 40_000 < (tmp_path / "big.hdf5").stat().st_size / 4


def test_bad_input_names_the_problem(tmp_path, flows):
    w, u = flows
    path = tmp_path / "f.hdf5"
    write_well_file(path, w, u)
    with pytest.raises(UserInputError, match=r"no field 'pressure'; the file has \{'t0_fields': \['vorticity'\], "
                                             r"'t1_fields': \['velocity'\], 't2_fields': \[\]\}"):
        the_well_task(str(path), ["vorticity", "pressure"])
    with pytest.raises(UserInputError, match=r"records 6 steps, fewer than the window of 8"):
        the_well_task(str(path), ["vorticity"], t_in=4, t_out=4)
    with pytest.raises(UserInputError, match=r"data\.n_train=999 windows asked of the train split"):
        the_well_task(str(path), ["vorticity"], n_train=999, n_test=1).setup(progress=False)
    with h5py.File(path, "a") as f:
        f["t0_fields/vorticity"].attrs["time_varying"] = False
    with pytest.raises(UserInputError, match=r"field 'vorticity' has time_varying=False"):
        the_well_task(str(path), ["vorticity"])
    write_well_file(path, w, u[..., :1])                                # a 2-D vector field with 1 component
    with pytest.raises(UserInputError, match=r"t1_fields/velocity has shape \(6, 6, 8, 8, 1\), but n_trajectories, "
                                             r"the time axis and the grid give \(6, 6, 8, 8, 2\)"):
        the_well_task(str(path), ["velocity"])
    with h5py.File(path, "a") as f:
        del f.attrs["n_trajectories"]
    with pytest.raises(UserInputError, match=r"lacks the attribute 'n_trajectories' \(it has \[.*'dataset_name'"):
        the_well_task(str(path), ["vorticity"])
    write_well_file(path, w, u)
    blob = path.read_bytes()
    (tmp_path / "cut.hdf5").write_bytes(blob[:len(blob) // 2])
    with pytest.raises(UserInputError, match=r"cut\.hdf5 cannot be read as an HDF5 file \(corrupt or truncated\?\)"):
        the_well_task(str(tmp_path / "cut.hdf5"), ["vorticity"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match=r"empty holds no \.hdf5 / \.h5 files"):
        the_well_task(str(tmp_path / "empty"), ["vorticity"])
    with pytest.raises(UserInputError, match=r"data\.fields is empty"):
        the_well_task(str(path), [])
