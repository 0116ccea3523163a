"""The tables' figures: grouped bars, lines against a swept value, convergence curves (PNG, Agg).

Every figure ends the same way: ``label_axes`` for each axes (labels, title, grid, legend), then
``finish_figure`` (the foot note, tight layout, save, close). Matplotlib is imported on first use
(``pyplot()``), so a table that only prints Markdown does not pay for it.
"""
from __future__ import annotations

import math
import pathlib
from typing import Any, Iterable, Mapping, Sequence

from experiments.tables.runs import is_finite


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def label_axes(ax, *, xlabel: str | None = None, ylabel: str | None = None, title: str | None = None,
               title_size: float | None = None, grid: Mapping[str, Any] | None = None,
               legend: Mapping[str, Any] | None = None) -> None:
    """Axis labels, the title (``title_size`` points, else matplotlib's default), the grid
    (``ax.grid(True, **grid)``) and the legend (``ax.legend(**legend)``); ``None`` leaves one out."""
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title, **({} if title_size is None else {"fontsize": title_size}))
    if grid is not None:
        ax.grid(True, **grid)
    if legend is not None:
        ax.legend(**legend)


def finish_figure(fig, path: pathlib.Path, *, note: str | None = None, dpi: int = 100) -> pathlib.Path:
    """Write ``note`` small at the foot, lay the figure out, save it as ``path`` (PNG) and close it."""
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="0.35")
    fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def _finite(values: Iterable[float | None]) -> list[float]:
    return [v for v in values if is_finite(v)]


def _use_log_scale(values: Iterable[float | None], ratio: float = 8.0) -> bool:
    """Log scale when every finite value is positive and they span at least ``ratio``."""
    v = _finite(values)
    return bool(v) and min(v) > 0 and max(v) / min(v) >= ratio


def bar_chart(path: pathlib.Path, categories: Sequence[str],
              series: Sequence[tuple[str, Sequence[float | None], bool]], ylabel: str, title: str,
              note: str | None = None, missing: str | None = None) -> pathlib.Path:
    """Grouped bars: one group per category, one bar per series ``(label, values, hatched)``.

    A non-finite value gets no bar but its name (``nan``) at the foot of its slot, a missing one
    (``None``) the text ``missing`` if given (else nothing). Hatched series are drawn lighter (published
    numbers, against solid measured ones). The y axis is logarithmic when the values span a decade.
    """
    plt = pyplot()
    n_cat, n_ser = len(categories), max(len(series), 1)
    long_labels = max((len(c) for c in categories), default=0) > 12
    per_category = max(0.45 * n_ser, 1.1 if long_labels else 0.6)
    legend = len(series) > 1
    fig, ax = plt.subplots(figsize=(min(max(6.0, per_category * n_cat + 2 + 2 * legend), 18), 4.8))
    width = 0.8 / n_ser
    log = _use_log_scale([v for _, values, _ in series for v in values], ratio=10.0)
    for i, (label, values, hatched) in enumerate(series):
        xs = [c + (i - (n_ser - 1) / 2) * width for c in range(n_cat)]
        heights = [v if is_finite(v) else float("nan") for v in values]
        ax.bar(xs, heights, width * 0.92, label=label, color=f"C{i % 10}",
               alpha=0.45 if hatched else 0.95, hatch="//" if hatched else None,
               edgecolor=f"C{i % 10}")
        for x, v in zip(xs, values):
            mark = missing if v is None else (None if math.isfinite(v) else str(v))
            if mark:
                ax.annotate(mark, (x, 0.01), xycoords=("data", "axes fraction"), ha="center",
                            va="bottom", fontsize=7, rotation=90, color="0.4")
    if log:
        ax.set_yscale("log")
    ax.set_xlim(-0.6, n_cat - 0.4)      # keep the slots of trailing missing values in view
    ax.set_xticks(range(n_cat))
    ax.set_xticklabels(categories, rotation=30 if long_labels else 0,
                       ha="right" if long_labels else "center", fontsize=8 if long_labels else 10)
    label_axes(ax, ylabel=ylabel, title=title, title_size=10, grid=dict(axis="y", which="both", alpha=0.3),
               legend=dict(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0)) if legend else None)
    return finish_figure(fig, path, note=note)


def line_chart(path: pathlib.Path, xlabel: str,
               series: Sequence[tuple[str, Sequence[float], Sequence[float | None]]], ylabel: str,
               title: str, note: str | None = None) -> pathlib.Path:
    """One line with markers per series ``(label, xs, ys)``; points with a missing or non-finite y are
    left out (say which in ``note``, printed at the foot). Axes are logarithmic when their values are
    positive and span a factor 8 or more."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs_all, ys_all = [], []
    for i, (label, xs, ys) in enumerate(series):
        pts = sorted((x, y) for x, y in zip(xs, ys) if is_finite(y))
        xs_all += [x for x, _ in pts]
        ys_all += [y for _, y in pts]
        if pts:
            ax.plot(*zip(*pts), "o-", color=f"C{i % 10}", label=label or None)
    if _use_log_scale(xs_all):
        ax.set_xscale("log")
        ax.set_xticks(sorted(set(xs_all)))
        ax.set_xticklabels([f"{x:g}" for x in sorted(set(xs_all))])
        ax.minorticks_off()
    if _use_log_scale(ys_all, ratio=10.0):
        ax.set_yscale("log")
    if not ys_all:
        ax.text(0.5, 0.5, "no job has a finite objective", ha="center", transform=ax.transAxes)
    label_axes(ax, xlabel=xlabel, ylabel=ylabel, title=title, title_size=10,
               grid=dict(which="both", alpha=0.3),
               legend=dict(fontsize=8) if any(label for label, _, _ in series) else None)
    return finish_figure(fig, path, note=note)


def convergence_chart(path: pathlib.Path, xlabel: str,
                      series: Sequence[tuple[str, Sequence[float], Sequence[float]]], ylabel: str,
                      title: str, levels: Sequence[float] = (), note: str | None = None) -> pathlib.Path:
    """Convergence curves: one line (no markers) per series ``(label, xs, ys)`` on a logarithmic y
    axis; points with a non-finite or non-positive y are left out. ``levels`` are drawn as faint
    dotted horizontal lines (the targets a table reports), ``note`` at the foot."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    styles = ("-", "--", "-.", ":")
    for i, (label, xs, ys) in enumerate(series):
        pts = [(x, y) for x, y in zip(xs, ys) if is_finite(y) and y > 0]
        if pts:
            ax.plot(*zip(*pts), styles[i % len(styles)], color=f"C{i % 10}", lw=1.6, label=label)
    ax.set_yscale("log")
    for level in levels:
        ax.axhline(level, color="0.6", lw=0.8, ls=":")
    label_axes(ax, xlabel=xlabel, ylabel=ylabel, title=title, title_size=10,
               grid=dict(which="major", alpha=0.3),
               legend=dict(fontsize=8) if any(label for label, _, _ in series) else None)
    return finish_figure(fig, path, note=note)
