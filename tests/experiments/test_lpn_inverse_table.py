"""The lpn_inverse table end to end on a tiny LPN trained for two steps in-process (no subprocess).

The table's cost is compilation (the PnP / TV solvers, the conjugate solve of the prior study), so the
LPN is the smallest the table accepts (4 channels, two convolutions: strides 1, 2) and every problem and
the prior study run on one test digit: enough for every row and column of the table."""
from __future__ import annotations

import argparse
import csv

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments.config import CONFIG_DIR
from experiments.tables import lpn_inverse
from experiments.train import run


@pytest.mark.slow  # a table from a trained run (~50 s of CPU)
def test_lpn_inverse_table_builds_from_a_tiny_run(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURAL_LAX_CACHE", str(tmp_path / "cache"))
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="train", overrides=[
            "experiment=lpn_digits", "model.hidden=4", "model.strides=[1,2]", "trainer.max_steps=2",
            "trainer.batch_size=8", "trainer.log_every=1", "trainer.ckpt_every=2", "trainer.progress=false",
            "trainer.plots=false", "data.pretrain_steps=1", "data.stage_steps=1", "data.source.n_val=8",
            "data.source.n_test=8"])
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    run(cfg, run_dir)

    parser = argparse.ArgumentParser()
    lpn_inverse.add_arguments(parser)
    args = parser.parse_args([str(run_dir), "--images", "1", "--iters", "3", "--views", "4", "--prior-images", "1"])
    table = lpn_inverse.build(args)
    table.write(tmp_path / "out")
    for name in ("lpn_inverse.png", "lpn_inverse_convergence.png", "lpn_inverse_prior.png", "lpn_inverse.md"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "lpn_inverse.csv")))
    recon = {(r["problem"], r["method"]): r for r in rows if r["table"] == "reconstruction"}
    assert set(recon) == {("deblurring", m) for m in ("blurred", "TV", "Wiener", "LPN PnP-PGD", "LPN PnP-ADMM")} | \
        {("sparse-view CT", m) for m in ("FBP", "TV", "LPN PnP-PGD", "LPN PnP-ADMM")}
    for r in recon.values():
        assert np.isfinite(float(r["psnr_mean"])) and -1 <= float(r["ssim_mean"]) <= 1
    # TV and Wiener recover a blurred digit better than the blurred image itself (tuned on validation digits)
    assert float(recon[("deblurring", "Wiener")]["psnr_mean"]) > float(recon[("deblurring", "blurred")]["psnr_mean"])
    prior = [r for r in rows if r["table"] == "prior"]
    assert len(prior) == 15 and all(float(r["inversion_residual"]) < 1e-2 for r in prior)
    assert "Prior study" in table.markdown and "sparse-view CT" in table.markdown
