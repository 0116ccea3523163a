"""2-D incompressible Navier-Stokes in vorticity form on the unit torus: the FNO benchmark's data.

    w_t + u . grad(w) = nu Laplacian(w) + f,   u = (psi_y, -psi_x),   -Laplacian(psi) = w,

on [0, 1)^2 periodic, the operator w0 -> (w(., t))_{t = 1..T} (FNO, Li et al. 2021, Sec. 5.3;
reference operators.md 3.3; the scheme of the FNO repository's ``data_generation/navier_stokes/ns_2d.py``).

Initial vorticity (``random_fields.py``'s ``GaussianRF(2, K, alpha=2.5, tau=7)``): with wavenumbers
``k`` in the FFT layout ``[0, .., K/2 - 1, -K/2, .., -1]`` per axis (axis 0 is x, axis 1 is y),
``sqrt_eig_k = K^2 sqrt(2) sigma (4 pi^2 |k|^2 + tau^2)^(-alpha / 2)``, ``sigma = tau^(alpha - 1)``
(= tau^(0.5 (2 alpha - d)), d = 2), the mean mode zeroed, and
``w0 = Re ifft2(sqrt_eig * xi)``, xi complex standard normal (E|xi|^2 = 1): a draw of
``N(0, 7^3 (-Laplacian + 49 I)^-2.5)`` without its mean. Hence ``E |fft2(w0)_k|^2 = sqrt_eig_k^2 / 2``.

Forcing: ``f(x, y) = 0.1 (sin 2 pi (x + y) + cos 2 pi (x + y))`` on ``x_i = i / K``, ``y_j = j / K``.

Solver (per step of dt, all in Fourier space, ``lap = 4 pi^2 |k|^2`` with ``lap_00 := 1``):

    psi_h = w_h / lap;  q = psi_y, v = -psi_x, w_x, w_y spectrally (physical space);
    F_h   = dealias * fft2(q w_x + v w_y),  dealias = (|k_x| <= 2/3 K/2) & (|k_y| <= 2/3 K/2);
    w_h  <- (-dt F_h + dt f_h + (1 - dt nu lap / 2) w_h) / (1 + dt nu lap / 2)

(Crank-Nicolson diffusion, explicit Euler advection and forcing), ``steps = ceil(T / dt)``, a snapshot
every ``floor(steps / record_steps)`` steps. Two details of the original are kept on purpose: the
``lap_00 = 1`` also enters the Crank-Nicolson factors (the mean mode is damped by
``(1 - dt nu / 2) / (1 + dt nu / 2)`` per step), and the original's ``ifft2(...).real`` drops the
anti-Hermitian part of a derivative, i.e. the Nyquist mode of d/dx (d/dy) is zero. This module works
with real FFTs (half the work) and zeroes those Nyquist multipliers explicitly, which gives the
original's numbers to round-off (tested against a full-FFT NumPy transcription of the update).

``navier_stokes_2d`` is a pure, jittable JAX function of ``w0`` (differentiable in w0, the forcing and
nu), to be vmapped over samples; ``generate_navier_stokes`` / ``NavierStokesFlow`` make the benchmark's
data: solved at K = 256, stored at 64^2 by striding, one snapshot per unit time.

Oracles (tests): the Taylor-Green-type fields (Laplacian eigenfunctions) for which the advection
vanishes and the vorticity decays as exp(-nu |2 pi k|^2 t); a naive NumPy transcription of the
original update; the GRF's Fourier variances.
"""
from __future__ import annotations

import contextlib
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from operators.pde.darcy import DEFAULT_CACHE_DIR, split_rng
from operators.pde.store import cached_arrays

__all__ = ["NavierStokesFlow", "dealias_mask", "generate_navier_stokes", "grf_sqrt_eig", "navier_stokes_2d",
           "navier_stokes_dataset", "navier_stokes_forcing", "navier_stokes_grf", "record_interval",
           "snapshot_times", "wavenumbers"]

NAVIER_STOKES_GENERATOR_VERSION = 1
PRECISIONS = ("float32", "float64")


def _check_grid(resolution: int) -> None:
    if resolution < 4 or resolution % 2:
        raise ValueError(f"the Navier-Stokes grid needs an even number of points per axis >= 4 (the original "
                         f"asks for a power of 2); got resolution={resolution}")


def wavenumbers(resolution: int) -> np.ndarray:
    """(K,) integer wavenumbers in the original's layout ``[0, .., K/2 - 1, -K/2, .., -1]``."""
    _check_grid(resolution)
    k_max = resolution // 2
    return np.concatenate([np.arange(0, k_max), np.arange(-k_max, 0)])


def dealias_mask(resolution: int) -> np.ndarray:
    """(K, K) bool 2/3-rule mask of the original: ``|k_x| <= (2/3) K/2`` and ``|k_y| <= (2/3) K/2``."""
    k = np.abs(wavenumbers(resolution))
    k_max = math.floor(resolution / 2.0)
    keep = k <= (2.0 / 3.0) * k_max
    return keep[:, None] & keep[None, :]


def grf_sqrt_eig(resolution: int, alpha: float = 2.5, tau: float = 7.0, sigma: float | None = None) -> np.ndarray:
    """(K, K) float64 ``sqrt_eig`` of ``GaussianRF(2, K, alpha, tau)`` (module docstring), mean mode 0."""
    if sigma is None:
        sigma = tau ** (0.5 * (2 * alpha - 2))
    k = wavenumbers(resolution)
    k2 = k[:, None] ** 2 + k[None, :] ** 2                                          # (K, K): |k|^2
    sqrt_eig = resolution ** 2 * math.sqrt(2.0) * sigma * (4 * math.pi ** 2 * k2 + tau ** 2) ** (-alpha / 2.0)
    sqrt_eig[0, 0] = 0.0
    return sqrt_eig


def navier_stokes_grf(rng: np.random.Generator, n_samples: int, resolution: int, alpha: float = 2.5,
                      tau: float = 7.0) -> np.ndarray:
    """(n_samples, K, K) float64 initial vorticities, drawn one sample at a time from ``rng``.

    Sample i uses the i-th pair of (K, K) standard-normal draws (real part, imaginary part), so it does
    not depend on n_samples.
    """
    sqrt_eig = grf_sqrt_eig(resolution, alpha, tau)
    out = np.empty((n_samples, resolution, resolution))
    for i in range(n_samples):
        re_im = rng.standard_normal((2, resolution, resolution))                     # (2, K, K)
        xi = (re_im[0] + 1j * re_im[1]) / math.sqrt(2.0)                            # E|xi|^2 = 1
        out[i] = np.fft.ifft2(sqrt_eig * xi).real
    return out


def navier_stokes_forcing(resolution: int, amplitude: float = 0.1) -> np.ndarray:
    """(K, K) float64 ``amplitude (sin 2 pi (x + y) + cos 2 pi (x + y))`` on ``linspace(0, 1, K + 1)[:-1]``."""
    t = np.linspace(0.0, 1.0, resolution + 1)[:-1]
    x, y = np.meshgrid(t, t, indexing="ij")
    return amplitude * (np.sin(2 * np.pi * (x + y)) + np.cos(2 * np.pi * (x + y)))


def record_interval(t_final: float, dt: float, record_steps: int) -> tuple[int, int]:
    """(steps, record_time) of the original: ``ceil(T / dt)`` steps, a snapshot every ``floor(steps / R)``."""
    if not (t_final > 0 and dt > 0) or record_steps < 1:
        raise ValueError(f"need t_final > 0, dt > 0 and record_steps >= 1; got {t_final}, {dt}, {record_steps}")
    steps = math.ceil(t_final / dt)
    record_time = steps // record_steps
    if record_time < 1:
        raise ValueError(f"record_steps={record_steps} exceeds the {steps} time steps of t_final={t_final} with "
                         f"dt={dt}; lower record_steps or dt")
    return steps, record_time


def snapshot_times(t_final: float, dt: float, record_steps: int) -> np.ndarray:
    """(record_steps,) times of ``navier_stokes_2d``'s snapshots: ``dt * record_time * (1..R)``."""
    _, record_time = record_interval(t_final, dt, record_steps)
    return dt * record_time * np.arange(1, record_steps + 1)


def _stepper(resolution: int, forcing, nu, dt: float, real_dtype):
    """The original's time step as a function of ``w_h`` (K, K/2 + 1), real-FFT layout along y."""
    complex_dtype = jnp.result_type(real_dtype, jnp.complex64)
    k = wavenumbers(resolution).astype(np.float64)
    kx = k[:, None]                                                                 # (K, 1)
    ky = np.arange(resolution // 2 + 1, dtype=np.float64)[None, :]                  # (1, K/2 + 1)
    lap = 4 * math.pi ** 2 * (kx ** 2 + ky ** 2)                                    # (K, K/2 + 1)
    lap[0, 0] = 1.0
    # d/dx, d/dy with the Nyquist multiplier zero (what the original's .real after ifft2 leaves of it)
    dx = 2 * math.pi * 1j * np.where(np.abs(kx) == resolution // 2, 0.0, kx)        # (K, 1)
    dy = 2 * math.pi * 1j * np.where(ky == resolution // 2, 0.0, ky)                # (1, K/2 + 1)
    dealias = dealias_mask(resolution)[:, : resolution // 2 + 1]                    # (K, K/2 + 1)
    lap, dealias = jnp.asarray(lap, real_dtype), jnp.asarray(dealias, real_dtype)
    dx, dy = jnp.asarray(dx, complex_dtype), jnp.asarray(dy, complex_dtype)
    f_h = jnp.fft.rfft2(jnp.asarray(forcing, real_dtype))
    nu = jnp.asarray(nu, real_dtype)
    minus, plus = 1.0 - 0.5 * dt * nu * lap, 1.0 + 0.5 * dt * nu * lap
    shape = (resolution, resolution)

    def step(w_h):
        psi_h = w_h / lap
        # (4, K, K): q = psi_y, v = -psi_x, w_x, w_y in physical space
        q, v, w_x, w_y = jnp.fft.irfft2(jnp.stack([dy * psi_h, -dx * psi_h, dx * w_h, dy * w_h]), s=shape)
        F_h = dealias * jnp.fft.rfft2(q * w_x + v * w_y)
        return (-dt * F_h + dt * f_h + minus * w_h) / plus

    return step


def _record_chunk(step, record_time: int):
    """w_h -> (w_h after ``record_time`` steps, its vorticity (K, K) in physical space)."""
    def chunk(w_h):
        w_h, _ = jax.lax.scan(lambda c, _: (step(c), None), w_h, None, length=record_time)
        n = w_h.shape[-2]
        return w_h, jnp.fft.irfft2(w_h, s=(n, n))
    return chunk


def navier_stokes_2d(w0: jax.Array, forcing: jax.Array, nu: float, t_final: float, dt: float = 1e-4,
                     record_steps: int = 1) -> jax.Array:
    """Snapshots ``(record_steps, K, K)`` of the vorticity from ``w0`` (K, K), the original ns_2d.py scheme.

    Args:
      w0: (K, K) initial vorticity on ``x_i = i / K`` (axis 0) by ``y_j = j / K`` (axis 1), K even; its
        dtype (float32 or float64) is the computation's. vmap for a batch.
      forcing: (K, K) forcing f on the same grid (e.g. ``navier_stokes_forcing(K)``).
      nu: viscosity (may be traced: the solve is differentiable in it).
      t_final, dt: horizon T and step; ``ceil(T / dt)`` steps (static Python floats).
      record_steps: R snapshots, one every ``floor(steps / R)`` steps, i.e. at
        ``snapshot_times(T, dt, R)`` (= T/R * (1..R) when R divides the step count).

    Returns:
      (R, K, K) vorticity snapshots, dtype of w0. Jittable; reverse-mode differentiable in w0, forcing
      and nu (each chunk between snapshots is rematerialised, so memory grows with one chunk, not all steps).
    """
    w0 = jnp.asarray(w0)
    if w0.ndim != 2 or w0.shape[0] != w0.shape[1]:
        raise ValueError(f"w0 must be one square (K, K) field (vmap navier_stokes_2d over a batch); got shape "
                         f"{w0.shape}")
    resolution = w0.shape[0]
    _check_grid(resolution)
    if jnp.shape(forcing) != w0.shape:
        raise ValueError(f"forcing must have the shape of w0 {w0.shape}; got {jnp.shape(forcing)}")
    if not jnp.issubdtype(w0.dtype, jnp.floating):
        w0 = w0.astype(jnp.float32)
    _, record_time = record_interval(t_final, dt, record_steps)
    chunk = jax.checkpoint(_record_chunk(_stepper(resolution, forcing, nu, dt, w0.dtype), record_time))
    _, snapshots = jax.lax.scan(lambda w_h, _: chunk(w_h), jnp.fft.rfft2(w0), None, length=record_steps)
    return snapshots                                                                # (R, K, K)


def _check_generator(resolution: int, store_resolution: int, nu: float, t_final: float, dt: float,
                     precision: str = "float32") -> int:
    """Validate the generator's arguments; returns T (the number of unit-time snapshots)."""
    _check_grid(resolution)
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is unknown; choose one of {PRECISIONS}")
    if store_resolution < 1 or resolution % store_resolution:
        divisors = [resolution // d for d in range(1, resolution + 1) if resolution % d == 0]
        raise ValueError(f"store_resolution={store_resolution} must divide the solve grid resolution={resolution} "
                         f"(the data is stored by striding); valid values are {divisors}")
    if nu <= 0 or dt <= 0:
        raise ValueError(f"need nu > 0 and dt > 0; got nu={nu}, dt={dt}")
    if t_final < 1 or float(t_final) != int(t_final):
        raise ValueError(f"t_final must be a positive whole number (one snapshot per unit time); got {t_final}")
    record_interval(t_final, dt, int(t_final))
    return int(t_final)


def generate_navier_stokes(n_samples: int, resolution: int = 256, store_resolution: int = 64, nu: float = 1e-3,
                           t_final: float = 50, dt: float = 1e-4, alpha: float = 2.5, tau: float = 7.0,
                           seed: int = 0, split: str = "train", batch_size: int = 16,
                           progress: bool = True, precision: str = "float32") -> dict[str, np.ndarray]:
    """n samples of the benchmark, solved in batches at K = ``resolution``, stored at s by striding.

    Initial fields come one at a time from ``split_rng(seed, split)`` (sample i does not depend on
    n_samples); they are solved ``batch_size`` at a time (``jax.vmap``), which changes nothing in the data
    beyond float32 round-off. The progress bar advances once per unit time of each batch.

    ``precision`` is the solve's: "float32" as the original (torch float32); "float64" removes its
    round-off in the Crank-Nicolson factors ``1 +- dt nu lap / 2``, which at dt = 1e-4 is the larger
    error (measured at 64^2, nu = 1e-3, T = 10: 1.8e-3 relative L2 against float64, vs 3e-5 for the
    dt = 1e-3 discretisation). The stored arrays are float32 either way.

    Returns:
      ``{"w0": (n, s, s), "w": (n, s, s, T)}`` float32; ``w[..., t - 1]`` is the vorticity at time t
      (T = t_final snapshots, one per unit time), every (K / s)-th grid point.
    """
    n_snapshots = _check_generator(resolution, store_resolution, nu, t_final, dt, precision)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    stride = resolution // store_resolution
    w0 = navier_stokes_grf(split_rng(seed, split), n_samples, resolution, alpha, tau)   # (n, K, K) float64
    real = np.float32 if precision == "float32" else np.float64
    _, record_time = record_interval(t_final, dt, n_snapshots)
    forcing = navier_stokes_forcing(resolution)

    def chunk(w_h):                                                      # (K, K/2 + 1) -> same, (s, s)
        w_h, w = _record_chunk(_stepper(resolution, forcing, nu, dt, real), record_time)(w_h)
        return w_h, w[::stride, ::stride]

    start = jax.jit(jax.vmap(jnp.fft.rfft2))
    advance = jax.jit(jax.vmap(chunk), donate_argnums=0)
    out = np.empty((n_samples, store_resolution, store_resolution, n_snapshots), np.float32)
    x64 = jax.enable_x64(True) if precision == "float64" else contextlib.nullcontext()
    with x64, tqdm(total=n_samples * n_snapshots, desc=f"Navier-Stokes {split} n={n_samples} K={resolution} "
                   f"nu={nu:g} T={n_snapshots}", unit="snapshot", disable=not progress) as bar:
        for lo in range(0, n_samples, batch_size):
            w_h = start(jnp.asarray(w0[lo:lo + batch_size], real))       # (b, K, K/2 + 1)
            b = w_h.shape[0]
            for t in range(n_snapshots):
                w_h, w = advance(w_h)
                out[lo:lo + b, :, :, t] = np.asarray(w)                  # (b, s, s)
                bar.update(b)  # b samples advanced by one time unit
    if not np.all(np.isfinite(out)):
        raise FloatingPointError(f"the Navier-Stokes solve diverged (dt={dt} is too large for nu={nu} at "
                                 f"K={resolution}); lower dt")
    return {"w0": np.ascontiguousarray(w0[:, ::stride, ::stride], np.float32), "w": out}


def navier_stokes_dataset(split: str, n_samples: int, resolution: int = 256, store_resolution: int = 64,
                          nu: float = 1e-3, t_final: float = 50, dt: float = 1e-4, alpha: float = 2.5,
                          tau: float = 7.0, seed: int = 0, cache_dir: str | os.PathLike = DEFAULT_CACHE_DIR,
                          batch_size: int = 16, progress: bool = True, precision: str = "float32"
                          ) -> dict[str, np.ndarray]:
    """``generate_navier_stokes`` through the on-disk cache, keyed by every argument that shapes the data."""
    config = {"split": str(split), "n_samples": int(n_samples), "resolution": int(resolution),
              "store_resolution": int(store_resolution), "nu": float(nu), "t_final": float(t_final),
              "dt": float(dt), "alpha": float(alpha), "tau": float(tau), "seed": int(seed),
              "precision": str(precision)}
    return cached_arrays("navier_stokes", config,
                         lambda: generate_navier_stokes(n_samples, resolution, store_resolution, nu, t_final, dt,
                                                        alpha, tau, seed, split, batch_size, progress, precision),
                         cache_dir, version=NAVIER_STOKES_GENERATOR_VERSION)


class NavierStokesFlow:
    """The 2-D Navier-Stokes benchmark as a field dataset: w0 -> (w(., t))_{t=1..T}, T output channels.

    Solved on the K x K grid (K = ``resolution``, the paper's 256) with step ``dt`` (1e-4), stored at
    ``store_resolution`` (64) by striding, one snapshot per unit time up to ``t_final`` = T. The data half
    of ``experiments.tasks.pde`` (field-dataset protocol); a rollout task reads the T channels as time.

    Args:
      resolution, store_resolution, nu, t_final, dt, seed: the generator's (module docstring).
      cache_dir: where generated splits are cached (does not change the data).
      batch_size: samples solved together (does not change the data beyond float32 round-off).
      precision: "float32" (the original's) or "float64" solve (``generate_navier_stokes``).
    """

    in_channels = 1
    volatile_keys = ("cache_dir", "batch_size")  # settings that leave the data unchanged

    def __init__(self, resolution: int = 256, store_resolution: int = 64, nu: float = 1e-3, t_final: float = 50,
                 dt: float = 1e-4, seed: int = 0, cache_dir: str = DEFAULT_CACHE_DIR, batch_size: int = 16,
                 precision: str = "float32"):
        self.n_snapshots = _check_generator(resolution, store_resolution, nu, t_final, dt, precision)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.resolution, self.store_resolution = int(resolution), int(store_resolution)
        self.cache_dir, self.batch_size = cache_dir, int(batch_size)
        self.generator = dict(nu=nu, t_final=t_final, dt=dt, seed=seed, precision=precision)

    @property
    def out_channels(self) -> int:
        """T: one output channel per unit-time snapshot."""
        return self.n_snapshots

    def _stride(self, resolution: int) -> int:
        s = self.store_resolution
        if resolution < 1 or s % resolution:
            valid = [s // d for d in range(1, s + 1) if s % d == 0]
            raise ValueError(f"resolution {resolution} cannot be taken from the stored periodic grid of "
                             f"{s} x {s} points by striding; valid resolutions are the divisors {valid} "
                             f"(or raise store_resolution)")
        return s // resolution

    def spatial_shape(self, resolution: int) -> tuple[int, int]:
        """(r, r) for r dividing store_resolution; a ValueError listing the valid r otherwise."""
        self._stride(resolution)
        return (resolution, resolution)

    def load(self, split: str, n: int, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(w0 (n, s, s, 1), w (n, s, s, T)) float32 at s = store_resolution, generated on first use, cached."""
        data = navier_stokes_dataset(split, n, self.resolution, self.store_resolution, cache_dir=self.cache_dir,
                                     batch_size=self.batch_size, progress=progress, **self.generator)
        return data["w0"][..., None], data["w"]

    def subsample(self, fields: np.ndarray, resolution: int) -> np.ndarray:
        """(n, s, s, c) -> (n, r, r, c): every (s / r)-th point."""
        stride = self._stride(resolution)
        return fields[:, ::stride, ::stride]
