"""Diagonal complex linear recurrence as a Pallas kernel, chunked over time, with a custom VJP.

The function (elementwise over batch b and state p; a_t, b_t, x_t complex):

    x_t = a_t x_{t-1} + b_t,   x_{-1} = 0,   t = 0..L-1            (reverse: x_t = a_t x_{t+1} + b_t)

which is S5's parallel mode (Smith et al., ICLR 2023, arXiv:2208.04933: a_t = Lambda_bar for all t)
and the recurrent mode of S4D (Gu et al., NeurIPS 2022). In real arithmetic (the kernel never sees a
complex number):

    Re x_t = Re a_t Re x_{t-1} - Im a_t Im x_{t-1} + Re b_t,
    Im x_t = Re a_t Im x_{t-1} + Im a_t Re x_{t-1} + Im b_t.

Kernel: grid (batch, state blocks, time chunks); a cell runs a ``fori_loop`` over its ``block_time``
steps and hands the state to the next chunk through an output block that every chunk of a row maps
to (the accumulator pattern; the time axis is "arbitrary", i.e. sequential, on TPU). On GPU (Triton),
whose grid cells run in parallel, the whole padded sequence is one chunk. Steps past the true length
leave the state unchanged, so the carried state is x_{L-1} (returned as the final state).

Backward (a reverse scan, with the adjoint lambda_t = dLoss/dx_t seen as one complex number):

    lambda_t = g_t + conj(a_{t+1}) lambda_{t+1}        (the same kernel, time reversed)
    db_t = lambda_t,    da_t = lambda_t conj(x_{t-1})  (summed over batch and time when a is shared)

Reference: ``jax.lax.associative_scan`` with ``(a_i, b_i) . (a_j, b_j) = (a_j a_i, a_j b_i + b_j)``.
Targets: see :mod:`lax_models.kernels` (jax 0.10.2; Pallas Triton on GPU, Mosaic on TPU).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from lax_models.kernels import check_backend, default_interpret, resolve_impl

__all__ = ["linear_scan", "linear_scan_split", "linear_scan_reference"]


def linear_scan_reference(a: jax.Array, b: jax.Array, reverse: bool = False) -> jax.Array:
    """All states of ``x_t = a_t x_{t-1} + b_t`` by ``jax.lax.associative_scan`` (complex).

    ``b``: (batch, L, P); ``a``: (P,) (the same at every step) or (batch, L, P) -> (batch, L, P).
    """
    a = jnp.broadcast_to(a, b.shape)

    def combine(earlier, later):
        a_i, b_i = earlier
        a_j, b_j = later
        return a_j * a_i, a_j * b_i + b_j

    return jax.lax.associative_scan(combine, (a, b), reverse=reverse, axis=1)[1]


# ----------------------------------------------------------------------------------------------
# The kernel
# ----------------------------------------------------------------------------------------------
def _scan_kernel(ar_ref, ai_ref, br_ref, bi_ref, xr_ref, xi_ref, sr_ref, si_ref, *, block_time: int,
                 length: int, reverse: bool, shared_a: bool, acc_dtype):
    """One (batch row, state block, time chunk) cell. b, x blocks: (block_time, block_states);
    a: (1, block_states) when shared, else like b; s (carried state): (1, block_states)."""
    t_block = pl.program_id(2)
    chunk = pl.num_programs(2) - 1 - t_block if reverse else t_block   # the chunk this cell holds

    @pl.when(t_block == 0)
    def _():
        sr_ref[...] = jnp.zeros_like(sr_ref)
        si_ref[...] = jnp.zeros_like(si_ref)

    if shared_a:
        a_r, a_i = ar_ref[...].astype(acc_dtype), ai_ref[...].astype(acc_dtype)   # (1, block_states)

    def step(i, state):
        hr, hi = state                                                 # (1, block_states)
        t = block_time - 1 - i if reverse else i
        row = pl.ds(t, 1)
        if shared_a:
            cr, ci = a_r, a_i
        else:
            cr, ci = ar_ref[row, :].astype(acc_dtype), ai_ref[row, :].astype(acc_dtype)
        nr = cr * hr - ci * hi + br_ref[row, :].astype(acc_dtype)
        ni = cr * hi + ci * hr + bi_ref[row, :].astype(acc_dtype)
        valid = chunk * block_time + t < length                        # padded steps keep the state
        hr, hi = jnp.where(valid, nr, hr), jnp.where(valid, ni, hi)
        xr_ref[row, :] = hr.astype(xr_ref.dtype)
        xi_ref[row, :] = hi.astype(xi_ref.dtype)
        return hr, hi

    hr, hi = jax.lax.fori_loop(0, block_time, step, (sr_ref[...], si_ref[...]))
    sr_ref[...] = hr
    si_ref[...] = hi


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _block_sizes(length: int, states: int, block_time: int | None, block_states: int | None,
                 backend: str) -> tuple[int, int]:
    if block_states is None:
        block_states = 128 if states >= 128 else 1 << (states - 1).bit_length()   # a power of two
    if block_time is None:
        # Triton runs grid cells in parallel: one chunk holds the whole (power-of-two padded) sequence.
        # Mosaic TPU runs the time axis in order: chunks of 256 steps (a multiple of 8 sublanes).
        block_time = (1 << (length - 1).bit_length()) if backend == "triton" else min(256, _round_up(length, 8))
    if block_time < 1 or block_states < 1:
        raise ValueError(f"block_time and block_states must be >= 1; got {block_time}, {block_states}")
    return block_time, block_states


def _scan_call(ar, ai, br, bi, *, reverse, block_time, block_states, backend, interpret):
    """``b*``: (B, L, P) real; ``a*``: (P,) or (B, L, P) -> states (B, L, P) x2 and the final state (B, P) x2."""
    batch, length, states = br.shape
    shared_a = ar.ndim == 1
    tb, pb = _block_sizes(length, states, block_time, block_states, backend)
    lp, pp = _round_up(length, tb), _round_up(states, pb)

    def pad(x):  # zero padding to whole blocks (the kernel masks padded steps; padded states are cut)
        if x.ndim == 1:
            return jnp.pad(x, (0, pp - states)).reshape(1, pp)
        return jnp.pad(x, ((0, 0), (0, lp - length), (0, pp - states)))

    nt = lp // tb
    chunk = (lambda t: nt - 1 - t) if reverse else (lambda t: t)
    seq_spec = pl.BlockSpec((None, tb, pb), lambda b, p, t: (b, chunk(t), p))   # (tb, pb)
    a_spec = pl.BlockSpec((1, pb), lambda b, p, t: (0, p)) if shared_a else seq_spec
    state_spec = pl.BlockSpec((None, 1, pb), lambda b, p, t: (b, 0, p))         # same block for all t
    if backend == "tpu":
        from jax.experimental.pallas import tpu as pltpu
        params = pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "arbitrary"))
    else:
        if nt != 1 and not interpret:
            raise ValueError(f"the Triton scan needs the whole sequence in one chunk (block_time >= {length}); "
                             f"got block_time={tb}: Triton grid cells run in parallel and cannot carry a state")
        from jax.experimental.pallas import triton as pltriton
        params = pltriton.CompilerParams(num_warps=4, num_stages=1)
    acc = br.dtype  # float32 (float64 in interpret mode, for checks)
    kernel = functools.partial(_scan_kernel, block_time=tb, length=length, reverse=reverse, shared_a=shared_a,
                               acc_dtype=acc)
    seq = jax.ShapeDtypeStruct((batch, lp, pp), acc)
    fin = jax.ShapeDtypeStruct((batch, 1, pp), acc)
    xr, xi, sr, si = pl.pallas_call(
        kernel,
        out_shape=(seq, seq, fin, fin),
        grid=(batch, pp // pb, nt),
        in_specs=[a_spec, a_spec, seq_spec, seq_spec],
        out_specs=(seq_spec, seq_spec, state_spec, state_spec),
        compiler_params=params,
        interpret=interpret,
        name="diagonal_linear_scan",
    )(pad(ar), pad(ai), pad(br), pad(bi))
    return xr[:, :length, :states], xi[:, :length, :states], sr[:, 0, :states], si[:, 0, :states]


# ----------------------------------------------------------------------------------------------
# Differentiable function on real / imaginary parts
# ----------------------------------------------------------------------------------------------
@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _scan_split(ar, ai, br, bi, config):
    return _scan_fwd(ar, ai, br, bi, config)[0]


def _scan_fwd(ar, ai, br, bi, config):
    reverse, block_time, block_states, backend, interpret = config
    xr, xi, _, _ = _scan_call(ar, ai, br, bi, reverse=reverse, block_time=block_time,
                              block_states=block_states, backend=backend, interpret=interpret)
    return (xr, xi), (ar, ai, xr, xi)


def _shift(x, reverse):
    """x_{t-1} (x_{t+1} when reverse) along time, zero at the boundary: (B, L, P)."""
    pad = ((0, 0), (0, 1), (0, 0)) if reverse else ((0, 0), (1, 0), (0, 0))
    x = jnp.pad(x, pad)
    return x[:, 1:] if reverse else x[:, :-1]


def _scan_bwd(config, res, cotangents):
    reverse, block_time, block_states, backend, interpret = config
    ar, ai, xr, xi = res
    gr, gi = (g.astype(xr.dtype) for g in cotangents)
    if ar.ndim == 1:  # lambda_t = g_t + conj(a) lambda_{t+1}
        cr, ci = ar, -ai
    else:             # lambda_t = g_t + conj(a_{t+1}) lambda_{t+1}: the coefficients one step ahead
        cr, ci = _shift(ar, not reverse), -_shift(ai, not reverse)
    lr, li, _, _ = _scan_call(cr, ci, gr, gi, reverse=not reverse, block_time=block_time,
                              block_states=block_states, backend=backend, interpret=interpret)
    pr, pi = _shift(xr, reverse), _shift(xi, reverse)              # x_{t-1} (x_{t+1} when reverse)
    dar, dai = lr * pr + li * pi, li * pr - lr * pi                # lambda_t conj(x_prev)
    if ar.ndim == 1:
        dar, dai = jnp.sum(dar, axis=(0, 1)), jnp.sum(dai, axis=(0, 1))
    return dar.astype(ar.dtype), dai.astype(ai.dtype), lr, li


_scan_split.defvjp(_scan_fwd, _scan_bwd)


def linear_scan_split(ar, ai, br, bi, *, reverse: bool = False, block_time: int | None = None,
                      block_states: int | None = None, backend: str | None = None,
                      interpret: bool | object | None = None) -> tuple[jax.Array, jax.Array]:
    """The Pallas scan on real and imaginary parts: ``b*`` (batch, L, P) and ``a*`` (P,) or
    (batch, L, P), real -> ``(Re x, Im x)`` (batch, L, P) float32 (float64 for float64 ``b`` in
    interpret mode, for checks). Differentiable (custom VJP).

    ``block_time`` steps per chunk (default: 256 on TPU, the whole sequence on Triton/GPU), ``block_states``
    states per cell (default min(128, next power of two)); ``backend``: "triton" or "tpu" (default: from
    the device); ``interpret``: default on CPU; ``True`` (the HLO interpreter) or a
    ``pltpu.InterpretParams`` (Mosaic TPU semantics).
    """
    if br.ndim != 3 or bi.shape != br.shape:
        raise ValueError(f"linear_scan expects b of shape (batch, length, states); got {tuple(br.shape)}, "
                         f"{tuple(bi.shape)}")
    if ar.shape != ai.shape or ar.shape not in (br.shape[-1:], br.shape):
        raise ValueError(f"linear_scan expects a of shape (states,) = {br.shape[-1:]} or like b {tuple(br.shape)}; "
                         f"got {tuple(ar.shape)}")
    interpret = default_interpret() if interpret is None else interpret
    config = (bool(reverse), block_time, block_states, check_backend(backend), interpret)
    dtype = jnp.float64 if br.dtype == jnp.float64 else jnp.float32  # float64: interpret-mode checks only
    cast = lambda x: x.astype(dtype)  # noqa: E731
    return _scan_split(cast(ar), cast(ai), cast(br), cast(bi), config)


def linear_scan(a: jax.Array, b: jax.Array, *, reverse: bool = False, impl: str = "auto",
                **kernel_options) -> jax.Array:
    """All states of ``x_t = a_t x_{t-1} + b_t`` (``reverse``: ``x_t = a_t x_{t+1} + b_t``), x = 0 before
    the first step. ``b``: (batch, L, P) complex; ``a``: (P,) shared by all steps, or (batch, L, P).

    ``impl``: "xla" (:func:`linear_scan_reference`), "pallas" (the kernel on real / imaginary parts,
    interpret mode on CPU) or "auto" (Pallas on GPU/TPU, XLA on CPU). Returns (batch, L, P) complex
    (complex64 from the kernel; complex128 for complex128 ``b`` in interpret mode).
    """
    if resolve_impl(impl) == "xla":
        return linear_scan_reference(a, b, reverse=reverse)
    xr, xi = linear_scan_split(jnp.real(a), jnp.imag(a), jnp.real(b), jnp.imag(b), reverse=reverse,
                               **kernel_options)
    return jax.lax.complex(xr, xi)
