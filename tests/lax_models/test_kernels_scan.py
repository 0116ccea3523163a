"""The chunked diagonal-scan kernel (interpret mode on CPU) against oracles: a Python loop over time in
complex128, float64 gradients of the associative-scan reference, S5's XLA path, S4D's convolution
(recurrent mode == convolutional mode); and lowering for TPU (Mosaic) and GPU (Triton) on this
CPU-only machine."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.experimental.pallas import tpu as pltpu

from lax_models.kernels.scan import linear_scan, linear_scan_reference, linear_scan_split
from lax_models.ssm.s4d import S4D
from lax_models.ssm.s5 import S5


def _loop(a, b, reverse=False):
    """x_t = a_t x_{t-1} + b_t one step at a time (complex128); a (P,) or like b (batch, L, P)."""
    a, b = np.asarray(a, np.complex128), np.asarray(b, np.complex128)
    a = np.broadcast_to(a, b.shape)
    xs, x = np.zeros_like(b), np.zeros_like(b[:, 0])
    for t in (range(b.shape[1] - 1, -1, -1) if reverse else range(b.shape[1])):
        x = a[:, t] * x + b[:, t]
        xs[:, t] = x
    return xs


def _draw(rng, batch, length, states, shared):
    """b ~ CN(0, 2), a with |a| in [0.5, 0.99] (stable) and any phase."""
    b = rng.normal(size=(batch, length, states)) + 1j * rng.normal(size=(batch, length, states))
    shape = (states,) if shared else (batch, length, states)
    a = rng.uniform(0.5, 0.99, size=shape) * np.exp(1j * rng.uniform(-np.pi, np.pi, size=shape))
    return a, b


@pytest.mark.parametrize("batch,length,states,shared,reverse,block_time,block_states,tpu", [
    (3, 13, 5, True, False, 8, None, True),   # 2 chunks, the last ragged (13 = 8 + 5); TPU semantics
    (1, 9, 6, False, True, 4, 4, False),      # time-varying a, reverse, 3 chunks, 2 state blocks (6 = 4 + 2)
])
def test_forward_equals_loop(batch, length, states, shared, reverse, block_time, block_states, tpu):
    """``tpu``: Mosaic TPU's interpreter (simulated VMEM and DMAs, the time axis sequential, unwritten
    memory NaN, out-of-bounds reads raise): the state carried in the revisited output block is what a
    TPU would see. Else the generic HLO interpreter."""
    rng = np.random.default_rng(length)
    a, b = _draw(rng, batch, length, states, shared)
    options = {"interpret": pltpu.InterpretParams(uninitialized_memory="nan", out_of_bounds_reads="raise"),
               "backend": "tpu"} if tpu else {}
    x = jax.jit(lambda a, b: linear_scan(a, b, reverse=reverse, impl="pallas", block_time=block_time,
                                         block_states=block_states, **options))(
        jnp.asarray(a, jnp.complex64), jnp.asarray(b, jnp.complex64))
    np.testing.assert_allclose(np.asarray(x), _loop(a, b, reverse), rtol=0, atol=2e-5)


@pytest.mark.parametrize("shared,reverse", [(True, False), (False, True)])
def test_gradients_equal_reference_float64(shared, reverse):
    """The custom VJP (reverse scan with conj(a_{t+1}); da = lambda conj(x_{t-1}), summed when a is shared)
    equals jax.grad of the associative scan, float64, chunks of 4 over L = 10."""
    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        a, b = (jnp.asarray(z) for z in _draw(rng, 3, 10, 3, shared))
        wr, wi = (jnp.asarray(rng.normal(size=b.shape)) for _ in range(2))

        def loss(scan):
            def f(ar, ai, br, bi):
                xr, xi = scan(ar, ai, br, bi)
                return jnp.sum(wr * jnp.sin(xr) + wi * xi ** 2)
            return f

        kernel = lambda *z: linear_scan_split(*z, reverse=reverse, block_time=4)  # noqa: E731

        def reference(ar, ai, br, bi):
            x = linear_scan_reference(jax.lax.complex(ar, ai), jax.lax.complex(br, bi), reverse=reverse)
            return jnp.real(x), jnp.imag(x)

        args = (a.real, a.imag, b.real, b.imag)
        got = jax.jit(jax.value_and_grad(loss(kernel), argnums=(0, 1, 2, 3)))(*args)
        want = jax.jit(jax.value_and_grad(loss(reference), argnums=(0, 1, 2, 3)))(*args)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
        for g, r in zip(got[1], want[1]):
            assert g.dtype == jnp.float64 and g.shape == r.shape
            np.testing.assert_allclose(g, r, rtol=0, atol=1e-10 * float(jnp.max(jnp.abs(r))))


@pytest.mark.parametrize("platform,backend", [("tpu", "tpu"), ("cuda", "triton")])
def test_lowers_for_accelerators(platform, backend):
    """Forward and backward (shared and time-varying a) lower for Mosaic TPU (chunks of 256 steps,
    sequential time axis) and Pallas-Triton (one chunk per row) from this CPU machine (jax 0.10.2)."""
    b = jax.ShapeDtypeStruct((2, 1000, 160), jnp.float32)     # 1000 steps, 160 states: ragged blocks
    marker = "tpu_custom_call" if platform == "tpu" else "xla.gpu.triton"
    for a in (jax.ShapeDtypeStruct((160,), jnp.float32), b):

        def loss(ar, ai, br, bi):
            xr, xi = linear_scan_split(ar, ai, br, bi, backend=backend, interpret=False)
            return jnp.sum(xr * xi)

        text = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3))).trace(a, a, b, b).lower(
            lowering_platforms=(platform,)).as_text()
        assert text.count(marker) == 2, text.count(marker)   # forward and reverse scan


def test_triton_refuses_chunked_time():
    b = jnp.zeros((1, 16, 4))
    with pytest.raises(ValueError, match="whole sequence in one chunk"):
        jax.jit(lambda b: linear_scan_split(b[0, 0], b[0, 0], b, b, backend="triton", block_time=8,
                                            interpret=False)).trace(b).lower(lowering_platforms=("cuda",))


def test_s5_pallas_equals_xla():
    """S5 with impl="pallas": output and parameter gradients (through the kernel's reverse scan) equal
    impl="xla" (the associative scan)."""
    x = jnp.asarray(np.random.default_rng(4).normal(size=(3, 11, 4)), jnp.float32)
    results = []
    for impl in ("xla", "pallas"):
        layer = S5(4, d_state=4, impl=impl, rngs=nnx.Rngs(0))
        graphdef, params, rest = nnx.split(layer, nnx.Param, ...)
        loss = lambda p: jnp.sum(jnp.sin(nnx.merge(graphdef, p, rest)(x)))  # noqa: E731
        results.append(jax.jit(jax.value_and_grad(loss))(params))
    (v_xla, g_xla), (v_pl, g_pl) = results
    np.testing.assert_allclose(v_pl, v_xla, rtol=1e-5)
    for p, q in zip(jax.tree.leaves(g_pl), jax.tree.leaves(g_xla)):
        np.testing.assert_allclose(p, q, rtol=0, atol=1e-5 * max(1.0, float(jnp.max(jnp.abs(q)))))


def test_s4d_recurrent_equals_convolution():
    """Bidirectional S4D with impl="pallas": its recurrent mode (the scan kernel, forward and reverse)
    == its convolutional mode (the Monarch FFT-conv kernel, backward kernel with lag 0) == the
    convolution on XLA: the CNN == RNN identity, through both kernels."""
    x = jnp.asarray(np.random.default_rng(5).normal(size=(3, 10, 2)), jnp.float32)
    layer = S4D(2, d_state=4, bidirectional=True, impl="pallas", rngs=nnx.Rngs(1))
    rec, conv = nnx.jit(lambda m, x: (m.recurrent(x), m(x)))(layer, x)
    layer.impl = "xla"
    conv_xla = nnx.jit(lambda m, x: m(x))(layer, x)
    np.testing.assert_allclose(np.asarray(conv_xla), _loop_s4d(layer, x), rtol=0, atol=2e-5)
    np.testing.assert_allclose(np.asarray(rec), np.asarray(conv_xla), rtol=0, atol=2e-5)
    np.testing.assert_allclose(np.asarray(conv), np.asarray(conv_xla), rtol=0, atol=2e-5)


def _loop_s4d(layer, x):
    """The bidirectional S4D by the Python loop: 2 Re(C_fwd x_fwd + C_bwd x_bwd) + D u, complex128."""
    Lambda, B, C, dt = (np.asarray(z) for z in layer.ssm_parameters())
    if layer.discretization != "zoh":
        raise AssertionError("the oracle is written for ZOH")
    lam_bar = np.exp(Lambda * dt[:, None])                                   # (H, N2)
    b_bar = (lam_bar - 1.0) / Lambda * B
    u = np.asarray(x, np.float64)
    bu = (b_bar * u[..., None]).reshape(u.shape[0], u.shape[1], -1)          # (batch, L, H N2)
    shape = u.shape + (lam_bar.shape[-1],)
    y = np.asarray(layer.D[...]) * u
    for direction, reverse in ((0, False), (1, True)):
        states = _loop(lam_bar.ravel(), bu, reverse).reshape(shape)
        y = y + 2 * np.real(np.sum(C[direction] * states, axis=-1))
    return y
