"""Hydra entry point: ``python -m experiments.train [group=option ...] [key=value ...]``.

    python -m experiments.train                                   # FNO on Darcy (small, CPU minutes)
    python -m experiments.train experiment=fno_darcy              # the FNO paper's Darcy protocol
    python -m experiments.train model.width=64 optim=adamw trainer.epochs=50
    python -m experiments.train -m model.modes=[8,8],[12,12] seed=0,1   # a sweep

The run directory is Hydra's output directory (``hydra.run.dir=...`` moves it); rerunning the same
command in the same directory resumes from its latest checkpoint. See README.md.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import sys
import time

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments.errors import NonFiniteLossError, Preempted, UserInputError

try:
    from experiments.build import fit_model_config, make_optimizer, param_group_configs  # registers schemas
except Exception as err:  # a broken option in configs/: say which file, not a traceback
    sys.exit(f"error: {err}")

log = logging.getLogger("experiments.train")

def _quiet_libraries() -> None:
    for name in ("jax", "absl", "orbax", "jax._src.xla_bridge"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)
    except ImportError:
        pass


def _log_from_primary_only() -> None:
    """One log per run: processes other than 0 write no log file and print only warnings and errors."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
    root.setLevel(logging.WARNING)


def run(cfg: DictConfig, run_dir: pathlib.Path) -> dict:
    """Build task, model and optimizer from ``cfg``, train in ``run_dir``, write results.json."""
    import flax.nnx as nnx
    from hydra.utils import instantiate

    from experiments.checkpoint import run_identity
    from experiments.distributed import check_same_everywhere, is_primary, primary_first
    from experiments.trainer import Trainer, TrainerConfig

    check_same_everywhere(str(run_dir.absolute()), "the run directory",
                          "pass the same hydra.run.dir=... (on a shared file system) to every process")

    trainer_cfg = TrainerConfig(**OmegaConf.to_container(cfg.trainer, resolve=True))
    task = instantiate(cfg.data, _convert_="all")
    fit_model_config(cfg.model, task.model_settings())  # before the identity: it holds the real settings
    parts = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "data", "optim", "schedule")}
    parts["param_groups"] = {k: dataclasses.asdict(v) for k, v in param_group_configs(cfg).items()}
    identity = run_identity({**parts, "seed": cfg.seed}, volatile={"data": task.volatile_keys})
    trainer = Trainer(trainer_cfg, run_dir, seed=cfg.seed, identity=identity)
    model = instantiate(cfg.model, _convert_="all")(rngs=nnx.Rngs(cfg.seed))
    make_tx = make_optimizer(cfg, model)

    task.check_model(model, trainer_cfg.batch_size)  # shapes only, before any data is generated
    t = time.perf_counter()
    primary_first(lambda primary: task.setup(progress=trainer_cfg.progress and primary))
    data_seconds = time.perf_counter() - t

    results = trainer.fit(model, make_tx, task)
    results["cost"] = {"data_seconds": data_seconds, **results["cost"]}
    results["run_dir"] = str(run_dir)
    if is_primary():
        (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    log.info("objective %s on %s: %.6g; results in %s", results["objective"]["metric"],
             results["objective"]["split"], results["objective"]["value"], run_dir)
    return results


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float:
    logging.getLogger().setLevel(cfg.log_level)
    _quiet_libraries()
    try:
        from experiments.distributed import initialize, is_primary

        initialize(cfg.trainer.coordinator_address, cfg.trainer.num_processes, cfg.trainer.process_id)
        if not is_primary():
            _log_from_primary_only()
        results = run(cfg, pathlib.Path(HydraConfig.get().runtime.output_dir))
    except (UserInputError, NonFiniteLossError) as err:
        log.error("%s", err)
        sys.exit(2)
    except Preempted as err:
        log.warning("%s", err)
        sys.exit(143)
    return results["objective"]["value"]  # what a Hydra sweeper optimises (see results' "mode")


if __name__ == "__main__":
    from experiments.allocator import tune_malloc

    tune_malloc()  # before JAX starts its backend: keeps XLA:CPU's step buffers paged in (allocator.py)
    main()
