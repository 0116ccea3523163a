"""Navier-Stokes data-generation throughput: the pseudo-spectral solver of ``operators.pde.navier_stokes``.

For each (solve resolution K, batch size b): ``jit(vmap(navier_stokes_2d))`` over ``steps`` time steps
of the GRF initial vorticities, timed after compilation (best of ``repeats``). Reported per line:
``steps_per_s`` (time steps of the whole batch per second), ``sample_steps_per_s`` (b times that), and
the extrapolation to one benchmark sample, ``ceil(t_final / dt)`` steps: ``samples_per_s`` and
``s_per_sample`` (the per-step cost does not depend on the horizon: the scan body is the same).
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.data.store import split_rng
from operators.pde.navier_stokes import navier_stokes_2d, navier_stokes_forcing, navier_stokes_grf, record_interval


def bench_ns_datagen(resolutions=(64, 128), batches=(1, 4, 16), steps: int = 100, repeats: int = 3,
                     dt: float = 1e-4, nu: float = 1e-3, t_final: float = 50.0) -> list[dict]:
    """One dict per (resolution, batch): solver throughput in float32 after compilation."""
    horizon_steps, _ = record_interval(t_final, dt, 1)
    lines = []
    for resolution in resolutions:
        forcing = jnp.asarray(navier_stokes_forcing(resolution), jnp.float32)
        run_steps, _ = record_interval(steps * dt, dt, 1)                  # ceil(steps dt / dt), as solved
        solve = jax.jit(jax.vmap(lambda w0: navier_stokes_2d(w0, forcing, nu, steps * dt, dt, 1)))
        for batch in batches:
            w0 = jnp.asarray(navier_stokes_grf(np.random.default_rng(0), batch, resolution), jnp.float32)
            t = time.perf_counter()
            jax.block_until_ready(solve(w0))                              # (b, 1, K, K)
            compile_s = time.perf_counter() - t
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                out = jax.block_until_ready(solve(w0))
                best = min(best, time.perf_counter() - t)
            if not np.all(np.isfinite(np.asarray(out))):
                raise FloatingPointError(f"the benchmark solve diverged at K={resolution}, dt={dt}")
            steps_per_s = run_steps / best
            lines.append({
                "bench": "ns_datagen", "resolution": resolution, "batch": batch, "dt": dt, "nu": nu,
                "timed_steps": run_steps, "steps_per_s": round(steps_per_s, 2),
                "sample_steps_per_s": round(batch * steps_per_s, 1), "t_final": t_final,
                "steps_per_sample": horizon_steps,
                "samples_per_s": float(f"{batch * steps_per_s / horizon_steps:.4g}"),
                "s_per_sample": round(horizon_steps / (batch * steps_per_s), 1),
                "compile_s": round(compile_s, 2), "backend": jax.default_backend(),
                "device": jax.devices()[0].device_kind, "jax": jax.__version__,
            })
    return lines


def bench_ns_accuracy(solves=("64:1e-4", "64:1e-3", "128:1e-4"), reference: str = "256:1e-4", n_samples: int = 2,
                      t_final: int = 50, nu: float = 1e-3, times=(10, 50), seed: int = 0,
                      compare_resolution: int = 64):
    """Coarser / cheaper solves against a reference solve of the same initial vorticities (float32).

    The initial fields are drawn on the reference grid (as the generator does, split "train") and strided
    to each solve grid K; every solve records t = 1..t_final. Yields one dict per solve ("K:dt") with the
    relative L2 difference to the reference at each time in ``times`` (mean over samples), both strided to
    min(K, compare_resolution) points per axis, the wall time of the solve and whether it stayed finite.
    """
    def parse(spec: str) -> tuple[int, float]:
        K, dt = spec.split(":")
        return int(K), float(dt)

    K_ref, _ = parse(reference)
    w0_ref = navier_stokes_grf(split_rng(seed, "train"), n_samples, K_ref).astype(np.float32)   # (n, K, K)

    def run(K: int, dt: float) -> tuple[np.ndarray, float]:
        if K_ref % K:
            raise ValueError(f"solve grid {K} must divide the reference grid {K_ref}")
        forcing = jnp.asarray(navier_stokes_forcing(K), jnp.float32)
        solve = jax.jit(jax.vmap(lambda w: navier_stokes_2d(w, forcing, nu, t_final, dt, int(t_final))))
        t = time.perf_counter()
        out = np.asarray(jax.block_until_ready(solve(jnp.asarray(w0_ref[:, ::K_ref // K, ::K_ref // K]))))
        return out, time.perf_counter() - t                                     # (n, T, K, K)

    ref, ref_s = run(*parse(reference))
    for spec in (reference, *solves):
        K, dt = parse(spec)
        out, wall = (ref, ref_s) if spec == reference else run(K, dt)
        s = min(K, compare_resolution)
        a, b = out[:, :, ::K // s, ::K // s], ref[:, :, ::K_ref // s, ::K_ref // s]           # (n, T, s, s)
        err = np.linalg.norm(a - b, axis=(2, 3)) / np.linalg.norm(b, axis=(2, 3))        # (n, T)
        rel = {f"rel_l2_t{t}": float(f"{np.mean(err[:, t - 1]):.3g}") for t in times}
        yield {"bench": "ns_accuracy", "solve": spec, "reference": reference, "nu": nu, "t_final": t_final,
               "n_samples": n_samples, "compared_at": s, "finite": bool(np.all(np.isfinite(out))), **rel,
               "max_abs_w_tT": float(f"{np.abs(out[:, -1]).max():.4g}"), "wall_s": round(wall, 1)}
