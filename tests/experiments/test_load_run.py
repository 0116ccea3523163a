"""``experiments.load_run`` and the predict / evaluate / export CLIs on one tiny trained Darcy run.

The run (FNO, width 4, one Fourier layer, 6 steps on 16 pairs solved on 33 x 33, trained at 17 x 17,
evaluated zero-shot at 33) is trained once per module in-process, as a process of
``python -m experiments.train`` trains it (``experiments.train.run``), with the ``.hydra/`` files Hydra
writes. The oracle of every prediction is the run's own evaluation recorded in its results.json.
"""
from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from omegaconf import OmegaConf

from experiments import evaluate, export, load_run, predict
from experiments.config import compose
from experiments.errors import UserInputError
from operators.losses import relative_h1, relative_lp

OVERRIDES = ["data.n_train=16", "data.n_test=4", "data.pde.resolution=33", "data.train_resolution=17",
             "data.test_resolutions=[33]", "model.modes=[4,4]", "model.width=4", "model.n_layers=1",
             "model.projection_channels=8", "trainer.batch_size=8", "trainer.max_steps=6", "trainer.devices=1",
             "schedule=constant", "schedule.value=0.01", "trainer.progress=false", "trainer.plots=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run directory, its results.json, the raw test pairs (a, u) on the 33 x 33 solve grid)."""
    from experiments.train import run

    root = tmp_path_factory.mktemp("load_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEURAL_LAX_CACHE", str(root / "cache"))
        cfg = compose(OVERRIDES)
        run_dir = root / "run"
        (run_dir / ".hydra").mkdir(parents=True)
        OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
        OmegaConf.save(OmegaConf.create(OVERRIDES), run_dir / ".hydra" / "overrides.yaml")
        results = run(cfg, run_dir)
        loaded = load_run(run_dir)
        a, u = loaded.bare_task.pde.load("test", 4, progress=False)
        yield run_dir, results, loaded, a, u


def subsample(fields: np.ndarray, s: int) -> np.ndarray:
    r = (fields.shape[1] - 1) // (s - 1)
    return fields[:, ::r, ::r]


@pytest.mark.parametrize("s", [17, 33])
def test_predict_reproduces_the_recorded_metrics(trained, s):
    """At the training resolution and zero-shot at 33: the metrics of predict's outputs are the run's."""
    _, results, loaded, a, u = trained
    pred = loaded.predict(subsample(a, s))
    assert pred.shape == (4, s, s, 1) and pred.dtype == np.float32
    recorded = results["metrics"][f"test_s{s}"]
    assert float(np.mean(relative_lp(pred, subsample(u, s), reduction="none"))) == pytest.approx(
        recorded["rel_l2"], rel=1e-6, abs=0)
    assert float(np.mean(relative_h1(pred, subsample(u, s), reduction="none"))) == pytest.approx(
        recorded["rel_h1"], rel=1e-6, abs=0)
    np.testing.assert_array_equal(loaded.predict(a, resolution=s), pred)  # subsampled by the dataset itself


def test_evaluate_equals_the_run_metrics(trained):
    _, results, loaded, _, _ = trained
    assert loaded.evaluate() == results["metrics"]


def test_export_predicts_bit_identically_without_the_run_or_its_data(trained, tmp_path, monkeypatch):
    run_dir, _, loaded, a, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    out = export.main([str(copy), str(tmp_path / "exported")])
    assert out == 0
    shutil.rmtree(copy)
    assert sorted(p.name for p in (tmp_path / "exported").iterdir()) == [
        "checkpoints", "config.yaml", "normalizer.npz", "overrides.yaml", "versions.json"]

    def no_data(*args, **kwargs):
        raise AssertionError("the export read the dataset")

    monkeypatch.setattr(type(loaded.bare_task.pde), "load", no_data)
    exported = load_run(tmp_path / "exported")
    for s in (17, 33):
        assert np.array_equal(exported.predict(subsample(a, s)), loaded.predict(subsample(a, s)))
    with pytest.raises(UserInputError, match=r"statistics for grids \[\(2, 2\), \(3, 3\), \(5, 5\), \(9, 9\), "
                                             r"\(17, 17\), \(33, 33\)\], not \(16, 16\)"):
        exported.predict(np.zeros((1, 16, 16, 1)))


def test_an_export_the_installed_project_cannot_rebuild_names_the_versions(trained, tmp_path):
    run_dir, _, _, _, _ = trained
    export_dir = tmp_path / "exported"
    export.main([str(run_dir), str(export_dir)])
    cfg = OmegaConf.load(export_dir / "config.yaml")
    cfg.model.n_layers = 2  # as if the installed FNO built another structure from the same config
    OmegaConf.save(cfg, export_dir / "config.yaml")
    versions = json.loads((export_dir / "versions.json").read_text())
    (export_dir / "versions.json").write_text(json.dumps({**versions, "flax": "0.0.1"}))
    with pytest.raises(UserInputError, match=r"3 arrays differ: params/pointwise/1/bias/value: saved absent, "
                                             r"built \(4,\).*recorded -> installed: \{'flax': '0.0.1 -> "):
        load_run(export_dir)


def test_a_changed_shape_is_a_mismatch_too():
    import jax

    from experiments.build import _check_same_structure

    arrays = lambda n: {"params": {"w": jax.ShapeDtypeStruct((n, 2), "float32")}, "rest": {}}  # noqa: E731
    _check_same_structure(arrays(4), arrays(4), pathlib.Path("ckpt"), {})
    with pytest.raises(UserInputError, match=r"1 arrays differ: params/w: saved \(4, 2\), built \(6, 2\)"):
        _check_same_structure(arrays(4), arrays(6), pathlib.Path("ckpt"), {})


def test_cli_round_trip(trained, tmp_path, capsys):
    run_dir, results, loaded, a, _ = trained
    np.savez(tmp_path / "fields.npz", coeff=a, other=a[:1])
    before = {p: p.stat().st_mtime_ns for p in (run_dir / "checkpoints").rglob("*")}

    assert predict.main([str(run_dir), "--input", str(tmp_path / "fields.npz"), "--key", "coeff",
                         "--output", str(tmp_path / "u.npy"), "--resolution", "17"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "u.npy"), loaded.predict(subsample(a, 17)))

    assert evaluate.main([str(run_dir), "data.test_resolutions=[9]"]) == 0
    record = json.loads((run_dir / "eval_data.test_resolutions-9.json").read_text())
    assert list(record["metrics"]) == ["test_s17", "test_s9"]
    assert record["metrics"]["test_s17"] == results["metrics"]["test_s17"]
    assert record["overrides"] == ["data.test_resolutions=[9]"] and record["data"]["test_resolutions"] == [9]
    drawn = sorted(p.name for p in (run_dir / "plots" / "eval_data.test_resolutions-9").iterdir())
    assert drawn == ["sample_test_s17.png", "sample_test_s9.png"]
    assert {p: p.stat().st_mtime_ns for p in (run_dir / "checkpoints").rglob("*")} == before

    assert predict.main([str(run_dir), "--input", str(tmp_path / "fields.npz"), "--output",
                         str(tmp_path / "v.npy")]) == 2
    assert "name the array with --key; its arrays are ['coeff', 'other']" in capsys.readouterr().err
    assert evaluate.main([str(run_dir), "model.width=8"]) == 2
    assert "changes only the data" in capsys.readouterr().err
    assert evaluate.main([str(run_dir), "data.n_tset=3"]) == 2
    assert "n_tset" in capsys.readouterr().err


def test_bad_input_gets_a_clear_message(trained, tmp_path):
    run_dir, _, loaded, _, _ = trained
    with pytest.raises(UserInputError, match="does not exist or is not a directory"):
        load_run(tmp_path / "nowhere")
    (tmp_path / "unfinished" / ".hydra").mkdir(parents=True)
    shutil.copy(run_dir / ".hydra" / "config.yaml", tmp_path / "unfinished" / ".hydra")
    with pytest.raises(UserInputError, match="unfinished holds no checkpoint; train it first"):
        load_run(tmp_path / "unfinished")
    assert not (tmp_path / "unfinished" / "checkpoints").exists()
    with pytest.raises(UserInputError, match=r"shape \(2, 17, 17, 3\).*2 grid axes and 1 channel"):
        loaded.predict(np.zeros((2, 17, 17, 3)))
    with pytest.raises(UserInputError, match=r"shape \(2, 17, 1\)"):
        loaded.predict(np.zeros((2, 17, 1)))
    with pytest.raises(UserInputError, match=r"grid of \(16, 16\).*reachable: \[2, 3, 5, 9, 17, 33\]"):
        loaded.predict(np.zeros((2, 16, 16, 1)))
    with pytest.raises(UserInputError, match=r"does not take inputs on a grid of \(5, 5\) points: .*modes"):
        loaded.predict(np.zeros((2, 5, 5, 1)))  # reachable, but too coarse for 4 Fourier modes


@pytest.mark.parametrize("data, inputs", [
    ("listops", np.array([[3, 5, 0, 0], [1, 2, 4, 0]])),                       # tokens, 0 = padding
    ("pathfinder32", np.array([[0, 255, 17, 3]], np.uint8)),                 # uint8 pixels -> model_inputs
    ("adding", np.array([[[0.5, 1.0], [0.25, 0.0]]])),                       # real features, 2 channels
])
def test_sequence_encoding_is_the_tasks(data, inputs):
    """``SequenceTransforms.encode`` gives the model inputs and mask that the task's own batches carry."""
    from experiments.build import build_task
    from experiments.load import SequenceTransforms

    task = build_task(compose([f"data={data}"]))
    batch = task._complete({"inputs": inputs, "label": np.zeros(len(inputs), int), "target": np.zeros(len(inputs))})
    x, mask = SequenceTransforms(task).encode(inputs)
    assert x.dtype == batch["inputs"].dtype and np.array_equal(x, batch["inputs"])
    assert np.array_equal(mask, batch["mask"])


def test_import_experiments_stays_light():
    code = ("import sys, experiments; assert 'jax' not in sys.modules; "
            "from experiments import load_run; assert 'jax' not in sys.modules and callable(load_run)")
    subprocess.run([sys.executable, "-c", code], check=True)
