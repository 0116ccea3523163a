"""Fourier neural operator in 1, 2 and 3 spatial dimensions.

Li, Kovachki, Azizzadenesheli, Liu, Bhattacharya, Stuart, Anandkumar, "Fourier Neural Operator for
Parametric Partial Differential Equations", ICLR 2021, arXiv:2010.08895, eq. (2)-(4):

    v_0 = P(a),   v_{t+1} = sigma( W_t v_t + K_t v_t ),   u = Q(v_T),

with P a pointwise lifting, K_t the Fourier layer of :class:`operators.spectral.SpectralConv`,
W_t a pointwise linear map with bias, sigma = GELU (not applied after the last layer, as in the
reference code ``fourier_2d.py``) and Q a two-layer pointwise projection.

Layout is channels-last: ``(batch, *spatial, channels)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from operators.spectral import SpectralConv, check_modes_fit, spatial_axes_str

__all__ = ["FNO", "gelu", "grid_coordinates", "pad_cells"]

_SQRT_HALF = 0.7071067811865476  # 1 / sqrt(2)


def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU ``x Phi(x) = x (1 + erf(x / sqrt 2)) / 2`` (Hendrycks & Gimpel 2016), computed as
    ``torch.nn.functional.gelu`` of the reference code does.

    The same function as ``jax.nn.gelu(x, approximate=False)`` (which evaluates
    ``x erfc(-x / sqrt 2) / 2``; the two differ by float32 round-off, below 1e-6 in absolute
    value). XLA:CPU's ``erfc`` and its derivative are the expensive ones: in the FNO projection
    ``Linear(32, 128) -> GELU -> Linear(128, 1)`` on batch 16 x 64 x 64, forward plus backward took
    150 ms of CPU time with ``erfc`` and 49 ms with ``erf`` (2 cores, tuned allocator).
    """
    return 0.5 * x * (1.0 + jax.lax.erf(x * jnp.asarray(_SQRT_HALF, x.dtype)))


def grid_coordinates(spatial_shape: Sequence[int], dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """Nodal coordinates ``linspace(0, 1, n)`` per axis, stacked last: ``(*spatial, d)``."""
    axes_1d = [jnp.linspace(0.0, 1.0, int(n), dtype=dtype) for n in spatial_shape]
    mesh = jnp.meshgrid(*axes_1d, indexing="ij")  # d arrays of shape (*spatial,)
    return jnp.stack(mesh, axis=-1)  # (*spatial, d)


def pad_cells(padding: float, n: int) -> int:
    """Zero cells appended to an axis of ``n`` points: ``ceil(padding * n)`` (0.1 at n=85 -> 9)."""
    # The small slack keeps e.g. 0.25 * 16 from becoming 5 through rounding noise.
    return int(math.ceil(padding * n - 1e-9)) if padding > 0 else 0


class FNO(nnx.Module):
    """Fourier neural operator of Li et al. (2021), as ``FNO1d/2d/3d`` of the reference code.

    Forward pass on ``a: (batch, *spatial, in_channels)`` with d = len(modes) spatial axes:

    1. if ``use_grid``: append d coordinate channels ``linspace(0, 1, n)`` per axis;
    2. lifting ``fc0``: Linear(in_channels (+ d), width);
    3. if ``padding > 0``: append ``ceil(padding * n)`` zero cells at the END of every spatial
       axis (the reference pads a fixed 9 cells, ``F.pad(x, [0, 9, 0, 9])``; a fraction keeps the
       padded physical length fixed across resolutions, e.g. ``padding=0.1`` at n=85 gives 9);
    4. ``n_layers`` blocks ``v <- SpectralConv(v) + W(v)``, exact GELU (:func:`gelu`) after all but the last;
    5. crop the padding; projection ``fc1``: Linear(width, projection_channels), GELU,
       ``fc2``: Linear(projection_channels, out_channels).

    Returns ``(batch, *spatial, out_channels)``.

    ``batch_norm``: BatchNorm after every block's sum (before the activation), as the paper-era code
    of the Navier-Stokes experiments (torch's momentum 0.1, i.e. ``momentum=0.9`` here, eps 1e-5).

    ``impl`` (``"auto"`` | ``"fft"`` | ``"dft"``) and ``compute_dtype`` (``None`` | ``"bfloat16"``)
    choose how the spectral convolutions are computed (:class:`operators.spectral.SpectralConv`):
    the same function and parameters either way.

    Parameter count (complex counted as two reals), 2-D Darcy config ``modes=(12, 12), width=32``:
    2,368,001; 1-D Burgers config ``modes=(16,), width=64``: 549,569; the Navier-Stokes models of the
    paper (width 20, 10 input snapshots, ``batch_norm=True``): FNO-2D ``modes=(8, 8)`` 414,517 and
    FNO-3D ``modes=(8, 8, 8)`` 6,558,537.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes: Sequence[int],
        width: int,
        n_layers: int = 4,
        projection_channels: int = 128,
        use_grid: bool = True,
        padding: float = 0.0,
        impl: str = "auto",
        compute_dtype: Optional[str] = None,
        batch_norm: bool = False,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        modes = tuple(int(m) for m in modes)
        if len(modes) not in (1, 2, 3):
            raise ValueError(f"FNO supports 1, 2 or 3 spatial axes; got modes={modes}")
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1; got {n_layers}")
        if padding < 0:
            raise ValueError(f"padding is a non-negative fraction of the grid; got {padding}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.modes = modes
        self.width = int(width)
        self.n_layers = int(n_layers)
        self.use_grid = bool(use_grid)
        self.padding = float(padding)
        d = len(modes)
        lift_in = in_channels + (d if use_grid else 0)
        self.fc0 = nnx.Linear(lift_in, width, rngs=rngs)
        self.spectral = nnx.List(
            [SpectralConv(width, width, modes, impl=impl, compute_dtype=compute_dtype, rngs=rngs)
             for _ in range(n_layers)]
        )
        self.pointwise = nnx.List([nnx.Linear(width, width, rngs=rngs) for _ in range(n_layers)])
        # The paper-era scripts (torch 1.6: fourier_3d.py, fourier_2d_time.py) normalise every block's
        # sum with BatchNorm (bn0..bn3, 2 * width parameters each); the 2022 scripts declare the layers
        # but do not apply them. Their parameters are in the paper's counts (414,517 / 6,558,537).
        self.batch_norm = bool(batch_norm)
        self.norms = nnx.List([nnx.BatchNorm(width, momentum=0.9, epsilon=1e-5, rngs=rngs)
                               for _ in range(n_layers)]) if batch_norm else None
        self.fc1 = nnx.Linear(width, projection_channels, rngs=rngs)
        self.fc2 = nnx.Linear(projection_channels, out_channels, rngs=rngs)

    def _check_input(self, a: jax.Array) -> None:
        d = len(self.modes)
        if a.ndim != d + 2:
            raise ValueError(
                f"FNO input must be (batch, {spatial_axes_str(d)}, in_channels), i.e. rank {d + 2}, for "
                f"modes={self.modes}; got shape {tuple(a.shape)} (rank {a.ndim}). If the data has "
                f"{a.ndim - 2} spatial axes, give one mode count per axis (e.g. modes={[16] * max(a.ndim - 2, 1)}, "
                f"model.modes in a config); otherwise add the missing batch or channel axis (a[..., None] "
                f"for a single channel)"
            )
        if a.shape[-1] != self.in_channels:
            raise ValueError(
                f"FNO expects in_channels={self.in_channels} in the last axis (channels-last); got "
                f"shape {tuple(a.shape)}; do not include grid coordinates, use_grid adds them"
            )
        spatial = a.shape[1:-1]
        padded = tuple(n + pad_cells(self.padding, n) for n in spatial)
        what = f"padded grid (padding={self.padding})" if self.padding > 0 else "grid"
        check_modes_fit(self.modes, padded, what=what)

    def __call__(self, a: jax.Array) -> jax.Array:
        """``a``: ``(batch, *spatial, in_channels)`` -> ``(batch, *spatial, out_channels)``."""
        self._check_input(a)
        batch, spatial = a.shape[0], tuple(a.shape[1:-1])
        d = len(spatial)
        if self.use_grid:
            grid = grid_coordinates(spatial, dtype=a.dtype)  # (*spatial, d)
            grid = jnp.broadcast_to(grid, (batch, *spatial, d))  # (batch, *spatial, d)
            a = jnp.concatenate([a, grid], axis=-1)  # (batch, *spatial, in_channels + d)
        v = self.fc0(a)  # (batch, *spatial, width)

        pads = tuple(pad_cells(self.padding, n) for n in spatial)
        if any(pads):
            # (batch, *[n + pad], width): zeros appended at the end of every spatial axis
            v = jnp.pad(v, ((0, 0), *((0, p) for p in pads), (0, 0)))

        for i, (spectral, pointwise) in enumerate(zip(self.spectral, self.pointwise)):
            v = spectral(v) + pointwise(v)  # (batch, *padded spatial, width)
            if self.norms is not None:
                v = self.norms[i](v)  # batch statistics in train mode, running averages in eval mode
            if i < self.n_layers - 1:
                v = gelu(v)

        if any(pads):
            v = v[(slice(None), *(slice(0, n) for n in spatial), slice(None))]  # (batch, *spatial, width)
        v = gelu(self.fc1(v))  # (batch, *spatial, projection_channels)
        return self.fc2(v)  # (batch, *spatial, out_channels)
