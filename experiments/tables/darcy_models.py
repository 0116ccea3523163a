"""Operators on Darcy flow side by side: FNO, TFNO, MgNO, LSM and the U-Net, ours beside the papers'.

One row per run directory of ``python -m experiments.train -m model=fno,tfno,mgno,lsm,unet`` (any
operator runs on the Darcy task; a multirun directory stands for all its jobs)::

    python -m experiments.train -m model=fno,tfno,mgno,lsm,unet trainer.epochs=5 \\
        hydra.sweep.dir=multirun/darcy_models_cpu
    python -m experiments.table darcy_models multirun/darcy_models_cpu

Columns, all *measured* on the run: parameters; training time and time per step (``results.json``
cost, after compilation); peak memory (the device's where the backend reports it, else the
process's peak resident memory, which includes the data); test relative L2 and H1 at the training
resolution; the error by frequency band at the training resolution; and relative L2 at every other
resolution the data lists (``data.test_resolutions``; the run evaluated them without retraining).

Frequency bands are PDEBench's fRMSE (Takamoto et al., NeurIPS 2022 Datasets and Benchmarks,
``pdebench/models/metrics.py:metric_func``; :func:`frequency_band_rmse`): the squared modulus of the
2-D DFT of the error, summed over shells ``floor(|k|)`` of the non-negative quadrant, averaged over
the test samples under the square root, divided by ``nx * ny``, then averaged over shells 0-3 (low),
4-11 (mid) and 12 up to ``min(nx, ny) / 2 - 1`` (high). They need predictions, which results.json does
not hold: the first time a run is tabulated the model is rebuilt from ``.hydra/config.yaml``, its last
checkpoint restored and the test split predicted; the bands are then written to
``<run>/frequency_bands.json`` and read from there afterwards (``--no-bands`` skips them).

Published numbers (the papers' own protocols, not ours; see each config header):
FNO 0.0108 at s = 85 (Li et al., ICLR 2021, Table 4); LSM 0.0065 and U-Net 0.0080 at s = 85 (Wu et al.,
ICML 2023, Table 1, thuml/Latent-Spectral-Models:fig/main_results.png); MgNO 0.176e-2 (L2) /
0.576e-2 (H1) on "Darcy smooth" at s = 211 (He, Liu, Xu, ICLR 2024, arXiv 2310.19809, Table 1, as
transcribed from the proceedings PDF in 767-767/knowledge-base-assistant:evaluation/benchmark/cases.jsonl,
cases mgno-07 to mgno-11; code xlliu2017/MgNO; the same FNO benchmark data, 421 subsampled by 2). No
Darcy number is published for TFNO.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import pathlib
import re
from typing import Any

import numpy as np

from experiments.errors import UserInputError
from experiments.load import load_run
from experiments.tables.figures import bar_chart
from experiments.tables.formatting import format_count, format_metric, format_seconds
from experiments.tables.output import Table, markdown_table
from experiments.tables.runs import Run, read_runs

SPLIT = re.compile(r"^test_s(\d+)$")
BANDS = ("low", "mid", "high")
BANDS_FILE = "frequency_bands.json"
# (model, relative L2, relative H1, s, source)
PUBLISHED = (
    ("FNO", 0.0108, None, 85, "Li et al. 2021 (arXiv 2010.08895) Table 4"),
    ("U-Net", 0.0080, None, 85, "Wu et al. 2023 (LSM, arXiv 2301.12664) Table 1"),
    ("LSM", 0.0065, None, 85, "Wu et al. 2023 (LSM, arXiv 2301.12664) Table 1"),
    ("MgNO", 0.176e-2, 0.576e-2, 211, "He, Liu, Xu 2024 (MgNO, ICLR) Table 1, Darcy smooth"),
)
# What each model does at a resolution it was not trained at (by the class of model._target_).
AT_NEW_RESOLUTION = {
    "FNO": "resolution-invariant: the same Fourier modes at any grid",
    "TFNO": "resolution-invariant: the same Fourier modes at any grid",
    "MgNO": "runs at any size its levels allow; 3x3 kernels act on cells, so the V-cycle sees another scale",
    "LSM": "runs (padding adapts to the patch); kernels and patches act on cells: not invariant",
    "UNet": "runs (padding adapts); kernels act on cells: not invariant",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="run directories of `python -m experiments.train model=...` on Darcy (a multirun "
                             "directory stands for all its jobs)")
    parser.add_argument("--no-bands", action="store_true",
                        help="leave out the frequency-band errors (they restore each model once; cached in "
                             f"<run>/{BANDS_FILE})")


# --------------------------------------------------------------------------------------------------
# PDEBench's fRMSE


def frequency_band_rmse(pred: np.ndarray, target: np.ndarray, i_low: int = 4, i_high: int = 12
                        ) -> dict[str, float]:
    """PDEBench's Fourier-space RMSE by band for fields ``(n, nx, ny, channels)`` on a unit square.

    ``E[s] = sum over 0 <= i < nx/2, 0 <= j < ny/2 with floor(sqrt(i^2 + j^2)) = s of
    |DFT(pred - target)[i, j]|^2``, for shells ``s < min(nx, ny) // 2``; then
    ``e[s] = sqrt(mean over samples of E[s]) / (nx * ny)`` and the band value is the mean of ``e``
    over shells ``[0, i_low)``, ``[i_low, i_high)``, ``[i_high, ...)``, averaged over channels.
    """
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(f"pred and target must both be (n, nx, ny, channels); got {pred.shape} and {target.shape}")
    n, nx, ny, c = pred.shape
    err = np.abs(np.fft.fft2(np.asarray(pred, np.float64) - target, axes=(1, 2))) ** 2  # (n, nx, ny, c)
    n_shells = min(nx // 2, ny // 2)
    i, j = np.meshgrid(np.arange(nx // 2), np.arange(ny // 2), indexing="ij")
    shell = np.floor(np.sqrt(i ** 2 + j ** 2)).astype(int)  # (nx/2, ny/2)
    keep = shell < n_shells
    per_shell = np.zeros((n, n_shells, c))
    np.add.at(per_shell, (slice(None), shell[keep]), err[:, : nx // 2, : ny // 2][:, keep])
    e = np.sqrt(per_shell.mean(axis=0)) / (nx * ny)  # (n_shells, c)
    bands = {"low": e[:i_low], "mid": e[i_low:i_high], "high": e[i_high:]}
    return {k: float(v.mean()) if v.size else float("nan") for k, v in bands.items()}


def predict_bands(run: Run) -> dict[str, dict[str, float]]:
    """Rebuild the run's task and model, restore its last checkpoint, and return the frequency bands of
    every test split: ``{"test_s64": {"low": .., "mid": .., "high": ..}, ...}``."""
    cfg = run.config
    if cfg is None:
        raise UserInputError(f"{run.label}: {run.config_error}; cannot rebuild its model for the frequency bands "
                             f"(use --no-bands)")
    ckpt_dir = run.path / "checkpoints"
    if not (ckpt_dir.is_dir() and any(p.name.isdigit() for p in ckpt_dir.iterdir())):
        raise UserInputError(f"{run.label}: no checkpoint in {ckpt_dir}; cannot compute the frequency bands "
                             f"(use --no-bands)")
    import flax.nnx as nnx
    import jax
    import jax.numpy as jnp

    trained = load_run(run.path, missing="use --no-bands")
    model, task = trained.model, trained.task
    forward = nnx.jit(lambda m, x: task.predict(m, {"x": x}))
    bands = {}
    for split, data in task.evals.items():
        if not split.startswith("test_"):
            continue
        bs = int(cfg.trainer.batch_size)
        pred = np.concatenate([np.asarray(forward(model, jnp.asarray(data["x"][k:k + bs])))
                               for k in range(0, len(data["x"]), bs)])
        bands[split] = frequency_band_rmse(pred, data["y"])
        jax.clear_caches()
    return bands


def run_bands(run: Run) -> dict[str, dict[str, float]]:
    """The run's frequency bands from ``<run>/frequency_bands.json``, computed and written there if absent."""
    path = run.path / BANDS_FILE
    if path.is_file():
        return json.loads(path.read_text())
    bands = predict_bands(run)
    path.write_text(json.dumps(bands, indent=2) + "\n")
    return bands


# --------------------------------------------------------------------------------------------------
# The table


def model_name(run: Run) -> tuple[str, str]:
    """(the ``model=`` option, else the class name; the class name of ``model._target_``)."""
    target = run.config_value("model._target_", "")
    cls = target.rsplit(".", 1)[-1] if isinstance(target, str) and target else ""
    for o in run.overrides:
        key, _, value = o.lstrip("+").partition("=")
        if key == "model":
            return value, cls
    return (cls.lower() or run.path.name), cls


def _resolutions(run: Run) -> tuple[int | None, list[int]]:
    evaluated = sorted(int(m.group(1)) for s in run.splits if (m := SPLIT.match(s)))
    trained = run.config_value("data.train_resolution", None)
    trained = trained if isinstance(trained, int) else (evaluated[0] if evaluated else None)
    return trained, [s for s in evaluated if s != trained]


def _memory(run: Run) -> tuple[float | None, str]:
    device = run.cost("peak_device_memory_mb")
    if isinstance(device, (int, float)):
        return float(device), f"{device:,.0f} MB (device)"
    host = run.cost("peak_host_memory_mb")
    return (float(host), f"{host:,.0f} MB (process)") if isinstance(host, (int, float)) else (None, "")


def bands_or_notes(runs: list[Run]) -> list[dict[str, float] | str]:
    """Per run: its frequency bands at the training resolution (``{}`` for an unfinished run), or the
    reason they could not be computed (a note)."""
    out: list[dict[str, float] | str] = []
    for run in runs:
        if run.status != "ok":
            out.append({})
            continue
        try:
            out.append(run_bands(run).get(f"test_s{_resolutions(run)[0]}", {}))
        except UserInputError as err:
            out.append(str(err).split(": ", 1)[-1])
    return out


@dataclasses.dataclass
class OperatorRun:
    """One run of an operator on Darcy flow, as the table shows it."""

    name: str                             # the model= option (else the class name)
    cls: str                              # the class of model._target_
    label: str                            # the run directory as given
    trained: int | None                   # the training resolution
    l2: float | None                      # relative L2 / H1 at the training resolution
    h1: float | None
    other_l2: dict[int, float | None]     # relative L2 at the other test resolutions
    bands: dict[str, float]               # fRMSE low / mid / high ({} when not computed)
    memory_mb: float | None
    memory_text: str
    notes: list[str]
    n_params: int | None
    train_seconds: Any
    seconds_per_step: Any
    epochs: float | None
    device: Any


def collect(runs: list[Run], bands: list[dict[str, float] | str] | None = None) -> list[OperatorRun]:
    """One record per run; ``bands`` per run from ``bands_or_notes`` (``None``: left out)."""
    records = []
    for run, band in zip(runs, bands if bands is not None else [{}] * len(runs)):
        name, cls = model_name(run)
        trained, others = _resolutions(run)
        split = f"test_s{trained}"
        notes = [] if run.status == "ok" else [run.status]
        if isinstance(band, str):
            notes.append(band)
        epochs = run.epochs
        notes.append(f"{epochs:g} epochs, {run.config_value('data.n_train', '?')} train pairs"
                     if epochs is not None else "")
        memory, memory_text = _memory(run)
        records.append(OperatorRun(
            name=name, cls=cls, label=run.label, trained=trained, l2=run.metric(split, "rel_l2"),
            h1=run.metric(split, "rel_h1"), other_l2={s: run.metric(f"test_s{s}", "rel_l2") for s in others},
            bands=band if isinstance(band, dict) else {}, memory_mb=memory, memory_text=memory_text,
            notes=notes, n_params=run.n_params, train_seconds=run.cost("train_seconds"),
            seconds_per_step=run.cost("seconds_per_step"), epochs=epochs, device=run.cost("device_kind")))
    return records


def _measured_row(r: OperatorRun) -> tuple[list[str], dict[str, Any]]:
    others_text = ", ".join(f"s={s}: {format_metric(v)}" for s, v in r.other_l2.items())
    row = [r.name, format_count(r.n_params), format_seconds(r.train_seconds), format_seconds(r.seconds_per_step),
           r.memory_text, f"{format_metric(r.l2)} (s={r.trained})", format_metric(r.h1),
           " / ".join(format_metric(r.bands.get(b)) for b in BANDS) if r.bands else "",
           others_text, AT_NEW_RESOLUTION.get(r.cls, ""), "; ".join(n for n in r.notes if n)]
    csv_row = {"model": r.name, "kind": "measured", "source": r.label, "class": r.cls, "n_params": r.n_params,
               "train_seconds": r.train_seconds, "seconds_per_step": r.seconds_per_step,
               "peak_memory_mb": r.memory_mb, "train_resolution": r.trained, "rel_l2": r.l2, "rel_h1": r.h1,
               **{f"frmse_{b}": r.bands.get(b) for b in BANDS},
               **{f"rel_l2_s{s}": v for s, v in r.other_l2.items()}, "epochs": r.epochs, "device": r.device}
    return row, csv_row


def render(records: list[OperatorRun]) -> Table:
    """One row per run, then the published rows (italic, each under its paper's protocol)."""
    header = ["model", "params", "train time", "time / step", "peak memory", "rel L2 (s train)", "rel H1",
              "fRMSE low / mid / high", "rel L2 at other s (no retraining)", "at a new resolution", "notes"]
    rows, csv_rows = [], []
    for record in records:
        row, csv_row = _measured_row(record)
        rows.append(row)
        csv_rows.append(csv_row)
    for model, l2, h1, s, source in PUBLISHED:
        rows.append([f"*{model} (published)*", "", "", "", "", f"*{format_metric(l2)}* (s={s})",
                     f"*{format_metric(h1)}*" if h1 else "", "", "", "", f"paper's protocol: {source}"])
        csv_rows.append({"model": model, "kind": "published", "source": source, "train_resolution": s,
                         "rel_l2": l2, "rel_h1": h1})
    other_cols = sorted({k for r in csv_rows for k in r if k.startswith("rel_l2_s")}, key=lambda k: int(k[8:]))
    columns = (["model", "kind", "source", "class", "n_params", "train_seconds", "seconds_per_step",
                "peak_memory_mb", "train_resolution", "rel_l2", "rel_h1"] + [f"frmse_{b}" for b in BANDS]
               + other_cols + ["epochs", "device"])
    device = next((r.device for r in records if r.device), None)
    lines = ["### Operators on Darcy flow: FNO, TFNO, MgNO, LSM, U-Net (measured) beside the papers' numbers", "",
             markdown_table(header, rows), "",
             "Upright: measured here, test split of the run's data" + (f", on {device}" if device else "")
             + "; time per step after compilation. fRMSE: PDEBench's Fourier-space RMSE by band (shells 0-3, "
             "4-11, 12+ of |k|) at the training resolution, from the restored model. Other resolutions: the "
             "same trained model evaluated on the data's other test resolutions. *Italic*: published, each "
             "under its paper's own protocol (more data, 500 epochs, other resolutions), not comparable "
             "with a short CPU run."]
    return Table(name="darcy_models", markdown="\n".join(lines), csv_columns=columns, csv_rows=csv_rows)


def plot(records: list[OperatorRun], out_dir: pathlib.Path) -> list[pathlib.Path]:
    """``darcy_models.png``: each run's relative L2 beside its model's published number."""
    published = {m.replace("-", "").lower(): l2 for m, l2, _, _, _ in PUBLISHED}
    return [bar_chart(out_dir / "darcy_models.png", [r.name for r in records],
                      [("ours (training resolution)", [r.l2 for r in records], False),
                       ("published (own protocol)", [published.get(r.name.replace("-", "").lower()) for r in records],
                        True)],
                      ylabel="relative L2 test error", title="Darcy flow: operators side by side",
                      note="published: Li et al. 2021; Wu et al. 2023; He, Liu, Xu 2024 (s and protocol differ)")]


def build(args: argparse.Namespace) -> Table:
    runs = read_runs(args.runs)
    if not runs:
        raise UserInputError("no run directory given")
    records = collect(runs, None if args.no_bands else bands_or_notes(runs))
    return render(records).with_plot(functools.partial(plot, records))
