"""Orbax checkpoints of a training state, with resume.

A thin wrapper over ``orbax.checkpoint.CheckpointManager`` (V0 API) so the rest of the runner sees
four calls: ``latest_step``, ``save``, ``restore``, ``close``. Each checkpoint holds two items:
``state`` (the whole training state pytree: step, parameters, non-parameter model state such as
RNG counters, optimizer state) and ``meta`` (JSON: epoch, wall time, the run's configuration).

Orbax writes each step into a temporary directory and renames it when complete, so a run killed
mid-save (even with SIGKILL) never leaves a checkpoint that ``latest_step`` would pick up.
Saves are asynchronous; ``close`` waits for the last one. In a multi-process run every process
calls ``save`` / ``restore`` (Orbax coordinates them; process 0 writes the JSON item).

A checkpoint's ``meta`` carries the run's identity (``run_identity``): hashes of the configuration
parts a checkpoint depends on. ``check_same_run`` refuses to resume a run directory into a
different configuration.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import pathlib
from typing import Any, Mapping, Sequence

import jax
import orbax.checkpoint as ocp

from experiments.errors import UserInputError

log = logging.getLogger(__name__)


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) of ``tree``: the target to restore into."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
    """Save / restore ``(state, meta)`` pairs under ``directory/<step>/``."""

    def __init__(self, directory: str | pathlib.Path, max_to_keep: int = 2):
        self.directory = pathlib.Path(directory).absolute()
        self._mngr = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
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

    def wait(self) -> None:
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()


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
