"""Long Range Arena: test accuracy on the tasks we can generate (ListOps, Pathfinder-32), the published
numbers beside ours.

Published rows (test accuracy %): the Transformer baseline of the LRA repository
(google-research/long-range-arena:README.md); S4-LegS (Gu et al., "How to Train Your HiPPO", ICLR
2023, arXiv 2206.12037); S4D-LegS / -Inv / -Lin (Gu, Gupta, Goel, Re, NeurIPS
2022, arXiv 2206.11893; -Inv and -Lin unverified); S5 (Smith, Warrington, Linderman, ICLR 2023, arXiv
2208.04933, Table 1); the S4, S4D-LegS and S5 rows as quoted in the LRA table of "Block-Biased Mamba"
(Yu, Erichson, 2025). The PTD rows (Yu, Nigmetov, Morozov, Mahoney, Erichson, ICLR 2024, arXiv
2310.01698) have *unverified* per-task numbers (only their LRA averages, 86.58 and 87.61, are
confirmed); the long-convolution paper (Fu et al., ICML 2023, arXiv 2302.06646) reports parity with
S4 but its per-task table was not retrieved, so its row shows none. The other LRA tasks (Text,
Retrieval, Image, Path-X) need downloads or hours of generation and are left out.

Our rows are *measured*: one per run directory given (a Hydra multirun directory stands for all its
jobs), read from ``results.json`` (``metrics.test.accuracy``) and ``.hydra/config.yaml``. The task is
the run's dataset (ListOps or Pathfinder); the model is named from its mixer (S4, S4D-<init>,
S4-PTD, S5, S5-PTD, long conv). A run is marked "LRA protocol" only when its data has the LRA size
(ListOps 96k trees of 500 < tokens < 2000; Pathfinder 160k training images) and it trained for the
protocol's epochs (40 / 200); otherwise its notes say how it was reduced: a CPU-scale run is not
comparable with the published number, and the table says so rather than hiding it.

    python -m experiments.train experiment=lra_listops_s5                 # the S5 protocol (GPU)
    python -m experiments.train experiment=listops                        # CPU scale
    python -m experiments.table lra outputs/<date>/<time> [...]
"""
from __future__ import annotations

import argparse
import functools
import pathlib
from typing import Any

from experiments.errors import UserInputError
from experiments.tables.figures import bar_chart
from experiments.tables.formatting import format_count, format_seconds
from experiments.tables.output import Table, markdown_table
from experiments.tables.runs import Run, read_runs

TASKS = ("ListOps", "Pathfinder")
# Test accuracy (%) per task; None: not available. (source, status) per row.
PUBLISHED: dict[str, tuple[tuple[float | None, float | None], str]] = {
    "Transformer": ((36.37, 71.40), "LRA repository README"),
    "S4-LegS": ((59.60, 94.20), "arXiv 2206.12037"),
    "S4D-LegS": ((60.47, 93.06), "arXiv 2206.11893"),
    "S4D-Inv": ((60.18, 93.78), "arXiv 2206.11893 [unverified]"),
    "S4D-Lin": ((60.52, 93.96), "arXiv 2206.11893 [unverified]"),
    "S5": ((62.15, 95.33), "arXiv 2208.04933, Table 1"),
    "S4-PTD": ((60.65, 94.79), "arXiv 2310.01698 [per-task unverified]"),
    "S5-PTD": ((62.75, 95.54), "arXiv 2310.01698 [per-task unverified]"),
    "Long conv": ((None, None), "arXiv 2302.06646: parity with S4, per-task table not retrieved"),
}
# The LRA data size and the protocols' epochs, per task.
LRA_SIZE = {"ListOps": (("data.dataset.n_train", 96000), ("data.dataset.min_length", 500),
                        ("data.dataset.max_length", 2000)),
            "Pathfinder": (("data.dataset.n_train", 160000),)}
LRA_EPOCHS = {"ListOps": 40, "Pathfinder": 200}


def format_pct(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="*", metavar="RUN_DIR",
                        help="runs of data=listops or data=pathfinder32 (experiment=listops, lra_*, ...); "
                             "none: the published rows only")


def task_of(run: Run) -> str | None:
    """``"ListOps"`` or ``"Pathfinder"`` from the run's dataset target, else ``None``."""
    target = str(run.config_value("data.dataset._target_", ""))
    if target.endswith(".ListOps"):
        return "ListOps"
    if target.endswith(".Pathfinder"):
        return "Pathfinder"
    return None


def model_of(run: Run) -> str:
    """The published row a run's mixer corresponds to (S4-LegS, S4D-<init>, S4-PTD, S5, S5-PTD, Long conv)."""
    target = str(run.config_value("model.mixer._target_", ""))
    init = str(run.config_value("model.mixer.init", ""))
    if target.endswith(".S4"):
        return "S4-LegS"
    if target.endswith(".S4D"):
        return "S4-PTD" if init == "ptd" else f"S4D-{init.capitalize() if init != 'legs' else 'LegS'}"
    if target.endswith(".S5"):
        return "S5-PTD" if init == "ptd" else "S5"
    if target.endswith(".LongConv"):
        return "Long conv"
    return target.rsplit(".", 1)[-1] or "?"


def deviations(run: Run, task: str) -> list[str]:
    """How the run differs from the LRA protocol's data size and length of training ([] if it does not)."""
    out = []
    for key, value in LRA_SIZE[task]:
        got = run.config_value(key, None)
        if got is not None and got != value:
            out.append(f"{key.rsplit('.', 1)[-1]}={got} (LRA: {value})")
    epochs = run.epochs
    if epochs is not None and epochs < LRA_EPOCHS[task]:
        out.append(f"{epochs:g} epochs (protocol: {LRA_EPOCHS[task]})")
    return out


def collect(runs: list[Run]) -> list[dict[str, Any]]:
    """The published rows, then one per run: ``{"model", "kind", "source", "ListOps", "Pathfinder"}``
    (test accuracy in %; ours in its task's column only), and for ours ``"notes"`` and ``"label"`` (the
    run directory as given)."""
    records: list[dict[str, Any]] = [
        {"model": name, "kind": "published", "source": source, "ListOps": listops, "Pathfinder": pathfinder}
        for name, ((listops, pathfinder), source) in PUBLISHED.items()]
    for run in runs:
        task = task_of(run)
        if task is None:
            raise UserInputError(f"{run.label}: not a ListOps or Pathfinder run (data.dataset._target_ is "
                                 f"{run.config_value('data.dataset._target_', None)!r}); give runs of "
                                 f"data=listops or data=pathfinder32")
        acc = run.metric("test", "accuracy")
        acc_pct = 100.0 * acc if acc is not None else None
        dev = deviations(run, task)
        notes = ["LRA protocol" if not dev else "reduced: " + ", ".join(dev)]
        if run.status != "ok":
            notes.append(run.status)
        if run.n_params is not None:
            notes.append(f"{format_count(run.n_params)} parameters")
        if run.cost("train_seconds") is not None:
            notes.append(f"trained in {format_seconds(run.cost('train_seconds'))} on {run.cost('backend')}")
        records.append({"model": model_of(run), "kind": "ours", "source": str(run.path), "label": run.label,
                        **{t: acc_pct if t == task else None for t in TASKS}, "notes": "; ".join(notes)})
    return records


def render(records: list[dict[str, Any]]) -> Table:
    """The published rows, then ours ("<model> (ours)", named by the run directory as given)."""
    header = ["model", "source", "ListOps", "Pathfinder", "notes"]
    rows = [[r["model"], r["source"], *(format_pct(r[t]) for t in TASKS), "published"] if r["kind"] == "published"
            else [f"{r['model']} (ours)", r["label"], *(format_pct(r[t]) for t in TASKS), r["notes"]]
            for r in records]
    csv_rows = [{k: v for k, v in r.items() if k != "label"} for r in records]
    lines = ["### Long Range Arena, the tasks generated here: test accuracy (%)", "",
             markdown_table(header, rows), "",
             "Published rows: Transformer: google-research/long-range-arena README; S4-LegS: Gu et al., "
             "\"How to Train Your HiPPO\", ICLR 2023, arXiv 2206.12037; S4D: Gu, Gupta, "
             "Goel, Re, NeurIPS 2022, arXiv 2206.11893; S5: Smith, Warrington, Linderman, ICLR 2023, arXiv "
             "2208.04933, Table 1; PTD: Yu, Nigmetov, Morozov, Mahoney, Erichson, ICLR 2024, arXiv 2310.01698, "
             "per-task numbers unverified. "
             "Ours: the test split of each run; a row marked \"reduced\" did not follow the LRA protocol "
             "(its data size or epochs are given) and is not comparable with the published numbers."]
    return Table(name="lra", markdown="\n".join(lines),
                 csv_columns=["model", "kind", "source", "ListOps", "Pathfinder", "notes"], csv_rows=csv_rows)


def plot(records: list[dict[str, Any]], out_dir: pathlib.Path) -> list[pathlib.Path]:
    """``lra.png``: test accuracy per row, one bar per task."""
    names = [r["model"] + ("" if r["kind"] == "published" else " (ours)") for r in records]
    return [bar_chart(out_dir / "lra.png", names, [(t, [r[t] for r in records], False) for t in TASKS],
                      ylabel="test accuracy (%)", title="Long Range Arena (tasks generated here)",
                      note="published rows beside ours; reduced runs are not comparable", missing="–")]


def build(args: argparse.Namespace) -> Table:
    records = collect(read_runs(args.runs))
    return render(records).with_plot(functools.partial(plot, records))
