"""`python -m experiments.table lra`: the published LRA numbers beside runs of ListOps and Pathfinder.

Synthetic run directories in the runner's format (see test_tables.py). The oracle: each run's test
accuracy lands, in percent, in its task's column of a row named after its mixer; the published
numbers are the papers' (S4-LegS arXiv 2206.12037, S5 arXiv 2208.04933, the LRA repository's README
for the Transformer; see experiments/tables/lra.py); a reduced run is labelled with how it was
reduced, a run on the LRA protocol as such; a run of another task is refused with its name.
"""
from __future__ import annotations

import argparse

import pytest

from experiments.errors import UserInputError
from experiments.table import main
from experiments.tables import lra

from test_tables import as_dicts, check_png, markdown_rows, read_csv, results, write_run


def seq_config(task: str, mixer: str, init: str | None = None, **data) -> dict:
    dataset = ({"_target_": "experiments.data.listops.ListOps", "n_train": 96000, "min_length": 500,
                "max_length": 2000} if task == "listops" else
               {"_target_": "experiments.data.pathfinder.Pathfinder", "n_train": 160000})
    dataset.update(data)
    mixer_node = {"_target_": mixer, "_partial_": True}
    if init is not None:
        mixer_node["init"] = init
    return {"model": {"_target_": "lax_models.sequence.SequenceModel", "d_output": 10, "mixer": mixer_node},
            "data": {"_target_": "experiments.tasks.sequence.SequenceClassification", "dataset": dataset},
            "trainer": {"epochs": 40}}


def seq_results(test_acc: float, epochs: float) -> dict:
    res = results({"val": {"accuracy": test_acc}, "test": {"accuracy": test_acc, "loss": 1.0}},
                  objective=("val", "accuracy", "max"), epochs=epochs)
    return res


def test_runs_land_in_their_task_column_under_their_mixers_row(tmp_path, capsys):
    runs = tmp_path / "runs"
    s5 = write_run(runs / "s5", seq_config("listops", "lax_models.ssm.s5.S5", "hippo"), [],
                   seq_results(0.6125, 40.0))
    ptd = write_run(runs / "s4ptd", seq_config("pathfinder", "lax_models.ssm.s4d.S4D", "ptd", n_train=2000),
                    [], seq_results(0.5, 10.0))
    conv = write_run(runs / "lc", seq_config("listops", "lax_models.longconv.LongConv", n_train=2000,
                                             min_length=100, max_length=500), [], seq_results(0.375, 20.0))
    out = tmp_path / "out"
    assert main(["lra", str(s5), str(ptd), str(conv), "--out", str(out)]) == 0
    rows = {r["model"]: r for r in as_dicts(markdown_rows(capsys.readouterr().out))}
    # the published numbers
    assert (rows["S5"]["ListOps"], rows["S5"]["Pathfinder"]) == ("62.15", "95.33")
    assert (rows["S4-LegS"]["ListOps"], rows["S4-LegS"]["Pathfinder"]) == ("59.60", "94.20")
    assert (rows["Transformer"]["ListOps"], rows["Transformer"]["Pathfinder"]) == ("36.37", "71.40")
    assert "unverified" in rows["S4-PTD"]["source"]
    # ours, in percent, in the column of the run's task only
    assert (rows["S5 (ours)"]["ListOps"], rows["S5 (ours)"]["Pathfinder"]) == ("61.25", "")
    assert rows["S5 (ours)"]["notes"].startswith("LRA protocol")
    assert (rows["S4-PTD (ours)"]["ListOps"], rows["S4-PTD (ours)"]["Pathfinder"]) == ("", "50.00")
    assert "n_train=2000 (LRA: 160000)" in rows["S4-PTD (ours)"]["notes"]
    assert "10 epochs (protocol: 200)" in rows["S4-PTD (ours)"]["notes"]
    lc = rows["Long conv (ours)"]
    assert lc["ListOps"] == "37.50" and "min_length=100 (LRA: 500)" in lc["notes"]
    csv_rows = read_csv(out / "lra.csv")
    assert {r["model"] for r in csv_rows if r["kind"] == "ours"} == {"S5", "S4-PTD", "Long conv"}
    check_png(out / "lra.png")


def test_a_run_of_another_task_is_refused_by_name(tmp_path):
    cfg = seq_config("listops", "lax_models.ssm.s5.S5")
    cfg["data"]["dataset"]["_target_"] = "experiments.data.digits.SequentialDigits"
    run = write_run(tmp_path / "digits", cfg, [], seq_results(0.9, 40.0))
    with pytest.raises(UserInputError, match="not a ListOps or Pathfinder run.*SequentialDigits"):
        lra.build(argparse.Namespace(runs=[str(run)]))


def test_without_runs_it_prints_the_published_rows(tmp_path, capsys):
    assert main(["lra", "--out", str(tmp_path / "out")]) == 0
    rows = as_dicts(markdown_rows(capsys.readouterr().out))
    assert [r["model"] for r in rows][:2] == ["Transformer", "S4-LegS"]
    assert all(r["notes"] == "published" for r in rows)
