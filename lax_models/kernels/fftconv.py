"""FFT long convolution as a Pallas kernel: Monarch-decomposed DFTs, fused, with a custom VJP.

The function (per batch row b and channel h, length L, FFT size N >= 2L so that the circular
convolution is the linear, causal one):

    y = irfft(rfft(u, N) * rfft(k, N), N)[:L] + D u,     i.e.  y_i = sum_{m<=i} k_m u_{i-m} + D u_i.

Monarch decomposition (FlashFFTConv, Fu, Kumbong, Nguyen, Ré, ICLR 2024, arXiv:2311.05908; the
four-step Cooley-Tukey FFT written as matrix products). With N = N1 N2 and the input laid out as a
matrix A[n1, n2] = x[N2 n1 + n2] (a free row-major reshape), the DFT X[k1 + N1 k2] is

    X = ((F_N1 A) * T) F_N2,      F_M[j, l] = exp(-2 pi i j l / M),  T[k1, n2] = exp(-2 pi i k1 n2 / N),

stored as a matrix in (k1, k2) order, and the inverse DFT of a spectrum Z in that order is

    x = conj(F_N1) ((Z conj(F_N2)) * conj(T)) / N.

The zero padding from L to N is implicit: only the first N1/2 rows of A are non-zero (N = 2 L_p with
L_p >= L, N1 even), so the first product uses the first N1/2 columns of F_N1 only, and only the
first N1/2 rows of the inverse are computed. Real and imaginary parts are separate real arrays
throughout; every product is a real matmul (tensor cores / MXU), with fp32 accumulation. The
filter's spectrum ``rfft(k)`` is computed once per call outside the kernel (``(H, N)``, no batch);
the kernel does forward DFT, pointwise product, inverse DFT and the skip for a block of
(batch row, channels) in one pass over memory.

The backward pass is two more such convolutions (``jax.custom_vjp``):

    du = correlation of dy with k:  du_j = sum_{i>=j} k_{i-j} dy_i + D dy_j   (the spectrum conj(K))
    dk = correlation of dy with u:  dk_m = sum_b sum_i dy_{b,i} u_{b,i-m}     (both transformed in-kernel)
    dD = sum_{b,i} dy_{b,i} u_{b,i}

Sizes: any L >= 1 (padded to L_p = max(8, next power of two), which leaves y unchanged); N = 2 L_p
with N1 = 2^ceil(log2(N)/2), N2 = N / N1: L = 256 -> 32 x 16, L = 16384 -> 256 x 128. Inputs fp32 or
bf16 (bf16 matmul operands with fp32 accumulation; fp32 operands use ``Precision.HIGHEST``).

Layout of the kernel: (batch, channels, length) like FlashFFTConv; :func:`fft_conv` takes the
repository's channels-last (batch, length, channels) and transposes. Targets: see
:mod:`lax_models.kernels` (jax 0.10.2; Pallas Triton on GPU, Mosaic on TPU).

Known limits (not measured on an accelerator: none was available). The decomposition has two levels,
so a grid cell holds the factors whole: F_N1 halves of (N1, N1/2) and the (N1, N2) twiddles and
spectrum, 64 KB each in fp32 at L = 16384 (N1 = 256). That fits TPU VMEM; on a GPU it is more than
registers and likely spills to shared memory or fails to compile at L >= 8192 with Triton, where
FlashFFTConv switches to three levels (16 x 32 x 32 at 16K). A third level is the next step there.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from lax_models.kernels import check_backend, default_interpret, resolve_impl

__all__ = ["fft_conv", "fft_conv_bhl", "fft_conv_reference", "fft_conv_monarch_xla", "monarch_sizes",
           "monarch_dft_matrices"]


# ----------------------------------------------------------------------------------------------
# Reference and sizes
# ----------------------------------------------------------------------------------------------
def fft_conv_reference(u: jax.Array, k: jax.Array, D: jax.Array) -> jax.Array:
    """``irfft(rfft(u, 2L) rfft(k, 2L))[:L] + D u`` by ``jnp.fft`` (fp32; fp64 for fp64 ``u``), channels-last.

    ``u``: (batch, L, H); ``k``: (H, L); ``D``: (H,) -> (batch, L, H) in ``u``'s dtype.
    """
    length = u.shape[1]
    n = 2 * length
    acc = jnp.float64 if u.dtype == jnp.float64 else jnp.float32
    ua = u.astype(acc)
    u_f = jnp.fft.rfft(ua, n=n, axis=1)                               # (batch, L + 1, H)
    k_f = jnp.fft.rfft(k.astype(acc), n=n, axis=-1)                   # (H, L + 1)
    y = jnp.fft.irfft(u_f * k_f.T[None], n=n, axis=1)[:, :length]     # (batch, L, H)
    return (y + ua * D.astype(acc)).astype(u.dtype)


def monarch_sizes(length: int) -> tuple[int, int, int]:
    """``(L_p, N1, N2)``: padded length (power of two >= 8), FFT size N = 2 L_p = N1 N2, N1 >= N2."""
    if length < 1:
        raise ValueError(f"the sequence length must be >= 1; got {length}")
    lp = max(8, 1 << (int(length) - 1).bit_length())
    n = 2 * lp
    n1 = 1 << math.ceil(math.log2(n) / 2)
    return lp, n1, n // n1


@functools.lru_cache(maxsize=32)
def monarch_dft_matrices(n1: int, n2: int) -> dict[str, np.ndarray]:
    """The real and imaginary parts (float64) of the Monarch factors of the size-N DFT, N = n1 n2:

    ``f1`` (n1, n1/2): F_N1 restricted to the non-zero (first half) input rows;
    ``g1`` (n1/2, n1): conj(F_N1) / N restricted to the kept (first half) output rows;
    ``f2`` (n2, n2): F_N2 (symmetric; its conjugate is the inverse's factor);
    ``t`` (n1, n2): the twiddles exp(-2 pi i k1 n2 / N).
    """
    n, m1 = n1 * n2, n1 // 2
    w1 = np.exp(-2j * np.pi * np.outer(np.arange(n1), np.arange(n1)) / n1)   # F_N1 (symmetric)
    w2 = np.exp(-2j * np.pi * np.outer(np.arange(n2), np.arange(n2)) / n2)   # F_N2
    tw = np.exp(-2j * np.pi * np.outer(np.arange(n1), np.arange(n2)) / n)    # T
    out = {"f1": w1[:, :m1], "g1": w1.conj()[:m1, :] / n, "f2": w2, "t": tw}
    return {f"{name}_{part}": getattr(z, part) for name, z in out.items() for part in ("real", "imag")}


def _dtypes(dtype) -> tuple:
    """(matmul operand dtype, accumulation dtype): bf16 -> (bf16, f32); f64 -> (f64, f64), for checks
    in interpret mode only (GPU / TPU kernels take f32 or bf16); else (f32, f32)."""
    if dtype == jnp.bfloat16:
        return jnp.bfloat16, jnp.float32
    return (jnp.float64, jnp.float64) if dtype == jnp.float64 else (jnp.float32, jnp.float32)


def _kernel_spectrum(k: jax.Array, lp: int, n1: int, n2: int, acc_dtype) -> tuple[jax.Array, jax.Array]:
    """DFT of size N of the zero-padded filter ``k`` (H, L), in the kernel's (k1, k2) order:
    (H, N1, N2) real and imaginary parts. Filter side only (no batch), by ``jnp.fft``."""
    h = k.shape[0]
    k_f = jnp.fft.fft(k.astype(acc_dtype), n=2 * lp, axis=-1)     # (H, N): index k1 + N1 k2
    k_f = k_f.reshape(h, n2, n1).transpose(0, 2, 1)                # (H, N1, N2): [k1, k2]
    return jnp.real(k_f), jnp.imag(k_f)


def fft_conv_monarch_xla(u: jax.Array, k: jax.Array, D: jax.Array) -> jax.Array:
    """The kernel's arithmetic written as XLA einsums (same Monarch factors, same real / imaginary
    split, fp32, ``Precision.HIGHEST``), layout (batch, H, L): what the kernel computes, without Pallas.
    For benchmarks on backends where the kernel only interprets (CPU), and as a check of the algorithm."""
    batch, h, length = u.shape
    lp, n1, n2 = monarch_sizes(length)
    m = {name: jnp.asarray(v, jnp.float32) for name, v in monarch_dft_matrices(n1, n2).items()}
    f1r, f1i, g1r, g1i = m["f1_real"], m["f1_imag"], m["g1_real"], m["g1_imag"]
    f2r, f2i, tr, ti = m["f2_real"], m["f2_imag"], m["t_real"], m["t_imag"]
    kr, ki = _kernel_spectrum(k, lp, n1, n2, jnp.float32)                       # (H, N1, N2)
    x = _to_blocks(u.astype(jnp.float32), lp, n1, n2)                           # (B, H, N1/2, N2)
    hp = jax.lax.Precision.HIGHEST
    left = lambda f, a: jnp.einsum("km,bhmn->bhkn", f, a, precision=hp)        # noqa: E731  f @ a
    right = lambda a, f: jnp.einsum("bhkn,nl->bhkl", a, f, precision=hp)       # noqa: E731  a @ f
    br, bi = left(f1r, x), left(f1i, x)
    cr, ci = br * tr - bi * ti, br * ti + bi * tr
    xr, xi = right(cr, f2r) - right(ci, f2i), right(cr, f2i) + right(ci, f2r)
    er, ei = xr * kr - xi * ki, xr * ki + xi * kr
    gr, gi = right(er, f2r) + right(ei, f2i), right(ei, f2r) - right(er, f2i)
    hr, hi = gr * tr + gi * ti, gi * tr - gr * ti
    y = left(g1r, hr) - left(g1i, hi)                                           # (B, H, N1/2, N2)
    y = y.reshape(batch, h, lp)[..., :length] + D.astype(jnp.float32)[:, None] * u.astype(jnp.float32)
    return y.astype(u.dtype)


# ----------------------------------------------------------------------------------------------
# The kernel
# ----------------------------------------------------------------------------------------------
def _monarch_conv_kernel(*refs, mode: str, n_channels: int, compute_dtype, acc_dtype):
    """One grid cell: ``n_channels`` channels of one batch row.

    mode "filter": refs = (x, kr, ki, d, f1r, f1i, g1r, g1i, f2r, f2i, tr, ti, y):
        y = IDFT(DFT(x) * K) + d x            (K given, (n_ch, N1, N2) re/im)
    mode "xcorr":  refs = (x, z, f1r, f1i, g1r, g1i, f2r, f2i, tr, ti, y):
        y = IDFT(DFT(x) * conj(DFT(z)))        (both transformed here)
    x, z, y blocks: (n_ch, N1/2, N2); the DFT matrices are whole arrays.
    """
    if mode == "filter":
        x_ref, kr_ref, ki_ref, d_ref = refs[:4]
        z_ref = None
        mats = refs[4:12]
    else:
        x_ref, z_ref = refs[:2]
        mats = refs[2:10]
    y_ref = refs[-1]
    f1r, f1i, g1r, g1i, f2r, f2i, tr, ti = (r[...] for r in mats)
    precision = None if compute_dtype == jnp.bfloat16 else jax.lax.Precision.HIGHEST

    def dot(a, b):  # real matmul, operands in the compute dtype, fp32 (fp64) accumulation
        return jnp.dot(a.astype(compute_dtype), b.astype(compute_dtype), precision=precision,
                       preferred_element_type=acc_dtype)

    def forward_dft(a):  # a: (N1/2, N2) real -> spectrum (N1, N2) re, im in (k1, k2) order
        br, bi = dot(f1r, a), dot(f1i, a)                        # F_N1 A: (N1, N2)
        cr, ci = br * tr - bi * ti, br * ti + bi * tr            # * T
        return dot(cr, f2r) - dot(ci, f2i), dot(cr, f2i) + dot(ci, f2r)   # @ F_N2

    for c in range(n_channels):  # static: a few channels per cell, each a chain of 2-D matmuls
        x = x_ref[c].astype(acc_dtype)                            # (N1/2, N2)
        xr, xi = forward_dft(x)
        if mode == "filter":
            kr, ki = kr_ref[c], ki_ref[c]                         # (N1, N2)
        else:
            zr, zi = forward_dft(z_ref[c].astype(acc_dtype))
            kr, ki = zr, -zi                                      # conj(DFT(z))
        er, ei = xr * kr - xi * ki, xr * ki + xi * kr             # pointwise product
        gr = dot(er, f2r) + dot(ei, f2i)                          # @ conj(F_N2)
        gi = dot(ei, f2r) - dot(er, f2i)
        hr, hi = gr * tr + gi * ti, gi * tr - gr * ti             # * conj(T)
        y = dot(g1r, hr) - dot(g1i, hi)                           # Re(conj(F_N1)/N @ H): (N1/2, N2)
        if mode == "filter":
            y = y + d_ref[c] * x                                  # d_ref[c]: (1, 1)
        y_ref[c] = y.astype(y_ref.dtype)


def _channel_block(h: int, requested: int | None) -> int:
    if requested is not None:
        if requested < 1 or h % requested:
            raise ValueError(f"block_channels={requested} must divide the number of channels {h}")
        return requested
    return next(c for c in (8, 4, 2, 1) if h % c == 0)


def _monarch_call(x4, second, D, *, mode, n1, n2, out_dtype, block_channels, backend, interpret):
    """pallas_call over the grid (batch, channel blocks). ``x4``: (B, H, N1/2, N2); ``second``: the
    spectrum (kr, ki) (H, N1, N2) each ("filter") or ``z4`` like ``x4`` ("xcorr")."""
    batch, h, m1, _ = x4.shape
    hb = _channel_block(h, block_channels)
    compute_dtype, acc_dtype = _dtypes(x4.dtype)
    mats = monarch_dft_matrices(n1, n2)
    mat_args = [jnp.asarray(mats[f"{name}_{part}"], compute_dtype if name != "t" else acc_dtype)
                for name in ("f1", "g1", "f2", "t") for part in ("real", "imag")]

    row_spec = pl.BlockSpec((None, hb, m1, n2), lambda b, j: (b, j, 0, 0))   # (hb, N1/2, N2)
    whole = lambda a: pl.BlockSpec(a.shape, lambda b, j: (0,) * a.ndim)      # noqa: E731
    if mode == "filter":
        kr, ki = second
        spec_spec = pl.BlockSpec((hb, n1, n2), lambda b, j: (j, 0, 0))
        d3 = D.astype(acc_dtype).reshape(h, 1, 1)
        args = [x4, kr, ki, d3]
        specs = [row_spec, spec_spec, spec_spec, pl.BlockSpec((hb, 1, 1), lambda b, j: (j, 0, 0))]
    else:
        args, specs = [x4, second], [row_spec, row_spec]
    if backend == "tpu":
        from jax.experimental.pallas import tpu as pltpu
        params = pltpu.CompilerParams(dimension_semantics=("parallel", "parallel"))
    else:
        from jax.experimental.pallas import triton as pltriton
        params = pltriton.CompilerParams(num_warps=4, num_stages=1)
    kernel = functools.partial(_monarch_conv_kernel, mode=mode, n_channels=hb, compute_dtype=compute_dtype,
                               acc_dtype=acc_dtype)
    return pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct(x4.shape, out_dtype),
        grid=(batch, h // hb),
        in_specs=specs + [whole(a) for a in mat_args],
        out_specs=row_spec,
        compiler_params=params,
        interpret=interpret,
        name=f"monarch_fftconv_{mode}",
    )(*args, *mat_args)


# ----------------------------------------------------------------------------------------------
# Differentiable function, layout (batch, channels, length)
# ----------------------------------------------------------------------------------------------
def _to_blocks(x, lp, n1, n2):
    """(B, H, L) -> zero-padded to L_p and reshaped (B, H, N1/2, N2): x[N2 n1 + n2] at [n1, n2]."""
    b, h, length = x.shape
    if length < lp:
        x = jnp.pad(x, ((0, 0), (0, 0), (0, lp - length)))
    return x.reshape(b, h, n1 // 2, n2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _fft_conv_bhl(u, k, D, config):
    return _fft_conv_fwd(u, k, D, config)[0]


def _fft_conv_fwd(u, k, D, config):
    block_channels, backend, interpret = config
    length = u.shape[-1]
    lp, n1, n2 = monarch_sizes(length)
    kr, ki = _kernel_spectrum(k, lp, n1, n2, _dtypes(u.dtype)[1])
    y4 = _monarch_call(_to_blocks(u, lp, n1, n2), (kr, ki), D, mode="filter", n1=n1, n2=n2, out_dtype=u.dtype,
                       block_channels=block_channels, backend=backend, interpret=interpret)
    y = y4.reshape(u.shape[0], u.shape[1], lp)[..., :length]
    return y, (u, k, D, kr, ki)


def _fft_conv_bwd(config, res, dy):
    block_channels, backend, interpret = config
    u, k, D, kr, ki = res
    batch, h, length = u.shape
    lp, n1, n2 = monarch_sizes(length)
    dy4 = _to_blocks(dy.astype(u.dtype), lp, n1, n2)
    call = functools.partial(_monarch_call, n1=n1, n2=n2, block_channels=block_channels, backend=backend,
                             interpret=interpret)
    # du_j = sum_{i>=j} k_{i-j} dy_i + D dy_j: the same kernel with the conjugate spectrum
    du = call(dy4, (kr, -ki), D, mode="filter", out_dtype=u.dtype).reshape(batch, h, lp)[..., :length]
    # dk_m = sum_b sum_i dy_{b,i} u_{b,i-m}: per row in the kernel, then summed over the batch
    acc = _dtypes(u.dtype)[1]
    dk_rows = call(dy4, _to_blocks(u, lp, n1, n2), None, mode="xcorr", out_dtype=acc)
    dk = jnp.sum(dk_rows.reshape(batch, h, lp)[..., :length], axis=0)
    dD = jnp.sum(dy.astype(acc) * u.astype(acc), axis=(0, 2))
    return du, dk.astype(k.dtype), dD.astype(D.dtype)


_fft_conv_bhl.defvjp(_fft_conv_fwd, _fft_conv_bwd)


def _check(u, k, D, channels_last):
    if u.ndim != 3:
        layout = "batch, length, channels" if channels_last else "batch, channels, length"
        raise ValueError(f"fft_conv expects u of rank 3 ({layout}); got shape {tuple(u.shape)}")
    length, h = (u.shape[1], u.shape[2]) if channels_last else (u.shape[2], u.shape[1])
    if k.shape != (h, length):
        raise ValueError(f"fft_conv expects k of shape (channels, length) = {(h, length)}; got {tuple(k.shape)}")
    if D.shape != (h,):
        raise ValueError(f"fft_conv expects D of shape (channels,) = {(h,)}; got {tuple(D.shape)}")
    if u.dtype not in (jnp.float32, jnp.bfloat16, jnp.float64):
        raise ValueError(f"the Pallas fft_conv takes float32 or bfloat16 inputs (float64 in interpret mode, "
                         f"for checks); got {u.dtype}")


def fft_conv_bhl(u: jax.Array, k: jax.Array, D: jax.Array, *, block_channels: int | None = None,
                 backend: str | None = None, interpret: bool | object | None = None) -> jax.Array:
    """The Pallas kernel in its native layout: ``u`` (batch, H, L) fp32 or bf16 (fp64 in interpret
    mode, for gradient checks), ``k`` (H, L),
    ``D`` (H,) -> ``y`` (batch, H, L) in ``u``'s dtype, ``y_i = sum_{m<=i} k_m u_{i-m} + D u_i``.

    ``block_channels``: channels per grid cell (a divisor of H; default the largest of 8, 4, 2, 1);
    ``backend``: "triton" or "tpu" (default: from the device); ``interpret``: default on CPU; ``True``
    (the HLO interpreter) or a ``pltpu.InterpretParams`` (Mosaic TPU semantics).
    Differentiable in all three arguments (custom VJP: two more kernel convolutions).
    """
    _check(u, k, D, channels_last=False)
    interpret = default_interpret() if interpret is None else interpret
    return _fft_conv_bhl(u, k, D, (block_channels, check_backend(backend), interpret))


def fft_conv(u: jax.Array, k: jax.Array, D: jax.Array, k_reverse: jax.Array | None = None, *,
             impl: str = "auto", **kernel_options) -> jax.Array:
    """Causal long convolution plus skip, channels-last: ``u`` (batch, L, H), ``k`` (H, L), ``D`` (H,):

        y_i = sum_{m<=i} k_m u_{i-m} + D u_i  [ + sum_{s>=0} k_reverse_s u_{i+s} ]   -> (batch, L, H).

    ``k_reverse`` (H, L), optional: an anti-causal kernel (lag 0 included), computed as the causal
    convolution of the time-reversed input. ``impl``: "xla" (``jnp.fft``), "pallas" (the Monarch kernel,
    :func:`fft_conv_bhl`, interpret mode on CPU) or "auto" (Pallas on GPU/TPU, XLA on CPU).
    ``kernel_options`` go to :func:`fft_conv_bhl`.
    """
    _check(u, k, D, channels_last=True)
    if resolve_impl(impl) == "xla":
        y = fft_conv_reference(u, k, D)
        if k_reverse is not None:
            y = y + fft_conv_reference(u[:, ::-1], k_reverse, jnp.zeros_like(D))[:, ::-1]
        return y
    ut = jnp.swapaxes(u, 1, 2)                                           # (batch, H, L)
    y = fft_conv_bhl(ut, k, D, **kernel_options)
    if k_reverse is not None:
        y = y + fft_conv_bhl(ut[..., ::-1], k_reverse, jnp.zeros_like(D), **kernel_options)[..., ::-1]
    return jnp.swapaxes(y, 1, 2)                                         # (batch, L, H)
