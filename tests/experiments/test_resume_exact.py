"""Resume is exact: an interrupted run, rerun, ends with the same bits as the run that was never stopped.

The oracle is the uninterrupted run of the same configuration: the final checkpoint of the resumed
run must equal its final checkpoint leaf for leaf (``np.array_equal``, same tree, same dtypes): the
step counter, the parameters, the model's other state (dropout's RNG key and counter) and the whole
optimizer state (Adam's moments and counts, the schedule's step). Every run uses the default
cosine schedule, whose learning rate depends on the step, and every stop falls inside an epoch, so
a resumed run must restore the step, the optimizer state and the position in the epoch's batch order.

Interruptions, from cheap to real:

* in this process, the task's training batches are wrapped (``interrupt_after``) so that, after a
  chosen step, either this process sends itself a real SIGTERM (the trainer must checkpoint that
  step, off the ``ckpt_every`` grid, and raise ``Preempted``), or the run crashes before the next
  step (it resumes from the last checkpoint of the grid and redoes the steps after it);
* in subprocesses of ``python -m experiments.train`` (slow): SIGKILL and SIGTERM at an arbitrary step
  after the first checkpoint, then the same command again.

Tasks (in this process): Darcy flow with a tiny FNO, associative recall (a sequence task) with an
S4D model with dropout on, graph value iteration (a graph task) with a GNN, their parameters starting
from seeded NumPy draws (``seeded_model``); the command trains the toy task of toy_tasks.py. The runs
of this process share one persistent compilation cache, and so do the command's processes (a resumed
run compiles the same programs), which takes most of their cost away; the cache changes no result:
each uninterrupted run, compiled afresh, gives the bits of the resumed runs, which load its programs.

Not an interruption: a shorter ``trainer.max_steps`` resumed with the full length. The schedule is
built for the run's length, so such a run follows another learning-rate curve.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Iterator

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from hydra.utils import get_class
from jax.experimental.compilation_cache import compilation_cache
from omegaconf import DictConfig

from experiments.build import build_model
from experiments.checkpoint import Checkpointer
from experiments.config import compose
from experiments.errors import Preempted
from experiments.metrics import read_metrics
from experiments.tasks.base import Shard

REPO = pathlib.Path(__file__).resolve().parents[2]
QUIET = ["trainer.progress=false", "trainer.plots=false", "trainer.log_every=1"]
# 12 training fields, batch 4: 3 steps per epoch, 9 steps in all, checkpoints every 4 steps (4, 8, and
# the last, 9): neither 4 nor 8 is an epoch boundary.
DARCY = ["data.n_train=12", "data.n_test=4", "data.pde.resolution=9", "data.train_resolution=9",
         "data.test_resolutions=[9]", "model.modes=[3,3]", "model.width=4", "model.n_layers=1",
         "model.projection_channels=8", "trainer.batch_size=4", "trainer.epochs=3", "trainer.ckpt_every=4"]
# Associative recall (vocabulary 10, 12 tokens + "=>" + query), one causal S4D layer with dropout 0.2, on
# 2 devices; 3 steps per epoch as above.
SEQUENCE = ["data=assoc_recall", "data.dataset.vocab_size=10", "data.dataset.input_seq_len=12",
            "data.dataset.n_train=12", "data.dataset.n_test=4", "model=s4d", "model.vocab_size=10",
            "model.d_output=10", "model.head=token", "model.d_model=8", "model.n_layers=1", "model.mixer.d_state=4",
            "model.dropout=0.2", "optim=adamw", "trainer.batch_size=4", "trainer.epochs=3", "trainer.ckpt_every=4",
            "trainer.devices=2"]
# Graph value iteration on graphs of 6 to 10 states, a one-layer attention GNN (single-layer MLPs) on 2
# devices; 3 steps per epoch.
GRAPH = ["data=gvi", "data.dataset.n_train=12", "data.dataset.n_test=4", "data.dataset.n_states=[6,11]",
         "data.dataset.n_actions=[2,4]", "model=gnn", "model.node_features=1", "model.edge_features=1",
         "model.hidden=4", "model.n_layers=1", "model.mlp_hidden=[]", "model.decoder_hidden=[]",
         "trainer.batch_size=4", "trainer.epochs=3", "trainer.ckpt_every=4", "trainer.devices=2"]
TASKS = {"darcy": DARCY, "sequence": SEQUENCE, "graph": GRAPH}
STEPS_PER_EPOCH, TOTAL = 3, 9


# -- the oracle: a run directory's latest checkpoint as NumPy leaves --------------------------------
def latest_state(run_dir: pathlib.Path) -> tuple[int, Any]:
    """``(step, state)`` of the newest checkpoint in ``run_dir``: the trainer's whole state pytree
    (``step``, ``params``, ``rest``, ``opt_state``) as NumPy arrays, read without a target (the
    structure and dtypes are the checkpoint's own, whatever the topology that wrote it)."""
    ckpt = Checkpointer(run_dir / "checkpoints")
    try:
        step = ckpt.latest_step()
    finally:
        ckpt.close()
    assert step is not None, f"no checkpoint in {run_dir}"
    path = ckpt.directory / str(step) / "state"
    with ocp.PyTreeCheckpointer() as reader:
        tree = reader.metadata(path).item_metadata.tree
        state = reader.restore(path, restore_args=jax.tree.map(
            lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree))
    return step, state


def assert_same_bits(got: Any, want: Any) -> None:
    """Same tree (key paths), and every leaf of the same dtype, shape and bits."""
    got_leaves, want_leaves = (jax.tree_util.tree_flatten_with_path(t)[0] for t in (got, want))
    assert [p for p, _ in got_leaves] == [p for p, _ in want_leaves], "the state trees differ"
    different = [jax.tree_util.keystr(p) for (p, a), (_, b) in zip(got_leaves, want_leaves)
                 if a.dtype != b.dtype or not np.array_equal(a, b)]
    assert not different, (f"{len(different)} of {len(got_leaves)} leaves differ from the uninterrupted run, "
                           f"e.g. {different[:4]}")


def logged_steps(run_dir: pathlib.Path) -> list[int]:
    """The steps of the training rows of ``run_dir``'s metrics.jsonl, in the order written."""
    return [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if "split" not in r]


def moved(a: Any, b: Any) -> bool:
    """Whether any parameter differs between two states (the steps after a stop did something)."""
    return any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"])))


# -- runs ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory) -> Iterator[pathlib.Path]:
    """A persistent compilation cache shared by this module's runs, the previous settings restored after."""
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    old = {n: getattr(jax.config, n) for n in names}
    where = tmp_path_factory.mktemp("compilation_cache")
    for name, value in zip(names, (str(where), 0.0, 0)):
        jax.config.update(name, value)
    compilation_cache.reset_cache()
    yield where
    for name, value in old.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


def seeded_model(cfg: DictConfig, task: Any) -> nnx.Module:
    """The model of ``cfg`` as ``build_model`` makes it, its arrays drawn from NumPy (seed 0) instead of its
    own initialisers (which compile one XLA program per parameter shape, seconds each on CPU): floats
    uniform in [-0.5, 0.5], RNG keys from seed 0, counters 0. Resume does not depend on the values."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: build_model(cfg, task)))
    rng = np.random.default_rng(0)

    def draw(x: jax.ShapeDtypeStruct) -> jax.Array:
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.split(jax.random.key(0), x.shape) if x.shape else jax.random.key(0)
        if jnp.issubdtype(x.dtype, jnp.floating):
            return jnp.asarray(rng.uniform(-0.5, 0.5, x.shape), x.dtype)
        return jnp.zeros(x.shape, x.dtype)

    return nnx.merge(graphdef, jax.tree.map(draw, state))


@pytest.fixture(scope="module")
def config() -> Callable[[list[str]], DictConfig]:
    """``config(overrides)``: the composed config of a run here, composed once per overrides (a second of
    CPU each time); ``build_model`` writes the data's settings into it, the same at every build."""
    configs: dict[tuple[str, ...], DictConfig] = {}

    def composed(overrides: list[str]) -> DictConfig:
        key = ("trainer.devices=1", *QUIET, *overrides)
        if key not in configs:
            configs[key] = compose(list(key))
        return configs[key]

    return composed


@pytest.fixture(scope="module")
def train(config, tmp_path_factory, compile_cache) -> Callable[[pathlib.Path, list[str]], dict]:
    """``train(run_dir, overrides)``: ``experiments.train.run`` of the config in this process (one device
    unless the overrides say otherwise), as each process of the command runs it, the model built by
    ``seeded_model``; returns the results."""
    import experiments.train

    data_cache = str(tmp_path_factory.mktemp("data_cache"))

    def fit(run_dir: pathlib.Path, overrides: list[str]) -> dict:
        with pytest.MonkeyPatch.context() as mp:  # for this run only
            mp.setenv("NEURAL_LAX_CACHE", data_cache)
            mp.setattr(experiments.train, "build_model", seeded_model)
            return experiments.train.run(config(overrides), run_dir)

    return fit


@pytest.fixture(scope="module")
def uninterrupted(train, tmp_path_factory) -> Callable[[str], Any]:
    """The final state of each task's run, never stopped (made on first use)."""
    states: dict[str, Any] = {}

    def final_state(name: str) -> Any:
        if name not in states:
            run_dir = tmp_path_factory.mktemp(f"uninterrupted_{name}") / "run"
            train(run_dir, TASKS[name])
            step, states[name] = latest_state(run_dir)
            assert step == TOTAL
        return states[name]

    return final_state


class Crash(RuntimeError):
    """What ``interrupt_after(..., "crash")`` raises: a process dying between two steps."""


@contextlib.contextmanager
def interrupt_after(task_class: type, after: int, how: str) -> Iterator[None]:
    """Interrupt a run of a ``task_class`` task once it has done ``after`` steps.

    ``how="sigterm"``: this process sends itself SIGTERM while step ``after`` runs (the trainer's own
    handler catches it; the trainer should finish the step, checkpoint it and raise ``Preempted``).
    ``how="crash"``: the batch of step ``after + 1`` is never delivered; ``Crash`` is raised instead.
    The task's class is wrapped for the duration only.
    """
    original = task_class.train_batches

    def train_batches(self, batch_size: int, *, seed: int, epoch: int, start: int = 0,
                      shard: Shard = Shard()) -> Iterator:
        first = epoch * self.steps_per_epoch(batch_size)
        batches = original(self, batch_size, seed=seed, epoch=epoch, start=start, shard=shard)
        for done_before, batch in enumerate(batches, first + start):  # steps done before this batch
            if how == "crash" and done_before == after:
                raise Crash(f"crashed after step {after}")
            if how == "sigterm" and done_before == after - 1:
                os.kill(os.getpid(), signal.SIGTERM)
            yield batch

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(task_class, "train_batches", train_batches)
        yield


# -- in this process --------------------------------------------------------------------------------
@pytest.mark.parametrize("name, how, after, resumes_from", [
    ("darcy", "sigterm", 5, 5),      # the SIGTERM checkpoint, step 5: mid-epoch 2, off the grid (4, 8)
    ("darcy", "crash", 7, 4),        # the grid's checkpoint 4 (mid-epoch 2); steps 5-7 are redone
    # dropout on, 2 devices: step 7, mid-epoch 3, off the grid (slow: S4D's step compiles for ~10 s of CPU)
    pytest.param("sequence", "sigterm", 7, 7, marks=pytest.mark.slow),
    ("graph", "sigterm", 5, 5),      # 2 devices
])
def test_resumed_run_ends_with_the_uninterrupted_runs_bits(config, train, uninterrupted, tmp_path, name, how, after,
                                                           resumes_from):
    overrides = TASKS[name]
    run_dir = tmp_path / "run"
    task_class = get_class(config(overrides).data._target_)
    with interrupt_after(task_class, after, how), pytest.raises(Preempted if how == "sigterm" else Crash):
        train(run_dir, overrides)
    stopped_at, stopped = latest_state(run_dir)
    assert stopped_at == resumes_from and int(stopped["step"]) == resumes_from
    assert resumes_from % STEPS_PER_EPOCH != 0  # inside an epoch

    results = train(run_dir, overrides)  # the same run again: it resumes
    assert results["resumed_from_step"] == resumes_from
    step, resumed = latest_state(run_dir)
    assert step == TOTAL and int(resumed["step"]) == TOTAL
    assert moved(resumed, stopped)  # the resumed steps trained: comparing the end states has teeth
    assert_same_bits(resumed, uninterrupted(name))
    assert logged_steps(run_dir) == list(range(1, TOTAL + 1))  # steps redone after the checkpoint: logged once


@pytest.mark.slow
def test_the_sequence_runs_checkpoint_their_dropout_state(uninterrupted):
    """With dropout on, the state compared above holds the dropout stream (its key and its counter, drawn
    twice per step: after the activation and after the output map of the block)."""
    leaves = jax.tree_util.tree_flatten_with_path(uninterrupted("sequence")["rest"])[0]
    rest = {jax.tree_util.keystr(p): v for p, v in leaves}
    drop = "['blocks']['0']['drop']['rngs']"
    assert set(rest) == {f"{drop}['count']['value']", f"{drop}['key']['value']"}, sorted(rest)
    assert int(rest[f"{drop}['count']['value']"]) == 2 * TOTAL


# -- the command, stopped by real signals (subprocesses) -------------------------------------------
# The toy task of toy_tasks.py (64 fields, batch 8: 8 steps per epoch) for 1000 steps, the default cosine
# schedule, checkpoints every 75 steps (75 to 525 fall inside an epoch; 600 is the first on an epoch's
# end): a few seconds, so that a signal sent after the first checkpoint lands with most of the run to do.
LONG = [f"hydra.searchpath=[file://{REPO}/tests/experiments/configs]", "data=toy_regression", "model=mlp",
        "trainer.batch_size=8", "trainer.max_steps=1000", "trainer.ckpt_every=75", "trainer.log_every=50",
        "trainer.progress=false", "trainer.plots=false"]


@pytest.fixture(scope="module")
def command_env(tmp_path_factory) -> dict[str, str]:
    """The environment of the command's processes: one CPU device, toy_tasks importable, their own data
    cache, one persistent compilation cache for all of them, and this process's XLA flags."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "JAX_"))}
    env.update(NEURAL_LAX_CACHE=str(tmp_path_factory.mktemp("command_data")), JAX_PLATFORMS="cpu",
               JAX_NUM_CPU_DEVICES="1", PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO / "tests" / "experiments"),
               JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("command_compilation_cache")),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
               XLA_FLAGS=os.environ.get("XLA_FLAGS", ""))  # compiled as the in-process reference is: same bits
    return env


def run_as_the_command(run_dir: pathlib.Path, env: dict[str, str]) -> dict:
    """``experiments.train.run`` of LONG in this process on one device, as the command's process runs it
    (a subprocess would spend seconds starting Python and JAX; it gives the same bits)."""
    from experiments.train import run

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEURAL_LAX_CACHE", env["NEURAL_LAX_CACHE"])
        return run(compose([*LONG, "trainer.devices=1"]), run_dir)


@pytest.fixture(scope="module")
def uninterrupted_command(command_env, tmp_path_factory) -> Any:
    """The final state of the LONG run, never stopped."""
    run_dir = tmp_path_factory.mktemp("uninterrupted_command") / "run"
    run_as_the_command(run_dir, command_env)
    step, state = latest_state(run_dir)
    assert step == 1000
    return state


def command(run_dir: pathlib.Path) -> list[str]:
    return [sys.executable, "-m", "experiments.train", f"hydra.run.dir={run_dir}", *LONG]


def committed_steps(run_dir: pathlib.Path) -> list[int]:
    d = run_dir / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def signal_after_first_checkpoint(run_dir: pathlib.Path, signum: int, env: dict[str, str]) -> str:
    """Start the command and send it ``signum`` once its first checkpoint is committed; returns its output."""
    proc = subprocess.Popen(command(run_dir), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.monotonic() + 120
    while not committed_steps(run_dir):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out = proc.communicate()[0]
            raise AssertionError(f"the run ended (exit {proc.returncode}) before a checkpoint:\n{out}")
        time.sleep(0.02)
    proc.send_signal(signum)
    return proc.communicate(timeout=60)[0] + f"\n(exit {proc.returncode})"


@pytest.mark.slow
def test_command_killed_then_rerun_ends_with_the_uninterrupted_bits(command_env, uninterrupted_command, tmp_path):
    """SIGKILL at some step after the first checkpoint; the same command again resumes from the newest
    committed checkpoint (inside an epoch) and redoes the steps after it."""
    run_dir = tmp_path / "run"
    out = signal_after_first_checkpoint(run_dir, signal.SIGKILL, command_env)
    assert out.endswith(f"(exit {-signal.SIGKILL})"), out
    stopped_at, stopped = latest_state(run_dir)
    assert stopped_at in range(75, 600, 75) and stopped_at % 8 != 0, out

    proc = subprocess.run(command(run_dir), cwd=REPO, env=command_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"resumed from the checkpoint at step {stopped_at}" in proc.stdout + proc.stderr
    step, resumed = latest_state(run_dir)
    assert step == 1000 and moved(resumed, stopped)
    assert_same_bits(resumed, uninterrupted_command)
    # a row at every log_every and (the losses flushed before saving) every checkpoint step, once
    assert logged_steps(run_dir) == sorted({*range(50, 1001, 50), *range(75, 1001, 75), 1000})


@pytest.mark.slow
def test_command_stopped_by_sigterm_checkpoints_and_resumes_to_the_uninterrupted_bits(command_env,
                                                                                     uninterrupted_command, tmp_path):
    """SIGTERM at some step after the first checkpoint: the command checkpoints the step it reached (off the
    grid of 75 and inside an epoch, unless the signal lands on one) and exits 143; resuming ends with the
    same bits."""
    run_dir = tmp_path / "run"
    out = signal_after_first_checkpoint(run_dir, signal.SIGTERM, command_env)
    assert out.endswith("(exit 143)") and "Traceback" not in out, out
    stopped_at, stopped = latest_state(run_dir)
    assert 75 <= stopped_at < 1000 and f"at step {stopped_at}: saved a checkpoint" in out, out

    run_as_the_command(run_dir, command_env)  # what rerunning the command runs
    assert json.loads((run_dir / "results.json").read_text())["resumed_from_step"] == stopped_at
    step, resumed = latest_state(run_dir)
    assert step == 1000 and moved(resumed, stopped)
    assert_same_bits(resumed, uninterrupted_command)
