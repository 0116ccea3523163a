"""Orbax checkpoints of a training state, with resume.

A thin wrapper over ``orbax.checkpoint.CheckpointManager`` (V0 API) so the rest of the runner sees
four calls: ``latest_step``, ``save``, ``restore``, ``close``. Each checkpoint holds two items:
``state`` (the whole training state pytree: step, parameters, non-parameter model state such as
RNG counters, optimizer state) and ``meta`` (JSON: epoch, wall time, the run's configuration).

Orbax writes each step into a temporary directory and renames it when complete, so a run killed
mid-save (even with SIGKILL) never leaves a checkpoint that ``latest_step`` would pick up.
Saves are asynchronous; ``close`` waits for the last one.
"""
from __future__ import annotations

import logging
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

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
