"""Schemas of the Hydra config tree (``configs/``), generated from the constructors they build.

One copy of every signature: the constructor. An option of the groups ``model/``, ``data/``,
``optim/`` and ``schedule/`` is one YAML file naming its ``_target_`` and the values it chooses.
``register_schemas()`` reads every such file, builds a dataclass schema from the target's
signature (names, defaults, and types from the annotations), recursing into nested ``_target_``
nodes (``data.pde``), and registers it in Hydra's ConfigStore as ``schema/<group>/<option>``.
``configs/train.yaml`` puts ``optional schema/<group>@<group>: ${<group>}`` before each group in its
defaults list, so the selected option is merged into its own schema at compose time: a misspelt
key (``Key 'widht' not in 'FNOConfig'``) or a value of the wrong type is an error before anything
runs, also on the command line and in ``experiment=`` files. Adding a model is the module plus one
YAML file; nothing here changes.

Registration is an explicit call, made once per process before Hydra composes: by the CLI
(``python -m experiments.train``), by :func:`compose` (tests, tables, benchmarks), and by the tests'
conftest. Importing this module reads no YAML, imports no target and loads no JAX.

Arguments the runner supplies at build time are left out of the schemas (``RUNTIME_ARGUMENTS``)
and make the node partial (``_partial_: true``); a partial node also leaves out its required
keyword-only arguments (``rngs``), which its caller supplies, and its other required arguments
stay ``???`` until the caller passes them (a nested ``mixer`` gets ``d_model`` from its model). Annotations map to OmegaConf types: int, float,
bool, str, Optional[...] of those, sequences to List[...], mappings to Dict[str, ...], a Literal of
strings to str (the constructor checks the value); anything else is Any (key-checked, not
type-checked). Parameters whose defaults cannot live in a config (functions, arrays) are left out:
the constructor's default is then always used.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import enum
import inspect
import pathlib
import types
import typing
from dataclasses import field
from typing import Any, Callable, Dict, List, Optional, Sequence

import hydra
from hydra.core.config_store import ConfigStore
from hydra.utils import get_object
from omegaconf import MISSING, DictConfig, OmegaConf

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"

# Arguments each group's target receives from the runner, not from the config.
RUNTIME_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "model": ("rngs",),                               # model(rngs=nnx.Rngs(seed))
    "data": (),
    "optim": ("learning_rate",),                      # optimizer(learning_rate=schedule)
    "schedule": ("steps_per_epoch", "total_steps"),   # schedule(steps_per_epoch=..., total_steps=...)
}

_PRIMITIVES = (int, float, bool, str)


class ConfigSchemaError(RuntimeError):
    """A YAML option of configs/ names a target whose schema cannot be generated."""


def resolve_target(path: str) -> Callable:
    """The object at a dotted path (``operators.fno.FNO``), located as Hydra's ``instantiate`` does."""
    try:
        return get_object(path)
    except Exception as err:  # ImportError and friends, worded by Hydra
        raise ConfigSchemaError(f"cannot import {path!r}: {str(err).splitlines()[0]}") from None


def omegaconf_type(annotation: Any) -> Any:
    """The OmegaConf field type for a Python annotation (Any where OmegaConf has no equivalent)."""
    if annotation in _PRIMITIVES or (isinstance(annotation, type) and issubclass(annotation, enum.Enum)):
        return annotation
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        others = [a for a in args if a is not type(None)]
        inner = omegaconf_type(others[0]) if len(others) == 1 else Any
        return Optional[inner] if inner is not Any and len(others) < len(args) else Any
    if origin in (list, tuple, collections.abc.Sequence, collections.abc.MutableSequence):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            kinds = {omegaconf_type(a) for a in args}
            return List[kinds.pop() if len(kinds) == 1 else Any]
        return List[omegaconf_type(args[0]) if args else Any]
    if origin in (dict, collections.abc.Mapping, collections.abc.MutableMapping):
        return Dict[str, omegaconf_type(args[1]) if len(args) == 2 else Any]
    if origin is typing.Literal and all(isinstance(a, str) for a in args):
        return str
    return Any


def _config_default(value: Any) -> tuple[bool, Any]:
    """(representable, default) of a parameter default; lists/dicts as default factories."""
    if value is None or isinstance(value, _PRIMITIVES + (enum.Enum,)):
        return True, value
    if isinstance(value, (list, tuple)) and all(v is None or isinstance(v, _PRIMITIVES) for v in value):
        return True, field(default_factory=lambda v=list(value): list(v))
    if isinstance(value, dict) and all(isinstance(v, _PRIMITIVES) for v in value.values()):
        return True, field(default_factory=lambda v=dict(value): dict(v))
    return False, None


def signature_schema(target: str, exclude: tuple[str, ...] = (), partial: bool = False,
                     nested: dict[str, type] | None = None, provided: frozenset[str] = frozenset()) -> type:
    """A dataclass schema with ``_target_`` (and ``_partial_``) plus one field per parameter of ``target``.

    ``nested``: parameters whose value is itself a config node with a schema (used as its default).
    ``provided``: the keys the YAML node sets; a partial node's required keyword-only arguments that it
    does not set (``rngs``) are left to its caller and out of the schema.
    """
    fn = resolve_target(target)
    try:  # a class's own __init__: metaclasses (NNX modules) hide it behind __call__(*args, **kwargs)
        sig = inspect.signature(fn.__init__ if inspect.isclass(fn) else fn)
    except (TypeError, ValueError) as err:
        raise ConfigSchemaError(f"cannot read the signature of {target!r}: {err}") from None
    params = list(sig.parameters.values())[1 if inspect.isclass(fn) else 0:]  # without self
    try:
        hints = typing.get_type_hints(fn.__init__ if inspect.isclass(fn) else fn)
    except Exception:  # unresolvable forward references: keep those that are real objects
        hints = {p.name: p.annotation for p in params if not isinstance(p.annotation, str)}
    nested = nested or {}
    fields = [("_target_", str, field(default=target))]
    if partial:
        fields.append(("_partial_", bool, field(default=True)))
    for p in params:
        if p.name in exclude or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            continue
        if (partial and p.kind is p.KEYWORD_ONLY and p.default is inspect.Parameter.empty
                and p.name not in provided):
            continue  # supplied by whoever calls the partial (e.g. rngs=), not by the config
        if p.name in nested:
            fields.append((p.name, Any, field(default_factory=nested[p.name])))
            continue
        tp = omegaconf_type(hints.get(p.name, Any))
        if p.default is inspect.Parameter.empty:
            fields.append((p.name, tp, field(default=MISSING)))
            continue
        ok, default = _config_default(p.default)
        if ok:
            fields.append((p.name, tp, default if isinstance(default, dataclasses.Field) else field(default=default)))
    name = f"{getattr(fn, '__name__', 'Target')}Config"
    return dataclasses.make_dataclass(name, fields)


def node_schema(node: dict, exclude: tuple[str, ...] = (), partial: bool = False) -> type:
    """The schema of a config node with a ``_target_``, nested ``_target_`` nodes included.

    A node is partial if its group's target takes runtime arguments or if it says ``_partial_: true``
    (a nested factory the parent calls with the rest, e.g. a model's ``mixer``); the arguments it
    leaves unset stay ``???`` in the schema, which Hydra's partial instantiation skips.
    """
    nested = {k: node_schema(v) for k, v in node.items()
              if isinstance(v, dict) and "_target_" in v and not k.startswith("_")}
    return signature_schema(node["_target_"], exclude=exclude, partial=partial or node.get("_partial_") is True,
                            nested=nested, provided=frozenset(node))


@dataclasses.dataclass
class TrainerConfig:
    """Trainer knobs (``trainer.*`` in the config; this dataclass is their only copy of the defaults).

    ``max_steps``, when set, wins over ``epochs``. Batch sizes are global (all devices, all processes)
    and must be multiples of the device count. ``coordinator_address`` / ``num_processes`` /
    ``process_id`` launch one process of a multi-process run (see experiments/distributed.py).
    Read by ``experiments.trainer.Trainer``, which re-exports it.
    """

    max_steps: Optional[int] = None
    epochs: int = 15
    batch_size: int = 20
    eval_batch_size: Optional[int] = None
    log_every: int = 25
    ckpt_every: int = 500
    eval_every: int = 0  # 0: evaluate only at the end
    max_to_keep: int = 2
    devices: Optional[int] = None  # use the first N local devices (default: all)
    progress: bool = True
    plots: bool = True
    tensorboard: bool = False  # also write the metrics as TensorBoard events under <run_dir>/tensorboard
    coordinator_address: Optional[str] = None
    num_processes: Optional[int] = None
    process_id: Optional[int] = None


@dataclasses.dataclass
class ParamGroupConfig:
    """One parameter group (``param_groups.<name>.*``); see optim/param_groups.py.

    ``variable_type``: dotted path of an ``nnx.Variable`` subclass; ``path``: a regular expression
    searched in the "/"-joined parameter path; ``lr_scale``: times the schedule's learning rate;
    ``weight_decay``: the group's (null: the optimizer's); ``projection``: applied after every step,
    "non_negative" or the dotted path of a function of an array.
    """

    variable_type: Optional[str] = None
    path: Optional[str] = None
    lr_scale: float = 1.0
    weight_decay: Optional[float] = None
    projection: Optional[str] = None


@dataclasses.dataclass
class TrainConfig:
    """The top level of ``configs/train.yaml``; the groups are typed by their generated schemas."""

    seed: int = 0
    model: Any = None
    data: Any = None
    optim: Any = None
    schedule: Any = None
    # Each value is checked against ParamGroupConfig when the run starts (experiments.train): a typed
    # Dict[str, ParamGroupConfig] would refuse `+param_groups.x.path=...` key by key on the command line.
    param_groups: Dict[str, Any] = field(default_factory=dict)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    log_level: str = "INFO"


def option_files(config_dir: pathlib.Path = CONFIG_DIR) -> dict[tuple[str, str], pathlib.Path]:
    """``{(group, option): yaml path}`` for every option of the schema-bearing groups."""
    return {(group, path.stem): path for group in RUNTIME_ARGUMENTS
            for path in sorted((config_dir / group).glob("*.yaml"))}


def generate_schemas(config_dir: pathlib.Path = CONFIG_DIR) -> dict[tuple[str, str], type]:
    """``{(group, option): schema}`` for every option in ``config_dir`` (nothing registered).

    Raises ``ConfigSchemaError`` naming the YAML file of an option whose schema cannot be made: a
    file that does not parse, names no ``_target_``, or whose target cannot be imported.
    """
    schemas = {}
    for (group, option), path in option_files(config_dir).items():
        try:
            node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        except Exception as err:  # YAML syntax errors (yaml.MarkedYAMLError: problem and where) and friends
            problem, mark = getattr(err, "problem", None), getattr(err, "problem_mark", None)
            what = (f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if problem and mark
                    else str(err).splitlines()[0])
            raise ConfigSchemaError(f"{path}: {what}") from None
        if not isinstance(node, dict) or "_target_" not in node:
            raise ConfigSchemaError(f"{path}: an option of {group}/ must name its `_target_`")
        exclude = RUNTIME_ARGUMENTS[group]
        try:
            schemas[group, option] = node_schema(node, exclude=exclude, partial=bool(exclude))
        except ConfigSchemaError as err:
            raise ConfigSchemaError(f"{path}: {err}") from None
    return schemas


_REGISTERED: dict[pathlib.Path, dict[tuple[str, str], type]] = {}


def register_schemas(config_dir: pathlib.Path = CONFIG_DIR) -> dict[tuple[str, str], type]:
    """Register the schemas of ``config_dir`` in Hydra's ConfigStore (once per process); returns them.

    Idempotent: the first call generates them (reading every option and importing its target, a few
    seconds), later calls return the same dict. Call it before Hydra composes ``configs/train.yaml``.
    Nothing is registered if any option is broken (``ConfigSchemaError``, naming its file). There is
    one ConfigStore per process: another directory's options replace those of the same names.
    """
    config_dir = pathlib.Path(config_dir).resolve()
    if config_dir not in _REGISTERED:
        schemas = generate_schemas(config_dir)
        cs = ConfigStore.instance()
        cs.store(name="train_schema", node=TrainConfig)
        for (group, option), schema in schemas.items():
            cs.store(group=f"schema/{group}", name=option, node=schema)
        _REGISTERED[config_dir] = schemas
    return _REGISTERED[config_dir]


def compose(overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
    """The config that ``python -m experiments.train <overrides>`` runs with (its ``hydra`` node left
    out), schemas registered first: ``compose(["model=tfno", "trainer.epochs=2"])``.

    Raises Hydra's ``ConfigCompositionException`` for a misspelt key, a wrong type or an unknown option.
    """
    register_schemas()
    with hydra.initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return hydra.compose(config_name=config_name, overrides=list(overrides))
