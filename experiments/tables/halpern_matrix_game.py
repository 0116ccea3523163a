"""VR-Halpern paper, policeman-and-burglar matrix game: residual against epochs for five solvers.

Paper: X. Cai, A. Alacaoglu, J. Diakonikolas, "Variance Reduced Halpern Iteration for Finite-Sum
Monotone Inclusions", ICLR 2024 (arXiv 2310.02987), Sec. 5, Fig. 1(a). The paper plots curves and
prints no numbers: everything in this table is *measured* here, when the table is built (it runs its
own protocol; no run directories). The figure's claim checked below: Algorithms 1 and 2 reach a small
residual in fewer epochs than VR-EG, VR-EG fewer than EAG, EAG fewer than EG.

Protocol (reference/lpn_cgs_optim.md 5.4a, after the authors' matrix_game.py):

* A_ij = w_j (1 - exp(-theta |i - j|)), w ~ |N(0, 1)| (NumPy seed 1), theta = 0.8, n = m = 500;
  min over x in the simplex, max over y in the simplex of y^T A x, so F(x, y) = (A^T y, -A x) and
  component i owns x_i and y_i: F_i(u) = n (A_{i,:}^T y_i, -A_{:,i} x_i) (``optim.halpern.linear_problem``);
* u0 = uniform; residual r(u) = ||u - Pi(u - F(u))|| (step 1), against epochs = component
  evaluations / n, counted exactly (a full pass n, a PAGE minibatch step 2b, a VR step 2);
* parameters of the authors' code: EG and EAG eta = 5/||A||_2; VR-EG p = 1/n, gamma = 3 sqrt(p)/||A||_F;
  Algorithm 1 eta = 5/||A||_F, b = floor(sqrt n), lambda_k = 2/(k+4); Algorithm 2 eta = sqrt(n)/||A||_F,
  VR-FoRB gamma = 5 sqrt(p(1-p))/(sqrt(n)+1), p = 1/n, M_k = floor(0.05 n log(k+2));
* budget 5000 epochs, the paper's (EG and EAG: 2500 iterations); about a minute on a 2-core CPU;
  ``--epochs`` shortens it. float64.

    python -m experiments.table halpern_matrix_game [--epochs 5000] [--seed 0] [--n 500]

The machinery (running the methods, epochs to a level, the ordering check, the figure) is shared with
``halpern_qp``.
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
from experiments.tables.common import (Table, convergence_chart, format_count, format_number,
                                       format_seconds, markdown_table)

PAPER = "Cai, Alacaoglu, Diakonikolas, ICLR 2024, arXiv 2310.02987"
ALG1, ALG2, VR_EG, EAG, EG = "Algorithm 1", "Algorithm 2", "VR-EG", "EAG", "EG"
METHODS = (ALG1, ALG2, VR_EG, EAG, EG)
# Fig. 1's ranking (lower = fewer epochs to a small residual) and every pair (a, b) it orders.
PAPER_RANK = {ALG1: 0, ALG2: 0, VR_EG: 1, EAG: 2, EG: 3}
PAPER_PAIRS = tuple((a, b) for a in METHODS for b in METHODS if PAPER_RANK[a] < PAPER_RANK[b])
ORDER_TEXT = "Algorithms 1 and 2 < VR-EG < EAG < EG in epochs to a small residual"

DEFAULT_EPOCHS = 5000.0
DEFAULT_LEVELS = (1e-1, 5e-2, 2e-2, 1e-2, 5e-3)


# --------------------------------------------------------------------------------------------------
# Shared with halpern_qp: run the methods, epochs to a level, the ordering check, the table


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


def comparison_table(name: str, title: str, setup: str, measured: list[Measured], levels: list[float],
                     budget: float, n: int, seed: int, records: int, plot_title: str) -> Table:
    """Markdown (epochs to each level, final and best residual, cost), CSV and the residual curves."""
    by_name = {m.name: m for m in measured}
    level_names = [f"{v:g}" for v in levels]
    header = (["method", "parameters"] + [f"epochs to r ≤ {v}" for v in level_names]
              + ["final r", "best r", "epochs run", "iterations", "time"])
    rows, csv_rows = [], []
    for m in measured:
        reach = [m.epochs_to(v) for v in levels]
        rows.append([m.name, m.params] + [_epochs_cell(t) for t in reach]
                    + [f"{m.final:.3e}", f"{m.best:.3e}", format_number(round(m.epochs_run, 1)),
                       format_count(m.iterations), format_seconds(m.seconds)])
        csv_rows.append({"method": m.name, "parameters": m.params,
                         **{f"epochs_to_{v}": t for v, t in zip(level_names, reach)},
                         "final_residual": m.final, "best_residual": m.best, "epochs_run": m.epochs_run,
                         "iterations": m.iterations, "seconds": m.seconds, "budget_epochs": budget,
                         "n": n, "seed": seed})
    resolution = budget / records
    reached = [v for v in levels if any(m.epochs_to(v) is not None for m in measured)]
    lines = [f"### {title}", "", setup, "", markdown_table(header, rows), "",
             "r = ‖u − Π(u − F(u))‖, the forward-backward residual with step 1 (the paper's "
             "\"operator norm\"; ‖F(u)‖ when unconstrained). Epochs = component evaluations / n, "
             "counted exactly. \"Epochs to r ≤ ε\": the first recorded iterate at or below ε, "
             "\"not reached\" within the budget; the residual is recorded each time the count "
             f"passes a multiple of {resolution:g} epochs (at most once per iteration), so these "
             "are late by less than one such interval or one iteration. Best r: the lowest "
             "recorded; a method whose residual oscillates can dip below ε and come back, so read "
             "these beside the final r. Time: wall clock on this "
             "machine, compilation included (about 1–2 s per method). All numbers measured here; "
             f"the paper ({PAPER}) shows curves only.", ""]
    lines.append(f"**The paper's ordering** (Fig. 1: {ORDER_TEXT}; checked on all "
                 f"{len(PAPER_PAIRS)} pairs it ranks):")
    for i, v in enumerate(reversed(reached)):
        verdict, details = ordering_at(by_name, v)
        where = f"r ≤ {v:g}" + (", the smallest level any method reached" if i == 0 else "")
        lines.append(f"- at {where}: **{verdict}**" if i == 0 else f"- at {where}: {verdict}")
        lines[-1] += ((f" ({'; '.join(details)})" if details else "")
                      + f". Measured: {measured_order(by_name, v)}.")
    if not reached:
        lines.append("- no method reached any of the levels within the budget.")
    verdict, details = ordering_by_final(by_name)
    lines.append(f"- by final residual after {budget:g} epochs: {verdict}"
                 + (f" ({'; '.join(details)})" if details else "") + ".")

    series = [(m.name, m.epochs.tolist(), m.residual.tolist()) for m in measured]

    def plot(path: pathlib.Path) -> None:
        convergence_chart(path, "# of epochs (component evaluations / n)", series,
                          ylabel="residual ‖u − Π(u − F(u))‖", title=plot_title, levels=levels,
                          note=f"measured, {budget:g} epochs, seed {seed}; {PAPER}")

    columns = (["method", "parameters"] + [f"epochs_to_{v}" for v in level_names]
               + ["final_residual", "best_residual", "epochs_run", "iterations", "seconds",
                  "budget_epochs", "n", "seed"])
    return Table(name=name, markdown="\n".join(lines), csv_columns=columns, csv_rows=csv_rows, plot=plot)


# --------------------------------------------------------------------------------------------------
# The matrix game


def policeman_and_burglar(n: int, theta: float = 0.8, seed: int = 1) -> np.ndarray:
    """A_ij = w_j (1 - exp(-theta |i - j|)), w = |randn(n)| from ``np.random.seed(seed)`` (Nemirovski)."""
    w = np.abs(np.random.RandomState(seed).randn(n))
    i = np.arange(n)
    return w[None, :] * (1.0 - np.exp(-theta * np.abs(i[:, None] - i[None, :])))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, DEFAULT_EPOCHS, DEFAULT_LEVELS)
    parser.add_argument("--n", type=int, default=500, help="players' actions n = m (default 500)")


def methods(a: np.ndarray, epochs: float, records: int) -> tuple[list[Method], object]:
    """The five solvers with the authors' parameters for the matrix game, and the problem."""
    import jax.numpy as jnp

    from optim import halpern as H

    n = a.shape[0]
    block = np.zeros((2 * n, 2 * n))                        # F(x, y) = (A^T y, -A x)
    block[:n, n:], block[n:, :n] = a.T, -a

    def project(u):
        return H.project_simplex(u.reshape(2, n)).reshape(-1)   # (2, n): x and y rows

    problem = H.linear_problem(jnp.asarray(block), jnp.zeros(2 * n), n, jnp.full(2 * n, 1.0 / n), project)
    op, fro = float(np.linalg.norm(a, 2)), float(np.linalg.norm(a))
    p = 1.0 / n
    b = math.isqrt(n)
    eta_eg = 5 / op
    eta1, eta2 = 5 / fro, math.sqrt(n) / fro
    gamma_vr, gamma_forb = 3 * math.sqrt(p) / fro, 5 * math.sqrt(p * (1 - p)) / (math.sqrt(n) + 1)
    kw = dict(epochs=epochs, num_records=records)
    return [
        Method(ALG1, f"η = 5/‖A‖_F = {eta1:.4g}, b = {b}, λ_k = 2/(k+4), PAGE p_k",
               lambda key: H.halpern_page(problem, key, eta=eta1, **kw)),
        Method(ALG2, f"η = √n/‖A‖_F = {eta2:.4g}; VR-FoRB γ = {gamma_forb:.3g}, p = 1/n, "
               "M_k = ⌊0.05 n log(k+2)⌋", lambda key: H.inexact_halpern(
                   problem, key, eta=eta2, gamma=gamma_forb, **kw)),
        Method(VR_EG, f"γ = 3√p/‖A‖_F = {gamma_vr:.3g}, p = 1/n",
               lambda key: H.vr_extragradient(problem, key, gamma=gamma_vr, **kw)),
        Method(EAG, f"η = 5/‖A‖₂ = {eta_eg:.4g}, λ_k = 1/(k+2)",
               lambda key: H.extra_anchored_gradient(problem, key, eta=eta_eg, **kw)),
        Method(EG, f"η = 5/‖A‖₂ = {eta_eg:.4g}",
               lambda key: H.extragradient(problem, key, eta=eta_eg, **kw)),
    ], problem


def build(args: argparse.Namespace) -> Table:
    import jax

    from optim.halpern import residual

    check_budget(args)
    levels = parse_levels(args.levels)
    if args.n < 2:
        raise UserInputError(f"--n must be at least 2, got {args.n}")
    a = policeman_and_burglar(args.n)
    with jax.enable_x64(True):
        solvers, problem = methods(a, args.epochs, args.records)
        r0 = float(residual(problem, problem.u0))
        measured = measure(solvers, args.seed, "halpern_matrix_game")
    setup = (f"Policeman and burglar: n = {args.n}, A_ij = w_j(1 − e^(−0.8|i−j|)), w ~ |N(0,1)| (NumPy "
             f"seed 1), ‖A‖₂ = {np.linalg.norm(a, 2):.4g}, ‖A‖_F = {np.linalg.norm(a):.4g}; "
             f"min_(x∈Δ) max_(y∈Δ) yᵀAx, u0 uniform (r = {r0:.3e}); budget {args.epochs:g} epochs per "
             f"method (the paper's: 5000); sampling seed {args.seed}; float64. Parameters: the "
             "authors' code (matrix_game.py).")
    return comparison_table("halpern_matrix_game",
                            "VR-Halpern: policeman-and-burglar matrix game (Cai, Alacaoglu, Diakonikolas, "
                            "ICLR 2024, Fig. 1a), measured", setup, measured, levels, args.epochs, args.n,
                            args.seed, args.records,
                            f"Policeman and burglar, n = {args.n} (Cai et al. 2024, Fig. 1a): measured")
