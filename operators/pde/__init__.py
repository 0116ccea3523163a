"""PDE numerics: Gaussian random fields, the Darcy, Burgers and Navier-Stokes solvers and generators of the
FNO benchmarks, Krylov subspace recycling. Pure functions of arrays and random streams; no files (the
cached datasets built on them are ``experiments.data``)."""
from operators.pde.burgers import BurgersGenerator, cole_hopf, grf1_periodic, solve_burgers
from operators.pde.darcy import (
    DarcyGenerator,
    DarcySystems,
    subsample,
    subsample_stride,
    subsampled_resolution,
    threshold_coefficient,
)
from operators.pde.darcy_solver import (
    cell_centre_grid,
    cell_node_interpolation_matrices,
    darcy_five_point_matrix,
    nodal_grid,
    solve_darcy_cells,
    solve_darcy_nodal,
)
from operators.pde.grf import cosine_kl_amplitudes, gaussian_random_field_cosine
from operators.pde.navier_stokes import (
    NavierStokesGenerator,
    navier_stokes_2d,
    navier_stokes_forcing,
    navier_stokes_grf,
)
from operators.pde.spline_interpolation import interpolate_tensor_grid, spline_interpolation_matrix

__all__ = [
    "BurgersGenerator",
    "DarcyGenerator",
    "DarcySystems",
    "NavierStokesGenerator",
    "cell_centre_grid",
    "cell_node_interpolation_matrices",
    "cole_hopf",
    "cosine_kl_amplitudes",
    "darcy_five_point_matrix",
    "gaussian_random_field_cosine",
    "grf1_periodic",
    "interpolate_tensor_grid",
    "navier_stokes_2d",
    "navier_stokes_forcing",
    "navier_stokes_grf",
    "nodal_grid",
    "solve_burgers",
    "solve_darcy_cells",
    "solve_darcy_nodal",
    "spline_interpolation_matrix",
    "subsample",
    "subsample_stride",
    "subsampled_resolution",
    "threshold_coefficient",
]
