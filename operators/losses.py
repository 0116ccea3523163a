"""Relative error losses for operator learning on channels-last arrays ``(batch, *spatial, channels)``.

All follow the convention of the FNO reference code (Li et al., ICLR 2021, arXiv:2010.08895,
``LpLoss.rel`` in ``utilities3.py``) and of ``neuraloperator``'s ``LpLoss`` / ``H1Loss``: a relative
error is computed per sample and then averaged over the batch (not a pooled ratio of batch sums).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["relative_lp", "relative_h1", "relative_hs", "finite_difference_gradient", "integer_wavenumbers"]

Reduction = Literal["mean", "sum", "none"]


def _reduce(per_sample: jax.Array, reduction: Reduction) -> jax.Array:
    if reduction == "mean":
        return jnp.mean(per_sample)
    if reduction == "sum":
        return jnp.sum(per_sample)
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none'; got {reduction!r}")


def _safe_root(s: jax.Array, p: float) -> jax.Array:
    """``s ** (1/p)`` for ``s >= 0`` with a zero (not NaN) gradient at ``s == 0``.

    Only an exact zero is special-cased: NaN and inf propagate, so a diverged model shows a NaN/inf
    loss instead of a silent 0.
    """
    zero = s == 0
    return jnp.where(zero, 0.0, jnp.where(zero, 1.0, s) ** (1.0 / p))


def _check_pair(pred: jax.Array, target: jax.Array, name: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred and target shapes differ: {pred.shape} vs {target.shape}")
    if pred.ndim < 2:
        raise ValueError(f"{name}: inputs must be (batch, ...) with at least 2 axes; got {pred.shape}")


def relative_lp(
    pred: jax.Array, target: jax.Array, p: float = 2, reduction: Reduction = "mean"
) -> jax.Array:
    """Relative L^p error, per sample over all non-batch axes, then reduced over the batch.

        r_b = ||pred_b - target_b||_p / ||target_b||_p,   ||v||_p = (sum |v|^p)^(1/p),
        loss = mean_b r_b  (reduction="mean"), sum_b r_b ("sum") or the vector r ("none").

    This is ``LpLoss.rel`` of the FNO reference code (Li et al., 2021). Any uniform quadrature weight
    cancels in the ratio. ``p >= 1``; ``p = inf`` gives the max-norm ratio.

    Args:
      pred, target: ``(batch, ...)``, same shape.
    Returns:
      scalar, or ``(batch,)`` for ``reduction="none"``.
    """
    _check_pair(pred, target, "relative_lp")
    if not p >= 1:
        raise ValueError(f"relative_lp needs p >= 1; got p={p}")
    batch = pred.shape[0]
    diff = (pred - target).reshape(batch, -1)  # (batch, n_points * channels)
    ref = target.reshape(batch, -1)  # (batch, n_points * channels)
    if p == float("inf"):
        num = jnp.max(jnp.abs(diff), axis=1)
        den = jnp.max(jnp.abs(ref), axis=1)
    else:
        num = _safe_root(jnp.sum(jnp.abs(diff) ** p, axis=1), p)
        den = _safe_root(jnp.sum(jnp.abs(ref) ** p, axis=1), p)
    return _reduce(num / den, reduction)


def _default_spacing(spatial_shape: Sequence[int], periodic: bool) -> tuple[float, ...]:
    # Nodal grid on [0, 1] (both ends included) or periodic grid on [0, 1) without the duplicate end.
    return tuple(1.0 / n if periodic else 1.0 / (n - 1) for n in spatial_shape)


def finite_difference_gradient(
    u: jax.Array, spacing: Sequence[float], periodic: bool = False
) -> list[jax.Array]:
    """Partial derivatives of ``u: (batch, *spatial, channels)`` along each spatial axis.

    Interior (and everywhere when ``periodic``, wrapping around): central difference
    ``(u[i+1] - u[i-1]) / (2h)``. Non-periodic boundaries: second-order one-sided
    ``(-3 u[0] + 4 u[1] - u[2]) / (2h)`` and ``(3 u[n-1] - 4 u[n-2] + u[n-3]) / (2h)``, as
    ``numpy.gradient(..., edge_order=2)``. All are exact for quadratics; error O(h^2).

    Returns a list of d arrays, each ``(batch, *spatial, channels)``.
    """
    d = u.ndim - 2
    grads = []
    for j in range(d):
        axis, h = j + 1, float(spacing[j])
        n = u.shape[axis]
        if periodic:
            g = (jnp.roll(u, -1, axis=axis) - jnp.roll(u, 1, axis=axis)) / (2.0 * h)
        else:
            if n < 3:
                raise ValueError(
                    f"non-periodic finite differences need >= 3 points per axis; axis {j} has {n}"
                )
            take = lambda start, stop: jax.lax.slice_in_dim(u, start, stop, axis=axis)  # noqa: E731
            interior = (take(2, n) - take(0, n - 2)) / (2.0 * h)  # (.., n - 2, ..)
            first = (-3.0 * take(0, 1) + 4.0 * take(1, 2) - take(2, 3)) / (2.0 * h)  # (.., 1, ..)
            last = (3.0 * take(n - 1, n) - 4.0 * take(n - 2, n - 1) + take(n - 3, n - 2)) / (2.0 * h)
            g = jnp.concatenate([first, interior, last], axis=axis)  # (.., n, ..)
        grads.append(g)
    return grads


def relative_h1(
    pred: jax.Array,
    target: jax.Array,
    spacing: float | Sequence[float] | None = None,
    periodic: bool = False,
    reduction: Reduction = "mean",
) -> jax.Array:
    """Relative H^1 error, per sample, then reduced over the batch.

    With e = pred - target and a uniform quadrature weight w = prod_j h_j,

        ||v||_{H1}^2 = w * sum_points sum_channels ( v^2 + sum_j (d_j v)^2 ),
        r_b = ||e_b||_{H1} / ||target_b||_{H1},   loss = mean_b r_b ("mean"), sum or vector ("none").

    Derivatives d_j by :func:`finite_difference_gradient` (central, second-order one-sided at
    non-periodic boundaries, wrap-around when ``periodic``). ``spacing`` h per spatial axis defaults
    to ``1 / (n - 1)`` (nodal grid on [0, 1]) or ``1 / n`` when ``periodic`` (grid on [0, 1)), so the
    ratio approximates the continuous H^1 norm ratio. (The uniform weight w cancels in the ratio but
    is kept so that both norms are quadratures.) Same per-sample-then-average convention as
    ``neuraloperator``'s ``H1Loss`` and the FNO reference ``LpLoss.rel``.

    Args:
      pred, target: ``(batch, *spatial, channels)``, same shape.
    Returns:
      scalar, or ``(batch,)`` for ``reduction="none"``.
    """
    _check_pair(pred, target, "relative_h1")
    if pred.ndim < 3:
        raise ValueError(
            f"relative_h1: inputs must be (batch, *spatial, channels); got shape {pred.shape}"
        )
    spatial = pred.shape[1:-1]
    d = len(spatial)
    if spacing is None:
        h = _default_spacing(spatial, periodic)
    elif isinstance(spacing, (int, float)):
        h = (float(spacing),) * d
    else:
        h = tuple(float(s) for s in spacing)
        if len(h) != d:
            raise ValueError(f"relative_h1: spacing needs {d} entries (one per spatial axis); got {h}")
    weight = 1.0
    for hj in h:
        weight *= hj

    def sq_norm(v: jax.Array) -> jax.Array:  # (batch, *spatial, channels) -> (batch,)
        total = v**2 + sum(g**2 for g in finite_difference_gradient(v, h, periodic))
        return weight * jnp.sum(total.reshape(v.shape[0], -1), axis=1)

    ratio = _safe_root(sq_norm(pred - target), 2) / jnp.sqrt(sq_norm(target))
    return _reduce(ratio, reduction)


def integer_wavenumbers(n: int, truncation: int | None = None) -> np.ndarray:
    """|k| of the DFT of n points in FFT order (0, 1, ..., -2, -1), as integers; with ``truncation``,
    entries with |k| >= truncation are set to 0 (``HsLoss(truncation=True)`` of the MgNO code, 20)."""
    k = np.abs(np.fft.fftfreq(n, d=1.0 / n)).round()
    if truncation is not None:
        k = np.where(k < truncation, k, 0.0)
    return k


def relative_hs(
    pred: jax.Array,
    target: jax.Array,
    a: float | Sequence[float] = 1.0,
    truncation: int | None = 20,
    balanced: bool = False,
    reduction: Reduction = "mean",
) -> jax.Array:
    """Relative Sobolev-type error measured in Fourier space (``HsLoss`` of the MgNO / FNO codes).

    With X, Y the orthonormal DFTs of pred and target over the spatial axes (``fftn(norm="ortho")``),
    integer wave numbers k_j (``fftfreq(n_j) * n_j``, any of them with |k_j| >= ``truncation`` counted
    as 0 in the weight) and |k|^2 = sum_j k_j^2, for s = len(a):

        w(k) = sqrt(1 + a_1^2 |k|^2 + a_2^2 |k|^4 + ... + a_s^2 |k|^(2 s)),
        r_b = ||w (X_b - Y_b)||_2 / ||w Y_b||_2,        loss = mean_b r_b  ("mean"), sum or vector,

    or with ``balanced`` the average of the separate ratios of the s + 1 terms:
    r_b = (||X-Y|| / ||Y|| + sum_m ||a_m |k|^m (X-Y)|| / ||a_m |k|^m Y||) / (s + 1).

    For a 1-periodic field on [0, 1)^d sampled at n_j points per axis, Parseval gives
    ||w U||^2 = sum_x (u^2 + a_1^2 |grad u|^2 / (2 pi)^2 + ...) for band-limited u below the truncation:
    with ``a = 2 pi`` the s = 1 norm is the discrete H^1 norm. The reference (``utilities3.HsLoss``,
    xlliu2017/MgNO; default ``a = [1]``, which its ``darcy.py`` uses, with truncation at 20) is square
    2-D and lists the frequencies of an odd n as (0..(n-1)/2-1, -(n+1)/2..-1); here every axis uses
    ``fftfreq``, which is the same for even n. The DFT sees the grid as periodic, so on non-periodic
    data the |k| weight also counts the jump across the boundary.

    Args:
      pred, target: ``(batch, *spatial, channels)``, same shape.
      a: weights a_1..a_s of the derivative orders (a number: s = 1).
      truncation: wave numbers at or above it get no derivative weight (None: no truncation).
      balanced: average the per-order ratios instead of one ratio of the combined norm.
    Returns:
      scalar, or ``(batch,)`` for ``reduction="none"``.
    """
    _check_pair(pred, target, "relative_hs")
    if pred.ndim < 3:
        raise ValueError(f"relative_hs: inputs must be (batch, *spatial, channels); got shape {pred.shape}")
    a = (float(a),) if isinstance(a, (int, float)) else tuple(float(x) for x in a)
    if not a:
        raise ValueError("relative_hs: a needs at least one weight (a_1 for the first derivatives)")
    if truncation is not None and truncation < 1:
        raise ValueError(f"relative_hs: truncation must be >= 1 or None; got {truncation}")
    spatial = pred.shape[1:-1]
    axes = tuple(range(1, len(spatial) + 1))
    k2 = np.zeros(spatial)
    for j, n in enumerate(spatial):  # |k|^2 = sum_j k_j^2 on the grid of wave numbers
        kj = integer_wavenumbers(n, truncation).reshape([n if i == j else 1 for i in range(len(spatial))])
        k2 = k2 + kj**2
    k2 = k2[None, ..., None]  # (1, *spatial, 1)
    x = jnp.fft.fftn(pred, axes=axes, norm="ortho")  # (batch, *spatial, channels) complex
    y = jnp.fft.fftn(target, axes=axes, norm="ortho")

    def ratio(weight_sq: np.ndarray) -> jax.Array:  # ||w (X - Y)|| / ||w Y|| per sample, w^2 given
        w2 = jnp.asarray(weight_sq, dtype=pred.dtype)
        sq = lambda z: z.real**2 + z.imag**2  # noqa: E731  (|z|^2 with a finite gradient at z = 0)
        num = jnp.sum((w2 * sq(x - y)).reshape(pred.shape[0], -1), axis=1)  # (batch,)
        den = jnp.sum((w2 * sq(y)).reshape(pred.shape[0], -1), axis=1)  # (batch,)
        return _safe_root(num, 2) / jnp.sqrt(den)

    if balanced:
        terms = [ratio(np.ones_like(k2))] + [ratio(am**2 * k2**m) for m, am in enumerate(a, start=1)]
        per_sample = sum(terms) / len(terms)
    else:
        per_sample = ratio(1.0 + sum(am**2 * k2**m for m, am in enumerate(a, start=1)))
    return _reduce(per_sample, reduction)
