"""LPN paper, inverse problems and the learned prior, at CPU scale on scikit-learn's digits (16 x 16).

Paper: Z. Fang, S. Buchanan, J. Sulam, "What's in a Prior? Learned Proximal Networks for Inverse
Problems", ICLR 2024 (arXiv 2310.14344), Sec. 5 (CelebA deblurring, Table 1; Mayo sparse-view CT,
Table 2; MNIST prior study, figures only), after the authors' code ZhenghanFang/learned-proximal-networks
(exps/celeba/test.py, exps/mayoct/, the perturbations of lpn/utils/perturb.py). The paper's images and
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
import dataclasses
import functools
import pathlib
import sys
from typing import Any, Callable

import numpy as np

from experiments.errors import UserInputError
from experiments.tables.figures import finish_figure, label_axes, pyplot
from experiments.tables.output import Table, markdown_table
from experiments.tables.runs import existing_dir, load_trained, train_run

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
    import flax.nnx as nnx
    import jax.numpy as jnp
    from scipy.ndimage import gaussian_filter

    # One compilation of the L-BFGS conjugate solve for all families (same batch shape), not one each.
    regularizer = nnx.jit(lambda m, b: m.regularizer(b, max_steps=300, tol=1e-5))

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
        r, _, residual = regularizer(model, batch)
        out[family] = {"levels": np.asarray(levels), "R": np.asarray(r).reshape(len(levels), -1),
                       "residual": np.asarray(residual).reshape(len(levels), -1)}
    return out


# -- the table -----------------------------------------------------------------------------------------------

def _resolve_run(args) -> tuple[pathlib.Path, str]:
    """The run directory given, or one of experiment=lpn_digits trained here; and where it came from."""
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


def reconstruct(model, x: np.ndarray, val: np.ndarray, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Both problems on the digits ``x`` (B, 16, 16), each method's parameter first tuned on as many
    validation digits: ``{problem: _solve_all's output, with "tuned": the chosen parameters}``."""
    prox = lambda v: model(v[..., None])[..., 0]                        # (B, H, W) -> (B, H, W)
    results = {}
    for pi, (pname, problem) in enumerate(_problems(args).items()):
        cache: dict = {}
        tuned = _solve_all(prox, problem, val[:len(x)], seed=100 + pi, n_iters=args.iters, cache=cache)
        res = _solve_all(prox, problem, x, seed=pi, n_iters=args.iters, params=tuned["params"], cache=cache)
        results[pname] = {**res, "tuned": tuned["params"]}
    return results


def prior_verdict(prior: dict[str, dict[str, np.ndarray]]) -> dict[str, bool]:
    """The paper's claims on the prior study: R increases with noise and with blur; the mixing path is
    higher inside than at both ends."""
    mixing = prior["mixing"]["R"].mean(1)
    return {"noise": bool(np.all(np.diff(prior["noise"]["R"].mean(1)) > 0)),
            "blur": bool(np.all(np.diff(prior["blur"]["R"].mean(1)) > 0)),
            "mixing": bool(mixing[1:-1].max() > max(mixing[0], mixing[-1]))}


@dataclasses.dataclass
class InverseStudy:
    """The records of the table: where the LPN came from, the settings, the truth, the reconstructions
    and their scores, and the prior study."""

    source: str
    run_dir: pathlib.Path
    settings: dict[str, Any]                          # the arguments: images, iters, blur_sigma, ...
    truth: np.ndarray                                 # the test digits (images, 16, 16)
    results: dict[str, dict[str, Any]]                # reconstruct()
    scores: list[dict[str, Any]]                      # per (problem, method): PSNR / SSIM, parameter, last step
    shown_psnr: dict[str, dict[str, list[float]]]     # PSNR of the images the figure shows
    prior: dict[str, dict[str, np.ndarray]]           # prior_study()
    verdict: dict[str, bool]                          # prior_verdict()


def _scores(results: dict[str, dict[str, Any]], x: np.ndarray) -> list[dict[str, Any]]:
    """Per (problem, method): PSNR and SSIM (mean, std over the digits), the parameter, the mean last step."""
    import jax.numpy as jnp

    from lax_models.inverse_problems import psnr, ssim

    xj = jnp.asarray(x, jnp.float32)
    scores = []
    for pname, res in results.items():
        for method, rec in res["recon"].items():
            rec = jnp.clip(rec, 0, 1)
            p, s = np.asarray(psnr(rec, xj)), np.asarray(ssim(rec, xj))
            hist = res["history"].get(method)
            scores.append({"problem": pname, "method": method, "parameter": res["tuned"].get(method),
                           "psnr_mean": float(p.mean()), "psnr_std": float(p.std()),
                           "ssim_mean": float(s.mean()), "ssim_std": float(s.std()),
                           "last_step_norm": None if hist is None else float(np.mean(hist[-1]))})
    return scores


def _shown_psnr(results: dict[str, dict[str, Any]], x: np.ndarray, k: int) -> dict[str, dict[str, list[float]]]:
    """PSNR of each of the first ``k`` reconstructions, one image at a time (the figure's titles)."""
    import jax.numpy as jnp

    from lax_models.inverse_problems import psnr

    return {pname: {method: [float(psnr(jnp.asarray(np.clip(np.asarray(rec[j]), 0, 1)[None]),
                                        jnp.asarray(x[j:j + 1]))[0]) for j in range(k)]
                    for method, rec in res["recon"].items()} for pname, res in results.items()}


def collect(args: argparse.Namespace, source: str, run_dir: pathlib.Path, x: np.ndarray,
            results: dict[str, dict[str, Any]], prior: dict[str, dict[str, np.ndarray]]) -> InverseStudy:
    """The table's records from the computed reconstructions (``reconstruct``) of the digits ``x`` and
    the prior study (``prior_study``)."""
    settings = {k: getattr(args, k) for k in ("images", "iters", "blur_sigma", "blur_noise", "views", "ct_noise",
                                              "prior_images")}
    return InverseStudy(source=source, run_dir=run_dir, settings=settings, truth=x, results=results,
                        scores=_scores(results, x), shown_psnr=_shown_psnr(results, x, min(4, args.images)),
                        prior=prior, verdict=prior_verdict(prior))


def _reconstruction_rows(study: InverseStudy) -> tuple[list[list[str]], list[dict]]:
    rows, csv_rows = [], []
    for r in study.scores:
        param, last = r["parameter"], r["last_step_norm"]
        rows.append([r["problem"], r["method"], "" if param is None else f"{param:g}",
                     f"{r['psnr_mean']:.2f} ± {r['psnr_std']:.2f}", f"{r['ssim_mean']:.3f} ± {r['ssim_std']:.3f}",
                     "" if last is None else f"{last:.1e}"])
        csv_rows.append({"table": "reconstruction", **r})
    return rows, csv_rows


def _prior_rows(study: InverseStudy) -> tuple[list[list[str]], list[dict]]:
    rows, csv_rows = [], []
    for family, d in study.prior.items():
        for level, m, sd, res in zip(d["levels"], d["R"].mean(1), d["R"].std(1), d["residual"].max(1)):
            rows.append([family, f"{level:g}", f"{m:.3f} ± {sd:.3f}", f"{res:.1e}"])
            csv_rows.append({"table": "prior", "problem": family, "method": "R", "parameter": float(level),
                             "R_mean": float(m), "R_std": float(sd), "inversion_residual": float(res)})
    return rows, csv_rows


def render(study: InverseStudy) -> Table:
    """The reconstruction table (PSNR / SSIM per problem and method) and the prior study with its verdict."""
    st, verdict = study.settings, study.verdict
    rows, csv_rows = _reconstruction_rows(study)
    prior_rows, prior_csv = _prior_rows(study)
    csv_rows += prior_csv + [{"table": "verdict", "problem": "prior", "method": "as the paper",
                              **{f"{k}_as_paper": v for k, v in verdict.items()}}]
    yes = {k: "yes" if v else "no" for k, v in verdict.items()}
    header = ["problem", "method", "parameter", "PSNR (dB)", "SSIM", "last ||x_k+1 − x_k||"]
    md = "\n".join([
        f"## LPN inverse problems on 16 × 16 digits ({PAPER}): measured",
        "",
        f"LPN {study.source} ({study.run_dir}). {st['images']} test digits; deblurring: Gaussian blur "
        f"σ = {st['blur_sigma']:g}, noise {st['blur_noise']:g}; CT: {st['views']} views, noise {st['ct_noise']:g}. "
        f"PnP: {st['iters']} iterations. Parameters chosen by PSNR on {st['images']} validation digits (eta in units "
        f"of 1/||A||², rho and the TV weight in units of ||A||²). Mean ± std over the digits. The paper's own numbers "
        f"are for CelebA / Mayo-CT and are not comparable (Fang, Buchanan, Sulam, ICLR 2024, arXiv 2310.14344, "
        f"Tables 1-2).",
        "",
        markdown_table(header, rows),
        "",
        f"### Prior study: the learned R on {st['prior_images']} test digits (conjugate solve, L-BFGS)",
        "",
        f"Paper (MNIST, figure only): R increases with noise and with blur; non-monotone along the mixing "
        f"path. Here: R increases with noise: {yes['noise']}; with blur: {yes['blur']}; mixing path higher "
        f"inside than at both ends: {yes['mixing']}.",
        "",
        markdown_table(["perturbation", "level", "R (mean ± std)", "max inversion residual"], prior_rows)])
    columns = ["table", "problem", "method", "parameter", "psnr_mean", "psnr_std", "ssim_mean", "ssim_std",
               "last_step_norm", "R_mean", "R_std", "inversion_residual", "noise_as_paper", "blur_as_paper",
               "mixing_as_paper"]
    return Table("lpn_inverse", md, columns, csv_rows)


def _plot_images(study: InverseStudy, path: pathlib.Path) -> pathlib.Path:
    """The truth and every method's reconstruction of the first digits, PSNR in the titles."""
    plt, x, results = pyplot(), study.truth, study.results
    k = min(4, study.settings["images"])
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
                row[c].imshow(np.clip(np.asarray(rec[j]), 0, 1), cmap="gray", vmin=0, vmax=1)
                p = study.shown_psnr[pname][method][j]
                row[c].set_title(f"{pname}: {method}\n{p:.1f} dB" if j == 0 else f"{p:.1f} dB", fontsize=7)
    return finish_figure(fig, path, dpi=90)


def _plot_convergence(study: InverseStudy, path: pathlib.Path) -> pathlib.Path:
    """||x_{k+1} - x_k|| against k for the PnP methods: mean over the digits, min-max band."""
    results = study.results
    fig, axes = pyplot().subplots(1, len(results), figsize=(5 * len(results), 3.8), squeeze=False)
    for ax, (pname, res) in zip(axes[0], results.items()):
        for method, hist in res["history"].items():
            it = np.arange(1, hist.shape[0] + 1)
            ax.semilogy(it, hist.mean(1), label=f"{method} (mean)")
            ax.fill_between(it, hist.min(1), hist.max(1), alpha=0.2)
        label_axes(ax, xlabel="iteration k", ylabel="||x_k+1 − x_k||", title=pname, grid=dict(alpha=0.3),
                   legend=dict(fontsize=8))
    return finish_figure(fig, path)


def _plot_prior(study: InverseStudy, path: pathlib.Path) -> pathlib.Path:
    """Violins of R per perturbation level, one panel per family."""
    fig, axes = pyplot().subplots(1, 3, figsize=(13, 3.8))
    for ax, (family, d) in zip(axes, study.prior.items()):
        ax.violinplot(list(d["R"]), positions=np.arange(len(d["levels"])), showmeans=True)
        ax.set_xticks(np.arange(len(d["levels"])), [f"{v:g}" for v in d["levels"]])
        label_axes(ax, xlabel={"noise": "noise σ", "blur": "blur σ", "mixing": "λ"}[family], ylabel="R(x)",
                   title=f"learned R: {family}", grid=dict(alpha=0.3))
    return finish_figure(fig, path)


def plot(study: InverseStudy, out_dir: pathlib.Path) -> list[pathlib.Path]:
    """``lpn_inverse.png`` (images), ``lpn_inverse_convergence.png``, ``lpn_inverse_prior.png``."""
    return [_plot_images(study, out_dir / "lpn_inverse.png"),
            _plot_convergence(study, out_dir / "lpn_inverse_convergence.png"),
            _plot_prior(study, out_dir / "lpn_inverse_prior.png")]


def _check_arguments(args: argparse.Namespace) -> None:
    for name in ("images", "iters", "views", "prior_images"):
        if getattr(args, name) < 1:
            raise UserInputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not (args.blur_sigma > 0 and args.blur_noise >= 0 and args.ct_noise >= 0):
        raise UserInputError("--blur-sigma must be > 0 and --blur-noise, --ct-noise >= 0")


def _load_model_and_digits(run_dir: pathlib.Path, args: argparse.Namespace) -> tuple[Any, np.ndarray, np.ndarray]:
    """The run's ConvLPN and the test / validation digits (N, 16, 16) of its data."""
    _, model, task = load_trained(run_dir)
    if type(model).__name__ != "ConvLPN" or int(model.image_size) != 16 or int(model.in_channels) != 1:
        raise UserInputError(f"{run_dir}: lpn_inverse needs a ConvLPN on 16 x 16 grey images "
                             f"(a run of experiment=lpn_digits), got {type(model).__name__}")
    task.source.load(progress=False)
    test, val = task.source.split("test")[..., 0], task.source.split("val")[..., 0]
    if len(test) < max(args.images, args.prior_images):
        raise UserInputError(f"--images / --prior-images exceed the {len(test)} test digits")
    return model, test, val


def build(args: argparse.Namespace) -> Table:
    _check_arguments(args)
    run_dir, source = _resolve_run(args)
    model, test, val = _load_model_and_digits(run_dir, args)
    x = test[:args.images]
    results = reconstruct(model, x, val, args)
    prior = prior_study(model, test[:args.prior_images])
    study = collect(args, source, run_dir, x, results, prior)
    return render(study).with_plot(functools.partial(plot, study))
