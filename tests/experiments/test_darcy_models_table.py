"""darcy_models table: PDEBench's fRMSE against a loop transcription and a closed form; the table from
run directories (results.json, config, cached frequency bands) with the published rows beside."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import yaml

from experiments.errors import UserInputError
from experiments.tables import darcy_models
from experiments.tables.darcy_models import frequency_band_rmse


def pdebench_loops(pred: np.ndarray, target: np.ndarray, i_low: int = 4, i_high: int = 12) -> dict[str, float]:
    """metric_func's 2-D Fourier branch of PDEBench, loop by loop (layout (n, nx, ny, c), Lx = Ly = 1)."""
    n, nx, ny, c = pred.shape
    err_f = np.abs(np.fft.fftn(pred - target, axes=(1, 2))) ** 2
    shells = np.zeros((n, c, min(nx // 2, ny // 2)))
    for i in range(nx // 2):
        for j in range(ny // 2):
            it = math.floor(math.sqrt(i ** 2 + j ** 2))
            if it > min(nx // 2, ny // 2) - 1:
                continue
            shells[:, :, it] += err_f[:, i, j, :]
    e = np.sqrt(shells.mean(axis=0)) / (nx * ny)  # (c, shells)
    return {"low": e[:, :i_low].mean(), "mid": e[:, i_low:i_high].mean(), "high": e[:, i_high:].mean()}


@pytest.mark.parametrize("shape", [(3, 32, 32, 1), (2, 33, 40, 2)])
def test_frequency_bands_match_the_pdebench_loops(shape):
    rng = np.random.default_rng(0)
    target, pred = rng.normal(size=shape), rng.normal(size=shape)
    ours, ref = frequency_band_rmse(pred, target), pdebench_loops(pred, target)
    for band in ("low", "mid", "high"):
        assert ours[band] == pytest.approx(ref[band], rel=1e-12)


def test_frequency_bands_of_a_single_mode_error():
    """err = A cos(2 pi 5 x): DFT A n^2 / 2 at (5, 0) in the quadrant, so shell 5 holds A / 2 and the mid
    band (shells 4..11) A / 16, the others nothing."""
    n, amp = 32, 0.3
    x = np.arange(n) / n
    err = amp * np.cos(2 * np.pi * 5 * x)[:, None] * np.ones(n)[None, :]
    bands = frequency_band_rmse(err[None, ..., None], np.zeros((1, n, n, 1)))
    assert bands["mid"] == pytest.approx(amp / 16, rel=1e-12)
    assert bands["low"] < 1e-15 and bands["high"] < 1e-15


def _fake_run(path, model_target, override, l2, step_s, bands=True):
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
        {"model": {"_target_": model_target}, "data": {"train_resolution": 64, "n_train": 500}, "seed": 0}))
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"model={override}"]))
    (path / "results.json").write_text(json.dumps({
        "objective": {"metric": "rel_l2", "split": "test_s64", "mode": "min", "value": l2},
        "metrics": {"test_s64": {"rel_l2": l2, "rel_h1": 2 * l2}, "test_s127": {"rel_l2": 3 * l2, "rel_h1": 1.0}},
        "n_params": 1234, "step": 125, "epochs": 5.0,
        "cost": {"train_seconds": 100.0, "seconds_per_step": step_s, "peak_host_memory_mb": 2048.0}}))
    if bands:
        (path / darcy_models.BANDS_FILE).write_text(json.dumps(
            {"test_s64": {"low": 1e-3, "mid": 2e-4, "high": 3e-5}}))


def test_table_from_run_directories(tmp_path):
    _fake_run(tmp_path / "sweep" / "0", "operators.fno.FNO", "fno", 0.02, 0.3)
    _fake_run(tmp_path / "sweep" / "1", "operators.lsm.LSM", "lsm", 0.03, 1.5)
    table = darcy_models.build(argparse.Namespace(runs=[str(tmp_path / "sweep")], no_bands=False))
    md = table.markdown
    assert "| fno | 1,234 | 1 min 40 s | 300 ms | 2,048 MB (process) | 0.0200 (s=64) | 0.0400 |" in md
    assert "0.0010 / 2.000e-04 / 3.000e-05" in md and "s=127: 0.0900" in md
    assert "resolution-invariant" in md and "not invariant" in md  # what FNO and LSM do at s=127
    assert "*0.0065* (s=85)" in md and "*0.0018* (s=211)" in md  # LSM and MgNO as published
    rows = {r["model"]: r for r in table.csv_rows if r["kind"] == "measured"}
    assert rows["lsm"]["rel_l2_s127"] == pytest.approx(0.09) and rows["lsm"]["frmse_mid"] == 2e-4
    table.write(tmp_path / "out")
    assert (tmp_path / "out" / "darcy_models.png").stat().st_size > 0


def test_missing_checkpoint_is_a_note_not_a_crash(tmp_path):
    _fake_run(tmp_path / "run", "operators.fno.FNO", "fno", 0.02, 0.3, bands=False)
    table = darcy_models.build(argparse.Namespace(runs=[str(tmp_path / "run")], no_bands=False))
    assert "no checkpoint in" in table.markdown and "use --no-bands" in table.markdown
    with pytest.raises(UserInputError, match="does not exist"):
        darcy_models.build(argparse.Namespace(runs=[str(tmp_path / "nothing")], no_bands=True))
