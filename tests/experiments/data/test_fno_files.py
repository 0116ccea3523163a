"""The FNO paper's .mat files (experiments.data.fno_files, experiments.data.matfile): written here in the
published layout from our own generated data, v5 (scipy.io.savemat) and v7.3 (HDF5 as MATLAB writes it:
a 512-byte user block holding MATLAB's header, every array transposed, attribute MATLAB_class), and read
back as the tasks see them: equal to the generated arrays, bit for bit.

Oracle of the v7.3 layout: SciPy refuses our v7.3 files as MATLAB's own ("Please use HDF reader for matlab
v7.3 files"), and h5py sees every axis reversed, as the FNO authors' MatReader (utilities3.py of
zongyi-li/fourier_neural_operator) undoes with np.transpose(x, axes=range(ndim - 1, -1, -1)).
"""
from __future__ import annotations

import sys

import h5py
import numpy as np
import pytest
import scipy.io

from experiments.data.burgers import BurgersFlow
from experiments.data.darcy import DarcyFlow
from experiments.data.fno_files import BurgersMat, DarcyMat, NavierStokesMat
from experiments.data.matfile import MatFile
from experiments.data.navier_stokes import NavierStokesFlow
from experiments.errors import UserInputError
from experiments.tasks.pde import OperatorTask
from experiments.tasks.rollout import RolloutTask

from published_layouts import write_mat

VERSIONS = ("5", "7.3")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Tiny splits of the three generators, as their field datasets give them."""
    cache = tmp_path_factory.mktemp("cache")
    darcy = DarcyFlow(resolution=17, cache_dir=str(cache))
    burgers = BurgersFlow(resolution=32, n_steps=10, cache_dir=str(cache))
    ns = NavierStokesFlow(resolution=16, store_resolution=16, t_final=4, dt=1e-2, cache_dir=str(cache))
    return {"darcy": {s: darcy.load(s, n, progress=False) for s, n in (("train", 8), ("test", 4))},
            "burgers": {s: burgers.load(s, n, progress=False) for s, n in (("train", 6), ("test", 3))},
            "ns": {s: ns.load(s, n, progress=False) for s, n in (("train", 5), ("test", 3), ("val", 2))},
            "datasets": {"darcy": darcy, "burgers": burgers, "ns": ns}}


def darcy_files(tmp_path, generated, version):
    (a_tr, u_tr), (a_te, u_te) = generated["darcy"]["train"], generated["darcy"]["test"]
    train = write_mat(tmp_path / f"smooth1_v{version}.mat", {"coeff": a_tr[..., 0], "sol": u_tr[..., 0]}, version)
    test = write_mat(tmp_path / f"smooth2_v{version}.mat", {"coeff": a_te[..., 0], "sol": u_te[..., 0]}, version)
    return train, test


@pytest.mark.parametrize("version", VERSIONS)
def test_darcy_mat_gives_the_generated_fields_at_every_stride(tmp_path, generated, version):
    train, test = darcy_files(tmp_path, generated, version)
    data, flow = DarcyMat(str(train), str(test)), generated["datasets"]["darcy"]
    assert (data.in_channels, data.out_channels, data.grid) == (1, 1, (17, 17))
    for split, n in (("train", 8), ("test", 4)):
        for got, want in zip(data.load(split, n), generated["darcy"][split]):
            assert got.dtype == np.float32 and np.array_equal(got, want)
            for s in (9, 5):  # (17 - 1) / r + 1 with r = 2, 4
                assert data.spatial_shape(s) == flow.spatial_shape(s)
                assert np.array_equal(data.subsample(got, s), flow.subsample(want, s))
    assert np.array_equal(data.load("test", 2)[0], generated["darcy"]["test"][0][:2])  # the FIRST n_test


@pytest.mark.parametrize("version", VERSIONS)
def test_burgers_mat_splits_one_file_as_fourier_1d(tmp_path, generated, version):
    (a_tr, u_tr), (a_te, u_te) = generated["burgers"]["train"], generated["burgers"]["test"]
    path = write_mat(tmp_path / "burgers_data_R10.mat", {"a": np.concatenate([a_tr, a_te])[..., 0],
                                                         "u": np.concatenate([u_tr, u_te])[..., 0]}, version)
    data, flow = BurgersMat(str(path)), generated["datasets"]["burgers"]
    for (got, want) in zip([*data.load("train", 6), *data.load("test", 3)], [a_tr, u_tr, a_te, u_te]):
        assert np.array_equal(got, want)  # train = the first rows, test = the LAST rows
    assert data.spatial_shape(8) == flow.spatial_shape(8) == (8,)
    assert np.array_equal(data.subsample(u_te, 8), flow.subsample(u_te, 8))
    with pytest.raises(ValueError, match=r"periodic.*valid resolutions are \[32, 16, 8, 4, 2, 1\]"):
        data.spatial_shape(12)


@pytest.mark.parametrize("version", VERSIONS)
def test_navier_stokes_mat_is_the_rollout_data_of_the_generator(tmp_path, generated, version):
    ns = generated["ns"]
    # The test file holds other trajectories first: fourier_2d_time.py tests on its LAST n_test.
    test_a, test_u = (np.concatenate([ns["val"][i], ns["test"][i]]) for i in (0, 1))
    train = write_mat(tmp_path / "ns_1.mat", {"a": ns["train"][0][..., 0], "u": ns["train"][1],
                                              "t": np.arange(1.0, 5.0)}, version)
    test = write_mat(tmp_path / "ns_2.mat", {"a": test_a[..., 0], "u": test_u, "t": np.arange(1.0, 5.0)}, version)
    data = NavierStokesMat(str(train), str(test))
    assert (data.n_snapshots, data.in_channels, data.grid) == (4, 1, (16, 16))
    for split, n in (("train", 5), ("test", 3)):
        for got, want in zip(data.load(split, n), ns[split]):
            assert np.array_equal(got, want)
    assert data.spatial_shape(8) == generated["datasets"]["ns"].spatial_shape(8)
    task = RolloutTask(data, n_train=5, n_test=3, t_in=2, t_out=2, train_resolution=8, test_resolutions=[16])
    task.setup(progress=False)
    assert np.array_equal(task.evals["test_s16"]["y"], ns["test"][1][..., 2:4])
    assert np.array_equal(task.train["x"], ns["train"][1][:, ::2, ::2, :2])


def test_v73_files_have_matlabs_layout_and_are_read_only_for_the_rows_asked(tmp_path, monkeypatch):
    u = np.arange(5 * 3 * 4 * 2, dtype=np.float64).reshape(5, 3, 4, 2)  # no two axes alike
    path = write_mat(tmp_path / "u.mat", {"u": u}, "7.3")
    with pytest.raises(NotImplementedError, match="HDF reader for matlab v7.3"):
        scipy.io.loadmat(path)  # SciPy takes it for MATLAB's own v7.3 file
    with h5py.File(path, "r") as f:
        assert f["u"].shape == (2, 4, 3, 5)
    reads = []
    real_getitem = h5py.Dataset.__getitem__

    def recording_getitem(self, selection):
        out = real_getitem(self, selection)
        reads.append(out.shape)
        return out

    monkeypatch.setattr(h5py.Dataset, "__getitem__", recording_getitem)
    mat = MatFile(path)
    assert (mat.version, mat.keys(), mat.shape("u")) == ("7.3", ["u"], (5, 3, 4, 2))
    assert np.array_equal(mat.read("u", slice(3, 5)), u[3:5])
    assert reads == [(2, 4, 3, 2)]  # two of the five samples came off the disk


def test_one_file_splits_must_not_share_rows_and_must_exist(tmp_path, generated):
    train, _ = darcy_files(tmp_path, generated, "5")
    data = DarcyMat(str(train))  # one file of 8: train = first rows, test = last rows
    data.load("train", 5)
    with pytest.raises(UserInputError, match=r"test rows \[4, 8\) and the train rows \[0, 5\) .* overlap"):
        data.load("test", 4)
    with pytest.raises(UserInputError, match=r"asks for 9 examples, but .*smooth1_v5.mat holds 8"):
        DarcyMat(str(train)).load("train", 9)


@pytest.mark.parametrize("version", VERSIONS)
def test_bad_files_are_clear_errors(tmp_path, generated, version):
    train, _ = darcy_files(tmp_path, generated, version)
    with pytest.raises(UserInputError, match=r"has no variable 'coef'; it has \['coeff', 'sol'\]"):
        DarcyMat(str(train), coeff_key="coef")
    truncated = tmp_path / f"truncated_v{version}.mat"
    truncated.write_bytes(train.read_bytes()[:train.stat().st_size // 2])
    with pytest.raises(UserInputError, match=rf"{truncated}.*cannot be read \(truncated or corrupt\?\)"):
        DarcyMat(str(truncated)).load("train", 8)
    with pytest.raises(UserInputError, match=r"does not exist"):
        DarcyMat(str(tmp_path / "missing.mat"))
    text = write_mat(tmp_path / f"text_v{version}.mat", {"coeff": np.zeros((2, 3, 3)), "sol": np.zeros((2, 3, 3))},
                     version)
    if version == "5":
        scipy.io.savemat(text, {"coeff": np.zeros((2, 3, 3)), "sol": "a string"})
    else:
        with h5py.File(text, "r+") as f:
            f["sol"].attrs["MATLAB_class"] = np.bytes_("char")
    with pytest.raises(UserInputError, match=r"variable 'sol' .* is a MATLAB char, not a numeric array"):
        DarcyMat(str(text))


def test_a_v73_file_without_h5py_names_the_install(tmp_path, generated, monkeypatch):
    train, _ = darcy_files(tmp_path, generated, "7.3")
    monkeypatch.setitem(sys.modules, "h5py", None)  # `import h5py` raises ImportError
    with pytest.raises(UserInputError, match="pip install h5py"):
        DarcyMat(str(train))


def test_unreachable_resolution_names_the_reachable_ones(tmp_path, generated):
    train, test = darcy_files(tmp_path, generated, "5")
    with pytest.raises(UserInputError, match=r"resolution 8 .* valid resolutions are \[17, 9, 5, 3, 2\]"):
        OperatorTask(DarcyMat(str(train), str(test)), n_train=8, n_test=4, train_resolution=8)
