"""Optimizers on the default FNO / Darcy job, each tuned on its own grid: a fair comparison of ours.

Protocol (configs/experiment/optimizers_darcy.yaml; the fair-comparison rules of Wen, Hall, Ma, Liang,
"Fantastic Pretraining Optimizers and Where to Find Them", arXiv 2509.02046, reference
lpn_cgs_optim.md 6.2): every optimizer is tuned separately on a small grid of learning rates and
weight decays with a Hydra sweep; all share the budget of the default job (500 Darcy pairs at
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
import pathlib

from experiments.errors import UserInputError
from experiments.tables.common import (Run, Table, bar_chart, format_metric, format_seconds, is_finite,
                                       markdown_table, read_runs, sort_key_best_first)

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


def build(args: argparse.Namespace) -> Table:
    runs = read_runs(args.sweeps)
    best = best_per_optimizer(runs)
    if not best:
        raise UserInputError("none of the given runs has a results.json with an objective; run the sweeps first "
                             "(see `python -m experiments.table optimizers_darcy --help`)")
    timing = {} if args.no_timing else time_steps(list(best), args.timing_steps)

    header = ["optimizer", "lr", "weight decay", "grid", "val rel_l2 (chosen on)", "test rel_l2 s=64",
              "test s=127 (zero-shot)", "optimizer state", "step time", "notes"]
    rows, csv_rows, series_test = [], [], []
    for name, (run, group) in sorted(best.items(), key=lambda kv: sort_key_best_first(
            kv[1][0].metric(_test_split(kv[1][0]), METRIC), "min")):
        lr, wd = _setting(run)
        test = run.metric(_test_split(run), METRIC)
        zero_shot = run.metric("test_s127", METRIC)
        grid = sorted({_setting(r) for r in group if r.config is not None}, key=str)
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
        t = timing.get(name, {})
        step_s = t["ms_per_step"] / 1e3 if t else run.cost("seconds_per_step")
        state_mb = run.cost("optimizer_state_mb") if run.cost("optimizer_state_mb") is not None else t.get("optimizer_state_mb")
        params_mb = run.cost("params_mb")
        state = (f"{state_mb:.1f} MB" + (f" ({state_mb / params_mb:.1f}x params)" if params_mb else "")
                 if state_mb is not None else "")
        rows.append([name, f"{lr:g}" if lr is not None else "", f"{wd:g}" if wd is not None else "",
                     str(len(grid)), format_metric(run.objective["value"]), format_metric(test),
                     format_metric(zero_shot), state, format_seconds(step_s), "; ".join(notes)])
        csv_rows.append({"optimizer": name, "learning_rate": lr, "weight_decay": wd, "grid_size": len(grid),
                         "val_rel_l2": run.objective["value"], "test_rel_l2_s64": test,
                         "test_rel_l2_s127": zero_shot, "optimizer_state_mb": state_mb, "params_mb": params_mb,
                         "step_seconds_timed_here": t["ms_per_step"] / 1e3 if t else None,
                         "step_seconds_in_sweep": run.cost("seconds_per_step"), "run_dir": str(run.path),
                         "notes": "; ".join(notes)})
        series_test.append((name, test))

    lines = ["### Optimizers on the default FNO / Darcy job (each tuned on its own grid; all measured here)", "",
             markdown_table(header, rows), "",
             "Protocol: configs/experiment/optimizers_darcy.yaml. Same budget (15 epochs, batch 20, 500 pairs "
             "at 64 x 64) and schedule family (1 epoch warm-up, linear decay) for all; each optimizer's lr and "
             "weight decay chosen by validation rel_l2 at the end of training (100 validation pairs), then read "
             "on the 100 test pairs. Rows ordered by test error. "
             + ("Step time: measured by this command, all optimizers in one process, the default job's model "
                "and batch." if timing else "Step time: from the sweep jobs (different load; see the CSV).")]
    if timing:
        t0 = next(iter(timing.values()))
        lines.append(f"Timed on {t0['backend']} ({t0['device']}), jax {t0['jax']}.")

    def plot(path: pathlib.Path) -> None:
        bar_chart(path, [n for n, _ in series_test], [("test rel_l2 at s=64", [v for _, v in series_test], False)],
                  ylabel="relative L2 test error", title="Optimizers on FNO / Darcy (default job), each tuned",
                  note="chosen on validation, read on test; all measured here")

    columns = ["optimizer", "learning_rate", "weight_decay", "grid_size", "val_rel_l2", "test_rel_l2_s64",
               "test_rel_l2_s127", "optimizer_state_mb", "params_mb", "step_seconds_timed_here",
               "step_seconds_in_sweep", "run_dir", "notes"]
    return Table(name="optimizers_darcy", markdown="\n".join(lines), csv_columns=columns, csv_rows=csv_rows,
                 plot=plot)


def _test_split(run: Run) -> str:
    """The test split at the training resolution (the objective is on the validation split)."""
    res = run.config_value("data.train_resolution", 64)
    return f"test_s{res}"
