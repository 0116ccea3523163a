"""The Hydra config tree composes, validates, and builds what it says (no training here)."""
from __future__ import annotations

import pathlib

import flax.nnx as nnx
import jax
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

import experiments.config  # noqa: F401  (registers the schemas)
from experiments.tasks.pde import stride_for
from experiments.trainer import count_params
from operators.fno import pad_cells

CONFIGS = str(pathlib.Path(__file__).resolve().parents[2] / "configs")


def cfg_with(*overrides):
    with initialize_config_dir(version_base="1.3", config_dir=CONFIGS):
        return compose(config_name="train", overrides=list(overrides))


def test_paper_darcy_experiment_builds_the_papers_model_and_data():
    cfg = cfg_with("experiment=fno_darcy")
    model = instantiate(cfg.model, _convert_="all")(rngs=nnx.Rngs(0))
    assert count_params(model) == 2_368_001  # fourier_2d.py, modes 12, width 32
    assert pad_cells(cfg.model.padding, cfg.data.train_resolution) == 9  # F.pad(x, [0, 9, 0, 9]) at s=85
    assert stride_for(cfg.data.solve_resolution, cfg.data.train_resolution) == 5  # r=5 from 421
    assert (cfg.data.n_train, cfg.data.n_test, cfg.trainer.batch_size, cfg.trainer.epochs) == (1000, 100, 20, 500)
    assert cfg.optim._target_ == "optim.adam" and cfg.optim.weight_decay == pytest.approx(1e-4)
    assert cfg.schedule._target_ == "optim.schedules.step_decay"
    assert (cfg.schedule.value, cfg.schedule.every_epochs, cfg.schedule.gamma) == (1e-3, 100, 0.5)
    task = instantiate(cfg.data, _convert_="all")
    out = jax.eval_shape(lambda x: model(x), task.example_batch(20)["x"])
    assert out.shape == (20, 85, 85, 1)


@pytest.mark.parametrize("group, options", [
    ("optim", ["adam", "adamw"]), ("schedule", ["constant", "step", "cosine"]),
])
def test_every_optimizer_and_schedule_option_builds(group, options):
    for option in options:
        cfg = cfg_with(f"{group}={option}")
        schedule = instantiate(cfg.schedule)(steps_per_epoch=10, total_steps=100)
        tx = instantiate(cfg.optim)(learning_rate=schedule)
        params = {"w": jax.numpy.ones(3)}
        tx.update(params, tx.init(params), params)


def test_default_config_is_the_documented_main_job():
    cfg = cfg_with()
    assert cfg.model._target_ == "operators.fno.FNO" and cfg.data.train_resolution == 64
    assert cfg.data.solve_resolution == 127 and list(cfg.data.test_resolutions) == [127]
    assert (cfg.data.n_train, cfg.data.n_test) == (500, 100)


@pytest.mark.parametrize("override, error", [
    ("model.widht=3", ConfigCompositionException),
    ("trainer.epochs=ten", ConfigCompositionException),
    ("model=no_such_model", ConfigCompositionException),
])
def test_typos_and_wrong_types_fail_at_compose_time(override, error):
    with pytest.raises(error):
        cfg_with(override)
