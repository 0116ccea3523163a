"""TFNO parameter counts at the Darcy setting (modes 12 x 12, width 32, 4 layers, grid channels on),
written out by hand, and the rank rule of neuraloperator's TFNO.

neuraloperator (``neuralop/models/fno.py:TFNO``: ``factorization="Tucker"``, ``rank=0.1``) builds each
layer's weight with tensorly-torch ``FactorizedTensor.new(shape, rank=0.1, factorization="Tucker",
dtype=cfloat)`` -> ``TuckerTensor.new`` -> tensorly's ``validate_tucker_rank(shape, rank,
rounding="round")`` (tensorly/tucker_tensor.py): for a float rank rho it finds the common fraction x
with ``prod(S) x^n + sum(S_j^2) x = rho prod(S)`` (``brentq`` on ``[0, max(rho, 1)]``) and takes
``R_j = max(int(np.round(S_j x)), 1)``; the weight holds a complex core ``R`` and complex factors
``(S_j, R_j)``. Its weight shape for ``n_modes = (24, 22)`` (the original ``modes1 = modes2 = 12``:
24 centred modes on the first axis, ``22 // 2 + 1 = 12`` on the real-FFT axis) is ``(32, 32, 24, 12)``.
The rule is transcribed here with a polynomial root finder (not our bisection).
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from flax import nnx

from operators.tfno import TFNO

WIDTH, LAYERS, PROJ = 32, 4, 128
SHAPE = (32, 32, 24, 12)  # (in, out, 2 * modes1, modes2) of every layer's weight

# Every layer but the spectral weights, written out (weights + biases):
LIFTING = (1 + 2) * WIDTH + WIDTH  # fc0: a(x, y) and two grid channels -> width        128
SKIPS = LAYERS * (WIDTH * WIDTH + WIDTH)  # w0..w3: 1x1 convs with bias                  4,224
PROJECTION = (WIDTH * PROJ + PROJ) + (PROJ * 1 + 1)  # fc1, fc2                         4,353
NON_SPECTRAL = LIFTING + SKIPS + PROJECTION  # 8,705

# Tucker ranks (in, out, k1, k2) per rank fraction, by hand from the rule above:
# x = 0.55487 (0.1): S_j x = 17.76, 13.32, 6.66;  x = 0.83757 (0.5): 26.80, 20.10, 10.05;
# x = 0.99765 (1.0): 31.92, 23.94, 11.97 (S_j = 32, 24, 12)
HAND_RANKS = {0.1: (18, 18, 13, 7), 0.5: (27, 27, 20, 10), 1.0: (32, 32, 24, 12)}


def tucker_reals(ranks) -> int:
    """Reals in one complex Tucker weight: core prod(R) plus factors sum S_j R_j, two reals each."""
    core = math.prod(ranks)
    factors = sum(s * r for s, r in zip(SHAPE, ranks))
    return 2 * (core + factors)


def tensorly_tucker_rank(shape, rho: float) -> tuple[int, ...]:
    """``validate_tucker_rank(shape, rho)`` for a float rho, fixed_modes=None, rounding='round'."""
    n_param = math.prod(shape)
    squared_dims = sum(s * s for s in shape)
    # n_param x^n + squared_dims x - rho n_param
    coeffs = [n_param] + [0] * (len(shape) - 2) + [squared_dims, -rho * n_param]
    roots = [z.real for z in np.roots(coeffs) if abs(z.imag) < 1e-9 and 0 < z.real <= max(rho, 1.0)]
    assert len(roots) == 1  # the polynomial increases on x > 0: one root in brentq's bracket
    return tuple(max(int(np.round(s * roots[0])), 1) for s in shape)


def neuralop_weight_shape(in_channels: int, out_channels: int, n_modes) -> tuple[int, ...]:
    """SpectralConv: ``(in, out, *n_modes)`` after the last axis became ``n_modes[-1] // 2 + 1``."""
    return (in_channels, out_channels, *n_modes[:-1], n_modes[-1] // 2 + 1)


def n_params(model) -> int:
    return sum(int(v.size) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_hand_counts_of_the_parts():
    assert (LIFTING, SKIPS, PROJECTION, NON_SPECTRAL) == (128, 4_224, 4_353, 8_705)
    dense_spectral = LAYERS * 2 * (2 * WIDTH * WIDTH * 12 * 12)  # two corner blocks (in, out, 12, 12), complex
    assert NON_SPECTRAL + dense_spectral == 2_368_001  # the FNO of fourier_2d.py


@pytest.mark.parametrize("rank,readme", [(0.1, 256_961), (0.5, 1_193_729), (1.0, 2_390_145)])
def test_tfno_counts_equal_the_tucker_formula_and_the_readme(rank, readme):
    model = nnx.eval_shape(lambda: TFNO(1, 1, (12, 12), WIDTH, rank=rank, rngs=nnx.Rngs(0)))
    ranks = HAND_RANKS[rank]
    for layer in model.spectral:  # the parameters themselves, not only their count
        assert layer.core.shape == (*ranks, 2)
        assert [f.shape for f in layer.factors] == [(s, r, 2) for s, r in zip(SHAPE, ranks)]
    assert NON_SPECTRAL + LAYERS * tucker_reals(ranks) == n_params(model) == readme


@pytest.mark.parametrize("rank", [0.1, 0.5, 1.0])
def test_ranks_equal_neuraloperators_rule(rank):
    """neuralop's TFNO at the equivalent setting gives every layer the same weight shape, the same
    Tucker ranks and so the same spectral parameter count as ours (its FNO around the spectral
    weights, with channel MLPs and a spectral bias, is another architecture and is not compared)."""
    shape = neuralop_weight_shape(WIDTH, WIDTH, (24, 22))
    assert shape == SHAPE
    assert tensorly_tucker_rank(shape, rank) == HAND_RANKS[rank]
    model = nnx.eval_shape(lambda: TFNO(1, 1, (12, 12), WIDTH, rank=rank, rngs=nnx.Rngs(0)))
    assert all(tuple(layer.ranks) == HAND_RANKS[rank] for layer in model.spectral)
    spectral = sum(int(v.size) for layer in model.spectral for v in jax.tree.leaves(nnx.state(layer, nnx.Param)))
    assert spectral == LAYERS * tucker_reals(tensorly_tucker_rank(shape, rank))
