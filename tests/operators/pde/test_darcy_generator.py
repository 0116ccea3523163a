"""Tests of the FNO Darcy generator (operators.pde.darcy): determinism, sanity of the samples, subsampling.
The cached dataset built on it is tested in tests/experiments/data/test_darcy_dataset.py."""
import os
import zlib

import numpy as np
import pytest

from operators.pde.darcy import (
    DarcyGenerator,
    subsample,
    subsampled_resolution,
    threshold_coefficient,
)
from operators.pde.darcy_solver import solve_darcy_cells, solve_darcy_nodal
from operators.pde.grf import gaussian_random_field_cosine


def split_stream(seed: int, split: str = "train") -> np.random.Generator:
    """The random stream of a dataset split (experiments.data.store.split_rng): [seed, crc32(split)]."""
    return np.random.default_rng([seed, zlib.crc32(split.encode("utf-8"))])


def generate_darcy(n_samples, resolution, seed=0, split="train", progress=False, workers=None, **settings):
    """n samples at K = resolution from the stream of (seed, split)."""
    return DarcyGenerator(resolution, **settings).generate(split_stream(seed, split), n_samples,
                                                           progress=progress, workers=workers)


def test_same_stream_gives_identical_arrays():
    first = generate_darcy(3, 17, seed=4)
    second = generate_darcy(3, 17, seed=4)
    for key in ("coeff", "sol"):
        np.testing.assert_array_equal(first[key], second[key])


def test_first_k_samples_do_not_depend_on_n_samples():
    few = generate_darcy(2, 17, split="test")
    many = generate_darcy(5, 17, split="test")
    np.testing.assert_array_equal(few["coeff"], many["coeff"][:2])
    np.testing.assert_array_equal(few["sol"], many["sol"][:2])


def test_samples_follow_the_pipeline_grf_threshold_solve():
    data = generate_darcy(2, 17, alpha=2.0, tau=3.0, seed=2, split="train")
    rng = split_stream(2, "train")
    for i in range(2):
        a = threshold_coefficient(gaussian_random_field_cosine(rng, 1, 17)[0], 12.0, 3.0)
        np.testing.assert_array_equal(data["coeff"][i], a.astype(np.float32))
        np.testing.assert_array_equal(data["sol"][i], solve_darcy_cells(a).astype(np.float32))


def test_small_dataset_shapes_values_and_positivity():
    data = generate_darcy(4, 33, seed=0)
    assert set(data) == {"coeff", "sol"}
    for key in ("coeff", "sol"):
        assert data[key].shape == (4, 33, 33) and data[key].dtype == np.float32
    assert set(np.unique(data["coeff"])) <= {3.0, 12.0}
    assert all(len(np.unique(c)) == 2 for c in data["coeff"])  # both phases present for tau = 3
    assert np.all(np.isfinite(data["sol"]))
    # Maximum principle (f = 1 > 0) away from the boundary. Next to the boundary the original
    # pipeline can dip slightly below zero: the not-a-knot spline extrapolates the jumpy coefficient
    # to the boundary nodes (values far outside [3, 12], even negative), as solve_gwf.m does.
    margin = 33 // 8
    assert np.all(data["sol"][:, margin:-margin, margin:-margin] > 0)
    assert np.all(data["sol"].min(axis=(1, 2)) > -0.05 * data["sol"].max(axis=(1, 2)))
    # -div(a grad u) = 1 with 3 <= a <= 12 bounds u between the a = 12 and a = 3 Poisson solutions,
    # whose maxima are 0.0737 / 12 and 0.0737 / 3 (loosened for the spline overshoot of a).
    assert np.all(data["sol"].max(axis=(1, 2)) > 0.0737 / 12 * 0.9)
    assert np.all(data["sol"].max(axis=(1, 2)) < 0.0737 / 3 * 1.1)


def test_nodal_solution_of_threshold_coefficient_is_positive():
    """Discrete maximum principle: with a > 0 on the nodes the matrix is an M-matrix, so f > 0 gives u > 0."""
    rng = np.random.default_rng(8)
    a = threshold_coefficient(gaussian_random_field_cosine(rng, 1, 65)[0])
    u = solve_darcy_nodal(a, 1.0)
    assert np.all(u[1:-1, 1:-1] > 0) and np.all(np.isfinite(u))


def test_subsample_keeps_every_rth_point_and_both_ends():
    fields = np.arange(2 * 21 * 21, dtype=np.float32).reshape(2, 21, 21)
    coarse = subsample(fields, 5)
    assert coarse.shape == (2, 5, 5) and subsampled_resolution(21, 5) == 5
    np.testing.assert_array_equal(coarse, fields[:, [0, 5, 10, 15, 20]][:, :, [0, 5, 10, 15, 20]])
    assert subsampled_resolution(421, 5) == 85 and subsampled_resolution(421, 1) == 421


def test_invalid_subsampling_rate_names_resolution_and_choices():
    with pytest.raises(ValueError, match=r"r=3 .*K=21.*\[1, 2, 4, 5, 10, 20\]"):
        subsampled_resolution(21, 3)
    with pytest.raises(ValueError, match="K=21"):
        subsample(np.zeros((21, 21)), 3)
    with pytest.raises(ValueError):
        subsampled_resolution(21, 0)


def test_subsample_stride_inverts_subsampled_resolution():
    from operators.pde import subsample_stride, subsampled_resolution

    for K in (33, 127, 421):
        for r in (d for d in range(1, K) if (K - 1) % d == 0):
            assert subsample_stride(K, subsampled_resolution(K, r)) == r
    with pytest.raises(ValueError, match=r"valid resolutions are \[421, 211, 141, 106, 85"):
        subsample_stride(421, 100)


@pytest.mark.slow  # a process pool of solves
def test_parallel_solves_equal_serial_solves():
    serial = generate_darcy(6, 33, seed=4, workers=1)
    parallel = generate_darcy(6, 33, seed=4, workers=2)
    for key in ("coeff", "sol"):
        np.testing.assert_array_equal(parallel[key], serial[key])


def test_default_workers_stay_in_process_for_small_jobs():
    from operators.pde.darcy import default_workers

    assert default_workers(600, 127) == 1         # the default job: spawning would cost more
    assert default_workers(1000, 421) >= 1        # the paper's data: all CPUs
    assert default_workers(1000, 421) == min(32, os.cpu_count() or 1)


def test_generator_settings_are_checked():
    with pytest.raises(ValueError, match="at least 3 points per axis"):
        DarcyGenerator(2)
    with pytest.raises(ValueError, match="unknown Darcy solver 'lu'.*direct"):
        DarcyGenerator(17, solver="lu")
    with pytest.raises(ValueError, match="unknown Darcy coefficient.*lognormal"):
        DarcyGenerator(17, coefficient="gaussian")
