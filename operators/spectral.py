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

import functools
from collections.abc import Sequence
from typing import Literal, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = [
    "SpectralConv",
    "spectral_conv",
    "spectral_conv_dft",
    "corner_slices",
    "check_modes_fit",
    "choose_impl",
    "dft_matrices",
    "kept_frequencies",
    "as_complex",
    "as_real",
    "spatial_axes_str",
]

IMPLS = ("auto", "fft", "dft")
# Thresholds of choose_impl("auto", ...), from the measurements in its docstring.
_CPU_DFT_MAX_FRACTION = 0.4
_DFT_MAX_KEPT = 256

_SPATIAL_LETTERS = "xyz"


def spatial_axes_str(d: int) -> str:
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


def _check_conv_inputs(x: jax.Array, weight_shape: Sequence[int], modes: tuple[int, ...]) -> None:
    """Raise ``ValueError`` for a wrong rank, channel count or modes too large for the grid."""
    d = len(modes)
    if d not in (1, 2, 3):
        raise ValueError(f"spectral_conv supports 1, 2 or 3 spatial axes; got modes={modes} ({d} axes)")
    if x.ndim != d + 2:
        raise ValueError(
            f"x must be (batch, {spatial_axes_str(d)}, in_channels), i.e. rank {d + 2}, for modes={modes}; "
            f"got shape {tuple(x.shape)} (rank {x.ndim}); add a batch axis / channel axis or fix modes"
        )
    n_corners = 2 ** (d - 1)
    weight_shape = tuple(int(n) for n in weight_shape)
    if len(weight_shape) != d + 3 or weight_shape[0] != n_corners or weight_shape[3:] != modes:
        raise ValueError(
            f"weights must be (2^(d-1)={n_corners}, in_channels, out_channels, *modes={modes}); "
            f"got shape {weight_shape}"
        )
    if x.shape[-1] != weight_shape[1]:
        raise ValueError(
            f"x has {x.shape[-1]} channels in its last axis but the weights expect in_channels="
            f"{weight_shape[1]}; inputs are channels-last (batch, *spatial, channels)"
        )
    check_modes_fit(modes, x.shape[1:-1])


def spectral_conv(
    x: jax.Array,
    weights: jax.Array,
    modes: Sequence[int],
    *,
    precision: jax.lax.PrecisionLike = None,
    impl: str = "auto",
    compute_dtype=None,
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
      precision: passed to the contractions (see :func:`spectral_conv_dft` for the DFT path's default).
      impl: ``"fft"`` (full ``rfftn`` / ``irfftn``), ``"dft"`` (:func:`spectral_conv_dft`: the kept
        frequencies only, as matrix products) or ``"auto"`` (:func:`choose_impl`). Both give the
        same result up to round-off.
      compute_dtype: ``None``, or ``"bfloat16"`` for mixed precision (DFT path only).

    Returns:
      real array ``(batch, *spatial, out_channels)``.

    Raises:
      ValueError: at trace time for a wrong rank, channel count, modes too large for the grid or an
        unknown ``impl``.
    """
    modes = tuple(int(m) for m in modes)
    _check_conv_inputs(x, weights.shape, modes)
    if choose_impl(impl, x.shape[1:-1], modes, compute_dtype) == "dft":
        return spectral_conv_dft(x, jnp.real(weights), jnp.imag(weights), modes, precision=precision,
                                 compute_dtype=compute_dtype, _checked=True)
    return _spectral_conv_fft(x, weights, modes, precision=precision)


def _spectral_conv_fft(
    x: jax.Array, weights: jax.Array, modes: tuple[int, ...], *, precision: jax.lax.PrecisionLike
) -> jax.Array:
    """:func:`spectral_conv` by the full ``rfftn`` / ``irfftn`` (inputs already checked)."""
    d = len(modes)
    spatial = tuple(int(n) for n in x.shape[1:-1])
    out_channels = int(weights.shape[2])
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


# ----------------------------------------------------------------------------------------------
# Truncated DFT path: only the kept frequencies, as real matrix products.
# ----------------------------------------------------------------------------------------------
def kept_frequencies(n: int, m: int, last: bool) -> np.ndarray:
    """Signed frequencies kept on an axis of ``n`` points: ``0..m-1`` on the last (real-FFT) axis,
    ``0..m-1`` then ``-m..-1`` on the others (the order of the corners of :func:`corner_slices`)."""
    low = np.arange(m)
    return low if last else np.concatenate([low, low - m])


def _angles(n: int, freqs: np.ndarray) -> np.ndarray:
    """``2 pi (k j mod n) / n`` for k in ``freqs`` (rows) and j = 0..n-1 (columns), exact in k j."""
    kj = np.mod(np.outer(freqs.astype(np.int64), np.arange(n, dtype=np.int64)), n)
    return (2.0 * np.pi / n) * kj.astype(np.float64)


@functools.lru_cache(maxsize=128)
def dft_matrices(n: int, m: int, last: bool) -> tuple[np.ndarray, np.ndarray]:
    """Float64 real matrices ``(forward, inverse)`` of the truncated DFT on one axis of ``n`` points.

    With ``theta[k, j] = 2 pi k j / n`` for the kept frequencies k (:func:`kept_frequencies`):

    * last axis (real input, real output; ``rfft`` / ``irfft`` restricted to ``k < m``):
      ``forward[j, r, k]``: ``r=0``: ``cos theta``, ``r=1``: ``-sin theta``, so that
      ``X_r = sum_j x_j forward[j, r]`` are the real and imaginary parts of ``rfft(x)[:m]``;
      ``inverse[r, k, j] = (c_k / n) (cos theta, -sin theta)[r]`` with ``c_0 = 1``, ``c_{n/2} = 1``
      (n even), ``c_k = 2`` otherwise, so that ``sum_{r,k} Y_r[k] inverse[r, k, j]`` is
      ``irfft(Y, n)[j]`` for ``Y`` zero beyond ``m`` (the imaginary parts of the DC and Nyquist bins
      are dropped, as ``irfft`` does);
    * other axes (complex to complex, ``fft`` / ``ifft`` restricted to the kept k):
      ``forward[s, r, k, j]`` maps ``(Re, Im)`` (r) of the input to ``(Re, Im)`` (s) of
      ``sum_j exp(-i theta) z_j``: ``[[cos, sin], [-sin, cos]]``; ``inverse[s, r, j, k]`` is
      ``[[cos, -sin], [sin, cos]] / n`` for ``(1 / n) sum_k exp(+i theta) Z_k``.

    Built once per (n, m, last) with numpy and cached: the matrices follow the grid of the input,
    so one set of weights serves every resolution.
    """
    theta = _angles(n, kept_frequencies(n, m, last))  # (K, n)
    cos, sin = np.cos(theta), np.sin(theta)
    if last:
        forward = np.stack([cos, -sin], axis=0).transpose(2, 0, 1)  # (n, 2, m)
        c = np.full(m, 2.0)
        c[0] = 1.0
        if n % 2 == 0 and m == n // 2 + 1:
            c[-1] = 1.0  # the Nyquist bin appears once in the Hermitian spectrum
        inverse = np.stack([cos, -sin], axis=0) * (c[:, None] / n)  # (2, m, n)
        return forward, inverse
    forward = np.stack([np.stack([cos, sin]), np.stack([-sin, cos])])  # (2, 2, K, n)
    inverse = np.stack([np.stack([cos, -sin]), np.stack([sin, cos])]).transpose(0, 1, 3, 2) / n  # (2, 2, n, K)
    return forward, inverse


def _block_weights(w_re: jax.Array, w_im: jax.Array, modes: tuple[int, ...]) -> jax.Array:
    """Corner weights ``(2^(d-1), in, out, *modes)`` (real and imaginary parts) -> the real block
    form ``(2, in, 2, out, K_1, .., K_{d-1}, m_d)`` of the complex product ``Y = X W`` on the kept
    frequencies (:func:`kept_frequencies` order, ``K_j = 2 m_j``):

        Y_re = X_re W_re - X_im W_im,   Y_im = X_re W_im + X_im W_re,
        block[r, i, s, o] = [[W_re, W_im], [-W_im, W_re]][r][s].
    """
    d = len(modes)
    cin, cout = w_re.shape[1], w_re.shape[2]

    def to_frequencies(w):
        # (2^(d-1), in, out, *modes) -> (in, out, K_1, .., K_{d-1}, m_d); corner c = sum_j h_j 2^j
        # takes the high (negative) half of axis j when bit h_j is set.
        w = w.reshape((2,) * (d - 1) + (cin, cout) + modes)  # (h_{d-2}, .., h_0, in, out, *modes)
        order = [d - 1, d]  # in, out
        for j in range(d - 1):
            order += [d - 2 - j, d + 1 + j]  # h_j, k_j: adjacent, h_j major
        order.append(2 * d)  # k_d (last axis: no corner bit)
        w = w.transpose(order)  # (in, out, h_0, k_0, .., h_{d-2}, k_{d-2}, k_{d-1})
        return w.reshape((cin, cout) + tuple(2 * m for m in modes[:-1]) + (modes[-1],))

    re, im = to_frequencies(w_re), to_frequencies(w_im)
    row_re = jnp.stack([re, im], axis=1)  # (in, s=2, out, *K): what X_re multiplies
    row_im = jnp.stack([-im, re], axis=1)  # (in, s=2, out, *K): what X_im multiplies
    return jnp.stack([row_re, row_im], axis=0)  # (r=2, in, s=2, out, *K)


_LOW_PRECISION = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def spectral_conv_dft(
    x: jax.Array,
    w_re: jax.Array,
    w_im: jax.Array,
    modes: Sequence[int],
    *,
    precision: jax.lax.PrecisionLike = None,
    compute_dtype=None,
    _checked: bool = False,
) -> jax.Array:
    """:func:`spectral_conv` by truncated DFTs: real matrix products over the kept frequencies only.

    Forward: the real DFT of the last axis restricted to ``k < m_d`` (an ``(n_d, 2 m_d)`` matrix),
    then the complex DFT of every other axis restricted to its ``2 m_j`` kept frequencies (real and
    imaginary parts split: a ``(2 K_j, 2 n_j)`` real matrix); the complex channel mixing as one real
    product per frequency with the block weights of :func:`_block_weights`; the inverse in the
    opposite order, ending with the ``irfft`` of the last axis. Cost ``O(n_j m_j)`` per axis and
    point instead of ``O(n_j log n_j)``; every step is a ``dot_general``.

    Args:
      x: real ``(batch, *spatial, in_channels)``.
      w_re, w_im: real and imaginary parts of the weights, ``(2^(d-1), in, out, *modes)`` each.
      modes: kept frequencies per axis.
      precision: of every contraction; default ``HIGHEST`` for float32/float64 compute (so that the
        result equals the FFT path to round-off on every backend; TPUs and GPUs otherwise round
        float32 matmul operands to bfloat16 / tf32), the backend default for low precision.
      compute_dtype: dtype of the operands of every product (``"bfloat16"`` for mixed precision:
        inputs, transform matrices, weights and every intermediate spectrum are rounded to
        bfloat16, products accumulate in float32). Default: the input's and weights' dtype.

    Returns:
      ``(batch, *spatial, out_channels)`` in ``x.dtype``.
    """
    modes = tuple(int(m) for m in modes)
    if not _checked:
        if w_re.shape != w_im.shape:
            raise ValueError(f"w_re and w_im must have one shape; got {w_re.shape} and {w_im.shape}")
        _check_conv_inputs(x, w_re.shape, modes)
    d = len(modes)
    spatial = tuple(int(n) for n in x.shape[1:-1])
    cdt = _compute_dtype(compute_dtype) or jnp.result_type(x.dtype, w_re.dtype)
    acc = jnp.dtype(jnp.float32) if cdt in _LOW_PRECISION else cdt
    if precision is None and cdt not in _LOW_PRECISION:
        precision = jax.lax.Precision.HIGHEST

    def contract(spec: str, a, b) -> jax.Array:
        # The cached float64 numpy matrices are cast in numpy, to a new array per trace: passing the
        # cached object itself to jnp lets JAX reuse its first conversion (float32 in a float32
        # trace) in a later float64 trace.
        a, b = a.astype(cdt), b.astype(cdt)
        return jnp.einsum(spec, a, b, precision=precision, preferred_element_type=acc)

    mats = [dft_matrices(n, m, j == d - 1) for j, (n, m) in enumerate(zip(spatial, modes))]
    X, U = _SPATIAL_LETTERS[:d], "uvw"[:d]
    # Forward, last axis (real -> complex): (b, *spatial, c) -> (r, b, n_1, .., n_{d-1}, m_d, c)
    z = contract(f"b{X}c,{X[-1]}r{U[-1]}->rb{X[:-1]}{U[-1]}c", x, mats[-1][0])
    for j in reversed(range(d - 1)):
        # axis j (complex): (r, b, n_1..n_j, K_{j+1}.., c) -> (s, b, n_1..n_{j-1}, K_j, .., c)
        z = contract(f"sr{U[j]}{X[j]},rb{X[:j + 1]}{U[j + 1:]}c->sb{X[:j]}{U[j:]}c", mats[j][0], z)
    # Channel mixing per kept frequency: (r, b, *K, in) -> (s, b, *K, out)
    y = contract(f"rb{U}i,riso{U}->sb{U}o", z, _block_weights(w_re, w_im, modes))
    for j in range(d - 1):
        # inverse of axis j (complex): (r, b, n_1..n_{j-1}, K_j.., o) -> (s, b, n_1..n_j, K_{j+1}.., o)
        y = contract(f"sr{X[j]}{U[j]},rb{X[:j]}{U[j:]}o->sb{X[:j + 1]}{U[j + 1:]}o", mats[j][1], y)
    # inverse of the last axis (complex -> real): (r, b, n_1..n_{d-1}, m_d, o) -> (b, *spatial, o)
    out = contract(f"rb{X[:-1]}{U[-1]}o,r{U[-1]}{X[-1]}->b{X}o", y, mats[-1][1])
    return out.astype(x.dtype)


def _compute_dtype(compute_dtype) -> Optional[jnp.dtype]:
    """``None`` or a floating dtype (``"bfloat16"``, ``jnp.float32``, ...); anything else is an error."""
    if compute_dtype is None:
        return None
    try:
        dtype = jnp.dtype(compute_dtype)
    except TypeError as err:
        raise ValueError(f"compute_dtype={compute_dtype!r} is not a dtype; use null (the input's dtype), "
                         f"'bfloat16' (mixed precision) or 'float32'") from err
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"compute_dtype must be a real floating dtype such as 'bfloat16'; got {dtype}")
    return dtype


def choose_impl(
    impl: str,
    spatial_shape: Sequence[int],
    modes: Sequence[int],
    compute_dtype=None,
    backend: Optional[str] = None,
) -> Literal["fft", "dft"]:
    """The spectral-convolution path for ``impl`` on a grid: ``"fft"`` and ``"dft"`` as asked,
    ``"auto"`` by backend and size.

    ``auto`` (decided at trace time from static shapes):

    * a low-precision ``compute_dtype`` (bfloat16) needs the DFT path (no FFT in bfloat16);
    * GPU / TPU: ``"dft"`` unless an axis keeps more than ``_DFT_MAX_KEPT`` (256) frequencies.
      Every step of the DFT path is a dense matmul (tensor cores, the TPU MXU) while the FFT path is
      separate FFT, gather and scatter calls that XLA does not fuse, and TPU FFTs are slow; at the
      FNO's sizes (tens of modes) the O(n K) matmul costs few FLOPs. A rule by argument, not by
      measurement: no accelerator was available to this work. Note that float32 products run at
      ``HIGHEST`` precision by default (exact to round-off; no tf32 / one-pass bf16), so the
      tensor-core speed is for ``compute_dtype="bfloat16"``.
    * CPU: ``"dft"`` when the kept frequencies are a small part of every axis,
      ``K_j / n_j <= _CPU_DFT_MAX_FRACTION`` (``K_j = 2 m_j`` on all but the last axis, ``m_d`` on
      the last), else ``"fft"``. Measured on this project's 2-core CPU machine (XLA:CPU, jax 0.10.2,
      tuned allocator, experiments/allocator.py), forward + backward of one layer, CPU time of the
      FFT path over the DFT path's (above 1: the DFT path wins), busy machine, interleaved runs:

      ====================  ======  =====  ========  =============
      grid                  modes   B x C  max K/n   fft / dft
      ====================  ======  =====  ========  =============
      1024                  16      20x64  0.016     1.53
      4096                  16      20x64  0.004     1.37
      256                   16      20x64  0.062     1.33
      64                    32      20x64  0.5       0.90
      24 x 24               12, 12  16x32  1.0       0.77
      32 x 32               12, 12  16x32  0.75      0.85
      64 x 64               12, 12  16x32  0.375     1.44
      64 x 64               24, 24  16x32  0.75      0.67
      128 x 128             12, 12  16x32  0.19      1.47
      127 x 127 (prime n)   12, 12  16x32  0.19      4.27
      256 x 256             12, 12  4x32   0.094     1.40
      32 x 32 x 20          8, 8, 8 4x20   0.5       0.90
      64 x 64 x 40          8, 8, 8 2x20   0.25      1.62
      ====================  ======  =====  ========  =============

      hence the threshold 0.4 (for the whole FNO step: ``python -m experiments.bench fno --impl fft
      dft --resolution N --modes M``).
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}; got {impl!r}")
    low_precision = _compute_dtype(compute_dtype) in _LOW_PRECISION
    if impl == "fft" and low_precision:
        raise ValueError(f"compute_dtype={compute_dtype!r} (mixed precision) runs on the DFT path only; "
                         f"use impl='dft' or 'auto', or compute_dtype=null with impl='fft'")
    if impl != "auto":
        return impl  # type: ignore[return-value]
    if low_precision:
        return "dft"
    spatial_shape = tuple(int(n) for n in spatial_shape)
    modes = tuple(int(m) for m in modes)
    kept = tuple(2 * m for m in modes[:-1]) + (modes[-1],)
    backend = backend or jax.default_backend()
    if backend != "cpu":
        return "dft" if max(kept) <= _DFT_MAX_KEPT else "fft"
    fractions = [k / n for k, n in zip(kept, spatial_shape)]
    return "dft" if max(fractions) <= _CPU_DFT_MAX_FRACTION else "fft"


def as_complex(weight: jax.Array) -> jax.Array:
    """``(..., 2)`` real storage -> complex ``(...)`` with real part ``[..., 0]``, imaginary ``[..., 1]``."""
    return jax.lax.complex(weight[..., 0], weight[..., 1])


def as_real(z: jax.Array) -> jax.Array:
    """Complex ``(...)`` -> ``(..., 2)`` real storage (real, imaginary): the inverse of :func:`as_complex`."""
    return jnp.stack([jnp.real(z), jnp.imag(z)], axis=-1)


class SpectralConv(nnx.Module):
    """Fourier layer kernel ``K v = F^{-1}(R . F v)`` of Li et al. (2021), eq. (4), without bias.

    Parameters: ``weight`` of shape ``(2^(d-1), in_channels, out_channels, *modes, 2)`` (float),
    the complex tensor R stored as (real, imaginary) on the trailing axis so that optimisers,
    sharding and checkpoints see only real arrays. Initialised as the original code:
    ``scale * U[0, 1)`` for both parts with ``scale = 1 / (in_channels * out_channels)``.

    ``impl``: ``"auto"`` (:func:`choose_impl`), ``"fft"`` or ``"dft"`` (:func:`spectral_conv_dft`);
    the same function either way, so the choice never changes a checkpoint. ``compute_dtype``:
    ``None`` or ``"bfloat16"`` (mixed precision on the DFT path: bfloat16 operands, float32
    accumulation).

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
        impl: str = "auto",
        compute_dtype: Optional[str] = None,
    ) -> None:
        modes = tuple(int(m) for m in modes)
        if len(modes) not in (1, 2, 3):
            raise ValueError(f"SpectralConv supports 1, 2 or 3 spatial axes; got modes={modes}")
        if any(m < 1 for m in modes):
            raise ValueError(f"all modes must be >= 1; got modes={modes}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channel counts must be >= 1; got in={in_channels}, out={out_channels}")
        choose_impl(impl, (2 * max(modes),) * len(modes), modes, compute_dtype)  # validates both
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.modes = modes
        self.impl = impl
        self.compute_dtype = None if compute_dtype is None else str(jnp.dtype(compute_dtype))
        n_corners = 2 ** (len(modes) - 1)
        scale = 1.0 / (in_channels * out_channels)
        shape = (n_corners, in_channels, out_channels, *modes, 2)
        self.weight = nnx.Param(scale * jax.random.uniform(rngs.params(), shape, dtype=param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x``: ``(batch, *spatial, in_channels)`` -> ``(batch, *spatial, out_channels)``."""
        weight = self.weight[...]  # (2^(d-1), in, out, *modes, 2)
        _check_conv_inputs(x, weight.shape[:-1], self.modes)
        if choose_impl(self.impl, x.shape[1:-1], self.modes, self.compute_dtype) == "dft":
            return spectral_conv_dft(x, weight[..., 0], weight[..., 1], self.modes,
                                     compute_dtype=self.compute_dtype, _checked=True)
        return _spectral_conv_fft(x, as_complex(weight), self.modes, precision=None)
