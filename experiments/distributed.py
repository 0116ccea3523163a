"""Several processes (hosts) with JAX's own engine: ``jax.distributed``, a global mesh, per-process data.

A run launched as one of several processes calls ``jax.distributed.initialize`` before JAX touches
a device, builds one 1-D ``data`` mesh over the devices of all processes, and feeds each process
only its rows of every batch; ``jax.make_array_from_process_local_data`` assembles the global
batch. Every process runs the same program; process 0 alone writes logs, plots and results.

How a process learns that it is one of several (first match wins):

1. explicit keys: ``trainer.coordinator_address``, ``trainer.num_processes``, ``trainer.process_id``;
2. JAX's variables ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``;
3. a SLURM step with more than one task (``srun``: ``SLURM_NTASKS`` > 1) or an Open MPI job with more
   than one rank (``OMPI_COMM_WORLD_SIZE`` > 1): JAX detects coordinator, count and id itself.

Otherwise the run is a single process and nothing is initialised.
"""
from __future__ import annotations

import hashlib
import logging
import os
from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding

from experiments.errors import UserInputError

log = logging.getLogger(__name__)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        raise UserInputError(f"environment variable {name}={value!r} must be an integer") from None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Call ``jax.distributed.initialize`` if this process is one of several; True if it did.

    Must run before anything touches a JAX device (the runner calls it first thing).
    """
    explicit = {"trainer.coordinator_address": coordinator_address, "trainer.num_processes": num_processes,
                "trainer.process_id": process_id}
    if any(v is not None for v in explicit.values()):
        missing = [k for k, v in explicit.items() if v is None]
        if missing:
            raise UserInputError(f"a multi-process run needs all of {list(explicit)}; {missing} not set")
        kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                      process_id=process_id)
    elif os.environ.get("JAX_COORDINATOR_ADDRESS") and _env_int("JAX_NUM_PROCESSES"):
        kwargs = dict(coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                      num_processes=_env_int("JAX_NUM_PROCESSES"), process_id=_env_int("JAX_PROCESS_ID"))
        if kwargs["process_id"] is None:
            raise UserInputError("JAX_COORDINATOR_ADDRESS and JAX_NUM_PROCESSES are set but JAX_PROCESS_ID "
                                 "is not; set it to this process's rank (0 .. JAX_NUM_PROCESSES - 1)")
    elif (_env_int("SLURM_NTASKS") or 1) > 1 and "SLURM_STEP_NODELIST" in os.environ:
        kwargs = {}  # JAX reads the SLURM variables (cluster auto-detection)
    elif (_env_int("OMPI_COMM_WORLD_SIZE") or 1) > 1:
        kwargs = {}  # JAX reads the Open MPI variables
    else:
        return False
    if kwargs and kwargs["num_processes"] <= 1:
        return False
    if kwargs and not 0 <= kwargs["process_id"] < kwargs["num_processes"]:
        raise UserInputError(f"process id {kwargs['process_id']} is outside 0 .. {kwargs['num_processes'] - 1}")
    jax.distributed.initialize(**kwargs)
    log.info("process %d of %d (coordinator %s); %d local / %d global devices", jax.process_index(),
             jax.process_count(), kwargs.get("coordinator_address", "auto-detected"),
             jax.local_device_count(), jax.device_count())
    return True


def is_primary() -> bool:
    """True in process 0, the one that writes logs, plots and results."""
    return jax.process_index() == 0


def global_mesh(n_devices: int | None = None) -> Mesh:
    """1-D mesh named ``data`` over the devices of every process, grouped by process.

    ``n_devices`` (single process only) takes the first N local devices.
    """
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    if n_devices is not None:
        if jax.process_count() > 1:
            raise UserInputError("trainer.devices selects local devices and cannot be used in a multi-process "
                                 "run (every process uses all its devices); leave it null")
        if not 1 <= n_devices <= len(devices):
            raise UserInputError(f"trainer.devices={n_devices}, but only {len(devices)} local devices exist")
        devices = devices[:n_devices]
    return Mesh(np.asarray(devices), ("data",))


def global_batch(local: Any, sharding: NamedSharding) -> Any:
    """The global batch, sharded along its leading axis, from this process's rows of it."""
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local)


def any_process(flag: bool) -> bool:
    """True if ``flag`` is True in any process (a collective: every process must call it)."""
    if jax.process_count() == 1:
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


def check_same_everywhere(value: str, what: str, fix: str) -> None:
    """Raise a ``UserInputError`` unless every process has the same ``value`` (a collective)."""
    if jax.process_count() == 1:
        return
    digest = np.int64(int(hashlib.sha256(value.encode()).hexdigest()[:15], 16))
    if len(set(np.asarray(multihost_utils.process_allgather(digest)).ravel().tolist())) > 1:
        raise UserInputError(f"the processes of this run disagree on {what} (process {jax.process_index()} "
                             f"has {value!r}); {fix}")


def primary_first(fn: Callable[[bool], None]) -> None:
    """``fn(is_primary)`` in process 0, then in the others once process 0 is done (a collective).

    For data generation: process 0 generates and caches the data; the others then load it from the
    cache (or, where the cache directory is not shared, generate the same data themselves).
    """
    if jax.process_count() == 1:
        fn(True)
        return
    if is_primary():
        fn(True)
    multihost_utils.sync_global_devices("primary_first")
    if not is_primary():
        fn(False)
