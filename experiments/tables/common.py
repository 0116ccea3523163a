"""What every table shares: reading run directories, formatting numbers, writing Markdown, CSV and PNG.

A *run directory* is a Hydra output directory written by ``python -m experiments.train``::

    <run>/.hydra/config.yaml      the composed config
    <run>/.hydra/overrides.yaml   the command-line overrides, a YAML list of "key=value" strings
    <run>/results.json            objective, metrics per split, n_params, step, epochs, cost
                                  (absent while a run is unfinished or after it failed)

A *multirun directory* holds ``multirun.yaml`` and one run directory per job: ``0/``, ``1/``, ...

Reading is tolerant: a missing optional key gives ``None`` (an empty cell), a metric stored as the
string ``"nan"`` or ``"inf"`` reads as that float. Bad user input (a directory that does not exist)
raises ``UserInputError``, which ``python -m experiments.table`` prints on one line (exit status 2).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import pathlib
from typing import Any, Callable, Iterable, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from experiments.errors import UserInputError

ABSENT = object()  # the default of Run.config_value: the key is not in the config


# --------------------------------------------------------------------------------------------------
# Runs


def as_float(value: Any) -> float | None:
    """A metric value as a float: numbers as they are, strings such as ``"nan"``/``"inf"``/``"1e-3"``
    parsed; ``None`` for anything else (missing, a bool, a dict)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def is_finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


@dataclasses.dataclass
class Run:
    """One run directory, read once. ``results`` is ``None`` when results.json is absent or unreadable
    (``status`` then says which); ``config`` is ``None`` when .hydra/config.yaml is (``config_error``)."""

    path: pathlib.Path
    label: str                        # the path as the user gave it (shown in tables)
    results: dict | None
    status: str                       # "ok", "no results.json" or "unreadable results.json (...)"
    config: DictConfig | None
    config_error: str | None
    overrides: list[str]

    # results.json -------------------------------------------------------------------------------

    def metric(self, split: str, name: str) -> float | None:
        """``metrics[split][name]`` as a float (``None`` if absent)."""
        split_metrics = ((self.results or {}).get("metrics") or {}).get(split)
        return as_float(split_metrics.get(name)) if isinstance(split_metrics, dict) else None

    def split_metrics(self, split: str) -> dict[str, float | None]:
        """All metrics of one split, in the order results.json lists them."""
        split_metrics = ((self.results or {}).get("metrics") or {}).get(split)
        if not isinstance(split_metrics, dict):
            return {}
        return {name: as_float(v) for name, v in split_metrics.items()}

    @property
    def splits(self) -> list[str]:
        metrics = (self.results or {}).get("metrics")
        return list(metrics) if isinstance(metrics, dict) else []

    @property
    def objective(self) -> dict | None:
        """``{"split", "metric", "mode", "value"}`` with ``value`` a float or ``None``; ``None`` when
        results.json has no usable objective. A missing value falls back to ``metrics[split][metric]``."""
        obj = (self.results or {}).get("objective")
        if not isinstance(obj, dict) or "split" not in obj or "metric" not in obj:
            return None
        value = as_float(obj.get("value"))
        if value is None:
            value = self.metric(obj["split"], obj["metric"])
        mode = obj.get("mode", "min")
        return {"split": str(obj["split"]), "metric": str(obj["metric"]),
                "mode": mode if mode in ("min", "max") else "min", "value": value}

    @property
    def n_params(self) -> int | None:
        n = (self.results or {}).get("n_params")
        return int(n) if isinstance(n, (int, float)) and not isinstance(n, bool) else None

    @property
    def epochs(self) -> float | None:
        return as_float((self.results or {}).get("epochs"))

    @property
    def step(self) -> int | None:
        s = as_float((self.results or {}).get("step"))
        return int(s) if is_finite(s) else None

    def cost(self, key: str) -> Any:
        """``cost[key]`` of results.json, or ``None``."""
        cost = (self.results or {}).get("cost")
        return cost.get(key) if isinstance(cost, dict) else None

    # .hydra/config.yaml -------------------------------------------------------------------------

    def config_value(self, key: str, default: Any = ABSENT) -> Any:
        """The config value at the dotted ``key`` (lists and dicts as plain Python containers), or
        ``default`` when the config, the key or its interpolation is missing."""
        if self.config is None:
            return default
        value = OmegaConf.select(self.config, key, default=ABSENT, throw_on_resolution_failure=False)
        if value is ABSENT:
            return default
        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=False)
        return value


def read_run(path: str | pathlib.Path, label: str | None = None) -> Run:
    """Read one run directory (which must exist) without failing on missing or broken files."""
    path = pathlib.Path(path)
    results, status = None, "no results.json"
    results_path = path / "results.json"
    if results_path.is_file():
        try:
            results = json.loads(results_path.read_text())
            if not isinstance(results, dict):
                raise ValueError("not a JSON object")
            status = "ok"
        except (ValueError, OSError) as e:
            results, status = None, f"unreadable results.json ({type(e).__name__})"
    config, config_error = None, "config not found"
    config_path = path / ".hydra" / "config.yaml"
    if config_path.is_file():
        try:
            loaded = OmegaConf.load(config_path)
            if isinstance(loaded, DictConfig):
                config, config_error = loaded, None
            else:
                config_error = "config is not a mapping"
        except Exception as e:  # noqa: BLE001 -- any YAML/OmegaConf error means "unreadable"
            config_error = f"unreadable config ({type(e).__name__})"
    overrides: list[str] = []
    overrides_path = path / ".hydra" / "overrides.yaml"
    if overrides_path.is_file():
        try:
            loaded = OmegaConf.to_container(OmegaConf.load(overrides_path))
            overrides = [str(o) for o in loaded] if isinstance(loaded, list) else []
        except Exception:  # noqa: BLE001 -- an unreadable overrides file reads as no overrides
            overrides = []
    return Run(path=path, label=label if label is not None else str(path), results=results,
               status=status, config=config, config_error=config_error, overrides=overrides)


def job_dirs(multirun: pathlib.Path) -> list[pathlib.Path]:
    """The numbered job subdirectories ``0/, 1/, ...`` of a Hydra multirun directory, in job order."""
    if not multirun.is_dir():
        return []
    jobs = [p for p in multirun.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(jobs, key=lambda p: int(p.name))


def is_run_dir(path: pathlib.Path) -> bool:
    return (path / ".hydra").is_dir() or (path / "results.json").is_file()


def existing_dir(path: str | pathlib.Path, what: str) -> pathlib.Path:
    """``path`` as a Path, or a UserInputError naming it when it is not a directory."""
    p = pathlib.Path(path)
    if not p.exists():
        raise UserInputError(f"{what} {str(path)!r} does not exist")
    if not p.is_dir():
        raise UserInputError(f"{what} {str(path)!r} is not a directory")
    return p


def read_runs(paths: Iterable[str]) -> list[Run]:
    """Run directories given on the command line; a multirun directory stands for all its jobs."""
    runs = []
    for given in paths:
        p = existing_dir(given, "run directory")
        if is_run_dir(p):
            runs.append(read_run(p, label=given))
        elif jobs := job_dirs(p):
            runs.extend(read_run(j, label=str(pathlib.Path(given) / j.name)) for j in jobs)
        else:
            raise UserInputError(f"{given!r} is not a run directory (no .hydra/ or results.json) nor a "
                                 f"Hydra multirun directory (no job subdirectories 0/, 1/, ...)")
    return runs


# --------------------------------------------------------------------------------------------------
# Formatting


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


# --------------------------------------------------------------------------------------------------
# Output


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub Markdown table; ``|`` inside a cell is escaped."""
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    lines = [line(header), "|" + "|".join("---" for _ in header) + "|"]
    lines += [line(r) for r in rows]
    return "\n".join(lines)


def csv_cell(value: Any) -> str:
    """Raw values for CSV: full float precision, ``nan``/``inf`` spelled out, ``None`` empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


@dataclasses.dataclass
class Table:
    """A rendered table: the Markdown shown to the user, the raw values for CSV, and its figure.

    ``plot(path)`` draws the PNG. ``write(out_dir)`` saves ``<name>.md``, ``<name>.csv`` and
    ``<name>.png`` there.
    """

    name: str
    markdown: str
    csv_columns: list[str]
    csv_rows: list[dict[str, Any]]
    plot: Callable[[pathlib.Path], None]

    def write(self, out_dir: pathlib.Path) -> list[pathlib.Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        md, csv_path, png = (out_dir / f"{self.name}{ext}" for ext in (".md", ".csv", ".png"))
        md.write_text(self.markdown + "\n")
        with csv_path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(self.csv_columns)
            for row in self.csv_rows:
                writer.writerow([csv_cell(row.get(c)) for c in self.csv_columns])
        self.plot(png)
        return [md, csv_path, png]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finite(values: Iterable[float | None]) -> list[float]:
    return [v for v in values if is_finite(v)]


def _use_log_scale(values: Iterable[float | None], ratio: float = 8.0) -> bool:
    """Log scale when every finite value is positive and they span at least ``ratio``."""
    v = _finite(values)
    return bool(v) and min(v) > 0 and max(v) / min(v) >= ratio


def bar_chart(path: pathlib.Path, categories: Sequence[str],
              series: Sequence[tuple[str, Sequence[float | None], bool]], ylabel: str, title: str,
              note: str | None = None, missing: str | None = None) -> None:
    """Grouped bars: one group per category, one bar per series ``(label, values, hatched)``.

    A non-finite value gets no bar but its name (``nan``) at the foot of its slot, a missing one
    (``None``) the text ``missing`` if given (else nothing). Hatched series are drawn lighter (published
    numbers, against solid measured ones). The y axis is logarithmic when the values span a decade.
    """
    plt = _pyplot()
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
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    if legend:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="0.35")
    fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def line_chart(path: pathlib.Path, xlabel: str,
               series: Sequence[tuple[str, Sequence[float], Sequence[float | None]]], ylabel: str,
               title: str, note: str | None = None) -> None:
    """One line with markers per series ``(label, xs, ys)``; points with a missing or non-finite y are
    left out (say which in ``note``, printed at the foot). Axes are logarithmic when their values are
    positive and span a factor 8 or more."""
    plt = _pyplot()
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
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if any(label for label, _, _ in series):
        ax.legend(fontsize=8)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="0.35")
    fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def convergence_chart(path: pathlib.Path, xlabel: str,
                      series: Sequence[tuple[str, Sequence[float], Sequence[float]]], ylabel: str,
                      title: str, levels: Sequence[float] = (), note: str | None = None) -> None:
    """Convergence curves: one line (no markers) per series ``(label, xs, ys)`` on a logarithmic y
    axis; points with a non-finite or non-positive y are left out. ``levels`` are drawn as faint
    dotted horizontal lines (the targets a table reports), ``note`` at the foot."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    styles = ("-", "--", "-.", ":")
    for i, (label, xs, ys) in enumerate(series):
        pts = [(x, y) for x, y in zip(xs, ys) if is_finite(y) and y > 0]
        if pts:
            ax.plot(*zip(*pts), styles[i % len(styles)], color=f"C{i % 10}", lw=1.6, label=label)
    ax.set_yscale("log")
    for level in levels:
        ax.axhline(level, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    if any(label for label, _, _ in series):
        ax.legend(fontsize=8)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="0.35")
    fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
