"""Building a run from its config: the task, the model, the optimizer; and restoring a trained one.

The library half of the runner: ``python -m experiments.train`` (the thin CLI), the tables, the
benchmarks and the tests build from a composed config (``experiments.config.compose``, or a run's
``.hydra/config.yaml``) through these functions, so every entry point builds exactly what a
training run builds::

    task = build_task(cfg)
    model = build_model(cfg, task)            # cfg.model fitted to the data first (fit_model_config)
    make_tx = make_optimizer(cfg, model)      # make_tx(steps_per_epoch, total_steps)

A trained run comes back through ``restore_trained`` (config -> task and model -> ``restore_model``,
the model's part of the latest Orbax checkpoint): the tables, ``experiments.load_run`` and the
predict / evaluate / export CLIs all restore through it.

JAX, Flax, Orbax and the targets' modules are imported inside the functions that need them: the
table CLI imports this module to list its arguments, and a table that only reads results should
not pay for them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import pathlib
from typing import Any, Iterator

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


CONFIG_FILE = pathlib.Path(".hydra") / "config.yaml"


def saved_config(run_dir: str | pathlib.Path, config_file: str | pathlib.Path = CONFIG_FILE) -> DictConfig:
    """The config a run (or an exported model) was built from, ``run_dir / config_file``; a target that
    moved since (``experiments.checkpoint.MOVED_TARGETS``) is renamed, so an old run still rebuilds."""
    from experiments.checkpoint import renamed_targets

    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise UserInputError(f"run directory {str(run_dir)!r} does not exist or is not a directory")
    path = run_dir / config_file
    if not path.is_file():
        raise UserInputError(f"{run_dir} has no {config_file}; pass a run directory of experiments.train "
                             f"(or a directory written by experiments.export)")
    return OmegaConf.create(renamed_targets(OmegaConf.to_container(OmegaConf.load(path))))


def restore_trained(run_dir: str | pathlib.Path, cfg: DictConfig | None = None, *, missing: str = "train it first",
                    recorded_versions: dict[str, str] | None = None) -> tuple[DictConfig, Any, Any]:
    """``(config, model, task)`` of a run directory of ``experiments.train`` (or of ``experiments.export``):
    the model in its latest checkpoint's state, in eval mode.

    Model and task are rebuilt from ``.hydra/config.yaml`` (or ``cfg``) as the runner built them,
    including the model settings the data decides (``fit_model_config``), so the checkpoint's structure
    matches; only the model's part of the checkpoint is read (``restore_model``), so no optimizer is
    built and no data is needed: the task is not set up (``experiments.load.Run.task`` sets it up on
    first use). ``missing``: what to do when the run has no checkpoint (in the error).
    ``recorded_versions``: the package versions the checkpoint was written with, named beside the
    installed ones when the model no longer matches it.
    """
    run_dir = pathlib.Path(run_dir)
    if cfg is None:
        cfg = saved_config(run_dir)
    elif not run_dir.is_dir():
        raise UserInputError(f"run directory {str(run_dir)!r} does not exist or is not a directory")
    task = build_task(cfg)
    model = build_model(cfg, task)
    restore_model(model, run_dir / "checkpoints", missing=f"{run_dir} holds no checkpoint; {missing}",
                  recorded_versions=recorded_versions)
    return cfg, model, task


def restore_model(model, directory: pathlib.Path, *, missing: str,
                  recorded_versions: dict[str, str] | None = None) -> int:
    """Update ``model`` in place to the parameters and other state (``rest``) of the latest Orbax
    checkpoint in ``directory``, put it in eval mode, and return the step.

    Reads a training checkpoint (``{step, params, rest, opt_state}``, experiments/trainer.py) or an
    exported one (``{params, rest}``) alike: only ``params`` and ``rest`` are restored (Orbax's partial
    restore), read-only, so the directory is never written. Before reading, the checkpoint's parameter
    paths and shapes are compared with the model's: a difference (the installed code builds another
    model than the one saved) is a ``UserInputError`` listing the differences and the package versions.
    """
    import flax.nnx as nnx
    import jax
    import orbax.checkpoint as ocp

    with _read_only_checkpoints(directory, missing) as (mngr, step):
        _, params, rest = nnx.split(model, nnx.Param, ...)
        like = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"params": params, "rest": rest})
        saved = mngr.item_metadata(step)["state"]
        saved = {k: saved.tree[k] for k in ("params", "rest") if k in saved.tree}
        _check_same_structure(saved, like, directory / str(step), recorded_versions)
        restore_args = jax.tree.map(lambda s: ocp.ArrayRestoreArgs(dtype=s.dtype, sharding=s.sharding), like)
        state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item=like, restore_args=restore_args, partial_restore=True))).state
    nnx.update(model, state["params"], state["rest"])
    model.eval()
    return step


@contextlib.contextmanager
def _read_only_checkpoints(directory: pathlib.Path, missing: str) -> Iterator[tuple[Any, int]]:
    """``(manager, latest step)`` of an Orbax checkpoint directory opened read-only; ``missing`` when empty."""
    import orbax.checkpoint as ocp

    directory = pathlib.Path(directory).absolute()
    if not (directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())):
        raise UserInputError(missing)
    options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
    absl = logging.getLogger("absl")  # Orbax warns that the directory is read only: here it is meant to be
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        mngr = ocp.CheckpointManager(directory, options=options, item_handlers={
            "state": ocp.PyTreeCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()})
    finally:
        absl.setLevel(level)
    try:
        step = mngr.latest_step()
        if step is None:
            raise UserInputError(missing)
        yield mngr, step
    finally:
        mngr.close()


def _check_same_structure(saved: dict, like: dict, where: pathlib.Path, recorded: dict[str, str] | None) -> None:
    """``UserInputError`` when the checkpoint's arrays (paths, shapes) differ from the model's."""
    import jax

    def shapes(tree) -> dict[str, tuple]:
        leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
        return {jax.tree_util.keystr(path, simple=True, separator="/"): tuple(leaf.shape) for path, leaf in leaves}

    old, new = shapes(saved), shapes(like)
    diffs = [f"{k}: saved {old.get(k, 'absent')}, built {new.get(k, 'absent')}"
             for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if diffs:
        from experiments.cost import versions

        installed = versions()
        recorded = recorded or {}
        changed = {k: f"{recorded.get(k, '?')} -> {installed.get(k, '?')}"
                   for k in sorted(set(recorded) | set(installed)) if recorded.get(k) != installed.get(k)}
        shown = "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "")
        raise UserInputError(
            f"the checkpoint in {where} does not fit the model the installed project builds from its config "
            f"({len(diffs)} arrays differ: {shown}). Package versions recorded -> installed: "
            f"{changed or 'unchanged'}{'' if recorded else ' (none recorded)'}. Install the recorded versions "
            f"of the project and its packages to load it, or retrain with the installed ones")
