"""1-D viscous Burgers on the periodic unit interval: the FNO benchmark's data, generated locally.

    u_t + (u^2 / 2)_x = nu u_xx,   x in [0, 1) periodic,   the operator u0 -> u(., t_final).

Initial conditions (the FNO scripts' ``GRF1(N = K/2, m = 0, gamma, tau, sigma, "periodic")``):
``u0(x) = sum_{k=1}^{K/2} alpha_k cos(2 pi k x) + beta_k sin(2 pi k x)`` with alpha_k, beta_k
independent ``N(0, lambda_k^2)``, ``lambda_k = sqrt(2) sigma ((2 pi k)^2 + tau^2)^(-gamma / 2)``:
a draw of ``N(0, sigma^2 (-Laplacian + tau^2)^-gamma)`` without its mean mode (github.com/zongyi-li/
fourier_neural_operator, ``data_generation/burgers/GRF1.m``). The paper's setting (Li et al., "Fourier
Neural Operator for Parametric Partial Differential Equations", ICLR 2021, arXiv 2010.08895, Sec. 5.1):
sigma = 25, tau = 5, gamma = 2 (``N(0, 625 (-Laplacian + 25 I)^-2)``), nu = 0.1, t_final = 1, solved on
K = 8192 points.

Solver: Fourier pseudo-spectral in space (real FFT, 2/3-rule dealiasing of the nonlinear term),
ETDRK4 in time (Cox and Matthews 2002) with the contour-integral evaluation of its coefficients
(Kassam and Trefethen 2005, 32 points on a circle of radius 1), the scheme of chebfun's ``spin``
that the FNO data used. A pure, jittable JAX function of ``u0`` (``solve_burgers``), vmapped over
samples: it can also serve as a differentiable simulator.

``BurgersGenerator`` holds the data's settings and generates samples from a given random stream; it
reads and writes no files. The cached dataset is ``experiments.data.burgers``.

Oracle (tests): the Cole-Hopf transform ``u = -2 nu (log phi)_x`` with ``phi_t = nu phi_xx`` gives
the exact solution for any u0 (``cole_hopf``), evaluated spectrally.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

__all__ = ["BurgersGenerator", "cole_hopf", "etdrk4_coefficients", "grf1_periodic", "solve_burgers"]


def grf1_periodic(rng: np.random.Generator, n_samples: int, resolution: int, sigma: float = 25.0,
                  tau: float = 5.0, gamma: float = 2.0) -> np.ndarray:
    """(n_samples, K) draws of the GRF1 periodic field on ``x_j = j / K`` (float64)."""
    if resolution < 4 or resolution % 2:
        raise ValueError(f"the Burgers grid needs an even number of points >= 4; got resolution={resolution}")
    k = np.arange(1, resolution // 2 + 1)
    lam = math.sqrt(2.0) * sigma * ((2 * np.pi * k) ** 2 + tau ** 2) ** (-gamma / 2)   # (K/2,)
    alpha = lam * rng.standard_normal((n_samples, k.size))
    beta = lam * rng.standard_normal((n_samples, k.size))
    # u0 = sum_k alpha cos + beta sin, as the real FFT of coefficients (K/2) (alpha - i beta) at k
    coeffs = np.zeros((n_samples, resolution // 2 + 1), complex)
    coeffs[:, 1:] = 0.5 * resolution * (alpha - 1j * beta)
    coeffs[:, -1] *= 2.0  # the Nyquist mode is its own conjugate: cos(pi j) carries the whole alpha
    return np.fft.irfft(coeffs, n=resolution, axis=-1)


def _wavenumbers(resolution: int, dtype) -> jax.Array:
    return 2 * jnp.pi * jnp.arange(resolution // 2 + 1, dtype=dtype)     # (K/2 + 1,)


def etdrk4_coefficients(linear: jax.Array, dt: float, n_contour: int = 32):
    """ETDRK4's E, E2, Q, f1, f2, f3 for a diagonal linear part ``linear`` (Kassam-Trefethen contour)."""
    r = jnp.exp(1j * jnp.pi * (jnp.arange(1, n_contour + 1) - 0.5) / n_contour)       # (M,) unit circle
    lr = dt * linear[:, None] + r[None, :]                                           # (K/2 + 1, M)
    mean = lambda z: jnp.real(jnp.mean(z, axis=-1))                                 # noqa: E731
    q = dt * mean((jnp.exp(lr / 2) - 1) / lr)
    f1 = dt * mean((-4 - lr + jnp.exp(lr) * (4 - 3 * lr + lr ** 2)) / lr ** 3)
    f2 = dt * mean((2 + lr + jnp.exp(lr) * (-2 + lr)) / lr ** 3)
    f3 = dt * mean((-4 - 3 * lr - lr ** 2 + jnp.exp(lr) * (4 - lr)) / lr ** 3)
    return jnp.exp(dt * linear), jnp.exp(dt * linear / 2), q, f1, f2, f3


def solve_burgers(u0: jax.Array, nu: float = 0.1, t_final: float = 1.0, n_steps: int = 200) -> jax.Array:
    """u(., t_final) from u0 of shape (..., K) on the periodic grid x_j = j / K (dtype of u0).

    ``n_steps`` ETDRK4 steps of dt = t_final / n_steps; jittable and differentiable in u0.
    """
    u0 = jnp.asarray(u0)
    n = u0.shape[-1]
    real = u0.dtype
    k = _wavenumbers(n, real)
    dealias = jnp.arange(n // 2 + 1) < n / 3                       # the 2/3 rule
    deriv = jnp.where(dealias, 1j * k, 0).astype(jnp.result_type(real, jnp.complex64))
    E, E2, Q, f1, f2, f3 = etdrk4_coefficients(-nu * k ** 2, t_final / n_steps)

    def nonlinear(v):                                              # -(u^2 / 2)_x in Fourier space
        u = jnp.fft.irfft(v, n=n, axis=-1)
        return -0.5 * deriv * jnp.fft.rfft(u * u, axis=-1)

    def step(v, _):
        nv = nonlinear(v)
        a = E2 * v + Q * nv
        na = nonlinear(a)
        b = E2 * v + Q * na
        nb = nonlinear(b)
        c = E2 * a + Q * (2 * nb - nv)
        nc = nonlinear(c)
        return E * v + nv * f1 + 2 * (na + nb) * f2 + nc * f3, None

    v, _ = jax.lax.scan(step, jnp.fft.rfft(u0, axis=-1), None, length=n_steps)
    return jnp.fft.irfft(v, n=n, axis=-1).astype(real)


def cole_hopf(u0: np.ndarray, nu: float, t: float) -> np.ndarray:
    """The exact solution at time t (NumPy float64): u = -2 nu phi_x / phi, phi = heat flow of
    exp(-U / (2 nu)), U' = u0 (u0 of zero mean, so U is periodic), all spectral on the K-point grid."""
    u0 = np.asarray(u0, np.float64)
    n = u0.shape[-1]
    k = 2 * np.pi * np.fft.fftfreq(n, d=1.0 / n)
    u_hat = np.fft.fft(u0, axis=-1)
    if np.max(np.abs(u_hat[..., 0])) > 1e-6 * np.max(np.abs(u_hat)):
        raise ValueError("cole_hopf needs an initial condition of zero mean (periodic antiderivative)")
    U_hat = np.where(k != 0, u_hat / np.where(k != 0, 1j * k, 1), 0)
    U = np.real(np.fft.ifft(U_hat, axis=-1))
    phi_hat = np.fft.fft(np.exp(-(U - U.mean(axis=-1, keepdims=True)) / (2 * nu)), axis=-1) * np.exp(-nu * k ** 2 * t)
    phi = np.real(np.fft.ifft(phi_hat, axis=-1))
    phi_x = np.real(np.fft.ifft(1j * k * phi_hat, axis=-1))
    return -2 * nu * phi_x / phi


@dataclasses.dataclass(frozen=True)
class BurgersGenerator:
    """The settings of the Burgers data (module docstring) and the generation itself (``generate``).

    Args:
      resolution: K, periodic grid points x_j = j / K (even, >= 4).
      nu, t_final, n_steps: viscosity, horizon and ETDRK4 steps of ``solve_burgers``.
      sigma, tau, gamma: the GRF1 initial condition (``grf1_periodic``).

    Raises:
      ValueError: an odd or too small grid, or nu, t_final <= 0 or n_steps < 1.
    """

    resolution: int
    nu: float = 0.1
    t_final: float = 1.0
    n_steps: int = 200
    sigma: float = 25.0
    tau: float = 5.0
    gamma: float = 2.0

    def __post_init__(self):
        if self.resolution < 4 or self.resolution % 2:
            raise ValueError(f"the Burgers grid needs an even number of points >= 4; got resolution={self.resolution}")
        if self.nu <= 0 or self.t_final <= 0 or self.n_steps < 1:
            raise ValueError(f"need nu > 0, t_final > 0 and n_steps >= 1; got {self.nu}, {self.t_final}, "
                             f"{self.n_steps}")

    def generate(self, rng: np.random.Generator, n_samples: int, *, batch: int = 100, progress: bool = True,
                 label: str = "") -> dict[str, np.ndarray]:
        """``{"u0": (n, K), "u": (n, K)}`` float32: initial conditions drawn from ``rng``, solved in float32
        batches of ``batch`` samples. ``label`` names the job in the progress bar (e.g. the split)."""
        resolution, nu, t_final, n_steps = self.resolution, self.nu, self.t_final, self.n_steps
        u0 = grf1_periodic(rng, n_samples, resolution, self.sigma, self.tau, self.gamma)
        solve = jax.jit(jax.vmap(lambda a: solve_burgers(a, nu, t_final, n_steps)))
        out = np.empty((n_samples, resolution), np.float32)
        for lo in tqdm(range(0, n_samples, batch), desc=" ".join(filter(None, ("Burgers", label, f"K={resolution}"))),
                       unit="batch", disable=not progress):
            out[lo:lo + batch] = np.asarray(solve(jnp.asarray(u0[lo:lo + batch], jnp.float32)))
        if not np.all(np.isfinite(out)):
            raise FloatingPointError(f"the Burgers solve diverged (n_steps={n_steps} is too few for nu={nu} at "
                                     f"K={resolution}); raise n_steps")
        return {"u0": u0.astype(np.float32), "u": out}
