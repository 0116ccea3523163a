"""Numbers as table cells: metrics, durations, counts, plain numbers; and the best-first sort key.

Every function takes ``None`` (a missing value) and gives an empty cell; a non-finite metric is
spelled out (``nan``, ``inf``) rather than hidden.
"""
from __future__ import annotations

import math
from typing import Any

from experiments.tables.runs import as_float


def format_metric(value: float | None) -> str:
    """4 decimals (``0.0108``) from 1e-3 up; 4 significant digits in scientific notation below
    (``2.340e-04``) and from 1e4; ``nan``/``inf`` as such; ``""`` when missing."""
    if value is None:
        return ""
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e4:
        return f"{value:.4f}"
    return f"{value:.3e}"


def format_seconds(seconds: Any) -> str:
    """A duration with a unit that fits: ``144 ms``, ``12.3 s``, ``5 min 03 s``, ``2 h 05 min``."""
    s = as_float(seconds)
    if s is None or not math.isfinite(s) or s < 0:
        return ""
    if s < 1e-3:
        return f"{s * 1e6:.3g} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    if s < 60:
        return f"{s:.3g} s"
    if s < 3600:
        m, sec = divmod(round(s), 60)
        return f"{m} min {sec:02d} s"
    h, m = divmod(round(s / 60), 60)
    return f"{h} h {m:02d} min"


def format_count(n: int | None) -> str:
    """An integer with thousands separators (``2,368,001``)."""
    return "" if n is None else f"{n:,}"


def format_number(x: float | None) -> str:
    """A plain number without trailing zeros (``500``, ``12.5``)."""
    return "" if x is None else f"{x:g}"


def sort_key_best_first(value: float | None, mode: str) -> tuple[int, float]:
    """Sort key putting the best finite value first (``mode`` "min" or "max"), non-finite values
    after the finite ones and missing values last."""
    if value is None:
        return (2, 0.0)
    if not math.isfinite(value):
        return (1, 0.0)
    return (0, value if mode == "min" else -value)
