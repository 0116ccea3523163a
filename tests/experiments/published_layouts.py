"""Helpers shared by the readers' tests and the config test: writers of files in the exact layout of
the public datasets (from our own arrays), and one training step on a task built from such a file."""
from __future__ import annotations

import flax.nnx as nnx
import h5py
import jax
import jax.numpy as jnp
import numpy as np


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
