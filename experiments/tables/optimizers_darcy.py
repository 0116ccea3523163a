"""Optimizers on the default FNO / Darcy job, each tuned on its own grid: a fair comparison of ours.

Protocol (configs/experiment/optimizers_darcy.yaml; the fair-comparison rules of Wen, Hall, Ma, Liang,
"Fantastic Pretraining Optimizers and Where to Find Them", arXiv 2509.02046; code
marin-community/marin, branch kaiyue/optimizers): every optimizer is tuned separately on a small
grid of learning rates and weight decays with a Hydra sweep; all share the budget of the default job (500 Darcy pairs at
64 x 64, 15 epochs of batch 20, FNO modes 12 / width 32) and the schedule family (one epoch of
linear warm-up, then linear decay to 0); each optimizer's setting is chosen on a validation split
(100 pairs, ``data.n_val``) at the END of training, and only then read on the test split::

    python -m experiments.train -m experiment=optimizers_darcy optim=<name> schedule.value=... \\
        optim.weight_decay=... hydra.sweep.dir=multirun/optimizers_darcy/<name>     (one per optimizer)
    python -m experiments.table optimizers_darcy multirun/optimizers_darcy/*

Every number is *measured* here; no paper reports this comparison. Columns: the chosen learning
rate and weight decay, the grid size, the best validation error and the test errors of that
setting (at 64, and zero-shot at 127), the optimizer-state memory (Lion keeps one moment, Adam
two), and the time per training step. The step times are measured by this command itself, every
optimizer in the same process one after the other (``--no-timing`` skips it), because the sweep
jobs ran at different times under different load; the sweeps' own times are in the CSV.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import pathlib
from typing import Any

from experiments.errors import UserInputError
from experiments.tables.figures import bar_chart
from experiments.tables.formatting import format_metric, format_seconds, sort_key_best_first
from experiments.tables.output import Table, markdown_table
from experiments.tables.runs import Run, is_finite, read_runs

METRIC = "rel_l2"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweeps", nargs="+", metavar="MULTIRUN_DIR",
                        help="the sweeps of `experiment=optimizers_darcy`, one per optimizer (or any runs)")
    parser.add_argument("--no-timing", action="store_true",
                        help="do not time each optimizer's training step here (about 20 s each on a CPU)")
    parser.add_argument("--timing-steps", type=int, default=10, help="timed steps per optimizer")


def optimizer_name(run: Run) -> str:
    """The ``optim=`` option of a run (from its overrides), else the last part of its target, else
    (a job that has not written its config yet) the name of its sweep directory."""
    for o in run.overrides:
        key, _, value = o.lstrip("+").partition("=")
        if key == "optim":
            return value
    target = run.config_value("optim._target_", "")
    return target.rsplit(".", 1)[-1] if isinstance(target, str) and target else run.path.parent.name


def _setting(run: Run) -> tuple:
    return run.config_value("schedule.value", None), run.config_value("optim.weight_decay", None)


def best_per_optimizer(runs: list[Run]) -> dict[str, tuple[Run, list[Run]]]:
    """``{optimizer: (the run with the best objective, all its runs)}``, optimizers in order of first appearance."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(optimizer_name(run), []).append(run)
    out = {}
    for name, group in groups.items():
        scored = [r for r in group if r.objective]
        if not scored:
            continue
        out[name] = (min(scored, key=lambda r: sort_key_best_first(r.objective["value"], r.objective["mode"])),
                     group)
    return out


def time_steps(names: list[str], steps: int) -> dict[str, dict]:
    """Each optimizer's FNO training step (the default job's model, batch 20, 64 x 64), timed back to back."""
    from experiments.bench.fno import bench_fno

    return {name: bench_fno(batch=20, resolution=64, steps=steps, repeats=2, optimizer=name) for name in names}


@dataclasses.dataclass
class Chosen:
    """An optimizer's chosen setting (its best run on validation) and what the table shows of it."""

    name: str
    lr: float | None
    weight_decay: float | None
    grid_size: int
    val: float | None
    test: float | None
    zero_shot: float | None
    state_mb: float | None
    params_mb: float | None
    step_seconds: float | None             # timed here, else the sweep's
    step_seconds_timed_here: float | None
    step_seconds_in_sweep: Any
    run_dir: str
    notes: list[str]


@dataclasses.dataclass
class Comparison:
    """The chosen settings, best test error first, and where the step times were measured (``None``:
    not timed here)."""

    optimizers: list[Chosen]
    timed_on: dict | None


def _notes(run: Run, group: list[Run], grid: list[tuple]) -> list[str]:
    lr, wd = _setting(run)
    finished = sum(r.status == "ok" for r in group)
    notes = []
    if finished < len(group):
        notes.append(f"{len(group) - finished} of {len(group)} runs without results")
    if any(not is_finite(r.objective["value"]) for r in group if r.objective):
        notes.append("diverged at some settings")
    at_edge = [k for k, v, values in (("lr", lr, [g[0] for g in grid if g[0] is not None]),
                                      ("wd", wd, [g[1] for g in grid if g[1] is not None]))
               if len(set(values)) > 1 and v in (min(values), max(values))]
    if at_edge:
        notes.append(f"best at the grid's edge ({', '.join(at_edge)})")
    return notes


def chosen(name: str, run: Run, group: list[Run], timing: dict) -> Chosen:
    """The record of optimizer ``name``: its best run ``run`` among ``group``; ``timing`` its step timed
    here (``{}`` if not)."""
    lr, wd = _setting(run)
    grid = sorted({_setting(r) for r in group if r.config is not None}, key=str)
    state_mb = (run.cost("optimizer_state_mb") if run.cost("optimizer_state_mb") is not None
                else timing.get("optimizer_state_mb"))
    timed = timing["ms_per_step"] / 1e3 if timing else None
    return Chosen(name=name, lr=lr, weight_decay=wd, grid_size=len(grid), val=run.objective["value"],
                  test=run.metric(_test_split(run), METRIC), zero_shot=run.metric("test_s127", METRIC),
                  state_mb=state_mb, params_mb=run.cost("params_mb"),
                  step_seconds=timed if timing else run.cost("seconds_per_step"), step_seconds_timed_here=timed,
                  step_seconds_in_sweep=run.cost("seconds_per_step"), run_dir=str(run.path),
                  notes=_notes(run, group, grid))


def collect(runs: list[Run], timing: dict[str, dict] | None = None) -> Comparison:
    """Each optimizer's chosen setting; ``timing`` from ``time_steps`` (``None``: not timed here)."""
    best = best_per_optimizer(runs)
    if not best:
        raise UserInputError("none of the given runs has a results.json with an objective; run the sweeps first "
                             "(see `python -m experiments.table optimizers_darcy --help`)")
    timing = timing or {}
    ordered = sorted(best.items(), key=lambda kv: sort_key_best_first(
        kv[1][0].metric(_test_split(kv[1][0]), METRIC), "min"))
    return Comparison([chosen(name, run, group, timing.get(name, {})) for name, (run, group) in ordered],
                      next(iter(timing.values())) if timing else None)


def _state(c: Chosen) -> str:
    if c.state_mb is None:
        return ""
    return f"{c.state_mb:.1f} MB" + (f" ({c.state_mb / c.params_mb:.1f}x params)" if c.params_mb else "")


def render(comparison: Comparison) -> Table:
    """One row per optimizer, in order of the test error of its chosen setting."""
    header = ["optimizer", "lr", "weight decay", "grid", "val rel_l2 (chosen on)", "test rel_l2 s=64",
              "test s=127 (zero-shot)", "optimizer state", "step time", "notes"]
    rows = [[c.name, f"{c.lr:g}" if c.lr is not None else "", f"{c.weight_decay:g}" if c.weight_decay is not None
             else "", str(c.grid_size), format_metric(c.val), format_metric(c.test), format_metric(c.zero_shot),
             _state(c), format_seconds(c.step_seconds), "; ".join(c.notes)] for c in comparison.optimizers]
    csv_rows = [{"optimizer": c.name, "learning_rate": c.lr, "weight_decay": c.weight_decay,
                 "grid_size": c.grid_size, "val_rel_l2": c.val, "test_rel_l2_s64": c.test,
                 "test_rel_l2_s127": c.zero_shot, "optimizer_state_mb": c.state_mb, "params_mb": c.params_mb,
                 "step_seconds_timed_here": c.step_seconds_timed_here,
                 "step_seconds_in_sweep": c.step_seconds_in_sweep, "run_dir": c.run_dir,
                 "notes": "; ".join(c.notes)} for c in comparison.optimizers]
    timed = comparison.timed_on
    lines = ["### Optimizers on the default FNO / Darcy job (each tuned on its own grid; all measured here)", "",
             markdown_table(header, rows), "",
             "Protocol: configs/experiment/optimizers_darcy.yaml. Same budget (15 epochs, batch 20, 500 pairs "
             "at 64 x 64) and schedule family (1 epoch warm-up, linear decay) for all; each optimizer's lr and "
             "weight decay chosen by validation rel_l2 at the end of training (100 validation pairs), then read "
             "on the 100 test pairs. Rows ordered by test error. "
             + ("Step time: measured by this command, all optimizers in one process, the default job's model "
                "and batch." if timed else "Step time: from the sweep jobs (different load; see the CSV).")]
    if timed:
        lines.append(f"Timed on {timed['backend']} ({timed['device']}), jax {timed['jax']}.")
    columns = ["optimizer", "learning_rate", "weight_decay", "grid_size", "val_rel_l2", "test_rel_l2_s64",
               "test_rel_l2_s127", "optimizer_state_mb", "params_mb", "step_seconds_timed_here",
               "step_seconds_in_sweep", "run_dir", "notes"]
    return Table(name="optimizers_darcy", markdown="\n".join(lines), csv_columns=columns, csv_rows=csv_rows)


def plot(comparison: Comparison, out_dir: pathlib.Path) -> list[pathlib.Path]:
    """``optimizers_darcy.png``: the test error of each optimizer's chosen setting."""
    return [bar_chart(out_dir / "optimizers_darcy.png", [c.name for c in comparison.optimizers],
                      [("test rel_l2 at s=64", [c.test for c in comparison.optimizers], False)],
                      ylabel="relative L2 test error", title="Optimizers on FNO / Darcy (default job), each tuned",
                      note="chosen on validation, read on test; all measured here")]


def build(args: argparse.Namespace) -> Table:
    runs = read_runs(args.sweeps)
    names = list(best_per_optimizer(runs))
    timing = None if args.no_timing or not names else time_steps(names, args.timing_steps)
    comparison = collect(runs, timing)
    return render(comparison).with_plot(functools.partial(plot, comparison))


def _test_split(run: Run) -> str:
    """The test split at the training resolution (the objective is on the validation split)."""
    res = run.config_value("data.train_resolution", 64)
    return f"test_s{res}"
