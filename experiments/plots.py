"""PNG plots of a run (matplotlib, Agg backend: works headless)."""
from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.metrics import iter_series, read_metrics  # noqa: E402


def plot_loss_curves(metrics_path: str | pathlib.Path, out_path: str | pathlib.Path) -> pathlib.Path:
    """Training loss against step, with every evaluation split's metrics at their eval steps."""
    rows = read_metrics(metrics_path)
    splits = sorted({r["split"] for r in rows if "split" in r})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    train = list(iter_series(rows, "loss"))
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1.5)
    for split in splits:
        for key in ("rel_l2", "accuracy"):
            pts = list(iter_series(rows, key, split))
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, "o-", ms=4, label=f"{split} {key}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out_path = pathlib.Path(out_path)
    fig.savefig(out_path, dpi=90)
    plt.close(fig)
    return out_path
