"""Tests of the Krylov solvers for sequences of Darcy systems (GCRO-DR recycling, SKR sorting) and of
the Darcy generator's solver / coefficient options. Oracles: sparse LU solutions, a naive greedy tour,
the GRF pipeline drawn by hand, the closed-form variance of the GRF."""
import zlib

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg

from operators.pde import krylov
from operators.pde.darcy import DarcyGenerator, DarcySystems
from operators.pde.grf import cosine_kl_amplitudes, gaussian_random_field_cosine

K = 34  # 32^2 unknowns


def split_stream(seed: int, split: str = "train") -> np.random.Generator:
    """The random stream of a dataset split (experiments.data.store.split_rng): [seed, crc32(split)]."""
    return np.random.default_rng([seed, zlib.crc32(split.encode("utf-8"))])


@pytest.fixture(scope="module")
def lognormal_family():
    """20 lognormal Darcy systems (SKR's GRF alpha 2.5, tau 7) and their sparse-LU solutions."""
    coefficients = np.exp(gaussian_random_field_cosine(np.random.default_rng(3), 20, K, 2.5, 7.0))
    systems = DarcySystems(coefficients)
    rhs = np.ones((K - 2) ** 2)
    direct = krylov.solve_direct(systems, rhs).solutions
    return coefficients, systems, rhs, direct


def test_recycled_solutions_equal_direct_ones_and_iterations_fall(lognormal_family):
    coefficients, systems, rhs, direct = lognormal_family
    result = krylov.solve_recycled(systems, rhs, features=krylov.low_frequency_modes(coefficients),
                                   restart=30, recycle_dim=10)
    for i in range(len(systems)):
        x = result.solutions[i]
        assert np.linalg.norm(rhs - systems[i] @ x) <= 1e-8 * np.linalg.norm(rhs)  # the true residual
        assert np.linalg.norm(x - direct[i]) <= 1e-7 * np.linalg.norm(direct[i])
    in_order = result.matvecs[result.order]
    # The first solve has nothing to recycle; later ones start deflated (recycle images counted):
    # measured 42 products, then 34-40 (ILU is strong at 32^2; the gain grows with the grid).
    assert in_order[1:].max() < in_order[0] and in_order[-5:].mean() < 0.92 * in_order[0]
    independent = krylov.solve_independent(systems, rhs, restart=30)
    np.testing.assert_allclose(independent.solutions, direct, rtol=0, atol=1e-7 * np.abs(direct).max())
    assert result.matvecs.sum() < 0.8 * independent.matvecs.sum()


def test_gcrodr_without_recycling_is_gmres_and_counts_every_product():
    """k = 0 is GMRES(m): on a nonsymmetric convection-diffusion matrix it needs as many products as
    SciPy's gmres (same left preconditioner, same true-residual test), within a restart's slack."""
    n = 400
    main, off = 4.0 * np.ones(n), np.ones(n - 1)
    matrix = scipy.sparse.diags([-1.3 * off, main, -0.7 * off], [-1, 0, 1], format="csr") + \
        scipy.sparse.diags([-np.ones(n - 20), -np.ones(n - 20)], [-20, 20], format="csr")
    rhs = np.random.default_rng(0).standard_normal(n)
    calls = [0]

    class Counting(scipy.sparse.linalg.LinearOperator):
        def _matvec(self, v):
            calls[0] += 1
            return matrix @ v

    ours = krylov.gcrodr(Counting(np.float64, matrix.shape), rhs, restart=10, recycle_dim=0)
    assert ours.converged and ours.matvecs == calls[0]
    assert np.linalg.norm(rhs - matrix @ ours.x) <= 1e-8 * np.linalg.norm(rhs)
    exact = scipy.sparse.linalg.spsolve(matrix.tocsc(), rhs)
    assert np.linalg.norm(ours.x - exact) <= 1e-5 * np.linalg.norm(exact)  # residual 1e-8 x condition
    calls[0] = 0
    x, info = scipy.sparse.linalg.gmres(Counting(np.float64, matrix.shape), rhs, rtol=1e-8, restart=10, maxiter=500)
    # SciPy recomputes b - A x after each of its cycles: one product more per restart
    assert info == 0 and 0 <= calls[0] - ours.matvecs <= calls[0] // 10 + 5
    # recycling helps on the same matrix with a new right-hand side
    again = krylov.gcrodr(matrix, rhs[::-1].copy(), restart=10, recycle_dim=4,
                          recycle=krylov.gcrodr(matrix, rhs, restart=10, recycle_dim=4).recycle)
    assert again.converged and again.matvecs < ours.matvecs


def test_sorting_reduces_iterations_against_a_random_order():
    """Three clusters of nearby coefficients, interleaved: the greedy tour solves each cluster in
    one run (two jumps), so warm starts and recycled spaces fit; a random order jumps ~2/3 of the time."""
    rng = np.random.default_rng(5)
    bases = gaussian_random_field_cosine(rng, 3, K, 2.5, 7.0) * 3.0
    labels = np.tile(np.arange(3), 6)  # 18 systems, interleaved
    fields = bases[labels] + 1e-6 * gaussian_random_field_cosine(rng, labels.size, K, 2.5, 7.0)
    coefficients = np.exp(fields)
    systems, rhs = DarcySystems(coefficients), np.ones((K - 2) ** 2)
    order = krylov.greedy_nearest_neighbour_order(krylov.low_frequency_modes(coefficients))
    assert np.count_nonzero(np.diff(labels[order])) == 2
    sorted_run = krylov.solve_recycled(systems, rhs, order=order, restart=30, recycle_dim=10)
    shuffled = rng.permutation(labels.size)
    random_run = krylov.solve_recycled(systems, rhs, order=shuffled, restart=30, recycle_dim=10)
    assert np.count_nonzero(np.diff(labels[shuffled])) >= 8
    assert sorted_run.matvecs.sum() < 0.7 * random_run.matvecs.sum()
    np.testing.assert_allclose(sorted_run.solutions, random_run.solutions, rtol=0,
                               atol=1e-7 * np.abs(random_run.solutions).max())


def test_greedy_order_matches_a_naive_tour():
    points = np.random.default_rng(1).standard_normal((30, 4))
    unvisited, tour = list(range(1, 30)), [0]
    while unvisited:
        nxt = min(unvisited, key=lambda j: (np.sum((points[j] - points[tour[-1]]) ** 2), j))
        tour.append(nxt)
        unvisited.remove(nxt)
    np.testing.assert_array_equal(krylov.greedy_nearest_neighbour_order(points), tour)


def test_low_frequency_modes_are_the_leading_dct_coefficients():
    fields = np.random.default_rng(2).standard_normal((2, 6, 6))
    x = (2 * np.arange(6) + 1) / 12  # orthonormal DCT-II basis: sqrt(2/6) cos(pi k x), sqrt(1/6) for k = 0
    basis = np.sqrt(2 / 6) * np.cos(np.pi * np.arange(6)[:, None] * x[None])
    basis[0] = np.sqrt(1 / 6)
    naive = np.einsum("ki,lj,nij->nkl", basis, basis, fields)[:, :3, :3].reshape(2, 9)
    np.testing.assert_allclose(krylov.low_frequency_modes(fields, 3), naive, atol=1e-12)


@pytest.mark.parametrize("coefficient", ["threshold", "lognormal"])
def test_darcy_iterative_solvers_give_the_direct_data(coefficient):
    def generate_darcy(solver="direct"):
        return DarcyGenerator(18, coefficient=coefficient, solver=solver).generate(split_stream(1), 8,
                                                                                   progress=False)

    direct = generate_darcy()
    for solver in ("krylov", "recycled"):
        data = generate_darcy(solver)
        np.testing.assert_array_equal(data["coeff"], direct["coeff"])
        np.testing.assert_allclose(data["sol"], direct["sol"], rtol=0, atol=1e-6 * np.abs(direct["sol"]).max())


def test_lognormal_coefficient_is_exp_of_the_grf():
    n, s, alpha, tau = 64, 16, 2.5, 7.0
    data = DarcyGenerator(s, alpha=alpha, tau=tau, coefficient="lognormal").generate(split_stream(2, "test"), n,
                                                                                     progress=False)
    fields = gaussian_random_field_cosine(split_stream(2, "test"), n, s, alpha, tau)
    np.testing.assert_allclose(np.log(data["coeff"]), fields, rtol=0, atol=1e-6)
    log_a = np.log(data["coeff"].astype(np.float64))
    assert np.abs(log_a.mean(axis=(1, 2))).max() < 1e-6  # zero-mean field: the constant mode is dropped
    # E[mean_x U(x)^2] = sum_{k != 0} coef_k^2 (orthonormal DCT); 64 fields estimate it within ~10 %
    expected = np.sum(cosine_kl_amplitudes(s, alpha, tau) ** 2) - cosine_kl_amplitudes(s, alpha, tau)[0, 0] ** 2
    assert abs(np.mean(log_a**2) / expected - 1) < 0.15
    assert np.all(data["sol"][:, 2:-2, 2:-2] > 0)  # a > 0: maximum principle


def test_unknown_solver_options_are_clear_errors():
    # the cached dataset's solver / cache-key checks: tests/experiments/data/test_darcy_dataset.py
    with pytest.raises(ValueError, match="unknown Darcy solver 'lu'.*direct"):
        DarcyGenerator(17, solver="lu")
    with pytest.raises(ValueError, match="unknown preconditioner"):
        krylov.make_preconditioner(scipy.sparse.eye(3), "amg")
