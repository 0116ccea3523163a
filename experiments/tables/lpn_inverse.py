"""LPN paper, inverse problems and the learned prior, at CPU scale on scikit-learn's digits (16 x 16).

Paper: Z. Fang, S. Buchanan, J. Sulam, "What's in a Prior? Learned Proximal Networks for Inverse
Problems", ICLR 2024 (arXiv 2310.14344), Sec. 5 (CelebA deblurring, Mayo sparse-view CT, MNIST prior
study; reference/lpn_cgs_optim.md 1.4-1.5, reference/tables_extra.md 2). The paper's images and
scanners are out of reach here; this table runs the same protocol on the digits the LPN of
``experiment=lpn_digits`` was trained on, so every number is *measured*, none is the paper's.

    python -m experiments.table lpn_inverse RUN_DIR      # a run of experiment=lpn_digits
    python -m experiments.table lpn_inverse              # trains one first (CPU-small, about a minute)

Without a run directory it trains ``python -m experiments.train experiment=lpn_digits
trainer.max_steps=300 data.pretrain_steps=150 data.stage_steps=50`` into ``<out>/runs/lpn_digits``
(``--steps`` changes the 300; the l1 / proximal-matching split scales with it) and says so.

Problems, on ``--images`` test digits (``y = A x + noise``, seeded):

* deblurring: periodic Gaussian blur (``--blur-sigma`` 1, kernel 5 x 5), noise ``--blur-noise`` 0.02;
* sparse-view CT: ``--views`` 8 parallel-beam views of the 16 x 16 image (pixel-driven Radon matrix,
  25 detectors), noise ``--ct-noise`` 0.1 on line integrals of order 5.

Methods: the LPN as the prox in PnP proximal gradient (``x <- f(x - eta A^T(Ax - y))``) and PnP-ADMM
(``--iters`` 30 iterations each; x0 = y for blur, x0 = FBP for CT), against TV (Chambolle-Pock, 300
iterations, box [0, 1]) and Wiener deconvolution / filtered back-projection. Each method's one
parameter (eta, rho, TV weight, Wiener noise-to-signal ratio) is picked from a small grid by PSNR on as
many validation digits. Metrics: PSNR and SSIM (Wang et al. 2004, 11 x 11 Gaussian window), data range 1.
Figures: ``lpn_inverse.png`` (images), ``lpn_inverse_convergence.png`` (||x_{k+1} - x_k|| against k),
``lpn_inverse_prior.png`` (the prior study).

Prior study (the paper's MNIST protocol): R(x) of the learned regularizer (``ConvLPN.regularizer``,
the convex conjugate solved by L-BFGS) on ``--prior-images`` test digits under Gaussian noise
sigma in {0, .05, .1, .2, .3} (clipped to [0, 1]), Gaussian blur sigma in {0, .5, 1, 2, 4}, and the
convex mixing (1 - lam) x + lam x' with x' the reversed list, lam in {0, .25, .5, .75, 1}. The paper:
R grows with the noise and the blur; along the mixing path it is non-monotone (higher in the middle).
"""
from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any, Callable

import numpy as np

from experiments.errors import UserInputError
from experiments.tables.common import Table, _pyplot, existing_dir, markdown_table

PAPER = "Fang, Buchanan, Sulam, ICLR 2024, arXiv 2310.14344, Sec. 5"
NOISE_LEVELS = (0.0, 0.05, 0.1, 0.2, 0.3)
BLUR_LEVELS = (0.0, 0.5, 1.0, 2.0, 4.0)
MIX_LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)
# the grids each method's parameter is chosen from (by PSNR on validation digits)
GRIDS = {"wiener": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1), "tv": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
         "pgd": (0.25, 0.5, 1.0, 2.0), "admm": (0.1, 0.3, 1.0, 3.0)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", nargs="?", default=None, help="run directory of experiment=lpn_digits "
                                                             "(default: train one here)")
    parser.add_argument("--steps", type=int, default=300, help="trainer.max_steps of the run trained here (300)")
    parser.add_argument("--images", type=int, default=8, help="test digits per problem (8)")
    parser.add_argument("--iters", type=int, default=30, help="PnP iterations (30)")
    parser.add_argument("--blur-sigma", type=float, default=1.0, help="Gaussian blur width in pixels (1)")
    parser.add_argument("--blur-noise", type=float, default=0.02, help="noise std of the blurred images (0.02)")
    parser.add_argument("--views", type=int, default=8, help="CT views in [0, pi) (8)")
    parser.add_argument("--ct-noise", type=float, default=0.1, help="noise std of the CT line integrals (0.1)")
    parser.add_argument("--prior-images", type=int, default=20, help="test digits of the prior study (20)")
    parser.add_argument("--workdir", type=pathlib.Path, default=None,
                        help="where a run trained here goes (default: <out>/runs)")


# -- the problems --------------------------------------------------------------------------------------------

def _problems(args) -> dict[str, Any]:
    from lax_models.inverse_problems import blur_operator, gaussian_kernel, operator_norm, radon_operator

    size = 16
    blur = blur_operator((size, size), gaussian_kernel(args.blur_sigma))
    ct = radon_operator(size, args.views)
    return {"deblurring": {"op": blur, "noise": args.blur_noise, "norm2": operator_norm(blur) ** 2,
                           "baseline": "Wiener"},
            "sparse-view CT": {"op": ct, "noise": args.ct_noise, "norm2": operator_norm(ct) ** 2,
                               "baseline": "FBP"}}


def _solve_all(prox: Callable, problem: dict, x: np.ndarray, seed: int, n_iters: int,
               params: dict[str, float] | None = None, cache: dict | None = None) -> dict[str, Any]:
    """Every method on images x (B, H, W): reconstructions, and the PnP histories. ``params`` fixes each
    method's parameter; None picks it from ``GRIDS`` by mean PSNR on these images."""
    import jax
    import jax.numpy as jnp

    from lax_models.inverse_problems import (filtered_back_projection, pnp_admm, pnp_pgd, psnr, tv_reconstruct,
                                             wiener_deconvolve)

    op, norm2 = problem["op"], problem["norm2"]
    rng = np.random.default_rng(seed)
    xj = jnp.asarray(x, jnp.float32)
    clean = op(xj)
    y = clean + jnp.asarray(problem["noise"] * rng.standard_normal(clean.shape), jnp.float32)
    is_blur = op.transfer is not None
    x0 = y if is_blur else jnp.clip(filtered_back_projection(op, y), 0.0, 1.0)
    cache = {} if cache is None else cache           # jitted solvers, reused across calls of one shape
    if not cache:
        cache["pgd"] = jax.jit(lambda y, x0, eta: pnp_pgd(op, y, prox, x0, eta=eta / norm2, n_iters=n_iters))
        cache["admm"] = jax.jit(lambda y, x0, rho: pnp_admm(op, y, prox, x0, rho=rho * norm2, n_iters=n_iters,
                                                            cg_iters=20))
        cache["tv"] = jax.jit(lambda y, lam: tv_reconstruct(op, y, lam * norm2, n_iters=300,
                                                            op_norm=float(np.sqrt(norm2))))
    pgd = lambda eta: cache["pgd"](y, x0, eta)
    admm = lambda rho: cache["admm"](y, x0, rho)
    tv = lambda lam: cache["tv"](y, lam)
    runs = {"TV": ("tv", lambda p: (tv(p), None))}
    if is_blur:
        runs["Wiener"] = ("wiener", lambda p: (jnp.clip(wiener_deconvolve(op, y, p), 0, 1), None))
    runs["LPN PnP-PGD"] = ("pgd", lambda p: pgd(p))
    runs["LPN PnP-ADMM"] = ("admm", lambda p: admm(p))
    out = {"y": y, "x0": x0, "recon": {}, "history": {}, "params": {}}
    out["recon"]["FBP" if not is_blur else "blurred"] = x0
    for name, (key, fn) in runs.items():
        grid = GRIDS[key] if params is None else (params[name],)
        best = None
        for p in grid:
            rec, hist = fn(jnp.asarray(p, jnp.float32))
            score = float(jnp.mean(psnr(jnp.clip(rec, 0, 1), xj)))
            if best is None or score > best[0]:
                best = (score, p, rec, hist)
        _, p, rec, hist = best
        out["params"][name], out["recon"][name] = p, rec
        if hist is not None:
            out["history"][name] = np.asarray(hist["residual"])          # (iters, B)
    return out


# -- the prior study -----------------------------------------------------------------------------------------

def prior_study(model, x: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """R under the three perturbation families: {family: {"levels", "R" (levels, B), "residual"}}."""
    import jax.numpy as jnp
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    families = {
        "noise": (NOISE_LEVELS, [np.clip(x + s * rng.standard_normal(x.shape), 0, 1) for s in NOISE_LEVELS]),
        "blur": (BLUR_LEVELS, [x if s == 0 else np.stack([gaussian_filter(im, s, mode="reflect") for im in x])
                               for s in BLUR_LEVELS]),
        "mixing": (MIX_LEVELS, [(1 - lam) * x + lam * x[::-1] for lam in MIX_LEVELS]),
    }
    out = {}
    for family, (levels, images) in families.items():
        batch = jnp.asarray(np.concatenate(images)[..., None], jnp.float32)       # (levels * B, H, W, 1)
        r, _, residual = model.regularizer(batch, max_steps=300, tol=1e-5)
        out[family] = {"levels": np.asarray(levels), "R": np.asarray(r).reshape(len(levels), -1),
                       "residual": np.asarray(residual).reshape(len(levels), -1)}
    return out


# -- the table -----------------------------------------------------------------------------------------------

def _resolve_run(args) -> tuple[pathlib.Path, str]:
    from experiments.tables.lpn_laplacian import train_run

    if args.run is not None:
        return existing_dir(args.run, "run directory"), "read from the run directory given"
    if args.steps < 2:
        raise UserInputError(f"--steps must be at least 2, got {args.steps}")
    out = getattr(args, "out", None)
    workdir = args.workdir or (out / "runs" if out is not None else pathlib.Path("outputs/lpn_inverse_runs"))
    run_dir = workdir / "lpn_digits"
    overrides = [f"trainer.max_steps={args.steps}", f"data.pretrain_steps={args.steps // 2}",
                 f"data.stage_steps={max(1, args.steps // 6)}"]
    print(f"no run directory given: training experiment=lpn_digits {' '.join(overrides)} into {run_dir}",
          file=sys.stderr, flush=True)
    return train_run("lpn_digits", overrides, run_dir), f"trained here ({' '.join(overrides)}) into {run_dir}"


def build(args: argparse.Namespace) -> Table:
    from experiments.tables.lpn_laplacian import load_trained

    for name in ("images", "iters", "views", "prior_images"):
        if getattr(args, name) < 1:
            raise UserInputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not (args.blur_sigma > 0 and args.blur_noise >= 0 and args.ct_noise >= 0):
        raise UserInputError("--blur-sigma must be > 0 and --blur-noise, --ct-noise >= 0")
    run_dir, source = _resolve_run(args)
    cfg, model, task = load_trained(run_dir)
    if type(model).__name__ != "ConvLPN" or int(model.image_size) != 16 or int(model.in_channels) != 1:
        raise UserInputError(f"{run_dir}: lpn_inverse needs a ConvLPN on 16 x 16 grey images "
                             f"(a run of experiment=lpn_digits), got {type(model).__name__}")
    task.source.load(progress=False)
    test, val = task.source.split("test")[..., 0], task.source.split("val")[..., 0]
    if len(test) < max(args.images, args.prior_images):
        raise UserInputError(f"--images / --prior-images exceed the {len(test)} test digits")
    return build_from_model(model, test, val, args, source, run_dir)


def build_from_model(model, test: np.ndarray, val: np.ndarray, args, source: str, run_dir) -> Table:
    """The table for a trained ``model`` (ConvLPN), test / validation digits (N, 16, 16)."""
    import jax.numpy as jnp

    from lax_models.inverse_problems import psnr, ssim

    prox = lambda v: model(v[..., None])[..., 0]                        # (B, H, W) -> (B, H, W)
    x = test[:args.images]
    results, rows, csv_rows = {}, [], []
    for pi, (pname, problem) in enumerate(_problems(args).items()):
        cache: dict = {}
        tuned = _solve_all(prox, problem, val[:len(x)], seed=100 + pi, n_iters=args.iters, cache=cache)
        res = _solve_all(prox, problem, x, seed=pi, n_iters=args.iters, params=tuned["params"], cache=cache)
        results[pname] = res
        xj = jnp.asarray(x, jnp.float32)
        for method, rec in res["recon"].items():
            rec = jnp.clip(rec, 0, 1)
            p, s = np.asarray(psnr(rec, xj)), np.asarray(ssim(rec, xj))
            param = tuned["params"].get(method)
            hist = res["history"].get(method)
            last = None if hist is None else float(np.mean(hist[-1]))
            rows.append([pname, method, "" if param is None else f"{param:g}", f"{p.mean():.2f} ± {p.std():.2f}",
                         f"{s.mean():.3f} ± {s.std():.3f}", "" if last is None else f"{last:.1e}"])
            csv_rows.append({"table": "reconstruction", "problem": pname, "method": method, "parameter": param,
                             "psnr_mean": float(p.mean()), "psnr_std": float(p.std()),
                             "ssim_mean": float(s.mean()), "ssim_std": float(s.std()), "last_step_norm": last})

    prior = prior_study(model, test[:args.prior_images])
    prior_rows = []
    for family, d in prior.items():
        means = d["R"].mean(1)
        for level, m, sd, res in zip(d["levels"], means, d["R"].std(1), d["residual"].max(1)):
            prior_rows.append([family, f"{level:g}", f"{m:.3f} ± {sd:.3f}", f"{res:.1e}"])
            csv_rows.append({"table": "prior", "problem": family, "method": "R", "parameter": float(level),
                             "R_mean": float(m), "R_std": float(sd), "inversion_residual": float(res)})
    verdict = {
        "noise": bool(np.all(np.diff(prior["noise"]["R"].mean(1)) > 0)),
        "blur": bool(np.all(np.diff(prior["blur"]["R"].mean(1)) > 0)),
        "mixing": bool(prior["mixing"]["R"].mean(1)[1:-1].max()
                       > max(prior["mixing"]["R"].mean(1)[0], prior["mixing"]["R"].mean(1)[-1])),
    }
    csv_rows.append({"table": "verdict", "problem": "prior", "method": "as the paper",
                     **{f"{k}_as_paper": v for k, v in verdict.items()}})

    header = ["problem", "method", "parameter", "PSNR (dB)", "SSIM", "last ||x_k+1 − x_k||"]
    md = "\n".join([
        f"## LPN inverse problems on 16 × 16 digits ({PAPER}): measured",
        "",
        f"LPN {source} ({run_dir}). {args.images} test digits; deblurring: Gaussian blur σ = {args.blur_sigma:g}, "
        f"noise {args.blur_noise:g}; CT: {args.views} views, noise {args.ct_noise:g}. PnP: {args.iters} iterations. "
        f"Parameters chosen by PSNR on {args.images} validation digits (eta in units of 1/||A||², rho and the TV weight "
        f"in units of ||A||²). Mean ± std over the digits. The paper's own numbers are for CelebA / Mayo-CT "
        f"and are not comparable (reference/tables_extra.md 2).",
        "",
        markdown_table(header, rows),
        "",
        f"### Prior study: the learned R on {args.prior_images} test digits (conjugate solve, L-BFGS)",
        "",
        f"Paper (MNIST, figure only): R increases with noise and with blur; non-monotone along the mixing "
        f"path. Here: R increases with noise: {'yes' if verdict['noise'] else 'no'}; with blur: "
        f"{'yes' if verdict['blur'] else 'no'}; mixing path higher inside than at both ends: "
        f"{'yes' if verdict['mixing'] else 'no'}.",
        "",
        markdown_table(["perturbation", "level", "R (mean ± std)", "max inversion residual"], prior_rows)])

    def plot(path: pathlib.Path) -> None:
        plt = _pyplot()
        k = min(4, args.images)
        methods = [(p, m) for p, r in results.items() for m in r["recon"]]
        fig, axes = plt.subplots(len(results) * k, 1 + max(len(r["recon"]) for r in results.values()),
                                 figsize=(12, 2 * len(results) * k), squeeze=False)
        for ax in axes.ravel():
            ax.set_xticks([])
            ax.set_yticks([])
            ax.axis("off")
        for pi, (pname, res) in enumerate(results.items()):
            for j in range(k):
                row = axes[pi * k + j]
                row[0].imshow(x[j], cmap="gray", vmin=0, vmax=1)
                row[0].set_title("truth" if j == 0 else "", fontsize=8)
                row[0].set_ylabel(pname, fontsize=8)
                for c, (method, rec) in enumerate(res["recon"].items(), start=1):
                    rec = np.clip(np.asarray(rec[j]), 0, 1)
                    row[c].imshow(rec, cmap="gray", vmin=0, vmax=1)
                    p = float(psnr(jnp.asarray(rec[None]), jnp.asarray(x[j:j + 1]))[0])
                    row[c].set_title(f"{pname}: {method}\n{p:.1f} dB" if j == 0 else f"{p:.1f} dB", fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)

        fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.8), squeeze=False)
        for ax, (pname, res) in zip(axes[0], results.items()):
            for method, hist in res["history"].items():
                it = np.arange(1, hist.shape[0] + 1)
                ax.semilogy(it, hist.mean(1), label=f"{method} (mean)")
                ax.fill_between(it, hist.min(1), hist.max(1), alpha=0.2)
            ax.set(xlabel="iteration k", ylabel="||x_k+1 − x_k||", title=pname)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path.with_name(path.stem + "_convergence.png"), dpi=100)
        plt.close(fig)

        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        for ax, (family, d) in zip(axes, prior.items()):
            ax.violinplot(list(d["R"]), positions=np.arange(len(d["levels"])), showmeans=True)
            ax.set_xticks(np.arange(len(d["levels"])), [f"{v:g}" for v in d["levels"]])
            ax.set(xlabel={"noise": "noise σ", "blur": "blur σ", "mixing": "λ"}[family], ylabel="R(x)",
                   title=f"learned R: {family}")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path.with_name(path.stem + "_prior.png"), dpi=100)
        plt.close(fig)
        del methods

    columns = ["table", "problem", "method", "parameter", "psnr_mean", "psnr_std", "ssim_mean", "ssim_std",
               "last_step_norm", "R_mean", "R_std", "inversion_residual", "noise_as_paper", "blur_as_paper",
               "mixing_as_paper"]
    return Table("lpn_inverse", md, columns, csv_rows, plot)
