"""LSM: the neural spectral block against a loop-by-loop transcription of the reference, the
parameter count of the paper's Darcy setting derived by hand, padding rules, shapes on odd and even
grids, a float64 gradient check, and a short fit in which the loss falls."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from operators.lsm import LSM, NeuralSpectralBlock, patchify, spectral_basis, unpatchify
from test_unet import (FitAndGradient, _cheap_prng, abstract_apply, hand_count, jit_apply, n_params,  # noqa: F401
                       random_model, smooth_target)


def naive_block(block: NeuralSpectralBlock, x: np.ndarray) -> np.ndarray:
    """NeuralSpectralBlock2d.forward of LSM_2D.py, one patch and one head at a time, in float64."""
    lat = np.asarray(block.latent[...], np.float64)  # (h, M, C/h)
    w = np.asarray(block.weights[...], np.float64)  # (C, 2K)
    we, be = np.asarray(block.encoder.kernel[...], np.float64), np.asarray(block.encoder.bias[...], np.float64)
    wd, bd = np.asarray(block.decoder.kernel[...], np.float64), np.asarray(block.decoder.bias[...], np.float64)
    h, m_tok, ch = lat.shape
    c, k_basis = block.width, block.num_basis
    p1, p2 = block.patch

    def softmax(s):
        e = np.exp(s - s.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    out = np.empty_like(x)
    b_, n1, n2, _ = x.shape
    for b in range(b_):
        for i in range(n1 // p1):
            for j in range(n2 // p2):
                pix = x[b, i * p1:(i + 1) * p1, j * p2:(j + 1) * p2].reshape(-1, c)  # (L, C)
                kv = pix @ we + be
                keys, values = kv[:, 0::2], kv[:, 1::2]  # the reference interleaves: view(..., C//h, 2)
                tokens = np.empty((m_tok, c))
                for hd in range(h):
                    cs = slice(hd * ch, (hd + 1) * ch)
                    tokens[:, cs] = softmax(lat[hd] @ keys[:, cs].T) @ values[:, cs] + lat[hd]
                new = tokens.copy()
                for mm in range(m_tok):
                    for cc in range(c):
                        z = tokens[mm, cc]
                        new[mm, cc] += sum(w[cc, k] * math.sin(k * math.pi * z / k_basis)
                                           + w[cc, k_basis + k] * math.cos(k * math.pi * z / k_basis)
                                           for k in range(k_basis))
                q = pix @ wd + bd
                res = np.empty_like(pix)
                for hd in range(h):
                    cs = slice(hd * ch, (hd + 1) * ch)
                    res[:, cs] = softmax(q[:, cs] @ new[:, cs].T) @ new[:, cs] + pix[:, cs]
                out[b, i * p1:(i + 1) * p1, j * p2:(j + 1) * p2] = res.reshape(p1, p2, c)
    return out


def test_patchify_roundtrip_and_content():
    x = jnp.arange(2 * 6 * 4 * 3, dtype=jnp.float32).reshape(2, 6, 4, 3)
    p = jax.jit(patchify, static_argnums=1)(x, (3, 2))
    assert p.shape == (2 * 2 * 2, 6, 3)
    np.testing.assert_array_equal(p[3], x[0, 3:6, 2:4].reshape(6, 3))  # batch 0, patch (1, 1)
    np.testing.assert_array_equal(jax.jit(unpatchify, static_argnums=(1, 2))(p, (3, 2), x.shape), x)


def test_spectral_basis_closed_form():
    z = jnp.array([0.3, -1.7])
    phi = spectral_basis(z, 3)
    k = np.arange(3)
    np.testing.assert_allclose(phi[1], np.r_[np.sin(k * np.pi * -1.7 / 3), np.cos(k * np.pi * -1.7 / 3)], rtol=1e-6)


def test_neural_spectral_block_matches_loop_transcription():
    with jax.enable_x64(True):  # random float64 parameters: the transcription holds for any
        block = random_model(lambda: NeuralSpectralBlock(16, num_basis=5, num_token=3, patch_size=(2, 3), n_heads=4,
                                                         rngs=nnx.Rngs(0)), dtype=np.float64)
        x = np.random.default_rng(0).normal(size=(2, 4, 6, 16))
        ours = np.asarray(jit_apply(block, x))
    np.testing.assert_allclose(ours, naive_block(block, x), rtol=1e-10, atol=1e-10)


def test_parameter_count_of_the_darcy_setting():
    """Block: encoder C x 2C + 2C, decoder C x C + C, latent h x M x C/h = M C, weights 2 K C."""
    def block(c, k=12, m=4):
        return 2 * c * c + 2 * c + c * c + c + m * c + 2 * k * c

    d = 64
    expected = hand_count(d) + sum(block(c) for c in (d, 2 * d, 4 * d, 8 * d, 8 * d))
    model = nnx.eval_shape(lambda: LSM(1, 1, 64, 12, 4, (6, 6), (11, 11), rngs=nnx.Rngs(0)))
    assert n_params(model) == expected == 19_187_457
    assert n_params(nnx.eval_shape(lambda: NeuralSpectralBlock(32, 12, 4, rngs=nnx.Rngs(0)))) == block(32)


def test_darcy_padding_fits_and_a_wrong_padding_names_the_fix():
    model = nnx.eval_shape(lambda: LSM(1, 1, 8, 12, 4, (6, 6), (11, 11), rngs=nnx.Rngs(0)))
    assert model.pads((85, 85)) == (11, 11)  # 96 = 6 * 16
    with pytest.raises(ValueError, match=r"85 x 85 padded by \[10, 10\] is 95 x 95, not a multiple of 96 x 96.*"
                                         r"padding=\[11, 11\]"):
        nnx.eval_shape(lambda: LSM(1, 1, 8, 12, 4, (6, 6), (10, 10), rngs=nnx.Rngs(0))).pads((85, 85))
    auto = nnx.eval_shape(lambda: LSM(1, 1, 8, 12, 4, (4, 4), None, rngs=nnx.Rngs(0)))
    assert auto.pads((64, 64)) == (0, 0) and auto.pads((127, 127)) == (1, 1)
    with pytest.raises(ValueError, match="multiple of n_heads=8"):
        nnx.eval_shape(lambda: LSM(1, 1, 12, n_levels=2, rngs=nnx.Rngs(0)))


@pytest.fixture(scope="module")
def lsm_fit():
    """The 2-level LSM (its own initialisers) of the gradient check and the short fit, on an odd grid
    (padded to 14 x 12): a 3x3 box average of x, squared plus x, to learn."""
    model = LSM(1, 1, 8, num_basis=4, num_token=2, patch_size=(1, 1), projection_channels=16, n_levels=2,
                rngs=nnx.Rngs(0))
    x = np.random.default_rng(1).standard_normal((4, 13, 11, 1))
    return FitAndGradient(model, x, smooth_target(x))


@pytest.fixture(scope="module")
def lsm_2_to_3():
    """Random parameters: the shapes do not depend on them."""
    return random_model(lambda: LSM(2, 3, 8, num_basis=4, num_token=2, patch_size=(1, 2), projection_channels=16,
                                    n_levels=2, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("spatial", [(13, 10), (16, 16)])
def test_shapes_on_odd_and_even_grids(spatial, lsm_2_to_3):
    """Tiny (2 levels) to keep compilation short; the 5-level network by shape inference only."""
    out = np.asarray(jit_apply(lsm_2_to_3, np.ones((2, *spatial, 2), np.float32)))
    assert out.shape == (2, *spatial, 3) and np.isfinite(out).all()
    full = nnx.eval_shape(lambda: LSM(2, 3, 8, num_basis=4, num_token=2, patch_size=(1, 2), rngs=nnx.Rngs(0)))
    assert abstract_apply(full, jax.ShapeDtypeStruct((2, *spatial, 2), jnp.float32)).shape == (2, *spatial, 3)


def test_gradient_matches_finite_differences_float64(lsm_fit):
    auto, numeric = lsm_fit.gradient_check()
    assert abs(auto - numeric) <= 1e-6 * max(1.0, abs(auto))


def test_short_fit_reduces_the_loss(lsm_fit):
    losses = lsm_fit.fit_losses(steps=40)
    assert losses[-1] < 0.5 * losses[0], losses[::8]
