"""The errors the runner reports to a user, in one place for the trainer, the tasks and the entry point.

Each carries a message that says what was wrong and what to do; ``python -m experiments.train``
prints it on one line (no traceback) and exits with the status named below.
"""
from __future__ import annotations


class UserInputError(ValueError):
    """Bad configuration or input (exit status 2). Raised where the input enters, before work is done."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite (exit status 2); nothing was saved after it did."""


class Preempted(Exception):
    """SIGTERM/SIGINT received and a checkpoint saved (exit status 143); rerun the same command to resume."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (exit status 2); the run stopped and the previous one is intact."""
