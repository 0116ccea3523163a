"""PDE data generators: Gaussian random fields, the FNO Darcy-flow and Navier-Stokes benchmarks, an on-disk
array cache."""
from operators.pde.darcy import (
    DARCY_GENERATOR_VERSION,
    darcy_dataset,
    generate_darcy,
    split_rng,
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
    NavierStokesFlow,
    generate_navier_stokes,
    navier_stokes_2d,
    navier_stokes_dataset,
    navier_stokes_forcing,
    navier_stokes_grf,
)
from operators.pde.spline_interpolation import interpolate_tensor_grid, spline_interpolation_matrix
from operators.pde.store import DatasetCacheError, cache_file_path, cached_arrays

__all__ = [
    "DARCY_GENERATOR_VERSION",
    "DatasetCacheError",
    "NavierStokesFlow",
    "cache_file_path",
    "cached_arrays",
    "cell_centre_grid",
    "cell_node_interpolation_matrices",
    "cosine_kl_amplitudes",
    "darcy_dataset",
    "darcy_five_point_matrix",
    "gaussian_random_field_cosine",
    "generate_darcy",
    "generate_navier_stokes",
    "interpolate_tensor_grid",
    "navier_stokes_2d",
    "navier_stokes_dataset",
    "navier_stokes_forcing",
    "navier_stokes_grf",
    "nodal_grid",
    "solve_darcy_cells",
    "solve_darcy_nodal",
    "spline_interpolation_matrix",
    "split_rng",
    "subsample",
    "subsample_stride",
    "subsampled_resolution",
    "threshold_coefficient",
]
