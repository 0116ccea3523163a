"""FNO paper, Darcy flow: relative L2 test error against resolution, the paper's rows beside ours.

Paper: Z. Li, N. Kovachki, K. Azizzadenesheli, B. Liu, K. Bhattacharya, A. Stuart, A. Anandkumar,
"Fourier Neural Operator for Parametric Partial Differential Equations", ICLR 2021 (arXiv 2010.08895),
Table 4 (Darcy flow a -> u, 1000 train / 100 test pairs, relative L2 test error at s = 85, 141, 211,
421). The table's rows FCN, PCA+NN, RBM, LNO and FNO are *published* numbers, copied from the
transcription of the paper's table in neuraloperator/neuraloperator:doc/source/theory_guide/fno.rst
(reference/operators.md 2.1); the paper also lists NN, GCN, GNO and MGNO rows, not transcribed there.

"FNO (ours)" rows are *measured*: one per run directory given, read from its ``results.json`` and
``.hydra/config.yaml``. Each column of the paper's table is a separate experiment, trained *and*
tested at resolution s (fourier_2d.py sets one ``s`` for both), so a run fills the column of the
resolution it was trained at: its objective, ``rel_l2`` of split ``test_s<train_resolution>``.
Evaluations of the same run at other resolutions are zero-shot super-resolution, a different
experiment: they are listed in the notes, never in the paper's columns. The notes also list every
deviation from the protocol that the run's config shows.

Protocol (configs/experiment/fno_darcy.yaml, after the original fourier_2d.py), one run per column::

    python -m experiments.train experiment=fno_darcy                          # s = 85
    python -m experiments.train experiment=fno_darcy data.train_resolution=141   # s = 141, ...
    python -m experiments.table fno_darcy outputs/<date>/<time> [...]

1000 train / 100 test pairs generated on a 421 x 421 grid and subsampled to s; FNO with 12 modes per
axis, width 32, 4 Fourier layers, domain padding 0.1 (9 cells at s = 85); pointwise Gaussian
normalisation; relative L2 loss; Adam, lr 1e-3, L2 weight decay 1e-4, lr halved every 100 epochs;
500 epochs of batch 20 (25,000 steps). This module runs nothing itself: a run takes hours on a GPU.
"""
from __future__ import annotations

import argparse
import math
import pathlib
import re
from typing import Any

from experiments.tables.common import (ABSENT, Run, Table, bar_chart, format_count, format_metric,
                                       format_number, format_seconds, markdown_table, read_runs)

RESOLUTIONS = (85, 141, 211, 421)
PAPER = "Li et al. 2021 (arXiv 2010.08895) Table 4"
# Relative L2 test error; None: not reported in the paper ("–").
PUBLISHED: dict[str, tuple[float | None, ...]] = {
    "FCN": (0.0253, 0.0493, 0.0727, 0.1097),
    "PCA+NN": (0.0299, 0.0298, 0.0298, 0.0299),
    "RBM": (0.0244, 0.0251, 0.0255, 0.0259),
    "LNO": (0.0520, 0.0461, 0.0445, None),
    "FNO": (0.0108, 0.0109, 0.0109, 0.0098),
}
METRIC = "rel_l2"
SPLIT = re.compile(r"^test_s(\d+)$")

# (config key, the paper's value). Keys absent from a run's config are not checked.
PROTOCOL: tuple[tuple[str, Any], ...] = (
    ("data.n_train", 1000),
    ("data.n_test", 100),
    ("data.pde.resolution", 421),
    ("data.pde.alpha", 2.0),
    ("data.pde.tau", 3.0),
    ("data.pde.a_pos", 12.0),
    ("data.pde.a_neg", 3.0),
    ("data.normalizer", "pointwise"),
    ("data.loss", "l2"),
    ("model.modes", 12),           # per axis: [12, 12]
    ("model.width", 32),
    ("model.n_layers", 4),
    ("model.padding", 0.1),
    ("optim.weight_decay", 1e-4),
    ("schedule.value", 1e-3),
    ("schedule.every_epochs", 100),
    ("schedule.gamma", 0.5),
    ("trainer.epochs", 500),
    ("trainer.batch_size", 20),
)
PROTOCOL_STEPS = 25_000    # 1000 / 20 * 500
# (config key of a _target_, a substring its last component must contain, what the paper used)
TARGETS = (
    ("model._target_", "fno", "FNO"),
    ("data.pde._target_", "darcy", "Darcy flow"),
    ("schedule._target_", "step", "step decay"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="*", metavar="RUN_DIR",
                        help="run directories of `python -m experiments.train experiment=fno_darcy` "
                             "(a multirun directory stands for all its jobs)")


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return "null" if value is None else str(value)


def _matches(value: Any, expected: Any) -> bool:
    if isinstance(value, list):
        return bool(value) and all(_matches(v, expected) for v in value)
    if isinstance(expected, str):
        return isinstance(value, str) and value.lower() == expected.lower()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isclose(value, expected, rel_tol=1e-9)


def protocol_notes(run: Run) -> list[str]:
    """The deviations from the paper's protocol that can be read from the run's config and results."""
    notes = [] if run.status == "ok" else [run.status]
    if run.config is None:
        return notes + [run.config_error or "config not found"]
    for key, expected in PROTOCOL:
        value = run.config_value(key)
        if value is not ABSENT and not _matches(value, expected):
            notes.append(f"{key}={_show(value)} (paper: {_show(expected)})")
    for key, fragment, paper in TARGETS:
        target = run.config_value(key, None)
        if isinstance(target, str) and fragment not in target.rsplit(".", 1)[-1].lower():
            notes.append(f"{key.rsplit('.', 1)[0]}: {target} (paper: {paper})")
    optim = run.config_value("optim._target_", None)
    if isinstance(optim, str) and optim.rsplit(".", 1)[-1].lower() != "adam":
        notes.append(f"optim: {optim} (paper: Adam with L2 weight decay)")
    max_steps = run.config_value("trainer.max_steps", None)
    if isinstance(max_steps, int) and max_steps != PROTOCOL_STEPS:
        notes.append(f"trainer.max_steps={max_steps} (paper: 500 epochs = {PROTOCOL_STEPS:,} steps)")
    groups = run.config_value("param_groups", None)
    if groups:
        notes.append("param_groups set")
    resumed = (run.results or {}).get("resumed_from_step")
    if isinstance(resumed, int) and resumed > 0:
        notes.append(f"resumed from step {resumed:,}")
    return notes


def trained_and_zero_shot(run: Run) -> tuple[int | None, float | None, dict[int, float | None]]:
    """(the resolution the run was trained at, its rel_l2 there, {other s: zero-shot rel_l2}).

    The training resolution is the objective's split ``test_s<s>`` (the operator task evaluates at
    its training resolution first), else the config's ``data.train_resolution``.
    """
    evaluated = {int(m.group(1)): run.metric(split, METRIC) for split in run.splits if (m := SPLIT.match(split))}
    objective = run.objective
    m = SPLIT.match(objective["split"]) if objective and objective["metric"] == METRIC else None
    trained = int(m.group(1)) if m else run.config_value("data.train_resolution", None)
    trained = trained if isinstance(trained, int) else None
    return trained, evaluated.pop(trained, None), evaluated


def _train_time(run: Run) -> str:
    time = format_seconds(run.cost("train_seconds"))
    device = run.cost("device_kind")
    return f"{time} ({device})" if time and device else time


def build(args: argparse.Namespace) -> Table:
    runs = read_runs(args.runs)
    measured = [trained_and_zero_shot(r) for r in runs]
    extra = sorted({s for s, _, _ in measured if s is not None} - set(RESOLUTIONS))
    resolutions = list(RESOLUTIONS) + extra

    header = ["model", "source"] + [f"s={s}" for s in resolutions] + ["params", "epochs",
                                                                       "train time", "notes"]
    rows, csv_rows = [], []
    for model, values in PUBLISHED.items():
        cells = dict(zip(RESOLUTIONS, values))
        rows.append([model, "published (Li et al. 2021, Table 4)"]
                    + [f"*{format_metric(cells[s])}*" if cells.get(s) is not None
                       else ("–" if s in cells else "") for s in resolutions]
                    + ["", "", "", ""])
        csv_rows.append({"model": model, "kind": "published", "source": PAPER,
                         **{f"{METRIC}_s{s}": cells.get(s) for s in resolutions}})
    for run, (trained, value, zero_shot) in zip(runs, measured):
        cells = {trained: value} if trained is not None else {}
        notes = protocol_notes(run)
        if zero_shot:
            notes.append("zero-shot " + ", ".join(f"s={s}: {format_metric(v)}" for s, v in sorted(zero_shot.items())))
        rows.append(["FNO (ours)", f"measured: {run.label}"]
                    + [format_metric(cells.get(s)) for s in resolutions]
                    + [format_count(run.n_params), format_number(run.epochs), _train_time(run),
                       "; ".join(notes)])
        csv_rows.append({"model": "FNO (ours)", "kind": "measured", "source": run.label,
                         **{f"{METRIC}_s{s}": cells.get(s) for s in resolutions},
                         "n_params": run.n_params, "epochs": run.epochs,
                         "train_seconds": run.cost("train_seconds"), "device": run.cost("device_kind"),
                         "notes": "; ".join(notes)})

    lines = ["### FNO paper, Darcy flow: relative L2 test error (Li et al., ICLR 2021, Table 4)", "",
             markdown_table(header, rows), "",
             f"*Italic*: published, {PAPER} (Li, Kovachki, Azizzadenesheli, Liu, Bhattacharya, "
             "Stuart, Anandkumar, \"Fourier Neural Operator for Parametric Partial Differential "
             "Equations\", ICLR 2021), 1000 train / 100 test pairs, as transcribed in "
             "neuraloperator/neuraloperator:doc/source/theory_guide/fno.rst; – : not reported. "
             f"Upright: measured here, each run in the column of the resolution it was trained and "
             f"tested at (`{METRIC}` of its objective split in results.json), as the paper's columns; "
             "its evaluations at other resolutions are zero-shot and listed in the notes, with the "
             "deviations from the paper's protocol read from the run's .hydra/config.yaml."]
    if not runs:
        lines += ["", "No run given. To add an \"FNO (ours)\" row (25,000 steps: hours on a GPU):",
                  "`python -m experiments.train experiment=fno_darcy` (s=85; add "
                  "`data.train_resolution=141` etc. for the other columns), then "
                  "`python -m experiments.table fno_darcy <its run directory>`."]

    series = [(f"{m} (paper)", [dict(zip(RESOLUTIONS, v)).get(s) for s in resolutions], True)
              for m, v in PUBLISHED.items()]
    series += [(f"FNO (ours) {pathlib.Path(r.label).name}", [v if s == t else None for s in resolutions], False)
               for r, (t, v, _) in zip(runs, measured)]

    def plot(path: pathlib.Path) -> None:
        bar_chart(path, [f"s={s}" for s in resolutions], series, ylabel="relative L2 test error",
                  title="Darcy flow (Li et al. 2021, Table 4): published (hatched) and ours (solid)",
                  note="published: " + PAPER)

    columns = (["model", "kind", "source"] + [f"{METRIC}_s{s}" for s in resolutions]
               + ["n_params", "epochs", "train_seconds", "device", "notes"])
    return Table(name="fno_darcy", markdown="\n".join(lines), csv_columns=columns,
                 csv_rows=csv_rows, plot=plot)
