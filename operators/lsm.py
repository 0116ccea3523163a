"""Latent Spectral Model (LSM) in two dimensions.

Wu, Hu, Luo, Wang, Long, "Solving High-Dimensional PDEs with Latent Spectral Models", ICML 2023
(arXiv 2301.12664; thuml/Latent-Spectral-Models, ``models/LSM_2D.py``). The U-Net of
:mod:`operators.unet` whose skip features at each of its five scales pass through a *neural spectral
block* before they are merged on the way up. One block on features ``x`` of width C:

1. patchify: ``(B, H, W, C) -> (B * H/p1 * W/p2, p1 * p2, C)``, each patch a set of pixels;
2. encoder attention (h = 8 heads, no 1/sqrt(d) scaling): M learned latent tokens ``T0`` query the
   pixels, keys and values from one 1x1 conv ``C -> 2C`` whose outputs interleave them (output
   ``2c`` is key channel c, ``2c + 1`` value channel c, as the reference's
   ``view(B, L, head, C // head, 2)``): ``T = softmax(T0 K^T) V + T0``;
3. latent spectral transition, elementwise on every token value z with K basis functions:
   ``T <- sum_m w[c, m] phi_m(T) + T``,  ``phi = [sin(k pi z / K), cos(k pi z / K)], k = 0..K-1``;
4. decoder attention: the pixels, through a 1x1 conv ``C -> C``, query the tokens (keys = values =
   ``T``): ``x <- softmax(Q T^T) T + x``; de-patchify.

The grid is padded at the end of both axes so that every level (sizes n, n/2, .., n/16) divides by
the patch size, and cropped back after the backbone. The paper's Darcy setting is width 64, K = 12,
M = 4, patch 6 x 6 and 11 cells of padding at s = 85 (96 = 6 * 16).

Like the U-Net it is built on, LSM acts on grid cells (3x3 kernels, pooling, patches of p pixels): at
another resolution it runs (``padding=None`` pads to the next fitting size) but a patch and a kernel
then cover another physical length, so it is not discretisation invariant.

Layout is channels-last: ``(batch, x, y, channels)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from operators.unet import N_LEVELS, UNet

__all__ = ["LSM", "NeuralSpectralBlock", "patchify", "unpatchify", "spectral_basis"]


def patchify(x: jax.Array, patch: Sequence[int]) -> jax.Array:
    """``(B, H, W, C) -> (B * H/p1 * W/p2, p1 * p2, C)``: one row of pixels per patch."""
    b, h, w, c = x.shape
    p1, p2 = patch
    x = x.reshape(b, h // p1, p1, w // p2, p2, c)  # (B, H/p1, p1, W/p2, p2, C)
    x = x.transpose(0, 1, 3, 2, 4, 5)  # (B, H/p1, W/p2, p1, p2, C)
    return x.reshape(b * (h // p1) * (w // p2), p1 * p2, c)


def unpatchify(x: jax.Array, patch: Sequence[int], shape: Sequence[int]) -> jax.Array:
    """Inverse of :func:`patchify`: ``(B * H/p1 * W/p2, p1 * p2, C) -> (B, H, W, C)``."""
    b, h, w, c = shape
    p1, p2 = patch
    x = x.reshape(b, h // p1, w // p2, p1, p2, c)  # (B, H/p1, W/p2, p1, p2, C)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def spectral_basis(z: jax.Array, num_basis: int) -> jax.Array:
    """``[sin(k pi z / K), cos(k pi z / K)]`` for k = 0..K-1, stacked last: ``(..., 2K)``."""
    freqs = jnp.arange(num_basis, dtype=z.dtype) / num_basis * math.pi  # (K,)
    arg = z[..., None] * freqs  # (..., K)
    return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], axis=-1)  # (..., 2K)


def _heads(x: jax.Array, n_heads: int) -> jax.Array:
    """``(N, L, C) -> (N, h, L, C/h)``: channel c = head * C/h + j, as the reference's view."""
    n, length, c = x.shape
    return x.reshape(n, length, n_heads, c // n_heads).transpose(0, 2, 1, 3)


def _merge_heads(x: jax.Array) -> jax.Array:
    """``(N, h, L, C/h) -> (N, L, C)``."""
    n, h, length, ch = x.shape
    return x.transpose(0, 2, 1, 3).reshape(n, length, h * ch)


class NeuralSpectralBlock(nnx.Module):
    """``NeuralSpectralBlock2d`` of LSM_2D.py: ``(B, H, W, C) -> (B, H, W, C)``, H and W multiples of
    the patch size.

    Parameters: ``3 C^2 + (3 + M + 2K) C`` (encoder 1x1 conv C -> 2C with bias, decoder C -> C with
    bias, latent tokens h x M x C/h, basis weights C x 2K).

    They map one to one onto the reference's (a 1x1 ``Conv2d`` weight ``(out, in, 1, 1)`` is the
    transpose of a ``Linear`` kernel ``(in, out)``)::

        latent          = latent                               (h, M, C/h)
        weights         = weights                              (C, 2K)
        encoder.kernel  = encoder_attn.weight[:, :, 0, 0].T    (C, 2C); output 2c: key c, 2c + 1: value c
        encoder.bias    = encoder_attn.bias                    (2C,)
        decoder.kernel  = decoder_attn.weight[:, :, 0, 0].T    (C, C)
        decoder.bias    = decoder_attn.bias                    (C,)

    Channel ``c`` of keys, values, queries and tokens is ``head * C/h + j`` (head-major).
    """

    def __init__(self, width: int, num_basis: int = 12, num_token: int = 4, patch_size: Sequence[int] = (6, 6),
                 n_heads: int = 8, *, rngs: nnx.Rngs) -> None:
        if width % n_heads:
            raise ValueError(f"the width {width} of a neural spectral block must be a multiple of n_heads="
                             f"{n_heads}; choose a width divisible by {n_heads}")
        self.width, self.num_basis, self.num_token, self.n_heads = int(width), int(num_basis), int(num_token), int(n_heads)
        self.patch = tuple(int(p) for p in patch_size)
        # Init as the reference: latent tokens and basis weights U[0, 1) / C.
        self.latent = nnx.Param(jax.random.uniform(rngs.params(), (n_heads, num_token, width // n_heads)) / width)
        self.weights = nnx.Param(jax.random.uniform(rngs.params(), (width, 2 * num_basis)) / width)
        self.encoder = nnx.Linear(width, 2 * width, rngs=rngs)  # the 1x1 conv giving keys and values, interleaved
        self.decoder = nnx.Linear(width, width, rngs=rngs)  # the 1x1 conv giving the pixel queries

    def __call__(self, x: jax.Array) -> jax.Array:
        shape = x.shape
        h = self.n_heads
        pixels = patchify(x, self.patch)  # (N, L, C), N = B * patches, L = p1 * p2
        n = pixels.shape[0]

        # (1) encoder: the latent tokens attend to the pixels of their patch.
        # The reference views the 2C conv outputs as (head, C/h, 2): keys and values interleave.
        kv = self.encoder(pixels).reshape(n, pixels.shape[1], self.width, 2)  # (N, L, C, 2)
        keys, values = kv[..., 0], kv[..., 1]  # 2 x (N, L, C): outputs 2c and 2c + 1
        keys, values = _heads(keys, h), _heads(values, h)  # (N, h, L, C/h)
        latent = jnp.broadcast_to(self.latent[...], (n, *self.latent.shape))  # (N, h, M, C/h)
        attn = jax.nn.softmax(jnp.einsum("nhmc,nhlc->nhml", latent, keys), axis=-1)  # (N, h, M, L)
        tokens = _merge_heads(jnp.einsum("nhml,nhlc->nhmc", attn, values) + latent)  # (N, M, C)

        # (2) transition: a learned function of each token value in the sin/cos basis, plus identity.
        basis = spectral_basis(tokens, self.num_basis)  # (N, M, C, 2K)
        tokens = jnp.einsum("nmck,ck->nmc", basis, self.weights[...]) + tokens  # (N, M, C)

        # (3) decoder: the pixels attend to the tokens (keys = values = tokens).
        queries = _heads(self.decoder(pixels), h)  # (N, h, L, C/h)
        tok = _heads(tokens, h)  # (N, h, M, C/h)
        attn = jax.nn.softmax(jnp.einsum("nhlc,nhmc->nhlm", queries, tok), axis=-1)  # (N, h, L, M)
        pixels = _merge_heads(jnp.einsum("nhlm,nhmc->nhlc", attn, tok)) + pixels  # (N, L, C)
        return unpatchify(pixels, self.patch, shape)  # (B, H, W, C)


class LSM(UNet):
    """Latent Spectral Model, 2-D: ``(batch, n1, n2, in_channels) -> (batch, n1, n2, out_channels)``.

    :class:`operators.unet.UNet` with a :class:`NeuralSpectralBlock` on the skip features of each of
    the five levels (widths d, 2d, 4d, 8d, 8d).

    Args:
      width: d, the lifted width (paper: 64 for Darcy).
      num_basis: K, basis functions per sin / cos (12).
      num_token: M, latent tokens per head and patch (4).
      patch_size: pixels per patch on (x, y) at every level (Darcy: 6 x 6).
      padding: cells appended to (x, y) so that n + padding is a multiple of 16 * patch (Darcy s = 85:
        [11, 11]); ``None``: the least such padding, at any resolution. The reference's
        ``--padding a,b`` is ordered the other way (``F.pad(x, [0, a, 0, b])`` pads y by a, x by b,
        while ``--patch_size`` is (x, y)): its Airfoil ``13,3`` with patch ``14,4`` is ``[3, 13]`` here.
      n_heads: attention heads (8 in the reference); the width must divide by it.
      n_levels: resolution levels of the U-Net (the reference: 5); a block on each.

    Parameters (in 1, out 1, projection 128): the U-Net's ``4,222 d^2 + 271 d + 257`` plus
    ``447 d^2 + 23 (3 + M + 2K) d`` for the five blocks: 19,187,457 at the Darcy setting (d = 64,
    K = 12, M = 4).
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 64, num_basis: int = 12,
                 num_token: int = 4, patch_size: Sequence[int] = (6, 6), padding: Sequence[int] | None = None,
                 n_heads: int = 8, projection_channels: int = 128, n_levels: int = N_LEVELS, *,
                 rngs: nnx.Rngs) -> None:
        patch = tuple(int(p) for p in patch_size)
        if len(patch) != 2 or min(patch) < 1:
            raise ValueError(f"patch_size gives the patch's pixels on the 2 axes, e.g. [6, 6]; got {list(patch)}")
        super().__init__(in_channels, out_channels, width, padding, projection_channels=projection_channels,
                         n_levels=n_levels, rngs=rngs)
        # The deepest level has n / 2^(L-1) points per axis, which the patch must divide.
        self.multiple = tuple(p * 2 ** (int(n_levels) - 1) for p in patch)
        self.blocks = nnx.List([NeuralSpectralBlock(c, num_basis, num_token, patch, n_heads, rngs=rngs)
                                for c in self.backbone.widths])

    def skips(self):
        return list(self.blocks)
