"""LPN paper, 1-D Laplacian toy: the learned prox and regularizer against the truth, for three losses.

Paper: Z. Fang, S. Buchanan, J. Sulam, "What's in a Prior? Learned Proximal Networks for Inverse
Problems", ICLR 2024 (arXiv 2310.14344), Fig. 1 / 2 (``laplacian_compact.png`` on the authors' project
page, the gh-pages branch of ZhenghanFang/learned-proximal-networks). The paper shows curves and
prints no number (the notebooks exps/laplacian/laplacian_{train,test}.ipynb ship without outputs):
everything here is *measured*. Its claim, checked below: with x ~ Laplace(0, 1) and y = x + N(0, 1),
the LPN trained by proximal matching recovers the MAP denoiser, soft thresholding at sigma^2 / b = 1,
and its learned regularizer R recovers |x| (up to a constant); the same network trained with the l2
loss learns the MMSE estimator E[x | y] instead, and with the l1 loss the posterior median.

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
import dataclasses
import functools
import pathlib

import numpy as np

from experiments.errors import UserInputError
from experiments.tables.figures import finish_figure, label_axes, pyplot
from experiments.tables.formatting import format_number
from experiments.tables.output import Table, markdown_table
from experiments.tables.runs import existing_dir, load_trained, train_run

PAPER = "Fang, Buchanan, Sulam, ICLR 2024, arXiv 2310.14344, Fig. 1"
LOSSES = ("proximal_matching", "l1", "l2")
ORACLES = ("soft threshold (MAP)", "posterior median", "MMSE E[x|y]")
EXPECTED = {"proximal_matching": ORACLES[0], "l1": ORACLES[1], "l2": ORACLES[2]}


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


def resolve_runs(args: argparse.Namespace) -> tuple[list[pathlib.Path], str]:
    """The run directories given, or (none given) one per loss trained here through the runner; and
    where the models come from (for the table's text)."""
    if args.runs:
        return [existing_dir(r, "run directory") for r in args.runs], "read from the run directories given"
    out = getattr(args, "out", None)
    workdir = args.workdir or (out / "runs" if out is not None else pathlib.Path("outputs/lpn_laplacian_runs"))
    steps = {"proximal_matching": args.steps, "l1": args.contrast_steps, "l2": args.contrast_steps}
    run_dirs = [train_run("lpn_laplacian", [f"data.loss={loss}"] + ([] if steps[loss] is None else
                                                                     [f"trainer.max_steps={steps[loss]}"]),
                          workdir / loss) for loss in LOSSES]
    return run_dirs, f"trained here through the runner into {workdir}"


@dataclasses.dataclass
class Fit:
    """One trained LPN against the oracles: f and R on the grids, and their maximum errors."""

    run_dir: pathlib.Path
    loss: str
    steps: int | None
    errors: dict[str, float]          # max |f - oracle| per oracle
    r_error: float                    # max |R - |x||
    inversion_residual: float         # max residual of the conjugate solve
    closest: str                      # the oracle f is closest to
    curves: dict[str, np.ndarray]     # evaluate(): "f" on y, "R" and "residual" on x


@dataclasses.dataclass
class Study:
    """The records of the table: the grids, the oracles on y, one ``Fit`` per run."""

    y: np.ndarray
    x: np.ndarray
    oracle: dict[str, np.ndarray]
    fits: list[Fit]
    source: str
    grid: float
    x_max: float


def fit(run_dir: pathlib.Path, y: np.ndarray, x: np.ndarray, oracle: dict[str, np.ndarray]) -> Fit:
    """Restore the run's LPN and measure it against the oracles (sigma = 1, b = 1 only)."""
    cfg, model, _ = load_trained(run_dir)
    sigma, scale = float(cfg.data.sigma), float(cfg.data.source.scale)
    if (sigma, scale) != (1.0, 1.0):
        raise UserInputError(f"{run_dir}: the oracles here are for sigma = 1, b = 1; the run has "
                             f"sigma = {sigma}, b = {scale}")
    ev = evaluate(model, y, x)
    errors = {name: float(np.max(np.abs(ev["f"] - o))) for name, o in oracle.items()}
    return Fit(run_dir=run_dir, loss=str(cfg.data.loss),
               steps=int(cfg.trainer.max_steps) if cfg.trainer.max_steps is not None else None, errors=errors,
               r_error=float(np.max(np.abs(ev["R"] - np.abs(x)))),
               inversion_residual=float(np.max(ev["residual"])), closest=min(errors, key=errors.get), curves=ev)


def collect(run_dirs: list[pathlib.Path], source: str, grid: float, x_max: float) -> Study:
    """Each run's LPN measured on y in [-grid, grid] (801 points) and x in [-x_max, x_max] (121)."""
    y = np.linspace(-grid, grid, 801)
    x = np.linspace(-x_max, x_max, 121)
    oracle = dict(zip(ORACLES, (soft_threshold(y, 1.0), *posterior_estimators(y)[::-1])))
    return Study(y=y, x=x, oracle=oracle, fits=[fit(r, y, x, oracle) for r in run_dirs], source=source,
                 grid=grid, x_max=x_max)


def render(study: Study) -> Table:
    """One row per run: its errors against each oracle and against |x|, the closest oracle."""
    rows = [[f.loss, str(f.steps), *(format_number(f.errors[o]) for o in ORACLES), format_number(f.r_error),
             f"{f.inversion_residual:.1e}", f.closest, "yes" if f.closest == EXPECTED.get(f.loss) else "no"]
            for f in study.fits]
    csv_rows = [{"run": str(f.run_dir), "loss": f.loss, "steps": f.steps,
                 **{f"max_err_{o.split()[0].lower()}": f.errors[o] for o in ORACLES},
                 "max_err_R_vs_abs": f.r_error, "max_inversion_residual": f.inversion_residual,
                 "closest": f.closest, "as_paper": f.closest == EXPECTED.get(f.loss)} for f in study.fits]
    header = ["loss", "steps", "max |f − soft thr.|", "max |f − median|", "max |f − MMSE|",
              f"max |R − abs| on [−{study.x_max:g}, {study.x_max:g}]", "inversion residual", "closest oracle",
              "as the paper"]
    md = "\n".join([
        f"## LPN, 1-D Laplacian toy ({PAPER}): measured",
        "",
        f"x ~ Laplace(0, 1), y = x + N(0, 1). Errors are maxima over y in [−{study.grid:g}, {study.grid:g}] "
        f"(801 points). R is evaluated by the convex conjugate problem (L-BFGS) and shifted to R(0) = 0. "
        f"Paper (figure only): proximal matching → soft thresholding at 1 and R = |x|; l2 → MMSE; "
        f"l1 → posterior median. Target: max |f − soft thr.| < 0.1 for proximal matching. Models {study.source}.",
        "",
        markdown_table(header, rows)])
    columns = ["run", "loss", "steps", "max_err_soft", "max_err_posterior", "max_err_mmse", "max_err_R_vs_abs",
               "max_inversion_residual", "closest", "as_paper"]
    return Table("lpn_laplacian", md, columns, csv_rows)


def plot(study: Study, out_dir: pathlib.Path) -> list[pathlib.Path]:
    """``lpn_laplacian.png``: the learned prox f against the oracles, the learned R against |x|."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"soft threshold (MAP)": "k--", "posterior median": "k:", "MMSE E[x|y]": "k-."}
    for name, o in study.oracle.items():
        axes[0].plot(study.y, o, styles[name], lw=1.2, label=name)
    for f in study.fits:
        axes[0].plot(study.y, f.curves["f"], lw=1.8, alpha=0.8, label=f"LPN, {f.loss}")
        axes[1].plot(study.x, f.curves["R"], lw=1.8, alpha=0.8, label=f"LPN, {f.loss}")
    axes[1].plot(study.x, np.abs(study.x), "k--", lw=1.2, label="|x|")
    label_axes(axes[0], xlabel="y", ylabel="f(y)", title="learned prox", grid=dict(alpha=0.3),
               legend=dict(fontsize=8))
    label_axes(axes[1], xlabel="x", ylabel="R(x) − R(0)", title="learned regularizer (conjugate solve)",
               grid=dict(alpha=0.3), legend=dict(fontsize=8))
    return [finish_figure(fig, out_dir / "lpn_laplacian.png", dpi=110)]


def build(args: argparse.Namespace) -> Table:
    if args.grid <= 0 or args.x_max <= 0:
        raise UserInputError(f"--grid and --x-max must be positive, got {args.grid}, {args.x_max}")
    if args.steps is not None and args.steps < 1:
        raise UserInputError(f"--steps must be at least 1, got {args.steps}")
    study = collect(*resolve_runs(args), args.grid, args.x_max)
    return render(study).with_plot(functools.partial(plot, study))
