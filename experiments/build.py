"""Building a run from its config: the task, the model, the optimizer; and restoring a trained one.

The library half of the runner: ``python -m experiments.train`` (the thin CLI), the tables, the
benchmarks and the tests build from a composed config (``experiments.config.compose``, or a run's
``.hydra/config.yaml``) through these functions, so every entry point builds exactly what a
training run builds::

    task = build_task(cfg)
    model = build_model(cfg, task)            # cfg.model fitted to the data first (fit_model_config)
    make_tx = make_optimizer(cfg, model)      # make_tx(steps_per_epoch, total_steps)

JAX, Flax, Orbax and the targets' modules are imported inside the functions that need them: the
table CLI imports this module (``restore_trained``) to list its arguments, and a table that only
reads results should not pay for them.
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
import pathlib
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from experiments.config import ConfigSchemaError, ParamGroupConfig, TrainerConfig, resolve_target
from experiments.errors import UserInputError

log = logging.getLogger("experiments.build")

PROJECTIONS = {"non_negative": "optax.projections.projection_non_negative"}


def build_task(cfg: DictConfig):
    """The task of ``cfg.data`` (a ``experiments.tasks.base.Task``), not set up: no data generated yet."""
    return instantiate(cfg.data, _convert_="all")


def build_model(cfg: DictConfig, task=None):
    """The model of ``cfg.model``, initialised from ``cfg.seed`` (``nnx.Rngs``).

    With ``task``, ``cfg.model`` is first fitted in place to the settings the data decides
    (``fit_model_config``), as the runner does, so the model takes the task's data.
    """
    import flax.nnx as nnx

    if task is not None:
        fit_model_config(cfg.model, task.model_settings())
    return instantiate(cfg.model, _convert_="all")(rngs=nnx.Rngs(int(cfg.seed)))


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


def trainer_config(cfg: DictConfig) -> TrainerConfig:
    """``cfg.trainer`` as the trainer's dataclass."""
    return TrainerConfig(**OmegaConf.to_container(cfg.trainer, resolve=True))


def run_fingerprint(cfg: DictConfig, task) -> dict[str, str]:
    """The run's identity that its checkpoints carry (``experiments.checkpoint.run_identity``).

    Hashes of the model, data, optimizer, schedule, parameter groups and seed, without the task's
    ``volatile_keys`` (where data is cached). Call it after ``build_model(cfg, task)``: it hashes the
    model settings the data decided.
    """
    from experiments.checkpoint import run_identity

    parts = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "data", "optim", "schedule")}
    parts["param_groups"] = {k: dataclasses.asdict(v) for k, v in param_group_configs(cfg).items()}
    return run_identity({**parts, "seed": cfg.seed}, volatile={"data": task.volatile_keys})


def restore_trained(run_dir: str | pathlib.Path, cfg: DictConfig | None = None, *, setup: bool = False,
                    missing: str = "train it first") -> tuple[DictConfig, Any, Any]:
    """``(config, model, task)`` of a run directory of ``experiments.train``: the model in its latest
    checkpoint's state, in eval mode.

    Model, task and optimizer are rebuilt from ``.hydra/config.yaml`` (or ``cfg``) as the runner built
    them, including the model settings the data decides (``fit_model_config``), so
    the checkpoint's structure matches. ``setup``: also set the task up (its data loaded from the
    cache, or generated). ``missing``: what to do when the run has no checkpoint (in the error).
    """
    import flax.nnx as nnx

    from experiments.checkpoint import Checkpointer
    from experiments.trainer import init_train_state

    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise UserInputError(f"run directory {str(run_dir)!r} does not exist or is not a directory")
    if cfg is None:
        config_path = run_dir / ".hydra" / "config.yaml"
        if not config_path.is_file():
            raise UserInputError(f"{run_dir} has no .hydra/config.yaml; pass a run directory of experiments.train")
        from experiments.checkpoint import renamed_targets  # a run saved before a target moved

        cfg = OmegaConf.create(renamed_targets(OmegaConf.to_container(OmegaConf.load(config_path))))
    task = build_task(cfg)
    model = build_model(cfg, task)
    if setup:
        task.setup(progress=False)
    ckpt = Checkpointer(run_dir / "checkpoints")
    try:
        step = ckpt.latest_step()
        if step is None:
            raise UserInputError(f"{run_dir} holds no checkpoint; {missing}")
        tx = make_optimizer(cfg, model)(task.steps_per_epoch(int(cfg.trainer.batch_size)), step)
        _, like = init_train_state(model, tx)
        state, _ = ckpt.restore(step, like)
    finally:
        ckpt.close()
    nnx.update(model, state["params"], state["rest"])
    model.eval()
    return cfg, model, task
