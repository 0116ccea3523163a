"""Multigrid neural operator (MgNO).

He, Liu, Xu, "MgNO: Efficient Parameterization of Linear Operators via Multigrid", ICLR 2024,
arXiv:2310.19809 (reference code github.com/xlliu2017/MgNO, ``models.py``: ``MgConv_DC``, ``MgNO_DC``).

A layer maps the channels-last field u to

    u <- sigma( MgConv(u) + W u + b ),

with W u + b a pointwise linear map (the reference's 1x1 convolution with bias) and MgConv a learned
multigrid V-cycle that reads its input as a right-hand side f and returns an approximate "solution"
u of a learned linear system A u = f. With L levels and nu_l smoothing steps on level l:

    level 0:      u = S(f), then nu_0 - 1 steps  u <- u + S_i(f - A_i u)
    down l -> l+1: f <- R_l f  (or R_l (f - A u) with residual_restriction),   u <- Pi_l u
    level l:      nu_l steps  u <- u + S_i(f - A_i u)
    up l+1 -> l:  u_l <- u_l + P_l u_{l+1}, then the post-smoothing steps of level l
    return u_0

S_i (f -> u channels) and A_i (u -> f channels) are 3x3 convolutions with their own weights in
every step, R_l and Pi_l stride-2 3x3 convolutions, P_l a stride-2 transposed convolution (kernel 4
where the finer grid has an even number of points on an axis, 3 where odd, so that n -> ceil(n/2)
-> n on every grid). Boundary conditions enter only through the padding of the convolutions:
``zeros`` ~ homogeneous Dirichlet, ``circular`` = periodic, ``reflect`` ~ Neumann (the prolongation
wraps around under ``circular`` and zero-pads otherwise; the reference zero-pads it always).

There is no lifting or projection MLP: the first layer's V-cycle takes the ``in_channels`` input as
its right-hand side (f has ``in_channels`` channels there, ``channels`` elsewhere) and the output is
a bias-free pointwise map ``channels -> out_channels`` of the last layer (the reference's final
``Conv2d(c_u, 1, 1, bias=False)``). sigma follows every layer, the last one included.

Layout is channels-last: ``(batch, *spatial, channels)``, 1, 2 or 3 spatial axes (the paper's
models are 2-D).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["MgNO", "MgConv", "conv", "conv_transpose", "grid_hierarchy", "PADDING_MODES"]

# torch padding_mode -> jnp.pad mode
PADDING_MODES = {"zeros": "constant", "circular": "wrap", "reflect": "reflect"}
ACTIVATIONS = {
    "gelu": partial(jax.nn.gelu, approximate=False),  # torch nn.GELU()
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "silu": jax.nn.silu,
}
PROLONGATION_KERNEL = 4  # stored size; odd fine axes use the leading 3 taps


def _dimension_numbers(d: int) -> tuple[str, str, str]:
    axes = "DHW"[3 - d:]  # d spatial axes
    return f"N{axes}C", f"{axes}IO", f"N{axes}C"


def grid_hierarchy(spatial_shape: Sequence[int], levels: int) -> list[tuple[int, ...]]:
    """Grids of the V-cycle's levels: n_0 = n, n_{l+1} = ceil(n_l / 2) per axis (stride-2, pad 1)."""
    grids = [tuple(int(n) for n in spatial_shape)]
    for _ in range(levels - 1):
        grids.append(tuple((n + 1) // 2 for n in grids[-1]))
    return grids


def conv(x: jax.Array, kernel: jax.Array, stride: int = 1, padding_mode: str = "zeros") -> jax.Array:
    """Cross-correlation with ``(k - 1) // 2`` padded cells per side (torch ``Conv(k, stride, padding=1)``
    for k = 3):

        y[i] = sum_a x_pad[stride * i + a] . kernel[a],   a in [0, k)^d,

    where ``x_pad`` is ``x`` padded by ``padding_mode`` (zeros / circular / reflect).

    Args:
      x: ``(batch, *spatial, c_in)``.
      kernel: ``(k,) * d + (c_in, c_out)``, k odd.
    Returns:
      ``(batch, *[ceil(n / stride)], c_out)``.
    """
    d = x.ndim - 2
    k = kernel.shape[0]
    p = (k - 1) // 2
    if padding_mode == "zeros":  # let the convolution pad: no padded copy of x
        padding = ((p, p),) * d
    else:
        x = jnp.pad(x, ((0, 0), *((p, p),) * d, (0, 0)), mode=PADDING_MODES[padding_mode])  # (batch, *[n + 2p], c_in)
        padding = ((0, 0),) * d
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=(stride,) * d, padding=padding, dimension_numbers=_dimension_numbers(d)
    )  # (batch, *[ceil(n / stride)], c_out)


# Phase decomposition of the stride-2 transposed convolution along one axis: fine point 2 m + r is
# sum_t x[m + t] v_r[t], t in {-1, 0, 1}, with v_0 = (w_3, w_1, 0) and v_1 = (0, w_2, w_0), where w_3
# only exists for kernel 4 (even fine axis). _PHASE_TAPS[k][r, t + 1, a] = 1 selects w_a.
def _phase_taps(k: int) -> jnp.ndarray:
    taps = [[0.0] * PROLONGATION_KERNEL for _ in range(6)]  # (2 phases x 3 taps, 4 kernel taps)
    if k == 4:
        taps[0][3] = 1.0  # phase 0, t = -1: w_3
    taps[1][1] = 1.0  # phase 0, t = 0: w_1
    taps[4][2] = 1.0  # phase 1, t = 0: w_2
    taps[5][0] = 1.0  # phase 1, t = +1: w_0
    return jnp.asarray(taps).reshape(2, 3, PROLONGATION_KERNEL)


def conv_transpose(x: jax.Array, kernel: jax.Array, fine_shape: Sequence[int], padding_mode: str = "zeros") -> jax.Array:
    """Stride-2 transposed convolution onto ``fine_shape`` (torch ``ConvTranspose(k, stride=2, padding=1)``):

        y[2 i - 1 + a] += x[i] . kernel[a],   a_j in [0, k_j),   k_j = 4 if fine_shape[j] is even else 3,

    i.e. every coarse value scatters the kernel around fine point 2 i. Output size 2 n - 4 + k_j is
    ``fine_shape[j]`` when the coarse grid has n = ceil(fine_shape[j] / 2) points. The leading k_j
    taps of the stored ``kernel`` are used, so one parameter set serves even and odd grids. With
    ``padding_mode="circular"`` the scatter wraps around (indices mod 2 n), which makes a periodic
    model exactly periodic; otherwise values scattered outside the grid are dropped (torch's
    transposed convolutions, which only zero-pad, also in the reference's periodic MgNO_NS).

    Computed without multiplying the zeros of a dilated input: the 2^d output phases (fine point
    2 m + r) are 3-tap correlations of the zero-padded coarse grid, stacked as 2^d c_out output
    channels of one convolution and interleaved; an odd axis then drops its last point.

    Args:
      x: ``(batch, *coarse, c_in)`` with coarse = ceil(fine / 2).
      kernel: ``(4,) * d + (c_in, c_out)``.
    Returns:
      ``(batch, *fine_shape, c_out)``.
    """
    d = x.ndim - 2
    fine_shape = tuple(int(n) for n in fine_shape)
    coarse = tuple(x.shape[1:-1])
    if coarse != tuple((n + 1) // 2 for n in fine_shape):
        raise ValueError(f"conv_transpose: coarse grid {coarse} is not ceil(fine / 2) of fine grid {fine_shape}")
    c_in, c_out = kernel.shape[-2:]
    w = kernel  # (4, ..., 4, c_in, c_out)
    for j, n in enumerate(fine_shape):
        taps = _phase_taps(4 if n % 2 == 0 else 3).astype(kernel.dtype)  # (2, 3, 4)
        # contract kernel axis j (size 4) into (phase_j, tap_j), the phases collected in front
        # w: (phase_1, tap_1, ..., phase_j-1, tap_j-1, 4_j, ..., 4_d, c_in, c_out); axis j sits at 2 j
        w = jnp.tensordot(taps, w, axes=[[2], [2 * j]])  # (phase_j, tap_j, <the rest of w>)
        w = jnp.moveaxis(w, (0, 1), (2 * j, 2 * j + 1))  # (..., phase_j, tap_j, 4_j+1, ..., c_in, c_out)
    # w: (phase_1, tap_1, ..., phase_d, tap_d, c_in, c_out) -> (tap_1..tap_d, c_in, phase_1..phase_d, c_out)
    w = jnp.transpose(w, (*range(1, 2 * d, 2), 2 * d, *range(0, 2 * d, 2), 2 * d + 1))
    w = w.reshape((3,) * d + (c_in, 2**d * c_out))  # (3, ..., 3, c_in, 2^d c_out)
    mode = "circular" if padding_mode == "circular" else "zeros"
    y = conv(x, w, padding_mode=mode)  # (batch, *coarse, 2^d c_out)
    batch = x.shape[0]
    y = y.reshape(batch, *coarse, *(2,) * d, c_out)  # (batch, *coarse, *phases, c_out)
    perm = [0] + [a for j in range(d) for a in (1 + j, 1 + d + j)] + [1 + 2 * d]
    y = jnp.transpose(y, perm).reshape(batch, *(2 * n for n in coarse), c_out)  # (batch, *2 coarse, c_out)
    return y[(slice(None), *(slice(0, n) for n in fine_shape), slice(None))]  # (batch, *fine_shape, c_out)


def _uniform(key: jax.Array, shape: tuple[int, ...], fan_in: int, dtype=jnp.float32) -> jax.Array:
    """torch's default init of convolutions: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases."""
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)


class Conv(nnx.Module):
    """``conv`` with a learned kernel ``(k,)*d + (c_in, c_out)`` and an optional bias ``(c_out,)``."""

    def __init__(self, c_in: int, c_out: int, spatial_dims: int, stride: int = 1, padding_mode: str = "zeros",
                 bias: bool = False, kernel_size: int = 3, *, rngs: nnx.Rngs):
        fan_in = c_in * kernel_size**spatial_dims
        shape = (kernel_size,) * spatial_dims + (c_in, c_out)
        self.kernel = nnx.Param(_uniform(rngs.params(), shape, fan_in))
        self.bias = nnx.Param(_uniform(rngs.params(), (c_out,), fan_in)) if bias else None
        self.stride, self.padding_mode = stride, padding_mode

    def __call__(self, x: jax.Array) -> jax.Array:
        y = conv(x, self.kernel[...], self.stride, self.padding_mode)
        return y + self.bias[...] if self.bias is not None else y


class Prolongation(nnx.Module):
    """``conv_transpose`` with a learned ``(4,)*d + (c, c)`` kernel, no bias (torch's init, fan_in c 4^d)."""

    def __init__(self, channels: int, spatial_dims: int, padding_mode: str = "zeros", *, rngs: nnx.Rngs):
        shape = (PROLONGATION_KERNEL,) * spatial_dims + (channels, channels)
        self.kernel = nnx.Param(_uniform(rngs.params(), shape, channels * PROLONGATION_KERNEL**spatial_dims))
        self.padding_mode = padding_mode

    def __call__(self, x: jax.Array, fine_shape: Sequence[int]) -> jax.Array:
        return conv_transpose(x, self.kernel[...], fine_shape, self.padding_mode)


class SmoothingStep(nnx.Module):
    """``u <- u + S(f - A u)``; the first step of the cycle (no u yet) is ``u = S(f)`` and has no A."""

    def __init__(self, c_u: int, c_f: int, spatial_dims: int, first: bool, padding_mode: str, bias: bool,
                 *, rngs: nnx.Rngs):
        conv3 = partial(Conv, spatial_dims=spatial_dims, padding_mode=padding_mode, bias=bias, rngs=rngs)
        self.S = conv3(c_f, c_u)
        self.A = None if first else conv3(c_u, c_f)

    def __call__(self, u: jax.Array | None, f: jax.Array) -> jax.Array:
        if self.A is None:
            return self.S(f)  # (batch, *grid, c_u)
        return u + self.S(f - self.A(u))  # (batch, *grid, c_u)


class MgConv(nnx.Module):
    """One learned V-cycle ``f -> u`` (``MgConv_DC`` of the reference); see the module docstring.

    Args:
      in_channels: c_f, channels of the right-hand side f.
      channels: c_u, channels of u (and of the output).
      iterations: pre-smoothing steps per level, finest first; ``len(iterations)`` is the number of
        levels, ``iterations[0] >= 1`` (the cycle starts with u = S(f)).
      post_iterations: smoothing steps after the coarse correction, levels 0..L-2 (default none).
      padding_mode: "zeros", "circular" or "reflect", for every convolution but the prolongation.
      bias: bias in the smoothing convolutions S and A (restrictions and prolongations have none).
      residual_restriction: restrict the residual f - A u instead of f (one more A per level).
      spatial_dims: d.
    """

    def __init__(self, in_channels: int, channels: int, iterations: Sequence[int],
                 post_iterations: Sequence[int] | None = None, padding_mode: str = "zeros", bias: bool = False,
                 residual_restriction: bool = False, spatial_dims: int = 2, *, rngs: nnx.Rngs):
        levels = len(iterations)
        post = tuple(post_iterations) if post_iterations is not None else (0,) * (levels - 1)
        c_u, c_f, d = int(channels), int(in_channels), int(spatial_dims)
        self.levels = levels
        step = partial(SmoothingStep, c_u, c_f, d, padding_mode=padding_mode, bias=bias, rngs=rngs)
        self.pre = nnx.List([nnx.List([step(first=(l == 0 and i == 0)) for i in range(nu)])
                             for l, nu in enumerate(iterations)])
        self.post = nnx.List([nnx.List([step(first=False) for _ in range(nu)]) for nu in post])
        down = partial(Conv, spatial_dims=d, stride=2, padding_mode=padding_mode, bias=False, rngs=rngs)
        self.restrict_u = nnx.List([down(c_u, c_u) for _ in range(levels - 1)])  # Pi_l
        self.restrict_f = nnx.List([down(c_f, c_f) for _ in range(levels - 1)])  # R_l
        self.residual = (nnx.List([Conv(c_u, c_f, d, 1, padding_mode, bias, rngs=rngs) for _ in range(levels - 1)])
                         if residual_restriction else None)
        self.prolong = nnx.List([Prolongation(c_u, d, padding_mode, rngs=rngs) for _ in range(levels - 1)])  # P_l

    def __call__(self, f: jax.Array) -> jax.Array:
        """``f``: ``(batch, *grid, c_f)`` -> ``u``: ``(batch, *grid, c_u)``."""
        grids = grid_hierarchy(f.shape[1:-1], self.levels)
        u = None
        us, fs = [], []
        for l in range(self.levels):
            if l > 0:
                r = f - self.residual[l - 1](u) if self.residual is not None else f
                f = self.restrict_f[l - 1](r)  # (batch, *grids[l], c_f)
                u = self.restrict_u[l - 1](u)  # (batch, *grids[l], c_u)
            for smooth in self.pre[l]:
                u = smooth(u, f)
            us.append(u)
            fs.append(f)
        for l in range(self.levels - 2, -1, -1):
            u = us[l] + self.prolong[l](u, grids[l])  # (batch, *grids[l], c_u)
            for smooth in self.post[l]:
                u = smooth(u, fs[l])
        return u


class MgNO(nnx.Module):
    """Multigrid neural operator of He, Liu and Xu (2024), as ``MgNO_DC`` of the reference code.

    ``n_layers`` layers ``u <- sigma(MgConv_i(u) + W_i u + b_i)`` (the first with ``in_channels`` as the
    V-cycle's f channels), then a bias-free pointwise map to ``out_channels``. See the module docstring.

    Parameter count, Darcy configuration of the paper (6 levels, iterations [1,1,1,1,1,2], 24 channels,
    4 layers, 1 -> 1 channels): 572,661 (the paper's 0.57 M). The prolongation kernels are stored as
    4^d and the leading 3 taps are used on odd axes, so one model runs at every resolution; the
    reference's ``MgNO_DC_smooth`` instead stores 3x3 kernels where its 211-point hierarchy is odd
    (211 -> 106 -> 53 -> 27 -> 14 -> 7: kernels 3, 4, 3, 3, 4), so for that grid it has 60,480 fewer
    parameters (678,093 at 5 layers against our 738,573, of which 678,093 are used at 211).

    Args:
      in_channels, out_channels: channels of the input and output fields.
      channels: c_u, the width.
      n_layers: number of layers.
      iterations: pre-smoothing steps per level, finest first (levels = len(iterations)).
      post_iterations: post-smoothing steps on levels 0..L-2 (default: none, as all the paper's configs).
      padding_mode: "zeros" (Dirichlet, the Darcy models), "circular" (periodic), "reflect" (Neumann).
      bias: bias in the smoothing convolutions (the reference's ``--bias``, off for Darcy).
      residual_restriction: restrict f - A u instead of f (the reference's ``use_res``, off by default).
      activation: "gelu" (exact, the paper's), "relu", "tanh" or "silu".
      spatial_dims: 1, 2 or 3 spatial axes.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: int = 24,
        n_layers: int = 4,
        iterations: Sequence[int] = (1, 1, 1, 1, 1, 2),
        post_iterations: Sequence[int] | None = None,
        padding_mode: str = "zeros",
        bias: bool = False,
        residual_restriction: bool = False,
        activation: str = "gelu",
        spatial_dims: int = 2,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        iterations = tuple(int(i) for i in iterations)
        if not iterations or iterations[0] < 1 or min(iterations) < 0:
            raise ValueError(f"MgNO iterations (smoothing steps per level, finest first) must be non-empty with "
                             f"iterations[0] >= 1 and no negative entry; got {list(iterations)}")
        levels = len(iterations)
        if post_iterations is not None:
            post_iterations = tuple(int(i) for i in post_iterations)
            if len(post_iterations) != levels - 1 or min(post_iterations, default=0) < 0:
                raise ValueError(f"MgNO post_iterations gives the post-smoothing steps of levels 0..{levels - 2} "
                                 f"({levels - 1} non-negative numbers for {levels} levels); got "
                                 f"{list(post_iterations)}")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"MgNO padding_mode={padding_mode!r} is unknown; choose one of {list(PADDING_MODES)} "
                             f"(zero Dirichlet, periodic, Neumann-like)")
        if activation not in ACTIVATIONS:
            raise ValueError(f"MgNO activation={activation!r} is unknown; choose one of {list(ACTIVATIONS)}")
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"MgNO supports 1, 2 or 3 spatial axes; got spatial_dims={spatial_dims}")
        if n_layers < 1 or channels < 1:
            raise ValueError(f"MgNO needs n_layers >= 1 and channels >= 1; got {n_layers}, {channels}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.channels, self.n_layers, self.spatial_dims = int(channels), int(n_layers), int(spatial_dims)
        self.iterations, self.padding_mode, self.activation = iterations, padding_mode, activation
        cycle = partial(MgConv, channels=channels, iterations=iterations, post_iterations=post_iterations,
                        padding_mode=padding_mode, bias=bias, residual_restriction=residual_restriction,
                        spatial_dims=spatial_dims, rngs=rngs)
        widths = [self.in_channels] + [self.channels] * (n_layers - 1)
        self.cycles = nnx.List([cycle(c) for c in widths])
        self.pointwise = nnx.List([self._linear(c, channels, True, rngs) for c in widths])
        self.projection = self._linear(channels, out_channels, False, rngs)

    @staticmethod
    def _linear(c_in: int, c_out: int, use_bias: bool, rngs: nnx.Rngs) -> nnx.Linear:
        """A 1x1 convolution with torch's default init."""
        init = lambda key, shape, dtype=jnp.float32: _uniform(key, shape, c_in, dtype)  # noqa: E731
        return nnx.Linear(c_in, c_out, use_bias=use_bias, kernel_init=init, bias_init=init, rngs=rngs)

    def min_points(self) -> int:
        """Fewest points per axis the levels allow: the coarsest grid keeps >= 2 points (n > 2^(L-1))."""
        return 2 ** (len(self.iterations) - 1) + 1

    def _check_input(self, a: jax.Array) -> None:
        d = self.spatial_dims
        if a.ndim != d + 2:
            axes = ", ".join(f"n{i + 1}" for i in range(d))
            raise ValueError(f"MgNO input must be (batch, {axes}, in_channels), rank {d + 2} for spatial_dims={d}; "
                             f"got shape {tuple(a.shape)} (rank {a.ndim}); set model.spatial_dims to the number of "
                             f"spatial axes, or add the missing batch / channel axis (a[..., None])")
        if a.shape[-1] != self.in_channels:
            raise ValueError(f"MgNO expects in_channels={self.in_channels} in the last axis (channels-last); got "
                             f"shape {tuple(a.shape)}")
        spatial = tuple(a.shape[1:-1])
        levels = len(self.iterations)
        if min(spatial) < self.min_points():
            hierarchy = " -> ".join(str(g) for g in grid_hierarchy(spatial, levels))
            raise ValueError(
                f"MgNO with {levels} levels cannot take the grid {spatial}: every level halves it "
                f"({hierarchy}) and the coarsest must keep at least 2 points per axis, so each axis needs at "
                f"least {self.min_points()} points. Use a finer grid or fewer levels (a shorter model.iterations)"
            )

    def __call__(self, a: jax.Array) -> jax.Array:
        """``a``: ``(batch, *spatial, in_channels)`` -> ``(batch, *spatial, out_channels)``."""
        self._check_input(a)
        sigma = ACTIVATIONS[self.activation]
        u = a
        for cycle, pointwise in zip(self.cycles, self.pointwise):
            u = sigma(cycle(u) + pointwise(u))  # (batch, *spatial, channels)
        return self.projection(u)  # (batch, *spatial, out_channels)
