"""VR-Halpern paper, "hard" linearly constrained quadratic program: residual against epochs, five solvers.

Paper: X. Cai, A. Alacaoglu, J. Diakonikolas, "Variance Reduced Halpern Iteration for Finite-Sum
Monotone Inclusions", ICLR 2024 (arXiv 2310.02987), Sec. 5, Fig. 1(b). The paper plots curves and
prints no numbers: everything in this table is *measured* here, when the table is built (it runs its
own protocol; no run directories). The figure's claim checked below: Algorithms 1 and 2 reach a small
residual in fewer epochs than VR-EG, VR-EG fewer than EAG, EAG fewer than EG.

Protocol (after the authors' code, zephyr-cai/Finite-Sum-Halpern-Iteration:quadratic_programming.py):

* min_x max_y 1/2 x^T H x - h^T x - <Ax - b, y> with n = 200, A = 1/4 (A[i, n-1-i] = 1,
  A[i, n-2-i] = -1), H = 2 A^T A, b = 1/4 (1, ..., 1), h = 1/4 e_n (the lower-bound instance of
  Ouyang & Xu); unconstrained, F(x, y) = (Hx - h - A^T y, Ax - b), component i owns x_i and y_i:
  F_i(u) = n M[:, {i, n+i}] u_{i, n+i} + q (``optim.halpern.linear_problem``);
* u0 = (1/n) 1; residual ||F(u)|| against epochs = component evaluations / n, counted exactly;
* parameters of the authors' code: EG eta = 0.5; EAG eta = 0.3, lambda_k = 1/(k+2); VR-EG gamma = 0.01,
  p = 1/n; Algorithm 1 eta = 0.3, b = floor(sqrt n) = 14, lambda_k = 2/(k+4) (the QP script uses the
  variant 2/(k+5), p_k = 4/(k+6); we keep the one schedule of matrix_game.py's Halpern_mini_update,
  which ``optim.halpern.halpern_page`` implements); Algorithm 2 eta = sqrt n,
  VR-FoRB gamma = 1e-3, p = 1/n, M_k = floor(0.05 n log(k+2)), VR-FoRB's snapshot refresh as in
  their ``subsolver_FoRB`` (w <- u, the outer point; ``--snapshot paper``: Algorithm 3, w <- v_{t+1});
* **budget 100,000 epochs per method, reduced from the paper's 10^6** so the table builds in about
  a minute and a quarter on a 2-core CPU (VR-EG alone, 6.6 million single-component steps, takes
  about 30 s); ``--epochs`` changes it. The curves are the first tenth of Fig. 1(b). float64.

As in the paper's figure, EAG and Algorithm 2 oscillate (their residual dips far below its trend and
comes back), Algorithm 1 decreases smoothly: "epochs to r <= eps" records the first dip, so read it
beside the final residual.

    python -m experiments.table halpern_qp [--epochs 100000] [--seed 0] [--n 200]
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

DEFAULT_EPOCHS = 100_000.0
PAPER_EPOCHS = 1_000_000
DEFAULT_LEVELS = (1.0, 3e-1, 1e-1, 3e-2, 1e-2)


def hard_qp(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(A, H, b, h) of the "hard" QP: A = 1/4 (anti-diagonal 1, the one below it -1), H = 2 A^T A,
    b = 1/4 ones, h = 1/4 e_n."""
    a = np.zeros((n, n))
    i = np.arange(n)
    a[i, n - 1 - i] = 1.0
    a[i[:-1], n - 2 - i[:-1]] = -1.0
    a /= 4
    h = np.zeros(n)
    h[-1] = 0.25
    return a, 2 * a.T @ a, np.full(n, 0.25), h


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, DEFAULT_EPOCHS, DEFAULT_LEVELS)
    parser.add_argument("--n", type=int, default=200, help="dimension of x and of y (default 200)")


def methods(n: int, epochs: float, records: int, snapshot: str = "outer"):
    """The five solvers with the authors' QP parameters, the problem and its solution u*; ``snapshot``
    is Algorithm 2's VR-FoRB snapshot rule (``optim.halpern.vr_forb_resolvent``)."""
    import jax.numpy as jnp

    from optim import halpern as H

    a, hess, b, h = hard_qp(n)
    matrix = np.block([[hess, -a.T], [a, np.zeros((n, n))]])   # F(u) = M u + q, u = (x, y)
    offset = np.concatenate([-h, -b])
    x_star = np.linalg.solve(a, b)                              # A x = b, then H x - h - A^T y = 0
    u_star = np.concatenate([x_star, np.linalg.solve(a.T, hess @ x_star - h)])
    problem = H.linear_problem(jnp.asarray(matrix), jnp.asarray(offset), n, jnp.full(2 * n, 1.0 / n))
    eta2, b_size = math.sqrt(n), math.isqrt(n)
    kw = dict(epochs=epochs, num_records=records)
    return [
        Method(ALG1, f"η = 0.3, b = {b_size}, λ_k = 2/(k+4), PAGE p_k",
               lambda key: H.halpern_page(problem, key, eta=0.3, **kw)),
        Method(ALG2, f"η = √n = {eta2:.4g}; VR-FoRB γ = 1e-3, p = 1/n, M_k = ⌊0.05 n log(k+2)⌋, "
               f"snapshot {snapshot}",
               lambda key: H.inexact_halpern(problem, key, eta=eta2, gamma=1e-3, snapshot=snapshot, **kw)),
        Method(VR_EG, "γ = 0.01, p = 1/n", lambda key: H.vr_extragradient(problem, key, gamma=0.01, **kw)),
        Method(EAG, "η = 0.3, λ_k = 1/(k+2)",
               lambda key: H.extra_anchored_gradient(problem, key, eta=0.3, **kw)),
        Method(EG, "η = 0.5", lambda key: H.extragradient(problem, key, eta=0.5, **kw)),
    ], problem, u_star, matrix


def solve(n: int, epochs: float, records: int, seed: int,
          snapshot: str = "outer") -> tuple[list[Measured], dict[str, float]]:
    """Run the five methods on the QP of size ``n`` in float64: their histories, and the starting point's
    residual ``r0``, its distance to the solution and ``||M||_2``."""
    import jax

    from optim.halpern import residual

    with jax.enable_x64(True):
        solvers, problem, u_star, matrix = methods(n, epochs, records, snapshot)
        r0 = float(residual(problem, problem.u0))
        measured = measure(solvers, seed, "halpern_qp")
    return measured, {"r0": r0, "distance": float(np.linalg.norm(np.asarray(problem.u0) - u_star)),
                      "norm": float(np.linalg.norm(matrix, 2))}


def collect(args: argparse.Namespace, levels: list[float], measured: list[Measured],
            start: dict[str, float]) -> Comparison:
    """The table's records: the QP described, the methods as measured."""
    budget_note = ("reduced from the paper's 10^6 to run in a minute or two"
                   if args.epochs < PAPER_EPOCHS else "the paper's")
    setup = (f"\"Hard\" QP: n = {args.n} (u = (x, y) in R^{2 * args.n}), A = ¼(anti-diagonal 1, −1 below "
             f"it), H = 2AᵀA, b = ¼·1, h = ¼e_n; unconstrained, u0 = (1/n)·1 (r = ‖F(u0)‖ = {start['r0']:.3e}, "
             f"‖u0 − u*‖ = {start['distance']:.4g}, ‖M‖₂ = {start['norm']:.3g}); budget "
             f"{args.epochs:g} epochs per method ({budget_note}); sampling seed {args.seed}; "
             "float64. Parameters: the authors' code (quadratic_programming.py).")
    return Comparison(name="halpern_qp",
                      title="VR-Halpern: \"hard\" quadratic program (Cai, Alacaoglu, Diakonikolas, ICLR "
                            "2024, Fig. 1b), measured",
                      setup=setup,
                      plot_title=f"\"Hard\" QP, n = {args.n} (Cai et al. 2024, Fig. 1b): measured, "
                                 f"{args.epochs:g} of the paper's 10^6 epochs",
                      measured=measured, levels=levels, budget=args.epochs, n=args.n, seed=args.seed,
                      records=args.records, snapshot=args.snapshot)


def build(args: argparse.Namespace) -> Table:
    check_budget(args)
    levels = parse_levels(args.levels)
    if args.n < 2:
        raise UserInputError(f"--n must be at least 2, got {args.n}")
    measured, start = solve(args.n, args.epochs, args.records, args.seed, args.snapshot)
    comparison = collect(args, levels, measured, start)
    return render(comparison).with_plot(functools.partial(plot, comparison))
