"""Hydra entry point: ``python -m experiments.train [group=option ...] [key=value ...]``.

    python -m experiments.train                                   # FNO on Darcy (small, CPU minutes)
    python -m experiments.train experiment=fno_darcy              # the FNO paper's Darcy protocol
    python -m experiments.train model.width=64 optim=adamw trainer.epochs=50
    python -m experiments.train -m model.modes=[8,8],[12,12] seed=0,1   # a sweep

The run directory is Hydra's output directory (``hydra.run.dir=...`` moves it); rerunning the same
command in the same directory resumes from its latest checkpoint. See README.md.
"""
from __future__ import annotations

import hashlib
import json
import logging
import pathlib
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import experiments.config  # noqa: F401  (registers the schemas)

log = logging.getLogger("experiments.train")


def _quiet_libraries() -> None:
    for name in ("jax", "absl", "orbax", "jax._src.xla_bridge"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)
    except ImportError:
        pass


def fingerprint(cfg: DictConfig) -> dict:
    """Hashes of the config parts a checkpoint depends on (trainer length and logging may change)."""
    parts = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "data", "optim", "schedule")}
    for key in ("cache_dir", "workers"):  # where and how fast data is made does not change it
        parts["data"].pop(key, None)
    parts["seed"] = cfg.seed
    return {k: hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()[:16] for k, v in parts.items()}


def run(cfg: DictConfig, run_dir: pathlib.Path) -> dict:
    """Build task, model and optimizer from ``cfg``, train in ``run_dir``, write results.json."""
    import flax.nnx as nnx
    import jax
    from hydra.utils import instantiate

    from experiments.tasks.base import UserInputError
    from experiments.trainer import Trainer, TrainerConfig

    trainer_cfg = TrainerConfig(**OmegaConf.to_container(cfg.trainer, resolve=True))
    trainer = Trainer(trainer_cfg, run_dir, seed=cfg.seed, fingerprint=fingerprint(cfg))
    task = instantiate(cfg.data, _convert_="all")
    model = instantiate(cfg.model, _convert_="all")(rngs=nnx.Rngs(cfg.seed))

    # Check that model and data fit before generating any data: shapes only, nothing is computed.
    example = task.example_batch(trainer_cfg.batch_size)
    try:
        out = jax.eval_shape(lambda x: model(x), example["x"])
    except ValueError as err:
        raise UserInputError(f"the model does not fit the data ({cfg.model._target_} on input of shape "
                             f"{example['x'].shape}): {err}") from None
    if "y" in example and out.shape != example["y"].shape:
        raise UserInputError(f"the model maps {example['x'].shape} to {out.shape}, but the targets have "
                             f"shape {example['y'].shape}; check model.out_channels")

    task.setup(progress=trainer_cfg.progress)

    def make_tx(steps_per_epoch: int, total_steps: int):
        schedule = instantiate(cfg.schedule)(steps_per_epoch=steps_per_epoch, total_steps=total_steps)
        return instantiate(cfg.optim)(learning_rate=schedule)

    results = trainer.fit(model, make_tx, task)
    results["run_dir"] = str(run_dir)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    log.info("results: %s", json.dumps(results["metrics"]))
    return results


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from experiments.tasks.base import UserInputError
    from experiments.trainer import NonFiniteLossError, Preempted

    logging.getLogger().setLevel(cfg.log_level)
    _quiet_libraries()
    run_dir = pathlib.Path(HydraConfig.get().runtime.output_dir)
    try:
        results = run(cfg, run_dir)
    except (UserInputError, NonFiniteLossError) as err:
        log.error("%s", err)
        sys.exit(2)
    except Preempted as err:
        log.warning("%s", err)
        sys.exit(143)
    first_split = next(iter(results["metrics"].values()), {})
    return next(iter(first_split.values()), None)  # the value a Hydra sweeper optimises


if __name__ == "__main__":
    main()
