"""A user's own fields (experiments.data.arrays.ArrayFields, data=arrays): every file kind and layout gives
the arrays that were written, channels last; channels and spatial axes come from the file; bad input is a
clear error. The oracle is the array written: x and y (n, *grid, c) transposed into the declared layout
before saving, so a layout that is read wrongly gives other numbers."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.io

from experiments.data.arrays import ArrayFields, grid_stride, grid_strides
from experiments.errors import UserInputError
from experiments.tasks.pde import OperatorTask

RNG = np.random.default_rng(0)
X = RNG.normal(size=(7, 5, 3, 2)).astype(np.float32)  # (n, *grid, c): grid (5, 3), 2 input channels
Y = RNG.normal(size=(7, 5, 3, 1)).astype(np.float32)  # one output channel


def in_layout(a: np.ndarray, channels: str) -> np.ndarray:
    """(n, *grid, c) -> the array as a file in ``channels`` layout holds it."""
    return {"last": a, "first": np.moveaxis(a, -1, 1), "none": a[..., 0]}[channels]


def test_npz_one_file_split_by_index(tmp_path):
    path = tmp_path / "fields.npz"
    np.savez(path, inputs=X, outputs=Y)
    data = ArrayFields(str(path), x_key="inputs", y_key="outputs")
    assert (data.in_channels, data.out_channels, data.grid) == (2, 1, (5, 3))
    x_tr, y_tr = data.load("train", 4)
    x_va, y_va = data.load("val", 1)  # right after the training rows
    x_te, y_te = data.load("test", 2)  # the last rows
    for got, want in [(x_tr, X[:4]), (y_tr, Y[:4]), (x_va, X[4:5]), (y_va, Y[4:5]), (x_te, X[5:]), (y_te, Y[5:])]:
        assert got.dtype == np.float32 and np.array_equal(got, want)


def test_npy_pairs_channels_first_from_separate_files(tmp_path):
    paths = {}
    for split, rows in (("train", slice(0, 4)), ("test", slice(4, 7))):
        for name, a in (("x", X), ("y", Y)):
            paths[split, name] = str(tmp_path / f"{name}_{split}.npy")
            np.save(paths[split, name], in_layout(a[rows], "first"))
    data = ArrayFields([paths["train", "x"], paths["train", "y"]], [paths["test", "x"], paths["test", "y"]],
                       channels="first")
    assert (data.in_channels, data.out_channels, data.grid) == (2, 1, (5, 3))
    for split, rows in (("train", slice(0, 4)), ("test", slice(4, 6))):  # a separate file: its first rows
        x, y = data.load(split, rows.stop - rows.start)
        assert np.array_equal(x, X[rows]) and np.array_equal(y, Y[rows])


def test_h5_dataset_paths_without_a_channel_axis(tmp_path):
    path = tmp_path / "fields.h5"
    with h5py.File(path, "w") as f:
        f["inputs/a"] = in_layout(X[..., :1], "none")
        f["outputs/u"] = in_layout(Y, "none")
    data = ArrayFields(str(path), x_key="inputs/a", y_key="outputs/u", channels="none")
    assert (data.in_channels, data.out_channels, data.grid) == (1, 1, (5, 3))
    x, y = data.load("test", 3)
    assert np.array_equal(x, X[4:, ..., :1]) and np.array_equal(y, Y[4:])


def test_mat_variables_and_the_model_settings_the_task_takes_from_them(tmp_path):
    path = tmp_path / "fields.mat"
    scipy.io.savemat(path, {"a": X, "u": Y})
    task = OperatorTask(ArrayFields(str(path), x_key="a", y_key="u"), n_train=4, n_test=3, train_resolution=5,
                        test_resolutions=[3])
    assert task.model_settings() == {"in_channels": 2, "out_channels": 1, "spatial_dims": 2}
    task.setup(progress=False)
    assert np.array_equal(task.evals["test_s5"]["y"], Y[4:])
    assert np.array_equal(task.evals["test_s3"]["y"], Y[4:, ::2, ::2])  # (5 - 1) / 2 + 1 = 3 on both axes


def test_stride_rules_and_their_reachable_resolutions():
    assert grid_stride((421, 421), False, 85) == 5 and grid_stride((17,), False, 17) == 1
    assert grid_stride((8192,), True, 1024) == 8
    assert grid_strides((9,), False) == {9: 1, 5: 2, 3: 4, 2: 8}
    assert grid_strides((12,), True) == {12: 1, 6: 2, 4: 3, 3: 4, 2: 6, 1: 12}
    with pytest.raises(ValueError, match=r"end points included.*valid resolutions are \[9, 5, 3, 2\]"):
        grid_stride((9,), False, 4)


def test_periodic_grids_and_every_axis_strided_alike(tmp_path):
    path = tmp_path / "grid.npz"
    x = RNG.normal(size=(3, 8, 4, 1))
    np.savez(path, x=x, y=x)
    periodic = ArrayFields(str(path), periodic=True)
    assert periodic.spatial_shape(4) == (4, 2)
    assert np.array_equal(periodic.subsample(x, 2), x[:, ::4, ::4])
    with pytest.raises(ValueError, match=r"grid \(8, 4\) .* valid resolutions are \[8, 4, 2\]"):
        periodic.spatial_shape(1)  # stride 8 does not fit the second axis
    with pytest.raises(UserInputError, match=r"resolution 4 .*end points included.*valid resolutions are \[8\]"):
        OperatorTask(ArrayFields(str(path)), n_train=1, n_test=1, train_resolution=4)


def test_shapes_that_cannot_be_the_layout_name_both(tmp_path):
    path = tmp_path / "flat.npz"
    np.savez(path, x=np.zeros((4, 6)), y=np.zeros((4, 6)), y3=np.zeros((4, 3)), y5=np.zeros((5, 6)))
    with pytest.raises(UserInputError, match=r"shape \(4, 6\), which cannot be the layout channels='last'"):
        ArrayFields(str(path))
    with pytest.raises(UserInputError, match=r"grid \(6,\) \(shape \(4, 6\)\) and the outputs' grid \(3,\)"):
        ArrayFields(str(path), y_key="y3", channels="none")
    with pytest.raises(UserInputError, match=r"inputs \(4, 6\) and outputs \(5, 6\) must have the same number"):
        ArrayFields(str(path), y_key="y5", channels="none")
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros((4, 6, 2)), y=np.zeros((4, 6, 2)))
    with pytest.raises(UserInputError, match=r"different grids or channels"):
        ArrayFields(str(path), str(other), channels="none")
    with pytest.raises(UserInputError, match=r"channels='sideways' is unknown"):
        ArrayFields(str(path), channels="sideways")


def test_bad_files_and_keys_are_clear_errors(tmp_path):
    npz, h5 = tmp_path / "f.npz", tmp_path / "f.h5"
    np.savez(npz, a=X, b=Y)
    with h5py.File(h5, "w") as f:
        f["group/a"] = X
    with pytest.raises(UserInputError, match=r"has no array 'x'; it has \['a', 'b'\]"):
        ArrayFields(str(npz))
    with pytest.raises(UserInputError, match=r"has no dataset 'x'; it has \['group/a'\]"):
        ArrayFields(str(h5))
    (tmp_path / "f.csv").write_text("1,2\n")
    with pytest.raises(UserInputError, match=r"unknown kind '.csv'; use one of"):
        ArrayFields(str(tmp_path / "f.csv"))
    np.save(tmp_path / "x.npy", X)
    with pytest.raises(UserInputError, match=r"one .npy file; give .* as a pair \[x.npy, y.npy\]"):
        ArrayFields(str(tmp_path / "x.npy"))
    with pytest.raises(UserInputError, match=r"does not exist"):
        ArrayFields([str(tmp_path / "x.npy"), str(tmp_path / "missing.npy")])
    cut = tmp_path / "cut.npz"
    cut.write_bytes(npz.read_bytes()[:npz.stat().st_size // 2])
    with pytest.raises(UserInputError, match=rf"{cut}' is not a readable .npz file \(truncated or corrupt\?\)"):
        ArrayFields(str(cut), x_key="a", y_key="b")
    data = ArrayFields(str(npz), x_key="a", y_key="b")
    data.load("train", 6)
    with pytest.raises(UserInputError, match=r"the test rows \[5, 7\) and the train rows \[0, 6\) .* overlap"):
        data.load("test", 2)
