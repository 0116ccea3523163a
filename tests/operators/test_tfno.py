"""TFNO: the Tucker layer built at full rank from a dense layer equals it (both implementations, 1-3 D),
factor-by-factor contraction equals reconstruction at low rank, rank fractions as tensorly's rule,
parameter counts, shapes on odd and even grids, a float64 gradient check, and a short fit."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from operators.spectral import SpectralConv, as_complex, spectral_conv
from operators.tfno import (TFNO, TuckerSpectralConv, corners_to_dense, dense_to_corners, tucker_from_dense,
                            tucker_ranks, tucker_to_dense)
from test_unet import fit_losses, gradient_check, n_params


@pytest.mark.parametrize("modes,spatial", [((4,), (11,)), ((3, 2), (9, 8)), ((2, 2, 2), (5, 4, 6))])
@pytest.mark.parametrize("implementation", ["factorized", "reconstructed"])
def test_full_rank_tucker_layer_equals_the_dense_layer(modes, spatial, implementation):
    with jax.enable_x64(True):
        dense = SpectralConv(3, 2, modes, rngs=nnx.Rngs(0))
        w = as_complex(jnp.asarray(dense.weight[...], jnp.float64))  # (2^(d-1), 3, 2, *modes)
        shape = (3, 2, *(2 * m for m in modes[:-1]), modes[-1])
        layer = TuckerSpectralConv.from_dense(w, modes, list(shape), implementation)
        x = jax.random.normal(jax.random.key(1), (2, *spatial, 3), jnp.float64)
        np.testing.assert_allclose(layer.dense_weight(), w, atol=1e-12)
        np.testing.assert_allclose(layer(x), spectral_conv(x, w, modes), rtol=1e-10, atol=1e-12)


def test_factorized_contraction_equals_reconstruction_at_low_rank():
    with jax.enable_x64(True):
        layer = TuckerSpectralConv(4, 3, (3, 3), rank=0.3, rngs=nnx.Rngs(0))
        layer.core = nnx.Param(jnp.asarray(layer.core[...], jnp.float64))
        x = jax.random.normal(jax.random.key(2), (2, 10, 9, 4), jnp.float64)
        factorized = layer(x)
        layer.implementation = "reconstructed"
        np.testing.assert_allclose(factorized, layer(x), rtol=1e-10, atol=1e-13)
        assert float(jnp.abs(factorized).max()) > 0


def test_hosvd_and_corner_layout_roundtrip():
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(3, 4, 6, 3)) + 1j * rng.normal(size=(3, 4, 6, 3)))
    core, factors = tucker_from_dense(w, w.shape)
    np.testing.assert_allclose(tucker_to_dense(core, factors), w, atol=1e-5)
    corners = dense_to_corners(w, (3, 3))
    assert corners.shape == (2, 3, 4, 3, 3)
    np.testing.assert_array_equal(corners[1], w[:, :, 3:6])  # the negative frequencies -3..-1
    np.testing.assert_array_equal(corners_to_dense(corners, (3, 3)), w)


@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_rank_fraction_keeps_that_share_of_the_parameters(fraction):
    shape = (32, 32, 24, 12)
    ranks = tucker_ranks(shape, fraction)
    size = math.prod(ranks) + sum(s * r for s, r in zip(shape, ranks))
    assert abs(size / math.prod(shape) - fraction) < 0.25 * fraction  # up to rounding of the ranks
    assert all(abs(r / s - ranks[0] / shape[0]) < 0.05 for r, s in zip(ranks, shape))  # one common fraction
    assert tucker_ranks(shape, [4, 5, 6, 7]) == (4, 5, 6, 7)
    with pytest.raises(ValueError, match="1 <= rank <= size"):
        tucker_ranks(shape, [4, 5, 6, 13])
    with pytest.raises(ValueError, match="> 0"):
        tucker_ranks(shape, 0.0)


@pytest.mark.parametrize("rank,expected", [(0.1, 256_961), (0.5, 1_193_729), (1.0, 2_390_145)])
def test_parameter_counts_of_the_darcy_setting(rank, expected):
    model = nnx.eval_shape(lambda: TFNO(1, 1, (12, 12), 32, rank=rank, rngs=nnx.Rngs(0)))
    ranks = tucker_ranks((32, 32, 24, 12), rank)
    per_layer = math.prod(ranks) * 2 + sum(s * r * 2 for s, r in zip((32, 32, 24, 12), ranks))
    fno_without_spectral = 2_368_001 - 4 * 2 * 32 * 32 * 12 * 12 * 2
    assert n_params(model) == fno_without_spectral + 4 * per_layer == expected


@pytest.mark.parametrize("spatial", [(13, 10), (16, 16)])
def test_shapes_on_odd_and_even_grids(spatial):
    model = TFNO(2, 3, (3, 3), 8, n_layers=2, projection_channels=8, padding=0.1, rank=0.5, rngs=nnx.Rngs(0))
    assert model(jnp.ones((2, *spatial, 2))).shape == (2, *spatial, 3)
    with pytest.raises(ValueError, match="lower the modes"):
        model(jnp.ones((2, 4, 4, 2)))


def test_gradient_matches_finite_differences_float64():
    with jax.enable_x64(True):
        model = TFNO(1, 1, (2, 2), 4, n_layers=2, projection_channels=4, rank=0.5, rngs=nnx.Rngs(0))
        x = jax.random.normal(jax.random.key(1), (2, 7, 6, 1), jnp.float64)
        auto, numeric = gradient_check(model, x)
    assert abs(auto - numeric) <= 1e-6 * max(1.0, abs(auto))


def test_short_fit_reduces_the_loss():
    t = jnp.linspace(0, 1, 16)
    x = jnp.stack([jnp.sin(2 * jnp.pi * (k + 1) * t)[:, None] * jnp.cos(2 * jnp.pi * t)[None, :]
                   for k in range(4)])[..., None]  # (4, 16, 16, 1)
    y = jnp.roll(x, 2, axis=1) + 0.5 * x ** 2
    model = TFNO(1, 1, (4, 4), 8, n_layers=2, projection_channels=16, rank=0.5, rngs=nnx.Rngs(0))
    losses = fit_losses(model, x, y, steps=40, lr=1e-2)
    assert losses[-1] < 0.5 * losses[0], losses[::8]
