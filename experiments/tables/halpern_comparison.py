"""What the VR-Halpern tables share: run the five solvers, epochs to a residual level, the paper's
ordering check, and the comparison table (Markdown, CSV, convergence curves).

Paper: X. Cai, A. Alacaoglu, J. Diakonikolas, "Variance Reduced Halpern Iteration for Finite-Sum
Monotone Inclusions", ICLR 2024 (arXiv 2310.02987), Sec. 5, Fig. 1; the solvers' parameters are those
of the authors' code (zephyr-cai/Finite-Sum-Halpern-Iteration: matrix_game.py,
quadratic_programming.py). Used by ``halpern_matrix_game`` (Fig. 1a) and ``halpern_qp`` (Fig. 1b):
each builds its problem and methods, ``measure`` runs them, ``render`` and ``plot`` draw the
``Comparison``.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import sys
import time
from typing import Callable, Sequence

import numpy as np

from experiments.errors import UserInputError
from experiments.tables.figures import convergence_chart
from experiments.tables.formatting import format_count, format_number, format_seconds
from experiments.tables.output import Table, markdown_table

PAPER = "Cai, Alacaoglu, Diakonikolas, ICLR 2024, arXiv 2310.02987"
ALG1, ALG2, VR_EG, EAG, EG = "Algorithm 1", "Algorithm 2", "VR-EG", "EAG", "EG"
METHODS = (ALG1, ALG2, VR_EG, EAG, EG)
# Fig. 1's ranking (lower = fewer epochs to a small residual) and every pair (a, b) it orders.
PAPER_RANK = {ALG1: 0, ALG2: 0, VR_EG: 1, EAG: 2, EG: 3}
PAPER_PAIRS = tuple((a, b) for a in METHODS for b in METHODS if PAPER_RANK[a] < PAPER_RANK[b])
ORDER_TEXT = "Algorithms 1 and 2 < VR-EG < EAG < EG in epochs to a small residual"
# Algorithm 2's VR-FoRB snapshot refresh (``optim.halpern.vr_forb_resolvent``): the authors' code
# (subsolver_FoRB: ``wx, wy = x, y``, the outer point) or the paper's Algorithm 3 (w <- v_{t+1}).
SNAPSHOT_TEXT = {"outer": "the authors' code (subsolver_FoRB refreshes w ← u, the outer point)",
                 "paper": "the paper's Algorithm 3 (w ← v_{t+1})"}


@dataclasses.dataclass(frozen=True)
class Method:
    """One solver as the table runs it: ``run(key) -> optim.halpern.SolverResult``."""

    name: str
    params: str
    run: Callable


@dataclasses.dataclass
class Measured:
    """A method's history (NumPy arrays of the recorded points) and cost."""

    name: str
    params: str
    epochs: np.ndarray
    residual: np.ndarray
    epochs_run: float
    iterations: int
    seconds: float

    @property
    def final(self) -> float:
        return float(self.residual[-1])

    @property
    def best(self) -> float:
        return float(np.nanmin(self.residual))

    def epochs_to(self, level: float) -> float | None:
        """Epochs of the first recorded iterate with residual <= level; None if none."""
        hit = np.flatnonzero(self.residual <= level)
        return float(self.epochs[hit[0]]) if hit.size else None


def add_common_arguments(parser: argparse.ArgumentParser, epochs: float, levels: Sequence[float]) -> None:
    parser.add_argument("--epochs", type=float, default=epochs,
                        help=f"budget in epochs (oracle calls / n) per method (default {epochs:g})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the solvers' sampling (default 0)")
    parser.add_argument("--records", type=int, default=1000,
                        help="about how many residuals to record per method (default 1000)")
    parser.add_argument("--levels", type=str, default=",".join(f"{v:g}" for v in levels),
                        help="comma-separated residual levels for the epochs-to-reach columns "
                             f"(default {','.join(f'{v:g}' for v in levels)})")
    parser.add_argument("--snapshot", choices=tuple(SNAPSHOT_TEXT), default="outer",
                        help="Algorithm 2's VR-FoRB snapshot refresh: 'outer' (default), the authors' code "
                             "(w <- u, the outer point), or 'paper', Algorithm 3 (w <- v_{t+1})")


def parse_levels(text: str) -> list[float]:
    try:
        levels = sorted({float(v) for v in text.split(",") if v.strip()}, reverse=True)
    except ValueError:
        raise UserInputError(f"--levels must be comma-separated numbers, got {text!r}") from None
    if not levels or any(not (math.isfinite(v) and v > 0) for v in levels):
        raise UserInputError(f"--levels must be positive numbers, got {text!r}")
    return levels


def check_budget(args: argparse.Namespace) -> None:
    if not (math.isfinite(args.epochs) and args.epochs > 0):
        raise UserInputError(f"--epochs must be a positive number, got {args.epochs:g}")
    if args.records < 1:
        raise UserInputError(f"--records must be at least 1, got {args.records}")


def measure(methods: Sequence[Method], seed: int, table: str) -> list[Measured]:
    """Run each method (float64 must be on) and read its history; progress on stderr."""
    import jax

    out = []
    for method in methods:
        start = time.perf_counter()
        result = jax.block_until_ready(method.run(jax.random.key(seed)))
        seconds = time.perf_counter() - start
        epochs, residual = result.history.valid()
        measured = Measured(method.name, method.params, np.asarray(epochs, float),
                            np.asarray(residual, float), float(epochs[-1]), int(result.steps), seconds)
        out.append(measured)
        print(f"{table}: {method.name:<11} {format_seconds(seconds):>8}, final residual "
              f"{measured.final:.3e} after {measured.epochs_run:g} epochs", file=sys.stderr, flush=True)
    return out


def _epochs_cell(value: float | None) -> str:
    return "not reached" if value is None else format_number(round(value, 1))


def measured_order(measured: dict[str, Measured], level: float) -> str:
    """The methods by epochs to reach ``level``, fastest first: ``VR-EG 30 < Algorithm 1 35 ...``."""
    reached = sorted((t, name) for name, m in measured.items() if (t := m.epochs_to(level)) is not None)
    text = ""
    for i, (t, name) in enumerate(reached):
        sep = "" if i == 0 else (" = " if t == reached[i - 1][0] else " < ")
        text += f"{sep}{name} {format_number(round(t, 1))}"
    missing = [name for name, m in measured.items() if m.epochs_to(level) is None]
    return text + (("; " if text else "") + "not reached: " + ", ".join(missing) if missing else "")


def ordering_at(measured: dict[str, Measured], level: float) -> tuple[str, list[str]]:
    """(verdict, reversed pairs) of the paper's ordering at one residual level, over every pair
    (a, b) it ranks (a before b). A pair holds when a reaches the level in fewer epochs than b, or
    only a reaches it; it is reversed when b is at least as fast, or only b reaches it; undecided
    when neither does."""
    reversed_pairs, undecided = [], 0
    for a, b in PAPER_PAIRS:
        ta, tb = measured[a].epochs_to(level), measured[b].epochs_to(level)
        if ta is None and tb is None:
            undecided += 1
        elif ta is None or (tb is not None and tb <= ta):
            reversed_pairs.append(f"{b} before {a}" if ta is None or tb < ta else f"{b} tied with {a}")
    total = len(PAPER_PAIRS)
    if reversed_pairs:
        return f"does not hold ({len(reversed_pairs)} of {total} pairs reversed)", reversed_pairs
    if undecided == total:
        return "undecided (no method reached it)", []
    if undecided:
        return (f"holds for the {total - undecided} of {total} pairs decided (neither reached it in "
                "the others)"), []
    return "holds", []


def ordering_by_final(measured: dict[str, Measured]) -> tuple[str, list[str]]:
    """The same pairs read on the final residuals (lower is better)."""
    reversed_pairs = [f"{b} {measured[b].final:.3e} ≤ {a} {measured[a].final:.3e}"
                      for a, b in PAPER_PAIRS if not measured[a].final < measured[b].final]
    if reversed_pairs:
        return f"does not hold ({len(reversed_pairs)} of {len(PAPER_PAIRS)} pairs reversed)", reversed_pairs
    return "holds", []


@dataclasses.dataclass
class Comparison:
    """The records of one comparison table: the problem (described in ``setup``), the measured methods
    in the order run, the residual levels of the epochs-to-reach columns and the budget."""

    name: str                 # the table's name: <name>.md, .csv, .png
    title: str
    setup: str
    plot_title: str
    measured: list[Measured]
    levels: list[float]       # decreasing
    budget: float             # epochs per method
    n: int
    seed: int
    records: int              # about how many residuals each method recorded
    snapshot: str = "outer"   # Algorithm 2's VR-FoRB snapshot rule (SNAPSHOT_TEXT)


def _method_rows(c: Comparison) -> tuple[list[str], list[list[str]], list[dict]]:
    """(header, Markdown rows, CSV rows): epochs to each level, final and best residual, cost."""
    level_names = [f"{v:g}" for v in c.levels]
    header = (["method", "parameters"] + [f"epochs to r ≤ {v}" for v in level_names]
              + ["final r", "best r", "epochs run", "iterations", "time"])
    rows, csv_rows = [], []
    for m in c.measured:
        reach = [m.epochs_to(v) for v in c.levels]
        rows.append([m.name, m.params] + [_epochs_cell(t) for t in reach]
                    + [f"{m.final:.3e}", f"{m.best:.3e}", format_number(round(m.epochs_run, 1)),
                       format_count(m.iterations), format_seconds(m.seconds)])
        csv_rows.append({"method": m.name, "parameters": m.params,
                         **{f"epochs_to_{v}": t for v, t in zip(level_names, reach)},
                         "final_residual": m.final, "best_residual": m.best, "epochs_run": m.epochs_run,
                         "iterations": m.iterations, "seconds": m.seconds, "budget_epochs": c.budget,
                         "n": c.n, "seed": c.seed})
    return header, rows, csv_rows


def _ordering_lines(c: Comparison) -> list[str]:
    """The paper's ordering checked at each level some method reached (the smallest first, in bold), and
    by the final residuals."""
    by_name = {m.name: m for m in c.measured}
    reached = [v for v in c.levels if any(m.epochs_to(v) is not None for m in c.measured)]
    lines = [f"**The paper's ordering** (Fig. 1: {ORDER_TEXT}; checked on all {len(PAPER_PAIRS)} pairs it "
             f"ranks; Algorithm 2's VR-FoRB snapshot refresh: {SNAPSHOT_TEXT[c.snapshot]}, "
             f"`--snapshot {c.snapshot}`):"]
    for i, v in enumerate(reversed(reached)):
        verdict, details = ordering_at(by_name, v)
        where = f"r ≤ {v:g}" + (", the smallest level any method reached" if i == 0 else "")
        lines.append(f"- at {where}: **{verdict}**" if i == 0 else f"- at {where}: {verdict}")
        lines[-1] += ((f" ({'; '.join(details)})" if details else "")
                      + f". Measured: {measured_order(by_name, v)}.")
    if not reached:
        lines.append("- no method reached any of the levels within the budget.")
    verdict, details = ordering_by_final(by_name)
    lines.append(f"- by final residual after {c.budget:g} epochs: {verdict}"
                 + (f" ({'; '.join(details)})" if details else "") + ".")
    return lines


def render(c: Comparison) -> Table:
    """Markdown (the setup, the methods' rows, how to read them, the ordering check) and CSV."""
    header, rows, csv_rows = _method_rows(c)
    lines = [f"### {c.title}", "", c.setup, "", markdown_table(header, rows), "",
             "r = ‖u − Π(u − F(u))‖, the forward-backward residual with step 1 (the paper's "
             "\"operator norm\"; ‖F(u)‖ when unconstrained). Epochs = component evaluations / n, "
             "counted exactly. \"Epochs to r ≤ ε\": the first recorded iterate at or below ε, "
             "\"not reached\" within the budget; the residual is recorded each time the count "
             f"passes a multiple of {c.budget / c.records:g} epochs (at most once per iteration), so these "
             "are late by less than one such interval or one iteration. Best r: the lowest "
             "recorded; a method whose residual oscillates can dip below ε and come back, so read "
             "these beside the final r. Time: wall clock on this "
             "machine, compilation included (about 1–2 s per method). All numbers measured here; "
             f"the paper ({PAPER}) shows curves only.", ""]
    lines += _ordering_lines(c)
    level_names = [f"{v:g}" for v in c.levels]
    columns = (["method", "parameters"] + [f"epochs_to_{v}" for v in level_names]
               + ["final_residual", "best_residual", "epochs_run", "iterations", "seconds",
                  "budget_epochs", "n", "seed"])
    return Table(name=c.name, markdown="\n".join(lines), csv_columns=columns, csv_rows=csv_rows)


def plot(c: Comparison, out_dir: pathlib.Path) -> list[pathlib.Path]:
    """``<name>.png``: each method's residual against epochs, the levels as dotted lines."""
    series = [(m.name, m.epochs.tolist(), m.residual.tolist()) for m in c.measured]
    return [convergence_chart(out_dir / f"{c.name}.png", "# of epochs (component evaluations / n)", series,
                              ylabel="residual ‖u − Π(u − F(u))‖", title=c.plot_title, levels=c.levels,
                              note=f"measured, {c.budget:g} epochs, seed {c.seed}; {PAPER}")]

