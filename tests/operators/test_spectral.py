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
from operators.spectral import choose_impl, dft_matrices, spectral_conv_dft
from test_unet import random_model


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


@pytest.mark.parametrize("impl", ["fft", "dft"])
@pytest.mark.parametrize("spatial,modes,cin,cout", CASES)
def test_spectral_conv_matches_naive_dft(spatial, modes, cin, cout, impl):
    rng = np.random.default_rng(sum(spatial) + 10 * cin + cout)
    n_corners = 2 ** (len(modes) - 1)
    x = rng.standard_normal((2, *spatial, cin))
    w = rng.standard_normal((n_corners, cin, cout, *modes)) + 1j * rng.standard_normal(
        (n_corners, cin, cout, *modes)
    )
    expected = _naive_spectral_conv(x, w, modes)
    with jax.enable_x64(True):
        got = np.asarray(jax.jit(spectral_conv, static_argnames=("modes", "impl"))(x, w, modes=modes, impl=impl))
    assert got.dtype == np.float64
    assert got.shape == (2, *spatial, cout)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10 * np.abs(expected).max())


def test_module_uses_real_storage_and_original_init():
    layer = SpectralConv(3, 5, (4, 3), rngs=nnx.Rngs(0))  # the default PRNG: this is the init under test
    w = np.asarray(layer.weight[...])
    assert w.shape == (2, 3, 5, 4, 3, 2) and w.dtype == np.float32
    params = nnx.state(layer, nnx.Param)
    assert all(not jnp.iscomplexobj(leaf) for leaf in jax.tree.leaves(params))
    # scale * U[0, 1) with scale = 1 / (in * out) for real and imaginary parts.
    scale = 1.0 / 15
    assert float(w.min()) >= 0.0 and float(w.max()) < scale
    assert abs(float(w.mean()) - scale / 2) < 0.1 * scale
    # Module == pure function with the complex weight re-assembled from (real, imag).
    x = np.random.default_rng(1).standard_normal((2, 8, 6, 3)).astype(np.float32)
    expected = jax.jit(spectral_conv, static_argnums=2)(x, w[..., 0] + 1j * w[..., 1], (4, 3))
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(layer, x), expected, rtol=1e-6, atol=1e-6)


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
    layer = nnx.eval_shape(lambda: SpectralConv(2, 2, modes, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError) as err:
        nnx.eval_shape(lambda m, x: m(x), layer, jax.ShapeDtypeStruct((1, *spatial, 2), jnp.float32))
    assert fragment in str(err.value)
    assert "lower the modes or raise the resolution" in str(err.value)


def test_wrong_rank_and_channels():
    layer = nnx.eval_shape(lambda: SpectralConv(2, 3, (4, 4), rngs=nnx.Rngs(0)))
    call = lambda *shape: nnx.eval_shape(lambda m, x: m(x), layer, jax.ShapeDtypeStruct(shape, jnp.float32))  # noqa: E731
    assert call(1, 16, 16, 2).shape == (1, 16, 16, 3)
    with pytest.raises(ValueError, match=r"\(batch, n1, n2, in_channels\).*rank 4.*got shape \(16, 16, 2\)"):
        call(16, 16, 2)
    with pytest.raises(ValueError, match=r"5 channels.*in_channels=2.*channels-last"):
        call(1, 16, 16, 5)
    with pytest.raises(ValueError, match="1, 2 or 3 spatial axes"):
        SpectralConv(2, 3, (4, 4, 4, 4), rngs=nnx.Rngs(0))


@pytest.mark.parametrize("spatial,modes", [((6,), (3,)), ((5, 6), (2, 3)), ((4, 4, 5), (2, 2, 2))])
def test_gradients_wrt_real_weights(spatial, modes):
    """Against finite differences on the FFT path (the DFT path's gradients are checked against
    these in test_dft_path_equals_fft_path_values_and_gradients)."""
    with jax.enable_x64(True):  # random float64 weights: the check holds for any
        layer = random_model(lambda: SpectralConv(2, 2, modes, impl="fft", rngs=nnx.Rngs(0)), dtype=np.float64)
        graphdef, params = nnx.split(layer)
        x, target = np.random.default_rng(0).standard_normal((2, 2, *spatial, 2))

        @jax.jit
        def loss(weight):
            state = jax.tree.map(lambda a: a, params)  # copy, then swap in the traced weight
            state["weight"] = nnx.Param(weight)  # (2^(d-1), in, out, *modes, 2) real
            model = nnx.merge(graphdef, state)
            return jnp.sum((model(x) - target) ** 2)

        check_grads(loss, (params["weight"][...],), order=1, modes=("fwd", "rev"), atol=1e-7, rtol=1e-7)


# ----------------------------------------------------------------------------------------------
# Truncated-DFT path against the FFT path (the naive oracle above checks both against the definition).
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spatial,modes", [((9,), (5,)), ((8, 7), (4, 4)), ((5, 6, 7), (2, 3, 3))])
def test_dft_path_equals_fft_path_values_and_gradients(spatial, modes):
    """float64, odd and even sizes, Nyquist bin kept on (8, 7)'s first axis (2 m = n): outputs and the
    gradients with respect to the input and to both weight parts agree to round-off."""
    rng = np.random.default_rng(len(spatial))
    shape = (2 ** (len(modes) - 1), 3, 2, *modes)
    with jax.enable_x64(True):
        x = rng.standard_normal((2, *spatial, 3))
        w_re, w_im = rng.standard_normal(shape), rng.standard_normal(shape)
        probe = rng.standard_normal((2, *spatial, 2))  # a random cotangent

        def loss(impl, x, w_re, w_im):
            return jnp.sum(probe * spectral_conv(x, jax.lax.complex(w_re, w_im), modes, impl=impl))

        (val_fft, grads_fft), (val_dft, grads_dft) = (
            jax.jit(jax.value_and_grad(lambda *a, i=impl: loss(i, *a), argnums=(0, 1, 2)))(x, w_re, w_im)
            for impl in ("fft", "dft"))
        np.testing.assert_allclose(val_dft, val_fft, rtol=1e-12)
        for g_dft, g_fft in zip(grads_dft, grads_fft):
            g_dft, g_fft = np.asarray(g_dft), np.asarray(g_fft)
            assert float(np.abs(g_fft).max()) > 0.1
            np.testing.assert_allclose(g_dft, g_fft, rtol=0, atol=1e-11 * float(np.abs(g_fft).max()))
        # The pure function taking the two real parts is the same path.
        both = jax.jit(lambda x, w_re, w_im: (spectral_conv_dft(x, w_re, w_im, modes),
                                              spectral_conv(x, jax.lax.complex(w_re, w_im), modes, impl="fft")))
        np.testing.assert_allclose(*both(x, w_re, w_im), atol=1e-12)


def test_dft_matrices_follow_the_grid():
    """One layer at two resolutions: each call builds (and caches) the matrices of its own grid, and
    each equals the FFT path there; the last-axis forward matrix is rfft's restricted to k < m."""
    layer = random_model(lambda: SpectralConv(2, 2, (3,), impl="dft", rngs=nnx.Rngs(0)))
    reference = random_model(lambda: SpectralConv(2, 2, (3,), impl="fft", rngs=nnx.Rngs(0)))  # the same weights
    forward = nnx.jit(lambda m, x: m(x))
    for n in (8, 13):
        x = np.random.default_rng(n).standard_normal((1, n, 2)).astype(np.float32)
        np.testing.assert_allclose(forward(layer, x), forward(reference, x), rtol=1e-5, atol=1e-5)
    forward, _ = dft_matrices(13, 3, True)  # (n, 2, m)
    rfft = np.fft.rfft(np.eye(13), axis=0)[:3].T  # (n, m): row j = rfft of the unit vector e_j
    np.testing.assert_allclose(forward[:, 0] - 1j * -forward[:, 1], rfft, atol=1e-13)
    assert dft_matrices(13, 3, True) is dft_matrices(13, 3, True)  # cached


@pytest.mark.parametrize("spatial,modes", [((16, 12), (4, 5)), ((8, 8, 6), (3, 3, 3))])
def test_bfloat16_mixed_precision_error_bound(spatial, modes):
    """bfloat16 operands, float32 accumulation: every product rounds its operands once (x, the
    matrices, the weights and each of the 2d + 1 intermediate spectra), each rounding a relative
    perturbation of at most u = 2^-8, so the normwise relative error against float32 is O(u): below
    (2d + 3) u. Measured: 1.3 u (2-D and 3-D), 0.9 u in 1-D. It is also above u / 4, so the rounding
    really happens (an fp32 path would be ~1e-7)."""
    u = 2.0 ** -8
    d = len(modes)
    exact = SpectralConv(8, 8, modes, impl="dft", rngs=nnx.Rngs(0))
    mixed = SpectralConv(8, 8, modes, compute_dtype="bfloat16", rngs=nnx.Rngs(0))  # auto -> dft
    x = np.random.default_rng(1).standard_normal((2, *spatial, 8)).astype(np.float32)
    want, got = jax.jit(exact.__call__)(x), jax.jit(mixed.__call__)(x)
    assert got.dtype == jnp.float32
    got, want = np.asarray(got), np.asarray(want)
    err = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    assert u / 4 < err < (2 * d + 3) * u


def test_impl_choice_and_errors():
    # CPU: the DFT path while the kept frequencies are a small part of every axis.
    assert choose_impl("auto", (64, 64), (12, 12), backend="cpu") == "dft"
    assert choose_impl("auto", (1024,), (16,), backend="cpu") == "dft"
    assert choose_impl("auto", (24, 24), (12, 12), backend="cpu") == "fft"  # all 24 frequencies of axis 1 kept
    assert choose_impl("auto", (24, 24), (12, 12), backend="gpu") == "dft"
    assert choose_impl("auto", (24, 24), (12, 12), "bfloat16", backend="cpu") == "dft"
    assert choose_impl("fft", (64, 64), (12, 12)) == "fft" and choose_impl("dft", (24, 24), (12, 12)) == "dft"
    with pytest.raises(ValueError, match=r"impl must be one of \('auto', 'fft', 'dft'\); got 'matmul'"):
        SpectralConv(2, 2, (4, 4), impl="matmul", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="runs on the DFT path only; use impl='dft' or 'auto'"):
        SpectralConv(2, 2, (4, 4), impl="fft", compute_dtype="bfloat16", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="compute_dtype must be a real floating dtype"):
        SpectralConv(2, 2, (4, 4), compute_dtype="int8", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"modes=\(4, 4\) needs a grid of at least 8 x 6 points \(got 6 x 6\)"):
        spectral_conv_dft(jnp.zeros((1, 6, 6, 2)), jnp.zeros((2, 2, 2, 4, 4)), jnp.zeros((2, 2, 2, 4, 4)), (4, 4))
