"""`python -m experiments.table optimizers_darcy`: each optimizer's setting is chosen on validation.

Synthetic sweeps in the runner's format (see test_tables.py). The oracle: the row of each optimizer
is its run with the best validation error, even where another run has a better test error.
"""
from __future__ import annotations

from experiments.table import main

from test_tables import as_dicts, check_png, darcy_config, markdown_rows, read_csv, results, write_run


def job(root, optimizer, i, lr, wd, val, test, state_mb):
    cfg = darcy_config(**{"schedule.value": lr, "optim.weight_decay": wd, "data.train_resolution": 64})
    res = results({"test_s64": {"rel_l2": test}, "val_s64": {"rel_l2": val}, "test_s127": {"rel_l2": 2 * test}},
                  objective=("val_s64", "rel_l2", "min"))
    res["cost"].update(optimizer_state_mb=state_mb, params_mb=9.0)
    write_run(root / optimizer / str(i), cfg,
              ["experiment=optimizers_darcy", f"optim={optimizer}", f"schedule.value={lr}", f"optim.weight_decay={wd}"],
              res)


def test_each_optimizer_is_chosen_on_validation_and_rows_follow_test_error(tmp_path, capsys):
    sweeps = tmp_path / "multirun"
    job(sweeps, "adam", 0, 1e-3, 0.0, val=0.030, test=0.020, state_mb=18.0)   # best test, worse validation
    job(sweeps, "adam", 1, 2e-3, 0.0, val=0.025, test=0.024, state_mb=18.0)   # chosen: best validation
    job(sweeps, "lion", 0, 1e-4, 1e-3, val=0.022, test=0.021, state_mb=9.0)
    job(sweeps, "lion", 1, 3e-4, 1e-3, val=float("nan"), test=float("nan"), state_mb=9.0)  # diverged
    (sweeps / "lion" / "2").mkdir()                                                           # unfinished
    out = tmp_path / "out"
    assert main(["optimizers_darcy", str(sweeps / "adam"), str(sweeps / "lion"), "--no-timing",
                 "--out", str(out)]) == 0
    rows = as_dicts(markdown_rows(capsys.readouterr().out))
    assert [r["optimizer"] for r in rows] == ["lion", "adam"]  # by test error of the chosen settings
    adam, lion = rows[1], rows[0]
    assert (adam["lr"], adam["val rel_l2 (chosen on)"], adam["test rel_l2 s=64"]) == ("0.002", "0.0250", "0.0240")
    assert adam["test s=127 (zero-shot)"] == "0.0480" and adam["grid"] == "2"
    assert adam["optimizer state"] == "18.0 MB (2.0x params)" and lion["optimizer state"] == "9.0 MB (1.0x params)"
    assert "diverged" in lion["notes"] and "1 of 3 runs without results" in lion["notes"]
    assert "best at the grid's edge (lr)" in adam["notes"]
    table = read_csv(out / "optimizers_darcy.csv")
    assert [r["optimizer"] for r in table] == ["lion", "adam"] and float(table[1]["test_rel_l2_s64"]) == 0.024
    check_png(out / "optimizers_darcy.png")


def test_sweeps_without_results_are_a_clear_error(tmp_path, capsys):
    (tmp_path / "multirun" / "0").mkdir(parents=True)
    assert main(["optimizers_darcy", str(tmp_path / "multirun"), "--no-timing"]) == 2
    assert "run the sweeps first" in capsys.readouterr().err
