"""LPN paper, 1-D Laplacian toy: the learned prox and regularizer against the truth, for three losses.

Paper: Z. Fang, S. Buchanan, J. Sulam, "What's in a Prior? Learned Proximal Networks for Inverse
Problems", ICLR 2024 (arXiv 2310.14344), Fig. 1 / 2 (``laplacian_compact.png`` on the project page).
The paper shows curves and prints no number (reference/tables_extra.md 2.4): everything here is
*measured*. Its claim, checked below: with x ~ Laplace(0, 1) and y = x + N(0, 1), the LPN trained by
proximal matching recovers the MAP denoiser, soft thresholding at sigma^2 / b = 1, and its learned
regularizer R recovers |x| (up to a constant); the same network trained with the l2 loss learns the
MMSE estimator E[x | y] instead, and with the l1 loss the posterior median.

    python -m experiments.table lpn_laplacian                 # trains the three networks (a few minutes)
    python -m experiments.table lpn_laplacian RUN_DIR ...     # runs of experiment=lpn_laplacian

Without run directories it trains three networks through the runner, one ``python -m
experiments.train experiment=lpn_laplacian data.loss=<loss>`` each, into ``<out>/runs/<loss>/``:
proximal matching for the experiment's 18k steps (``--steps``), l1 and l2 for 6k (``--contrast-steps``;
they converge to their estimators well before). With run directories it
reads their trained models (the latest checkpoint; the loss from each run's ``data.loss``).

Measured, on y in [-grid, grid] (default 4, 801 points): the maximum error of f against soft
thresholding (the target: below 0.1 for proximal matching), against the MMSE estimator and against
the posterior median (both computed by quadrature of the posterior on a fine grid). And the learned
regularizer, evaluated by solving the convex conjugate problem (``LPN.regularizer``) at x in
[-x_max, x_max] (default 3; about the image of [-4, 4] under soft thresholding), against |x|, both
shifted to 0 at x = 0: its maximum error. The PNG shows f, R and the oracles.
"""
from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
from typing import Any

import numpy as np

from experiments.build import restore_trained
from experiments.errors import UserInputError
from experiments.tables.common import Table, _pyplot, existing_dir, format_number, markdown_table

PAPER = "Fang, Buchanan, Sulam, ICLR 2024, arXiv 2310.14344, Fig. 1"
LOSSES = ("proximal_matching", "l1", "l2")
ORACLES = ("soft threshold (MAP)", "posterior median", "MMSE E[x|y]")
EXPECTED = {"proximal_matching": ORACLES[0], "l1": ORACLES[1], "l2": ORACLES[2]}


# -- run directories: train through the runner, load the trained model -----------------------------------

def train_run(experiment: str, overrides: list[str], run_dir: pathlib.Path) -> pathlib.Path:
    """``python -m experiments.train experiment=<experiment> <overrides>`` into ``run_dir`` (a subprocess)."""
    cmd = [sys.executable, "-m", "experiments.train", f"experiment={experiment}", *overrides,
           f"hydra.run.dir={run_dir}", "trainer.progress=false"]
    print("running:", " ".join(cmd[1:]), file=sys.stderr, flush=True)
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        raise UserInputError(f"training failed (exit {done.returncode}): {' '.join(cmd[1:])}\n"
                             f"{done.stdout[-3000:]}")
    return run_dir


def load_trained(run_dir: str | pathlib.Path) -> tuple[Any, Any, Any]:
    """``(config, model, task)`` of a run directory: the model in its latest checkpoint's state; the task
    is not set up (no data generated). See ``experiments.build.restore_trained``."""
    return restore_trained(run_dir, missing="train it first (or rerun its command to finish it)")


# -- oracles -----------------------------------------------------------------------------------------------

def posterior_estimators(y: np.ndarray, scale: float = 1.0, sigma: float = 1.0,
                         half_width: float = 30.0, points: int = 24001) -> tuple[np.ndarray, np.ndarray]:
    """(MMSE E[x | y], posterior median) for x ~ Laplace(0, scale), y = x + N(0, sigma^2), by quadrature.

    The posterior density exp(-|x| / b - (y - x)^2 / 2 sigma^2) on a uniform grid of ``points`` over
    [-half_width, half_width] (trapezoid weights); the median by interpolating the cumulative
    distribution taken at the grid points (mass of the cells before, plus half the point's own).
    """
    x = np.linspace(-half_width, half_width, points)
    logp = -np.abs(x)[None, :] / scale - (y[:, None] - x[None, :]) ** 2 / (2 * sigma ** 2)   # (ny, nx)
    p = np.exp(logp - logp.max(1, keepdims=True))
    p[:, 0] *= 0.5
    p[:, -1] *= 0.5
    p /= p.sum(1, keepdims=True)
    mmse = p @ x
    cdf = np.cumsum(p, 1) - 0.5 * p
    median = np.array([np.interp(0.5, c, x) for c in cdf])
    return mmse, median


def soft_threshold(y: np.ndarray, threshold: float = 1.0) -> np.ndarray:
    return np.sign(y) * np.maximum(np.abs(y) - threshold, 0.0)


# -- the table ---------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="*", help="run directories of experiment=lpn_laplacian (default: train "
                                                "one per loss here)")
    parser.add_argument("--steps", type=int, default=None, help="trainer.max_steps of the proximal-matching "
                                                                "run trained here (default: the experiment's)")
    parser.add_argument("--contrast-steps", type=int, default=6000,
                        help="trainer.max_steps of the l1 and l2 runs trained here (default 6000)")
    parser.add_argument("--grid", type=float, default=4.0, help="y in [-grid, grid] (default 4)")
    parser.add_argument("--x-max", type=float, default=3.0, help="R evaluated for x in [-x_max, x_max] "
                                                                 "(default 3)")
    parser.add_argument("--workdir", type=pathlib.Path, default=None,
                        help="where the runs trained here go (default: <out>/runs)")


def evaluate(model, y: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    """f on the y grid; R (by the conjugate problem, shifted to R(0) = 0) and its inversion residual on x."""
    import jax.numpy as jnp

    f = np.asarray(model(jnp.asarray(y[:, None], jnp.float32)))[:, 0]
    xs = np.concatenate([[0.0], x]).astype(np.float32)[:, None]
    r, _, residual = model.regularizer(jnp.asarray(xs), max_steps=300, tol=1e-6)
    r = np.asarray(r, np.float64)
    return {"f": f, "R": r[1:] - r[0], "residual": np.asarray(residual)[1:]}


def build(args: argparse.Namespace) -> Table:
    if args.grid <= 0 or args.x_max <= 0:
        raise UserInputError(f"--grid and --x-max must be positive, got {args.grid}, {args.x_max}")
    if args.steps is not None and args.steps < 1:
        raise UserInputError(f"--steps must be at least 1, got {args.steps}")
    if args.runs:
        run_dirs = [existing_dir(r, "run directory") for r in args.runs]
        source = "read from the run directories given"
    else:
        out = getattr(args, "out", None)
        workdir = args.workdir or (out / "runs" if out is not None else pathlib.Path("outputs/lpn_laplacian_runs"))
        steps = {"proximal_matching": args.steps, "l1": args.contrast_steps, "l2": args.contrast_steps}
        run_dirs = [train_run("lpn_laplacian", [f"data.loss={loss}"] + ([] if steps[loss] is None else
                                                                         [f"trainer.max_steps={steps[loss]}"]),
                              workdir / loss) for loss in LOSSES]
        source = f"trained here through the runner into {workdir}"

    y = np.linspace(-args.grid, args.grid, 801)
    x = np.linspace(-args.x_max, args.x_max, 121)
    oracle = dict(zip(ORACLES, (soft_threshold(y, 1.0), *posterior_estimators(y)[::-1])))
    rows, csv_rows, curves = [], [], []
    for run_dir in run_dirs:
        cfg, model, task = load_trained(run_dir)
        loss = str(cfg.data.loss)
        sigma, scale = float(cfg.data.sigma), float(cfg.data.source.scale)
        if (sigma, scale) != (1.0, 1.0):
            raise UserInputError(f"{run_dir}: the oracles here are for sigma = 1, b = 1; the run has "
                                 f"sigma = {sigma}, b = {scale}")
        ev = evaluate(model, y, x)
        errors = {name: float(np.max(np.abs(ev["f"] - o))) for name, o in oracle.items()}
        r_err = float(np.max(np.abs(ev["R"] - np.abs(x))))
        closest = min(errors, key=errors.get)
        steps = int(cfg.trainer.max_steps) if cfg.trainer.max_steps is not None else None
        rows.append([loss, str(steps), *(format_number(errors[o]) for o in ORACLES), format_number(r_err),
                     f"{float(np.max(ev['residual'])):.1e}", closest,
                     "yes" if closest == EXPECTED.get(loss) else "no"])
        csv_rows.append({"run": str(run_dir), "loss": loss, "steps": steps,
                         **{f"max_err_{o.split()[0].lower()}": errors[o] for o in ORACLES},
                         "max_err_R_vs_abs": r_err, "max_inversion_residual": float(np.max(ev["residual"])),
                         "closest": closest, "as_paper": closest == EXPECTED.get(loss)})
        curves.append((loss, ev))

    header = ["loss", "steps", "max |f − soft thr.|", "max |f − median|", "max |f − MMSE|",
              f"max |R − abs| on [−{args.x_max:g}, {args.x_max:g}]", "inversion residual", "closest oracle",
              "as the paper"]
    md = "\n".join([
        f"## LPN, 1-D Laplacian toy ({PAPER}): measured",
        "",
        f"x ~ Laplace(0, 1), y = x + N(0, 1). Errors are maxima over y in [−{args.grid:g}, {args.grid:g}] "
        f"(801 points). R is evaluated by the convex conjugate problem (L-BFGS) and shifted to R(0) = 0. "
        f"Paper (figure only): proximal matching → soft thresholding at 1 and R = |x|; l2 → MMSE; "
        f"l1 → posterior median. Target: max |f − soft thr.| < 0.1 for proximal matching. Models {source}.",
        "",
        markdown_table(header, rows)])

    def plot(path: pathlib.Path) -> None:
        plt = _pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        styles = {"soft threshold (MAP)": "k--", "posterior median": "k:", "MMSE E[x|y]": "k-."}
        for name, o in oracle.items():
            axes[0].plot(y, o, styles[name], lw=1.2, label=name)
        for loss, ev in curves:
            axes[0].plot(y, ev["f"], lw=1.8, alpha=0.8, label=f"LPN, {loss}")
            axes[1].plot(x, ev["R"], lw=1.8, alpha=0.8, label=f"LPN, {loss}")
        axes[1].plot(x, np.abs(x), "k--", lw=1.2, label="|x|")
        axes[0].set(xlabel="y", ylabel="f(y)", title="learned prox")
        axes[1].set(xlabel="x", ylabel="R(x) − R(0)", title="learned regularizer (conjugate solve)")
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    columns = ["run", "loss", "steps", "max_err_soft", "max_err_posterior", "max_err_mmse", "max_err_R_vs_abs",
               "max_inversion_residual", "closest", "as_paper"]
    return Table("lpn_laplacian", md, columns, csv_rows, plot)
