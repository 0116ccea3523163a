"""What the state-space layers (S4, S4D, S5, PTD) share.

* Complex parameters stored as real arrays with a trailing axis of 2 (real, imaginary), made complex
  inside ``__call__`` (optimizers and checkpoints see real arrays only): :func:`as_real`,
  :func:`as_complex`, :func:`complex_dtype`.
* The discretisation of a diagonal system ``x' = Lambda x + B u`` at step ``dt``, per state
  (Gu, Gupta, Goel, Re, NeurIPS 2022, arXiv:2206.11893, Section 2; Smith, Warrington, Linderman,
  ICLR 2023, arXiv:2208.04933, Section 2 and Appendix C):

      ZOH:       Lambda_bar = exp(dt Lambda),                       B_bar = (exp(dt Lambda) - 1) / Lambda * B,
      bilinear:  Lambda_bar = (1 + dt Lambda/2) / (1 - dt Lambda/2),  B_bar = dt / (1 - dt Lambda/2) * B.

  :func:`discretize_zoh` / :func:`discretize_bilinear` return ``(Lambda_bar, B_scale)`` with
  ``B_bar = B_scale * B`` broadcast as the caller's B needs (S4D: one input per state; S5: a row of
  ``B~`` per state).
* The S4 / S4D random initial ``(log_dt, C, D)`` of the reference code (``state-spaces/s4``) and the
  causal / bidirectional FFT convolution ``y = K * u + D u`` that applies their kernels.
* :func:`check_sequence_input`: the ``(batch, length, d_model)`` real-input check at the layer boundary.
* :func:`single_threaded_blas`: one LAPACK thread for the small float64 eigenproblems of the
  initialisations (HiPPO, PTD).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from threadpoolctl import threadpool_limits

__all__ = [
    "as_complex",
    "as_real",
    "complex_dtype",
    "DISCRETIZATIONS",
    "discretize_zoh",
    "discretize_bilinear",
    "discretize",
    "init_dt_C_D",
    "ssm_convolution",
    "check_sequence_input",
    "single_threaded_blas",
]

DISCRETIZATIONS = ("zoh", "bilinear")


# ----------------------------------------------------------------------------------------------
# Complex parameters as real storage
# ----------------------------------------------------------------------------------------------
def as_complex(weight: jax.Array) -> jax.Array:
    """``(..., 2)`` real storage -> complex ``(...)`` (real part ``[..., 0]``, imaginary ``[..., 1]``)."""
    return jax.lax.complex(weight[..., 0], weight[..., 1])


def as_real(z: np.ndarray, dtype=jnp.float32) -> jax.Array:
    """Complex NumPy array ``(...)`` -> ``(..., 2)`` real storage in ``dtype`` (inverse of :func:`as_complex`)."""
    return jnp.asarray(np.stack([np.real(z), np.imag(z)], axis=-1), dtype=dtype)


def complex_dtype(dtype) -> jnp.dtype:
    """The complex dtype of a real parameter dtype: complex128 for float64, else complex64."""
    return jnp.complex128 if jnp.dtype(dtype) == jnp.float64 else jnp.complex64


# ----------------------------------------------------------------------------------------------
# Discretisation of a diagonal system
# ----------------------------------------------------------------------------------------------
def discretize_zoh(Lambda: jax.Array, dt: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Zero-order hold: ``(Lambda_bar, B_scale) = (exp(dt Lambda), (exp(dt Lambda) - 1) / Lambda)``.

    ``Lambda`` complex and ``dt`` real, broadcast against each other (one dt per state or per channel).
    """
    Lambda_bar = jnp.exp(Lambda * dt)
    return Lambda_bar, (Lambda_bar - 1.0) / Lambda


def discretize_bilinear(Lambda: jax.Array, dt: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Bilinear (Tustin): ``(Lambda_bar, B_scale) = ((1 + dt Lambda/2) / (1 - dt Lambda/2), dt / (1 - dt Lambda/2))``.

    Shapes as :func:`discretize_zoh`.
    """
    dtA = Lambda * dt
    denom = 1.0 - dtA / 2
    return (1.0 + dtA / 2) / denom, dt / denom


def discretize(Lambda: jax.Array, dt: jax.Array, method: str) -> tuple[jax.Array, jax.Array]:
    """:func:`discretize_zoh` or :func:`discretize_bilinear` by name (one of :data:`DISCRETIZATIONS`)."""
    if method == "zoh":
        return discretize_zoh(Lambda, dt)
    if method == "bilinear":
        return discretize_bilinear(Lambda, dt)
    raise ValueError(f"unknown discretization {method!r}; choose one of {DISCRETIZATIONS}")


# ----------------------------------------------------------------------------------------------
# S4 / S4D: initial draws and the FFT convolution
# ----------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("d_model", "c_shape", "dtype"))
def _init_random(keys, log_dt_min, log_dt_max, *, d_model, c_shape, dtype):
    u = jax.random.uniform(keys[0], (d_model,), dtype=dtype)
    log_dt = log_dt_min + u * (log_dt_max - log_dt_min)
    C = jax.random.normal(keys[1], (*c_shape, 2), dtype=dtype) * math.sqrt(0.5)
    D = jax.random.normal(keys[2], (d_model,), dtype=dtype)
    return log_dt, C, D


def init_dt_C_D(
    rngs: nnx.Rngs, d_model: int, c_shape: tuple[int, ...], dt_min: float, dt_max: float, dtype
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Random initial ``(log_dt (H,), C c_shape + (2,), D (H,))`` as the reference code (``state-spaces/s4``).

    ``log dt`` uniform in ``[log dt_min, log dt_max)`` (one dt per channel); C standard complex normal
    CN(0, 1), i.e. each part N(0, 1/2) like ``torch.randn(cfloat)``, stored (..., 2); D ~ N(0, 1).
    """
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"need 0 < dt_min <= dt_max; got dt_min={dt_min}, dt_max={dt_max}")
    keys = jnp.stack([rngs.params(), rngs.params(), rngs.params()])
    return _init_random(
        keys, math.log(dt_min), math.log(dt_max), d_model=int(d_model), c_shape=tuple(c_shape),
        dtype=jnp.dtype(dtype),
    )


@jax.jit
def ssm_convolution(u: jax.Array, k: jax.Array, D: jax.Array) -> jax.Array:
    """``y = K * u + D u`` by FFT with zero padding to 2L (a linear, not circular, convolution).

    Causal (``k``: (channels, L)): ``y_i = sum_{j<=i} k[i-j] u_j + D u_i``.
    Bidirectional (``k``: (2, channels, L), forward then backward kernel):
    ``y_i = sum_{j<=i} k0[i-j] u_j + sum_{j>=i} k1[j-i] u_j + D u_i``: the backward kernel is applied to
    the reversed sequence exactly (the reference code shifts it by one step, deliberately; we do not).

    Args:
      u: ``(batch, L, channels)`` real.
      k: ``(channels, L)`` or ``(2, channels, L)`` real.
      D: ``(channels,)`` skip.

    Returns:
      ``(batch, L, channels)``.
    """
    L = u.shape[1]
    if k.ndim == 3:
        fwd, bwd = k[0], k[1]  # (channels, L) each
        # circular kernel of length 2L: index m >= 0 -> fwd[m]; index 2L - m (m = 1..L-1) -> bwd[m]
        k = jnp.concatenate(
            [fwd.at[:, 0].add(bwd[:, 0]), jnp.zeros_like(fwd[:, :1]), jnp.flip(bwd[:, 1:], axis=-1)],
            axis=-1,
        )  # (channels, 2L)
    n_fft = 2 * L
    u_f = jnp.fft.rfft(u, n=n_fft, axis=1)  # (batch, L + 1, channels)
    k_f = jnp.fft.rfft(k, n=n_fft, axis=-1)  # (channels, L + 1)
    y = jnp.fft.irfft(u_f * k_f.T[None], n=n_fft, axis=1)[:, :L]  # (batch, L, channels)
    return (y + u * D).astype(u.dtype)


# ----------------------------------------------------------------------------------------------
# Input check and BLAS threads
# ----------------------------------------------------------------------------------------------
def check_sequence_input(x: jax.Array, d_model: int, name: str) -> None:
    """Raise a clear ``ValueError`` unless ``x`` is ``(batch, length, d_model)`` and real."""
    if x.ndim != 3:
        raise ValueError(
            f"{name} expects (batch, length, d_model={d_model}), rank 3; got shape {tuple(x.shape)}; "
            f"add the batch axis (x[None]) or the channel axis (x[..., None])"
        )
    if x.shape[-1] != d_model:
        raise ValueError(
            f"{name} was built for d_model={d_model} channels (last axis) but got shape "
            f"{tuple(x.shape)}; inputs are (batch, length, channels)"
        )
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise ValueError(f"{name} expects a real input; got dtype {x.dtype}")


def single_threaded_blas() -> threadpool_limits:
    """Context limiting NumPy's BLAS/LAPACK to one thread (``threadpoolctl``).

    The eigendecompositions of the initialisations are small (N <= a few hundred), where multithreaded
    LAPACK gains nothing and, on a busy machine, loses badly (measured on 2 contended cores: a
    256 x 256 ``eigh`` 11 s instead of 0.02 s; a 64 x 64 SVD 60 ms instead of 0.6 ms). Results are
    the same either way.
    """
    return threadpool_limits(limits=1)
