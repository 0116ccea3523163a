"""S5 against oracles: closed-form HiPPO, scipy's matrix exponential, a sequential scan, a Python loop,
the full (non-conjugate-halved) complex system, the recurrent step mode, and finite differences."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from flax import nnx
from jax.test_util import check_grads

from lax_models.ssm import SSMParam
from lax_models.ssm.common import discretize
from lax_models.ssm.hippo import dplr
from lax_models.ssm.ptd import ptd_init
from lax_models.ssm.s5 import S5, conjugate_half, initial_draws, linear_recurrence_scan, seed_from_key


def discretize_rows(method, lam, b_tilde, dt):
    """S5's discretisation (``S5.discretized``): per state ``(Lambda_bar, B scale)``, rows of B~ scaled."""
    lam_bar, b_scale = discretize(lam, dt, method)
    return lam_bar, b_scale[:, None] * b_tilde


def _hippo_legs_loops(n: int) -> np.ndarray:
    """HiPPO-LegS A written entry by entry from the paper's definition."""
    a = np.zeros((n, n))
    for i in range(n):
        for k in range(n):
            if i > k:
                a[i, k] = -np.sqrt(2 * i + 1) * np.sqrt(2 * k + 1)
            elif i == k:
                a[i, k] = -(i + 1)
    return a


def _loop_recurrence(lam_bar, bu, reverse=False):
    """x_k = lam_bar x_{k-1} + bu_k, one position at a time in Python (complex128)."""
    lam_bar, bu = np.asarray(lam_bar, np.complex128), np.asarray(bu, np.complex128)
    xs = np.zeros_like(bu)
    x = np.zeros(bu.shape[:-2] + bu.shape[-1:], np.complex128)
    order = range(bu.shape[-2] - 1, -1, -1) if reverse else range(bu.shape[-2])
    for k in order:
        x = lam_bar * x + bu[..., k, :]
        xs[..., k, :] = x
    return xs


def _layer_loop(layer: S5, u: np.ndarray) -> np.ndarray:
    """The layer's output from its own parameters by a naive loop over positions (float64)."""
    lam_bar, b_bar = (np.asarray(a, np.complex128) for a in layer.discretized())
    c = np.asarray(layer.C[...], np.float64)
    c = c[..., 0] + 1j * c[..., 1]
    u = np.asarray(u, np.float64)
    bu = u @ b_bar.T                                       # (batch, L, P')
    scale = 2.0 if layer.conj_sym else 1.0
    y = scale * (_loop_recurrence(lam_bar, bu) @ c.T).real
    if layer.bidirectional:
        c2 = np.asarray(layer.C_reverse[...], np.float64)
        c2 = c2[..., 0] + 1j * c2[..., 1]
        y = y + scale * (_loop_recurrence(lam_bar, bu, reverse=True) @ c2.T).real
    return y + np.asarray(layer.D[...]) * u


apply = nnx.jit(lambda layer, x: layer(x))  # one compiled graph instead of eager op-by-op dispatch
scan = jax.jit(linear_recurrence_scan, static_argnames="reverse")


def _inputs(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


# ----------------------------------------------------------------------------------------------
# Initialisation
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("block, blocks", [(4, 1), (8, 2), (16, 1)])
def test_hippo_initialisation_has_the_spectrum_of_the_normal_part_of_legs(block, blocks):
    a = _hippo_legs_loops(block)
    p = np.sqrt(np.arange(block) + 0.5)
    s = a + np.outer(p, p)                                         # normal part of HiPPO-LegS
    np.testing.assert_allclose(s + s.T, -np.eye(block) * 1.0, atol=1e-12)  # -I/2 + skew-symmetric
    layer = S5(2, d_state=block * blocks, blocks=blocks, rngs=nnx.Rngs(0))
    lam = np.asarray(layer.Lambda_re[...], np.float64) + 1j * np.asarray(layer.Lambda_im[...], np.float64)
    expected = np.linalg.eigvals(s)
    by_imag = lambda z: z[np.argsort(z.imag)]                      # noqa: E731
    expected = by_imag(expected[expected.imag < 0])                # the kept half: Im < 0
    for j in range(blocks):                                        # every block holds the same spectrum
        np.testing.assert_allclose(by_imag(lam[j * block // 2:(j + 1) * block // 2]), expected,
                                   rtol=1e-5, atol=1e-5)


def test_conjugate_half_keeps_one_of_each_pair_of_a_real_matrix():
    rng = np.random.default_rng(0)
    # a real matrix with three conjugate pairs: similar to blocks [[a, -b], [b, a]]
    blocks = [np.array([[a, -b], [b, a]]) for a, b in zip(rng.uniform(-2, 0, 3), rng.uniform(0.5, 3, 3))]
    q = rng.normal(size=(6, 6))
    a = q @ scipy.linalg.block_diag(*blocks) @ np.linalg.inv(q)
    lam, v = np.linalg.eig(a)
    lam_h, v_h, vinv_h = conjugate_half(lam, v, np.linalg.inv(v))
    assert lam_h.shape == (3,) and np.all(lam_h.imag < 0)
    np.testing.assert_allclose(2 * (v_h @ np.diag(lam_h) @ vinv_h).real, a, atol=1e-10)
    with pytest.raises(ValueError, match="conj_sym=False"):
        conjugate_half(np.array([-1.0, -2.0 + 0j]), np.eye(2), np.eye(2))


def test_initialisation_follows_the_reference():
    d_model, d_state, blocks = 64, 256, 4
    layer = S5(d_model, d_state=d_state, blocks=blocks, dt_min=1e-3, dt_max=1e-1, bidirectional=True,
               rngs=nnx.Rngs(0))
    assert layer.n_states == d_state // 2
    log_dt = np.asarray(layer.log_dt[...])
    assert log_dt.shape == (d_state // 2,)
    assert np.all(log_dt >= np.log(1e-3) - 1e-6) and np.all(log_dt <= np.log(1e-1) + 1e-6)
    assert layer.B.shape == (d_state // 2, d_model, 2) and layer.C.shape == (d_model, d_state // 2, 2)
    # V has orthonormal columns, so B~ = V^* B with B of variance 1/P has complex entries of
    # variance 1/P (1/(2P) per real part), and C~ = C V with complex C of variance 2/P has 1/P per part
    np.testing.assert_allclose(np.std(np.asarray(layer.B[...])), (2 * d_state) ** -0.5, rtol=0.03)
    np.testing.assert_allclose(np.std(np.asarray(layer.C[...])), d_state ** -0.5, rtol=0.03)
    np.testing.assert_allclose(np.std(np.asarray(layer.C_reverse[...])), d_state ** -0.5, rtol=0.03)
    lecun = S5(d_model, d_state=d_state, blocks=blocks, C_init="lecun_normal", rngs=nnx.Rngs(0))
    np.testing.assert_allclose(np.std(np.asarray(lecun.C[...])), (d_state * d_model) ** -0.5, rtol=0.03)
    complex_normal = S5(d_model, d_state=d_state, blocks=blocks, C_init="complex_normal", rngs=nnx.Rngs(0))
    np.testing.assert_allclose(np.std(np.asarray(complex_normal.C[...])), 0.5 ** 0.5, rtol=0.03)
    # truncated normals are cut at two standard deviations (jax's variance_scaling truncated_normal)
    draws = initial_draws(np.array([1, 2]), 8, 32, 16, "trunc_standard_normal", False)
    assert np.abs(draws["B"]).max() <= 2 * 32 ** -0.5 / 0.8796 + 1e-9
    np.testing.assert_allclose(np.std(initial_draws(np.array([3]), 64, 4096, 8, "lecun_normal", False)["B"]),
                               4096 ** -0.5, rtol=0.02)
    # optimizer groups: the reference's "ssm" group is SSMParam, C and D are regular parameters
    assert {type(getattr(layer, n)) for n in ("Lambda_re", "Lambda_im", "B", "log_dt")} == {SSMParam}
    assert type(layer.C) is nnx.Param and type(layer.D) is nnx.Param
    assert S5(4, d_state=16, blocks=2, conj_sym=False, rngs=nnx.Rngs(0)).n_states == 16


# ----------------------------------------------------------------------------------------------
# Discretisation
# ----------------------------------------------------------------------------------------------
def test_zoh_matches_scipy_expm_on_a_dense_system():
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        n, h, dt = 5, 3, 0.3
        a = rng.normal(size=(n, n)) - 2.0 * np.eye(n)
        b = rng.normal(size=(n, h))
        lam, v = np.linalg.eig(a)
        vinv = np.linalg.inv(v)
        lam_bar, b_bar = discretize_rows("zoh", jnp.asarray(lam), jnp.asarray(vinv @ b), jnp.full((n,), dt))
        a_bar = v @ np.diag(np.asarray(lam_bar)) @ vinv
        aug = np.zeros((n + h, n + h))
        aug[:n, :n], aug[:n, n:] = a, b
        e = scipy.linalg.expm(aug * dt)  # [[A_bar, B_bar], [0, I]]
        np.testing.assert_allclose(a_bar, e[:n, :n], atol=1e-12)
        np.testing.assert_allclose(v @ np.asarray(b_bar), e[:n, n:], atol=1e-12)
        # bilinear: (I - dt/2 A)^{-1} (I + dt/2 A) and (I - dt/2 A)^{-1} dt B
        lam_bl, b_bl = discretize_rows("bilinear", jnp.asarray(lam), jnp.asarray(vinv @ b), jnp.full((n,), dt))
        inv = np.linalg.inv(np.eye(n) - 0.5 * dt * a)
        np.testing.assert_allclose(v @ np.diag(np.asarray(lam_bl)) @ vinv, inv @ (np.eye(n) + 0.5 * dt * a), atol=1e-12)
        np.testing.assert_allclose(v @ np.asarray(b_bl), inv @ b * dt, atol=1e-12)


def test_zoh_uses_one_timescale_per_state():
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        lam = -rng.uniform(0.1, 1, 4) + 1j * rng.normal(size=4)
        b = rng.normal(size=(4, 2)) + 1j * rng.normal(size=(4, 2))
        dt = np.array([1e-3, 1e-2, 0.1, 1.0])
        lam_bar, b_bar = discretize_rows("zoh", jnp.asarray(lam), jnp.asarray(b), jnp.asarray(dt))
        for p in range(4):  # each state is its own 1-state system: expm([[lam dt, b dt], [0, 0]])
            aug = np.zeros((3, 3), np.complex128)
            aug[0, 0], aug[0, 1:] = lam[p] * dt[p], b[p] * dt[p]
            e = scipy.linalg.expm(aug)
            np.testing.assert_allclose(lam_bar[p], e[0, 0], rtol=1e-12)
            np.testing.assert_allclose(b_bar[p], e[0, 1:], rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# The scan
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reverse", [False, True])
def test_associative_scan_equals_sequential_scan_and_python_loop(reverse):
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        p, length = 6, 37
        lam_bar = 0.95 * np.exp(1j * rng.uniform(-np.pi, np.pi, p)) * rng.uniform(0.5, 1, p)
        bu = rng.normal(size=(2, length, p)) + 1j * rng.normal(size=(2, length, p))
        parallel = np.asarray(scan(jnp.asarray(lam_bar), jnp.asarray(bu), reverse=reverse))

        def cell(x, b):
            x = lam_bar * x + b
            return x, x

        xs_seq = jnp.swapaxes(jax.lax.scan(cell, jnp.zeros((2, p), jnp.complex128), jnp.swapaxes(jnp.asarray(bu), 0, 1),
                                           reverse=reverse)[1], 0, 1)
        loop = _loop_recurrence(lam_bar, bu, reverse=reverse)
        np.testing.assert_allclose(parallel, loop, atol=1e-12)
        np.testing.assert_allclose(np.asarray(xs_seq), loop, atol=1e-12)
    # float32 / complex64, the training dtype, at a longer length
    lam32 = jnp.asarray(lam_bar, jnp.complex64)
    bu_long = rng.normal(size=(1, 2048, p)) + 1j * rng.normal(size=(1, 2048, p))
    err = np.abs(np.asarray(scan(lam32, jnp.asarray(bu_long, jnp.complex64), reverse=reverse))
                 - _loop_recurrence(np.asarray(lam32), bu_long, reverse=reverse))
    assert err.max() < 2e-5  # measured 1e-6: no drift of the float32 tree scan at this length


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("conj_sym", [True, False])
def test_layer_equals_a_naive_loop(bidirectional, conj_sym):
    layer = S5(4, d_state=8, blocks=2, bidirectional=bidirectional, conj_sym=conj_sym, dt_min=0.01, dt_max=0.5,
               rngs=nnx.Rngs(0))
    u = _inputs((2, 29, 4))
    np.testing.assert_allclose(np.asarray(apply(layer, u)), _layer_loop(layer, np.asarray(u)), atol=2e-5, rtol=1e-5)


def test_conjugate_symmetry_equals_the_full_complex_system():
    """2 Re(C~ x) over P/2 states == Re(C x) of the full system of P states (both conjugates kept),
    whose output is real: its imaginary part vanishes."""
    layer = S5(3, d_state=8, dt_min=0.01, dt_max=0.5, rngs=nnx.Rngs(4))
    u = np.asarray(_inputs((2, 25, 3), seed=4), np.float64)
    lam_bar, b_bar = (np.asarray(a, np.complex128) for a in layer.discretized())
    c = np.asarray(layer.C[...], np.float64)
    c = c[..., 0] + 1j * c[..., 1]
    lam_full = np.concatenate([lam_bar, lam_bar.conj()])
    b_full = np.concatenate([b_bar, b_bar.conj()])
    c_full = np.concatenate([c, c.conj()], axis=1)
    y_full = _loop_recurrence(lam_full, u @ b_full.T) @ c_full.T     # complex (batch, L, H)
    assert np.abs(y_full.imag).max() < 1e-10 * np.abs(y_full).max()
    y_full = y_full.real + np.asarray(layer.D[...]) * u
    np.testing.assert_allclose(np.asarray(apply(layer, jnp.asarray(u, jnp.float32))), y_full, atol=2e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Recurrent mode, causality, gradients
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_parallel_mode_equals_recurrent_step_mode(discretization):
    layer = S5(5, d_state=16, blocks=4, discretization=discretization, clip_eigs=True, rngs=nnx.Rngs(2))
    u = _inputs((3, 50, 5), seed=2)
    state = layer.init_state(3)
    step = jax.jit(lambda s, x: layer.step(s, x))
    ys = []
    for t in range(u.shape[1]):
        state, y_t = step(state, u[:, t])
        ys.append(y_t)
    np.testing.assert_allclose(np.stack(ys, axis=1), np.asarray(apply(layer, u)), atol=2e-5, rtol=1e-5)


def test_causal_layer_is_causal_and_bidirectional_is_not():
    u = _inputs((1, 10, 3), seed=5)

    future = np.triu(np.ones((10, 10), bool), k=1)                 # [i, j] with j > i

    def jacobian(layer):  # |d y[i, :] / d u[j, :]| summed over channels: (L, L)
        jac = nnx.jit(lambda m, x: jax.jacrev(lambda z: m(z[None])[0])(x))(layer, u[0])  # (L, H, L, H)
        return np.abs(np.asarray(jac)).sum(axis=(1, 3))

    causal = jacobian(S5(3, d_state=8, rngs=nnx.Rngs(0)))
    assert causal[future].max() == 0.0 and causal[~future].min() > 0
    both = jacobian(S5(3, d_state=8, bidirectional=True, rngs=nnx.Rngs(0)))
    assert both[future].min() > 0


def test_gradients_match_finite_differences():
    with jax.enable_x64(True):
        layer = S5(2, d_state=4, bidirectional=True, dt_min=0.05, dt_max=0.5, rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(layer)
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        leaves, treedef = jax.tree.flatten(params)
        u = jnp.asarray(np.random.default_rng(6).normal(size=(1, 6, 2)))

        @jax.jit
        def loss(leaves, x):
            m = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))
            return jnp.sum(jnp.sin(m(x)))

        check_grads(loss, (leaves, u), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# PTD initialisation and errors
# ----------------------------------------------------------------------------------------------
def _check_eigenbasis_maps(layer, v_block, blocks, seed=0):
    """B~ = V^{-1} B and C~ = C V for the draws of the layer's seed: 2 Re(V_h B~) == B (real B)."""
    draws = initial_draws(seed_from_key(nnx.Rngs(seed).params()), layer.d_model, layer.d_state, layer.n_states,
                          layer.C_init, layer.bidirectional)
    v_h = scipy.linalg.block_diag(*([v_block] * blocks))           # (P, P/2)
    b_tilde = np.asarray(layer.B[...], np.float64)
    np.testing.assert_allclose(2 * (v_h @ (b_tilde[..., 0] + 1j * b_tilde[..., 1])).real, draws["B"], atol=1e-5)
    c_tilde = np.asarray(layer.C[...], np.float64)
    np.testing.assert_allclose(c_tilde[..., 0] + 1j * c_tilde[..., 1],
                               (draws["C"][..., 0] + 1j * draws["C"][..., 1]) @ v_h, atol=1e-6)


def test_hippo_initialisation_maps_b_and_c_into_the_eigenbasis():
    layer = S5(3, d_state=8, blocks=2, rngs=nnx.Rngs(0))
    v_half = dplr("legs", 4, conj_sym=True, B_clip=None).V        # (4, 2): S V = V diag(Lambda), Im < 0
    s = _hippo_legs_loops(4) + np.outer(np.sqrt(np.arange(4) + 0.5), np.sqrt(np.arange(4) + 0.5))
    lam = np.asarray(layer.Lambda_re[...])[:2] + 1j * np.asarray(layer.Lambda_im[...])[:2]
    np.testing.assert_allclose(s @ v_half, v_half * lam, atol=1e-5)  # the layer's eigenpairs of S
    _check_eigenbasis_maps(layer, v_half, blocks=2)


def test_ptd_initialisation():
    layer = S5(4, d_state=8, blocks=2, init="ptd", rngs=nnx.Rngs(0))
    lam_ptd, v_ptd, _ = ptd_init(4)
    lam = np.asarray(layer.Lambda_re[...]) + 1j * np.asarray(layer.Lambda_im[...])
    np.testing.assert_allclose(lam, np.tile(lam_ptd[:2], 2), rtol=1e-6)  # the kept half, Im < 0, per block
    assert np.all(lam.imag < 0)
    _check_eigenbasis_maps(layer, v_ptd[:, :2], blocks=2)
    u = _inputs((2, 12, 4))
    y = np.asarray(apply(layer, u))
    np.testing.assert_allclose(y, _layer_loop(layer, np.asarray(u)), atol=2e-5, rtol=1e-5)
    assert np.all(np.asarray(layer.Lambda_re[...]) < 0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(d_state=10, blocks=3), "multiple of blocks"),
    (dict(d_state=6, blocks=2), "must be even"),
    (dict(dt_min=0.1, dt_max=0.01), "dt_min"),
    (dict(init="legs"), "init"),
    (dict(C_init="zeros"), "C_init"),
    (dict(discretization="euler"), "discretization"),
])
def test_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        S5(4, **kwargs, rngs=nnx.Rngs(0))


def test_bad_input_and_bidirectional_step_are_clear_errors():
    layer = S5(4, d_state=8, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(batch, length, d_model=4\)"):
        layer(jnp.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match="no recurrent step"):
        bi = S5(4, d_state=8, bidirectional=True, rngs=nnx.Rngs(0))
        bi.step(bi.init_state(1), jnp.zeros((1, 4)))
