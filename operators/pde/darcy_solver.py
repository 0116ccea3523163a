"""Finite-difference solver of the Darcy problem of the FNO benchmark, as ``solve_gwf.m``.

    -div(a(x) grad u(x)) = f(x)  on (0,1)^2,   u = 0 on the boundary.

Reproduces ``solve_gwf.m`` of the Fourier neural operator data generator (Li et al. 2021, ICLR;
github.com/zongyi-li/fourier_neural_operator, data_generation/darcy/solve_gwf.m):

* Nodal scheme (``solve_darcy_nodal``): K x K nodes x_i = i / (K - 1) (h = 1 / (K - 1)), unknowns at
  the (K-2)^2 interior nodes, five-point stencil with arithmetic means of a at the half points,

      h^-2 sum_{nb in N,S,E,W} (a_P + a_nb) / 2 * (u_P - u_nb) = f_P,

  zero Dirichlet values on the boundary nodes.
* Cell-centred geometry (``solve_darcy_cells``): the coefficient is given at the cell centres
  x_c = (2 i + 1) / (2 K), i = 0..K-1 (where GRF.m puts its field); it is interpolated to the nodes
  with a not-a-knot cubic spline (MATLAB ``interp2(..., 'spline')``, which extrapolates to the
  nodes 0 and 1), solved there, and the nodal solution is spline-interpolated back to the cell
  centres.

Array convention: field[i, j] is the value at (x_i, y_j), axis 0 is x and axis 1 is y. The operator is
symmetric under swapping x and y, so this matches MATLAB's (row = y, column = x) layout up to naming.
"""
from __future__ import annotations

import functools

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from operators.pde.spline_interpolation import interpolate_tensor_grid, spline_interpolation_matrix


def nodal_grid(resolution: int) -> np.ndarray:
    """Node coordinates x_i = i / (K - 1), i = 0..K-1, shape (K,)."""
    return np.linspace(0.0, 1.0, resolution)


def cell_centre_grid(resolution: int) -> np.ndarray:
    """Cell-centre coordinates x_i = (2 i + 1) / (2 K), i = 0..K-1, shape (K,)."""
    return (2.0 * np.arange(resolution) + 1.0) / (2.0 * resolution)


def darcy_five_point_matrix(a_nodal: np.ndarray) -> scipy.sparse.csc_array:
    """Sparse matrix of the five-point Darcy operator on the interior nodes, shape (n, n), n = (K-2)^2.

    Row of interior node P = (i, j), i, j = 1..K-2, unknown index (i - 1) * (K - 2) + (j - 1)
    (row-major over the interior block):

        A[P, P]  = (K-1)^2 * sum_nb (a_P + a_nb) / 2,
        A[P, nb] = -(K-1)^2 * (a_P + a_nb) / 2   for interior neighbours nb,

    boundary neighbours contribute only to the diagonal (zero Dirichlet data). Symmetric positive
    definite for a > 0 (solve_gwf.m builds the same matrix block-column by block-column).
    """
    a = np.asarray(a_nodal, dtype=np.float64)
    K = a.shape[0]
    if a.shape != (K, K) or K < 3:
        raise ValueError(f"a_nodal must be a square (K, K) array with K >= 3, got shape {a.shape}")
    n = K - 2
    # Half-point conductances: x-edges between (i, j), (i+1, j); y-edges between (i, j), (i, j+1).
    x_edge = 0.5 * (a[:-1, :] + a[1:, :])  # (K-1, K)
    y_edge = 0.5 * (a[:, :-1] + a[:, 1:])  # (K, K-1)
    diagonal = (
        x_edge[:-1, 1:-1] + x_edge[1:, 1:-1] + y_edge[1:-1, :-1] + y_edge[1:-1, 1:]
    )  # (n, n) over interior nodes
    index = np.arange(n * n).reshape(n, n)
    x_coupling = -x_edge[1:-1, 1:-1]  # interior (i, j)-(i+1, j), i = 1..K-3: (n-1, n)
    y_coupling = -y_edge[1:-1, 1:-1]  # interior (i, j)-(i, j+1), j = 1..K-3: (n, n-1)
    rows = np.concatenate([
        index.ravel(),
        index[:-1, :].ravel(), index[1:, :].ravel(),
        index[:, :-1].ravel(), index[:, 1:].ravel(),
    ])
    cols = np.concatenate([
        index.ravel(),
        index[1:, :].ravel(), index[:-1, :].ravel(),
        index[:, 1:].ravel(), index[:, :-1].ravel(),
    ])
    values = np.concatenate([
        diagonal.ravel(),
        x_coupling.ravel(), x_coupling.ravel(),
        y_coupling.ravel(), y_coupling.ravel(),
    ]) * float(K - 1) ** 2
    return scipy.sparse.csc_array((values, (rows, cols)), shape=(n * n, n * n))


def solve_darcy_nodal(a_nodal: np.ndarray, f: np.ndarray | float = 1.0) -> np.ndarray:
    """Solve -div(a grad u) = f, u = 0 on the boundary, with the five-point scheme on K x K nodes.

    Args:
        a_nodal: (K, K) coefficient at the nodes x_i = i / (K - 1) (axis 0 = x, axis 1 = y), a > 0.
        f: (K, K) right-hand side at the nodes (only interior values are used) or a constant.

    Returns:
        (K, K) float64 nodal solution, exactly zero on the boundary nodes.

    The matrix is ``darcy_five_point_matrix``; the system is solved by sparse LU (SuperLU,
    ``scipy.sparse.linalg.splu``) with a minimum-degree ordering of A + A^T, which on the 2-D
    five-point pattern fills about half as much as the COLAMD default of ``spsolve`` (~1.5x faster
    at K = 421). Second-order accurate for smooth a and u.
    """
    a = np.asarray(a_nodal, dtype=np.float64)
    K = a.shape[0]
    matrix = darcy_five_point_matrix(a)
    rhs = np.broadcast_to(np.asarray(f, dtype=np.float64), (K, K))[1:-1, 1:-1]
    u = np.zeros((K, K))
    factor = scipy.sparse.linalg.splu(matrix, permc_spec="MMD_AT_PLUS_A")
    u[1:-1, 1:-1] = factor.solve(np.ascontiguousarray(rhs).ravel()).reshape(K - 2, K - 2)
    return u


@functools.lru_cache(maxsize=8)
def cell_node_interpolation_matrices(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Not-a-knot spline matrices (cells_to_nodes, nodes_to_cells), each (K, K), read-only.

    cells_to_nodes maps values at x_c = (2 i + 1) / (2 K) to x_n = i / (K - 1) (extrapolating to the
    end nodes 0 and 1); nodes_to_cells maps back. Cached per K: they depend only on the resolution.
    """
    cells, nodes = cell_centre_grid(resolution), nodal_grid(resolution)
    cells_to_nodes = spline_interpolation_matrix(cells, nodes)
    nodes_to_cells = spline_interpolation_matrix(nodes, cells)
    cells_to_nodes.setflags(write=False)
    nodes_to_cells.setflags(write=False)
    return cells_to_nodes, nodes_to_cells


def solve_darcy_cells(a_cells: np.ndarray, f: np.ndarray | float = 1.0) -> np.ndarray:
    """Solve the Darcy problem for a cell-centred coefficient, as solve_gwf.m; result at the cells.

    a_nodes = S a_cells S^T (S: cells -> nodes spline matrix), f likewise if it is an array;
    u_nodes = solve_darcy_nodal(a_nodes, f_nodes); u_cells = T u_nodes T^T (T: nodes -> cells).

    Args:
        a_cells: (K, K) coefficient at the cell centres ((2 i + 1) / (2 K), (2 j + 1) / (2 K)).
        f: (K, K) right-hand side at the cell centres, or a constant (a spline reproduces constants).

    Returns:
        (K, K) float64 solution at the same cell centres and in the same orientation as a_cells
        (u[i, j] and a_cells[i, j] are the same physical point).
    """
    a_cells = np.asarray(a_cells, dtype=np.float64)
    K = a_cells.shape[0]
    if a_cells.shape != (K, K) or K < 4:
        raise ValueError(f"a_cells must be a square (K, K) array with K >= 4, got shape {a_cells.shape}")
    cells_to_nodes, nodes_to_cells = cell_node_interpolation_matrices(K)
    a_nodes = interpolate_tensor_grid(cells_to_nodes, a_cells)
    f = np.asarray(f, dtype=np.float64)
    f_nodes = interpolate_tensor_grid(cells_to_nodes, f) if f.ndim == 2 else f
    u_nodes = solve_darcy_nodal(a_nodes, f_nodes)
    return interpolate_tensor_grid(nodes_to_cells, u_nodes)
