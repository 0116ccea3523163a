"""FNO paper, Darcy flow: relative L2 test error against resolution, the paper's rows beside ours.

Paper: Z. Li, N. Kovachki, K. Azizzadenesheli, B. Liu, K. Bhattacharya, A. Stuart, A. Anandkumar,
"Fourier Neural Operator for Parametric Partial Differential Equations", ICLR 2021 (arXiv 2010.08895),
Table 4 (Darcy flow a -> u, 1000 train / 100 test pairs, relative L2 test error at s = 85, 141, 211,
421). The table's rows FCN, PCA+NN, RBM, LNO and FNO are *published* numbers, copied from the
transcription of the paper's table in neuraloperator/neuraloperator:doc/source/theory_guide/fno.rst;
the paper also lists NN, GCN, GNO and MGNO rows, not transcribed there.

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
import dataclasses
import functools
import math
import pathlib
import re
from typing import Any

from experiments.tables.figures import bar_chart
from experiments.tables.formatting import format_count, format_metric, format_number, format_seconds
from experiments.tables.output import Table, markdown_table
from experiments.tables.runs import ABSENT, Run, read_runs

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


@dataclasses.dataclass
class Measured:
    """One run as the table shows it: its column (the training resolution) and value, the zero-shot
    evaluations at other resolutions, the protocol deviations and the cost."""

    label: str
    trained: int | None
    value: float | None
    zero_shot: dict[int, float | None]
    notes: list[str]
    n_params: int | None
    epochs: float | None
    train_seconds: Any
    device: Any


def collect(runs: list[Run]) -> list[Measured]:
    """One record per run directory (read by ``read_runs``), in the order given."""
    records = []
    for run in runs:
        trained, value, zero_shot = trained_and_zero_shot(run)
        records.append(Measured(label=run.label, trained=trained, value=value, zero_shot=zero_shot,
                                notes=protocol_notes(run), n_params=run.n_params, epochs=run.epochs,
                                train_seconds=run.cost("train_seconds"), device=run.cost("device_kind")))
    return records


def resolutions(records: list[Measured]) -> list[int]:
    """The paper's columns, then any other resolution a run was trained at."""
    extra = sorted({r.trained for r in records if r.trained is not None} - set(RESOLUTIONS))
    return list(RESOLUTIONS) + extra


def _train_time(record: Measured) -> str:
    time = format_seconds(record.train_seconds)
    return f"{time} ({record.device})" if time and record.device else time


def _notes(record: Measured) -> str:
    zero_shot = (["zero-shot " + ", ".join(f"s={s}: {format_metric(v)}" for s, v in sorted(record.zero_shot.items()))]
                 if record.zero_shot else [])
    return "; ".join(record.notes + zero_shot)


def _published_rows(columns: list[int]) -> tuple[list[list[str]], list[dict]]:
    rows, csv_rows = [], []
    for model, values in PUBLISHED.items():
        cells = dict(zip(RESOLUTIONS, values))
        rows.append([model, "published (Li et al. 2021, Table 4)"]
                    + [f"*{format_metric(cells[s])}*" if cells.get(s) is not None
                       else ("–" if s in cells else "") for s in columns]
                    + ["", "", "", ""])
        csv_rows.append({"model": model, "kind": "published", "source": PAPER,
                         **{f"{METRIC}_s{s}": cells.get(s) for s in columns}})
    return rows, csv_rows


def _measured_rows(records: list[Measured], columns: list[int]) -> tuple[list[list[str]], list[dict]]:
    rows, csv_rows = [], []
    for r in records:
        cells = {r.trained: r.value} if r.trained is not None else {}
        notes = _notes(r)
        rows.append(["FNO (ours)", f"measured: {r.label}"]
                    + [format_metric(cells.get(s)) for s in columns]
                    + [format_count(r.n_params), format_number(r.epochs), _train_time(r), notes])
        csv_rows.append({"model": "FNO (ours)", "kind": "measured", "source": r.label,
                         **{f"{METRIC}_s{s}": cells.get(s) for s in columns},
                         "n_params": r.n_params, "epochs": r.epochs, "train_seconds": r.train_seconds,
                         "device": r.device, "notes": notes})
    return rows, csv_rows


def render(records: list[Measured]) -> Table:
    """The paper's rows (italic), then one row per run, in the column of its training resolution."""
    columns = resolutions(records)
    header = ["model", "source"] + [f"s={s}" for s in columns] + ["params", "epochs", "train time", "notes"]
    published, published_csv = _published_rows(columns)
    measured, measured_csv = _measured_rows(records, columns)
    lines = ["### FNO paper, Darcy flow: relative L2 test error (Li et al., ICLR 2021, Table 4)", "",
             markdown_table(header, published + measured), "",
             f"*Italic*: published, {PAPER} (Li, Kovachki, Azizzadenesheli, Liu, Bhattacharya, "
             "Stuart, Anandkumar, \"Fourier Neural Operator for Parametric Partial Differential "
             "Equations\", ICLR 2021), 1000 train / 100 test pairs, as transcribed in "
             "neuraloperator/neuraloperator:doc/source/theory_guide/fno.rst; – : not reported. "
             f"Upright: measured here, each run in the column of the resolution it was trained and "
             f"tested at (`{METRIC}` of its objective split in results.json), as the paper's columns; "
             "its evaluations at other resolutions are zero-shot and listed in the notes, with the "
             "deviations from the paper's protocol read from the run's .hydra/config.yaml."]
    if not records:
        lines += ["", "No run given. To add an \"FNO (ours)\" row (25,000 steps: hours on a GPU):",
                  "`python -m experiments.train experiment=fno_darcy` (s=85; add "
                  "`data.train_resolution=141` etc. for the other columns), then "
                  "`python -m experiments.table fno_darcy <its run directory>`."]
    csv_columns = (["model", "kind", "source"] + [f"{METRIC}_s{s}" for s in columns]
                   + ["n_params", "epochs", "train_seconds", "device", "notes"])
    return Table(name="fno_darcy", markdown="\n".join(lines), csv_columns=csv_columns,
                 csv_rows=published_csv + measured_csv)


def plot(records: list[Measured], out_dir: pathlib.Path) -> list[pathlib.Path]:
    """``fno_darcy.png``: bars per resolution, the paper's hatched beside ours solid."""
    columns = resolutions(records)
    series = [(f"{m} (paper)", [dict(zip(RESOLUTIONS, v)).get(s) for s in columns], True)
              for m, v in PUBLISHED.items()]
    series += [(f"FNO (ours) {pathlib.Path(r.label).name}", [r.value if s == r.trained else None for s in columns],
                False) for r in records]
    return [bar_chart(out_dir / "fno_darcy.png", [f"s={s}" for s in columns], series,
                      ylabel="relative L2 test error",
                      title="Darcy flow (Li et al. 2021, Table 4): published (hatched) and ours (solid)",
                      note="published: " + PAPER)]


def build(args: argparse.Namespace) -> Table:
    records = collect(read_runs(args.runs))
    return render(records).with_plot(functools.partial(plot, records))
