"""A Hydra multirun directory as one table: each job's overrides against its objective and cost.

    python -m experiments.train --multirun model.width=16,32,64
    python -m experiments.table sweep multirun/<date>/<time>

One row per job directory (``0/``, ``1/``, ...), best first by the objective named in the jobs'
``results.json`` (``<split>/<metric>``, lower first for mode "min", higher first for "max"; a non-finite
objective after the finite ones; jobs without results.json, failed or unfinished, last with their
status). Columns: the job number; every override key set in any job (``.hydra/overrides.yaml``,
``hydra.*`` dropped); the objective; the other metrics of the objective's split; parameters; seconds
per step; train time; status. Every number is measured (none is published).

The figure plots the objective against the swept value when exactly one numeric override varies (one
line per combination of the other varying overrides), else the objective per job as bars.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import pathlib

from experiments.errors import UserInputError
from experiments.tables.figures import bar_chart, line_chart
from experiments.tables.formatting import format_count, format_metric, format_seconds, sort_key_best_first
from experiments.tables.output import Table, markdown_table
from experiments.tables.runs import Run, as_float, existing_dir, is_finite, is_run_dir, job_dirs, read_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("multirun", metavar="MULTIRUN_DIR",
                        help="a Hydra multirun directory (holding multirun.yaml and jobs 0/, 1/, ...)")


def parse_override(text: str) -> tuple[str, str] | None:
    """``"model.width=4"`` -> ``("model.width", "4")``; ``+key=v`` and ``++key=v`` -> ``("key", "v")``;
    ``~key`` (delete) -> ``("key", "~")``; ``None`` for ``hydra.*`` overrides."""
    key, sep, value = text.strip().partition("=")
    if key.startswith("~"):
        key, value = key[1:], "~" + value if sep else "~"
    key = key.lstrip("+")
    if key == "hydra" or key.startswith(("hydra.", "hydra/")):
        return None
    return key, value


def _load_jobs(path: str) -> list[Run]:
    multirun = existing_dir(path, "multirun directory")
    jobs = job_dirs(multirun)
    if jobs:
        return [read_run(j, label=j.name) for j in jobs]
    if is_run_dir(multirun):
        raise UserInputError(f"{path!r} is a single run directory, not a multirun directory: pass the "
                             f"directory holding the jobs 0/, 1/, ... (or use `python -m "
                             f"experiments.table fno_darcy {path}` for one run)")
    subdirs = sorted(p.name for p in multirun.iterdir() if p.is_dir())
    hint = f"; its subdirectories are {', '.join(subdirs[:8])}" if subdirs else ""
    raise UserInputError(f"{path!r} holds no job directories (0/, 1/, ...): expected a Hydra multirun "
                         f"directory such as multirun/<date>/<time>{hint}")


def _numeric(values: list[str | None]) -> list[float] | None:
    floats = [as_float(v) for v in values]
    return floats if all(f is not None for f in floats) else None


@dataclasses.dataclass
class Job:
    """One job of the sweep: its number, overrides, value of the sweep's objective, the other metrics of
    the objective's split, and its cost and status."""

    job: int
    overrides: dict[str, str]
    value: float | None
    metrics: dict[str, float | None]
    n_params: int | None
    seconds_per_step: float | None
    train_seconds: float | None
    status: str
    run_dir: str


@dataclasses.dataclass
class Sweep:
    """The records of a sweep: its jobs in job order and what they share."""

    multirun: str                                # as given on the command line
    jobs: list[Job]
    keys: list[str]                              # every override key, in order of first appearance
    varying: list[str]                           # the keys whose value differs between jobs
    objective: tuple[str, str, str]              # (split, metric, mode) that most jobs name
    objectives_named: list[tuple[str, str, str]]  # every objective some job names
    others: list[str]                            # the other metrics of the objective's split

    @property
    def objective_name(self) -> str:
        split, metric, _ = self.objective
        return f"{split}/{metric}" if split else metric


def collect(multirun: str, runs: list[Run]) -> Sweep:
    """The sweep's jobs (``runs`` in job order) read at the objective most of them name; a job naming
    another one is read at this one's split/metric."""
    overrides = [dict(kv for o in r.overrides if (kv := parse_override(o))) for r in runs]
    keys = list(dict.fromkeys(k for ov in overrides for k in ov))
    named = collections.Counter((o["split"], o["metric"], o["mode"]) for r in runs if (o := r.objective))
    (split, metric, mode), _ = named.most_common(1)[0] if named else (("", "objective", "min"), 0)
    values = [r.objective["value"] if r.objective and (r.objective["split"], r.objective["metric"])
              == (split, metric) else r.metric(split, metric) for r in runs]
    jobs = [Job(job=int(r.path.name), overrides=ov, value=v, metrics=r.split_metrics(split), n_params=r.n_params,
                seconds_per_step=as_float(r.cost("seconds_per_step")),
                train_seconds=as_float(r.cost("train_seconds")), status=r.status, run_dir=str(r.path))
            for r, ov, v in zip(runs, overrides, values)]
    return Sweep(multirun=multirun, jobs=jobs, keys=keys,
                 varying=[k for k in keys if len({ov.get(k) for ov in overrides}) > 1],
                 objective=(split, metric, mode), objectives_named=list(named),
                 others=list(dict.fromkeys(m for r in runs for m in r.split_metrics(split) if m != metric)))


def _rows(sweep: Sweep) -> tuple[list[list[str]], list[dict]]:
    """Markdown and CSV rows, best first (then by job number)."""
    split, _, mode = sweep.objective
    rows, csv_rows = [], []
    for j in sorted(sweep.jobs, key=lambda j: (sort_key_best_first(j.value, mode), j.job)):
        ov = j.overrides
        rows.append([str(j.job)] + [ov.get(k, "") for k in sweep.keys] + [format_metric(j.value)]
                    + [format_metric(j.metrics.get(m)) for m in sweep.others]
                    + [format_count(j.n_params), format_seconds(j.seconds_per_step),
                       format_seconds(j.train_seconds), j.status])
        csv_rows.append({"job": j.job, **{k: ov.get(k) for k in sweep.keys}, "objective": j.value,
                         "objective_name": sweep.objective_name, "mode": mode,
                         **{f"{split}/{m}": j.metrics.get(m) for m in sweep.others}, "n_params": j.n_params,
                         "seconds_per_step": j.seconds_per_step, "train_seconds": j.train_seconds,
                         "status": j.status, "run_dir": j.run_dir})
    return rows, csv_rows


def render(sweep: Sweep) -> Table:
    """One row per job, best first; the jobs without results last with their status."""
    split, _, mode = sweep.objective
    header = (["job"] + sweep.keys + [sweep.objective_name] + [f"{split}/{m}" for m in sweep.others]
              + ["params", "s/step", "train time", "status"])
    rows, csv_rows = _rows(sweep)
    finished = sum(j.status == "ok" for j in sweep.jobs)
    better = "lower" if mode == "min" else "higher"
    lines = [f"### Sweep {sweep.multirun}: {len(sweep.jobs)} jobs, {finished} with results", "",
             markdown_table(header, rows), "",
             f"All numbers measured here (none published), from each job's results.json. Objective "
             f"`{sweep.objective_name}`, {better} is better (mode {mode}); rows best first, non-finite "
             "objectives after the finite ones, jobs without results last. Override columns from "
             "each job's .hydra/overrides.yaml (hydra.* dropped)"
             + (f"; swept: {', '.join(sweep.varying)}." if sweep.varying else ".")]
    if len(sweep.objectives_named) > 1:
        lines.append(f"Jobs name different objectives "
                     f"({', '.join(f'{s}/{m}' for s, m, _ in sweep.objectives_named)}); "
                     f"each job is shown at `{sweep.objective_name}`.")
    columns = (["job"] + sweep.keys + ["objective", "objective_name", "mode"]
               + [f"{split}/{m}" for m in sweep.others]
               + ["n_params", "seconds_per_step", "train_seconds", "status", "run_dir"])
    return Table(name="sweep", markdown="\n".join(lines), csv_columns=columns, csv_rows=csv_rows)


def plot(sweep: Sweep, out_dir: pathlib.Path) -> list[pathlib.Path]:
    """``sweep.png``: the objective against the swept value when exactly one numeric override varies
    (one line per combination of the other varying overrides), else the objective per job as bars."""
    path, name = out_dir / "sweep.png", sweep.objective_name
    title = f"{name} ({'lower' if sweep.objective[2] == 'min' else 'higher'} is better)"
    source = f"sweep {pathlib.Path(sweep.multirun).resolve()}"
    numeric = [k for k in sweep.varying if _numeric([j.overrides.get(k) for j in sweep.jobs])]
    if len(numeric) != 1:
        labels = [f"{j.job}: " + ", ".join(f"{k}={j.overrides.get(k, '')}" for k in sweep.varying) if sweep.varying
                  else f"job {j.job}" for j in sweep.jobs]
        return [bar_chart(path, labels, [(name, [j.value for j in sweep.jobs], False)], ylabel=name,
                          title=title, note=source, missing="no results")]
    x_key = numeric[0]
    rest = [k for k in sweep.varying if k != x_key]
    groups: dict[str, list[Job]] = {}
    for j in sweep.jobs:
        groups.setdefault(", ".join(f"{k}={j.overrides.get(k, '')}" for k in rest), []).append(j)
    missing = [str(j.job) for j in sweep.jobs if not is_finite(j.value)]
    series = [(label, [as_float(j.overrides[x_key]) for j in group], [j.value for j in group])
              for label, group in groups.items()]
    return [line_chart(path, x_key, series, ylabel=name, title=title,
                       note=source + (f"; no finite objective (not plotted): job {', '.join(missing)}"
                                      if missing else ""))]


def build(args: argparse.Namespace) -> Table:
    sweep = collect(args.multirun, _load_jobs(args.multirun))
    return render(sweep).with_plot(functools.partial(plot, sweep))
