"""S4: structured state space sequence layer with a diagonal-plus-low-rank (DPLR) state matrix.

Gu, Goel, Re, "Efficiently Modeling Long Sequences with Structured State Spaces", ICLR 2022,
arXiv:2111.00396, Sections 3.2-3.3 and Algorithm 1. One single-input single-output SSM per channel h,

    x'(t) = A x(t) + B u(t),   y(t) = C x(t) + D u(t),   A = diag(Lambda) - P P^*   (DPLR, Q = P),

initialised from HiPPO-LegS in its eigenbasis (:func:`lax_models.ssm.hippo.dplr`), discretised with
the bilinear transform at step dt,

    A_bar = (I - dt/2 A)^{-1} (I + dt/2 A),   B_bar = (I - dt/2 A)^{-1} dt B,

and applied as the causal convolution y = K * u + D u with kernel K_l = C A_bar^l B_bar, l < L.

The kernel comes from the truncated generating function evaluated at the L-th roots of unity
omega_k = exp(-2 pi i k / L): with C~ = C (I - A_bar^L) (the "C tilde" that S4 learns directly),

    K^(omega) = sum_{l<L} C A_bar^l B_bar omega^l = C~ (I - A_bar omega)^{-1} B_bar
              = dt C~ [ (1 - omega) I - (1 + omega) dt/2 A ]^{-1} B,

a diagonal (Cauchy) solve plus a rank-1 Woodbury correction. Writing d_n = (1 - omega) -
(1 + omega) dt/2 Lambda_n, beta = (1 + omega) dt/2 and k_uv = sum_n u_n v_n / d_n (the Cauchy kernel),

    K^(omega) = dt [ k_{C~B} - beta k_{C~P} k_{P*B} / (1 + beta k_{P*P}) ],   K = irfft(K^).

This is the paper's formula (there: g = 2/dt (1-omega)/(1+omega), factor 2/(1+omega)) multiplied
through by (1 + omega), which removes the division by zero at omega = -1 (k = L/2).

Conjugate symmetry: parameters hold N/2 states (one of each conjugate pair, as the reference code);
every sum over states runs over the pair, i.e. sum_n f(v_n) + f(conj v_n), so the kernel is real.

Layout: ``(batch, length, channels)``. Complex parameters are stored as real arrays with a trailing axis
of 2 (real, imaginary).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lax_models.ssm import SSMParam
from lax_models.ssm.common import (
    as_complex,
    as_real,
    check_sequence_input,
    complex_dtype,
    init_dt_C_D,
    ssm_convolution,
)
from lax_models.ssm.hippo import dplr

__all__ = [
    "S4",
    "dplr_kernel",
    "dplr_dense",
    "dplr_step",
    "dplr_c_tilde",
    "dplr_c_from_c_tilde",
    "conj_pair",
]


# ----------------------------------------------------------------------------------------------
# Conjugate-symmetric half form
# ----------------------------------------------------------------------------------------------
def conj_pair(v: jax.Array) -> jax.Array:
    """Half-form ``(..., N/2)`` -> full conjugate-symmetric ``(..., N)``: ``[v, conj(v)]``."""
    return jnp.concatenate([v, jnp.conj(v)], axis=-1)


# ----------------------------------------------------------------------------------------------
# DPLR kernel, discretisation and recurrence (pure functions)
# ----------------------------------------------------------------------------------------------
def _cauchy(v: jax.Array, d: jax.Array) -> jax.Array:
    """Cauchy-type sum ``sum_n v[..., n] / d[..., n, k]`` -> ``(..., K)``; materialises (N, K)."""
    return jnp.einsum("...n,...nk->...k", v, 1.0 / d)


@functools.partial(jax.jit, static_argnames="L")
def dplr_kernel(
    Lambda: jax.Array, P: jax.Array, B: jax.Array, C_tilde: jax.Array, dt: jax.Array, L: int
) -> jax.Array:
    """S4 convolution kernel ``K_l = C A_bar^l B_bar`` (l < L) from the generating function.

    Evaluates ``K^(omega_k) = C~ (I - A_bar omega_k)^{-1} B_bar`` at ``omega_k = exp(-2 pi i k/L)``,
    ``k = 0..L//2`` with the Cauchy kernel and the rank-1 Woodbury identity (module docstring), then
    ``K = irfft(K^, n=L)``. Exact when ``C_tilde = C (I - A_bar^L)`` (:func:`dplr_c_tilde`).

    Args:
      Lambda, P, B, C_tilde: complex half-form ``(..., N/2)`` (broadcastable; leading axes e.g.
        ``(channels,)`` or ``(directions, channels)``); the state matrix is ``diag(Lambda) - P P^*``
        over the full conjugate-symmetric state.
      dt: real step ``(...)`` (one per leading index, e.g. ``(channels,)``).
      L: kernel length (static).

    Returns:
      real ``(..., L)``.
    """
    L = int(L)
    cdtype = jnp.result_type(Lambda, P, B, C_tilde, jnp.complex64)
    k = jnp.arange(L // 2 + 1)
    omega = jnp.exp(-2j * jnp.pi * k / L).astype(cdtype)  # (K,) roots of unity on the rfft grid
    dt = jnp.asarray(dt)[..., None, None]  # (..., 1, 1)
    alpha = 1.0 - omega  # (K,)
    beta = (1.0 + omega) * dt / 2  # (..., 1, K)
    lam = conj_pair(Lambda)[..., :, None]  # (..., N, 1) full conjugate-symmetric state
    d = alpha - beta * lam  # (..., N, K)
    Bf, Pf, Cf = conj_pair(B), conj_pair(P), conj_pair(C_tilde)  # (..., N)
    Pc = jnp.conj(Pf)
    k00 = _cauchy(Cf * Bf, d)  # (..., K)   C~ D^{-1} B
    k01 = _cauchy(Cf * Pf, d)  # (..., K)   C~ D^{-1} P
    k10 = _cauchy(Pc * Bf, d)  # (..., K)   P^* D^{-1} B
    k11 = _cauchy(Pc * Pf, d)  # (..., K)   P^* D^{-1} P
    beta = beta[..., 0, :]  # (..., K)
    k_hat = dt[..., 0] * (k00 - beta * k01 * k10 / (1.0 + beta * k11))  # (..., K)
    return jnp.fft.irfft(k_hat, n=L, axis=-1)  # (..., L)


@jax.jit
def dplr_dense(Lambda: jax.Array, P: jax.Array, B: jax.Array, dt: jax.Array):
    """Dense bilinear discretisation over the full state: ``A_bar`` (..., N, N), ``B_bar`` (..., N).

    ``A = diag([Lambda, conj Lambda]) - p p^*`` with ``p = [P, conj P]``; O(N^3), for the C~ conversion,
    step-mode set-up and tests.
    """
    lam, p, b = conj_pair(Lambda), conj_pair(P), conj_pair(B)  # (..., N)
    N = lam.shape[-1]
    eye = jnp.eye(N, dtype=lam.dtype)
    A = lam[..., :, None] * eye - p[..., :, None] * jnp.conj(p)[..., None, :]  # (..., N, N)
    half = (jnp.asarray(dt)[..., None, None] / 2) * A
    lhs = eye - half  # (..., N, N)
    A_bar = jnp.linalg.solve(lhs, eye + half)
    B_bar = jnp.linalg.solve(lhs, (jnp.asarray(dt)[..., None] * b)[..., None])[..., 0]
    return A_bar, B_bar


def _power(M: jax.Array, L: int) -> jax.Array:
    """``M^L`` for a stack ``(..., N, N)`` by repeated squaring (L static, >= 1)."""
    result, base, n = None, M, int(L)
    while n:
        if n & 1:
            result = base if result is None else result @ base
        n >>= 1
        if n:
            base = base @ base
    return result


@functools.partial(jax.jit, static_argnames="L")
def dplr_c_tilde(C: jax.Array, Lambda: jax.Array, P: jax.Array, dt: jax.Array, L: int) -> jax.Array:
    """``C~ = C (I - A_bar^L)`` on the half form: C ``(..., N/2)`` -> ``(..., N/2)`` (dense, O(N^3 log L))."""
    A_bar, _ = dplr_dense(Lambda, P, jnp.zeros_like(Lambda), dt)
    A_L = _power(A_bar, L)  # (..., N, N)
    Cf = conj_pair(C)  # (..., N) row vector
    Ct = Cf - jnp.einsum("...n,...nm->...m", Cf, A_L)
    return Ct[..., : C.shape[-1]]


@functools.partial(jax.jit, static_argnames="L")
def dplr_c_from_c_tilde(
    C_tilde: jax.Array, Lambda: jax.Array, P: jax.Array, dt: jax.Array, L: int
) -> jax.Array:
    """Inverse of :func:`dplr_c_tilde`: ``C = C~ (I - A_bar^L)^{-1}`` (dense solve)."""
    A_bar, _ = dplr_dense(Lambda, P, jnp.zeros_like(Lambda), dt)
    N = A_bar.shape[-1]
    M = jnp.eye(N, dtype=A_bar.dtype) - _power(A_bar, L)  # (..., N, N)
    Ctf = conj_pair(C_tilde)  # (..., N)
    M = jnp.broadcast_to(M, Ctf.shape[:-1] + (N, N))
    C = jnp.linalg.solve(jnp.swapaxes(M, -1, -2), Ctf[..., None])[..., 0]  # C M = C~
    return C[..., : C_tilde.shape[-1]]


@jax.jit
def dplr_step(
    Lambda: jax.Array, P: jax.Array, B: jax.Array, dt: jax.Array, x: jax.Array, u: jax.Array
) -> jax.Array:
    """One bilinear DPLR recurrence step ``x_k = A_bar x_{k-1} + B_bar u_k`` in O(N) on the half form.

    ``x_k = (I - dt/2 A)^{-1} [ (I + dt/2 A) x_{k-1} + dt B u_k ]`` with ``A = diag(Lambda) - p p^*``;
    the inverse is diagonal plus a rank-1 Woodbury term. Inner products with the conjugate-symmetric
    full vectors are real: ``p^* x = 2 Re sum_n conj(P_n) x_n``.

    Args:
      Lambda, P, B: ``(channels, N/2)`` complex. dt: ``(channels,)``.
      x: ``(batch, channels, N/2)`` complex state. u: ``(batch, channels)`` real input.

    Returns:
      the new state ``(batch, channels, N/2)``.
    """
    dt = dt[:, None]  # (channels, 1)
    Pc = jnp.conj(P)
    s = 2 * jnp.real(jnp.sum(Pc * x, axis=-1, keepdims=True))  # (batch, channels, 1): p^* x
    w = x + (dt / 2) * (Lambda * x - P * s) + dt * B * u[..., None]  # (batch, channels, N/2)
    d = 1.0 - (dt / 2) * Lambda  # (channels, N/2)
    w = w / d
    num = 2 * jnp.real(jnp.sum(Pc * w, axis=-1, keepdims=True))  # (batch, channels, 1)
    den = 1.0 + dt * jnp.real(jnp.sum(Pc * P / d, axis=-1, keepdims=True))  # (channels, 1)
    return w - (dt / 2) * (P / d) * (num / den)


# ----------------------------------------------------------------------------------------------
# The layer
# ----------------------------------------------------------------------------------------------
class S4(nnx.Module):
    """S4 layer of Gu et al. (2022): ``d_model`` independent DPLR SSMs (one per channel) + D skip.

    Parameters (``SSMParam`` unless stated), N2 = d_state / 2 conjugate pairs, H = d_model:

    * ``log_dt`` (H,): log step, uniform in [log dt_min, log dt_max).
    * ``Lambda_re_log`` (H, N2): ``Re Lambda = -exp(Lambda_re_log)`` (kept negative, the reference
      code's ``real_transform="exp"``); ``Lambda_im`` (H, N2): ``Im Lambda`` (HiPPO-LegS: < 0).
    * ``P`` (H, N2, 2), ``B`` (H, N2, 2): low-rank term and input map in the eigenbasis (HiPPO-LegS,
      ``Im B`` clipped to +-2 as the reference code).
    * ``C`` (directions, H, N2, 2): output map, CN(0, 1) at init. With ``l_max`` set it is C~ for
      kernel length ``l_max`` (the paper's parametrisation: the kernel needs no matrix power);
      with ``l_max=None`` it is C itself and C~ is computed for every call length (dense,
      O(H N^3 log L) per call; set ``l_max`` for long sequences).
    * ``D`` (H,): skip, ``nnx.Param``, N(0, 1).

    ``__call__``: ``(batch, L, H) -> (batch, L, H)``; with ``l_max`` set, ``L <= l_max`` and the
    length-``l_max`` kernel is truncated to L. ``bidirectional=True`` adds a second C (backward
    kernel, shared A, B, dt) and is not causal (no ``step``).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        l_max: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        bidirectional: bool = False,
        B_clip: float | None = 2.0,
        param_dtype: jnp.dtype = jnp.float32,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        if d_model < 1:
            raise ValueError(f"d_model must be >= 1; got {d_model}")
        if d_state < 2 or d_state % 2:
            raise ValueError(f"d_state must be an even number >= 2 (N/2 conjugate pairs); got {d_state}")
        if l_max is not None and l_max < 1:
            raise ValueError(f"l_max must be None or >= 1; got {l_max}")
        self.d_model, self.d_state = int(d_model), int(d_state)
        self.l_max = None if l_max is None else int(l_max)
        self.bidirectional = bool(bidirectional)
        H, N2 = self.d_model, self.d_state // 2
        init = dplr("legs", self.d_state, conj_sym=True, B_clip=B_clip)  # float64 eigendecomposition
        tile = lambda z: np.broadcast_to(z, (H, N2))  # noqa: E731  (H, N2): same init per channel
        n_dir = 2 if self.bidirectional else 1
        log_dt, C, D = init_dt_C_D(rngs, H, (n_dir, H, N2), dt_min, dt_max, param_dtype)
        self.log_dt = SSMParam(log_dt)  # (H,)
        self.Lambda_re_log = SSMParam(jnp.asarray(np.log(-tile(init.Lambda.real)), dtype=param_dtype))
        self.Lambda_im = SSMParam(jnp.asarray(tile(init.Lambda.imag), dtype=param_dtype))
        self.P = SSMParam(as_real(tile(init.P[0]), param_dtype))  # (H, N2, 2)
        self.B = SSMParam(as_real(tile(init.B), param_dtype))  # (H, N2, 2)
        self.C = nnx.Param(C)  # (n_dir, H, N2, 2): a regular parameter, as in state-spaces/s4
        self.D = nnx.Param(D)  # (H,)

    # -- parameters as complex arrays ------------------------------------------------------------
    def ssm_parameters(self):
        """``(Lambda, P, B, C, dt)``: complex ``(H, N2)`` x3, ``(directions, H, N2)``, real ``(H,)``."""
        Lambda = jax.lax.complex(-jnp.exp(self.Lambda_re_log[...]), self.Lambda_im[...])
        return Lambda, as_complex(self.P[...]), as_complex(self.B[...]), as_complex(self.C[...]), jnp.exp(
            self.log_dt[...]
        )

    def kernel(self, L: int) -> jax.Array:
        """Convolution kernel ``(directions, H, L)`` (real) for sequences of length L."""
        Lambda, P, B, C, dt = self.ssm_parameters()
        if self.l_max is not None:
            if L > self.l_max:
                raise ValueError(
                    f"S4 got a sequence of length {L} > l_max={self.l_max}; its C parameter is C~ for "
                    f"kernel length l_max, so raise l_max (or use l_max=None)"
                )
            return dplr_kernel(Lambda, P, B, C, dt, self.l_max)[..., :L]
        C_tilde = dplr_c_tilde(C, Lambda, P, dt, L)
        return dplr_kernel(Lambda, P, B, C_tilde, dt, L)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x``: ``(batch, L, d_model)`` -> ``(batch, L, d_model)``."""
        check_sequence_input(x, self.d_model, "S4")
        k = self.kernel(x.shape[1]).astype(x.dtype)  # (directions, H, L)
        k = k if self.bidirectional else k[0]  # (2, H, L) or (H, L)
        return ssm_convolution(x, k, self.D[...].astype(x.dtype))

    # -- recurrent mode -------------------------------------------------------------------------
    def _check_causal(self) -> None:
        if self.bidirectional:
            raise ValueError("a bidirectional S4 is not causal and cannot step; use bidirectional=False")

    def output_matrix(self) -> jax.Array:
        """The true output map C ``(H, N2)`` (converted from C~ when ``l_max`` is set; dense, O(H N^3 log L))."""
        self._check_causal()
        Lambda, P, _, C, dt = self.ssm_parameters()
        if self.l_max is None:
            return C[0]
        return dplr_c_from_c_tilde(C[0], Lambda, P, dt, self.l_max)

    def init_state(self, batch_size: int) -> jax.Array:
        """Zero state ``(batch, H, N2)`` complex."""
        self._check_causal()
        cdtype = complex_dtype(self.log_dt[...].dtype)
        return jnp.zeros((batch_size, self.d_model, self.d_state // 2), dtype=cdtype)

    def step(self, state: jax.Array, x_t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(state (batch, H, N2), x_t (batch, H)) -> (state, y_t (batch, H))``: the bilinear DPLR recurrence.

        ``y_t = 2 Re(C x_t) + D u_t``; stepping L times reproduces ``__call__`` (for ``t < l_max`` when
        set). Each call recomputes C from C~ (dense), so jit the whole generation loop.
        """
        self._check_causal()
        if x_t.ndim != 2 or x_t.shape[-1] != self.d_model:
            raise ValueError(f"S4.step expects x_t of shape (batch, {self.d_model}); got {tuple(x_t.shape)}")
        Lambda, P, B, _, dt = self.ssm_parameters()
        C = self.output_matrix()
        state = dplr_step(Lambda, P, B, dt, state, x_t)
        y = 2 * jnp.real(jnp.sum(C * state, axis=-1)) + self.D[...] * x_t  # (batch, H)
        return state, y.astype(x_t.dtype)
