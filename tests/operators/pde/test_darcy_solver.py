"""Oracle tests of the five-point Darcy solver and the cell-centred (solve_gwf.m) pipeline."""
import numpy as np
import pytest
import scipy.interpolate

from operators.pde.darcy_solver import (
    cell_centre_grid,
    cell_node_interpolation_matrices,
    darcy_five_point_matrix,
    nodal_grid,
    solve_darcy_cells,
    solve_darcy_nodal,
)
from operators.pde.spline_interpolation import spline_interpolation_matrix


def poisson_unit_square_series(x, y, max_mode=2001):
    """-Lap u = 1, u = 0 on the boundary: u = sum_{m,n odd} 16 sin(m pi x) sin(n pi y) / (pi^4 m n (m^2+n^2)).

    Truncated at m, n <= 2001; the truncation error at the grid points is ~3e-10 (checked against
    4001 modes), four orders below the discretisation error at K = 129.
    """
    modes = np.arange(1, max_mode + 1, 2, dtype=np.float64)
    sin_x = np.sin(np.pi * np.outer(x, modes))
    sin_y = np.sin(np.pi * np.outer(y, modes))
    coefficients = 16.0 / (np.pi**4 * np.outer(modes, modes) * (modes[:, None] ** 2 + modes[None, :] ** 2))
    return sin_x @ coefficients @ sin_y.T


# Manufactured problem: u = sin(pi x) sin(2 pi y), a = 1 + 0.5 sin(2 pi x) cos(pi y) (not symmetric in
# x <-> y, so a transposed solver fails), f = -div(a grad u) = -(a_x u_x + a_y u_y) + 5 pi^2 a u.
def manufactured_u(x, y):
    return np.sin(np.pi * x) * np.sin(2 * np.pi * y)


def manufactured_a(x, y):
    return 1.0 + 0.5 * np.sin(2 * np.pi * x) * np.cos(np.pi * y)


def manufactured_f(x, y):
    pi = np.pi
    u = manufactured_u(x, y)
    u_x = pi * np.cos(pi * x) * np.sin(2 * pi * y)
    u_y = 2 * pi * np.sin(pi * x) * np.cos(2 * pi * y)
    a_x = pi * np.cos(2 * pi * x) * np.cos(pi * y)
    a_y = -0.5 * pi * np.sin(2 * pi * x) * np.sin(pi * y)
    return -(a_x * u_x + a_y * u_y) + 5 * pi**2 * manufactured_a(x, y) * u


def test_constant_coefficient_converges_at_second_order_to_series_solution():
    errors = []
    for K in (17, 33, 65, 129):
        x = nodal_grid(K)
        u = solve_darcy_nodal(np.ones((K, K)), 1.0)
        errors.append(np.abs(u - poisson_unit_square_series(x, x)).max())
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(orders > 1.8), (errors, orders)
    assert errors[-1] < 1e-5


def test_manufactured_solution_error_falls_fourfold_per_halving():
    errors = []
    for K in (33, 65, 129):
        x, y = np.meshgrid(nodal_grid(K), nodal_grid(K), indexing="ij")
        u = solve_darcy_nodal(manufactured_a(x, y), manufactured_f(x, y))
        assert np.all(u[[0, -1], :] == 0) and np.all(u[:, [0, -1]] == 0)
        errors.append(np.abs(u - manufactured_u(x, y)).max())
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    assert np.all((ratios > 3.5) & (ratios < 4.5)), (errors, ratios)


def test_matrix_matches_loop_built_stencil_of_solve_gwf():
    """Reference: the stencil written out node by node, with arithmetic means at half points."""
    K = 7
    a = np.random.default_rng(0).uniform(1.0, 5.0, (K, K))
    n = K - 2
    reference = np.zeros((n * n, n * n))
    for i in range(1, K - 1):
        for j in range(1, K - 1):
            row = (i - 1) * n + (j - 1)
            for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                weight = (a[i, j] + a[i + di, j + dj]) / 2
                reference[row, row] += weight
                if 1 <= i + di <= K - 2 and 1 <= j + dj <= K - 2:
                    reference[row, (i + di - 1) * n + (j + dj - 1)] -= weight
    reference *= (K - 1) ** 2
    np.testing.assert_allclose(darcy_five_point_matrix(a).toarray(), reference, rtol=1e-14)
    f = np.random.default_rng(1).normal(size=(K, K))
    u = solve_darcy_nodal(a, f)
    np.testing.assert_allclose(u[1:-1, 1:-1].ravel(), np.linalg.solve(reference, f[1:-1, 1:-1].ravel()), rtol=1e-10)


@pytest.mark.parametrize("direction", ["cells_to_nodes", "nodes_to_cells"])
def test_spline_matrix_reproduces_cubics_including_extrapolated_end_nodes(direction):
    K = 12
    cells, nodes = cell_centre_grid(K), nodal_grid(K)
    x_from, x_to = (cells, nodes) if direction == "cells_to_nodes" else (nodes, cells)
    matrix = spline_interpolation_matrix(x_from, x_to)
    cubic = lambda x: 2.0 - 3.0 * x + 5.0 * x**2 - 7.0 * x**3  # noqa: E731
    np.testing.assert_allclose(matrix @ cubic(x_from), cubic(x_to), atol=1e-12)
    if direction == "cells_to_nodes":  # nodes 0 and 1 lie outside [x_c[0], x_c[-1]]
        assert x_to[0] < x_from[0] and x_to[-1] > x_from[-1]
    # Tensor product: p(x) q(y) with cubic p, q is reproduced by M V M^T on the 2-D grid.
    quadratic = lambda y: 1.0 + y - 4.0 * y**2  # noqa: E731
    values = np.outer(cubic(x_from), quadratic(x_from))
    np.testing.assert_allclose(matrix @ values @ matrix.T, np.outer(cubic(x_to), quadratic(x_to)), atol=1e-12)


def test_spline_matrix_is_not_a_knot_not_natural():
    """A natural spline bends the end pieces of x^3; not-a-knot (MATLAB spline) keeps them exact."""
    K = 10
    cells, nodes = cell_centre_grid(K), nodal_grid(K)
    natural = scipy.interpolate.make_interp_spline(cells, cells**3, k=3, bc_type="natural")(nodes)
    assert abs(natural[0] - 0.0) > 1e-4
    cells_to_nodes, _ = cell_node_interpolation_matrices(K)
    np.testing.assert_allclose(cells_to_nodes @ cells**3, nodes**3, atol=1e-13)


def test_cell_centred_pipeline_converges_at_second_order():
    errors = []
    for K in (33, 65, 129):
        x, y = np.meshgrid(cell_centre_grid(K), cell_centre_grid(K), indexing="ij")
        u = solve_darcy_cells(manufactured_a(x, y), manufactured_f(x, y))
        errors.append(np.abs(u - manufactured_u(x, y)).max())
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    assert np.all((ratios > 3.5) & (ratios < 4.5)), (errors, ratios)
    assert errors[-1] < 2e-4


def test_cell_pipeline_equals_explicit_spline_composition():
    """solve_gwf.m: spline a to the nodes, nodal solve, spline u back; checked via make_interp_spline."""
    K = 16
    rng = np.random.default_rng(3)
    a_cells = np.where(rng.normal(size=(K, K)) >= 0, 12.0, 3.0)
    cells, nodes = cell_centre_grid(K), nodal_grid(K)

    def spline_2d(values, x_from, x_to):
        along_x = scipy.interpolate.make_interp_spline(x_from, values, k=3, axis=0)(x_to)
        return scipy.interpolate.make_interp_spline(x_from, along_x, k=3, axis=1)(x_to)

    expected = spline_2d(solve_darcy_nodal(spline_2d(a_cells, cells, nodes), 1.0), nodes, cells)
    np.testing.assert_allclose(solve_darcy_cells(a_cells), expected, rtol=1e-11, atol=1e-14)
