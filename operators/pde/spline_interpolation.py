"""Not-a-knot cubic spline interpolation between 1-D point sets, as a dense linear map.

MATLAB's ``interp2(..., 'spline')`` (used by ``solve_gwf.m`` of the Fourier neural operator data
generator, Li et al. 2021) is the tensor product of 1-D not-a-knot cubic splines (de Boor, "A
Practical Guide to Splines", ch. IV), which also extrapolates with the end polynomial pieces. The
map from data values to evaluated values is linear, so for a tensor grid

    V_to = M @ V_from @ M.T,   M[t, f] = (spline through e_f evaluated at x_to[t]),

with M of shape (n_to, n_from). Not-a-knot splines reproduce cubic polynomials exactly.
"""
from __future__ import annotations

import numpy as np
import scipy.interpolate


def spline_interpolation_matrix(x_from: np.ndarray, x_to: np.ndarray) -> np.ndarray:
    """Matrix M (len(x_to), len(x_from)) with M @ v = not-a-knot cubic spline of (x_from, v) at x_to.

    Points of x_to outside [x_from[0], x_from[-1]] are extrapolated with the end cubic pieces, as
    MATLAB ``spline``/``interp2(..., 'spline')`` does. x_from must be strictly increasing, >= 4 points.
    """
    x_from = np.asarray(x_from, dtype=np.float64)
    x_to = np.asarray(x_to, dtype=np.float64)
    identity = np.eye(x_from.size)
    spline = scipy.interpolate.make_interp_spline(x_from, identity, k=3, axis=0)
    return np.ascontiguousarray(spline(x_to, extrapolate=True))


def interpolate_tensor_grid(matrix: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Apply a 1-D interpolation matrix along both of the last two axes: (..., n, n) -> (..., m, m).

    out = M @ values @ M.T (separable tensor-product interpolation, same map on both axes).
    """
    return matrix @ values @ matrix.T
