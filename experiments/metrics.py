"""Metrics as JSON lines: one object per logged step, ``{"step": ..., "loss": ..., ...}``."""
from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any, Iterator


def _clean(value: Any) -> Any:
    """JSON-safe scalar: numpy/jax scalars to Python, non-finite floats to strings ("nan", "inf")."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLog:
    """Append-only JSONL file. On resume, rows past the restored step are dropped (they are redone)."""

    def __init__(self, path: str | pathlib.Path, resume_step: int | None = None):
        self.path = pathlib.Path(path)
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, self.path)
        elif resume_step is None and self.path.exists():
            self.path.unlink()  # a fresh run in a directory without checkpoints starts a fresh log
        self._file = open(self.path, "a", buffering=1)

    def write(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")

    def close(self) -> None:
        self._file.close()


def read_metrics(path: str | pathlib.Path) -> list[dict[str, Any]]:
    """All rows of a metrics.jsonl file (a torn last line from a killed run is skipped)."""
    rows = []
    for line in pathlib.Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def iter_series(rows: list[dict[str, Any]], key: str, split: str | None = None) -> Iterator[tuple[int, float]]:
    """(step, value) pairs of ``key`` from training rows (split None) or evaluation rows of ``split``."""
    for r in rows:
        if r.get("split") == split and isinstance(r.get(key), (int, float)):
            yield r["step"], r[key]
