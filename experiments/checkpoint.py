"""Orbax checkpoints of a training state, with resume.

A thin wrapper over ``orbax.checkpoint.CheckpointManager`` (V0 API) so the rest of the runner sees
four calls: ``latest_step``, ``save``, ``restore``, ``close``. Each checkpoint holds two items:
``state`` (the whole training state pytree: step, parameters, non-parameter model state such as
RNG counters, optimizer state) and ``meta`` (JSON: epoch, wall time, the run's configuration).

Orbax writes each step into a temporary directory and renames it when complete, so a run killed
mid-save (even with SIGKILL) never leaves a checkpoint that ``latest_step`` would pick up.
Saves are asynchronous; ``close`` waits for the last one. In a multi-process run every process
calls ``save`` / ``restore`` (Orbax coordinates them; process 0 writes the JSON item).

Faults lose nothing: ``check_writable`` refuses a run directory that cannot take a checkpoint before
training starts; a save that fails raises ``CheckpointWriteError`` naming the step and the previous
(intact) checkpoint; ``restore_latest_readable`` skips a damaged checkpoint (a truncated or missing
file), moves it to ``<run>/damaged_checkpoints/<step>`` and resumes from the newest readable one.

A checkpoint's ``meta`` carries the run's identity (``run_identity``): hashes of the configuration
parts a checkpoint depends on. ``check_same_run`` refuses to resume a run directory into a
different configuration.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import pathlib
import re
import shutil
import tempfile
from typing import Any, Callable, Mapping, Sequence

import jax
import orbax.checkpoint as ocp

from experiments.errors import CheckpointWriteError, UserInputError

log = logging.getLogger(__name__)


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) of ``tree``: the target to restore into."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
    """Save / restore ``(state, meta)`` pairs under ``directory/<step>/``."""

    def __init__(self, directory: str | pathlib.Path, max_to_keep: int = 2):
        self.directory = pathlib.Path(directory).absolute()
        self.max_to_keep = max_to_keep
        self._mngr = self._manager()

    def _manager(self) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(self.directory,
                                     options=ocp.CheckpointManagerOptions(max_to_keep=self.max_to_keep, create=True))

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._mngr.all_steps())

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Start writing step ``step`` (asynchronous); ``CheckpointWriteError`` if it cannot be written."""
        previous = self.latest_step()
        with self._write_errors(step, previous):
            self._mngr.save(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                force=True,
            )

    def restore(self, step: int, like: Any) -> tuple[Any, dict]:
        """Restore step ``step`` into the structure, dtypes and shardings of ``like``."""
        out = self._mngr.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_like(like)), meta=ocp.args.JsonRestore()
            ),
        )
        return out.state, out.meta

    def read_meta(self, step: int) -> dict:
        return self._mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

    def set_aside(self, step: int, where: pathlib.Path, primary: bool = True) -> pathlib.Path:
        """Move the (damaged) checkpoint of ``step`` to ``where/<step>`` and forget it; returns the new path."""
        target = where / str(step)
        if primary:
            if target.exists():  # an older damaged copy of the same step
                target = where / f"{step}.{len(list(where.glob(f'{step}*')))}"
            where.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self.directory / str(step)), str(target))
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"checkpoint {step} set aside")
        self._mngr.close()
        self._mngr = self._manager()
        return target

    def wait(self) -> None:
        with self._write_errors(None, None):
            self._mngr.wait_until_finished()

    def close(self) -> None:
        with self._write_errors(None, None):
            self._mngr.wait_until_finished()
            self._mngr.close()

    def _write_errors(self, step: int | None, previous: int | None):
        return _WriteErrors(self, step, previous)


class _WriteErrors:
    """Turns an exception while writing a checkpoint into a ``CheckpointWriteError`` that says what is safe."""

    def __init__(self, ckpt: Checkpointer, step: int | None, previous: int | None):
        self.ckpt, self.step, self.previous = ckpt, step, previous

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb) -> bool:
        if err is None or not isinstance(err, Exception) or isinstance(err, CheckpointWriteError):
            return False
        with contextlib.suppress(Exception):  # let an earlier save that is still being written finish
            self.ckpt._mngr.wait_until_finished()
        committed = [s for s in _committed_steps(self.ckpt.directory) if self.step is None or s < self.step]
        what = f"the checkpoint at step {self.step}" if self.step is not None else "a pending checkpoint"
        safe = (f"the previous checkpoint, step {committed[-1]}, is intact: rerun the same command to resume "
                f"from it" if committed else "no earlier checkpoint exists: rerun to start afresh")
        raise CheckpointWriteError(
            f"could not write {what} in {self.ckpt.directory} ({_first_line(err)}); the run stopped and {safe} "
            f"once the directory is writable and has space (or move the run: hydra.run.dir=...)") from err


def _committed_steps(directory: pathlib.Path) -> list[int]:
    """Steps whose checkpoint directory is complete (Orbax renames a step's directory when it is)."""
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def _first_line(err: BaseException, limit: int = 300) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= limit else text[:limit] + " ..."


def damage_summary(err: BaseException) -> str:
    """What was wrong with an unreadable checkpoint, short: the file and the reason, where the error names them."""
    text = str(err)
    files = re.findall(r'local file "([^"]+)"', text)
    reason = re.findall(r"(Requested byte range[^:\]\[]*|[Ff]ile not found[^:\[]*|No such file[^:\[]*|"
                        r"[A-Za-z ]*corrupt[^:\[]*|[A-Za-z ]*checksum[^:\[]*)", text)
    parts = [f"file {files[-1]}" if files else None, reason[0].strip() if reason else None]
    parts = [p for p in parts if p]
    return "; ".join(parts) if parts else _first_line(err)


def check_writable(directory: pathlib.Path, needed_bytes: int = 0) -> None:
    """``UserInputError`` before training when ``directory`` cannot take a checkpoint of ``needed_bytes``.

    Writes (and removes) a probe file, so permissions, read-only mounts and quotas are all caught
    whoever runs the check (root passes permission bits, not read-only file systems); then compares
    the free space with the size of one checkpoint plus a margin.
    """
    where = "the run's checkpoint directory"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-probe-") as probe:
            probe.write(b"0")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as err:
        raise UserInputError(f"cannot write checkpoints to {directory} ({err.strerror or err}): {where} must be "
                             f"writable; fix its permissions or mount, or use another run directory "
                             f"(hydra.run.dir=...)") from None
    free = shutil.disk_usage(directory).free
    wanted = int(needed_bytes * 1.25) + (1 << 20)
    if needed_bytes and free < wanted:
        raise UserInputError(f"{directory} has {free / 2**20:.1f} MiB free, and one checkpoint of this run needs "
                             f"about {wanted / 2**20:.1f} MiB: free some space or use another run directory "
                             f"(hydra.run.dir=...)")


def restore_latest_readable(ckpt: Checkpointer, like: Any, accept: Callable[[int, dict], None],
                            set_aside_in: pathlib.Path, primary: bool = True) -> tuple[int | None, Any]:
    """``(step, state)`` of the newest checkpoint that reads back; ``(None, like)`` when there is none.

    ``accept(step, meta)`` may raise to refuse a readable checkpoint (another configuration): that
    error propagates. A checkpoint that cannot be read (a truncated or missing file) is logged with
    its step, file and reason, moved to ``set_aside_in`` and skipped; when checkpoints existed but
    none reads back, a ``UserInputError`` names the run directory and how to start afresh, so a run
    never restarts from step 0 silently.
    """
    skipped = []
    for step in reversed(ckpt.all_steps()):
        try:
            meta = ckpt.read_meta(step)
            accept(step, meta)
            state, _ = ckpt.restore(step, like)
            return step, state
        except UserInputError:
            raise
        except Exception as err:  # tensorstore / Orbax / JSON errors of a damaged checkpoint
            moved = ckpt.set_aside(step, set_aside_in, primary)
            skipped.append(step)
            log.warning("skipped the checkpoint at step %d in %s: it cannot be read (%s); moved it to %s",
                        step, ckpt.directory, damage_summary(err), moved)
    if skipped:
        raise UserInputError(
            f"no readable checkpoint is left in {ckpt.directory}: steps {sorted(skipped)} are damaged (moved to "
            f"{set_aside_in}). To start the run afresh, rerun the same command (it now starts at step 0), or use "
            f"a new run directory (hydra.run.dir=...)")
    return None, like


# Targets that moved to another module, ``{old dotted path: new}``. A run's fingerprint hashes the old
# path in their place, so that a run directory started before a move still resumes (its checkpoints'
# fingerprints were computed with the old path), and ``renamed_targets`` lets an old run's saved
# config be rebuilt.
MOVED_TARGETS = {
    "operators.pde.darcy.DarcyFlow": "experiments.data.darcy.DarcyFlow",
    "operators.pde.burgers.BurgersFlow": "experiments.data.burgers.BurgersFlow",
    "operators.pde.navier_stokes.NavierStokesFlow": "experiments.data.navier_stokes.NavierStokesFlow",
    "experiments.tasks.inverse.DigitImages": "experiments.data.images.DigitImages",
    "experiments.tasks.inverse.LaplaceSignals": "experiments.data.signals.LaplaceSignals",
}


def renamed_targets(node: Any, renames: Mapping[str, str] = MOVED_TARGETS) -> Any:
    """A copy of a plain config tree (dicts and lists) with each ``_target_`` in ``renames`` replaced."""
    if isinstance(node, dict):
        return {k: (renames.get(v, v) if k == "_target_" and isinstance(v, str) else renamed_targets(v, renames))
                for k, v in node.items()}
    if isinstance(node, list):
        return [renamed_targets(v, renames) for v in node]
    return node


def run_identity(parts: Mapping[str, Any], volatile: Mapping[str, Sequence[str]] = {}) -> dict[str, str]:
    """Short hashes of the configuration parts a checkpoint depends on, one per part.

    ``parts``: e.g. ``{"model": {...}, "data": {...}, "seed": 0}`` (plain JSON-able values).
    ``volatile``: dotted keys per part that are left out (``{"data": ["pde.cache_dir"]}``): settings
    that do not change what is trained, such as where data is cached. A target that moved
    (``MOVED_TARGETS``) is hashed under its old path, so moving a class keeps its runs resumable.
    """
    parts = renamed_targets(copy.deepcopy(dict(parts)), {new: old for old, new in MOVED_TARGETS.items()})
    for part, keys in volatile.items():
        for key in keys:
            *parents, last = key.split(".")
            node = parts.get(part)
            for name in parents:
                node = node.get(name) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(last, None)
    return {k: hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()[:16] for k, v in parts.items()}


def check_same_run(meta: Mapping[str, Any], identity: Mapping[str, str], where: pathlib.Path) -> None:
    """Raise a ``UserInputError`` naming the changed parts if ``meta`` is from a different run."""
    old = meta.get("fingerprint", {})
    changed = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
    if changed:
        raise UserInputError(
            f"the run directory holds checkpoints of a different configuration ({', '.join(changed)} "
            f"changed) in {where}. Resume with the original settings, or start a new run directory "
            f"(hydra.run.dir=...) for the new ones.")
