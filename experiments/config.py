"""Typed schemas of the Hydra config tree (``configs/``), registered with Hydra's ConfigStore.

Every YAML option of a group starts its defaults list with the schema of that option, so a misspelt
key or a value of the wrong type in a YAML file or on the command line is an error at compose time
(``Key 'widht' not in 'FNOConfig'``), not a silent no-op or a traceback from inside JAX.
"""
from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore

from experiments.trainer import TrainerConfig


@dataclasses.dataclass
class FNOConfig:
    _target_: str = "operators.fno.FNO"
    _partial_: bool = True  # the runner passes rngs=
    in_channels: int = 1
    out_channels: int = 1
    modes: List[int] = field(default_factory=lambda: [12, 12])
    width: int = 32
    n_layers: int = 4
    projection_channels: int = 128
    use_grid: bool = True
    padding: float = 0.0


@dataclasses.dataclass
class DarcyConfig:
    _target_: str = "experiments.tasks.pde.DarcyTask"
    n_train: int = 500
    n_test: int = 100
    solve_resolution: int = 127
    train_resolution: int = 64
    test_resolutions: List[int] = field(default_factory=list)
    alpha: float = 2.0
    tau: float = 3.0
    a_pos: float = 12.0
    a_neg: float = 3.0
    seed: int = 0
    normalizer: str = "pointwise"
    loss: str = "l2"
    cache_dir: str = ".cache/neural_lax"
    workers: Optional[int] = None  # processes for the solves; null: all CPUs for large jobs


@dataclasses.dataclass
class AdamConfig:
    _target_: str = "optim.adam"
    _partial_: bool = True  # the runner passes learning_rate= (the schedule)
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclasses.dataclass
class AdamWConfig:
    _target_: str = "optax.adamw"
    _partial_: bool = True
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 1e-4


@dataclasses.dataclass
class ConstantScheduleConfig:
    _target_: str = "optim.schedules.constant"
    _partial_: bool = True  # the runner passes steps_per_epoch=, total_steps=
    value: float = 1e-3


@dataclasses.dataclass
class StepScheduleConfig:
    _target_: str = "optim.schedules.step_decay"
    _partial_: bool = True
    value: float = 1e-3
    every_epochs: float = 100
    gamma: float = 0.5


@dataclasses.dataclass
class CosineScheduleConfig:
    _target_: str = "optim.schedules.cosine"
    _partial_: bool = True
    value: float = 1e-3
    warmup_epochs: float = 0.0
    final_fraction: float = 0.0


@dataclasses.dataclass
class TrainConfig:
    seed: int = 0
    model: Any = None
    data: Any = None
    optim: Any = None
    schedule: Any = None
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    log_level: str = "INFO"


SCHEMAS = {
    ("model", "fno_schema"): FNOConfig,
    ("data", "darcy_schema"): DarcyConfig,
    ("optim", "adam_schema"): AdamConfig,
    ("optim", "adamw_schema"): AdamWConfig,
    ("schedule", "constant_schema"): ConstantScheduleConfig,
    ("schedule", "step_schema"): StepScheduleConfig,
    ("schedule", "cosine_schema"): CosineScheduleConfig,
    ("trainer", "trainer_schema"): TrainerConfig,
}


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for (group, name), node in SCHEMAS.items():
        cs.store(group=group, name=name, node=node)


register_schemas()
