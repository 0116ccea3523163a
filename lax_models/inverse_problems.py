"""Linear inverse problems on images, solved by plug-and-play with a proximal operator, and baselines.

Measurements ``y = A x + noise`` of an image ``x``; ``A`` is one of

* :func:`blur_operator`: Gaussian blur as a periodic convolution, ``A x = F^{-1}(H . F x)`` with ``H``
  the transfer function (DFT of the centred kernel); adjoint ``F^{-1}(conj(H) . F y)``;
* :func:`radon_operator`: parallel-beam sparse-view CT, the Radon transform written as a matrix by
  pixel-driven linear interpolation (Kak & Slaney, "Principles of Computerized Tomographic Imaging",
  ch. 3): pixel ``p`` at centre ``r_p`` adds its value to the detector bins either side of
  ``t = r_p . (cos theta, sin theta)`` with linear weights, approximating the line integrals
  ``p_theta(t) = int x(t theta + s theta^perp) ds`` (pixel side 1, detector spacing 1);

each a :class:`LinearOperator` of pure JAX functions with an exact adjoint. Solvers (Fang, Buchanan,
Sulam, "What's in a Prior? Learned Proximal Networks for Inverse Problems", ICLR 2024, Sec. 5; the
denoiser ``prox`` is any map, e.g. a learned proximal network, and every loop is a ``lax.scan``):

* :func:`pnp_pgd`: ``x_{k+1} = prox(x_k - eta A^T (A x_k - y))``;
* :func:`pnp_admm`: ``x = (A^T A + rho I)^{-1} (A^T y + rho (z - u))`` (conjugate gradients),
  ``z = prox(x + u)``, ``u = u + x - z``;

with ``prox = prox_{eta g}`` (PGD) or ``prox_{g / rho}`` (ADMM) they minimise ``1/2 ||Ax - y||^2 + g(x)``.
Baselines: :func:`tv_reconstruct` (isotropic TV by Chambolle & Pock's primal-dual algorithm, 2011),
:func:`wiener_deconvolve`, :func:`filtered_back_projection` (Ram-Lak filter + the adjoint). Metrics:
:func:`psnr`, :func:`ssim` (Wang, Bovik, Sheikh, Simoncelli, IEEE TIP 2004, Gaussian window).

Images are batched: ``(B, H, W)``; measurements ``(B, *A.out_shape)``.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import jax.scipy.signal
import jax.scipy.sparse.linalg
import numpy as np

__all__ = ["LinearOperator", "blur_operator", "filtered_back_projection", "gaussian_kernel", "gaussian_window",
           "operator_norm", "pnp_admm", "pnp_pgd", "psnr", "radon_matrix", "radon_operator", "ssim",
           "tv_reconstruct", "wiener_deconvolve"]

Prox = Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True, eq=False)
class LinearOperator:
    """A linear map on batches of images: ``forward`` (B, *in_shape) -> (B, *out_shape), ``adjoint`` back.

    ``transfer`` is the transfer function (H, W) when the operator is a periodic convolution (None else);
    ``angles`` the projection angles of a CT operator. Hashed by identity, so it can be a static argument.
    """

    name: str
    forward: Callable[[jax.Array], jax.Array]
    adjoint: Callable[[jax.Array], jax.Array]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    transfer: jax.Array | None = None
    angles: np.ndarray | None = None

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.forward(x)

    def normal(self, x: jax.Array) -> jax.Array:
        """``A^T A x``."""
        return self.adjoint(self.forward(x))


def _check_images(name: str, x: jax.Array, shape: Sequence[int]) -> None:
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{name} takes a batch of shape (B, {', '.join(map(str, shape))}), got {x.shape}")


# -- forward operators ---------------------------------------------------------------------------------

def gaussian_kernel(sigma: float, size: int | None = None) -> np.ndarray:
    """Normalised Gaussian blur kernel (size, size); size defaults to the reference's max(5, int(3 sigma))
    forced odd (reference: lpn/operators/blur.py)."""
    if not sigma > 0:
        raise ValueError(f"gaussian_kernel needs sigma > 0, got {sigma}")
    if size is None:
        size = max(5, int(3 * sigma))
        size += 1 - size % 2
    if size < 1 or size % 2 == 0:
        raise ValueError(f"gaussian_kernel needs an odd size >= 1, got {size}")
    t = np.arange(size) - size // 2
    g = np.exp(-t ** 2 / (2 * sigma ** 2))
    k = np.outer(g, g)
    return k / k.sum()


def blur_operator(shape: tuple[int, int], kernel: np.ndarray) -> LinearOperator:
    """Periodic convolution with ``kernel`` (kh, kw; its centre at index (kh // 2, kw // 2)) on (H, W) images.

    ``(A x)[i, j] = sum_{a, b} k[a, b] x[(i - a + kh // 2) % H, (j - b + kw // 2) % W]``; in Fourier space
    ``A x = F^{-1}(H . F x)`` with ``H = F(k placed with its centre at (0, 0))``, ``A^T y = F^{-1}(conj(H) . F y)``.
    """
    kernel = np.asarray(kernel, np.float64)
    h, w = shape
    kh, kw = kernel.shape
    if kh > h or kw > w:
        raise ValueError(f"blur kernel {kernel.shape} is larger than the image {shape}")
    padded = np.zeros((h, w))
    padded[:kh, :kw] = kernel
    padded = np.roll(padded, (-(kh // 2), -(kw // 2)), axis=(0, 1))    # centre of the kernel at (0, 0)
    transfer = jnp.asarray(np.fft.fft2(padded))        # (H, W); complex128 when built under x64

    def forward(x):
        return jnp.real(jnp.fft.ifft2(jnp.fft.fft2(x) * transfer)).astype(x.dtype)

    def adjoint(y):
        return jnp.real(jnp.fft.ifft2(jnp.fft.fft2(y) * jnp.conj(transfer))).astype(y.dtype)

    return LinearOperator("blur", forward, adjoint, tuple(shape), tuple(shape), transfer)


def radon_matrix(size: int, angles: np.ndarray, n_detectors: int | None = None) -> np.ndarray:
    """The parallel-beam Radon transform of a (size, size) image as a dense matrix (views * dets, size^2).

    Pixel (i, j) (row i, column j) has centre ``r = (j - c, c - i)``, ``c = (size - 1) / 2``; at angle
    theta its projection coordinate is ``t = r . (cos theta, sin theta)``; detector bins sit at
    ``s_d = d - (n_detectors - 1) / 2`` (spacing 1). The pixel's value goes to the two bins around ``t``
    with linear-interpolation weights (pixel area 1 / bin width 1), so each view's row sums are the
    image's sum (mass is kept) as long as every ``t`` lies inside the detector.
    Default ``n_detectors``: the smallest odd count covering the image diagonal.
    """
    angles = np.asarray(angles, np.float64).ravel()
    if size < 1 or angles.size < 1:
        raise ValueError(f"radon_matrix needs size >= 1 and at least one angle, got {size}, {angles.size}")
    if n_detectors is None:
        n_detectors = int(math.ceil(size * math.sqrt(2))) + 2
        n_detectors += 1 - n_detectors % 2
    c = (size - 1) / 2
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    px, py = (j - c).ravel(), (c - i).ravel()                         # (size^2,) pixel centres
    t = np.cos(angles)[:, None] * px[None] + np.sin(angles)[:, None] * py[None]   # (views, size^2)
    pos = t + (n_detectors - 1) / 2                                    # fractional detector index
    lo = np.floor(pos).astype(int)
    frac = pos - lo
    mat = np.zeros((angles.size, n_detectors, size * size))          # (views, dets, pixels)
    view, pix = np.meshgrid(np.arange(angles.size), np.arange(size * size), indexing="ij")
    for d, wgt in ((lo, 1.0 - frac), (lo + 1, frac)):
        ok = (d >= 0) & (d < n_detectors)
        np.add.at(mat, (view[ok], d[ok], pix[ok]), wgt[ok])
    return mat.reshape(angles.size * n_detectors, size * size)


def radon_operator(size: int, n_views: int, n_detectors: int | None = None) -> LinearOperator:
    """Sparse-view CT: ``n_views`` angles evenly spaced in [0, pi); (B, size, size) -> (B, views, dets)."""
    if n_views < 1:
        raise ValueError(f"radon_operator needs n_views >= 1, got {n_views}")
    angles = np.arange(n_views) * np.pi / n_views
    mat_np = radon_matrix(size, angles, n_detectors)
    dets = mat_np.shape[0] // n_views
    mat = jnp.asarray(mat_np)                          # (views * dets, size^2); float64 under x64

    def forward(x):
        return (x.reshape(x.shape[0], -1) @ mat.T.astype(x.dtype)).reshape(x.shape[0], n_views, dets)

    def adjoint(y):
        return (y.reshape(y.shape[0], -1) @ mat.astype(y.dtype)).reshape(y.shape[0], size, size)

    return LinearOperator("ct", forward, adjoint, (size, size), (n_views, dets), angles=angles)


def operator_norm(op: LinearOperator, iters: int = 100, seed: int = 0) -> float:
    """||A||_2 by power iteration on A^T A."""
    x = jax.random.normal(jax.random.key(seed), (1, *op.in_shape))
    normal = jax.jit(op.normal)
    for _ in range(iters):
        x = normal(x)
        x = x / jnp.linalg.norm(x)
    return float(jnp.sqrt(jnp.linalg.norm(normal(x))))


# -- plug-and-play solvers -------------------------------------------------------------------------------

def _norms(a: jax.Array) -> jax.Array:
    """Per-example l2 norms of a batch: (B, ...) -> (B,)."""
    return jnp.sqrt(jnp.sum(a.reshape(a.shape[0], -1) ** 2, -1))


def _history(op, y, x_new, x_old, regularizer):
    data = 0.5 * _norms(op(x_new) - y) ** 2
    out = {"residual": _norms(x_new - x_old), "data_fit": data}
    if regularizer is not None:
        out["objective"] = data + regularizer(x_new)
    return out


def pnp_pgd(op: LinearOperator, y: jax.Array, prox: Prox, x0: jax.Array, *, eta: float, n_iters: int,
            regularizer: Callable[[jax.Array], jax.Array] | None = None) -> tuple[jax.Array, dict]:
    """Plug-and-play proximal gradient: ``x_{k+1} = prox(x_k - eta A^T (A x_k - y))``.

    With ``prox = prox_{eta g}`` and ``eta < 2 / ||A||^2`` this is ISTA for ``min 1/2 ||Ax - y||^2 + g(x)``.

    Args:
      op: the forward operator; y: measurements (B, *op.out_shape); x0: start (B, *op.in_shape).
      prox: the denoiser, (B, *in_shape) -> same; eta: step size; n_iters: iterations (static).
      regularizer: optional g (B, ...) -> (B,), to record the objective.

    Returns:
      ``(x_n, history)``, history of arrays (n_iters, B): ``residual`` ||x_{k+1} - x_k||, ``data_fit``
      1/2 ||A x_{k+1} - y||^2 (and ``objective`` = data_fit + g when ``regularizer`` is given).
    """
    _check_images("pnp_pgd x0", x0, op.in_shape)

    def step(x, _):
        x_new = prox(x - eta * op.adjoint(op(x) - y))
        return x_new, _history(op, y, x_new, x, regularizer)

    return jax.lax.scan(step, x0, None, length=n_iters)


def pnp_admm(op: LinearOperator, y: jax.Array, prox: Prox, x0: jax.Array, *, rho: float, n_iters: int,
             cg_iters: int = 30, cg_tol: float = 1e-6,
             regularizer: Callable[[jax.Array], jax.Array] | None = None) -> tuple[jax.Array, dict]:
    """Plug-and-play ADMM (scaled form), iterate z:

    .. math::
        x_{k+1} = (A^\\top A + \\rho I)^{-1}(A^\\top y + \\rho (z_k - u_k)), \\quad
        z_{k+1} = \\mathrm{prox}(x_{k+1} + u_k), \\quad u_{k+1} = u_k + x_{k+1} - z_{k+1}.

    The x-step is solved by conjugate gradients (``cg_iters``, warm-started) or exactly in Fourier space
    when ``op`` is a periodic convolution. With ``prox = prox_{g / rho}`` it minimises
    ``1/2 ||Ax - y||^2 + g(x)``. Starts at ``z = x0``, ``u = 0``.

    Returns:
      ``(z_n, history)``, history (n_iters, B): ``residual`` ||z_{k+1} - z_k||, ``primal`` ||x_{k+1} - z_{k+1}||,
      ``data_fit`` 1/2 ||A z_{k+1} - y||^2 (and ``objective`` with ``regularizer``).
    """
    _check_images("pnp_admm x0", x0, op.in_shape)
    aty = op.adjoint(y)

    if op.transfer is not None:
        denom = jnp.abs(op.transfer) ** 2 + rho

        def solve_x(rhs, x_prev):
            return jnp.real(jnp.fft.ifft2(jnp.fft.fft2(rhs) / denom)).astype(rhs.dtype)
    else:
        def solve_x(rhs, x_prev):
            return jax.scipy.sparse.linalg.cg(lambda v: op.normal(v) + rho * v, rhs, x0=x_prev,
                                              tol=cg_tol, maxiter=cg_iters)[0]

    def step(carry, _):
        x, z, u = carry
        x = solve_x(aty + rho * (z - u), x)
        z_new = prox(x + u)
        u = u + x - z_new
        hist = _history(op, y, z_new, z, regularizer)
        hist["primal"] = _norms(x - z_new)
        return (x, z_new, u), hist

    (_, z, _), hist = jax.lax.scan(step, (x0, x0, jnp.zeros_like(x0)), None, length=n_iters)
    return z, hist


# -- baselines -------------------------------------------------------------------------------------------

def _grad(x: jax.Array) -> jax.Array:
    """Forward differences with Neumann boundary: (B, H, W) -> (B, H, W, 2)."""
    dx = jnp.concatenate([x[:, 1:] - x[:, :-1], jnp.zeros_like(x[:, :1])], 1)
    dy = jnp.concatenate([x[:, :, 1:] - x[:, :, :-1], jnp.zeros_like(x[:, :, :1])], 2)
    return jnp.stack([dx, dy], -1)


def _grad_adjoint(p: jax.Array) -> jax.Array:
    """The adjoint of :func:`_grad` (minus the discrete divergence): (B, H, W, 2) -> (B, H, W)."""
    px, py = p[..., 0], p[..., 1]
    ax = jnp.concatenate([-px[:, :1], px[:, :-2] - px[:, 1:-1], px[:, -2:-1]], 1)
    ay = jnp.concatenate([-py[:, :, :1], py[:, :, :-2] - py[:, :, 1:-1], py[:, :, -2:-1]], 2)
    return ax + ay


def tv_reconstruct(op: LinearOperator, y: jax.Array, lam: float, *, n_iters: int = 300,
                   op_norm: float | None = None, box: tuple[float, float] | None = (0.0, 1.0),
                   x0: jax.Array | None = None) -> jax.Array:
    """``argmin_x 1/2 ||Ax - y||^2 + lam TV(x)`` (+ the box constraint), isotropic TV
    ``TV(x) = sum_ij ||(grad x)_ij||_2``, by Chambolle & Pock's primal-dual algorithm (J. Math. Imaging
    Vis. 2011, Alg. 1) with ``K = [A; grad]``, ``tau = sigma = 0.99 / ||K||`` and ``||K||^2 <= ||A||^2 + 8``.
    """
    if isinstance(lam, (int, float)) and not lam >= 0:
        raise ValueError(f"tv_reconstruct needs lam >= 0, got {lam}")
    norm_a = operator_norm(op) if op_norm is None else op_norm
    step = 0.99 / math.sqrt(norm_a ** 2 + 8.0)
    x = op.adjoint(y) if x0 is None else x0
    _check_images("tv_reconstruct x0", x, op.in_shape)

    def iterate(carry, _):
        x, x_bar, q, p = carry
        q = (q + step * (op(x_bar) - y)) / (1.0 + step)                  # prox of (1/2 ||. - y||^2)^*
        p = p + step * _grad(x_bar)
        p = p / jnp.maximum(1.0, jnp.linalg.norm(p, axis=-1, keepdims=True) / jnp.maximum(lam, 1e-30))
        x_new = x - step * (op.adjoint(q) + _grad_adjoint(p))
        if box is not None:
            x_new = jnp.clip(x_new, *box)
        return (x_new, 2 * x_new - x, q, p), None

    init = (x, x, jnp.zeros_like(y), jnp.zeros((*x.shape, 2), x.dtype))
    (x, _, _, _), _ = jax.lax.scan(iterate, init, None, length=n_iters)
    return x


def wiener_deconvolve(op: LinearOperator, y: jax.Array, nsr: float) -> jax.Array:
    """Wiener deconvolution ``F^{-1}(conj(H) F y / (|H|^2 + nsr))`` with a constant noise-to-signal ratio:
    the Tikhonov solution ``(A^T A + nsr I)^{-1} A^T y`` of a periodic convolution."""
    if op.transfer is None:
        raise ValueError(f"Wiener deconvolution needs a convolution operator, got {op.name!r}")
    h = op.transfer
    return jnp.real(jnp.fft.ifft2(jnp.conj(h) * jnp.fft.fft2(y) / (jnp.abs(h) ** 2 + nsr))).astype(y.dtype)


def ram_lak_filter(n_detectors: int) -> np.ndarray:
    """The band-limited ramp filter's frequency response on a detector zero-padded to ``2^k >= 2 n``:
    the DFT of Kak & Slaney's spatial kernel h(0) = 1/4, h(odd n) = -1 / (pi n)^2, h(even n) = 0 (eq. 3.61)."""
    n_pad = max(64, int(2 ** math.ceil(math.log2(2 * n_detectors))))
    n = np.concatenate([np.arange(0, n_pad // 2 + 1), np.arange(-n_pad // 2 + 1, 0)])
    h = np.zeros(n_pad)
    h[0] = 0.25
    odd = n % 2 == 1
    h[odd] = -1.0 / (np.pi * n[odd]) ** 2
    return np.real(np.fft.fft(h))


def filtered_back_projection(op: LinearOperator, y: jax.Array) -> jax.Array:
    """FBP for :func:`radon_operator`: ramp-filter each view, back-project with the adjoint, times pi / views:
    ``x(r) = int_0^pi (p_theta * h)(r . theta) d theta`` with the detector spacing 1."""
    n_views, dets = op.out_shape
    response = jnp.asarray(ram_lak_filter(dets))
    n_pad = response.shape[0]
    padded = jnp.pad(y, ((0, 0), (0, 0), (0, n_pad - dets)))            # (B, views, n_pad)
    filtered = jnp.real(jnp.fft.ifft(jnp.fft.fft(padded, axis=-1) * response, axis=-1))[..., :dets]
    return (np.pi / n_views) * op.adjoint(filtered.astype(y.dtype))


# -- metrics ---------------------------------------------------------------------------------------------

def psnr(x: jax.Array, ref: jax.Array, data_range: float = 1.0) -> jax.Array:
    """Peak signal-to-noise ratio per image, ``10 log10(range^2 / MSE)``: (B, ...) -> (B,)."""
    mse = jnp.mean((x - ref).reshape(x.shape[0], -1) ** 2, -1)
    return 10.0 * jnp.log10(data_range ** 2 / mse)


def gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> np.ndarray:
    """Normalised 1-D Gaussian ``exp(-t^2 / (2 sigma^2))``, ``|t| <= round(truncate sigma)`` (SSIM's window,
    as ``scipy.ndimage.gaussian_filter(..., truncate=3.5)`` in scikit-image's ``structural_similarity``)."""
    radius = int(truncate * sigma + 0.5)
    t = np.arange(-radius, radius + 1)
    g = np.exp(-t ** 2 / (2 * sigma ** 2))
    g /= g.sum()
    return g


@functools.partial(jax.jit, static_argnames=("data_range", "sigma", "k1", "k2"))
def ssim(x: jax.Array, ref: jax.Array, data_range: float = 1.0, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> jax.Array:
    """Structural similarity per image (Wang et al. 2004, eq. 13), (B, H, W) -> (B,):

    local means, variances and covariance under a Gaussian window (sigma 1.5, radius
    ``int(3.5 sigma + 0.5)`` = 5: 11 x 11, normalised; image borders reflected), ``C1 = (k1 L)^2``,
    ``C2 = (k2 L)^2``, the SSIM map averaged over the pixels at least ``radius`` from the border
    (the conventions of skimage's ``structural_similarity(gaussian_weights=True,
    use_sample_covariance=False)``).
    """
    if x.shape != ref.shape or x.ndim != 3:
        raise ValueError(f"ssim takes two batches of images (B, H, W) of one shape, got {x.shape}, {ref.shape}")
    g = jnp.asarray(gaussian_window(sigma), x.dtype)
    r = (g.shape[0] - 1) // 2
    if min(x.shape[1:]) <= 2 * r:
        raise ValueError(f"ssim's window needs images larger than {2 * r + 1} pixels, got {x.shape[1:]}")

    window = jnp.outer(g, g)                                            # (2r + 1, 2r + 1)

    def smooth(a):  # Gaussian filter with "reflect" (half-sample symmetric) borders: (B, H, W)
        a = jnp.pad(a, ((0, 0), (r, r), (r, r)), mode="symmetric")
        return jax.vmap(lambda im: jax.scipy.signal.convolve2d(im, window, mode="valid"))(a)

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mx, my = smooth(x), smooth(ref)
    vx, vy, cxy = smooth(x * x) - mx * mx, smooth(ref * ref) - my * my, smooth(x * ref) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return jnp.mean(s[:, r:-r, r:-r].reshape(x.shape[0], -1), -1)
