"""LSM's neural spectral block against a NumPy transcription of ``NeuralSpectralBlock2d.forward``.

The oracle is ``models/LSM_2D.py`` of thuml/Latent-Spectral-Models (commit d5a0b40), written again in
NumPy on its own channels-first layout with its own view / permute / einsum sequence: patchify by
``view(B, C, H/p0, p0, W/p1, p1).permute(0, 2, 4, 1, 3, 5)``; keys and values from one 1x1 conv
``C -> 2C`` viewed as ``(B, L, head, C // head, 2)`` and permuted ``(4, 0, 2, 1, 3)`` (so conv output
``2c`` is key channel c and ``2c + 1`` value channel c, interleaved); 8 heads hard-coded; latent
tokens ``softmax(q k^T) v + q``; the basis ``[sin(k/K z pi), cos(k/K z pi)]`` contracted with
``einsum("bilm,im->bil")``; the decoder attention of the 1x1-conv queries on the tokens; de-patchify.

The weights are drawn in the reference's PyTorch layout and loaded into our block through an explicit
map: a checkpoint of the reference reads weight for weight.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from operators.lsm import NeuralSpectralBlock

HEAD = 8  # self.head = 8 in NeuralSpectralBlock2d


def softmax(s: np.ndarray) -> np.ndarray:
    """``nn.Softmax(dim=-1)``."""
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def conv1x1(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``nn.Conv2d(kernel_size=1)`` on ``(N, C, H, W)``: weight ``(out, in, 1, 1)``."""
    return np.einsum("oi,nihw->nohw", weight[:, :, 0, 0], x) + bias[None, :, None, None]


def self_attn(q, k, v):
    attn = softmax(np.einsum("bhlc,bhsc->bhls", q, k))
    return np.einsum("bhls,bhsc->bhlc", attn, v)


def reference_block(sd: dict, x: np.ndarray, patch_size, num_basis: int, num_token: int) -> np.ndarray:
    """``NeuralSpectralBlock2d.forward``: ``(B, C, H, W) -> (B, C, H, W)``."""
    B, C, H, W = x.shape
    p0, p1 = patch_size
    # patchify
    x = x.reshape(B, C, H // p0, p0, W // p1, p1).transpose(0, 2, 4, 1, 3, 5) \
        .reshape(B * (H // p0) * (W // p1), C, p0, p1)

    # (1) latent_encoder_attn
    n, _, h, w = x.shape
    L = h * w
    latent_token = np.tile(sd["latent"][None, :, :, :], (n, 1, 1, 1))
    x_tmp = conv1x1(x, sd["encoder_attn.weight"], sd["encoder_attn.bias"]).reshape(n, C * 2, -1) \
        .transpose(0, 2, 1).reshape(n, L, HEAD, C // HEAD, 2).transpose(4, 0, 2, 1, 3)
    latent_token = self_attn(latent_token, x_tmp[0], x_tmp[1]) + latent_token
    latent_token = latent_token.transpose(0, 1, 3, 2).reshape(n, C, num_token)

    # (2) transition: get_basis, compl_mul2d
    modes_list = (1.0 / float(num_basis)) * np.array([i for i in range(num_basis)], dtype=np.float64)
    x_sin = np.sin(modes_list[None, None, None, :] * latent_token[:, :, :, None] * math.pi)
    x_cos = np.cos(modes_list[None, None, None, :] * latent_token[:, :, :, None] * math.pi)
    latent_token_modes = np.concatenate([x_sin, x_cos], axis=-1)
    latent_token = np.einsum("bilm,im->bil", latent_token_modes, sd["weights"]) + latent_token

    # (3) latent_decoder_attn
    x_init = x
    latent_token = latent_token.reshape(n, HEAD, C // HEAD, num_token).transpose(0, 1, 3, 2)
    x_tmp = conv1x1(x, sd["decoder_attn.weight"], sd["decoder_attn.bias"]).reshape(n, C, -1) \
        .transpose(0, 2, 1).reshape(n, L, HEAD, C // HEAD).transpose(0, 2, 1, 3)
    x = self_attn(x_tmp, latent_token, latent_token)
    x = x.transpose(0, 1, 3, 2).reshape(n, C, h, w) + x_init

    # de-patchify
    return x.reshape(B, H // p0, W // p1, C, p0, p1).transpose(0, 3, 1, 4, 2, 5).reshape(B, C, H, W)


def reference_state_dict(width: int, num_basis: int, num_token: int, seed: int = 0) -> dict:
    """Random weights in the reference's layout (every entry nonzero, biases too)."""
    rng = np.random.default_rng(seed)
    return {
        "weights": rng.uniform(size=(width, 2 * num_basis)),  # the reference's U[0, 1) (not / width: livelier)
        "latent": rng.normal(size=(HEAD, num_token, width // HEAD)),
        "encoder_attn.weight": 0.5 * rng.normal(size=(2 * width, width, 1, 1)),
        "encoder_attn.bias": 0.5 * rng.normal(size=(2 * width,)),
        "decoder_attn.weight": 0.5 * rng.normal(size=(width, width, 1, 1)),
        "decoder_attn.bias": 0.5 * rng.normal(size=(width,)),
    }


def load_reference(block: NeuralSpectralBlock, sd: dict, dtype) -> None:
    """The reference's state dict -> our block's parameters, one to one (shapes must agree as they are)."""
    def put(module, name, array):
        old = getattr(module, name)
        assert tuple(old.shape) == array.shape, (name, old.shape, array.shape)
        setattr(module, name, nnx.Param(jnp.asarray(array, dtype)))

    put(block, "latent", sd["latent"])
    put(block, "weights", sd["weights"])
    put(block.encoder, "kernel", sd["encoder_attn.weight"][:, :, 0, 0].T)  # (out, in, 1, 1) -> (in, out)
    put(block.encoder, "bias", sd["encoder_attn.bias"])
    put(block.decoder, "kernel", sd["decoder_attn.weight"][:, :, 0, 0].T)
    put(block.decoder, "bias", sd["decoder_attn.bias"])


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
def test_block_equals_the_reference_forward(x64):
    width, num_basis, num_token, patch = 16, 5, 3, (2, 3)
    sd = reference_state_dict(width, num_basis, num_token)
    x = np.random.default_rng(1).normal(size=(2, width, 4, 6))  # (B, C, H, W), the reference's layout
    expected = reference_block(sd, x, patch, num_basis, num_token)
    dtype = jnp.float64 if x64 else jnp.float32
    with jax.enable_x64(x64):
        block = nnx.eval_shape(lambda: NeuralSpectralBlock(width, num_basis, num_token, patch, n_heads=HEAD,
                                                           rngs=nnx.Rngs(0)))
        load_reference(block, sd, dtype)
        graphdef, state = nnx.split(block)
        forward = jax.jit(lambda state, v: nnx.merge(graphdef, state)(v))
        ours = np.asarray(forward(state, jnp.asarray(x.transpose(0, 2, 3, 1), dtype)))  # channels-last
    tol = 1e-10 if x64 else 1e-5
    np.testing.assert_allclose(ours.transpose(0, 3, 1, 2), expected, rtol=tol, atol=tol)
    assert np.abs(expected - x).max() > 0.1  # the block does something


def test_state_dict_covers_every_parameter():
    block = nnx.eval_shape(lambda: NeuralSpectralBlock(32, 12, 4, rngs=nnx.Rngs(0)))
    ours = sum(int(v.size) for v in jax.tree.leaves(nnx.state(block, nnx.Param)))
    assert ours == sum(v.size for v in reference_state_dict(32, 12, 4).values())
