"""Helpers shared by the readers' tests and the config test: writers of files in the exact layout of
the public datasets (from our own arrays), and one training step on a task built from such a file."""
from __future__ import annotations

import csv
import io
import pathlib

import flax.nnx as nnx
import h5py
import jax
import jax.numpy as jnp
import numpy as np
import scipy.io

from experiments.data.listops import decode, listops_source


def write_mat(path: pathlib.Path, arrays: dict[str, np.ndarray], version: str) -> pathlib.Path:
    """``arrays`` as a MATLAB file: v5 through SciPy, or v7.3 in MATLAB's HDF5 layout."""
    if version == "5":
        scipy.io.savemat(path, arrays)
        return path
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in arrays.items():
            dataset = f.create_dataset(name, data=np.transpose(np.asarray(value, np.float64)))  # column-major
            dataset.attrs["MATLAB_class"] = np.bytes_("double")
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Fri Dec  4 12:00:00 2026 HDF5 schema 1.00 ."
    with open(path, "r+b") as f:  # MATLAB's 128-byte header: text, subsystem offset, version 0x0200, "IM"
        f.write(header.ljust(116) + b"\x00" * 8 + b"\x00\x02" + b"IM")
    return path


def write_listops_release(folder: pathlib.Path, data: dict) -> None:
    """``data`` as lra_benchmarks/data/listops.py writes basic_{split}.tsv."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, arrays in data.items():
        rows = []
        for ids, label in zip(arrays["inputs"], arrays["label"]):
            tokens = decode(ids)
            assert tokens[-1] == "<eos>"
            rows.append([listops_source(tokens[:-1]), int(label)])
        with open(folder / f"basic_{split}.tsv", "w", newline="") as f:
            writer = csv.writer(f, delimiter="\t")
            writer.writerow(["Source", "Target"])
            writer.writerows(rows)


def write_pdebench_darcy(path, coeff: np.ndarray, sol: np.ndarray) -> None:
    """A 2-D Darcy file as PDEBench's ``Data_Merge`` (ReacDiff): tensor (N, 1, X, Y) from ``sol`` (N, X, Y),
    nu (N, X, Y) from ``coeff``, cell-centred coordinates, attribute beta."""
    n_x, n_y = coeff.shape[1:]
    with h5py.File(path, "w") as f:
        f.create_dataset("tensor", data=sol[:, None].astype(np.float32))
        f.create_dataset("nu", data=coeff.astype(np.float32))
        f.create_dataset("x-coordinate", data=((np.arange(n_x) + 0.5) / n_x).astype(np.float32))
        f.create_dataset("y-coordinate", data=((np.arange(n_y) + 0.5) / n_y).astype(np.float32))
        f.attrs["beta"] = 1.0


def write_pdebench_groups(path, data: np.ndarray) -> None:
    """``data`` (N, T, X, Y, C) as PDEBench's ``gen_diff_react.py``: groups '0000'... each with data
    (T, X, Y, C) and grid/x, grid/y, grid/t."""
    n, t, s = data.shape[:3]
    with h5py.File(path, "w") as f:
        for i in range(n):
            seed = str(i).zfill(4)
            f.create_dataset(f"{seed}/data", data=data[i], dtype="float32", compression="lzf")
            f.create_dataset(f"{seed}/grid/x", data=np.linspace(-1, 1, s), dtype="float32")
            f.create_dataset(f"{seed}/grid/y", data=np.linspace(-1, 1, data.shape[3]), dtype="float32")
            f.create_dataset(f"{seed}/grid/t", data=np.linspace(0, 5, t), dtype="float32")
            f[seed].attrs["config"] = "sim: {seed: %d}" % i


def velocity_of(w: np.ndarray) -> np.ndarray:
    """(..., s, s) vorticity on the unit torus -> (..., s, s, 2) velocity (psi_y, -psi_x), -Lap psi = w."""
    k = np.fft.fftfreq(w.shape[-1], 1.0 / w.shape[-1])
    kx, ky = np.meshgrid(k, k, indexing="ij")
    lap = 4 * np.pi ** 2 * (kx ** 2 + ky ** 2)
    psi_hat = np.fft.fft2(w) / np.where(lap == 0, 1, lap)
    u = np.real(np.fft.ifft2(2j * np.pi * ky * psi_hat))
    v = np.real(np.fft.ifft2(-2j * np.pi * kx * psi_hat))
    return np.stack([u, v], axis=-1).astype(np.float32)


def _well_flags(ds: h5py.Dataset, time_varying: bool = True) -> None:
    ds.attrs["dim_varying"] = np.array([True, True])
    ds.attrs["sample_varying"] = True
    ds.attrs["time_varying"] = time_varying


def write_well_file(path, w: np.ndarray, u: np.ndarray) -> None:
    """One file of The Well's format holding ``w`` as a t0 field and ``u`` as a t1 field."""
    n, t, s = w.shape[:3]
    with h5py.File(path, "w") as f:
        f.attrs.update(dataset_name="ns_test", grid_type="cartesian", n_spatial_dims=2, n_trajectories=n,
                       simulation_parameters=["nu"], nu=1e-3)
        dims = f.create_group("dimensions")
        dims.attrs["spatial_dims"] = ["x", "y"]
        dims.create_dataset("time", data=np.arange(t, dtype=np.float32)).attrs["sample_varying"] = False
        for name in ("x", "y"):
            coord = dims.create_dataset(name, data=(np.arange(s) / s).astype(np.float32))
            coord.attrs.update(sample_varying=False, time_varying=False)
        bcs = f.create_group("boundary_conditions")
        for name, dim in (("x_periodic", "x"), ("y_periodic", "y")):
            bc = bcs.create_group(name)
            bc.attrs.update(associated_dims=[dim], associated_fields=[], bc_type="periodic", sample_varying=False,
                            time_varying=False)
            bc.create_dataset("mask", data=np.eye(1, s, dtype=bool)[0] | np.eye(1, s, s - 1, dtype=bool)[0])
            bc.create_dataset("values", data=np.zeros(2, np.float32))
        scalars = f.create_group("scalars")
        scalars.attrs["field_names"] = ["nu"]
        scalars.create_dataset("nu", data=np.float32(1e-3)).attrs.update(sample_varying=False, time_varying=False)
        for group, fields in (("t0_fields", {"vorticity": w}), ("t1_fields", {"velocity": u}), ("t2_fields", {})):
            g = f.create_group(group)
            g.attrs["field_names"] = list(fields)
            for name, data in fields.items():
                _well_flags(g.create_dataset(name, data=data.astype(np.float32)))


def one_training_step(task) -> None:
    """A pointwise linear model shaped by the task's ``model_settings`` and one normalised gradient step,
    which must lower the loss: the task's batches feed a training step."""
    settings = task.model_settings()
    model = nnx.Linear(settings["in_channels"], settings["out_channels"], rngs=nnx.Rngs(0))
    task.check_model(model, 2)
    batch = {k: jnp.asarray(v[:2]) for k, v in task.train.items()}
    graphdef, state = nnx.split(model)

    @jax.jit
    def loss_and_grad(state):
        return jax.value_and_grad(lambda st: task.loss(nnx.merge(graphdef, st), batch))(state)

    loss, grad = loss_and_grad(state)
    norm = jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(grad)))
    stepped = jax.tree.map(lambda p, g: p - 1e-3 * g / norm, state, grad)
    assert np.isfinite(float(loss)) and float(norm) > 0
    assert float(loss_and_grad(stepped)[0]) < float(loss)


class CountingFile(io.FileIO):
    """A real file that counts the bytes h5py reads through it."""

    read_bytes = 0

    def readinto(self, buffer):
        n = super().readinto(buffer)
        CountingFile.read_bytes += n or 0
        return n
