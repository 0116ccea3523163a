"""The Monarch FFT-convolution kernel (interpret mode on CPU) against oracles: the DFT itself
(``np.fft``), a direct sum over lags in float64, float64 gradients of the ``jnp.fft`` reference, a
bf16 error bound, the long-convolution layer's XLA path (S4D's use of it: test_kernels_scan.py);
and lowering for TPU (Mosaic) and GPU (Triton) on this CPU-only machine."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.experimental.pallas import tpu as pltpu

from lax_models.kernels import resolve_impl
from lax_models.kernels.fftconv import (fft_conv, fft_conv_bhl, fft_conv_monarch_xla, fft_conv_reference,
                                        monarch_dft_matrices, monarch_sizes)
from lax_models.longconv import LongConv


def _direct_conv(u, k, D, k_reverse=None):
    """y_i = sum_{m<=i} k_m u_{i-m} + D u_i (+ sum_{s>=0} k_reverse_s u_{i+s}) by direct sums, float64.
    u (batch, L, H), k (H, L)."""
    u, k = np.asarray(u, np.float64), np.asarray(k, np.float64)
    length = u.shape[1]
    y = np.asarray(D, np.float64) * u
    for m in range(length):
        y[:, m:] += k[:, m] * u[:, :length - m]
        if k_reverse is not None:
            y[:, :length - m] += np.asarray(k_reverse, np.float64)[:, m] * u[:, m:]
    return y


def _draw(rng, batch, length, h):
    return (rng.normal(size=(batch, length, h)), rng.normal(size=(h, length)) / np.sqrt(length),
            rng.normal(size=(h,)))


@pytest.mark.parametrize("length", [5, 256, 1000, 16384])
def test_monarch_factors_are_the_dft(length):
    """((F_N1 A) * T) F_N2 in (k1, k2) order is np.fft.fft of the zero-padded x, and the inverse
    factors give x back (the first L_p entries), float64."""
    lp, n1, n2 = monarch_sizes(length)
    assert n1 * n2 == 2 * lp and lp >= length and n1 % 2 == 0
    m = {k: v for k, v in monarch_dft_matrices(n1, n2).items()}
    c = lambda name: m[f"{name}_real"] + 1j * m[f"{name}_imag"]  # noqa: E731
    x = np.random.default_rng(length).normal(size=lp)
    spectrum = ((c("f1") @ x.reshape(n1 // 2, n2)) * c("t")) @ c("f2")        # [k1, k2]
    np.testing.assert_allclose(spectrum.T.ravel(), np.fft.fft(x, 2 * lp), rtol=0, atol=1e-9 * np.sqrt(lp))
    back = c("g1") @ ((spectrum @ c("f2").conj()) * c("t").conj())              # (N1/2, N2)
    np.testing.assert_allclose(back.ravel(), x, atol=1e-12 * lp)


@pytest.mark.parametrize("batch,length,h,block_channels,bidirectional,tpu",
                         [(3, 5, 2, None, False, True), (1, 37, 3, 1, True, False)])
def test_forward_equals_direct_sum(batch, length, h, block_channels, bidirectional, tpu):
    """Odd batch sizes, lengths that are not powers of two, channel blocks of 2 and 1, the anti-causal
    part; float32 kernel against the float64 direct sum (and the jnp.fft reference beside it).
    ``tpu``: Mosaic TPU's interpreter (unwritten memory NaN, out-of-bounds reads raise)."""
    rng = np.random.default_rng(length)
    u, k, D = _draw(rng, batch, length, h)
    k_rev = rng.normal(size=(h, length)) / np.sqrt(length) if bidirectional else None
    f32 = lambda a: None if a is None else jnp.asarray(a, jnp.float32)  # noqa: E731
    options = {"interpret": pltpu.InterpretParams(uninitialized_memory="nan", out_of_bounds_reads="raise"),
               "backend": "tpu"} if tpu else {}
    y = jax.jit(lambda *a: fft_conv(*a, impl="pallas", block_channels=block_channels, **options))(
        f32(u), f32(k), f32(D), f32(k_rev))
    want = _direct_conv(u, k, D, k_rev)
    scale = np.max(np.abs(want))
    np.testing.assert_allclose(np.asarray(y), want, atol=2e-6 * scale, rtol=0)
    y_xla = fft_conv(f32(u), f32(k), f32(D), f32(k_rev), impl="xla")
    np.testing.assert_allclose(np.asarray(y_xla), want, atol=2e-6 * scale, rtol=0)
    if not bidirectional:  # the kernel's arithmetic as XLA einsums (what the CPU benchmark times)
        y_mx = jax.jit(fft_conv_monarch_xla)(jnp.swapaxes(f32(u), 1, 2), f32(k), f32(D))
        np.testing.assert_allclose(np.swapaxes(np.asarray(y_mx), 1, 2), want, atol=2e-6 * scale, rtol=0)


def test_gradients_equal_reference_float64():
    """The custom VJP (du: correlation with k; dk: correlation with u, summed over the batch; dD) equals
    jax.grad of the jnp.fft reference, all in float64 (kernel in interpret mode with float64 matmuls)."""
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        u, k, D = (jnp.asarray(a, jnp.float64) for a in _draw(rng, 3, 11, 2))
        w = jnp.asarray(rng.normal(size=u.shape))  # a loss that weighs every output differently

        def loss(conv):
            return lambda u, k, D: jnp.sum(w * jnp.tanh(conv(u, k, D)))

        kernel = lambda u, k, D: jnp.swapaxes(  # noqa: E731
            fft_conv_bhl(jnp.swapaxes(u, 1, 2), k, D, block_channels=1), 1, 2)
        got = jax.jit(jax.value_and_grad(loss(kernel), argnums=(0, 1, 2)))(u, k, D)
        want = jax.jit(jax.value_and_grad(loss(fft_conv_reference), argnums=(0, 1, 2)))(u, k, D)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
        for g, r in zip(got[1], want[1]):
            assert g.dtype == jnp.float64
            np.testing.assert_allclose(g, r, rtol=0, atol=1e-11 * float(jnp.max(jnp.abs(r))))


def test_bfloat16_inputs_within_bound():
    """bf16 inputs and DFT factors, fp32 accumulation: the error against the fp32 reference on the same
    (bf16-rounded) input is a few bf16 roundings of each of the ~6 products, relative to the size of the
    terms (sum_m |k_m| |u_{i-m}|), and far larger than fp32 round-off (the bf16 path is really taken)."""
    rng = np.random.default_rng(1)
    u, k, D = _draw(rng, 2, 64, 2)
    ub = jnp.asarray(u, jnp.bfloat16)
    y = jax.jit(lambda u, k, D: fft_conv(u, k, D, impl="pallas"))(ub, jnp.asarray(k, jnp.float32),
                                                                  jnp.asarray(D, jnp.float32))
    assert y.dtype == jnp.bfloat16
    u32 = np.asarray(ub.astype(jnp.float32), np.float64)
    want = _direct_conv(u32, k, D)
    terms = _direct_conv(np.abs(u32), np.abs(k), np.abs(D))                  # sum of |terms| per output
    err = np.abs(np.asarray(y.astype(jnp.float32)) - want)
    eps = 2.0 ** -8                                                          # bf16 unit round-off
    assert np.all(err <= 12 * eps * np.max(terms)), float(np.max(err / np.max(terms)))
    assert np.max(err / np.max(terms)) > 1e-5                                # not the fp32 path


@pytest.mark.parametrize("platform,backend", [("tpu", "tpu"), ("cuda", "triton")])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_lowers_for_accelerators(platform, backend, dtype):
    """Forward and backward kernels lower for Mosaic TPU and Pallas-Triton (GPU) from this CPU machine
    (jax 0.10.2; the default Mosaic GPU lowering of pallas_call has no dot_general, hence Triton).
    L = 1024 (N = 2048 = 64 x 32), 8 channels in blocks of 4."""
    u = jax.ShapeDtypeStruct((2, 8, 1024), dtype)
    k = jax.ShapeDtypeStruct((8, 1024), jnp.float32)
    D = jax.ShapeDtypeStruct((8,), jnp.float32)

    def loss(u, k, D):
        y = fft_conv_bhl(u, k, D, block_channels=4, backend=backend, interpret=False)
        return jnp.sum(y.astype(jnp.float32) ** 2)

    text = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(u, k, D).lower(
        lowering_platforms=(platform,)).as_text()
    marker = "tpu_custom_call" if platform == "tpu" else "xla.gpu.triton"
    assert text.count(marker) == 3, text.count(marker)   # forward, du, dk


def test_impl_switch():
    """auto is XLA on CPU (the default config's behaviour there is unchanged), Pallas on GPU / TPU;
    unknown names are errors."""
    assert resolve_impl("auto") == ("xla" if jax.default_backend() == "cpu" else "pallas")
    with pytest.raises(ValueError, match="impl must be one of"):
        resolve_impl("cuda")
    with pytest.raises(ValueError, match="impl must be one of"):
        LongConv(4, l_max=8, impl="triton", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="k of shape"):
        fft_conv(jnp.zeros((1, 8, 2)), jnp.zeros((2, 7)), jnp.zeros(2), impl="pallas")


def _loss_and_grads(layer, x):
    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

    def loss(params):
        return jnp.sum(jnp.sin(nnx.merge(graphdef, params, rest)(x)))

    return jax.jit(jax.value_and_grad(loss))(params)


def test_longconv_pallas_equals_xla():
    """Bidirectional LongConv (its future kernel has no lag 0) with impl="pallas": loss and parameter
    gradients equal impl="xla" (odd batch, L = 12)."""
    x = jnp.asarray(np.random.default_rng(2).normal(size=(3, 12, 4)), jnp.float32)
    results = []
    for impl in ("xla", "pallas"):
        m = LongConv(4, l_max=12, bidirectional=True, lam=0.0, impl=impl, rngs=nnx.Rngs(0))
        m.kernel[...] = m.kernel[...] * 100.0  # a kernel as large as the skip term
        results.append(_loss_and_grads(m, x))
    (v_xla, g_xla), (v_pl, g_pl) = results
    np.testing.assert_allclose(v_pl, v_xla, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g_pl), jax.tree.leaves(g_xla)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * max(1.0, float(jnp.max(jnp.abs(b)))))

