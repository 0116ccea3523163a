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
import pathlib

from experiments.errors import UserInputError
from experiments.tables.common import (Run, Table, as_float, bar_chart, existing_dir, format_count,
                                       format_metric, format_seconds, is_finite, is_run_dir, job_dirs,
                                       line_chart, markdown_table, read_run, sort_key_best_first)


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


def build(args: argparse.Namespace) -> Table:
    runs = _load_jobs(args.multirun)
    jobs = [int(r.path.name) for r in runs]
    overrides = [dict(kv for o in r.overrides if (kv := parse_override(o))) for r in runs]
    keys = list(dict.fromkeys(k for ov in overrides for k in ov))
    varying = [k for k in keys if len({ov.get(k) for ov in overrides}) > 1]

    # The objective most jobs name; a job naming another one is read at this one's split/metric.
    named = collections.Counter((o["split"], o["metric"], o["mode"])
                                for r in runs if (o := r.objective))
    (split, metric, mode), _ = named.most_common(1)[0] if named else (("", "objective", "min"), 0)
    objective_name = f"{split}/{metric}" if split else metric
    values = [r.objective["value"] if r.objective and (r.objective["split"], r.objective["metric"])
              == (split, metric) else r.metric(split, metric) for r in runs]
    others = list(dict.fromkeys(m for r in runs for m in r.split_metrics(split) if m != metric))

    order = sorted(range(len(runs)), key=lambda i: (sort_key_best_first(values[i], mode), jobs[i]))
    header = (["job"] + keys + [objective_name] + [f"{split}/{m}" for m in others]
              + ["params", "s/step", "train time", "status"])
    rows, csv_rows = [], []
    for i in order:
        run, ov = runs[i], overrides[i]
        cost = {k: as_float(run.cost(k)) for k in ("seconds_per_step", "train_seconds")}
        extra = run.split_metrics(split)
        rows.append([str(jobs[i])] + [ov.get(k, "") for k in keys] + [format_metric(values[i])]
                    + [format_metric(extra.get(m)) for m in others]
                    + [format_count(run.n_params), format_seconds(cost["seconds_per_step"]),
                       format_seconds(cost["train_seconds"]), run.status])
        csv_rows.append({"job": jobs[i], **{k: ov.get(k) for k in keys}, "objective": values[i],
                         "objective_name": objective_name, "mode": mode,
                         **{f"{split}/{m}": extra.get(m) for m in others}, "n_params": run.n_params,
                         **cost, "status": run.status, "run_dir": str(run.path)})

    finished = sum(r.status == "ok" for r in runs)
    better = "lower" if mode == "min" else "higher"
    lines = [f"### Sweep {args.multirun}: {len(runs)} jobs, {finished} with results", "",
             markdown_table(header, rows), "",
             f"All numbers measured here (none published), from each job's results.json. Objective "
             f"`{objective_name}`, {better} is better (mode {mode}); rows best first, non-finite "
             "objectives after the finite ones, jobs without results last. Override columns from "
             "each job's .hydra/overrides.yaml (hydra.* dropped)"
             + (f"; swept: {', '.join(varying)}." if varying else ".")]
    if len(named) > 1:
        lines.append(f"Jobs name different objectives ({', '.join(f'{s}/{m}' for s, m, _ in named)}); "
                     f"each job is shown at `{objective_name}`.")

    numeric = [k for k in varying if _numeric([ov.get(k) for ov in overrides])]

    def plot(path: pathlib.Path) -> None:
        title = f"{objective_name} ({better} is better)"
        source = f"sweep {pathlib.Path(args.multirun).resolve()}"
        if len(numeric) == 1:
            x_key = numeric[0]
            rest = [k for k in varying if k != x_key]
            groups: dict[str, list[int]] = {}
            for i, ov in enumerate(overrides):
                groups.setdefault(", ".join(f"{k}={ov.get(k, '')}" for k in rest), []).append(i)
            missing = [str(jobs[i]) for i in range(len(runs)) if not is_finite(values[i])]
            line_chart(path, x_key, [(label, [as_float(overrides[i][x_key]) for i in idx],
                                      [values[i] for i in idx]) for label, idx in groups.items()],
                       ylabel=objective_name, title=title,
                       note=source + (f"; no finite objective (not plotted): job {', '.join(missing)}"
                                      if missing else ""))
        else:
            labels = [f"{j}: " + ", ".join(f"{k}={ov.get(k, '')}" for k in varying) if varying
                      else f"job {j}" for j, ov in zip(jobs, overrides)]
            bar_chart(path, labels, [(objective_name, values, False)], ylabel=objective_name,
                      title=title, note=source, missing="no results")

    columns = (["job"] + keys + ["objective", "objective_name", "mode"]
               + [f"{split}/{m}" for m in others]
               + ["n_params", "seconds_per_step", "train_seconds", "status", "run_dir"])
    return Table(name="sweep", markdown="\n".join(lines), csv_columns=columns, csv_rows=csv_rows,
                 plot=plot)
