"""Algorithms 1 and 2 of Cai, Alacaoglu & Diakonikolas against NumPy transcriptions that replay the
solvers' own random draws, with several components and snapshot / full-pass probabilities below 1,
so every branch (minibatch PAGE corrections, VR-FoRB's mixing of v and a snapshot w != v, refreshed
and kept snapshots) shapes the iterates.

Paper: X. Cai, A. Alacaoglu, J. Diakonikolas, "Variance Reduced Halpern Iteration for Finite-Sum
Monotone Inclusions", ICLR 2024, arXiv 2310.02987 (Algorithms 1-3); experiment code
zephyr-cai/Finite-Sum-Halpern-Iteration (``Halpern_mini_update``, ``subsolver_FoRB`` in
``matrix_game.py``). VR-FoRB has two snapshot rules (``optim.halpern``'s ``snapshot``), each with its own
transcription: ``"paper"``, Algorithm 3 as printed (a refreshed snapshot is the new iterate,
w <- v_{t+1}; ``vr_forb``), and ``"outer"``, the default, the authors' ``subsolver_FoRB`` loop (both
``matrix_game.py`` and ``quadratic_programming.py``: a refresh sets ``wx, wy = x, y``, the outer point,
and still costs n calls; ``subsolver_forb_authors``).

Replayed draws (the same ``jax.random`` calls on the same keys as ``optim/halpern.py``):

* Algorithm 1, outer step k: ``uniform(fold_in(key, k), (n + 1,))``; the coin is ``draws[n] < p_k``,
  the minibatch the indices of the b largest of ``draws[:n]``.
* Algorithm 2, outer step k, inner step t: ``uniform(fold_in(fold_in(key, k), t), (2,))``; the
  component is ``min(floor(draws[0] n), n - 1)``, the snapshot refresh ``draws[1] < p``.

Everything in float64; iterates agree to 1e-12.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optim import halpern as H


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


# --------------------------------------------------------------------------------------------------
# The problem, in NumPy: F(u) = Mu + q split by coordinates, on the box [-0.6, 0.6]^d or unconstrained.


BOUND = 0.6                                                               # the box, binding on both tests


class NumpyProblem:
    """F_i(u) = n M[:, S_i] u[S_i] + q with S_i = {i, i + n, ..., i + (k-1) n} (the column sampling of
    the paper's experiments), written out independently of ``H.linear_problem``."""

    def __init__(self, n: int, k: int, seed: int, box: bool):
        rng = np.random.default_rng(seed)
        d = n * k
        b = rng.standard_normal((d, d)) / math.sqrt(d)
        skew = rng.standard_normal((d, d)) / math.sqrt(d)
        self.m = 0.3 * np.eye(d) + b @ b.T / 4 + (skew - skew.T) / 2          # monotone
        self.q = rng.standard_normal(d)
        self.u0 = 0.5 * np.tanh(rng.standard_normal(d))                     # inside the box
        self.n, self.k, self.d, self.box = n, k, d, box

    def full(self, u):
        return self.m @ u + self.q

    def component(self, i, u):
        cols = [i + n_ * self.n for n_ in range(self.k)]
        return self.n * self.m[:, cols] @ u[cols] + self.q

    def project(self, u):
        return np.clip(u, -BOUND, BOUND) if self.box else u

    def residual(self, u):
        return np.linalg.norm(u - self.project(u - self.full(u)))

    def solver_problem(self) -> H.FiniteSumProblem:
        project = (lambda u: jnp.clip(u, -BOUND, BOUND)) if self.box else (lambda u: u)
        return H.linear_problem(jnp.asarray(self.m), jnp.asarray(self.q), self.n, jnp.asarray(self.u0),
                                project)


def uniform_draws(key, shape):
    return np.asarray(jax.random.uniform(key, shape))                      # float64 under x64


def check_iterates(result: H.SolverResult, iterates, calls, prob: NumpyProblem):
    """Every outer iterate (through its recorded residual and call count) and the last one itself."""
    assert int(result.steps) == len(iterates) - 1
    assert int(result.calls) == calls[-1]
    hist_calls = np.asarray(result.history.calls)[:int(result.history.count)]
    np.testing.assert_array_equal(hist_calls, calls)                      # one record per outer step
    np.testing.assert_allclose(np.asarray(result.history.residual)[:int(result.history.count)],
                               [prob.residual(u) for u in iterates], rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(result.u), iterates[-1], rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# Algorithm 2 with Algorithm 3 (VR-FoRB) as the inexact resolvent.


def vr_forb(prob: NumpyProblem, key, u, *, eta, gamma, steps, p, log):
    """Algorithm 3 for J_{eta(F+G)}(u): v_0 = w_0 = w_{-1} = u, alpha = 1 - p, then per step
    v_bar = alpha v + (1 - alpha) w, v+ = P(v_bar - gamma [Phi(w) + Phi_j(v) - Phi_j(w_prev)]),
    w_prev <- w, w <- v+ if the coin says so. Returns (v after each step, calls)."""
    alpha = 1.0 - p
    phi = lambda x: eta * prob.full(x) + x - u
    phi_j = lambda j, x: eta * prob.component(j, x) + x - u
    v, w, w_prev = u.copy(), u.copy(), u.copy()
    phi_w, calls, trajectory = phi(w), prob.n, []
    for t in range(steps):
        draws = uniform_draws(jax.random.fold_in(key, t), (2,))
        j, refresh = min(int(math.floor(draws[0] * prob.n)), prob.n - 1), bool(draws[1] < p)
        log["j"].add(j)
        log["refresh"].add(refresh)
        log["mixing"] = max(log["mixing"], float(np.abs(v - w).max()))       # (1-alpha)(w - v) matters
        v_bar = alpha * v + (1 - alpha) * w
        v_next = prob.project(v_bar - gamma * (phi_w + phi_j(j, v) - phi_j(j, w_prev)))
        calls += 2
        w_prev = w
        if refresh:
            w, phi_w = v_next, phi(v_next)
            calls += prob.n
        v = v_next
        trajectory.append(v)
    return trajectory, calls


def subsolver_forb_authors(prob: NumpyProblem, key, u, *, eta, gamma, steps, p, log):
    """The authors' ``subsolver_FoRB(A, x, y, M, c, cnt, p, alpha, gamma)`` loop with x, y -> u, c -> eta,
    their Ax/Ay -> phi_w, their sampled difference c n A[idx] (v[idx] - w_prev[idx]) + v - w_prev ->
    eta (F_j(v) - F_j(w_prev)) + v - w_prev, and their NumPy draws replaced by the solver's:

        v, w, w_prev = u, u, u;  phi_w = c F(w) + w - u       (cnt += n, as quadratic_programming.py)
        for k in range(M):
            v_bar = alpha v + w - alpha w
            v = P(v_bar - gamma (phi_w + c (F_j(v) - F_j(w_prev)) + v - w_prev));  cnt += 2
            w_prev = w
            if toss[k] == 1:  w = u;  phi_w = c F(w) + w - u;  cnt += n      # wx, wy = x, y

    Returns (v after each step, calls)."""
    alpha = 1.0 - p
    v, w, w_prev = u.copy(), u.copy(), u.copy()
    phi_w = eta * prob.full(w) + w - u
    calls, trajectory = prob.n, []
    for t in range(steps):
        draws = uniform_draws(jax.random.fold_in(key, t), (2,))
        idx, toss = min(int(math.floor(draws[0] * prob.n)), prob.n - 1), bool(draws[1] < p)
        log["j"].add(idx)
        log["refresh"].add(toss)
        log["mixing"] = max(log["mixing"], float(np.abs(v - w).max()))
        v_bar = alpha * v + w - alpha * w
        v = prob.project(v_bar - gamma * (phi_w + eta * (prob.component(idx, v) - prob.component(idx, w_prev))
                                          + v - w_prev))
        calls += 2
        w_prev = w
        if toss:
            w = u
            phi_w = eta * prob.full(w) + w - u
            calls += prob.n
        trajectory.append(v)
    return trajectory, calls


RESOLVENTS = {"paper": vr_forb, "outer": subsolver_forb_authors}


def inexact_halpern(prob: NumpyProblem, key, *, eta, gamma, epochs, inner_steps, p, snapshot):
    """Algorithm 2: u_{k+1} = lam_k u0 + (1 - lam_k) J~(u_k), lam_k = 1/(k+2), J~ = M_k steps of
    VR-FoRB from u_k (Algorithm 3, or the authors' loop); stops once the calls reach epochs * n (checked
    after each outer step)."""
    budget = math.ceil(epochs * prob.n)
    u, iterates, calls, k = prob.u0.copy(), [prob.u0.copy()], [0], 0
    log = {"j": set(), "refresh": set(), "mixing": 0.0}
    while calls[-1] < budget:
        inner, cost = RESOLVENTS[snapshot](prob, jax.random.fold_in(key, k), u, eta=eta, gamma=gamma,
                                           steps=inner_steps(k), p=p, log=log)
        lam = 1.0 / (k + 2)
        u = lam * prob.u0 + (1 - lam) * inner[-1]
        iterates.append(u)
        calls.append(calls[-1] + cost)
        k += 1
    return iterates, calls, log


ALG2_CASES = {
    # n = 4 on a box, p = 0.3, M_k = 3 + k mod 4 inner steps.
    "box-p0.3": dict(n=4, k=2, box=True, eta=0.5, gamma=0.05, epochs=40, p=0.3,
                     inner=(lambda k: 3 + k % 4), solver_inner=(lambda k: 3 + k % 4)),
    # n = 40 unconstrained, the defaults: p = 1/n, M_k = max(1, floor(0.05 n log(k + 2))).
    "defaults-n40": dict(n=40, k=1, box=False, eta=0.3, gamma=0.01, epochs=12, p=None,
                         inner=(lambda k: max(1, math.floor(0.05 * 40 * math.log(k + 2)))),
                         solver_inner=None),
}


def snapshot_kwargs(snapshot: str) -> dict:
    """The solver's keyword for a rule: "outer" is the default, so it is left out (checking the default)."""
    return {} if snapshot == "outer" else {"snapshot": snapshot}


@pytest.mark.parametrize("snapshot", RESOLVENTS)
@pytest.mark.parametrize("case", ALG2_CASES)
def test_inexact_halpern_matches_the_transcription(case, snapshot):
    c = ALG2_CASES[case]
    prob = NumpyProblem(c["n"], c["k"], seed=3, box=c["box"])
    key = jax.random.key(7)
    p = 1.0 / c["n"] if c["p"] is None else c["p"]
    iterates, calls, log = inexact_halpern(prob, key, eta=c["eta"], gamma=c["gamma"], epochs=c["epochs"],
                                           inner_steps=c["inner"], p=p, snapshot=snapshot)
    budget = math.ceil(c["epochs"] * c["n"])
    result = H.inexact_halpern(prob.solver_problem(), key, eta=c["eta"], gamma=c["gamma"],
                               epochs=c["epochs"], inner_steps=c["solver_inner"], p=c["p"],
                               num_records=budget, **snapshot_kwargs(snapshot))   # a record per outer step
    assert len(iterates) >= 8
    assert len(log["j"]) >= 3 and log["mixing"] > 1e-3                       # sampled, and w != v
    if case == "box-p0.3":
        assert log["refresh"] == {True, False}                               # both snapshot branches
    check_iterates(result, iterates, calls, prob)


@pytest.mark.parametrize("snapshot", RESOLVENTS)
def test_vr_forb_matches_the_transcription_step_by_step(snapshot):
    prob = NumpyProblem(5, 2, seed=4, box=True)
    key, u = jax.random.key(11), prob.u0 + 0.2
    log = {"j": set(), "refresh": set(), "mixing": 0.0}
    want, want_calls = RESOLVENTS[snapshot](prob, key, u, eta=0.7, gamma=0.04, steps=12, p=0.25, log=log)
    assert log["refresh"] == {True, False} and log["mixing"] > 0.01
    problem = prob.solver_problem()
    run = jax.jit(lambda m: H.vr_forb_resolvent(problem, key, jnp.asarray(u), eta=0.7, gamma=0.04,
                                                num_steps=m, p=0.25, **snapshot_kwargs(snapshot)))
    for m, v in enumerate(want, start=1):
        np.testing.assert_allclose(np.asarray(run(m)[0]), v, rtol=0, atol=1e-12, err_msg=f"step {m}")
    assert int(run(len(want))[1]) == want_calls


def test_the_two_snapshot_rules_differ_and_bad_rules_are_refused():
    """On the step-by-step case the rules give different iterates (so each test above pins its own
    rule), and an unknown rule is a clear error."""
    prob = NumpyProblem(5, 2, seed=4, box=True)
    key, u = jax.random.key(11), jnp.asarray(prob.u0 + 0.2)
    runs = {s: H.vr_forb_resolvent(prob.solver_problem(), key, u, eta=0.7, gamma=0.04, num_steps=12,
                                   p=0.25, snapshot=s) for s in RESOLVENTS}
    assert float(jnp.abs(runs["outer"][0] - runs["paper"][0]).max()) > 1e-3
    assert int(runs["outer"][1]) == int(runs["paper"][1])             # same draws, same refresh cost
    with pytest.raises(ValueError, match="snapshot must be one of"):
        H.inexact_halpern(prob.solver_problem(), key, eta=0.7, gamma=0.04, epochs=1, snapshot="v")


# --------------------------------------------------------------------------------------------------
# Algorithm 1: Halpern with the PAGE estimator.


def default_full_pass_prob(k: int, n: int) -> float:
    """p_k = 1 for k <= 1, 4/(k+4) while k - 1 <= sqrt(n), then 4/(sqrt(n) + 5)."""
    if k <= 1:
        return 1.0
    return 4.0 / (k + 4.0) if k - 1 <= math.sqrt(n) else 4.0 / (math.sqrt(n) + 5.0)


def halpern_page(prob: NumpyProblem, key, *, eta, epochs):
    """Algorithm 1: F~_k = F(u_k) with probability p_k, else F~_{k-1} + (1/b) sum_{j in S_k}
    (F_j(u_k) - F_j(u_{k-1})) with |S_k| = b = floor(sqrt n) drawn without replacement;
    u_{k+1} = P(lam_k u0 + (1 - lam_k) u_k - eta F~_k), lam_k = 2/(k+4)."""
    n, b = prob.n, math.isqrt(prob.n)
    budget = math.ceil(epochs * n)
    u, u_prev, estimate = prob.u0.copy(), prob.u0.copy(), np.zeros(prob.d)
    iterates, calls, branches, coins, k = [prob.u0.copy()], [0], [], [], 0
    while calls[-1] < budget:
        draws = uniform_draws(jax.random.fold_in(key, k), (n + 1,))
        coins.append(draws[n])
        if draws[n] < default_full_pass_prob(k, n):
            estimate, cost = prob.full(u), n
            branches.append("full")
        else:
            batch = np.argsort(-draws[:n], kind="stable")[:b]              # the b largest sort keys
            estimate = estimate + sum(prob.component(j, u) - prob.component(j, u_prev) for j in batch) / b
            cost = 2 * b
            branches.append("minibatch")
        lam = 2.0 / (k + 4)
        u_prev, u = u, prob.project(lam * prob.u0 + (1 - lam) * u - eta * estimate)
        iterates.append(u)
        calls.append(calls[-1] + cost)
        k += 1
    return iterates, calls, branches, coins


@pytest.mark.parametrize("box", [True, False], ids=["box", "unconstrained"])
def test_halpern_page_matches_the_transcription(box):
    prob = NumpyProblem(9, 2, seed=5, box=box)                               # b = 3
    key = jax.random.key(8)
    iterates, calls, branches, coins = halpern_page(prob, key, eta=0.2, epochs=12)
    result = H.halpern_page(prob.solver_problem(), key, eta=0.2, epochs=12, num_records=12 * 9)
    assert branches.count("minibatch") >= 5 and branches[2:].count("full") >= 1
    # The key is one whose coins probe p_k: a coin lands between 4/(k+5) and 4/(k+4) for some k in
    # the 4/(k+4) phase, and one between 4/(sqrt n + 6) and 4/(sqrt n + 5) in the last phase, so a
    # schedule shifted by one changes a branch.
    assert any(4 / (k + 5) <= coins[k] < 4 / (k + 4) for k in range(2, 5))
    assert any(4 / 9 <= c < 4 / 8 for c in coins[5:])
    check_iterates(result, iterates, calls, prob)
