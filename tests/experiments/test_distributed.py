"""How a process learns that it is one of several (the launch itself is tested for real in
test_train_cli.py::test_two_processes_train_like_one_process_with_as_many_devices)."""
from __future__ import annotations

import jax
import pytest

from experiments import distributed
from experiments.errors import UserInputError
from experiments.tasks.base import Shard

CLUSTER_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_NTASKS",
                "SLURM_STEP_NODELIST", "OMPI_COMM_WORLD_SIZE")


@pytest.fixture
def calls(monkeypatch):
    """Record what would be passed to jax.distributed.initialize (starting a coordinator needs peers)."""
    for name in CLUSTER_VARS:
        monkeypatch.delenv(name, raising=False)
    seen = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: seen.append(kw))
    monkeypatch.setattr(jax, "process_index", lambda: 0)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    return seen


def test_single_process_initializes_nothing(calls, monkeypatch):
    assert distributed.initialize() is False
    monkeypatch.setenv("SLURM_NTASKS", "1")  # a one-task SLURM job is a single process
    monkeypatch.setenv("SLURM_STEP_NODELIST", "node1")
    assert distributed.initialize() is False and calls == []


def test_explicit_keys(calls):
    assert distributed.initialize("10.0.0.1:1234", 4, 3) is True
    assert calls == [{"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3}]


def test_jax_environment_variables(calls, monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "host:99")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    assert distributed.initialize() is True
    assert calls == [{"coordinator_address": "host:99", "num_processes": 2, "process_id": 1}]


@pytest.mark.parametrize("env", [{"SLURM_NTASKS": "8", "SLURM_STEP_NODELIST": "gpu[01-02]"},
                                 {"OMPI_COMM_WORLD_SIZE": "4"}])
def test_slurm_and_open_mpi_are_left_to_jax_autodetection(calls, monkeypatch, env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert distributed.initialize() is True and calls == [{}]


@pytest.mark.parametrize("args, message", [
    (("host:1", None, 0), r"trainer.num_processes.*not set"),
    (("host:1", 2, 5), "outside 0 .. 1"),
])
def test_incomplete_or_inconsistent_settings(calls, args, message):
    with pytest.raises(UserInputError, match=message):
        distributed.initialize(*args)


def test_jax_process_id_must_accompany_the_address(calls, monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "host:99")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    with pytest.raises(UserInputError, match="JAX_PROCESS_ID"):
        distributed.initialize()


def test_each_process_takes_its_contiguous_rows():
    assert [Shard(i, 4).rows(8) for i in range(4)] == [slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8)]
    with pytest.raises(ValueError, match="evenly"):
        Shard(0, 3).rows(8)
