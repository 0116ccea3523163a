"""U-Net on a lifted field: the backbone of the Latent Spectral Model and the papers' U-Net baseline.

Ronneberger, Fischer, Brox, "U-Net: Convolutional Networks for Biomedical Image Segmentation",
MICCAI 2015, in the form of ``models/LSM_2D.py`` of Wu, Hu, Luo, Wang, Long, "Solving High-Dimensional
PDEs with Latent Spectral Models", ICML 2023 (arXiv 2301.12664; thuml/Latent-Spectral-Models):

    v = P([a, x, y])                                   lifting with the grid coordinates
    v <- pad v at the end of both axes                 so that every level's size is a multiple
    x1 = DoubleConv(v)                                 (of the patch size, for LSM)
    x_{l+1} = DoubleConv(MaxPool2(x_l)),  l = 1..4     widths d, 2d, 4d, 8d, 8d
    y = Up(B5 x5, B4 x4); y = Up(y, B3 x3); y = Up(y, B2 x2); y = Up(y, B1 x1)
    u = Q(crop(OutConv(y)))                            Q: Linear(d, 128), GELU, Linear(128, out)

with ``DoubleConv`` = (3x3 conv without bias, BatchNorm, ReLU) twice, ``Up(a, b)`` = DoubleConv of
``concat(b, bilinear_upsample_2x(a))`` (align_corners=True, as ``nn.Upsample`` there), and ``B_l`` the
identity for the U-Net and a neural spectral block for LSM (``operators.lsm``).

A U-Net is not a neural operator: its 3x3 kernels and pooling act on grid cells, so at a new
resolution it runs (padding adapts, ``padding=None``) but sees the field at another physical scale.

Layout is channels-last: ``(batch, x, y, channels)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from operators.fno import grid_coordinates

__all__ = ["UNet", "UNetBackbone", "DoubleConv", "bilinear_upsample_2x", "max_pool_2x", "auto_padding",
           "N_LEVELS"]

N_LEVELS = 5  # resolution levels of the backbone (4 poolings), as LSM_2D.py


def bilinear_upsample_2x(x: jax.Array) -> jax.Array:
    """Bilinear 2x upsampling of ``(batch, n1, n2, c)`` to ``(batch, 2 n1, 2 n2, c)``, corners aligned.

    Output point ``i`` of ``2n`` sits at input coordinate ``i (n - 1) / (2n - 1)`` (torch
    ``nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)``); separable, one
    interpolation matrix per axis.
    """

    def matrix(n: int) -> jax.Array:  # (2n, n): rows are the interpolation weights of one output point
        if n == 1:
            return jnp.ones((2, 1), x.dtype)
        pos = jnp.arange(2 * n, dtype=x.dtype) * (n - 1) / (2 * n - 1)  # (2n,) input coordinates
        left = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, n - 2)
        frac = pos - left
        cols = jnp.arange(n)
        return ((cols[None, :] == left[:, None]) * (1 - frac)[:, None]
                + (cols[None, :] == left[:, None] + 1) * frac[:, None]).astype(x.dtype)

    rows, cols = matrix(x.shape[1]), matrix(x.shape[2])
    return jnp.einsum("ip,jq,bpqc->bijc", rows, cols, x)  # (batch, 2 n1, 2 n2, c)


def max_pool_2x(x: jax.Array) -> jax.Array:
    """2x2 max pooling with stride 2 (an odd last row / column is dropped, as ``nn.MaxPool2d(2)``)."""
    b, n1, n2, c = x.shape
    x = x[:, : n1 // 2 * 2, : n2 // 2 * 2]  # (batch, 2 m1, 2 m2, c)
    return x.reshape(b, n1 // 2, 2, n2 // 2, 2, c).max(axis=(2, 4))  # (batch, m1, m2, c)


def auto_padding(spatial: Sequence[int], multiple: Sequence[int]) -> tuple[int, ...]:
    """The fewest cells appended per axis so that each size becomes a multiple of ``multiple``."""
    return tuple((-int(n)) % int(m) for n, m in zip(spatial, multiple))


class DoubleConv(nnx.Module):
    """(3x3 conv without bias -> BatchNorm -> ReLU) twice: ``(b, n1, n2, in) -> (b, n1, n2, out)``."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None, *,
                 rngs: nnx.Rngs) -> None:
        mid = mid_channels or out_channels
        self.conv1 = nnx.Conv(in_channels, mid, (3, 3), padding="SAME", use_bias=False, rngs=rngs)
        self.norm1 = nnx.BatchNorm(mid, momentum=0.9, epsilon=1e-5, rngs=rngs)
        self.conv2 = nnx.Conv(mid, out_channels, (3, 3), padding="SAME", use_bias=False, rngs=rngs)
        self.norm2 = nnx.BatchNorm(out_channels, momentum=0.9, epsilon=1e-5, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(self.norm1(self.conv1(x)))
        return jax.nn.relu(self.norm2(self.conv2(x)))


def _up(conv: DoubleConv, coarse: jax.Array, skip: jax.Array) -> jax.Array:
    """``Up`` of LSM_2D.py: upsample ``coarse``, zero-pad it to ``skip``'s size (centred), concat, conv."""
    up = bilinear_upsample_2x(coarse)  # (b, 2 m1, 2 m2, c)
    d1, d2 = skip.shape[1] - up.shape[1], skip.shape[2] - up.shape[2]
    up = jnp.pad(up, ((0, 0), (d1 // 2, d1 - d1 // 2), (d2 // 2, d2 - d2 // 2), (0, 0)))
    return conv(jnp.concatenate([skip, up], axis=-1))  # skip first, as torch.cat([x2, x1])


class UNetBackbone(nnx.Module):
    """The U-Net of LSM_2D.py (bilinear up-sampling, so the deepest width repeats the one above it).

    With ``n_levels`` = L (the reference: 5) the level widths are ``d 2^l`` for l < L-1 and the last
    repeats the one before (d, 2d, 4d, 8d, 8d); the up-path at level l convolves the concatenation of
    the skip (``w_l``) and the up-sampled level below, to ``w_l / 2`` channels (``d`` at the top).

    Call ``(v, skips=None)``: ``v`` is ``(b, n1, n2, d)`` with sizes divisible by ``2^(L-1)``; ``skips``,
    if given, are L callables applied to the features of levels 1..L before they are merged on the way
    up. Returns ``(b, n1, n2, d)`` (after ``OutConv``, a 1x1 conv with bias).
    """

    def __init__(self, width: int, n_levels: int = N_LEVELS, *, rngs: nnx.Rngs) -> None:
        d, levels = int(width), int(n_levels)
        if levels < 2:
            raise ValueError(f"a U-Net needs n_levels >= 2; got {n_levels}")
        widths = [d * 2 ** l for l in range(levels - 1)]
        self.widths = tuple(widths + [widths[-1]])  # channels of levels 1..L
        self.inc = DoubleConv(d, d, rngs=rngs)
        self.down = nnx.List([DoubleConv(a, b, rngs=rngs) for a, b in zip(self.widths[:-1], self.widths[1:])])
        ups, below = [], self.widths[-1]
        for w in reversed(self.widths[:-1]):  # Up(in, out) of the reference: DoubleConv(in, out, mid=in // 2)
            out = w // 2 if w > d else d
            ups.append(DoubleConv(w + below, out, (w + below) // 2, rngs=rngs))
            below = out
        self.up = nnx.List(ups)
        self.outc = nnx.Conv(d, d, (1, 1), rngs=rngs)

    def __call__(self, v: jax.Array, skips: Sequence[Callable[[jax.Array], jax.Array]] | None = None
                 ) -> jax.Array:
        feats = [self.inc(v)]  # level 1: (b, n1, n2, d)
        for down in self.down:
            feats.append(down(max_pool_2x(feats[-1])))  # level l+1: (b, n1 / 2^l, n2 / 2^l, width_l)
        if skips is not None:
            feats = [f(x) for f, x in zip(skips, feats)]
        y = feats[-1]
        for conv, skip in zip(self.up, reversed(feats[:-1])):
            y = _up(conv, y, skip)  # (b, size of the skip, its width / 2 or d)
        return self.outc(y)  # (b, n1, n2, d)


class UNet(nnx.Module):
    """U-Net baseline of the LSM paper: ``(batch, n1, n2, in_channels) -> (batch, n1, n2, out_channels)``.

    Lifting ``fc0``: Linear(in_channels + 2, width) on the input and its ``linspace(0, 1, n)``
    coordinates; zero padding at the end of both axes; :class:`UNetBackbone`; crop; projection
    Linear(width, projection_channels), GELU, Linear(projection_channels, out_channels).

    Args:
      padding: cells appended to (x, y); ``None`` pads each axis to the next multiple of
        ``pad_multiple`` (16 = 2^4: all four poolings exact), whatever the resolution.
      pad_multiple: the multiple ``padding=None`` pads to (16 = 2^4 for 5 levels: all poolings exact);
        a fixed ``padding`` must reach a multiple of it too.
      n_levels: resolution levels of the backbone (the reference: 5).

    Parameters (width d, in 1, out 1, projection 128; BatchNorm scale and bias counted, running
    statistics not): ``4,222 d^2 + 271 d + 257``, e.g. 4,332,257 at d = 32.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 32,
                 padding: Sequence[int] | None = None, pad_multiple: int = 2 ** (N_LEVELS - 1),
                 projection_channels: int = 128, n_levels: int = N_LEVELS, *, rngs: nnx.Rngs) -> None:
        if width < 1 or in_channels < 1 or out_channels < 1:
            raise ValueError(f"width, in_channels and out_channels must be >= 1; got {width}, "
                             f"{in_channels}, {out_channels}")
        self.in_channels, self.out_channels, self.width = int(in_channels), int(out_channels), int(width)
        self.multiple = (int(pad_multiple),) * 2
        if padding is not None:
            padding = tuple(int(p) for p in padding)
            if len(padding) != 2 or min(padding) < 0:
                raise ValueError(f"padding gives the cells appended to the 2 axes, e.g. [11, 11], or null "
                                 f"for automatic; got {padding}")
        self.padding = padding
        self.fc0 = nnx.Linear(in_channels + 2, width, rngs=rngs)
        self.backbone = UNetBackbone(width, n_levels, rngs=rngs)
        self.fc1 = nnx.Linear(width, projection_channels, rngs=rngs)
        self.fc2 = nnx.Linear(projection_channels, out_channels, rngs=rngs)

    def pads(self, spatial: Sequence[int]) -> tuple[int, int]:
        """Cells appended to each axis of a ``spatial`` grid; a ValueError if a fixed padding misses."""
        if self.padding is None:
            return auto_padding(spatial, self.multiple)
        padded = tuple(n + p for n, p in zip(spatial, self.padding))
        if any(n % m for n, m in zip(padded, self.multiple)):
            fit = auto_padding(spatial, self.multiple)
            raise ValueError(
                f"{type(self).__name__}: the grid {spatial[0]} x {spatial[1]} padded by {list(self.padding)} is "
                f"{padded[0]} x {padded[1]}, not a multiple of {self.multiple[0]} x {self.multiple[1]} (every "
                f"level must divide evenly); use padding={list(fit)} (the least that fits) or padding=null "
                f"(automatic, any resolution)")
        return self.padding

    def _check_input(self, a: jax.Array) -> None:
        if a.ndim != 4:
            raise ValueError(f"{type(self).__name__} input must be (batch, n1, n2, in_channels), rank 4; got "
                             f"shape {tuple(a.shape)}; it is a 2-D model (add a channel axis with a[..., None])")
        if a.shape[-1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects in_channels={self.in_channels} in the last axis; got "
                             f"shape {tuple(a.shape)}; do not include grid coordinates, the model adds them")

    def skips(self) -> Sequence[Callable[[jax.Array], jax.Array]] | None:
        """What the skip features pass through: nothing for the U-Net (LSM overrides)."""
        return None

    def __call__(self, a: jax.Array) -> jax.Array:
        """``a``: ``(batch, n1, n2, in_channels)`` -> ``(batch, n1, n2, out_channels)``."""
        self._check_input(a)
        batch, spatial = a.shape[0], tuple(a.shape[1:3])
        p1, p2 = self.pads(spatial)
        grid = jnp.broadcast_to(grid_coordinates(spatial, dtype=a.dtype), (batch, *spatial, 2))
        v = self.fc0(jnp.concatenate([a, grid], axis=-1))  # (batch, n1, n2, width)
        v = jnp.pad(v, ((0, 0), (0, p1), (0, p2), (0, 0)))  # (batch, n1 + p1, n2 + p2, width)
        v = self.backbone(v, self.skips())
        v = v[:, : spatial[0], : spatial[1]]  # (batch, n1, n2, width)
        return self.fc2(jax.nn.gelu(self.fc1(v), approximate=False))  # (batch, n1, n2, out_channels)
