"""S4D: diagonal state space sequence layer.

Gu, Gupta, Goel, Re, "On the Parameterization and Initialization of Diagonal State Space Models",
NeurIPS 2022, arXiv:2206.11893. One single-input single-output SSM per channel with a diagonal state
matrix (N/2 conjugate pairs, output 2 Re(...)):

    x'(t) = Lambda x(t) + B u(t),   y(t) = 2 Re(C x(t)) + D u(t),

discretised per state at step dt with

    ZOH:       Lambda_bar = exp(dt Lambda),                     B_bar = (exp(dt Lambda) - 1) / Lambda * B,
    bilinear:  Lambda_bar = (1 + dt Lambda/2) / (1 - dt Lambda/2),   B_bar = dt / (1 - dt Lambda/2) * B,

and applied as a causal convolution with the Vandermonde kernel

    K_l = 2 Re sum_n C_n B_bar_n Lambda_bar_n^l,   l = 0..L-1.

Initialisations of ``Lambda`` (n = 0..N/2-1, Re Lambda = -1/2 unless stated, Im < 0 as the reference code):

* ``"lin"`` (S4D-Lin): ``Im = -pi n``, ``B = 1``;
* ``"inv"`` (S4D-Inv): ``Im = -(N/pi) (N/(2n+1) - 1)``, ``B = 1``;
* ``"legs"`` (S4D-LegS): the eigenvalues of the normal part of HiPPO-LegS and ``B~ = V^* B`` (with
  ``Im B~`` clipped to +-2, and not halved, as the reference code);
* ``"ptd"`` (S4-PTD, Yu et al. 2024, arXiv:2310.01698): the eigenvalues of the perturbed HiPPO-LegS
  ``A + E = V Lambda V^{-1}`` and ``B~ = V^{-1} B`` from :func:`lax_models.ssm.ptd.ptd_init` (solved once
  per process and settings); Re Lambda <= -1/2 but not constant.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lax_models.kernels import IMPLS, resolve_impl
from lax_models.kernels.fftconv import fft_conv
from lax_models.kernels.scan import linear_scan
from lax_models.ssm import SSMParam
from lax_models.ssm.common import (
    DISCRETIZATIONS,
    as_complex,
    as_real,
    check_sequence_input,
    complex_dtype,
    discretize,
    init_dt_C_D,
    ssm_convolution,
)
from lax_models.ssm.hippo import dplr, hippo_matrices
from lax_models.ssm.ptd import DEFAULT_GAMMA, ptd_init

__all__ = ["S4D", "INITS", "DISCRETIZATIONS", "s4d_init", "discretize_diagonal", "vandermonde_kernel"]

INITS = ("lin", "inv", "legs", "ptd")


def s4d_init(init: str, N: int, *, ptd_gamma: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Initial ``(Lambda, B)``, complex128 ``(N/2,)`` each, for state size N (even); see module docstring.

    ``ptd_gamma`` only matters for ``init="ptd"`` (``None``: the PTD default gamma).
    """
    if init not in INITS:
        raise ValueError(f"unknown S4D init {init!r}; choose one of {INITS}")
    if N < 2 or N % 2:
        raise ValueError(f"state size N must be an even number >= 2; got {N}")
    n = np.arange(N // 2, dtype=np.float64)
    if init == "lin":
        return -0.5 - 1j * np.pi * n, np.ones(N // 2, dtype=np.complex128)
    if init == "inv":
        return -0.5 - 1j * (N / np.pi) * (N / (2 * n + 1) - 1), np.ones(N // 2, dtype=np.complex128)
    if init == "legs":
        d = dplr("legs", N, conj_sym=True, B_clip=2.0)
        return d.Lambda, d.B
    gamma = DEFAULT_GAMMA if ptd_gamma is None else float(ptd_gamma)
    Lambda, _, Vinv = ptd_init(N, gamma=gamma)
    _, B_hippo = hippo_matrices("legs", N)
    return Lambda[: N // 2], Vinv[: N // 2] @ B_hippo  # first half: one of each conjugate pair


@functools.partial(jax.jit, static_argnames="method")
def discretize_diagonal(
    Lambda: jax.Array, B: jax.Array, dt: jax.Array, method: str = "zoh"
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(log Lambda_bar, Lambda_bar, B_bar)`` for a diagonal SSM; ``Lambda, B``: ``(..., N2)``, ``dt``: ``(...)``.

    ``log Lambda_bar`` is ``dt Lambda`` exactly for ZOH (any branch works for the Vandermonde powers).
    """
    dt = jnp.asarray(dt)[..., None]  # (..., 1): one step per channel
    Lambda_bar, B_scale = discretize(Lambda, dt, method)  # (..., N2) each
    log_Lambda_bar = Lambda * dt if method == "zoh" else jnp.log(Lambda_bar)
    return log_Lambda_bar, Lambda_bar, B_scale * B


@functools.partial(jax.jit, static_argnames="L")
def vandermonde_kernel(log_Lambda_bar: jax.Array, B_bar: jax.Array, C: jax.Array, L: int) -> jax.Array:
    """``K_l = 2 Re sum_n C_n B_bar_n exp(l log Lambda_bar_n)``, l < L.

    Args:
      log_Lambda_bar, B_bar: ``(..., N2)`` complex; C: ``(..., N2)`` complex (broadcast against them).
      L: kernel length.

    Returns:
      real ``(..., L)``. Materialises the ``(..., N2, L)`` Vandermonde matrix.
    """
    powers = jnp.exp(log_Lambda_bar[..., None] * jnp.arange(int(L)))  # (..., N2, L)
    return 2 * jnp.real(jnp.einsum("...n,...nl->...l", C * B_bar, powers))


class S4D(nnx.Module):
    """S4D layer of Gu et al. (2022): ``d_model`` independent diagonal SSMs (one per channel) + D skip.

    Parameters (``SSMParam`` unless stated), N2 = d_state / 2, H = d_model:
    ``log_dt`` (H,); ``Lambda_re_log`` (H, N2) with ``Re Lambda = -exp(Lambda_re_log)``;
    ``Lambda_im`` (H, N2); ``B`` (H, N2, 2); ``C`` (directions, H, N2, 2) ~ CN(0, 1); ``D`` (H,)
    (``nnx.Param``, N(0, 1)). ``l_max`` is accepted for the mixer contract and ignored: the kernel is
    built for the length of each call. ``bidirectional=True`` adds a backward C (shared Lambda, B, dt)
    and disables ``step``.

    ``init="ptd"`` is S4-PTD: the PTD solve for ``N = d_state`` with weight ``ptd_gamma`` (see
    :mod:`lax_models.ssm.ptd`; solved once per process and settings).

    ``impl`` ("auto" | "xla" | "pallas"): how the convolution of ``__call__`` and the scan of
    :meth:`recurrent` run: XLA (``jnp.fft``, ``jax.lax.associative_scan``) or the Pallas kernels of
    :mod:`lax_models.kernels` (interpret mode on CPU); "auto" is Pallas on GPU / TPU, XLA on CPU.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        l_max: int | None = None,
        discretization: str = "zoh",
        init: str = "legs",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        bidirectional: bool = False,
        ptd_gamma: float | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        impl: str = "auto",
        *,
        rngs: nnx.Rngs,
    ) -> None:
        if d_model < 1:
            raise ValueError(f"d_model must be >= 1; got {d_model}")
        if impl not in IMPLS:
            raise ValueError(f"S4D impl must be one of {IMPLS}; got {impl!r}")
        self.impl = impl
        if discretization not in DISCRETIZATIONS:
            raise ValueError(f"unknown discretization {discretization!r}; choose one of {DISCRETIZATIONS}")
        self.d_model, self.d_state = int(d_model), int(d_state)
        self.l_max = l_max
        self.discretization = discretization
        self.init = init
        self.bidirectional = bool(bidirectional)
        H, N2 = self.d_model, self.d_state // 2
        Lambda, B = s4d_init(init, self.d_state, ptd_gamma=ptd_gamma)  # (N2,) each
        tile = lambda z: np.broadcast_to(z, (H, N2))  # noqa: E731  (H, N2): same init per channel
        n_dir = 2 if self.bidirectional else 1
        log_dt, C, D = init_dt_C_D(rngs, H, (n_dir, H, N2), dt_min, dt_max, param_dtype)
        self.log_dt = SSMParam(log_dt)  # (H,)
        self.Lambda_re_log = SSMParam(jnp.asarray(np.log(-tile(Lambda.real)), dtype=param_dtype))
        self.Lambda_im = SSMParam(jnp.asarray(tile(Lambda.imag), dtype=param_dtype))
        self.B = SSMParam(as_real(tile(B), param_dtype))  # (H, N2, 2)
        self.C = nnx.Param(C)  # (n_dir, H, N2, 2): a regular parameter, as in state-spaces/s4
        self.D = nnx.Param(D)  # (H,)

    def ssm_parameters(self):
        """``(Lambda, B, C, dt)``: complex ``(H, N2)`` x2, ``(directions, H, N2)``, real ``(H,)``."""
        Lambda = jax.lax.complex(-jnp.exp(self.Lambda_re_log[...]), self.Lambda_im[...])
        return Lambda, as_complex(self.B[...]), as_complex(self.C[...]), jnp.exp(self.log_dt[...])

    def kernel(self, L: int) -> jax.Array:
        """Convolution kernel ``(directions, H, L)`` (real)."""
        Lambda, B, C, dt = self.ssm_parameters()
        log_Lambda_bar, _, B_bar = discretize_diagonal(Lambda, B, dt, self.discretization)
        return vandermonde_kernel(log_Lambda_bar, B_bar, C, L)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x``: ``(batch, L, d_model)`` -> ``(batch, L, d_model)``."""
        check_sequence_input(x, self.d_model, "S4D")
        k = self.kernel(x.shape[1]).astype(x.dtype)  # (directions, H, L)
        if resolve_impl(self.impl) == "pallas":  # the Monarch kernel; backward kernel anti-causal, lag 0 included
            return fft_conv(x, k[0], self.D[...].astype(x.dtype), k[1] if self.bidirectional else None,
                            impl="pallas")
        k = k if self.bidirectional else k[0]
        return ssm_convolution(x, k, self.D[...].astype(x.dtype))

    def recurrent(self, x: jax.Array) -> jax.Array:
        """``__call__``'s output by the recurrence over the whole sequence (the recurrent mode):
        ``x_k = Lambda_bar x_{k-1} + B_bar u_k`` per channel and state by one diagonal linear scan
        (``impl``: XLA or the Pallas scan kernel), ``y_k = 2 Re(C x_k) + D u_k``; bidirectional: plus
        a reverse scan with the backward C. ``x``: ``(batch, L, d_model)`` -> ``(batch, L, d_model)``.
        Memory O(batch L H N/2) for the states (the convolution needs O(batch L H))."""
        check_sequence_input(x, self.d_model, "S4D")
        batch, length, H = x.shape
        Lambda, B, C, dt = self.ssm_parameters()
        _, Lambda_bar, B_bar = discretize_diagonal(Lambda, B, dt, self.discretization)  # (H, N2)
        n2 = Lambda_bar.shape[-1]
        bu = (B_bar * x[..., None]).reshape(batch, length, H * n2)  # (batch, L, H N2): one state each
        impl = resolve_impl(self.impl)
        y = 0.0
        for direction in range(C.shape[0]):  # forward, then (bidirectional) backward
            states = linear_scan(Lambda_bar.reshape(H * n2), bu, reverse=direction == 1, impl=impl)
            states = states.reshape(batch, length, H, n2)
            y = y + 2 * jnp.real(jnp.sum(C[direction] * states, axis=-1))  # (batch, L, H)
        return (y + self.D[...] * x).astype(x.dtype)

    def _check_causal(self) -> None:
        if self.bidirectional:
            raise ValueError("a bidirectional S4D is not causal and cannot step; use bidirectional=False")

    def init_state(self, batch_size: int) -> jax.Array:
        """Zero state ``(batch, H, N2)`` complex."""
        self._check_causal()
        cdtype = complex_dtype(self.log_dt[...].dtype)
        return jnp.zeros((batch_size, self.d_model, self.d_state // 2), dtype=cdtype)

    def step(self, state: jax.Array, x_t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``x_k = Lambda_bar x_{k-1} + B_bar u_k``, ``y_k = 2 Re(C x_k) + D u_k``; x_t, y_t: ``(batch, H)``."""
        self._check_causal()
        if x_t.ndim != 2 or x_t.shape[-1] != self.d_model:
            raise ValueError(f"S4D.step expects x_t of shape (batch, {self.d_model}); got {tuple(x_t.shape)}")
        Lambda, B, C, dt = self.ssm_parameters()
        _, Lambda_bar, B_bar = discretize_diagonal(Lambda, B, dt, self.discretization)  # (H, N2)
        state = Lambda_bar * state + B_bar * x_t[..., None]  # (batch, H, N2)
        y = 2 * jnp.real(jnp.sum(C[0] * state, axis=-1)) + self.D[...] * x_t  # (batch, H)
        return state, y.astype(x_t.dtype)
