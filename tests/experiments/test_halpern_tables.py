"""`python -m experiments.table halpern_matrix_game | halpern_qp` with a small budget.

Oracles: the problem instances against their definitions (the policeman-and-burglar formula, the QP's
known solution), every method's row present with finite numbers, the epochs spent at least the budget
and no more than one iteration past it, and bad input as a one-line error (exit status 2).

The tables are built in process through ``experiments.table.main`` (the five solvers compile in each
build, which is the cost here); ``python -m experiments.table`` as a subprocess is tested once, in
test_tables.py.
"""
from __future__ import annotations

import csv
import math
import pathlib

import numpy as np
import pytest

from experiments.table import main
from experiments.tables import TABLES
from experiments.tables.halpern_comparison import METHODS
from experiments.tables.halpern_matrix_game import policeman_and_burglar
from experiments.tables.halpern_qp import hard_qp


def read_csv(path: pathlib.Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def check_outputs(out: pathlib.Path, name: str, budget: float, n: int) -> tuple[str, list[dict[str, str]]]:
    md, csv_path, png = (out / f"{name}{ext}" for ext in (".md", ".csv", ".png"))
    assert md.is_file() and csv_path.is_file() and png.is_file()
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    text = md.read_text()
    rows = read_csv(csv_path)
    assert [r["method"] for r in rows] == list(METHODS)
    for r in rows:
        final, best = float(r["final_residual"]), float(r["best_residual"])
        assert math.isfinite(final) and final > 0 and 0 < best <= final, r
        # The loop stops at the first iteration that reaches the budget; the costliest iteration
        # here (Algorithm 2's outer step) is well under 10 epochs.
        assert budget <= float(r["epochs_run"]) < budget + 10, r
        assert int(r["iterations"]) > 0 and float(r["seconds"]) > 0 and int(r["n"]) == n
        for key, value in r.items():
            if key.startswith("epochs_to_") and value:
                assert 0 <= float(value) <= float(r["epochs_run"]), (key, value)
        line = next(ln for ln in text.splitlines() if ln.startswith(f"| {r['method']} |"))
        assert f"{final:.3e}" in line
    assert "The paper's ordering" in text and "by final residual" in text
    return text, rows


def test_both_tables_are_registered():
    assert {"halpern_matrix_game", "halpern_qp"} <= set(TABLES)


def test_policeman_and_burglar_matches_its_definition():
    a = policeman_and_burglar(6)
    np.random.seed(1)
    w = np.abs(np.random.randn(6))
    for i in range(6):
        for j in range(6):
            assert a[i, j] == w[j] * (1 - np.exp(-0.8 * abs(i - j)))


def test_hard_qp_has_the_stated_structure_and_solution():
    n = 7
    a, h_mat, b, h = hard_qp(n)
    assert a[0, n - 1] == 0.25 and a[0, n - 2] == -0.25 and a[n - 1, 0] == 0.25
    assert np.count_nonzero(a) == 2 * n - 1
    np.testing.assert_allclose(h_mat, 2 * a.T @ a)
    assert np.all(b == 0.25) and h[-1] == 0.25 and np.count_nonzero(h) == 1


@pytest.mark.slow  # every solver run to its budget (~17 s of CPU)
def test_matrix_game_table_in_process(tmp_path, capsys):
    out = tmp_path / "mg"
    assert main(["halpern_matrix_game", "--epochs", "20", "--n", "30", "--levels", "0.3,1e-12",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.rstrip().endswith(f"wrote {out}")
    text, rows = check_outputs(out, "halpern_matrix_game", 20, 30)
    assert all(r["epochs_to_1e-12"] == "" for r in rows)          # nobody gets there in 20 epochs
    assert "not reached" in text and "budget 20 epochs" in text
    assert "η = 5/‖A‖_F" in text and "γ = 3√p/‖A‖_F" in text     # the authors' parameters


@pytest.mark.slow  # every solver run to its budget
def test_qp_table_in_process(tmp_path):
    out = tmp_path / "qp"
    assert main(["halpern_qp", "--epochs", "30", "--n", "40", "--out", str(out)]) == 0
    text, _ = check_outputs(out, "halpern_qp", 30, 40)
    assert "reduced from the paper's 10^6" in text


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    for args, message in ((["--levels", "abc"], "--levels must be comma-separated numbers"),
                          (["--epochs", "0"], "--epochs must be a positive number"),
                          (["--levels", "-1"], "--levels must be positive")):
        assert main(["halpern_qp", *args, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "x").exists()
