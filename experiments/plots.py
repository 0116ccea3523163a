"""PNG plots of a run (matplotlib, Agg backend: works headless)."""
from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.metrics import iter_series, read_metrics  # noqa: E402


def plot_loss_curves(metrics_path: str | pathlib.Path, out_path: str | pathlib.Path,
                     objective: str) -> pathlib.Path:
    """Training loss against step (left axis, log scale when positive) and the task's ``objective``
    metric of every evaluation split at its evaluation steps (right axis, linear: an error or an
    accuracy alike)."""
    rows = read_metrics(metrics_path)
    splits = list(dict.fromkeys(r["split"] for r in rows if "split" in r))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    train = list(iter_series(rows, "loss"))
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1.5, color="C0")
        if all(v > 0 for _, v in train):
            ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss")
    ax.grid(True, which="both", alpha=0.3)
    right = ax.twinx()
    for i, split in enumerate(splits):
        pts = list(iter_series(rows, objective, split))
        if pts:
            right.plot(*zip(*pts), "o-", ms=4, color=f"C{i + 1}", label=f"{split} {objective}")
    right.set_ylabel(objective)
    handles = [h for a in (ax, right) for h in a.get_legend_handles_labels()[0]]
    labels = [lab for a in (ax, right) for lab in a.get_legend_handles_labels()[1]]
    if handles:
        ax.legend(handles, labels, loc="upper right")
    fig.tight_layout()
    out_path = pathlib.Path(out_path)
    fig.savefig(out_path, dpi=90)
    plt.close(fig)
    return out_path
