"""Faults that lose nothing: damaged checkpoints, a run directory that cannot be written, a failed save.

Each fault is made for real where this machine allows it: checkpoint files truncated on disk, a
read-only or tiny tmpfs mounted as the run directory (root only; elsewhere the operating system's
refusal is injected into the write or the free-space query), a checkpoint write that raises.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import pathlib
import shutil
import subprocess
import tempfile

import flax.nnx as nnx
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments.errors import CheckpointWriteError, UserInputError
from experiments.trainer import Trainer, TrainerConfig
from optim import adam

from toy_tasks import MLP, ToyRegressionTask


def _fit(run_dir: pathlib.Path, max_steps: int, **kw):
    """A toy run with checkpoints every 2 steps; returns (results, trained parameters as NumPy)."""
    cfg = TrainerConfig(max_steps=max_steps, batch_size=8, log_every=2, ckpt_every=2, devices=1,
                        progress=False, plots=False, **kw)
    model = MLP(rngs=nnx.Rngs(0))
    results = Trainer(cfg, run_dir, seed=3, identity={"model": "mlp"}).fit(
        model, lambda spe, total: adam(1e-2), ToyRegressionTask())
    return results, jax.tree.map(np.asarray, nnx.state(model, nnx.Param))


def _truncate_arrays(step_dir: pathlib.Path) -> list[pathlib.Path]:
    """Cut every array data file of one checkpoint to 10 bytes (a disk that filled up or a bad copy)."""
    files = [p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files, f"no array files under {step_dir}"
    for f in files:
        f.write_bytes(f.read_bytes()[:10])
    return files


def _assert_trees_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


def test_a_damaged_newest_checkpoint_resumes_from_the_previous_one(tmp_path, caplog):
    _, full = _fit(tmp_path / "full", 6)
    _fit(tmp_path / "run", 4)                              # checkpoints at steps 2 and 4
    _truncate_arrays(tmp_path / "run" / "checkpoints" / "4")
    with caplog.at_level(logging.WARNING, logger="experiments.checkpoint"):
        results, resumed = _fit(tmp_path / "run", 6)
    assert results["resumed_from_step"] == 2
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "skipped the checkpoint at step 4" in message and "cannot be read" in message
    assert str(tmp_path / "run" / "checkpoints" / "4") in message       # the file it could not read
    assert (tmp_path / "run" / "damaged_checkpoints" / "4").is_dir()    # kept, not deleted
    _assert_trees_equal(resumed, full)                                  # nothing lost: same as uninterrupted


def test_no_readable_checkpoint_left_is_one_clear_error_not_a_silent_restart(tmp_path):
    _fit(tmp_path / "run", 4)
    for step in ("2", "4"):
        _truncate_arrays(tmp_path / "run" / "checkpoints" / step)
    with pytest.raises(UserInputError, match=r"no readable checkpoint is left in .*checkpoints: steps \[2, 4\] "
                                             r"are damaged .*start the run afresh"):
        _fit(tmp_path / "run", 6)


@contextlib.contextmanager
def _tmpfs(where: pathlib.Path, options: str):
    """A tmpfs mounted at ``where`` (yields True), or nothing mounted (yields False) without privileges."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(where)], check=True)


def test_a_read_only_run_directory_is_refused_before_training(tmp_path, monkeypatch):
    run_dir = tmp_path / "ro"
    with _tmpfs(run_dir, "ro,size=1m") as mounted:
        if not mounted:  # the operating system's answer on a read-only mount, injected into the write
            def read_only(*args, **kwargs):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))
            monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
            run_dir.mkdir(exist_ok=True)
            (run_dir / "checkpoints").mkdir(exist_ok=True)
        with pytest.raises(UserInputError, match=r"cannot write checkpoints to .*ro/checkpoints .*Read-only "
                                                 r"file system.*hydra.run.dir"):
            _fit(run_dir, 4)


def test_a_full_run_directory_is_refused_before_training(tmp_path, monkeypatch):
    run_dir = tmp_path / "full"
    with _tmpfs(run_dir, "size=64k") as mounted:
        if not mounted:
            real = shutil.disk_usage
            monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=64 << 10))
        with pytest.raises(UserInputError, match=r"MiB free, and one checkpoint of this run needs about"):
            _fit(run_dir, 4)
        assert not (run_dir / "metrics.jsonl").exists()  # refused before anything ran


def test_a_checkpoint_that_fails_to_write_stops_the_run_and_keeps_the_previous(tmp_path, monkeypatch):
    real_save, calls = ocp.CheckpointManager.save, []

    def save_until_the_disk_fills(self, step, *args, **kwargs):
        calls.append(step)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save_until_the_disk_fills)
    with pytest.raises(CheckpointWriteError, match=r"could not write the checkpoint at step 4 .*No space left on "
                                                   r"device.*previous checkpoint, step 2, is intact"):
        _fit(tmp_path / "run", 8)
    monkeypatch.setattr(ocp.CheckpointManager, "save", real_save)
    results, _ = _fit(tmp_path / "run", 8)  # and the rerun resumes from it
    assert results["resumed_from_step"] == 2
