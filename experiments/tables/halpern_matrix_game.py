"""VR-Halpern paper, policeman-and-burglar matrix game: residual against epochs for five solvers.

Paper: X. Cai, A. Alacaoglu, J. Diakonikolas, "Variance Reduced Halpern Iteration for Finite-Sum
Monotone Inclusions", ICLR 2024 (arXiv 2310.02987), Sec. 5, Fig. 1(a). The paper plots curves and
prints no numbers: everything in this table is *measured* here, when the table is built (it runs its
own protocol; no run directories). The figure's claim checked below: Algorithms 1 and 2 reach a small
residual in fewer epochs than VR-EG, VR-EG fewer than EAG, EAG fewer than EG.

Protocol (after the authors' code, zephyr-cai/Finite-Sum-Halpern-Iteration:matrix_game.py):

* A_ij = w_j (1 - exp(-theta |i - j|)), w ~ |N(0, 1)| (NumPy seed 1), theta = 0.8, n = m = 500;
  min over x in the simplex, max over y in the simplex of y^T A x, so F(x, y) = (A^T y, -A x) and
  component i owns x_i and y_i: F_i(u) = n (A_{i,:}^T y_i, -A_{:,i} x_i) (``optim.halpern.linear_problem``);
* u0 = uniform; residual r(u) = ||u - Pi(u - F(u))|| (step 1), against epochs = component
  evaluations / n, counted exactly (a full pass n, a PAGE minibatch step 2b, a VR step 2);
* parameters of the authors' code: EG and EAG eta = 5/||A||_2; VR-EG p = 1/n, gamma = 3 sqrt(p)/||A||_F;
  Algorithm 1 eta = 5/||A||_F, b = floor(sqrt n), lambda_k = 2/(k+4); Algorithm 2 eta = sqrt(n)/||A||_F,
  VR-FoRB gamma = 5 sqrt(p(1-p))/(sqrt(n)+1), p = 1/n, M_k = floor(0.05 n log(k+2)), and VR-FoRB's
  snapshot refresh as in their ``subsolver_FoRB`` (w <- u, the outer point; ``--snapshot paper`` for
  the paper's Algorithm 3, w <- v_{t+1});
* budget 5000 epochs, the paper's (EG and EAG: 2500 iterations); about a minute on a 2-core CPU;
  ``--epochs`` shortens it. float64.

    python -m experiments.table halpern_matrix_game [--epochs 5000] [--seed 0] [--n 500] [--snapshot outer]

The machinery (running the methods, epochs to a level, the ordering check, the table and its figure)
is ``experiments.tables.halpern_comparison``, shared with ``halpern_qp``.
"""
from __future__ import annotations

import argparse
import functools
import math

import numpy as np

from experiments.errors import UserInputError
from experiments.tables.halpern_comparison import (ALG1, ALG2, EAG, EG, VR_EG, Comparison, Measured, Method,
                                                   add_common_arguments, check_budget, measure, parse_levels,
                                                   plot, render)
from experiments.tables.output import Table

DEFAULT_EPOCHS = 5000.0
DEFAULT_LEVELS = (1e-1, 5e-2, 2e-2, 1e-2, 5e-3)


def policeman_and_burglar(n: int, theta: float = 0.8, seed: int = 1) -> np.ndarray:
    """A_ij = w_j (1 - exp(-theta |i - j|)), w = |randn(n)| from ``np.random.seed(seed)`` (Nemirovski)."""
    w = np.abs(np.random.RandomState(seed).randn(n))
    i = np.arange(n)
    return w[None, :] * (1.0 - np.exp(-theta * np.abs(i[:, None] - i[None, :])))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, DEFAULT_EPOCHS, DEFAULT_LEVELS)
    parser.add_argument("--n", type=int, default=500, help="players' actions n = m (default 500)")


def methods(a: np.ndarray, epochs: float, records: int,
            snapshot: str = "outer") -> tuple[list[Method], object]:
    """The five solvers with the authors' parameters for the matrix game, and the problem; ``snapshot``
    is Algorithm 2's VR-FoRB snapshot rule (``optim.halpern.vr_forb_resolvent``)."""
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
               f"M_k = ⌊0.05 n log(k+2)⌋, snapshot {snapshot}", lambda key: H.inexact_halpern(
                   problem, key, eta=eta2, gamma=gamma_forb, snapshot=snapshot, **kw)),
        Method(VR_EG, f"γ = 3√p/‖A‖_F = {gamma_vr:.3g}, p = 1/n",
               lambda key: H.vr_extragradient(problem, key, gamma=gamma_vr, **kw)),
        Method(EAG, f"η = 5/‖A‖₂ = {eta_eg:.4g}, λ_k = 1/(k+2)",
               lambda key: H.extra_anchored_gradient(problem, key, eta=eta_eg, **kw)),
        Method(EG, f"η = 5/‖A‖₂ = {eta_eg:.4g}",
               lambda key: H.extragradient(problem, key, eta=eta_eg, **kw)),
    ], problem


def solve(a: np.ndarray, epochs: float, records: int, seed: int,
          snapshot: str = "outer") -> tuple[list[Measured], float]:
    """Run the five methods on the game with matrix ``a`` in float64: their histories, and the residual
    of the starting point."""
    import jax

    from optim.halpern import residual

    with jax.enable_x64(True):
        solvers, problem = methods(a, epochs, records, snapshot)
        r0 = float(residual(problem, problem.u0))
        return measure(solvers, seed, "halpern_matrix_game"), r0


def collect(args: argparse.Namespace, levels: list[float], a: np.ndarray, measured: list[Measured],
            r0: float) -> Comparison:
    """The table's records: the game described, the methods as measured."""
    setup = (f"Policeman and burglar: n = {args.n}, A_ij = w_j(1 − e^(−0.8|i−j|)), w ~ |N(0,1)| (NumPy "
             f"seed 1), ‖A‖₂ = {np.linalg.norm(a, 2):.4g}, ‖A‖_F = {np.linalg.norm(a):.4g}; "
             f"min_(x∈Δ) max_(y∈Δ) yᵀAx, u0 uniform (r = {r0:.3e}); budget {args.epochs:g} epochs per "
             f"method (the paper's: 5000); sampling seed {args.seed}; float64. Parameters: the "
             "authors' code (matrix_game.py).")
    return Comparison(name="halpern_matrix_game",
                      title="VR-Halpern: policeman-and-burglar matrix game (Cai, Alacaoglu, Diakonikolas, "
                            "ICLR 2024, Fig. 1a), measured",
                      setup=setup,
                      plot_title=f"Policeman and burglar, n = {args.n} (Cai et al. 2024, Fig. 1a): measured",
                      measured=measured, levels=levels, budget=args.epochs, n=args.n,
                      seed=args.seed, records=args.records, snapshot=args.snapshot)


def build(args: argparse.Namespace) -> Table:
    check_budget(args)
    levels = parse_levels(args.levels)
    if args.n < 2:
        raise UserInputError(f"--n must be at least 2, got {args.n}")
    a = policeman_and_burglar(args.n)
    measured, r0 = solve(a, args.epochs, args.records, args.seed, args.snapshot)
    comparison = collect(args, levels, a, measured, r0)
    return render(comparison).with_plot(functools.partial(plot, comparison))
