"""`python -m experiments.train` as a user runs it: subprocesses, real Hydra, real data, real Orbax.

One real run of the command per behaviour of it: a run's outputs (FNO on Darcy solved on 33 x 33,
trained at 17 x 17), exit 2 on bad input (two processes that disagree), a multirun sweep, two
processes of one run (resume after SIGKILL and SIGTERM, bit for bit: test_resume_exact.py). Where the model does not matter the
runs train the toy regression task of toy_tasks.py (tests/experiments/configs), which starts in
seconds. What bad input and a NaN loss report, the refined schedule built from a previous run's log,
and the runs that only serve as references, are run in-process with ``experiments.train.run``, the
function each process of the command runs (a subprocess spends seconds starting Python and JAX).
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException, InstantiationException

from experiments.config import compose
from experiments.errors import NonFiniteLossError, UserInputError
from experiments.metrics import read_metrics

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY = ["data.n_train=40", "data.n_test=10", "data.pde.resolution=33", "data.train_resolution=17",
        "data.test_resolutions=[33]", "model.modes=[4,4]", "model.width=8", "model.n_layers=2",
        "model.projection_channels=16", "trainer.batch_size=8", "trainer.progress=false"]
# The toy task: y = x^2 + x/2 pointwise, 64 training fields, a pointwise MLP (toy_tasks.py).
TOY = [f"hydra.searchpath=[file://{REPO}/tests/experiments/configs]", "data=toy_regression", "model=mlp",
       "trainer.batch_size=8", "trainer.progress=false", "trainer.plots=false"]
CONSTANT = ["schedule=constant", "schedule.value=0.01"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("data_cache")
    e = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "JAX_"))}
    e.update(NEURAL_LAX_CACHE=str(cache), JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    return e


def toy_env(env, n_devices=1):
    """``env`` for runs of the toy task: toy_tasks importable, ``n_devices`` CPU devices."""
    return {**env, "JAX_NUM_CPU_DEVICES": str(n_devices), "PYTHONPATH": str(REPO / "tests" / "experiments")}


def command(run_dir, *overrides):
    return [sys.executable, "-m", "experiments.train", f"hydra.run.dir={run_dir}", *overrides]


def train(env, run_dir, *overrides, check=True, **kw):
    proc = subprocess.run(command(run_dir, *overrides), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def in_process(env):
    """``run(run_dir, *overrides, devices=1)``: ``experiments.train.run`` of the composed config in this
    process, as a process of ``python -m experiments.train`` runs it: the subprocesses' data cache, one
    device (or ``devices`` of this process's eight, tests/conftest.py). Returns the results. (A toy run
    here and in a subprocess of the command give the same bits.)"""
    from experiments.train import run

    def run_in_process(run_dir, *overrides, devices=1):
        return run(compose([*overrides, f"trainer.devices={devices}"]), pathlib.Path(run_dir))

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEURAL_LAX_CACHE", env["NEURAL_LAX_CACHE"])
        yield run_in_process


def committed_steps(run_dir) -> list[int]:
    d = pathlib.Path(run_dir) / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


@pytest.mark.slow  # subprocesses of the runner
def test_default_outputs(env, tmp_path):
    run = tmp_path / "run"
    train(env, run, *TINY, "trainer.epochs=4")
    results = json.loads((run / "results.json").read_text())
    assert set(results["metrics"]) == {"test_s17", "test_s33"}
    for split in results["metrics"].values():
        assert 0 < split["rel_l2"] < 1 and 0 < split["rel_h1"] < 2
    assert results["objective"] == {"metric": "rel_l2", "split": "test_s17", "mode": "min",
                                    "value": results["metrics"]["test_s17"]["rel_l2"]}
    cost = results["cost"]
    assert cost["data_seconds"] > 0 and cost["compile_seconds"] > 0 and cost["train_seconds"] > 0
    assert cost["seconds_per_step"] == pytest.approx(cost["train_seconds"] / 20)
    assert cost["peak_host_memory_mb"] > 100 and cost["peak_device_memory_mb"] is None  # CPU: not reported
    assert (cost["backend"], cost["n_devices"], cost["n_processes"]) == ("cpu", 1, 1)
    assert {"python", "jax", "flax", "optax", "orbax-checkpoint"} <= set(cost["versions"])
    rows = read_metrics(run / "metrics.jsonl")
    assert any("loss" in r for r in rows) and any(r.get("split") == "test_s33" for r in rows)
    for png in ("loss.png", "sample_test_s17.png", "sample_test_s33.png"):
        assert (run / "plots" / png).stat().st_size > 1000
    assert (run / ".hydra" / "config.yaml").exists()
    assert committed_steps(run) == [20]


# Interrupted runs (SIGKILL, SIGTERM, mid-epoch, bit for bit): test_resume_exact.py.


@pytest.mark.parametrize("overrides, message", [
    (["model.widht=3"], "widht"),
    (["model=transformer_xl"], "transformer_xl"),
    (["trainer.epochs=ten"], "epochs"),
    (["model.modes=[12,12]"], "modes"),
    (["data.train_resolution=20"], "valid resolutions are"),
    (["trainer.batch_size=41"], "exceeds the training set"),
])
def test_bad_input_gives_a_clear_error(in_process, tmp_path, overrides, message):
    """What the command stops with, before any training: Hydra's composition error, or the error of
    building or checking the run (the command's exit status for bad input is seen in
    test_processes_of_one_run_must_share_the_run_directory)."""
    with pytest.raises((ConfigCompositionException, InstantiationException, UserInputError)) as err:
        in_process(tmp_path / "bad", *TINY, *overrides)
    out = f"{err.value}\n{err.value.__cause__}"
    assert message in out
    assert "jaxlib" not in out and "XlaRuntimeError" not in out


def test_nan_loss_stops_the_run_with_a_message(in_process, tmp_path):
    """A NaN loss stops the run with a NonFiniteLossError, which the command reports as bad input
    (one line, exit status 2, as test_processes_of_one_run_must_share_the_run_directory sees it)."""
    with pytest.raises(NonFiniteLossError, match="the training loss became"):
        in_process(tmp_path / "nan", *TOY, "schedule=constant", "schedule.value=1e12", "trainer.max_steps=100",
                   "trainer.log_every=5")


@pytest.mark.slow  # subprocesses of the runner
def test_multirun_sweep(env, tmp_path, capsys):
    from experiments.table import main as table_main

    cmd = [sys.executable, "-m", "experiments.train", "-m", f"hydra.sweep.dir={tmp_path}/sweep",
           *TOY, *CONSTANT, "trainer.max_steps=20", "model.hidden=4,8"]
    proc = subprocess.run(cmd, cwd=REPO, env=toy_env(env), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = [json.loads((tmp_path / "sweep" / str(i) / "results.json").read_text()) for i in (0, 1)]
    assert results[0]["n_params"] < results[1]["n_params"]
    # The sweep table (python -m experiments.table, in-process) reads the real multirun directory: one row
    # per job, best objective first.
    capsys.readouterr()
    assert table_main(["sweep", str(tmp_path / "sweep"), "--out", str(tmp_path / "table")]) == 0
    header, *rows = [[c.strip() for c in line.strip("| ").split(" | ")]
                     for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    rows = [dict(zip(header, r)) for r in rows]
    order = sorted((0, 1), key=lambda i: results[i]["objective"]["value"])
    assert [r["job"] for r in rows] == [str(i) for i in order]
    assert [r["model.hidden"] for r in rows] == [f"{(4, 8)[i]}" for i in order]  # the swept value
    assert [r["test/mse"] for r in rows] == [f"{results[i]['objective']['value']:.4f}" for i in order]
    assert (tmp_path / "table" / "sweep.csv").exists() and (tmp_path / "table" / "sweep.png").exists()


# -- several processes ------------------------------------------------------------------------------
SHORT = [*TOY, *CONSTANT, "trainer.max_steps=40", "trainer.log_every=5", "trainer.ckpt_every=20"]


def checkpoint_params(run_dir, step):
    """The parameters saved at ``step``, as NumPy arrays (whatever topology saved them)."""
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    path = pathlib.Path(run_dir) / "checkpoints" / str(step) / "state"
    with ocp.PyTreeCheckpointer() as ckptr:
        tree = ckptr.metadata(path).item_metadata.tree
        restored = ckptr.restore(path, restore_args=jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree))
    return restored["params"]


def start_two_processes(env, run_dirs, *overrides):
    """Two processes of one run (2 CPU devices each, a localhost coordinator); their outputs and codes."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen(command(run_dir, *SHORT, f"trainer.coordinator_address=127.0.0.1:{port}",
                                      "trainer.num_processes=2", f"trainer.process_id={i}", *overrides),
                              cwd=REPO, env=toy_env(env, 2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for i, run_dir in enumerate(run_dirs)]
    try:
        outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    return outs, [p.returncode for p in procs]


@pytest.mark.slow  # subprocesses of the runner
def test_processes_of_one_run_must_share_the_run_directory(env, tmp_path):
    outs, codes = start_two_processes(env, [tmp_path / "a", tmp_path / "b"])
    assert codes == [2, 2], outs
    assert all("disagree on the run directory" in o and "Traceback" not in o for o in outs)


@pytest.mark.slow  # subprocesses of the runner
def test_two_processes_train_like_one_process_with_as_many_devices(env, in_process, tmp_path):
    """2 processes x 2 CPU devices (localhost coordinator) == 1 process x 4 devices, parameter for parameter.

    The one process is this one, on 4 of its devices (the run a process of the command runs)."""
    import jax
    import numpy as np

    in_process(tmp_path / "one", *SHORT, devices=4)
    run = tmp_path / "two"
    outs, codes = start_two_processes(env, [run, run])
    assert codes == [0, 0], "\n".join(outs)

    one, two = checkpoint_params(tmp_path / "one", 40), checkpoint_params(run, 40)
    start = checkpoint_params(run, 20)
    for a, b, s in zip(jax.tree.leaves(one), jax.tree.leaves(two), jax.tree.leaves(start)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
        assert np.abs(a - s).max() > 1e-3  # the last 20 steps moved the parameters: the check has teeth
    res = json.loads((run / "results.json").read_text())
    assert (res["cost"]["n_processes"], res["cost"]["n_devices"]) == (2, 4)
    ref = json.loads((tmp_path / "one" / "results.json").read_text())
    assert res["objective"]["value"] == pytest.approx(ref["objective"]["value"], rel=1e-5)
    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl") if "split" not in r]
    assert steps == list(range(5, 41, 5))  # written once, by process 0
    assert (run / "train.log").read_text().count("objective mse") == 1


def test_refined_schedule_from_the_gradient_norms_of_a_previous_run(in_process, tmp_path):
    first = tmp_path / "linear"
    in_process(first, *TOY, "trainer.epochs=3", "trainer.log_every=2", "schedule=linear")
    assert all("grad_norm" in r for r in read_metrics(first / "metrics.jsonl") if "loss" in r)
    second = tmp_path / "refined"
    res = in_process(second, *TOY, "trainer.epochs=3", "schedule=refined", f"schedule.grad_norms={first}")
    assert res["objective"]["value"] > 0
    with pytest.raises(UserInputError, match="no metrics file"):  # the CLI: one line, exit status 2
        in_process(tmp_path / "bad", *TOY, "schedule=refined", f"schedule.grad_norms={tmp_path}/nowhere")
