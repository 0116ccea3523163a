"""2-D incompressible Navier-Stokes in vorticity form on the unit torus: the FNO benchmark's data.

    w_t + u . grad(w) = nu Laplacian(w) + f,   u = (psi_y, -psi_x),   -Laplacian(psi) = w,

on [0, 1)^2 periodic, the operator w0 -> (w(., t))_{t = 1..T} (Li et al., "Fourier Neural Operator for
Parametric Partial Differential Equations", ICLR 2021, arXiv 2010.08895, Sec. 5.3; the scheme of
github.com/zongyi-li/fourier_neural_operator, ``data_generation/navier_stokes/ns_2d.py``).

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
nu), to be vmapped over samples; ``NavierStokesGenerator`` makes the benchmark's data from a given random
stream (solved at K = 256, stored at 64^2 by striding, one snapshot per unit time) and reads and writes no
files. The cached dataset is ``experiments.data.navier_stokes``.

Oracles (tests): the Taylor-Green-type fields (Laplacian eigenfunctions) for which the advection
vanishes and the vorticity decays as exp(-nu |2 pi k|^2 t); a naive NumPy transcription of the
original update; the GRF's Fourier variances.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

__all__ = ["NavierStokesGenerator", "dealias_mask", "grf_sqrt_eig", "navier_stokes_2d", "navier_stokes_forcing",
           "navier_stokes_grf", "record_interval", "snapshot_times", "wavenumbers"]
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


@dataclasses.dataclass(frozen=True)
class NavierStokesGenerator:
    """The settings of the benchmark's data (module docstring) and the generation itself (``generate``).

    Solved on the K x K grid (K = ``resolution``, the paper's 256) with step ``dt`` (1e-4), stored at
    ``store_resolution`` (64) by striding, one snapshot per unit time up to ``t_final`` = T.

    Args:
      resolution, store_resolution: K (even) and the stored grid s (s divides K).
      nu, t_final, dt: viscosity, horizon T (a positive whole number) and time step.
      alpha, tau: the initial vorticity's GRF (``navier_stokes_grf``).
      precision: "float32" (the original's, torch float32) or "float64" solve; the stored arrays are
        float32 either way. "float64" removes the float32 round-off in the Crank-Nicolson factors
        ``1 +- dt nu lap / 2``, which at dt = 1e-4 is the larger error (measured at 64^2, nu = 1e-3,
        T = 10: 1.8e-3 relative L2 against float64, vs 3e-5 for the dt = 1e-3 discretisation).

    Raises:
      ValueError: naming the setting that is out of range and its valid values.
    """

    resolution: int = 256
    store_resolution: int = 64
    nu: float = 1e-3
    t_final: float = 50
    dt: float = 1e-4
    alpha: float = 2.5
    tau: float = 7.0
    precision: str = "float32"

    def __post_init__(self):
        resolution, store_resolution = self.resolution, self.store_resolution
        _check_grid(resolution)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r} is unknown; choose one of {PRECISIONS}")
        if store_resolution < 1 or resolution % store_resolution:
            divisors = [resolution // d for d in range(1, resolution + 1) if resolution % d == 0]
            raise ValueError(f"store_resolution={store_resolution} must divide the solve grid "
                             f"resolution={resolution} (the data is stored by striding); valid values are {divisors}")
        if self.nu <= 0 or self.dt <= 0:
            raise ValueError(f"need nu > 0 and dt > 0; got nu={self.nu}, dt={self.dt}")
        if self.t_final < 1 or float(self.t_final) != int(self.t_final):
            raise ValueError(f"t_final must be a positive whole number (one snapshot per unit time); got "
                             f"{self.t_final}")
        record_interval(self.t_final, self.dt, int(self.t_final))

    @property
    def n_snapshots(self) -> int:
        """T: the number of unit-time snapshots."""
        return int(self.t_final)

    def generate(self, rng: np.random.Generator, n_samples: int, *, batch_size: int = 16, progress: bool = True,
                 label: str = "") -> dict[str, np.ndarray]:
        """n samples of the benchmark, solved in batches at K = ``resolution``, stored at s by striding.

        Initial fields come one at a time from ``rng`` (sample i does not depend on n_samples); they are
        solved ``batch_size`` at a time (``jax.vmap``), which changes nothing in the data beyond float32
        round-off. The progress bar (named by ``label``, e.g. the split) advances once per unit time of
        each batch.

        Returns:
          ``{"w0": (n, s, s), "w": (n, s, s, T)}`` float32; ``w[..., t - 1]`` is the vorticity at time t
          (T = t_final snapshots, one per unit time), every (K / s)-th grid point.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        resolution, store_resolution, nu, dt = self.resolution, self.store_resolution, self.nu, self.dt
        n_snapshots = self.n_snapshots
        stride = resolution // store_resolution
        w0 = navier_stokes_grf(rng, n_samples, resolution, self.alpha, self.tau)   # (n, K, K) float64
        real = np.float32 if self.precision == "float32" else np.float64
        _, record_time = record_interval(self.t_final, dt, n_snapshots)
        forcing = navier_stokes_forcing(resolution)

        def chunk(w_h):                                                  # (K, K/2 + 1) -> same, (s, s)
            w_h, w = _record_chunk(_stepper(resolution, forcing, nu, dt, real), record_time)(w_h)
            return w_h, w[::stride, ::stride]

        start = jax.jit(jax.vmap(jnp.fft.rfft2))
        advance = jax.jit(jax.vmap(chunk), donate_argnums=0)
        out = np.empty((n_samples, store_resolution, store_resolution, n_snapshots), np.float32)
        x64 = jax.enable_x64(True) if self.precision == "float64" else contextlib.nullcontext()
        desc = " ".join(filter(None, ("Navier-Stokes", label, f"n={n_samples} K={resolution} nu={nu:g} "
                                                              f"T={n_snapshots}")))
        with x64, tqdm(total=n_samples * n_snapshots, desc=desc, unit="snapshot", disable=not progress) as bar:
            for lo in range(0, n_samples, batch_size):
                w_h = start(jnp.asarray(w0[lo:lo + batch_size], real))   # (b, K, K/2 + 1)
                b = w_h.shape[0]
                for t in range(n_snapshots):
                    w_h, w = advance(w_h)
                    out[lo:lo + b, :, :, t] = np.asarray(w)              # (b, s, s)
                    bar.update(b)  # b samples advanced by one time unit
        if not np.all(np.isfinite(out)):
            raise FloatingPointError(f"the Navier-Stokes solve diverged (dt={dt} is too large for nu={nu} at "
                                     f"K={resolution}); lower dt")
        return {"w0": np.ascontiguousarray(w0[:, ::stride, ::stride], np.float32), "w": out}
