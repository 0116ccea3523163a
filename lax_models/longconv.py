"""Simple long convolutions: one learned kernel as long as the sequence, per channel.

Fu, Epstein, Nguyen, Thomas, Zhang, Dao, Rudra, Ré, "Simple Hardware-Efficient Long Convolutions for
Sequence Modeling", ICML 2023, arXiv:2302.06646, Section 3.1. The kernel K in R^{L x H} is a plain
parameter (no SSM behind it), regularised in every forward pass by

    Smooth:  K_k <- (1 / (2p + 1)) sum_{j=-p..p} K_{k+j}          (zero outside, window w = 2p + 1)
    Squash:  K_k <- sign(K_k) max(|K_k| - lambda, 0)               (soft threshold)

then (training only) kernel dropout, and applied by an FFT convolution of size 2L (zero padding, so
the circular convolution is the linear one):

    y_i = sum_{m=0}^{i} K_m u_{i-m} + D u_i                                   (causal)
    y_i = sum_{m=0}^{i} K_m u_{i-m} + sum_{s=1}^{L-1-i} K'_{s-1} u_{i+s} + D u_i   (bidirectional)

The bidirectional layer has a second kernel K' for the future, as the reference's
``bidirectional=True`` (two kernel channels laid out as one kernel of length 2L). Reference code:
``HazyResearch/safari:src/models/sequence/long_conv.py`` and ``long_conv_kernel.py``.

Layout is channels-last: ``(batch, length, d_model)``.
"""
from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lax_models.kernels import IMPLS, resolve_impl
from lax_models.kernels.fftconv import fft_conv
from lax_models.ssm import SSMParam

__all__ = ["LongConv", "smooth", "squash", "fft_long_conv"]


def smooth(k: jax.Array, window: int, axis: int = 0) -> jax.Array:
    """Moving average of odd width ``window`` along ``axis``, zero padded, always divided by ``window``
    (``torch.nn.AvgPool1d(window, stride=1, padding=window // 2)`` of the reference)."""
    if window == 1:
        return k
    p = window // 2
    pad = [(0, 0)] * k.ndim
    pad[axis] = (p, p)
    kp = jnp.pad(k, pad)
    n = k.shape[axis]
    total = sum(jax.lax.slice_in_dim(kp, j, j + n, axis=axis) for j in range(window))
    return total / window


def squash(k: jax.Array, lam: float) -> jax.Array:
    """Soft threshold ``sign(k) max(|k| - lam, 0)`` (the proximal map of ``lam |k|``)."""
    return jnp.sign(k) * jax.nn.relu(jnp.abs(k) - lam)


def fft_long_conv(u: jax.Array, k: jax.Array, k_future: jax.Array | None = None) -> jax.Array:
    """Linear convolution of ``u`` (batch, L, H) with a kernel ``k`` (L, H) along the length axis,
    by FFTs of size 2L: ``y_i = sum_{m<=i} k_m u_{i-m}``. With ``k_future`` (L, H), also
    ``+ sum_{s>=1} k_future_{s-1} u_{i+s}`` (the future part is placed at the end of one kernel
    of length 2L: position 2L - s holds k_future_{s-1})."""
    length = u.shape[1]
    n = 2 * length
    if k_future is not None:
        k = jnp.concatenate([k, k_future[::-1]], axis=0)  # (2L, H): k then reversed k_future
    k_f = jnp.fft.rfft(k, n=n, axis=0)                    # (L + 1, H)
    u_f = jnp.fft.rfft(u, n=n, axis=1)                    # (batch, L + 1, H)
    return jnp.fft.irfft(u_f * k_f, n=n, axis=1)[:, :length]  # (batch, L, H)


class LongConv(nnx.Module):
    """Long convolution mixer: (batch, length, d_model) -> (batch, length, d_model).

    Args:
        d_model: H, channels (one kernel each, no mixing across channels).
        l_max: the kernel length (required: the longest sequence the layer convolves fully;
            longer sequences see only the last ``l_max`` lags, as in the reference).
        bidirectional: a second kernel for the future; then the layer cannot step.
        lam: the squash threshold lambda (the reference's layer config: 0.003; LRA 0.001-0.004).
        smooth_window: width w of the moving average (odd; 1 turns smoothing off). The reference's
            ``ma_window_len`` is 7, but its smoothing is off in every released config
            (``use_ma_smoothing=False``).
        kernel_dropout: dropout on the kernel entries during training (reference config: 0.2).
        weight_init: "random" (N(0, 0.002^2)) or "double_exp" (N(0, 0.02^2) times
            exp(-(j / l_max) (H/2)^(i/H)) for lag j of channel i).
        impl: how the convolution runs: "xla" (``jnp.fft``, :func:`fft_long_conv`), "pallas" (the fused
            Monarch FFT-convolution kernel of :mod:`lax_models.kernels.fftconv`; interpret mode on CPU)
            or "auto" (Pallas on GPU / TPU, XLA on CPU).

    Parameters: ``kernel`` (n_kernels, l_max, H) is an :class:`~lax_models.ssm.SSMParam`: the reference
    registers it with its own learning rate (e.g. 1e-3 against 1e-2) and no weight decay.
    ``D`` (H,) ~ N(0, 1) is a plain ``nnx.Param``.
    """

    def __init__(
        self,
        d_model: int,
        l_max: int | None = None,
        bidirectional: bool = False,
        lam: float = 0.003,
        smooth_window: int = 1,
        kernel_dropout: float = 0.0,
        weight_init: Literal["random", "double_exp"] = "random",
        impl: Literal["auto", "xla", "pallas"] = "auto",
        *,
        rngs: nnx.Rngs,
    ) -> None:
        if l_max is None or int(l_max) < 1:
            raise ValueError(f"LongConv needs l_max, the kernel length (the longest sequence it will "
                             f"see), as a positive integer; got l_max={l_max}. Set the model's l_max "
                             f"(e.g. model.l_max=1024) or the mixer's")
        if int(smooth_window) < 1 or int(smooth_window) % 2 == 0:
            raise ValueError(f"smooth_window must be a positive odd integer (1 = no smoothing); got {smooth_window}")
        if lam < 0:
            raise ValueError(f"the squash threshold lam must be >= 0; got {lam}")
        if not 0.0 <= kernel_dropout < 1.0:
            raise ValueError(f"kernel_dropout must be in [0, 1); got {kernel_dropout}")
        if weight_init not in ("random", "double_exp"):
            raise ValueError(f"weight_init must be 'random' or 'double_exp'; got {weight_init!r}")
        self.d_model, self.l_max = int(d_model), int(l_max)
        self.bidirectional = bool(bidirectional)
        self.lam, self.smooth_window = float(lam), int(smooth_window)
        self.weight_init = weight_init
        if impl not in IMPLS:
            raise ValueError(f"LongConv impl must be one of {IMPLS}; got {impl!r}")
        self.impl = impl
        n_kernels = 2 if self.bidirectional else 1
        shape = (n_kernels, self.l_max, self.d_model)  # (kernels, lag, channel)
        # NumPy draws seeded from the key (no XLA compilation per layer shape)
        rng = np.random.default_rng(np.asarray(jax.random.key_data(rngs.params())).ravel())
        if weight_init == "random":
            k = 0.002 * rng.normal(size=shape)
        else:
            lag = np.arange(self.l_max)[:, None] / self.l_max                          # (l_max, 1)
            rate = float(self.d_model // 2) ** (np.arange(self.d_model) / self.d_model)  # (H,)
            k = 0.02 * rng.normal(size=shape) * np.exp(-lag * rate)
        self.kernel = SSMParam(jnp.asarray(k, jnp.float32))
        self.D = nnx.Param(jnp.asarray(rng.normal(size=(self.d_model,)), jnp.float32))
        self.kernel_drop = nnx.Dropout(kernel_dropout, rngs=rngs)

    def effective_kernel(self, length: int | None = None) -> jax.Array:
        """The kernel after smooth, squash and kernel dropout, first ``length`` lags:
        (n_kernels, min(length, l_max), H). Smoothing sees the whole ``l_max`` kernel, so a lag's
        weight does not depend on the sequence length."""
        k = squash(smooth(self.kernel[...], self.smooth_window, axis=1), self.lam)
        k = self.kernel_drop(k)
        return k if length is None else k[:, :length]

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x``: (batch, length, d_model) -> (batch, length, d_model)."""
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"LongConv expects input (batch, length, d_model={self.d_model}); got shape "
                             f"{tuple(x.shape)}")
        length = x.shape[1]
        k = self.effective_kernel(length)                             # (n_kernels, <= length, H)
        if k.shape[1] < length:  # sequence longer than l_max: no weight beyond lag l_max - 1
            k = jnp.pad(k, ((0, 0), (0, length - k.shape[1]), (0, 0)))  # (n_kernels, length, H)
        if resolve_impl(self.impl) == "pallas":  # kernels (H, length); the future part is anti-causal
            k_rev = None
            if self.bidirectional:  # sum_{s>=1} K'_{s-1} u_{i+s}: lag 0 has no weight
                k_rev = jnp.concatenate([jnp.zeros_like(k[1, :1]), k[1, :-1]], axis=0).T
            return fft_conv(x, k[0].T, self.D[...], k_rev, impl="pallas").astype(x.dtype)
        y = fft_long_conv(x, k[0], k[1] if self.bidirectional else None)
        return (y + self.D[...] * x).astype(x.dtype)

    # -- recurrent mode: the state is the last l_max inputs ----------------------------------------
    def init_state(self, batch_size: int) -> jax.Array:
        """Zeros standing for the inputs before the sequence: (batch, l_max, d_model), oldest first."""
        return jnp.zeros((batch_size, self.l_max, self.d_model), jnp.float32)

    def step(self, state: jax.Array, x_t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``y_t = sum_m K_m u_{t-m} + D u_t`` over the stored past: (state, y_t (batch, d_model))."""
        if self.bidirectional:
            raise ValueError("a bidirectional long convolution sees the future and has no recurrent "
                             "step mode; use bidirectional=False for generation")
        state = jnp.concatenate([state[:, 1:], x_t[:, None, :].astype(state.dtype)], axis=1)  # newest last
        k = self.effective_kernel()[0]                                 # (l_max, H): k[m] weighs u_{t-m}
        y = jnp.einsum("blh,lh->bh", state, k[::-1]) + self.D[...] * x_t
        return state, y.astype(x_t.dtype)
