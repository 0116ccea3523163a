"""FNO: parameter counts of the paper's configs, resolution invariance, input checks, jit."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from operators import FNO
from operators.fno import grid_coordinates, pad_cells
from test_unet import random_model


def _n_params(model: nnx.Module) -> int:
    return sum(int(leaf.size) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))


@partial(jax.jit, static_argnums=0)
def _apply(graphdef, state, x):
    return nnx.merge(graphdef, state)(x)


def _jit_apply(model: nnx.Module, x) -> jax.Array:
    """``model(x)`` in one compiled call, one compilation per model and shape (no update of the model)."""
    graphdef, state = nnx.split(model)
    return _apply(graphdef, state, x)


def _abstract_apply(model: nnx.Module, x) -> jax.ShapeDtypeStruct:
    """The shape of ``model(x)`` by tracing only: raises the input errors a real call would."""
    return nnx.eval_shape(lambda m, x: m(x), model, x)


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        # Darcy FNO-2D of the paper / fourier_2d.py.
        (dict(in_channels=1, out_channels=1, modes=(12, 12), width=32), 2_368_001),
        # Burgers FNO-1D / fourier_1d.py.
        (dict(in_channels=1, out_channels=1, modes=(16,), width=64), 549_569),
    ],
)
def test_parameter_count(kwargs, expected):
    model = nnx.eval_shape(  # abstract: shapes only, no initialisation cost
        lambda: FNO(**kwargs, n_layers=4, projection_channels=128, use_grid=True, rngs=nnx.Rngs(0))
    )
    assert _n_params(model) == expected


def test_pad_cells_fraction():
    assert pad_cells(0.1, 85) == 9  # the reference's fixed 9 cells at 85 x 85
    assert pad_cells(0.25, 16) == 4 and pad_cells(0.25, 32) == 8
    assert pad_cells(0.0, 64) == 0


def _band_limited(t: np.ndarray) -> np.ndarray:
    """Periodic trig polynomial (frequencies <= 3) on a (batch=1, n, n, 1) grid of points t."""
    x, y = np.meshgrid(t, t, indexing="ij")
    u = (
        np.sin(2 * np.pi * x) * np.cos(2 * np.pi * y)
        + 0.5 * np.cos(2 * np.pi * (x + 2 * y))
        + 0.3 * np.sin(6 * np.pi * x)
    )
    return u[None, ..., None]  # (1, n, n, 1)


def _coarse_vs_fine(model: FNO, n: int, nodal: bool) -> float:
    """Relative L2 gap between the output at n points and the output at the finer grid subsampled.

    Periodic grid: t_j = j / n and j / (2n), fine[::2] are the coarse points. Nodal grid:
    t = linspace(0, 1, n) and linspace(0, 1, 2n - 1), fine[::2] are again the coarse points.
    """
    fine_n = 2 * n - 1 if nodal else 2 * n
    grid = (lambda m: np.linspace(0.0, 1.0, m)) if nodal else (lambda m: np.arange(m) / m)
    coarse = np.asarray(_jit_apply(model, _band_limited(grid(n))))  # float32 unless under enable_x64
    fine = np.asarray(_jit_apply(model, _band_limited(grid(fine_n))))[:, ::2, ::2]  # (1, n, n, 1)
    return float(np.linalg.norm(coarse - fine) / np.linalg.norm(coarse))


def test_resolution_invariance_band_limited():
    """No grid channel, no padding: only the aliasing of the GELU harmonics separates n and 2n.

    Measured (modes 4, width 8): float64 gap 3e-4 at n=16, 2e-7 at n=32, 9e-14 at n=64 (spectral
    convergence); float32 gap 4e-7 at n=32 (round-off).
    """
    model = FNO(1, 1, (4, 4), 8, use_grid=False, rngs=nnx.Rngs(0))
    assert _coarse_vs_fine(model, 32, nodal=False) < 2e-6
    with jax.enable_x64(True):
        assert _coarse_vs_fine(model, 64, nodal=False) < 1e-11


def test_resolution_invariance_with_grid_channel_is_first_order():
    """With the linspace(0, 1, n) coordinate channels the lifted field contains a non-periodic ramp,
    whose DFT differs between resolutions by O(1/n): the gap halves when n doubles.

    Measured (nodal grids n / 2n-1, modes 4, width 8): 2.8e-3 at n=32, 1.4e-3 at n=64.
    """
    model = FNO(1, 1, (4, 4), 8, use_grid=True, rngs=nnx.Rngs(0))
    e32, e64 = _coarse_vs_fine(model, 32, nodal=True), _coarse_vs_fine(model, 64, nodal=True)
    assert e32 < 1e-2
    assert 0.4 < e64 / e32 < 0.6


@pytest.mark.parametrize("use_grid,nodal,measured", [(False, False, 3.5e-3), (True, True, 1.8e-3)])
def test_resolution_invariance_with_fractional_padding(use_grid, nodal, measured):
    """padding=0.25 pads 4 cells at n=16... 8 at n=32: the same physical length at both resolutions.
    Zero padding makes the field discontinuous, so the gap is O(1/n) (measured at n=32: 3.5e-3
    periodic without grid, 1.8e-3 nodal with grid)."""
    model = FNO(1, 1, (4, 4), 8, use_grid=use_grid, padding=0.25, rngs=nnx.Rngs(0))
    err = _coarse_vs_fine(model, 32, nodal=nodal)
    assert err < 5e-2
    assert err < 3 * measured


@pytest.mark.parametrize("modes,spatial", [((5,), (24,)), ((3, 4), (12, 10)), ((2, 2, 3), (6, 5, 8))])
def test_shapes_and_jit_equals_eager(modes, spatial):
    # random parameters: the shapes, and jit == eager, do not depend on them
    model = random_model(lambda: FNO(2, 3, modes, 8, n_layers=2, projection_channels=16, padding=0.1, rngs=nnx.Rngs(0)))
    a = jax.device_put(np.random.default_rng(0).standard_normal((2, *spatial, 2)).astype(np.float32))
    eager = model(a)
    assert eager.shape == (2, *spatial, 3)

    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, a):
        return nnx.merge(graphdef, state)(a)

    np.testing.assert_allclose(forward(state, a), eager, rtol=1e-5, atol=1e-6)


def test_input_errors():
    model = nnx.eval_shape(lambda: FNO(1, 1, (12, 12), 8, n_layers=1, rngs=nnx.Rngs(0)))
    call = lambda m, *shape: _abstract_apply(m, jax.ShapeDtypeStruct(shape, jnp.float32))  # noqa: E731
    assert call(model, 2, 24, 22, 1).shape == (2, 24, 22, 1)
    with pytest.raises(ValueError, match=r"\(batch, n1, n2, in_channels\).*rank 4.*got shape \(32, 32, 1\)"):
        call(model, 32, 32, 1)
    with pytest.raises(ValueError, match=r"rank 4.*got shape \(20, 256, 1\).*1 spatial axes.*modes=\[16\]"):
        call(model, 20, 256, 1)  # 1-D data (Burgers) for a 2-D FNO: the message names the fix
    with pytest.raises(ValueError, match=r"in_channels=1.*got shape \(2, 32, 32, 3\).*use_grid adds them"):
        call(model, 2, 32, 32, 3)
    with pytest.raises(ValueError, match=r"modes=\(12, 12\) needs a grid of at least 24 x 22 points \(got 16 x 16\)"):
        call(model, 2, 16, 16, 1)
    padded = nnx.eval_shape(lambda: FNO(1, 1, (12, 12), 8, n_layers=1, padding=0.1, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"padded grid \(padding=0.1\) of at least 24 x 22 points \(got 18 x 18\)"):
        call(padded, 2, 16, 16, 1)
    with pytest.raises(ValueError, match="1, 2 or 3 spatial axes"):
        FNO(1, 1, (2, 2, 2, 2), 8, rngs=nnx.Rngs(0))


def test_gelu_is_the_exact_gelu():
    """operators.fno.gelu (erf form, as torch) == jax.nn.gelu(approximate=False) (erfc form), values
    and derivative, in float64; and in float32 within round-off of the float64 values."""
    from operators.fno import gelu

    with jax.enable_x64(True):
        x = np.linspace(-8.0, 8.0, 2001)

        @jax.jit
        def values_and_derivatives(x):
            jax_gelu = lambda t: jax.nn.gelu(t, approximate=False)  # noqa: E731
            return gelu(x), jax_gelu(x), jax.vmap(jax.grad(gelu))(x), jax.vmap(jax.grad(jax_gelu))(x)

        ours, exact, d_ours, d_jax = (np.asarray(v) for v in values_and_derivatives(x))
        assert exact.dtype == np.float64
        np.testing.assert_allclose(ours, exact, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(d_ours, d_jax, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(jax.jit(gelu)(x.astype(np.float32)), exact, rtol=0, atol=2e-6)


def test_fno_dft_path_equals_fft_path():
    """The whole FNO (padding, grid channels, 2-D) with impl="dft" and impl="fft": same parameters
    (the switch does not change the parameter tree), same outputs in float64."""
    kwargs = dict(in_channels=1, out_channels=2, modes=(3, 4), width=6, n_layers=2, projection_channels=8,
                  padding=0.2)
    fft = random_model(lambda: FNO(**kwargs, impl="fft", rngs=nnx.Rngs(0)))  # any parameters will do
    dft = nnx.eval_shape(lambda: FNO(**kwargs, impl="dft", rngs=nnx.Rngs(0)))  # its graph; the parameters are fft's
    assert jax.tree.structure(nnx.state(fft, nnx.Param)) == jax.tree.structure(nnx.state(dft, nnx.Param))
    with jax.enable_x64(True):
        a = np.random.default_rng(0).standard_normal((2, 11, 10, 1))
        graphdef, state = nnx.split(fft)
        state = jax.tree.map(lambda p: np.asarray(p, np.float64), state)
        want, got = (np.asarray(jax.jit(lambda s, a, g=g: nnx.merge(g, s)(a))(state, a))
                     for g in (graphdef, nnx.graphdef(dft)))
    assert want.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("modes, expected", [((8, 8), 414_517), ((8, 8, 8), 6_558_537)])
def test_navier_stokes_models_have_the_papers_parameter_counts(modes, expected):
    """FNO paper, Table 3: FNO-2D (recurrent, 10 snapshots in) 414,517 and FNO-3D 6,558,537 parameters.

    Width 20, 4 layers, projection 128, grid channels added, BatchNorm after each layer (the paper-era
    code): 4 * corners * 20 * 20 * prod(modes) * 2 spectral reals + 4,917 (2-D) / 4,937 (3-D) others.
    """
    model = nnx.eval_shape(lambda: FNO(10, 1, modes, 20, batch_norm=True, rngs=nnx.Rngs(0)))  # shapes only
    n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n == expected
    corners = 2 ** (len(modes) - 1)
    spectral = 4 * corners * 400 * int(np.prod(modes)) * 2
    others = (10 + len(modes)) * 20 + 20 + 4 * (420 + 40) + 20 * 128 + 128 + 129
    assert spectral + others == expected


def test_batch_norm_uses_batch_statistics_in_train_mode_and_running_ones_in_eval():
    model = FNO(1, 1, (4, 4), 8, batch_norm=True, rngs=nnx.Rngs(0))
    x = (np.random.default_rng(1).standard_normal((4, 12, 12, 1)) * 3 + 1).astype(np.float32)
    forward = nnx.jit(lambda m, x: m(x))  # updates the running statistics, as an eager call
    model.train()
    y_train = forward(model, x)
    model.eval()
    y_eval = forward(model, x)
    assert not np.allclose(np.asarray(y_train), np.asarray(y_eval))  # running stats moved only 10% of the way
    # the first block's normalised sum has zero mean and unit variance per channel in train mode
    model.train()

    @nnx.jit
    def first_block(model, x):
        v = model.fc0(jnp.concatenate([x, jnp.broadcast_to(grid_coordinates((12, 12)), (4, 12, 12, 2))], -1))
        return model.norms[0](model.spectral[0](v) + model.pointwise[0](v))

    h = np.asarray(first_block(model, x))
    np.testing.assert_allclose(np.asarray(h.mean((0, 1, 2))), 0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(h.var((0, 1, 2))), 1, atol=1e-3)
