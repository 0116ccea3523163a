"""The Hydra config tree composes, validates, and builds what it says (no training here).

Every YAML option of every group and every ``experiment=`` file is composed and built by the loops
below, so a new option is tested without anyone writing a test for it.

Models are built abstractly (``abstract_model``: the constructor runs under ``nnx.eval_shape``, so
every argument is checked and every parameter gets its shape, but nothing is initialised; a
paper-size model's random init would cost tens of seconds of XLA compilation). Where values are
asserted (the optimizer's step) the step runs for real on small stand-ins of the parameters.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import pathlib
from typing import Any, Dict, List, Literal, Optional, Sequence
from unittest import mock

import flax.nnx as nnx
import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import MISSING, OmegaConf

from experiments.build import build_model, build_task, make_optimizer
from experiments.config import (CONFIG_DIR, ConfigSchemaError, compose, omegaconf_type, option_files,
                                register_schemas, resolve_target, signature_schema)
from experiments.tasks.base import eval_shape_or_error
from experiments.trainer import TrainerConfig, count_params
from operators.fno import FNO, pad_cells

from published_layouts import write_well_file

OPTIONS = sorted(option_files())
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


def cfg_with(*overrides):
    return compose(overrides)


@contextlib.contextmanager
def _numpy_seeds_under_tracing():
    """Initialisers that seed NumPy from a key's words (lax_models: lpn, longconv, ssm.s5) get fixed
    words while traced, where the key has no value; the shapes they draw do not depend on them."""
    key_data = jax.random.key_data

    def concrete_key_data(key):
        if isinstance(key, jax.core.Tracer):
            out = jax.eval_shape(key_data, key)
            return np.zeros(out.shape, out.dtype)
        return key_data(key)

    with mock.patch.object(jax.random, "key_data", concrete_key_data):
        yield


def abstract_model(factory_or_cfg):
    """``build_model(cfg)`` (or ``factory()``) under ``nnx.eval_shape``: the constructor's checks run
    and every parameter has its shape and dtype (``jax.ShapeDtypeStruct``), without initialising."""
    factory = factory_or_cfg if callable(factory_or_cfg) else (lambda: build_model(factory_or_cfg))
    with _numpy_seeds_under_tracing():
        return nnx.eval_shape(factory)


def small_stand_ins(params, value):
    """Each parameter as a small real array of the same rank and dtype (2 entries per axis), filled by
    ``value(shape, dtype)``: what an elementwise / per-tensor optimizer step needs of it."""
    return jax.tree.map(lambda x: jnp.asarray(value((2,) * x.ndim, x.dtype)), params)


def take_one_step(cfg, model):
    """The optimizer of ``cfg`` (schedule + parameter groups) updates the model's parameters.

    Abstractly on the model's own parameters (an update of each parameter's shape and dtype), then
    for real, a unit gradient on small stand-ins of them (same tree, paths and variable types, so
    the same parameter groups), once at seeded random values and once at zero (biases' init): finite
    updates. Returns the updates at the random values.
    """
    tx = make_optimizer(cfg, model)(10, 100)
    params = nnx.state(model, nnx.Param)

    def step(p):
        return tx.update(jax.tree.map(jnp.ones_like, p), tx.init(p), p)[0]

    shapes = jax.eval_shape(step, params)
    assert jax.tree.structure(shapes) == jax.tree.structure(params)
    for u, p in zip(jax.tree.leaves(shapes), jax.tree.leaves(params)):
        assert (u.shape, u.dtype) == (p.shape, p.dtype)
    rng = np.random.default_rng(0)
    random = step(small_stand_ins(params, lambda shape, dtype: rng.normal(size=shape).astype(dtype)))
    zero = step(small_stand_ins(params, np.zeros))
    assert all(np.isfinite(np.asarray(u)).all() for u in jax.tree.leaves((random, zero)))
    return random


@pytest.fixture(scope="module")
def required_inputs(tmp_path_factory):
    """Overrides for options that need an input of the user's (``???`` in their YAML)."""
    run = tmp_path_factory.mktemp("previous_run")
    (run / "metrics.jsonl").write_text("".join(f'{{"step": {s}, "loss": 1.0, "grad_norm": {g}}}\n'
                                               for s, g in [(10, 3.0), (20, 2.0), (30, 1.0)]))
    files = tmp_path_factory.mktemp("user_files")
    rng = np.random.default_rng(0)
    scipy.io.savemat(files / "fields.mat", {"coeff": rng.random((4, 9, 9)), "sol": rng.random((4, 9, 9)),
                                            "a": rng.random((4, 8)), "u": rng.random((4, 8))})
    scipy.io.savemat(files / "ns.mat", {"a": rng.random((4, 8, 8)), "u": rng.random((4, 8, 8, 4))})
    np.savez(files / "fields.npz", x=rng.random((4, 8, 8, 1)), y=rng.random((4, 8, 8, 1)))
    np.savez(files / "seq.npz", inputs=rng.integers(0, 5, (4, 8)).astype(np.uint8), labels=np.arange(4) % 2)
    with h5py.File(files / "pdebench.hdf5", "w") as f:  # PDEBench's 1-D single-array layout
        f["tensor"] = rng.random((4, 12, 16), dtype=np.float32)
        f["x-coordinate"] = np.linspace(0, 1, 16, dtype=np.float32)
        f["t-coordinate"] = np.linspace(0, 1, 13, dtype=np.float32)
    w = rng.random((4, 6, 8, 8), dtype=np.float32)
    write_well_file(files / "well.hdf5", w, np.stack([w, -w], -1))
    return {("schedule", "refined"): [f"schedule.grad_norms={run}"],
            ("data", "darcy_mat"): [f"data.pde.train_path={files / 'fields.mat'}", "data.train_resolution=5",
                                    "data.test_resolutions=[9]", "data.n_train=2", "data.n_test=2"],
            ("data", "burgers_mat"): [f"data.pde.train_path={files / 'fields.mat'}", "data.train_resolution=4",
                                      "data.test_resolutions=[8]", "data.n_train=2", "data.n_test=2"],
            ("data", "navier_stokes_mat"): [f"data.pde.train_path={files / 'ns.mat'}", "data.train_resolution=4",
                                            "data.test_resolutions=[8]", "data.t_in=2", "data.t_out=2",
                                            "data.n_train=2", "data.n_test=2"],
            ("data", "arrays"): [f"data.pde.train_path={files / 'fields.npz'}", "data.train_resolution=8",
                                 "data.n_train=2", "data.n_test=2"],
            ("data", "pdebench"): [f"data.path={files / 'pdebench.hdf5'}", "data.t_in=2", "data.n_train=3",
                                   "data.n_test=1"],
            ("data", "the_well"): [f"data.path={files / 'well.hdf5'}", "data.fields=[vorticity]", "data.n_train=2",
                                   "data.n_test=1"],
            ("data", "sequence_arrays"): [f"data.dataset.train_path={files / 'seq.npz'}", "data.dataset.n_test=2"]}


def _inside_nested_partial(root, dotted: str) -> bool:
    """True if ``dotted`` (a full key) lies in a nested ``_partial_: true`` node (its caller passes the rest)."""
    parts = dotted.split(".")
    for i in range(2, len(parts)):  # below the group's own node
        sub = OmegaConf.select(root, ".".join(parts[:i]))
        if OmegaConf.is_dict(sub) and sub.get("_partial_") is True:
            return True
    return False


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_builds(group, option, required_inputs):
    cfg = cfg_with(f"{group}={option}", *required_inputs.get((group, option), []))
    missing = {k for k in OmegaConf.missing_keys(cfg[group]) if not _inside_nested_partial(cfg, k)}
    assert not missing, f"{group}={option} needs {missing}: add them to required_inputs above"
    assert cfg[group]._target_ == OmegaConf.load(CONFIG_DIR / group / f"{option}.yaml")._target_
    if group == "model":
        assert count_params(abstract_model(cfg)) > 0
    elif group == "data":
        task = build_task(cfg)
        leaves = jax.tree.leaves(task.example_batch(cfg.trainer.batch_size))
        assert leaves and all(x.shape[0] == cfg.trainer.batch_size for x in leaves)
    elif group == "schedule":
        schedule = instantiate(cfg.schedule)(steps_per_epoch=10, total_steps=100)
        assert all(np.isfinite(float(schedule(s))) and float(schedule(s)) >= 0 for s in (0, 50, 99))
    else:  # optim
        take_one_step(cfg, abstract_model(cfg))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_builds_and_fits_its_data(experiment):
    cfg = cfg_with(f"experiment={experiment}")
    model = abstract_model(cfg)
    task = build_task(cfg)
    task.check_model(model, cfg.trainer.batch_size)  # shapes only: no data is generated
    take_one_step(cfg, model)


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_rejects_a_misspelt_key(group, option):
    with pytest.raises(ConfigCompositionException) as err:
        cfg_with(f"{group}={option}", f"{group}.no_such_key=1")
    assert "no_such_key" in str(err.value.__cause__)


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_schema_is_its_targets_signature(group, option):
    """One copy of each signature: the schema's fields are the constructor's arguments and defaults."""
    schema = register_schemas()[group, option]
    target = resolve_target(schema._target_)
    fn = target.__init__ if inspect.isclass(target) else target
    params = {n: p for n, p in inspect.signature(fn).parameters.items() if n != "self"}
    fields = {f.name: f for f in dataclasses.fields(schema) if not f.name.startswith("_")}
    runtime = {"model": {"rngs"}, "optim": {"learning_rate"}, "schedule": {"steps_per_epoch", "total_steps"},
               "data": set()}[group]
    assert set(fields) <= set(params) - runtime
    for name, f in fields.items():
        default = params[name].default
        nested = f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory())
        if nested:  # a nested target's node: its schema is checked through that target's own fields
            continue
        if default is inspect.Parameter.empty:
            assert f.default is MISSING, name
        elif f.default_factory is not dataclasses.MISSING:
            assert f.default_factory() == (list(default) if isinstance(default, tuple) else default), name
        else:
            assert f.default == default, name


def test_schema_types_follow_annotations():
    assert omegaconf_type(int) is int and omegaconf_type(bool) is bool
    assert omegaconf_type(Optional[int]) == Optional[int] and omegaconf_type(int | None) == Optional[int]
    assert omegaconf_type(Sequence[int]) == List[int] and omegaconf_type(tuple[float, ...]) == List[float]
    assert omegaconf_type(dict[str, float]) == Dict[str, float]
    assert omegaconf_type(Literal["a", "b"]) is str
    assert omegaconf_type(int | str) is Any and omegaconf_type(np.ndarray) is Any


def example(a: int, b: Sequence[int] = (1, 2), c: Optional[str] = None, d=np.zeros(3), *, rngs=None):
    """A target for the schema generator (module-level so that it has a dotted path)."""


def test_generated_schema_keeps_required_args_and_drops_unrepresentable_defaults():
    schema = signature_schema(f"{__name__}.example", exclude=("rngs",), partial=True)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    assert list(fields) == ["_target_", "_partial_", "a", "b", "c"]  # d (an array default) is left out
    assert fields["a"].default is MISSING and fields["a"].type is int
    assert fields["b"].type == List[int] and fields["b"].default_factory() == [1, 2]
    assert fields["c"].type == Optional[str] and fields["c"].default is None
    node = OmegaConf.structured(schema)
    with pytest.raises(Exception, match="could not be converted to Integer"):
        node.a = "ten"


def test_registering_the_schemas_is_explicit_idempotent_and_light():
    import subprocess
    import sys

    code = ("import sys, experiments.config as c; from hydra.core.config_store import ConfigStore; "
            "print([m for m in sys.modules if m.startswith(('jax', 'flax', 'orbax', 'operators', 'lax_models'))], "
            "'schema' in ConfigStore.instance().repo)")
    out = subprocess.run([sys.executable, "-c", code], cwd=CONFIG_DIR.parent, capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["[]", "False"]  # importing the module loads no JAX and registers nothing
    assert register_schemas() is register_schemas(CONFIG_DIR)


@pytest.mark.parametrize("text, message", [
    ("_target_: no_such_module.Model\n", "cannot import 'no_such_module.Model'"),
    ("width: 3\n", "must name its `_target_`"),
    ("_target_: [unclosed\n", "but got '<stream end>' at line 2, column 1"),  # a YAML syntax error
])
def test_a_broken_option_is_one_line_naming_its_file(tmp_path, text, message):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "broken.yaml").write_text(text)
    with pytest.raises(ConfigSchemaError) as err:
        register_schemas(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'model' / 'broken.yaml'}: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_trainer_defaults_have_one_copy():
    cfg = cfg_with()
    assert OmegaConf.to_object(cfg.trainer) == TrainerConfig()
    assert not OmegaConf.load(CONFIG_DIR / "trainer" / "default.yaml")  # no values repeated there


def test_paper_darcy_experiment_builds_the_papers_model_and_data():
    cfg = cfg_with("experiment=fno_darcy")
    model = abstract_model(cfg)
    assert count_params(model) == 2_368_001  # fourier_2d.py, modes 12, width 32
    assert pad_cells(cfg.model.padding, cfg.data.train_resolution) == 9  # F.pad(x, [0, 9, 0, 9]) at s=85
    task = build_task(cfg)
    assert task.pde.resolution == 421 and task.grids == {85: (85, 85)}  # r = 5 from 421
    assert (cfg.data.n_train, cfg.data.n_test, cfg.trainer.batch_size, cfg.trainer.epochs) == (1000, 100, 20, 500)
    assert cfg.optim._target_ == "optim.adam" and cfg.optim.weight_decay == pytest.approx(1e-4)
    assert cfg.schedule._target_ == "optim.schedules.step_decay"
    assert (cfg.schedule.value, cfg.schedule.every_epochs, cfg.schedule.gamma) == (1e-3, 100, 0.5)
    out = eval_shape_or_error(model, task.example_batch(20)["x"])
    assert out.shape == (20, 85, 85, 1)


def test_default_config_is_the_documented_main_job():
    cfg = cfg_with()
    assert cfg.model._target_ == "operators.fno.FNO" and cfg.data.train_resolution == 64
    assert cfg.data.pde.resolution == 127 and list(cfg.data.test_resolutions) == [127]
    assert (cfg.data.n_train, cfg.data.n_test, cfg.trainer.epochs, cfg.trainer.log_every) == (500, 100, 15, 25)
    assert dict(cfg.param_groups) == {}


@pytest.mark.parametrize("override, message", [
    ("model.widht=3", "widht"),
    ("trainer.epochs=ten", "epochs"),
    ("model.modes=3", "modes"),
    ("data.pde.resolutoin=3", "resolutoin"),       # nested targets are checked too
    ("data.test_resolutions=[a]", "test_resolutions"),
    ("model=no_such_model", "no_such_model"),
])
def test_typos_and_wrong_types_fail_at_compose_time(override, message):
    with pytest.raises(ConfigCompositionException) as err:
        cfg_with(override)
    assert message in str(err.value) + str(err.value.__cause__)


def test_experiment_override_of_a_group_is_checked_against_the_new_option():
    with pytest.raises(ConfigCompositionException):
        cfg_with("experiment=fno_darcy", "model.widht=3")
    assert cfg_with("experiment=fno_darcy", "model.width=16").model.width == 16


def test_param_groups_from_the_config_reach_the_optimizer():
    cfg = cfg_with("+param_groups.lift.path='^fc0/'", "+param_groups.lift.lr_scale=0.5",
                   "+param_groups.lift.weight_decay=0", "schedule=constant", "schedule.value=0.01")
    updates = take_one_step(cfg, abstract_model(cfg))
    # Adam's first step is lr * g / (|g| + eps) ~ lr for a unit gradient: the group moves half as far.
    np.testing.assert_allclose(np.abs(updates["fc0"]["kernel"][...]), 0.005, rtol=1e-4)
    np.testing.assert_allclose(np.abs(updates["fc1"]["kernel"][...]), 0.01, rtol=1e-4)


@pytest.mark.parametrize("overrides, message", [
    (["+param_groups.x.path=no_such_layer"], "select no parameter"),
    (["+param_groups.x.variable_type=optax.adam"], "not an nnx.Variable subclass"),
    (["+param_groups.x.variable_type=no.such.Type"], "cannot import"),
    (["+param_groups.x.path=fc0", "+param_groups.x.projection=no_such_projection"], "cannot import"),
    (["+param_groups.x.path=fc0", "+param_groups.x.lr_scal=0.1"], "lr_scal"),
    (["+param_groups.x.path=fc0", "+param_groups.x.lr_scale=fast"], "lr_scale"),
])
def test_bad_param_groups_are_clear_errors(overrides, message):
    from experiments.errors import UserInputError

    cfg = cfg_with(*overrides)
    with pytest.raises(UserInputError, match=message):
        make_optimizer(cfg, abstract_model(cfg))


def test_param_group_weight_decay_needs_an_optimizer_that_takes_it():
    from experiments.errors import UserInputError

    cfg = OmegaConf.create({"optim": {"_target_": "optax.sgd", "_partial_": True},
                            "param_groups": {"x": {"path": "fc0", "weight_decay": 0.0, "variable_type": None,
                                                   "lr_scale": 1.0, "projection": None}}})
    with pytest.raises(UserInputError, match="takes no weight_decay"):
        make_optimizer(cfg, abstract_model(lambda: FNO(1, 1, modes=(4, 4), width=4, n_layers=1,
                                                       rngs=nnx.Rngs(0))))
