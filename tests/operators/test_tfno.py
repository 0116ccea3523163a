"""TFNO: the Tucker layer built at full rank from a dense layer equals it (both implementations, 1-3 D),
factor-by-factor contraction equals reconstruction at low rank, rank fractions as tensorly's rule,
parameter counts, shapes on odd and even grids, a float64 gradient check, and a short fit."""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from operators.spectral import SpectralConv, spectral_conv
from operators.tfno import (TFNO, TuckerSpectralConv, corners_to_dense, dense_to_corners, tucker_from_dense,
                            tucker_ranks, tucker_to_dense)
from test_unet import FitAndGradient, _cheap_prng, abstract_apply, jit_apply, n_params, random_model  # noqa: F401


@partial(jax.jit, static_argnums=(2, 3, 4))
def _tucker_and_dense(w, x, modes, shape, implementation):
    """One compiled call: the Tucker layer of the dense corner weight w (HOSVD), its reconstructed
    weight, its output and the dense layer's output on x."""
    layer = TuckerSpectralConv.from_dense(w, modes, list(shape), implementation)
    return layer.dense_weight(), layer(x), spectral_conv(x, w, modes)


@pytest.mark.parametrize("modes,spatial", [((4,), (11,)), ((3, 2), (9, 8)), ((2, 2, 2), (5, 4, 6))])
@pytest.mark.parametrize("implementation", ["factorized", "reconstructed"])
def test_full_rank_tucker_layer_equals_the_dense_layer(modes, spatial, implementation):
    with jax.enable_x64(True):
        dense = nnx.eval_shape(lambda: SpectralConv(3, 2, modes, rngs=nnx.Rngs(0)))
        rng = np.random.default_rng(len(modes))
        w = rng.uniform(0, 1 / 6, dense.weight.shape) @ np.array([1, 1j])  # (2^(d-1), 3, 2, *modes), the init's law
        shape = (3, 2, *(2 * m for m in modes[:-1]), modes[-1])
        x = rng.standard_normal((2, *spatial, 3))
        weight, ours, want = _tucker_and_dense(w, x, modes, shape, implementation)
        np.testing.assert_allclose(weight, w, atol=1e-12)
        np.testing.assert_allclose(ours, want, rtol=1e-10, atol=1e-12)


def test_factorized_contraction_equals_reconstruction_at_low_rank():
    with jax.enable_x64(True):  # random float64 core and factors: the identity holds for any
        layer = random_model(lambda: TuckerSpectralConv(4, 3, (3, 3), rank=0.3, rngs=nnx.Rngs(0)), dtype=np.float64)
        x = np.random.default_rng(2).standard_normal((2, 10, 9, 4))
        factorized = np.asarray(jit_apply(layer, x))
        layer.implementation = "reconstructed"
        np.testing.assert_allclose(factorized, jit_apply(layer, x), rtol=1e-10, atol=1e-13)
        assert float(np.abs(factorized).max()) > 0


def test_hosvd_and_corner_layout_roundtrip():
    rng = np.random.default_rng(0)
    w = (rng.normal(size=(3, 4, 6, 3)) + 1j * rng.normal(size=(3, 4, 6, 3))).astype(np.complex64)

    @jax.jit
    def roundtrips(w):
        core, factors = tucker_from_dense(w, w.shape)
        corners = dense_to_corners(w, (3, 3))
        return tucker_to_dense(core, factors), corners, corners_to_dense(corners, (3, 3))

    dense, corners, back = roundtrips(w)
    np.testing.assert_allclose(dense, w, atol=1e-5)
    assert corners.shape == (2, 3, 4, 3, 3)
    np.testing.assert_array_equal(corners[1], w[:, :, 3:6])  # the negative frequencies -3..-1
    np.testing.assert_array_equal(back, w)


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
    model = random_model(lambda: TFNO(2, 3, (3, 3), 8, n_layers=2, projection_channels=8, padding=0.1, rank=0.5,
                                      rngs=nnx.Rngs(0)))  # random parameters: the shapes do not depend on them
    out = np.asarray(jit_apply(model, np.ones((2, *spatial, 2), np.float32)))
    assert out.shape == (2, *spatial, 3) and np.isfinite(out).all()
    with pytest.raises(ValueError, match="lower the modes"):
        abstract_apply(model, jax.ShapeDtypeStruct((2, 4, 4, 2), jnp.float32))


@pytest.fixture(scope="module")
def tfno_fit():
    """The TFNO (its own initialisers) of the gradient check and the short fit, on a 13 x 11 grid
    (padded to 15 x 13): a shift plus a square of smooth fields, to learn."""
    model = TFNO(1, 1, (3, 3), 8, n_layers=2, projection_channels=8, padding=0.1, rank=0.5, rngs=nnx.Rngs(0))
    t1, t2 = np.linspace(0, 1, 13), np.linspace(0, 1, 11)
    x = np.stack([np.sin(2 * np.pi * (k + 1) * t1)[:, None] * np.cos(2 * np.pi * t2)[None, :]
                  for k in range(4)])[..., None]  # (4, 13, 11, 1)
    return FitAndGradient(model, x, np.roll(x, 2, axis=1) + 0.5 * x ** 2)


def test_gradient_matches_finite_differences_float64(tfno_fit):
    auto, numeric = tfno_fit.gradient_check()
    assert abs(auto - numeric) <= 1e-6 * max(1.0, abs(auto))


def test_short_fit_reduces_the_loss(tfno_fit):
    losses = tfno_fit.fit_losses(steps=40, lr=1e-2)
    assert losses[-1] < 0.5 * losses[0], losses[::8]
