"""optim.halpern against analytic facts: Halpern's O(1/k) bound, PAGE's unbiasedness, hand-counted
oracle calls, the exact resolvent of an affine operator, known solutions, and a slow simplex projection.

Paper: Cai, Alacaoglu, Diakonikolas, "Variance Reduced Halpern Iteration for Finite-Sum Monotone
Inclusions", ICLR 2024 (arXiv 2310.02987). Everything runs in float64.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optim import halpern as H


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


# --------------------------------------------------------------------------------------------------
# Test problems


def strongly_monotone(n: int = 8, k: int = 2, seed: int = 0):
    """F(u) = Mu + q, M = I/2 + BB^T/4 + K (K skew), so F is 1/2-strongly monotone, hence cocoercive
    with constant mu/L^2; u* drawn at random and q = -M u*. Unconstrained, u0 = 0, n components."""
    rng = np.random.default_rng(seed)
    d = n * k
    b = rng.standard_normal((d, d)) / math.sqrt(d)
    skew = rng.standard_normal((d, d)) / math.sqrt(d)
    m = 0.5 * np.eye(d) + b @ b.T / 4 + (skew - skew.T) / 2
    u_star = rng.standard_normal(d)
    problem = H.linear_problem(jnp.asarray(m), jnp.asarray(-m @ u_star), n, jnp.zeros(d))
    return problem, u_star, m


def simplex_game(a: np.ndarray, seed: int = 1) -> H.FiniteSumProblem:
    """min_{x in simplex} max_{y in simplex} y^T A x: F(x, y) = (A^T y, -A x), u = (x, y), component i
    owns x_i and y_i; u0 a random interior point. The simplex projection runs its while loop often
    (``unrolled_steps=2``), so that path is exercised too."""
    m = a.shape[0]
    block = np.zeros((2 * m, 2 * m))
    block[:m, m:], block[m:, :m] = a.T, -a
    rng = np.random.default_rng(seed)
    u0 = np.concatenate([rng.dirichlet(np.ones(m)), rng.dirichlet(np.ones(m))])

    def project(u):
        return H.project_simplex(u.reshape(2, m), unrolled_steps=2).reshape(-1)    # (2, m) rows

    return H.linear_problem(jnp.asarray(block), jnp.zeros(2 * m), m, jnp.asarray(u0), project)


# Generalized rock-paper-scissors: skew-symmetric circulant, unique equilibrium x = y = uniform.
RPS = np.array([np.roll([0.0, 1.0, -1.0, 1.0, -1.0], i) for i in range(5)])
# A strict pure saddle point at x = y = e_0: A[0, 0] = 0.5 > A[i, 0] = 0.2 (y's best response) and
# A[0, 0] < A[0, j] = 0.8 (x's best response).
PURE = np.full((5, 5), 0.3) + 0.1 * np.cos(np.arange(25.0)).reshape(5, 5)
PURE[0, 0], PURE[0, 1:], PURE[1:, 0] = 0.5, 0.8, 0.2


def final_residual(result: H.SolverResult) -> float:
    return float(result.history.valid()[1][-1])


def residual_at(result: H.SolverResult, epochs: float) -> float:
    ep, res = result.history.valid()
    return float(res[np.searchsorted(ep, epochs)])


# --------------------------------------------------------------------------------------------------
# Simplex projection


def slow_simplex_projection(v: np.ndarray, radius: float) -> np.ndarray:
    """Held-Wolfe-Crowder / Duchi et al.: sort, find the largest rho with a positive entry, shift."""
    mu = np.sort(v)[::-1]
    theta = None
    for rho in range(1, len(v) + 1):
        t = (mu[:rho].sum() - radius) / rho
        if mu[rho - 1] - t > 0:
            theta = t
    return np.maximum(v - theta, 0.0)


def test_project_simplex_matches_sort_reference_and_optax():
    project = jax.jit(H.project_simplex, static_argnames="unrolled_steps")
    optax_rows = jax.jit(jax.vmap(optax.projections.projection_simplex))
    for m in (1, 2, 7, 50, 500):
        rng = np.random.default_rng(m)
        for scale in (1e-3, 1.0, 100.0):
            for radius in (1.0, 3.0):
                v = scale * rng.standard_normal((3, m))
                v[1] = np.abs(v[1]) / np.abs(v[1]).sum() * radius   # already on the simplex
                v[2, 0] = 1e3 * scale                                # one dominating entry
                want = np.stack([slow_simplex_projection(row, radius) for row in v])
                tol = 1e-12 * max(scale, radius)
                for steps in (0, 8):                                 # all in the while loop / unrolled
                    got = np.asarray(project(jnp.asarray(v), radius, unrolled_steps=steps))
                    np.testing.assert_allclose(got, want, rtol=0, atol=tol, err_msg=f"{m} {scale} {radius}")
                np.testing.assert_allclose(got.sum(axis=-1), radius, rtol=1e-12)
                if radius == 1.0:
                    np.testing.assert_allclose(got, np.asarray(optax_rows(jnp.asarray(v))), rtol=0, atol=tol)


def test_project_simplex_ties_and_batches():
    v = np.array([[0.3, 0.3, 0.3, 0.3], [2.0, 2.0, -1.0, 0.0], [-5.0, -5.0, -5.0, -4.0]])
    want = np.array([[0.25] * 4, [0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    project = jax.jit(H.project_simplex)
    np.testing.assert_allclose(np.asarray(project(jnp.asarray(v))), want, atol=1e-15)
    batch = np.random.default_rng(0).standard_normal((2, 3, 9))
    got = np.asarray(project(jnp.asarray(batch)))
    want = np.stack([[slow_simplex_projection(r, 1.0) for r in rows] for rows in batch])
    np.testing.assert_allclose(got, want, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# Exact Halpern iteration: ||u_k - T u_k|| <= 2 ||u0 - u*|| / (k + 1)


def test_halpern_iteration_meets_its_rate_bound():
    d = 6
    angles = [2.0, 2.8, 0.7]                                  # three rotation planes
    rot = np.zeros((d, d))
    for i, a in enumerate(angles):
        rot[2 * i:2 * i + 2, 2 * i:2 * i + 2] = [[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]
    center = np.arange(1.0, d + 1.0)                          # the unique fixed point
    rot, center_j = jnp.asarray(rot), jnp.asarray(center)

    def operator(u):                                          # c + Pi_ball(R (u - c)): nonexpansive
        z = rot @ (u - center_j)
        return center_j + z / jnp.maximum(1.0, jnp.linalg.norm(z))

    np.testing.assert_allclose(np.asarray(operator(center_j)), center)
    u0 = center + 5.0 * np.ones(d) / math.sqrt(d)
    steps = 400
    u, res = H.halpern_iteration(operator, jnp.asarray(u0), steps)
    k = np.arange(steps + 1)
    bound = 2 * np.linalg.norm(u0 - center) / (k + 1)
    assert res.shape == (steps + 1,)
    assert np.all(np.asarray(res) <= bound * (1 + 1e-12)), np.max(np.asarray(res) / bound)
    # Not vacuous: the residual stays within a factor 6 of the bound over the whole run (rotations
    # close to pi are the slow case), and the iterates approach the fixed point.
    assert np.min(np.asarray(res[1:]) / bound[1:]) > 1 / 6
    assert np.linalg.norm(np.asarray(u) - center) < 0.05 * np.linalg.norm(u0 - center)


# --------------------------------------------------------------------------------------------------
# PAGE estimator


def test_linear_problem_components_average_to_full():
    problem, _, m = strongly_monotone(n=6, k=3)
    u = jnp.asarray(np.random.default_rng(1).standard_normal(18))
    comps = problem.components(jnp.arange(6), u)                                  # (n, d)
    np.testing.assert_allclose(np.asarray(comps.mean(axis=0)), np.asarray(problem.full(u)), atol=1e-12)
    # component i is n * M[:, {i, i+6, i+12}] u_{i, i+6, i+12} + q
    cols = [1, 7, 13]
    want = 6 * m[:, cols] @ np.asarray(u)[cols] + np.asarray(problem.full(jnp.zeros(18)))
    np.testing.assert_allclose(np.asarray(comps[1]), want, atol=1e-12)


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_page_estimator_is_unbiased_given_the_previous_estimate(p):
    problem, _, _ = strongly_monotone(n=12, k=2)
    rng = np.random.default_rng(2)
    u, u_prev, est_prev = (jnp.asarray(rng.standard_normal(24)) for _ in range(3))
    n_samples, b = 20_000, 3
    keys = jax.random.split(jax.random.key(0), n_samples)
    est, calls = jax.jit(jax.vmap(lambda key: H.page_estimator(
        problem, key, u, u_prev, est_prev, batch_size=b, p=p)))(keys)
    est, calls = np.asarray(est), np.asarray(calls)
    f_u, f_prev = np.asarray(problem.full(u)), np.asarray(problem.full(u_prev))
    # E[F~_k | past] = p F(u_k) + (1 - p)(F~_{k-1} + F(u_k) - F(u_{k-1})), even when F~_{k-1} != F(u_{k-1}).
    expected = p * f_u + (1 - p) * (np.asarray(est_prev) + f_u - f_prev)
    standard_error = est.std(axis=0) / math.sqrt(n_samples)
    assert standard_error.min() > 0                                 # the estimator really is random
    assert np.all(np.abs(est.mean(axis=0) - expected) <= 5 * standard_error + 1e-12)
    assert set(np.unique(calls)) <= {12, 2 * b}
    assert abs(np.mean(calls == 12) - p) <= 5 * math.sqrt(p * (1 - p) / n_samples) + 1e-12


def test_page_minibatch_is_drawn_without_replacement():
    # With b = n every component is used exactly once: the correction is exactly F(u) - F(u_prev).
    problem, _, _ = strongly_monotone(n=12, k=2)
    rng = np.random.default_rng(3)
    u, u_prev, est_prev = (jnp.asarray(rng.standard_normal(24)) for _ in range(3))
    keys = jax.random.split(jax.random.key(1), 50)
    est, calls = jax.jit(jax.vmap(lambda key: H.page_estimator(
        problem, key, u, u_prev, est_prev, batch_size=12, p=0.0)))(keys)
    want = np.asarray(est_prev + problem.full(u) - problem.full(u_prev))
    np.testing.assert_allclose(np.asarray(est), np.broadcast_to(want, (50, 24)), atol=1e-12)
    assert np.all(np.asarray(calls) == 24)


# --------------------------------------------------------------------------------------------------
# Oracle-call counting, by hand


def recorded_calls(result: H.SolverResult) -> list[int]:
    return [int(c) for c in np.asarray(result.history.calls)[:int(result.history.count)]]


def test_oracle_calls_of_halpern_page():
    problem, _, _ = strongly_monotone(n=16, k=1)
    # Full passes at k = 0, 1 (16 calls each), then minibatches of b = 4 (2b = 8 calls): 16, 32, 40, 48.
    result = H.halpern_page(problem, jax.random.key(0), eta=0.1, epochs=3, batch_size=4,
                            full_pass_prob=lambda k: jnp.where(k <= 1, 1.0, 0.0), num_records=48)
    assert (int(result.steps), int(result.calls)) == (4, 48)
    assert recorded_calls(result) == [0, 16, 32, 40, 48]
    np.testing.assert_allclose(result.history.valid()[0], [0, 1, 2, 2.5, 3])


def test_oracle_calls_of_the_baselines():
    problem, _, _ = strongly_monotone(n=16, k=1)
    key = jax.random.key(0)
    for solver in (H.extragradient, H.extra_anchored_gradient):      # 2 full passes per iteration
        result = solver(problem, key, eta=0.1, epochs=3, num_records=48)
        assert (int(result.steps), int(result.calls)) == (2, 64)
        assert recorded_calls(result) == [0, 32, 64]
    # VR-EG: F(w_0) costs 16, each step 2, each snapshot refresh 16 more.
    never = H.vr_extragradient(problem, key, gamma=0.01, epochs=2, p=0.0, num_records=32)
    assert (int(never.steps), int(never.calls)) == (8, 32)
    assert recorded_calls(never) == [0, 18, 20, 22, 24, 26, 28, 30, 32]
    always = H.vr_extragradient(problem, key, gamma=0.01, epochs=3, p=1.0, num_records=48)
    assert (int(always.steps), int(always.calls)) == (2, 52)


def test_oracle_calls_of_inexact_halpern_and_vr_forb():
    problem, _, _ = strongly_monotone(n=40, k=1)
    # Outer step k: Phi(u_k) (40 calls) + M_k inner steps of 2 calls, M_k = floor(0.05*40*log(k+2))
    # = 1, 2, 2, 3, 3 for k = 0..4; no snapshot refresh (p = 0): 42, 86, 130, 176, 222.
    result = H.inexact_halpern(problem, jax.random.key(0), eta=0.1, gamma=0.01, epochs=5, p=0.0)
    assert (int(result.steps), int(result.calls)) == (5, 222)
    assert recorded_calls(result) == [0, 42, 86, 130, 176, 222]
    # With p = 1 every inner step refreshes the snapshot: 40 + 3 * (2 + 40).
    _, calls = H.vr_forb_resolvent(problem, jax.random.key(0), problem.u0, eta=0.1, gamma=0.01,
                                   num_steps=3, p=1.0)
    assert int(calls) == 166


# --------------------------------------------------------------------------------------------------
# The update rules, against a naive NumPy transcription (one component, so no sampling noise)


def one_component_problem():
    """n = 1: every F_j is F, so the stochastic solvers become deterministic and checkable step by step.
    F(u) = Mu + q on the simplex in R^4, M = PSD + skew (monotone)."""
    rng = np.random.default_rng(5)
    b = rng.standard_normal((4, 4))
    m = b @ b.T / 8 + (b - b.T)
    q = rng.standard_normal(4)
    u0 = np.array([0.4, 0.3, 0.2, 0.1])
    problem = H.linear_problem(jnp.asarray(m), jnp.asarray(q), 1, jnp.asarray(u0),
                               lambda u: H.project_simplex(u, unrolled_steps=1))
    return problem, (lambda u: m @ u + q), (lambda u: slow_simplex_projection(u, 1.0)), u0


def test_updates_match_a_naive_transcription():
    problem, f, proj, u0 = one_component_problem()
    key = jax.random.key(0)

    def check(result, want):
        np.testing.assert_allclose(np.asarray(result.u), want, rtol=0, atol=1e-12)

    # EG: u_bar = P(u - eta F(u)), u+ = P(u - eta F(u_bar)); 2 calls per iteration.
    u = u0
    for _ in range(4):
        u = proj(u - 0.3 * f(proj(u - 0.3 * f(u))))
    check(H.extragradient(problem, key, eta=0.3, epochs=8), u)
    # EAG: both steps from the anchored point lambda u0 + (1 - lambda) u, lambda_k = 1/(k+2).
    u = u0
    for k in range(4):
        a = u0 / (k + 2) + (1 - 1 / (k + 2)) * u
        u = proj(a - 0.3 * f(proj(a - 0.3 * f(u))))
    check(H.extra_anchored_gradient(problem, key, eta=0.3, epochs=8), u)
    # Algorithm 1: with n = 1 the PAGE estimate is F(u_k) exactly, full pass or not.
    result = H.halpern_page(problem, key, eta=0.3, epochs=12)
    u = u0
    for k in range(int(result.steps)):
        lam = 2 / (k + 4)
        u = proj(lam * u0 + (1 - lam) * u - 0.3 * f(u))
    check(result, u)
    # VR-EG with p = 1 (alpha = 0, a fresh snapshot w = u after every step).
    result = H.vr_extragradient(problem, key, gamma=0.3, epochs=13, p=1.0)
    u, w = u0, u0
    for _ in range(int(result.steps)):
        u_bar = 0.0 * u + 1.0 * w
        u_half = proj(u_bar - 0.3 * f(w))
        u = proj(u_bar - 0.3 * (f(w) + f(u_half) - f(w)))
        w = u
    assert int(result.steps) == 4                            # 1 + 4 * (2 + 1) calls
    check(result, u)
    # Algorithm 2 with M_k = 3 VR-FoRB steps, p = 1: v+ = P(v_bar - gamma[Phi(w) + Phi(v) - Phi(w_prev)]).
    eta, gamma = 0.5, 0.2
    result = H.inexact_halpern(problem, key, eta=eta, gamma=gamma, epochs=20, p=1.0, snapshot="paper",
                               inner_steps=lambda k: jnp.int32(3))
    u = u0
    for k in range(int(result.steps)):
        def phi(v, u=u):
            return eta * f(v) + v - u
        v, w, w_prev = u, u, u
        for _ in range(3):
            v_bar = 0.0 * v + 1.0 * w
            v_new = proj(v_bar - gamma * (phi(w) + phi(v) - phi(w_prev)))
            w_prev, w, v = w, v_new, v_new
        u = u0 / (k + 2) + (1 - 1 / (k + 2)) * v
    assert int(result.steps) == 2                            # 1 + 3 * (2 + 1) = 10 calls per outer step
    check(result, u)


def test_budget_errors_are_clear():
    problem, _, _ = strongly_monotone(n=4, k=1)
    with pytest.raises(ValueError, match="epochs must be a positive number"):
        H.extragradient(problem, eta=0.1, epochs=0)
    with pytest.raises(ValueError, match="int32"):
        H.extragradient(problem, eta=0.1, epochs=1e9)
    with pytest.raises(ValueError, match="batch_size"):
        H.halpern_page(problem, jax.random.key(0), eta=0.1, epochs=1, batch_size=5)
    with pytest.raises(ValueError, match="must divide"):
        H.linear_problem(jnp.eye(6), jnp.zeros(6), 4, jnp.zeros(6))
    with pytest.raises(ValueError, match="the step eta must be a positive number"):
        H.extragradient(problem, eta=-0.1, epochs=1)
    wrong = H.FiniteSumProblem(n=4, full=lambda u: u[:2], components=problem.components, u0=problem.u0)
    with pytest.raises(ValueError, match=r"full\(u\) must return shape \(4,\), got \(2,\)"):
        H.vr_extragradient(wrong, jax.random.key(0), gamma=0.1, epochs=1)


# --------------------------------------------------------------------------------------------------
# VR-FoRB approximates the resolvent; every solver drives the residual to zero


def test_vr_forb_converges_to_the_exact_resolvent():
    problem, _, m = strongly_monotone(n=8, k=2)
    u = jnp.asarray(np.random.default_rng(4).standard_normal(16))
    eta = 0.5
    q = np.asarray(problem.full(jnp.zeros(16)))
    exact = np.linalg.solve(np.eye(16) + eta * m, np.asarray(u) - eta * q)   # (I + eta F)^{-1} u
    v, _ = H.vr_forb_resolvent(problem, jax.random.key(0), u, eta=eta, gamma=0.05, num_steps=3000, snapshot="paper")
    assert np.linalg.norm(np.asarray(v) - exact) < 1e-8 * np.linalg.norm(exact - np.asarray(u))


def solver_runs(problem: H.FiniteSumProblem, lipschitz: float, expected_lipschitz: float,
                cocoercive_step: float, epochs: float):
    """Each solver with step sizes from the problem's constants. Algorithm 2 gets M_k = 5 inner steps
    of gamma = 0.2: the default M_k = floor(0.05 n log(k+2)) is 1 for these n <= 16 problems."""
    key = jax.random.key(0)
    p = 1.0 / problem.n
    gamma_vr = 0.5 * math.sqrt(p) / expected_lipschitz
    return {
        "EG": lambda: H.extragradient(problem, key, eta=0.5 / lipschitz, epochs=epochs),
        "EAG": lambda: H.extra_anchored_gradient(problem, key, eta=0.5 / lipschitz, epochs=epochs),
        "VR-EG": lambda: H.vr_extragradient(problem, key, gamma=gamma_vr, epochs=epochs),
        "Alg1": lambda: H.halpern_page(problem, key, eta=cocoercive_step, epochs=epochs),
        "Alg2": lambda: H.inexact_halpern(problem, key, eta=1.0 / lipschitz, gamma=0.2,
                                          inner_steps=lambda k: jnp.int32(5), epochs=epochs),
    }


def test_every_solver_converges_on_a_strongly_monotone_problem():
    problem, u_star, m = strongly_monotone(n=8, k=2)
    r0 = float(H.residual(problem, problem.u0))
    assert float(H.residual(problem, jnp.asarray(u_star))) < 1e-12
    lip = np.linalg.norm(m, 2)
    mu = np.linalg.eigvalsh((m + m.T) / 2).min()
    runs = solver_runs(problem, lip, math.sqrt(problem.n) * np.linalg.norm(m), mu / lip**2, 3000)
    for name, run in runs.items():
        result = run()
        err = np.linalg.norm(np.asarray(result.u) - u_star)
        if name in ("EG", "VR-EG"):               # linear rate on a strongly monotone problem
            assert final_residual(result) < 1e-10 * r0, name
            assert err < 1e-9, name
        else:                                     # anchoring: O(1/k) even here
            assert final_residual(result) < 0.02 * r0, (name, final_residual(result))
            assert final_residual(result) < 0.7 * residual_at(result, 1500), name   # still halving
            assert err < 0.05 * np.linalg.norm(u_star), (name, err)


@pytest.mark.slow  # every solver run to convergence
def test_monotone_lipschitz_solvers_converge_on_rock_paper_scissors():
    """EG, EAG, VR-EG and Algorithm 2 need only monotone + Lipschitz; the equilibrium is uniform.
    (Algorithm 1 assumes cocoercivity, which a bilinear game lacks: near an interior equilibrium
    its anchored forward step is expansive, |1 - lambda - i eta sigma| > 1, so it is left out.)"""
    problem = simplex_game(RPS)
    r0 = float(H.residual(problem, problem.u0))
    assert float(H.residual(problem, jnp.full(10, 0.2))) < 1e-15
    lip, fro = np.linalg.norm(RPS, 2), np.linalg.norm(RPS)
    runs = solver_runs(problem, lip, fro, 0.0, 4000)
    runs["VR-EG"] = lambda: H.vr_extragradient(problem, jax.random.key(0), gamma=math.sqrt(0.2) / fro,
                                               epochs=4000)
    del runs["Alg1"]
    for name, run in runs.items():
        result = run()
        err = np.abs(np.asarray(result.u) - 0.2).max()
        if name in ("EG", "VR-EG"):
            assert final_residual(result) < 1e-4, (name, final_residual(result))
            assert err < 1e-4, (name, err)
        else:
            assert final_residual(result) < 0.03 * r0, (name, final_residual(result))
            assert err < 0.02, (name, err)


@pytest.mark.slow  # every solver run to convergence
def test_every_solver_converges_on_a_game_with_a_pure_saddle_point():
    problem = simplex_game(PURE)
    u_star = np.zeros(10)
    u_star[0] = u_star[5] = 1.0
    assert float(H.residual(problem, jnp.asarray(u_star))) < 1e-15
    r0 = float(H.residual(problem, problem.u0))
    lip, fro = np.linalg.norm(PURE, 2), np.linalg.norm(PURE)
    for name, run in solver_runs(problem, lip, fro, 0.5 / lip, 1000).items():
        result = run()
        # The projected methods land on the vertex exactly; Algorithm 2's last step (the anchoring)
        # is not projected, so it approaches at the Halpern rate O(1/k).
        tol = 0.02 * r0 if name == "Alg2" else 1e-10
        assert final_residual(result) < tol, (name, final_residual(result))
        assert np.abs(np.asarray(result.u) - u_star).max() < tol, name
