"""Fourier-space convolution layer of the Fourier neural operator.

Li, Kovachki, Azizzadenesheli, Liu, Bhattacharya, Stuart, Anandkumar, "Fourier Neural Operator for
Parametric Partial Differential Equations", ICLR 2021, arXiv:2010.08895, eq. (4) and Section 4:

    (K v)(x) = F^{-1}( R . (F v) )(x),

where F is the discrete Fourier transform over the spatial axes, the spectrum is truncated to the
lowest ``modes`` frequencies per axis and R is a learned complex tensor that mixes channels
independently for every kept frequency.

Layout is channels-last: ``(batch, *spatial, channels)`` with 1, 2 or 3 spatial axes.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["SpectralConv", "spectral_conv", "corner_slices", "check_modes_fit"]

_SPATIAL_LETTERS = "xyz"


def _axes_str(d: int) -> str:
    """``"n1, n2"`` for d=2: names of the spatial axes in error messages."""
    return ", ".join(f"n{j + 1}" for j in range(d))


def _fmt_grid(sizes: Sequence[int]) -> str:
    return " x ".join(str(int(s)) for s in sizes)


def check_modes_fit(modes: Sequence[int], spatial_shape: Sequence[int], *, what: str = "grid") -> None:
    """Raise ``ValueError`` unless ``modes`` can be kept on a grid of ``spatial_shape`` points.

    On every axis but the last both the frequencies ``0..m-1`` and ``-m..-1`` are kept, which needs
    ``2 m <= n``; the last axis is the real-FFT axis with ``n // 2 + 1`` bins, so ``m <= n // 2 + 1``
    (i.e. ``n >= 2 (m - 1)``).
    """
    modes = tuple(int(m) for m in modes)
    spatial_shape = tuple(int(n) for n in spatial_shape)
    needed = tuple(2 * m for m in modes[:-1]) + (max(2 * (modes[-1] - 1), 1),)
    if any(n < need for n, need in zip(spatial_shape, needed)):
        raise ValueError(
            f"modes={modes} needs a {what} of at least {_fmt_grid(needed)} points "
            f"(got {_fmt_grid(spatial_shape)}); lower the modes or raise the resolution"
        )


def corner_slices(modes: Sequence[int], spatial_shape: Sequence[int]) -> list[tuple[slice, ...]]:
    """Spatial index slices of the ``2^(d-1)`` kept corner blocks of an ``rfftn`` spectrum.

    Corner ``c`` takes the negative frequencies ``n-m..n-1`` on non-last axis ``j`` when bit ``j``
    of ``c`` is set and ``0..m-1`` otherwise; the last (real-FFT) axis always takes ``0..m-1``.
    This matches the weight order of the original code (2-D: weights1 ``[:m1, :m2]``, weights2
    ``[-m1:, :m2]``; 3-D: weights3 ``[:m1, -m2:]``, weights4 ``[-m1:, -m2:]``, ...).
    """
    d = len(modes)
    slices = []
    for c in range(2 ** (d - 1)):
        per_axis = []
        for j in range(d - 1):
            m, n = int(modes[j]), int(spatial_shape[j])
            per_axis.append(slice(n - m, n) if (c >> j) & 1 else slice(0, m))
        per_axis.append(slice(0, int(modes[-1])))
        slices.append(tuple(per_axis))
    return slices


def spectral_conv(
    x: jax.Array,
    weights: jax.Array,
    modes: Sequence[int],
    *,
    precision: jax.lax.PrecisionLike = None,
) -> jax.Array:
    """Truncated Fourier-space channel mixing, Li et al. (2021) eq. (4).

    With ``X = rfftn(x)`` over the d spatial axes (default "backward" norm, as ``torch.fft``),

        Y[b, k, o] = sum_i X[b, k, i] W_c[i, o, k - k_c]   for k in corner c,   Y = 0 elsewhere,
        out = irfftn(Y, s=spatial shape).

    Args:
      x: real array ``(batch, *spatial, in_channels)`` with d = len(modes) spatial axes.
      weights: complex array ``(2^(d-1), in_channels, out_channels, *modes)``, one block per
        kept corner in the order of :func:`corner_slices`.
      modes: number of kept frequencies per spatial axis (see :func:`check_modes_fit`).
      precision: passed to the channel contraction.

    Returns:
      real array ``(batch, *spatial, out_channels)``.

    Raises:
      ValueError: at trace time for a wrong rank, channel count or modes too large for the grid.
    """
    modes = tuple(int(m) for m in modes)
    d = len(modes)
    if d not in (1, 2, 3):
        raise ValueError(f"spectral_conv supports 1, 2 or 3 spatial axes; got modes={modes} ({d} axes)")
    if x.ndim != d + 2:
        raise ValueError(
            f"x must be (batch, {_axes_str(d)}, in_channels), i.e. rank {d + 2}, for modes={modes}; "
            f"got shape {tuple(x.shape)} (rank {x.ndim}); add a batch axis / channel axis or fix modes"
        )
    n_corners = 2 ** (d - 1)
    if weights.ndim != d + 3 or weights.shape[0] != n_corners or tuple(weights.shape[3:]) != modes:
        raise ValueError(
            f"weights must be (2^(d-1)={n_corners}, in_channels, out_channels, *modes={modes}); "
            f"got shape {tuple(weights.shape)}"
        )
    in_channels, out_channels = int(weights.shape[1]), int(weights.shape[2])
    if x.shape[-1] != in_channels:
        raise ValueError(
            f"x has {x.shape[-1]} channels in its last axis but the weights expect in_channels="
            f"{in_channels}; inputs are channels-last (batch, *spatial, channels)"
        )
    spatial = tuple(int(n) for n in x.shape[1:-1])
    check_modes_fit(modes, spatial)

    axes = tuple(range(1, d + 1))
    x_ft = jnp.fft.rfftn(x, axes=axes)  # (batch, n1, .., n_{d-1}, n_d // 2 + 1, in_channels)
    ks = _SPATIAL_LETTERS[:d]
    contraction = f"b{ks}i,io{ks}->b{ks}o"

    out_shape = (x.shape[0], *spatial[:-1], spatial[-1] // 2 + 1, out_channels)
    dtype = jnp.result_type(x_ft.dtype, weights.dtype)
    out_ft = jnp.zeros(out_shape, dtype=dtype)  # (batch, n1, .., n_d // 2 + 1, out_channels)
    for c, sl in enumerate(corner_slices(modes, spatial)):
        index = (slice(None), *sl, slice(None))
        block = jnp.einsum(contraction, x_ft[index], weights[c], precision=precision)
        out_ft = out_ft.at[index].set(block)  # block: (batch, m1, .., md, out_channels)
    return jnp.fft.irfftn(out_ft, s=spatial, axes=axes)  # (batch, *spatial, out_channels)


def _as_complex(weight: jax.Array) -> jax.Array:
    """``(..., 2)`` real storage -> complex ``(...)`` with real part ``[..., 0]``, imaginary ``[..., 1]``."""
    return jax.lax.complex(weight[..., 0], weight[..., 1])


class SpectralConv(nnx.Module):
    """Fourier layer kernel ``K v = F^{-1}(R . F v)`` of Li et al. (2021), eq. (4), without bias.

    Parameters: ``weight`` of shape ``(2^(d-1), in_channels, out_channels, *modes, 2)`` (float),
    the complex tensor R stored as (real, imaginary) on the trailing axis so that optimisers,
    sharding and checkpoints see only real arrays. Initialised as the original code:
    ``scale * U[0, 1)`` for both parts with ``scale = 1 / (in_channels * out_channels)``.

    Call: ``(batch, *spatial, in_channels) -> (batch, *spatial, out_channels)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes: Sequence[int],
        *,
        rngs: nnx.Rngs,
        param_dtype: jnp.dtype = jnp.float32,
    ) -> None:
        modes = tuple(int(m) for m in modes)
        if len(modes) not in (1, 2, 3):
            raise ValueError(f"SpectralConv supports 1, 2 or 3 spatial axes; got modes={modes}")
        if any(m < 1 for m in modes):
            raise ValueError(f"all modes must be >= 1; got modes={modes}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channel counts must be >= 1; got in={in_channels}, out={out_channels}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.modes = modes
        n_corners = 2 ** (len(modes) - 1)
        scale = 1.0 / (in_channels * out_channels)
        shape = (n_corners, in_channels, out_channels, *modes, 2)
        self.weight = nnx.Param(scale * jax.random.uniform(rngs.params(), shape, dtype=param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x``: ``(batch, *spatial, in_channels)`` -> ``(batch, *spatial, out_channels)``."""
        return spectral_conv(x, _as_complex(self.weight[...]), self.modes)
