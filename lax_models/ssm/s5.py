"""S5: simplified state-space layer, a MIMO diagonal SSM evaluated with a parallel scan.

Smith, Warrington, Linderman, "Simplified State Space Layers for Sequence Modeling", ICLR 2023,
arXiv:2208.04933. One continuous-time linear SSM per layer maps all H channels through P shared
complex states (eq. (2)-(6) of the paper):

    x'(t) = Lambda x(t) + B~ u(t),   y(t) = C~ x(t) + D u(t),     Lambda = diag(lambda_1..lambda_P),

with Lambda in C^P, B~ in C^{P x H}, C~ in C^{H x P}, D in R^H. Zero-order hold with one timescale
per state, Delta = exp(log_dt) in R^P, gives the discrete recurrence

    Lambda_bar = exp(Lambda Delta),   B_bar = Lambda^{-1} (Lambda_bar - 1) B~,
    x_k = Lambda_bar x_{k-1} + B_bar u_k,   y_k = C~ x_k + D u_k,

evaluated for the whole sequence at once by ``jax.lax.associative_scan`` with the operator
``(a_i, b_i) . (a_j, b_j) = (a_j a_i, a_j b_i + b_j)`` (the parallel mode), or one step at a time
(the recurrent mode, :meth:`S5.step`).

Conjugate symmetry: the eigenvalues of a real state matrix A = V Lambda V^{-1} come in conjugate
pairs; keeping one of each pair (P/2 states) and taking ``y = 2 Re(C~ x)`` gives the same real
output as the full system of P states, at half the cost.

Initialisation (reference ``lindermanlab/S5:s5/ssm_init.py`` and ``s5/train.py``): the normal part
S = A + p p^T of HiPPO-LegS (blocks of size P/J), diagonalised as S = V Lambda V^*
(Re Lambda = -1/2), J copies on the block diagonal; B~ = V^{-1} B and C~ = C V with B drawn real
and C complex; log_dt ~ U[log dt_min, log dt_max] per state; D ~ N(0, 1). The draws are made in NumPy from a
seed taken from ``rngs.params()`` (float64, like the eigendecomposition; no XLA compilation per
layer shape).

Layout is channels-last: ``(batch, length, d_model)``.
"""
from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from flax import nnx

from lax_models.kernels import IMPLS, resolve_impl
from lax_models.kernels.scan import linear_scan
from lax_models.ssm import SSMParam
from lax_models.ssm.common import DISCRETIZATIONS, as_complex, as_real, discretize
from lax_models.ssm.hippo import dplr
from lax_models.ssm.ptd import DEFAULT_GAMMA, ptd_init

__all__ = ["S5", "initial_draws", "linear_recurrence_scan", "conjugate_half"]


# ----------------------------------------------------------------------------------------------
# Pure functions
# ----------------------------------------------------------------------------------------------
def conjugate_half(lam: np.ndarray, v: np.ndarray, vinv: np.ndarray) -> tuple[np.ndarray, ...]:
    """One eigenvalue of each conjugate pair (those with Im < 0) and their eigenvectors.

    For a real matrix A = V diag(lam) V^{-1} whose eigenvalues all come in conjugate pairs, the
    kept half (lam_h, V[:, h], V^{-1}[h, :]) gives A = 2 Re(V_h diag(lam_h) V^{-1}_h). Raises if
    the spectrum has real eigenvalues (use ``conj_sym=False`` then).
    """
    n = lam.shape[0]
    order = np.argsort(lam.imag, kind="stable")
    keep = order[: n // 2]
    scale = max(1.0, float(np.max(np.abs(lam))))
    if n % 2 or np.any(lam.imag[keep] >= -1e-9 * scale):
        raise ValueError(f"conjugate symmetry needs eigenvalues in complex-conjugate pairs; got {n} "
                         f"eigenvalues, {int(np.sum(np.abs(lam.imag) <= 1e-9 * scale))} of them real; "
                         f"use conj_sym=False for this initialisation")
    return lam[keep], v[:, keep], vinv[keep, :]


def _combine(earlier, later):
    """The scan operator: applying (a_i, b_i) then (a_j, b_j) is (a_j a_i, a_j b_i + b_j)."""
    a_i, b_i = earlier
    a_j, b_j = later
    return a_j * a_i, a_j * b_i + b_j


def linear_recurrence_scan(lam_bar: jax.Array, bu: jax.Array, reverse: bool = False) -> jax.Array:
    """All states of ``x_k = lam_bar * x_{k-1} + bu_k`` (x_{-1} = 0) by a parallel associative scan.

    ``lam_bar``: (P,) complex, ``bu``: (..., L, P) complex -> ``xs``: (..., L, P). With ``reverse``
    the recurrence runs from the end: ``x_k = lam_bar * x_{k+1} + bu_k``.
    """
    a = jnp.broadcast_to(lam_bar, bu.shape)  # (..., L, P): the same transition at every step
    _, xs = jax.lax.associative_scan(_combine, (a, bu), reverse=reverse, axis=bu.ndim - 2)
    return xs


def _project(c: jax.Array, xs: jax.Array) -> jax.Array:
    """Re(C x) for complex C (H, P) and states xs (..., P): real matmuls only -> (..., H)."""
    return xs.real @ c.real.T - xs.imag @ c.imag.T


def _truncated_normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """Normal truncated to two standard deviations, rescaled to standard deviation ``std``
    (``jax.nn.initializers.variance_scaling(..., "truncated_normal")``'s distribution)."""
    lo, hi = scipy.special.ndtr(-2.0), scipy.special.ndtr(2.0)
    z = scipy.special.ndtri(rng.uniform(lo, hi, size=shape))  # inverse-CDF sample on [-2, 2]
    return z * (std / 0.87962566103423978)                       # 0.8796: std of N(0,1) cut at +-2


def initial_draws(seed: np.ndarray, d_model: int, d_state: int, n_kept: int, c_init: str,
                  bidirectional: bool) -> dict[str, np.ndarray]:
    """The random draws of :class:`S5`'s initialisation (float64, NumPy: no compilation per shape).

    ``B`` (P, H): lecun normal (the reference's jax initializer takes the P axis as fan-in: variance
    1/P). ``C`` (H, P, 2): "trunc_standard_normal": per output row a truncated normal of variance 1/P
    (the reference samples each row with fan-in P); "lecun_normal": variance 1/(P H) (fan-in of the
    whole (H, P, 2) array); "complex_normal": ``C~`` directly, (H, P', 2) of N(0, 1/2).
    ``D`` (H,): N(0, 1). ``u`` (P',): U[0, 1) for the log-uniform timescales.
    """
    rng = np.random.default_rng(seed)
    h, p = d_model, d_state

    def draw_c():
        if c_init == "complex_normal":
            return rng.normal(size=(h, n_kept, 2)) * math.sqrt(0.5)
        var = 1.0 / p if c_init == "trunc_standard_normal" else 1.0 / (p * h)
        return _truncated_normal(rng, (h, p, 2), math.sqrt(var))

    out = {"B": _truncated_normal(rng, (p, h), math.sqrt(1.0 / p)), "C": draw_c(),
           "D": rng.normal(size=(h,)), "u": rng.uniform(size=(n_kept,))}
    if bidirectional:
        out["C_reverse"] = draw_c()
    return out


def seed_from_key(key: jax.Array) -> np.ndarray:
    """A NumPy seed from a JAX key: the key's raw words."""
    return np.asarray(jax.random.key_data(key)).ravel()


# ----------------------------------------------------------------------------------------------
# The layer
# ----------------------------------------------------------------------------------------------
class S5(nnx.Module):
    """The S5 SSM: (batch, length, d_model) -> (batch, length, d_model), without the pointwise
    activation and residual (the sequence block of :mod:`lax_models.sequence` adds those).

    Args:
        d_model: H, the channels in and out.
        d_state: P, the number of complex states (the reference's ``ssm_size_base``); with
            ``conj_sym`` only P/2 of them are stored and computed.
        blocks: J, the number of HiPPO-N blocks on the block diagonal of the initial state matrix
            (each of size P/J).
        l_max: unused (the scan runs over whatever length it is given); part of the mixer contract.
        dt_min, dt_max: range of the initial timescales, log-uniform, one per state.
        bidirectional: add a second scan over the reversed sequence with its own output matrix
            (the reference concatenates [C1 C2] over the forward and backward states). Cannot step.
        init: "hippo" (block-diagonal HiPPO-N, from :func:`lax_models.ssm.hippo.dplr`) or "ptd"
            (S5-PTD: blocks of the perturbed-then-diagonalised HiPPO-LegS of
            :func:`lax_models.ssm.ptd.ptd_init`, Yu et al. arXiv:2310.01698; B~ = V^{-1} B, C~ = C V).
        conj_sym: keep one eigenvalue of each conjugate pair and output 2 Re(C~ x).
        C_init: "trunc_standard_normal" (per output row a truncated normal of variance 1/P; the
            reference default), "lecun_normal" (variance 1/(P H)), both then multiplied by V, or
            "complex_normal" (C~ directly, N(0, 1/2) real and imaginary parts).
        discretization: "zoh" or "bilinear".
        clip_eigs: use min(Re Lambda, -1e-4) so every mode decays (recommended by the reference for
            autoregressive use and unbounded lengths).
        step_rescale: multiply every timescale (zero-shot change of the sampling rate).
        ptd_gamma: for ``init="ptd"`` only: the weight of ||E|| in the PTD objective (None: the
            solver's default; solved once per process and settings, as for :class:`~lax_models.ssm.s4d.S4D`).
        impl: how the parallel mode runs the recurrence: "xla" (``jax.lax.associative_scan``),
            "pallas" (the chunked scan kernel of :mod:`lax_models.kernels.scan`; interpret mode on
            CPU) or "auto" (Pallas on GPU / TPU, XLA on CPU).

    Parameters: ``Lambda_re``, ``Lambda_im`` (P',), ``B`` (P', H, 2), ``log_dt`` (P',) are
    :class:`~lax_models.ssm.SSMParam` (the reference's "ssm" optimizer group: own learning rate, no
    weight decay); ``C`` (H, P', 2) [and ``C_reverse``] and ``D`` (H,) are plain ``nnx.Param``
    (the reference's "regular" group). P' = P/2 with ``conj_sym``, else P.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        blocks: int = 1,
        l_max: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        bidirectional: bool = False,
        init: Literal["hippo", "ptd"] = "hippo",
        conj_sym: bool = True,
        C_init: Literal["trunc_standard_normal", "lecun_normal", "complex_normal"] = "trunc_standard_normal",
        discretization: Literal["zoh", "bilinear"] = "zoh",
        clip_eigs: bool = False,
        step_rescale: float = 1.0,
        ptd_gamma: float | None = None,
        impl: Literal["auto", "xla", "pallas"] = "auto",
        *,
        rngs: nnx.Rngs,
    ) -> None:
        d_model, d_state, blocks = int(d_model), int(d_state), int(blocks)
        if impl not in IMPLS:
            raise ValueError(f"S5 impl must be one of {IMPLS}; got {impl!r}")
        self.impl = impl
        if d_model < 1 or d_state < 1 or blocks < 1:
            raise ValueError(f"S5 needs d_model, d_state, blocks >= 1; got {d_model}, {d_state}, {blocks}")
        if d_state % blocks:
            raise ValueError(f"d_state={d_state} must be a multiple of blocks={blocks} (blocks of equal size)")
        block = d_state // blocks
        if conj_sym and block % 2:
            raise ValueError(f"conj_sym keeps half of each block's eigenvalues: the block size "
                             f"d_state/blocks = {block} must be even")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max; got dt_min={dt_min}, dt_max={dt_max}")
        if init not in ("hippo", "ptd"):
            raise ValueError(f"S5 init must be 'hippo' or 'ptd'; got {init!r}")
        if C_init not in ("trunc_standard_normal", "lecun_normal", "complex_normal"):
            raise ValueError(f"C_init must be trunc_standard_normal, lecun_normal or complex_normal; got {C_init!r}")
        if discretization not in DISCRETIZATIONS:
            raise ValueError(f"discretization must be 'zoh' or 'bilinear'; got {discretization!r}")
        self.d_model, self.d_state, self.blocks = d_model, d_state, blocks
        self.l_max = l_max
        self.bidirectional, self.conj_sym, self.clip_eigs = bool(bidirectional), bool(conj_sym), bool(clip_eigs)
        self.init, self.C_init, self.discretization = init, C_init, discretization
        self.step_rescale = float(step_rescale)

        # Eigen-decomposition of one block, then J copies on the block diagonal.
        if init == "hippo":  # S = A + p p^T = V diag(Lambda) V^*, V unitary (lax_models.ssm.hippo)
            normal_part = dplr("legs", block, conj_sym=False, B_clip=None)
            lam, v = normal_part.Lambda, normal_part.V
            vinv = v.conj().T
        else:  # A_legs + E = V diag(Lambda) V^{-1} (lax_models.ssm.ptd, solved once per process)
            gamma = DEFAULT_GAMMA if ptd_gamma is None else float(ptd_gamma)
            lam, v, vinv = (np.asarray(a, dtype=np.complex128) for a in ptd_init(block, gamma=gamma))
        if conj_sym:
            lam, v, vinv = conjugate_half(lam, v, vinv)                # (b,), (block, b), (b, block)
        lam = np.tile(lam, blocks)                                     # (P',)
        v = _block_diag([v] * blocks)                                  # (P, P')
        vinv = _block_diag([vinv] * blocks)                            # (P', P)
        n_kept = lam.shape[0]

        self.Lambda_re = SSMParam(jnp.asarray(lam.real, jnp.float32))
        self.Lambda_im = SSMParam(jnp.asarray(lam.imag, jnp.float32))
        draws = initial_draws(seed_from_key(rngs.params()), d_model, d_state, n_kept, C_init, self.bidirectional)
        self.B = SSMParam(as_real(vinv @ draws["B"], jnp.float32))  # B~ = V^{-1} B: (P', H, 2)
        self.C = nnx.Param(self._c_tilde(draws["C"], v))      # (H, P', 2)
        if self.bidirectional:
            self.C_reverse = nnx.Param(self._c_tilde(draws["C_reverse"], v))
        self.D = nnx.Param(jnp.asarray(draws["D"], jnp.float32))
        u = draws["u"]
        self.log_dt = SSMParam(jnp.asarray(math.log(dt_min) + u * (math.log(dt_max) - math.log(dt_min)), jnp.float32))

    def _c_tilde(self, c: np.ndarray, v: np.ndarray) -> jax.Array:
        """C~ = C V from a real draw (H, P, 2) (complex_normal: C~ drawn directly, (H, P', 2))."""
        if self.C_init == "complex_normal":
            return jnp.asarray(c, jnp.float32)
        return as_real((c[..., 0] + 1j * c[..., 1]) @ v, jnp.float32)

    # -- the discretised system -----------------------------------------------------------------
    @property
    def n_states(self) -> int:
        """States actually stored: P/2 with conjugate symmetry, else P."""
        return self.Lambda_re.shape[0]

    def continuous(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(Lambda (P',), B~ (P', H), dt (P',))`` of the continuous-time system."""
        re = self.Lambda_re[...]
        if self.clip_eigs:
            re = jnp.minimum(re, -1e-4)
        lam = jax.lax.complex(re, self.Lambda_im[...])
        dt = self.step_rescale * jnp.exp(self.log_dt[...])
        return lam, as_complex(self.B[...]), dt

    def discretized(self) -> tuple[jax.Array, jax.Array]:
        """``(Lambda_bar (P',), B_bar (P', H))`` complex."""
        lam, b_tilde, dt = self.continuous()
        lam_bar, b_scale = discretize(lam, dt, self.discretization)  # (P',) each: one dt per state
        return lam_bar, b_scale[:, None] * b_tilde

    def _output(self, c: jax.Array, xs: jax.Array) -> jax.Array:
        y = _project(as_complex(c), xs)  # Re(C~ x): (..., H)
        return 2.0 * y if self.conj_sym else y

    # -- parallel mode ---------------------------------------------------------------------------
    def __call__(self, x: jax.Array) -> jax.Array:
        """``x``: (batch, length, d_model) -> (batch, length, d_model) by the parallel scan."""
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"S5 expects input (batch, length, d_model={self.d_model}); got shape "
                             f"{tuple(x.shape)}")
        lam_bar, b_bar = self.discretized()
        bu = jax.lax.complex(x @ b_bar.real.T, x @ b_bar.imag.T)      # (batch, length, P')
        if resolve_impl(self.impl) == "xla":
            scan = linear_recurrence_scan
        else:  # the Pallas kernel (real / imaginary split inside): (P',), (batch, length, P')
            scan = lambda a, b, reverse=False: linear_scan(a, b, reverse=reverse, impl="pallas")  # noqa: E731
        y = self._output(self.C[...], scan(lam_bar, bu))
        if self.bidirectional:
            y = y + self._output(self.C_reverse[...], scan(lam_bar, bu, reverse=True))
        return (y + self.D[...] * x).astype(x.dtype)                  # (batch, length, d_model)

    # -- recurrent mode --------------------------------------------------------------------------
    def init_state(self, batch_size: int) -> jax.Array:
        """Zero state, (batch, P') complex64."""
        return jnp.zeros((batch_size, self.n_states), jnp.complex64)

    def step(self, state: jax.Array, x_t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One step ``x_k = Lambda_bar x_{k-1} + B_bar u_k``, ``y_k = 2 Re(C~ x_k) + D u_k``.

        ``state``: (batch, P') complex, ``x_t``: (batch, d_model) -> (state, y_t (batch, d_model)).
        """
        if self.bidirectional:
            raise ValueError("a bidirectional S5 sees the future and has no recurrent step mode; "
                             "use bidirectional=False for generation")
        lam_bar, b_bar = self.discretized()
        bu = jax.lax.complex(x_t @ b_bar.real.T, x_t @ b_bar.imag.T)  # (batch, P')
        state = lam_bar * state + bu
        y = self._output(self.C[...], state) + self.D[...] * x_t
        return state, y.astype(x_t.dtype)


def _block_diag(mats: list[np.ndarray]) -> np.ndarray:
    """Block-diagonal matrix of (possibly rectangular) blocks."""
    rows = sum(m.shape[0] for m in mats)
    cols = sum(m.shape[1] for m in mats)
    out = np.zeros((rows, cols), dtype=np.result_type(*mats))
    r = c = 0
    for m in mats:
        out[r:r + m.shape[0], c:c + m.shape[1]] = m
        r, c = r + m.shape[0], c + m.shape[1]
    return out
