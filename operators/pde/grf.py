"""Gaussian random fields with a cosine (Neumann) Karhunen-Loeve basis on the unit square.

Reproduces ``GRF.m`` of the Fourier neural operator data generator
(Li et al. 2021, "Fourier Neural Operator for Parametric Partial Differential Equations", ICLR;
github.com/zongyi-li/fourier_neural_operator, data_generation/darcy/GRF.m).

The field has covariance

    C = tau^(2 alpha - 2) (-Laplacian + tau^2 I)^(-alpha)

with homogeneous Neumann boundary conditions on (0,1)^2. The Neumann Laplacian has eigenfunctions
cos(pi k1 x) cos(pi k2 y) and eigenvalues pi^2 (k1^2 + k2^2), so a sample is the Karhunen-Loeve sum

    U = idct2(L),  L[k1, k2] = s * coef[k1, k2] * xi[k1, k2],  xi ~ N(0, 1) i.i.d.,
    coef[k1, k2] = tau^(alpha - 1) * (pi^2 (k1^2 + k2^2) + tau^2)^(-alpha / 2),  k1, k2 = 0..s-1,

with L[0, 0] = 0 (zero-mean field). ``idct2`` is MATLAB's orthonormal inverse DCT-II, so U is
evaluated at the cell centres x_i = (2 i + 1) / (2 s), i = 0..s-1. The factor s together with the
orthonormal DCT weights gives exactly the L2-normalised eigenfunctions (sqrt(2) cos(pi k x) per
axis), i.e. the truncated KL expansion of C.
"""
from __future__ import annotations

import numpy as np
import scipy.fft


def cosine_kl_amplitudes(s: int, alpha: float = 2.0, tau: float = 3.0) -> np.ndarray:
    """Square roots of the covariance eigenvalues, coef[k1, k2] (GRF.m), shape (s, s) float64.

    coef[k1, k2] = tau^(alpha - 1) * (pi^2 (k1^2 + k2^2) + tau^2)^(-alpha / 2), k1, k2 = 0..s-1.
    """
    k = np.arange(s, dtype=np.float64)
    k_squared = k[:, None] ** 2 + k[None, :] ** 2
    return tau ** (alpha - 1.0) * (np.pi**2 * k_squared + tau**2) ** (-alpha / 2.0)


def gaussian_random_field_cosine(
    rng: np.random.Generator,
    n_samples: int,
    s: int,
    alpha: float = 2.0,
    tau: float = 3.0,
) -> np.ndarray:
    """Draw zero-mean Gaussian random fields on an s x s cell-centred grid, as GRF.m.

    U = idct2(L) with L = s * coef * xi, L[0, 0] = 0 (see module docstring); idct2 is the orthonormal
    inverse DCT-II (``scipy.fft.idctn(L, type=2, norm="ortho")``).

    Args:
        rng: source of the standard normals; ``xi = rng.standard_normal((n_samples, s, s))`` is drawn
            in one call, so sample i depends only on the generator state and i (the stream is filled
            sequentially: drawing 1 sample k times gives the same fields as drawing k at once).
        n_samples: number of independent fields n.
        s: grid points per axis; point i sits at x_i = (2 i + 1) / (2 s).
        alpha: smoothness exponent of the covariance (needs alpha > 1 in 2-D).
        tau: inverse length scale.

    Returns:
        (n, s, s) float64 array; axis 1 is x, axis 2 is y.
    """
    xi = rng.standard_normal((n_samples, s, s))
    kl_coefficients = s * cosine_kl_amplitudes(s, alpha, tau)[None] * xi
    kl_coefficients[:, 0, 0] = 0.0
    return scipy.fft.idctn(kl_coefficients, type=2, norm="ortho", axes=(1, 2))
