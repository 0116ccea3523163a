"""`python -m experiments.table`: the FNO Darcy table and the sweep summary on synthetic run directories.

The run directories are written here by hand, following the runner's contract (results.json,
.hydra/config.yaml, .hydra/overrides.yaml), so a change of the format on either side shows up here.
The oracle: numbers written into the runs must come back in the right rows and columns, the paper's
numbers must be the published ones, and the sweep's order must follow the objective's mode.
"""
from __future__ import annotations

import csv
import json
import pathlib
import re
import subprocess
import sys

import pytest
import yaml

from experiments.table import main
from experiments.tables.formatting import format_metric, format_seconds

REPO = pathlib.Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------------
# Synthetic run directories


def darcy_config(**changes) -> dict:
    """The composed config of `experiment=fno_darcy`; ``changes`` maps dotted keys to new values."""
    cfg = {
        "seed": 0,
        "model": {"_target_": "operators.fno.FNO", "in_channels": 1, "out_channels": 1,
                  "modes": [12, 12], "width": 32, "n_layers": 4, "padding": 0.1},
        "data": {"_target_": "experiments.tasks.pde.OperatorTask", "n_train": 1000, "n_test": 100,
                 "train_resolution": 85, "test_resolutions": [141, 211, 421],
                 "normalizer": "pointwise", "loss": "l2",
                 "pde": {"_target_": "operators.pde.darcy.DarcyFlow", "resolution": 421, "alpha": 2.0,
                         "tau": 3.0, "a_pos": 12.0, "a_neg": 3.0, "seed": 0,
                         "cache_dir": "${oc.env:NEURAL_LAX_CACHE,.cache/neural_lax}"}},
        "optim": {"_target_": "optim.adam", "b1": 0.9, "b2": 0.999, "weight_decay": 1.0e-4},
        "schedule": {"_target_": "optim.schedules.step_decay", "value": 1.0e-3, "every_epochs": 100,
                     "gamma": 0.5},
        "trainer": {"epochs": 500, "batch_size": 20, "max_steps": None, "log_every": 50},
        "param_groups": {},
    }
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[last] = value
    return cfg


def results(metrics: dict, objective: tuple[str, str, str] = ("test_s85", "rel_l2", "min"),
            **extra) -> dict:
    split, metric, mode = objective
    out = {"objective": {"metric": metric, "split": split, "mode": mode,
                         "value": metrics[split][metric]},
           "metrics": metrics, "n_params": 2368001, "step": 25000, "epochs": 500.0,
           "resumed_from_step": 0,
           "cost": {"data_seconds": 480.0, "compile_seconds": 2.1, "train_seconds": 3600.0,
                    "eval_seconds": 3.0, "seconds_per_step": 0.144, "peak_host_memory_mb": 2100.0,
                    "peak_device_memory_mb": None, "backend": "gpu", "device_kind": "NVIDIA H100",
                    "n_devices": 1, "n_processes": 1,
                    "versions": {"python": "3.11.7", "jax": "0.10.2", "flax": "0.12.8"}},
           "run_dir": "/abs/path"}
    out.update(extra)
    return out


def write_run(path: pathlib.Path, config: dict | None = None, overrides: list[str] | None = None,
              result: dict | None = None) -> pathlib.Path:
    """A run directory as the runner writes it; ``None`` leaves that file out."""
    path.mkdir(parents=True)
    if config is not None or overrides is not None:
        (path / ".hydra").mkdir()
    if config is not None:
        (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    if overrides is not None:
        (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if result is not None:
        (path / "results.json").write_text(json.dumps(result, indent=2))
    return path


def write_multirun(path: pathlib.Path, jobs: list[tuple[list[str], dict | None]]) -> pathlib.Path:
    """A Hydra multirun directory: multirun.yaml and one job per ``(overrides, results or None)``."""
    path.mkdir(parents=True)
    (path / "multirun.yaml").write_text("hydra:\n  mode: MULTIRUN\n")
    for i, (overrides, result) in enumerate(jobs):
        write_run(path / str(i), darcy_config(), overrides, result)
    return path


# --------------------------------------------------------------------------------------------------
# Reading the output


def markdown_rows(text: str) -> list[list[str]]:
    """The rows of the (first) Markdown table in ``text``, header first, separator line dropped."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip().strip("|").split(" | ")])
    return rows


def as_dicts(rows: list[list[str]]) -> list[dict[str, str]]:
    header, *body = rows
    assert all(len(r) == len(header) for r in body), rows
    return [dict(zip(header, r)) for r in body]


def read_csv(path: pathlib.Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def run_cli(args: list[str], cwd: pathlib.Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.table", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def check_png(path: pathlib.Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000, path


# --------------------------------------------------------------------------------------------------
# fno_darcy


def test_fno_darcy_cli_puts_published_and_measured_numbers_in_their_columns(tmp_path):
    run = write_run(tmp_path / "runs" / "fno", darcy_config(**{"data.n_train": 500, "trainer.epochs": 20}),
                    ["experiment=fno_darcy", "data.n_train=500", "trainer.epochs=20"],
                    results({"test_s85": {"rel_l2": 0.0123, "rel_h1": 0.09},
                             "test_s421": {"rel_l2": 0.0131, "rel_h1": 0.1}}, epochs=20.0))
    out = tmp_path / "out"
    proc = run_cli(["fno_darcy", str(run), "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().splitlines()[-1] == f"wrote {out}"

    rows = {r["model"]: r for r in as_dicts(markdown_rows(proc.stdout))}
    assert list(rows) == ["FCN", "PCA+NN", "RBM", "LNO", "FNO", "FNO (ours)"]
    paper = rows["FNO"]
    assert [paper[f"s={s}"] for s in (85, 141, 211, 421)] == ["*0.0108*", "*0.0109*", "*0.0109*",
                                                              "*0.0098*"]
    assert "published" in paper["source"] and rows["LNO"]["s=421"] == "–"
    ours = rows["FNO (ours)"]
    # Trained (and tested) at 85: the s=85 column. The evaluation at 421 is zero-shot, which the
    # paper's s=421 column (trained at 421) is not: it goes to the notes.
    assert [ours[f"s={s}"] for s in (85, 141, 211, 421)] == ["0.0123", "", "", ""]
    assert "zero-shot s=421: 0.0131" in ours["notes"]
    assert ours["source"] == f"measured: {run}"
    assert ours["params"] == "2,368,001" and ours["epochs"] == "20"
    assert ours["train time"] == "1 h 00 min (NVIDIA H100)"
    assert "data.n_train=500 (paper: 1000)" in ours["notes"]
    assert "trainer.epochs=20 (paper: 500)" in ours["notes"]
    assert "Li et al." in proc.stdout and "2010.08895" in proc.stdout   # where the numbers come from

    assert (out / "fno_darcy.md").read_text().strip() in proc.stdout
    table = read_csv(out / "fno_darcy.csv")
    assert [r["model"] for r in table] == ["FCN", "PCA+NN", "RBM", "LNO", "FNO", "FNO (ours)"]
    assert [r["kind"] for r in table] == ["published"] * 5 + ["measured"]
    assert [float(table[4][f"rel_l2_s{s}"]) for s in (85, 141, 211, 421)] == [0.0108, 0.0109, 0.0109,
                                                                             0.0098]
    assert float(table[5]["rel_l2_s85"]) == 0.0123 and table[5]["rel_l2_s421"] == ""
    assert "zero-shot s=421: 0.0131" in table[5]["notes"]
    assert table[5]["rel_l2_s141"] == "" and table[3]["rel_l2_s421"] == ""
    assert int(table[5]["n_params"]) == 2368001 and float(table[5]["train_seconds"]) == 3600.0
    check_png(out / "fno_darcy.png")


def test_fno_darcy_notes_protocol_deviations_failed_runs_and_missing_configs(tmp_path, capsys):
    metrics = {"test_s85": {"rel_l2": 0.0109}, "test_s64": {"rel_l2": "nan"}}
    faithful = write_run(tmp_path / "faithful", darcy_config(), [], results(metrics))
    at_64 = write_run(tmp_path / "at_64", darcy_config(**{"data.train_resolution": 64}), [],
                      results({"test_s64": {"rel_l2": 0.0191}}, objective=("test_s64", "rel_l2", "min")))
    deviating = write_run(tmp_path / "deviating",
                          darcy_config(**{"model.width": 20, "model.modes": [8, 8], "model.padding": 0.0,
                                          "data.pde.resolution": 211, "trainer.max_steps": 1000,
                                          "optim._target_": "optax.adamw"}),
                          ["model.width=20"], results(metrics))
    failed = write_run(tmp_path / "failed", darcy_config(), [], None)
    no_config = write_run(tmp_path / "no_config", None, None, results(metrics))
    out = tmp_path / "out"
    assert main(["fno_darcy", str(faithful), str(deviating), str(failed), str(no_config), str(at_64),
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    rows = [r for r in as_dicts(markdown_rows(text)) if r["model"] == "FNO (ours)"]
    notes = {pathlib.Path(r["source"]).name: r["notes"] for r in rows}
    assert notes["faithful"] == "zero-shot s=64: nan"  # a non-finite value is shown as such
    for expected in ("model.width=20 (paper: 32)", "model.modes=[8,8] (paper: 12)",
                     "model.padding=0 (paper: 0.1)", "data.pde.resolution=211 (paper: 421)",
                     "trainer.max_steps=1000", "optim: optax.adamw"):
        assert expected in notes["deviating"], (expected, notes["deviating"])
    assert notes["failed"] == "no results.json"
    assert notes["no_config"].startswith("config not found")
    # A training resolution outside the paper's gets its own column, filled by that run alone.
    assert [r["s=64"] for r in rows] == ["", "", "", "", "0.0191"]
    assert [r["s=85"] for r in rows] == ["0.0109", "0.0109", "", "0.0109", ""]
    failed_row = next(r for r in rows if r["source"] == f"measured: {failed}")
    assert failed_row["s=85"] == failed_row["params"] == failed_row["train time"] == ""
    assert len(read_csv(out / "fno_darcy.csv")) == 5 + 5


def test_fno_darcy_without_runs_prints_the_paper_and_how_to_make_a_run(tmp_path, capsys):
    assert main(["fno_darcy", "--out", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    rows = as_dicts(markdown_rows(text))
    assert [r["model"] for r in rows] == ["FCN", "PCA+NN", "RBM", "LNO", "FNO"]
    assert rows[0]["s=85"] == "*0.0253*" and rows[2]["s=421"] == "*0.0259*"
    assert "python -m experiments.train experiment=fno_darcy" in text
    check_png(tmp_path / "out" / "fno_darcy.png")


# --------------------------------------------------------------------------------------------------
# sweep


def test_sweep_orders_jobs_best_first_for_min_and_puts_failed_jobs_last(tmp_path, capsys):
    def res(v):
        return results({"test_s85": {"rel_l2": v, "rel_h1": 10 * v if isinstance(v, float) else v}})

    widths_lrs = [(8, "1e-3"), (16, "1e-3"), (32, "1e-3"), (64, "1e-3"), (32, "2e-3")]
    values = [0.05, 0.02, "nan", 0.012, None]        # job 2 diverged, job 4 never finished
    multirun = write_multirun(tmp_path / "multirun", [
        (["experiment=fno_darcy", f"model.width={w}", f"schedule.value={lr}", "hydra.job.chdir=false"],
         res(v) if v is not None else None) for (w, lr), v in zip(widths_lrs, values)])
    out = tmp_path / "out"
    assert main(["sweep", str(multirun), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    rows = as_dicts(markdown_rows(text))
    assert [r["job"] for r in rows] == ["3", "1", "0", "2", "4"]
    assert list(rows[0]) == ["job", "experiment", "model.width", "schedule.value", "test_s85/rel_l2",
                             "test_s85/rel_h1", "params", "s/step", "train time", "status"]
    assert [r["test_s85/rel_l2"] for r in rows] == ["0.0120", "0.0200", "0.0500", "nan", ""]
    assert [r["model.width"] for r in rows] == ["64", "16", "8", "32", "32"]
    assert rows[0]["test_s85/rel_h1"] == "0.1200" and rows[0]["s/step"] == "144 ms"
    assert rows[0]["params"] == "2,368,001" and rows[0]["train time"] == "1 h 00 min"
    assert [r["status"] for r in rows] == ["ok"] * 4 + ["no results.json"]
    assert "lower is better" in text

    table = read_csv(out / "sweep.csv")
    assert [int(r["job"]) for r in table] == [3, 1, 0, 2, 4]
    assert "hydra.job.chdir" not in table[0]
    assert [r["objective"] for r in table] == ["0.012", "0.02", "0.05", "nan", ""]
    assert table[0]["objective_name"] == "test_s85/rel_l2" and table[0]["mode"] == "min"
    assert float(table[0]["seconds_per_step"]) == 0.144 and table[4]["status"] == "no results.json"
    check_png(out / "sweep.png")


def test_sweep_orders_jobs_best_first_for_max_and_tolerates_missing_cost(tmp_path, capsys):
    jobs = []
    for opt, acc in [("adam", 0.7), ("adamw", 0.9), ("lion", 0.8)]:
        r = results({"val": {"accuracy": acc, "loss": 1 - acc}}, objective=("val", "accuracy", "max"))
        del r["cost"]
        jobs.append(([f"optim={opt}"], r))
    multirun = write_multirun(tmp_path / "multirun", jobs)
    monkey_out = tmp_path / "out"
    assert main(["sweep", str(multirun), "--out", str(monkey_out)]) == 0
    rows = as_dicts(markdown_rows(capsys.readouterr().out))
    assert [(r["job"], r["optim"], r["val/accuracy"]) for r in rows] == [
        ("1", "adamw", "0.9000"), ("2", "lion", "0.8000"), ("0", "adam", "0.7000")]
    assert [r["val/loss"] for r in rows] == ["0.1000", "0.2000", "0.3000"]
    assert all(r["s/step"] == "" and r["train time"] == "" for r in rows)
    check_png(monkey_out / "sweep.png")


def test_one_numeric_override_default_output_directory_and_multirun_as_runs(tmp_path, monkeypatch,
                                                                              capsys):
    multirun = write_multirun(tmp_path / "multirun", [
        ([f"model.width={w}"], results({"test_s85": {"rel_l2": v}}) if v else None)
        for w, v in [(8, 0.1), (16, 0.05), (32, 0.03), (64, None)]])
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "multirun"]) == 0          # objective against model.width: a line chart
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    out = pathlib.Path(last.removeprefix("wrote "))
    assert re.fullmatch(r"outputs/tables/sweep/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", out.as_posix())
    assert sorted(p.name for p in (tmp_path / out).iterdir()) == ["sweep.csv", "sweep.md", "sweep.png"]
    check_png(tmp_path / out / "sweep.png")
    # fno_darcy reads a multirun directory as its jobs, one "FNO (ours)" row each.
    assert main(["fno_darcy", "multirun", "--out", str(tmp_path / "darcy")]) == 0
    ours = [r for r in as_dicts(markdown_rows(capsys.readouterr().out)) if r["model"] == "FNO (ours)"]
    assert [(r["source"], r["s=85"]) for r in ours] == [
        ("measured: multirun/0", "0.1000"), ("measured: multirun/1", "0.0500"),
        ("measured: multirun/2", "0.0300"), ("measured: multirun/3", "")]


# --------------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("args, message", [
    (["no_such_table"], "unknown table 'no_such_table'"),
    (["sweep", "/no/such/multirun"], "'/no/such/multirun' does not exist"),
])
def test_bad_input_exits_2_with_one_clear_line(tmp_path, args, message):
    proc = run_cli(args + ["--out", str(tmp_path / "out")])
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    if args[0] == "no_such_table":
        assert "fno_darcy" in proc.stderr and "sweep" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_directories_without_jobs_or_runs_are_rejected(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    single = write_run(tmp_path / "single", darcy_config(), [], None)
    assert main(["sweep", str(tmp_path / "empty")]) == 2
    assert "holds no job directories" in capsys.readouterr().err
    assert main(["sweep", str(single)]) == 2
    assert "single run directory" in capsys.readouterr().err
    assert main(["fno_darcy", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["fno_darcy", str(tmp_path / "empty")]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    assert main([]) == 2
    assert "available tables" in capsys.readouterr().err


def test_number_formats():
    assert [format_metric(v) for v in (0.0108, 0.0098, 0.052, 2.34e-4, float("nan"), None)] == [
        "0.0108", "0.0098", "0.0520", "2.340e-04", "nan", ""]
    assert [format_seconds(s) for s in (0.144, 12.34, 303, 3600, 7530, None)] == [
        "144 ms", "12.3 s", "5 min 03 s", "1 h 00 min", "2 h 06 min", ""]
