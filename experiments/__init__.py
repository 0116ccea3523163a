"""The runner: training entry point, trainer, tasks, datasets, tables, and the way out of a trained run.

``from experiments import load_run`` (``experiments.load``) is resolved on first access (PEP 562), so
that ``import experiments`` stays light: it imports no JAX until a trained model is asked for.
"""
from __future__ import annotations

from typing import Any

_LAZY = {"load_run": "experiments.load", "export_run": "experiments.load", "Run": "experiments.load"}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'experiments' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
