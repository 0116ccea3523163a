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
import inspect
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
    from experiments.config import ConfigSchemaError, ParamGroupConfig, resolve_target  # registers schemas
except Exception as err:  # a broken option in configs/: say which file, not a traceback
    sys.exit(f"error: {err}")

log = logging.getLogger("experiments.train")

PROJECTIONS = {"non_negative": "optax.projections.projection_non_negative"}


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


def param_group_configs(cfg: DictConfig) -> dict[str, ParamGroupConfig]:
    """``cfg.param_groups`` checked against ``ParamGroupConfig`` (unknown keys, types), defaults filled."""
    out = {}
    for name, node in cfg.param_groups.items():
        try:
            out[name] = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ParamGroupConfig), node))
        except Exception as err:  # omegaconf's ValidationError / ConfigKeyError name the key
            raise UserInputError(f"param_groups.{name}: {str(err).splitlines()[0]} (keys: variable_type, "
                                 f"path, lr_scale, weight_decay, projection)") from None
    return out


def param_groups(cfg: DictConfig, model) -> list:
    """``optim.param_groups.ParamGroup``s from ``cfg.param_groups``, checked against ``model``."""
    import flax.nnx as nnx

    from optim.param_groups import ParamGroup, group_labels

    groups = []
    for name, g in param_group_configs(cfg).items():
        where = f"param_groups.{name}"
        try:
            variable_type = resolve_target(g.variable_type) if g.variable_type else None
            if variable_type is not None and not (isinstance(variable_type, type)
                                                  and issubclass(variable_type, nnx.Variable)):
                raise ValueError(f"variable_type {g.variable_type!r} is not an nnx.Variable subclass")
            projection = resolve_target(PROJECTIONS.get(g.projection, g.projection)) if g.projection else None
            groups.append(ParamGroup(name, variable_type, g.path, g.lr_scale, g.weight_decay, projection))
        except (ValueError, ConfigSchemaError) as err:
            raise UserInputError(f"{where}: {err}") from None
    if groups:
        try:
            group_labels(nnx.state(model, nnx.Param), groups)
        except ValueError as err:
            raise UserInputError(f"{err}. Fix the param_groups' path / variable_type") from None
    return groups


def make_optimizer(cfg: DictConfig, model):
    """``make_tx(steps_per_epoch, total_steps)``: the schedule, the optimizer and its parameter groups."""
    from hydra.utils import instantiate

    from optim.param_groups import partition_optimizer

    groups = param_groups(cfg, model)
    optimizer = instantiate(cfg.optim)  # partial: learning_rate (and a group's weight_decay) come later
    accepts = inspect.signature(optimizer).parameters
    for g in groups:
        if g.weight_decay is not None and "weight_decay" not in accepts:
            raise UserInputError(f"param_groups.{g.name}.weight_decay is set, but the optimizer "
                                 f"{cfg.optim._target_} takes no weight_decay argument")

    def make_tx(steps_per_epoch: int, total_steps: int):
        try:
            schedule = instantiate(cfg.schedule)(steps_per_epoch=steps_per_epoch, total_steps=total_steps)
        except ValueError as err:  # the schedule's own check of its settings
            raise UserInputError(f"schedule={cfg.schedule._target_.rsplit('.', 1)[-1]}: {err}") from None
        return partition_optimizer(optimizer, schedule, groups)

    return make_tx


def fit_model_config(model_cfg: DictConfig, settings: dict) -> list[str]:
    """Set the model options that the data decides (``Task.model_settings``) where they cannot fit it.

    ``in_channels`` / ``out_channels``: replaced when the config's value differs from the data's (such
    a model could not take the data). ``spatial_dims``: a ``modes`` list with one entry per axis and
    another number of axes is replaced by its first entry repeated (``[12, 12]`` -> ``[12]`` for 1-D
    data) when all its entries are equal; unequal entries are left for the model's own error. Keys the
    model config does not have are ignored (a sequence model has no ``modes``). Returns the changes
    made, as ``key: old -> new`` lines (also logged), so that no setting changes silently.
    """
    changes = []
    for key in ("in_channels", "out_channels"):
        if key in settings and key in model_cfg and model_cfg[key] != settings[key]:
            changes.append(f"model.{key}: {model_cfg[key]} -> {settings[key]}")
            model_cfg[key] = settings[key]
    dims = settings.get("spatial_dims")
    modes = model_cfg.get("modes")
    if dims and modes is not None and not isinstance(modes, (int, float)) and len(modes) != dims:
        modes = list(modes)
        if modes and len(set(modes)) == 1:
            changes.append(f"model.modes: {modes} -> {[modes[0]] * dims}")
            model_cfg.modes = [modes[0]] * dims
    for line in changes:
        log.info("model setting taken from the data: %s", line)
    return changes


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
