"""SpectralConv / spectral_conv against a naive float64 DFT oracle, plus errors and gradients."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from operators import SpectralConv, spectral_conv


# ----------------------------------------------------------------------------------------------
# Naive oracle: explicit DFT matrices (no np.fft), explicit kept-mode loops, explicit inverse.
# ----------------------------------------------------------------------------------------------
def _dft_matrix(n: int, sign: float) -> np.ndarray:
    """(n, n) matrix M[k, j] = exp(sign * 2 pi i k j / n)."""
    k = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    return np.exp(sign * 2j * np.pi * k * j / n)


def _naive_spectral_conv(x: np.ndarray, w: np.ndarray, modes: tuple[int, ...]) -> np.ndarray:
    """x: (batch, *spatial, in), w: (2^(d-1), in, out, *modes) complex -> (batch, *spatial, out)."""
    d = len(modes)
    spatial = x.shape[1:-1]
    batch, out_ch = x.shape[0], w.shape[2]
    # Full forward DFT X[b, k1..kd, i] = sum_j x[b, j, i] exp(-2 pi i k.j / n), one axis at a time.
    xf = x.astype(np.complex128)
    for ax, n in enumerate(spatial):
        xf = np.moveaxis(np.tensordot(_dft_matrix(n, -1.0), xf, axes=([1], [ax + 1])), 0, ax + 1)
    # Kept modes: on non-last axes k in {0..m-1} (low) or {n-m..n-1} (high); last axis {0..m-1}.
    n_last_bins = spatial[-1] // 2 + 1
    y = np.zeros((batch, *spatial[:-1], n_last_bins, out_ch), dtype=np.complex128)
    for corner in range(2 ** (d - 1)):
        for local in itertools.product(*(range(m) for m in modes)):
            k = []
            for ax, (kk, m, n) in enumerate(zip(local, modes, spatial)):
                high = ax < d - 1 and (corner >> ax) & 1
                k.append(n - m + kk if high else kk)
            k = tuple(k)
            for b in range(batch):
                y[(b, *k)] = xf[(b, *k)] @ w[(corner, slice(None), slice(None), *local)]
    # Inverse: complex inverse DFT on the non-last axes, then the irfft definition on the last:
    # out[j] = (1/n) sum_{k=0}^{n//2} c_k Re(Y_k exp(2 pi i k j / n)), c_0 = 1, c_{n/2} = 1 (n even),
    # c_k = 2 otherwise. Taking Re of the DC/Nyquist terms discards their imaginary parts as irfft does.
    for ax, n in enumerate(spatial[:-1]):
        y = np.moveaxis(np.tensordot(_dft_matrix(n, 1.0) / n, y, axes=([1], [ax + 1])), 0, ax + 1)
    n = spatial[-1]
    c = np.full(n_last_bins, 2.0)
    c[0] = 1.0
    if n % 2 == 0:
        c[-1] = 1.0
    basis = _dft_matrix(n, 1.0)[:, :n_last_bins] * c[None, :] / n  # (n, n_last_bins)
    out = np.tensordot(basis, y, axes=([1], [d]))  # (n, batch, n1..n_{d-1}, out)
    return np.moveaxis(out, 0, d).real


CASES = [
    # (spatial, modes, in, out): odd/even sizes, max modes (2m = n on non-last, m = n//2+1 on last).
    ((8,), (5,), 3, 2),  # even, Nyquist bin kept
    ((9,), (5,), 2, 3),  # odd, max modes
    ((7,), (2,), 1, 1),
    ((6, 8), (3, 5), 2, 3),  # even, both axes at max
    ((7, 9), (3, 5), 3, 2),  # odd, both at max
    ((8, 7), (2, 3), 2, 2),
    ((4, 6, 4), (2, 3, 3), 2, 3),  # even, all at max
    ((5, 4, 7), (2, 2, 3), 3, 2),  # mixed odd/even, max
]


@pytest.mark.parametrize("spatial,modes,cin,cout", CASES)
def test_spectral_conv_matches_naive_dft(spatial, modes, cin, cout):
    rng = np.random.default_rng(sum(spatial) + 10 * cin + cout)
    n_corners = 2 ** (len(modes) - 1)
    x = rng.standard_normal((2, *spatial, cin))
    w = rng.standard_normal((n_corners, cin, cout, *modes)) + 1j * rng.standard_normal(
        (n_corners, cin, cout, *modes)
    )
    expected = _naive_spectral_conv(x, w, modes)
    with jax.enable_x64(True):
        got = np.asarray(spectral_conv(jnp.asarray(x), jnp.asarray(w), modes))
    assert got.dtype == np.float64
    assert got.shape == (2, *spatial, cout)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10 * np.abs(expected).max())


def test_module_uses_real_storage_and_original_init():
    layer = SpectralConv(3, 5, (4, 3), rngs=nnx.Rngs(0))
    w = layer.weight[...]
    assert w.shape == (2, 3, 5, 4, 3, 2) and w.dtype == jnp.float32
    params = nnx.state(layer, nnx.Param)
    assert all(not jnp.iscomplexobj(leaf) for leaf in jax.tree.leaves(params))
    # scale * U[0, 1) with scale = 1 / (in * out) for real and imaginary parts.
    scale = 1.0 / 15
    assert float(w.min()) >= 0.0 and float(w.max()) < scale
    assert abs(float(w.mean()) - scale / 2) < 0.1 * scale
    # Module == pure function with the complex weight re-assembled from (real, imag).
    x = jax.random.normal(jax.random.key(1), (2, 8, 6, 3))
    expected = spectral_conv(x, w[..., 0] + 1j * w[..., 1], (4, 3))
    np.testing.assert_allclose(layer(x), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "spatial,modes,fragment",
    [
        ((16, 16), (12, 12), "modes=(12, 12) needs a grid of at least 24 x 22 points (got 16 x 16)"),
        ((16, 16), (8, 10), "at least 16 x 18 points (got 16 x 16)"),
        ((10,), (7,), "at least 12 points (got 10)"),
        ((8, 8, 8), (4, 5, 4), "at least 8 x 10 x 6"),
    ],
)
def test_modes_too_large(spatial, modes, fragment):
    layer = SpectralConv(2, 2, modes, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError) as err:
        layer(jnp.zeros((1, *spatial, 2)))
    assert fragment in str(err.value)
    assert "lower the modes or raise the resolution" in str(err.value)


def test_wrong_rank_and_channels():
    layer = SpectralConv(2, 3, (4, 4), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(batch, n1, n2, in_channels\).*rank 4.*got shape \(16, 16, 2\)"):
        layer(jnp.zeros((16, 16, 2)))
    with pytest.raises(ValueError, match=r"5 channels.*in_channels=2.*channels-last"):
        layer(jnp.zeros((1, 16, 16, 5)))
    with pytest.raises(ValueError, match="1, 2 or 3 spatial axes"):
        SpectralConv(2, 3, (4, 4, 4, 4), rngs=nnx.Rngs(0))


@pytest.mark.parametrize("spatial,modes", [((6,), (3,)), ((5, 6), (2, 3)), ((4, 4, 5), (2, 2, 2))])
def test_gradients_wrt_real_weights(spatial, modes):
    layer = SpectralConv(2, 2, modes, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(layer)
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        x = jax.random.normal(jax.random.key(0), (2, *spatial, 2), dtype=jnp.float64)
        target = jax.random.normal(jax.random.key(1), (2, *spatial, 2), dtype=jnp.float64)

        @jax.jit
        def loss(weight):
            state = jax.tree.map(lambda a: a, params)  # copy, then swap in the traced weight
            state["weight"] = nnx.Param(weight)  # (2^(d-1), in, out, *modes, 2) real
            model = nnx.merge(graphdef, state)
            return jnp.sum((model(x) - target) ** 2)

        check_grads(loss, (params["weight"][...],), order=1, modes=("fwd", "rev"), atol=1e-7, rtol=1e-7)
