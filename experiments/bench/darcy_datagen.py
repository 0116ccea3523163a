"""Darcy data generation: N lognormal Darcy systems solved by GMRES, by sorted Krylov recycling (SKR)
and by sparse LU. One JSON line per grid size.

    python -m experiments.bench darcy_datagen                         # 64^2 and 128^2 unknowns, N = 100
    python -m experiments.bench darcy_datagen --unknowns 256 --systems 100 --preconditioner jacobi

The systems are those of ``data=darcy_lognormal``: a = exp(U), U ~ GRF(alpha 2.5, tau 7) (SKR's Darcy
family), five-point matrices of ``operators.pde.darcy_solver`` on (unknowns + 2)^2 nodes, f = 1. Built
once (not timed), then solved

* ``gmres``: each system alone by ``scipy.sparse.linalg.gmres`` (restart m, x0 = 0);
* ``recycled``: sorted by greedy nearest neighbour on the 8 x 8 leading DCT modes of a, then GCRO-DR(m, k)
  with warm starts (``operators.pde.krylov.solve_recycled``; the sort is timed with it);
* ``recycled_unsorted``: the same in the generation order (the sorting ablation, iterations only);
* ``direct``: ``splu`` with the minimum-degree ordering of A + A^T (as ``darcy_solver``).

Both iterative methods build the named preconditioner for every system (timed) and stop at
||b - A x|| <= rtol ||b||. Iterations are products with A, all counted (the recycled method's k
products that map the recycle space into each new system included). BLAS runs on one thread, the
setting in which SuperLU (single-threaded) and the Krylov loops are compared fairly.
"""
from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from operators.pde import krylov
from operators.pde.darcy import DarcySystems
from operators.pde.grf import gaussian_random_field_cosine


def bench_darcy_datagen(unknowns: list[int], systems: int = 100, rtol: float = 1e-8,
                        preconditioner: str = "ilu", drop_tol: float = 1e-2, fill_factor: float = 2.0,
                        restart: int = 40, recycle_dim: int = 20, alpha: float = 2.5, tau: float = 7.0,
                        seed: int = 0, unsorted: bool = True) -> list[dict]:
    """One dict per grid size (unknowns per axis): times, iteration counts and speed-ups."""
    lines = []
    for side in unknowns:
        K = side + 2
        coefficients = np.exp(gaussian_random_field_cosine(np.random.default_rng(seed), systems, K, alpha, tau))
        lazy = DarcySystems(coefficients)
        matrices = [lazy[i] for i in range(systems)]  # built once, outside the timings
        rhs = np.ones(side * side)
        options = dict(rtol=rtol, restart=restart, preconditioner=preconditioner, drop_tol=drop_tol,
                       fill_factor=fill_factor)
        with threadpool_limits(1):
            direct = krylov.solve_direct(matrices, rhs)
            gmres = krylov.solve_independent(matrices, rhs, **options)
            recycled = krylov.solve_recycled(matrices, rhs, features=krylov.low_frequency_modes(coefficients),
                                             recycle_dim=recycle_dim, **options)
            unsorted_run = (krylov.solve_recycled(matrices, rhs, recycle_dim=recycle_dim, **options)
                            if unsorted else None)
        scale = np.abs(direct.solutions).max()
        in_order = recycled.matvecs[recycled.order]
        line = {
            "bench": "darcy_datagen", "unknowns": side * side, "grid": f"{side}x{side}", "systems": systems,
            "rtol": rtol, "preconditioner": preconditioner,
            **({"ilu_drop_tol": drop_tol, "ilu_fill_factor": fill_factor} if preconditioner == "ilu" else {}),
            "restart": restart, "recycle_dim": recycle_dim,
            "direct_s": round(direct.seconds, 3),
            "gmres_s": round(gmres.seconds, 3),
            "recycled_s": round(recycled.seconds, 3),
            "gmres_iters_total": int(gmres.matvecs.sum()),
            "gmres_iters_mean": round(float(gmres.matvecs.mean()), 1),
            "recycled_iters_total": int(recycled.matvecs.sum()),
            "recycled_iters_mean": round(float(recycled.matvecs.mean()), 1),
            "recycled_iters_first": int(in_order[0]),
            "recycled_iters_last_quarter_mean": round(float(in_order[-max(1, systems // 4):].mean()), 1),
            "speedup_time_gmres_over_recycled": round(gmres.seconds / recycled.seconds, 2),
            "speedup_iters_gmres_over_recycled": round(gmres.matvecs.sum() / recycled.matvecs.sum(), 2),
            "speedup_time_direct_over_recycled": round(direct.seconds / recycled.seconds, 3),
            "max_rel_diff_recycled_vs_direct": float(np.abs(recycled.solutions - direct.solutions).max() / scale),
            "max_rel_diff_gmres_vs_direct": float(np.abs(gmres.solutions - direct.solutions).max() / scale),
        }
        if unsorted_run is not None:
            line["recycled_unsorted_iters_mean"] = round(float(unsorted_run.matvecs.mean()), 1)
            line["recycled_unsorted_s"] = round(unsorted_run.seconds, 3)
        lines.append(line)
    return lines
