"""Hydra entry point: ``python -m experiments.train [group=option ...] [key=value ...]``.

    python -m experiments.train                                   # FNO on Darcy (small, CPU minutes)
    python -m experiments.train experiment=fno_darcy              # the FNO paper's Darcy protocol
    python -m experiments.train model.width=64 optim=adamw trainer.epochs=50
    python -m experiments.train -m model.modes=[8,8],[12,12] seed=0,1   # a sweep

The run directory is Hydra's output directory (``hydra.run.dir=...`` moves it); rerunning the same
command in the same directory resumes from its latest checkpoint. See README.md.
"""
from __future__ import annotations

import json
import logging
import pathlib
import sys
import time

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from experiments.allocator import tune_malloc
from experiments.build import build_model, build_task, make_optimizer, run_fingerprint, trainer_config
from experiments.config import register_schemas
from experiments.distributed import check_same_everywhere, initialize, is_primary, primary_first
from experiments.errors import CheckpointWriteError, NonFiniteLossError, Preempted, UserInputError
from experiments.trainer import Trainer

log = logging.getLogger("experiments.train")


def _quiet_libraries() -> None:
    for name in ("jax", "absl", "orbax", "jax._src.xla_bridge"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        from absl import logging as absl_logging  # optional: installed with orbax, not required

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
    """Build task, model and optimizer from ``cfg`` (experiments.build), train in ``run_dir``, write
    results.json; returns the results."""
    check_same_everywhere(str(run_dir.absolute()), "the run directory",
                          "pass the same hydra.run.dir=... (on a shared file system) to every process")
    trainer_cfg = trainer_config(cfg)
    task = build_task(cfg)
    model = build_model(cfg, task)  # cfg.model fitted to the data first, so the fingerprint holds the real settings
    trainer = Trainer(trainer_cfg, run_dir, seed=cfg.seed, identity=run_fingerprint(cfg, task))
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
    """One run (Hydra calls it once per job of a multirun); exit status 2 on bad input or a non-finite
    loss, 143 when stopped by a signal (after saving a checkpoint)."""
    logging.getLogger().setLevel(cfg.log_level)
    _quiet_libraries()
    try:
        initialize(cfg.trainer.coordinator_address, cfg.trainer.num_processes, cfg.trainer.process_id)
        if not is_primary():
            _log_from_primary_only()
        results = run(cfg, pathlib.Path(HydraConfig.get().runtime.output_dir))
    except (UserInputError, NonFiniteLossError, CheckpointWriteError) as err:
        log.error("%s", err)
        sys.exit(2)
    except Preempted as err:
        log.warning("%s", err)
        sys.exit(143)
    return results["objective"]["value"]  # what a Hydra sweeper optimises (see results' "mode")


if __name__ == "__main__":
    tune_malloc()  # before JAX starts its backend: keeps XLA:CPU's step buffers paged in (allocator.py)
    try:
        register_schemas()  # before Hydra composes, which it does inside main() (also for -m, --cfg, --help)
    except Exception as err:  # a broken option in configs/: one line naming its file, not a traceback
        sys.exit(f"error: {err}")
    main()
