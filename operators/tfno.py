"""Tensorized FNO (TFNO): the Fourier layer's weight as a Tucker decomposition.

Kossaifi, Kovachki, Azizzadenesheli, Anandkumar, "Multi-Grid Tensorized Fourier Neural Operator for
High-Resolution PDEs", TMLR 2024 (arXiv 2310.00120); ``neuralop.models.TFNO`` =
``FNO(factorization="tucker", rank=0.1)`` of neuraloperator/neuraloperator (``neuralop/models/fno.py:TFNO``).

The kept spectral weight of one layer is one complex tensor of shape
``S = (in, out, 2 m_1, .., 2 m_{d-1}, m_d)`` (both signs of the frequency on every axis but the
real-FFT one: rows ``[0, m)`` are frequencies ``0..m-1``, rows ``[m, 2m)`` are ``-m..-1``), written

    W[i, o, k_1, .., k_d] = sum_r G[r_0, r_1, .., r_{d+1}] U_in[i, r_0] U_out[o, r_1] U_1[k_1, r_2] .. U_d[k_d, r_{d+1}]

with a core G of ranks R = (r_0, .., r_{d+1}) and one factor matrix per mode (complex). It holds
``prod R + sum_j S_j R_j`` numbers instead of ``prod S``. ``implementation="reconstructed"`` builds W
and applies the dense layer of :func:`operators.spectral.spectral_conv`; ``"factorized"`` contracts
the kept Fourier coefficients with U_in, the core, the mode factors and U_out one after the other,
never forming W.

Rank: an int per mode, or a fraction ``rho`` of the dense size (``rank=0.1`` in neuralop). A fraction
is turned into ranks as tensorly's ``validate_tucker_rank``: the same fraction x of every mode,
``R_j = round(x S_j)`` (at least 1), with x solving ``prod_j (x S_j) + sum_j x S_j^2 = rho prod S``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from operators.fno import FNO
from operators.spectral import as_complex, as_real, check_modes_fit, corner_slices, spectral_conv

__all__ = ["TFNO", "TuckerSpectralConv", "tucker_ranks", "tucker_to_dense", "tucker_from_dense",
           "dense_to_corners", "corners_to_dense"]

_LETTERS = "xyz"


def tucker_ranks(shape: Sequence[int], rank: float | Sequence[int]) -> tuple[int, ...]:
    """Tucker ranks for a tensor of ``shape`` from per-mode ranks or a fraction of its size."""
    shape = tuple(int(s) for s in shape)
    if isinstance(rank, (list, tuple)):
        ranks = tuple(int(r) for r in rank)
        if len(ranks) != len(shape) or any(not 1 <= r <= s for r, s in zip(ranks, shape)):
            raise ValueError(f"per-mode Tucker ranks must be {len(shape)} integers with 1 <= rank <= size for "
                             f"the weight of shape {shape} (in, out, modes...); got {list(ranks)}")
        return ranks
    rho = float(rank)
    if not rho > 0:
        raise ValueError(f"a Tucker rank fraction must be > 0 (e.g. 0.1, neuralop's TFNO); got {rank}")
    size, squares = math.prod(shape), sum(s * s for s in shape)

    def params(x: float) -> float:  # Tucker size as a function of the common fraction x
        return math.prod(x * s for s in shape) + x * squares

    lo, hi = 0.0, 1.0
    while params(hi) < rho * size:  # rho >= 1 can ask for more than full rank; clipped below
        hi *= 2
    for _ in range(100):  # params is increasing in x: bisection
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if params(mid) < rho * size else (lo, mid)
    return tuple(min(max(int(round(hi * s)), 1), s) for s in shape)


def tucker_to_dense(core: jax.Array, factors: Sequence[jax.Array]) -> jax.Array:
    """``G x_0 U_0 x_1 U_1 ...``: the full tensor ``(S_0, S_1, ..)`` from ``core (R_0, ..)`` and
    ``factors[j] (S_j, R_j)``."""
    out = core
    for j, u in enumerate(factors):
        out = jnp.moveaxis(jnp.tensordot(u, out, axes=([1], [j])), 0, j)  # mode j: R_j -> S_j
    return out


def tucker_from_dense(weight: jax.Array, ranks: Sequence[int]) -> tuple[jax.Array, list[jax.Array]]:
    """Truncated higher-order SVD (De Lathauwer et al. 2000): factors = leading left singular vectors
    of each unfolding, core = ``W x_j U_j^H``. Exact (up to round-off) when every rank equals its size."""
    factors = []
    for j, r in enumerate(ranks):
        unfolding = jnp.moveaxis(weight, j, 0).reshape(weight.shape[j], -1)  # (S_j, prod of the others)
        u, _, _ = jnp.linalg.svd(unfolding, full_matrices=False)
        factors.append(u[:, :r])  # (S_j, R_j), orthonormal columns
    core = weight
    for j, u in enumerate(factors):
        core = jnp.moveaxis(jnp.tensordot(u.conj().T, core, axes=([1], [j])), 0, j)
    return core, factors


def _corner_index(c: int, modes: Sequence[int]) -> tuple[slice, ...]:
    """Index of corner ``c`` in a dense ``(in, out, 2 m_1, .., 2 m_{d-1}, m_d)`` weight: rows ``[m, 2m)``
    on non-last axis j when bit j of c is set, ``[0, m)`` otherwise; the last axis whole."""
    index = [slice(None), slice(None)]
    for j, m in enumerate(modes[:-1]):
        m = int(m)
        index.append(slice(m, 2 * m) if (c >> j) & 1 else slice(0, m))
    return (*index, slice(None))


def dense_to_corners(weight: jax.Array, modes: Sequence[int]) -> jax.Array:
    """``(in, out, 2 m_1, .., m_d)`` -> the corner blocks ``(2^(d-1), in, out, m_1, .., m_d)`` of
    :func:`operators.spectral.spectral_conv` (corner c takes rows ``[m, 2m)`` on axis j when bit j is set)."""
    return jnp.stack([weight[_corner_index(c, modes)] for c in range(2 ** (len(modes) - 1))])


def corners_to_dense(corners: jax.Array, modes: Sequence[int]) -> jax.Array:
    """Inverse of :func:`dense_to_corners`."""
    out = jnp.zeros((*corners.shape[1:3], *(2 * m for m in modes[:-1]), modes[-1]), corners.dtype)
    for c in range(2 ** (len(modes) - 1)):
        out = out.at[_corner_index(c, modes)].set(corners[c])
    return out


def tucker_spectral_conv(x: jax.Array, core: jax.Array, factors: Sequence[jax.Array], modes: Sequence[int]
                         ) -> jax.Array:
    """The Fourier layer with a Tucker weight, contracted factor by factor (no dense weight formed).

    For every kept corner block ``X (b, k.., in)`` of ``rfftn(x)``:
    ``Y = ((X x U_in) x G x U_1[rows of the corner] .. x U_d) x U_out``, then ``irfftn``.
    """
    d = len(modes)
    spatial = tuple(int(n) for n in x.shape[1:-1])
    u_in, u_out, mode_factors = factors[0], factors[1], factors[2:]
    ks, rs = _LETTERS[:d], "pqr"[:d]
    axes = tuple(range(1, d + 1))
    x_ft = jnp.fft.rfftn(x, axes=axes)  # (b, n1, .., n_d // 2 + 1, in)
    out_ft = jnp.zeros((x.shape[0], *spatial[:-1], spatial[-1] // 2 + 1, u_out.shape[0]),
                       jnp.result_type(x_ft.dtype, core.dtype))
    for c, sl in enumerate(corner_slices(modes, spatial)):
        index = (slice(None), *sl, slice(None))
        z = jnp.einsum(f"b{ks}i,ia->b{ks}a", x_ft[index], u_in)  # (b, m.., R_in)
        z = jnp.einsum(f"b{ks}a,ae{rs}->b{ks}e{rs}", z, core)  # (b, m.., R_out, R_1..R_d)
        for j in range(d):
            m = int(modes[j])
            rows = mode_factors[j][m:2 * m] if (j < d - 1 and (c >> j) & 1) else mode_factors[j][:m]
            rest = rs[j + 1:]
            # contract frequency axis k_j with its rank axis r_j: (b, m.., R_out, R_{j+1}..)
            z = jnp.einsum(f"b{ks}e{rs[j:]},{ks[j]}{rs[j]}->b{ks}e{rest}", z, rows)
        block = jnp.einsum(f"b{ks}e,oe->b{ks}o", z, u_out)  # (b, m.., out)
        out_ft = out_ft.at[index].set(block)
    return jnp.fft.irfftn(out_ft, s=spatial, axes=axes)  # (b, *spatial, out)


class TuckerSpectralConv(nnx.Module):
    """Fourier layer ``F^{-1}(R . F v)`` with R in Tucker form (see the module docstring); no bias.

    Parameters: ``core`` ``(*ranks, 2)`` and ``factor_<j>`` ``(S_j, R_j, 2)`` (complex as (real, imag)).
    Initialised with orthonormal random factors and a Gaussian core scaled so that W's entries have
    the magnitude of the dense layer's init, ``1 / (in * out)``.
    """

    def __init__(self, in_channels: int, out_channels: int, modes: Sequence[int], rank: float | Sequence[int] = 0.1,
                 implementation: str = "factorized", *, rngs: nnx.Rngs) -> None:
        if implementation not in ("factorized", "reconstructed"):
            raise ValueError(f"implementation must be 'factorized' or 'reconstructed'; got {implementation!r}")
        self.modes = tuple(int(m) for m in modes)
        if len(self.modes) not in (1, 2, 3) or min(self.modes) < 1:
            raise ValueError(f"TuckerSpectralConv needs 1, 2 or 3 spatial axes with modes >= 1; got {self.modes}")
        self.implementation = implementation
        self.shape = (int(in_channels), int(out_channels), *(2 * m for m in self.modes[:-1]), self.modes[-1])
        self.ranks = tucker_ranks(self.shape, rank)
        keys = jax.random.split(rngs.params(), len(self.shape) + 1)
        factors = []
        for key, s, r in zip(keys[1:], self.shape, self.ranks):
            q, _ = jnp.linalg.qr(jax.random.normal(key, (s, r)))  # (S_j, R_j) orthonormal columns
            factors.append(jnp.stack([q, jnp.zeros_like(q)], axis=-1))  # real factors at init
        # With orthonormal factors, var(W) = var(G) prod R / prod S; aim at std(W) = 1 / (in * out).
        std = 1.0 / (in_channels * out_channels) * math.sqrt(math.prod(self.shape) / math.prod(self.ranks) / 2)
        self.core = nnx.Param(std * jax.random.normal(keys[0], (*self.ranks, 2)))
        self.factors = nnx.List([nnx.Param(f) for f in factors])

    @classmethod
    def from_dense(cls, weight: jax.Array, modes: Sequence[int], rank: float | Sequence[int],
                   implementation: str = "factorized") -> "TuckerSpectralConv":
        """The Tucker layer of a dense corner weight ``(2^(d-1), in, out, *modes)`` (complex) by HOSVD."""
        layer = cls(weight.shape[1], weight.shape[2], modes, rank, implementation, rngs=nnx.Rngs(0))
        core, factors = tucker_from_dense(corners_to_dense(weight, layer.modes), layer.ranks)
        layer.core = nnx.Param(as_real(core))
        layer.factors = nnx.List([nnx.Param(as_real(u)) for u in factors])
        return layer

    def complex_parts(self) -> tuple[jax.Array, list[jax.Array]]:
        return as_complex(self.core[...]), [as_complex(f[...]) for f in self.factors]

    def dense_weight(self) -> jax.Array:
        """The reconstructed corner weight ``(2^(d-1), in, out, *modes)`` (complex)."""
        core, factors = self.complex_parts()
        return dense_to_corners(tucker_to_dense(core, factors), self.modes)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x``: ``(batch, *spatial, in_channels)`` -> ``(batch, *spatial, out_channels)``."""
        if self.implementation == "reconstructed":
            return spectral_conv(x, self.dense_weight(), self.modes)
        if x.ndim != len(self.modes) + 2 or x.shape[-1] != self.shape[0]:
            raise ValueError(f"x must be (batch, *{len(self.modes)} spatial axes, in_channels={self.shape[0]}); "
                             f"got shape {tuple(x.shape)}")
        check_modes_fit(self.modes, x.shape[1:-1])
        core, factors = self.complex_parts()
        return tucker_spectral_conv(x, core, factors, self.modes)


class TFNO(FNO):
    """FNO (:class:`operators.fno.FNO`, same lifting, padding, layers and projection) whose Fourier
    layers are :class:`TuckerSpectralConv`.

    Args (besides FNO's):
      rank: Tucker rank of every layer's weight ``(width, width, 2 m_1, .., m_d)``: a fraction of its
        size (neuralop's TFNO: 0.1) or one int per mode.
      implementation: "factorized" (contract factor by factor) or "reconstructed" (build the dense
        weight, then the dense layer).

    Parameter counts, Darcy setting (modes 12 x 12, width 32, 4 layers; FNO 2,368,001):
    rank 0.1: 256,961 (Tucker ranks 18, 18, 13, 7 of the shape 32, 32, 24, 12); 0.5: 1,193,729
    (27, 27, 20, 10); 1.0: 2,390,145 (the fraction rounds to full rank, where core plus factors hold
    more numbers than the dense weight).
    """

    def __init__(self, in_channels: int, out_channels: int, modes: Sequence[int], width: int, n_layers: int = 4,
                 projection_channels: int = 128, use_grid: bool = True, padding: float = 0.0,
                 rank: float | list[int] = 0.1, implementation: str = "factorized", *, rngs: nnx.Rngs) -> None:
        super().__init__(in_channels, out_channels, modes, width, n_layers, projection_channels, use_grid, padding,
                         rngs=rngs)
        self.rank = list(rank) if isinstance(rank, (list, tuple)) else float(rank)
        self.spectral = nnx.List([TuckerSpectralConv(width, width, self.modes, self.rank, implementation, rngs=rngs)
                                  for _ in range(n_layers)])
