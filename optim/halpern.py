"""Variance-reduced Halpern iteration and its baselines for finite-sum monotone inclusions.

The problem is to find :math:`u^*` with

.. math::
    0 \\in F(u^*) + G(u^*), \\qquad F = \\frac1n \\sum_{i=1}^n F_i,

with :math:`F` monotone (each solver states what more it needs) and :math:`G` maximally monotone and
given by its resolvent. Here :math:`G` is the normal cone of a closed convex set :math:`C`, so
:math:`J_{\\tau G} = \\Pi_C` for every :math:`\\tau > 0` (the identity when unconstrained). Progress
is measured by the forward-backward residual with step 1, computable and zero exactly at solutions,

.. math::
    r(u) = \\| u - \\Pi_C(u - F(u)) \\|   \\quad (= \\|F(u)\\| \\text{ unconstrained}),

against oracle calls counted in *epochs*: component evaluations :math:`F_i(u)` divided by :math:`n`
(a full pass :math:`F(u)` costs :math:`n`).

Solvers (all jitted ``lax`` loops, randomness from a ``jax.random`` key, run until an epoch budget):

* ``halpern_page``: Algorithm 1 of the paper, Halpern anchoring with the PAGE estimator (cocoercive F);
* ``inexact_halpern``: Algorithm 2, Halpern over a resolvent approximated by VR-FoRB (Algorithm 3,
  ``vr_forb_resolvent``; monotone Lipschitz F). Its snapshot refresh defaults to the authors' code
  (``snapshot="outer"``: w <- the outer point u); ``snapshot="paper"`` is Algorithm 3 (w <- v_{t+1});
* ``extragradient`` (EG, Korpelevich 1976), ``extra_anchored_gradient`` (EAG, Yoon & Ryu 2021) and
  ``vr_extragradient`` (loopless SVRG extragradient, Alacaoglu & Malitsky 2022): the baselines.

Paper: X. Cai, A. Alacaoglu, J. Diakonikolas, "Variance Reduced Halpern Iteration for Finite-Sum
Monotone Inclusions", ICLR 2024, arXiv 2310.02987. Default parameters follow the authors' experiment
code (zephyr-cai/Finite-Sum-Halpern-Iteration); step sizes depend on the problem and are required.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array
Schedule = Callable[[Array], Array]      # iteration counter k (int32 scalar) -> value

_MAX_CALLS = 2**30                       # int32 call counter, with room for the last step's overshoot


def _identity(u: Array) -> Array:
    return u


# --------------------------------------------------------------------------------------------------
# Problems


@dataclasses.dataclass(frozen=True, eq=False)
class FiniteSumProblem:
    """The inclusion :math:`0 \\in \\frac1n\\sum_i F_i(u) + N_C(u)`, as the solvers see it.

    Attributes:
      n: number of components :math:`F_i`.
      full: ``u (d,) -> F(u) (d,)``, the mean of the components (costs ``n`` oracle calls).
      components: ``(idx (b,) int, u (d,)) -> (b, d)``, the stacked :math:`F_i(u)` for ``i`` in ``idx``
        (costs ``b`` calls). Must average to ``full``: :math:`\\frac1n\\sum_{i<n} F_i = F`.
      u0: starting point (and Halpern anchor), shape ``(d,)``, in ``C``; its dtype is the solvers'.
      project: :math:`\\Pi_C = J_{\\tau G}`, ``(d,) -> (d,)``; the identity when unconstrained.
    """

    n: int
    full: Callable[[Array], Array]
    components: Callable[[Array, Array], Array]
    u0: Array
    project: Callable[[Array], Array] = _identity

    def __post_init__(self):
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"FiniteSumProblem.n must be a positive int (the number of components), "
                             f"got {self.n!r}")
        if jnp.ndim(self.u0) != 1:
            raise ValueError(f"FiniteSumProblem.u0 must be a vector (d,), got shape {jnp.shape(self.u0)}; "
                             f"flatten the variables (e.g. u = concat(x, y))")


def linear_problem(matrix: Array, offset: Array, n: int, u0: Array,
                   project: Callable[[Array], Array] = _identity) -> FiniteSumProblem:
    """The affine operator :math:`F(u) = Mu + q` split into ``n`` components by coordinates.

    With :math:`d = kn`, component :math:`i` owns the coordinates :math:`S_i = \\{i, i+n, \\dots,
    i+(k-1)n\\}` (for a game :math:`u = (x, y)` with ``k = 2``: :math:`x_i` and :math:`y_i`) and

    .. math::
        F_i(u) = n\\, M_{:, S_i} u_{S_i} + q, \\qquad \\frac1n\\sum_i F_i(u) = Mu + q,

    the column sampling of the paper's experiments (Cai et al. 2024, Sec. 5).

    Args:
      matrix: ``M``, shape ``(d, d)``.
      offset: ``q``, shape ``(d,)``.
      n: number of components; must divide ``d``.
      u0: starting point ``(d,)``.
      project: :math:`\\Pi_C`.

    Returns:
      A ``FiniteSumProblem``.
    """
    matrix, offset = jnp.asarray(matrix), jnp.asarray(offset)
    d = matrix.shape[0]
    if matrix.ndim != 2 or matrix.shape != (d, d) or offset.shape != (d,) or jnp.shape(u0) != (d,):
        raise ValueError(f"linear_problem needs M (d, d), q (d,) and u0 (d,); got {matrix.shape}, "
                         f"{offset.shape} and {jnp.shape(u0)}")
    if n < 1 or d % n:
        raise ValueError(f"the number of components n={n} must divide the dimension d={d}")
    k = d // n
    rows = matrix.T                                           # (d, d): rows[j] = column j of M
    owned = n * jnp.arange(k)                                 # (k,) offsets of S_i - i

    def full(u: Array) -> Array:
        return matrix @ u + offset

    def components(idx: Array, u: Array) -> Array:
        cols = idx[:, None] + owned[None, :]                  # (b, k) coordinates owned by idx
        return n * jnp.einsum("bkd,bk->bd", rows[cols], u[cols]) + offset

    return FiniteSumProblem(n=n, full=full, components=components, u0=jnp.asarray(u0), project=project)


def project_simplex(v: Array, radius: float = 1.0, unrolled_steps: int = 8) -> Array:
    """Euclidean projection onto the simplex :math:`\\{x \\ge 0, \\sum_i x_i = r\\}` (last axis).

    The projection is :math:`\\max(v - \\theta^*, 0)` with :math:`\\theta^*` the root of the convex,
    decreasing, piecewise-linear :math:`f(\\theta) = \\sum_i \\max(v_i - \\theta, 0) - r`. Newton's
    method on :math:`f` from the lower bound :math:`\\theta_0 = (\\sum_i v_i - r)/m` is Michelot's
    algorithm (Michelot 1986; Condat 2016, "Fast projection onto the simplex and the l1 ball"):

    .. math::
        S_t = \\{i : v_i > \\theta_t\\}, \\qquad
        \\theta_{t+1} = \\Big(\\sum_{i \\in S_t} v_i - r\\Big) / |S_t|,

    increasing to :math:`\\theta^*` and exact once :math:`S_{t+1} = S_t` (at most :math:`m` steps,
    typically 4-8). ``unrolled_steps`` steps are unrolled (cheap on CPU, where a sort of 500 numbers
    costs ten times more); a ``while_loop`` finishes the rare rows that need more.

    Args:
      v: array ``(..., m)``; each row along the last axis is projected.
      radius: :math:`r > 0`.
      unrolled_steps: Newton steps before the ``while_loop`` (affects speed only).

    Returns:
      The projection, same shape as ``v``.
    """
    m = v.shape[-1]

    def newton(theta):                                        # (..., 1) -> (..., 1)
        inside = v > theta                                    # (..., m)
        count = jnp.maximum(jnp.sum(inside, axis=-1, keepdims=True), 1).astype(v.dtype)
        return (jnp.sum(jnp.where(inside, v, 0), axis=-1, keepdims=True) - radius) / count

    theta = (jnp.sum(v, axis=-1, keepdims=True) - radius) / m     # (..., 1), theta_0 <= theta*
    for _ in range(unrolled_steps):
        theta = newton(theta)

    def unfinished(carry):
        theta, step = carry
        return jnp.any(newton(theta) != theta) & (step < m)

    theta, _ = lax.while_loop(unfinished, lambda c: (newton(c[0]), c[1] + 1), (theta, 0))
    return jnp.maximum(v - theta, 0)


def residual(problem: FiniteSumProblem, u: Array) -> Array:
    """The forward-backward residual with step 1, :math:`\\|u - \\Pi_C(u - F(u))\\|`.

    Zero exactly at solutions of :math:`0 \\in F(u) + N_C(u)`; equals :math:`\\|F(u)\\|` when
    unconstrained. This is the "operator norm" plotted in Cai et al. 2024, Fig. 1. Not counted as
    oracle calls (it is monitoring).
    """
    return jnp.linalg.norm(u - problem.project(u - problem.full(u)))


# --------------------------------------------------------------------------------------------------
# Results


class History(NamedTuple):
    """Residuals recorded at regular intervals of oracle calls; unused slots are padding.

    Attributes:
      calls: ``(slots,)`` int32, component evaluations so far; ``-1`` in unused slots.
      epochs: ``(slots,)``, ``calls / n``; NaN in unused slots.
      residual: ``(slots,)``, :math:`r(u)` of the iterate at that moment; NaN in unused slots.
      count: number of used slots (the first ``count`` entries).
    """

    calls: Array
    epochs: Array
    residual: Array
    count: Array

    def valid(self) -> tuple[np.ndarray, np.ndarray]:
        """(epochs, residual) of the used slots, as NumPy arrays."""
        c = int(self.count)
        return np.asarray(self.epochs)[:c], np.asarray(self.residual)[:c]


class SolverResult(NamedTuple):
    """A solver's output: the final iterate, its history and what it cost.

    Attributes:
      u: final iterate ``(d,)``.
      history: ``History``; its last used entry is the final iterate.
      calls: total component evaluations (int32), at least ``epochs * n``.
      steps: iterations taken (outer iterations for ``inexact_halpern``).
    """

    u: Array
    history: History
    calls: Array
    steps: Array


def _budget_calls(epochs: float, n: int) -> int:
    if not (isinstance(epochs, (int, float)) and math.isfinite(epochs) and epochs > 0):
        raise ValueError(f"epochs must be a positive number, got {epochs!r}")
    budget = math.ceil(epochs * n)
    if budget > _MAX_CALLS:
        raise ValueError(f"epochs={epochs} with n={n} is {budget:,} oracle calls, more than the int32 "
                         f"counter allows ({_MAX_CALLS:,}); lower the budget")
    return budget


def _check_problem(problem: FiniteSumProblem) -> None:
    """Shapes of F, the components and the projection, checked abstractly before anything runs."""
    d = problem.u0.shape[0]
    u = jax.ShapeDtypeStruct((d,), jnp.result_type(problem.u0))
    for name, fn, args, want in (
            ("full(u)", problem.full, (u,), (d,)),
            ("components(idx, u) with idx of shape (2,)", problem.components,
             (jax.ShapeDtypeStruct((2,), jnp.int32), u), (2, d)),
            ("project(u)", problem.project, (u,), (d,))):
        try:
            shape = jax.eval_shape(fn, *args).shape
        except Exception as e:                                   # noqa: BLE001 -- re-raised with context
            raise ValueError(f"FiniteSumProblem.{name} fails on u0 of shape ({d},): {e}") from e
        if shape != want:
            raise ValueError(f"FiniteSumProblem.{name} must return shape {want}, got {shape}")


def _check_step(name: str, value: float) -> None:
    if not (isinstance(value, (int, float, np.floating)) and math.isfinite(value) and value > 0):
        raise ValueError(f"the step {name} must be a positive number, got {value!r}")


def _run(problem: FiniteSumProblem, key: Array, epochs: float, num_records: int,
         init: Callable[[Array], tuple[tuple, Array]],
         step: Callable[[tuple, Array], tuple[tuple, Array]]) -> SolverResult:
    """The loop every solver shares: ``state = init(key)``, then ``state, cost = step(state, k)``
    while fewer than ``epochs * n`` calls were made. ``state[0]`` is the current iterate. The residual
    is recorded at ``u0`` (0 calls), each time the call count crosses a multiple of
    ``budget // num_records`` and at the end."""
    n = problem.n
    budget = _budget_calls(epochs, n)
    dtype = jnp.result_type(problem.u0)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"u0 must be a floating-point vector, got dtype {dtype}")
    _check_problem(problem)
    if num_records < 1:
        raise ValueError(f"num_records must be >= 1, got {num_records}")
    interval = max(1, budget // num_records)
    slots = budget // interval + 4

    def record(hist: History, calls: Array, u: Array) -> History:
        i = jnp.minimum(hist.count, slots - 1)
        return History(calls=hist.calls.at[i].set(calls),
                       epochs=hist.epochs.at[i].set(calls.astype(dtype) / n),
                       residual=hist.residual.at[i].set(residual(problem, u).astype(dtype)),
                       count=jnp.minimum(hist.count + 1, slots))

    def body(carry):
        state, k, calls, next_record, hist = carry
        state, cost = step(state, k)
        calls = calls + cost
        due = calls >= next_record
        hist = lax.cond(due, lambda h: record(h, calls, state[0]), lambda h: h, hist)
        next_record = jnp.where(due, (calls // interval + 1) * interval, next_record)
        return state, k + 1, calls, next_record, hist

    def solve(key: Array) -> SolverResult:
        hist = History(calls=jnp.full((slots,), -1, jnp.int32), epochs=jnp.full((slots,), jnp.nan, dtype),
                       residual=jnp.full((slots,), jnp.nan, dtype), count=jnp.int32(0))
        hist = record(hist, jnp.int32(0), problem.u0)
        state, calls = init(key)
        calls = jnp.asarray(calls, jnp.int32)
        carry = (state, jnp.int32(0), calls, (calls // interval + 1) * interval, hist)
        state, k, calls, _, hist = lax.while_loop(lambda c: c[2] < budget, body, carry)
        last = hist.calls[hist.count - 1]
        hist = lax.cond(last != calls, lambda h: record(h, calls, state[0]), lambda h: h, hist)
        return SolverResult(u=state[0], history=hist, calls=calls, steps=k)

    return jax.jit(solve)(key)


def _index_and_coin(key: Array, n: int, p: float) -> tuple[Array, Array]:
    """A uniform index in ``[0, n)`` as a ``(1,)`` array and a coin that is True with probability
    ``p``, from one uniform draw each (cheaper to compile and run than randint and bernoulli)."""
    draws = jax.random.uniform(key, (2,))
    j = jnp.minimum(jnp.floor(draws[:1] * n).astype(jnp.int32), n - 1)                 # (1,)
    return j, draws[1] < p


def _check_batch(batch_size: int, n: int) -> None:
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [1, n={n}], got {batch_size}")


# --------------------------------------------------------------------------------------------------
# Building blocks


def halpern_iteration(operator: Callable[[Array], Array], u0: Array, num_steps: int,
                      anchor: Schedule | None = None) -> tuple[Array, Array]:
    """Exact Halpern iteration for a nonexpansive map :math:`T` (Halpern 1967):

    .. math::
        u_{k+1} = \\lambda_k u_0 + (1 - \\lambda_k) T u_k, \\qquad \\lambda_k = \\frac{1}{k+2}.

    With this anchor, :math:`\\|u_k - Tu_k\\| \\le 2\\|u_0 - u^*\\|/(k+1)` for every fixed point
    :math:`u^*` and every :math:`k \\ge 0` (Lieder 2021; Cai et al. 2024, Sec. 3). Algorithm 2 is this
    iteration with :math:`T = J_{\\eta(F+G)}` evaluated inexactly.

    Args:
      operator: :math:`T`, ``(d,) -> (d,)``.
      u0: starting point and anchor ``(d,)``.
      num_steps: number of updates.
      anchor: ``k -> lambda_k``; default :math:`1/(k+2)`.

    Returns:
      ``(u_K, residuals)`` with ``residuals[k]`` :math:`= \\|u_k - Tu_k\\|` for ``k = 0..num_steps``.
    """
    anchor = anchor or (lambda k: 1.0 / (k + 2.0))
    u0 = jnp.asarray(u0)

    def body(u, k):
        tu = operator(u)
        lam = jnp.asarray(anchor(k), u.dtype)
        return lam * u0 + (1 - lam) * tu, jnp.linalg.norm(u - tu)

    u, res = lax.scan(body, u0, jnp.arange(num_steps, dtype=jnp.int32))
    return u, jnp.append(res, jnp.linalg.norm(u - operator(u)))


def page_estimator(problem: FiniteSumProblem, key: Array, u: Array, u_prev: Array, estimate_prev: Array,
                   *, batch_size: int, p: Array | float) -> tuple[Array, Array]:
    """The PAGE estimator of :math:`F(u_k)` (Li, Bao, Zhang & Richtarik 2021; Cai et al. 2024, Alg. 1):

    .. math::
        \\tilde F_k = \\begin{cases} F(u_k) & \\text{with probability } p, \\\\
        \\tilde F_{k-1} + \\frac1b \\sum_{j \\in S_k} \\big(F_j(u_k) - F_j(u_{k-1})\\big) & \\text{otherwise,}
        \\end{cases}

    :math:`S_k` drawn uniformly without replacement, :math:`|S_k| = b`. Given the past,
    :math:`\\mathbb E \\tilde F_k = F(u_k) + (1-p)(\\tilde F_{k-1} - F(u_{k-1}))`: unbiased whenever
    the previous estimate was.

    Args:
      problem: the ``FiniteSumProblem``.
      key: ``jax.random`` key (coin and minibatch).
      u, u_prev: :math:`u_k` and :math:`u_{k-1}`, ``(d,)``.
      estimate_prev: :math:`\\tilde F_{k-1}`, ``(d,)``.
      batch_size: :math:`b`, in ``[1, n]``.
      p: probability of a full pass.

    Returns:
      ``(estimate, calls)``: :math:`\\tilde F_k` and its cost, ``n`` or ``2b`` (int32).
    """
    n = problem.n
    _check_batch(batch_size, n)
    draws = jax.random.uniform(key, (n + 1,))                 # (n + 1,): n sort keys and the coin

    def full_pass(_):
        return problem.full(u), jnp.int32(n)

    def minibatch(_):
        _, idx = lax.top_k(draws[:n], batch_size)             # (b,) distinct, uniform subset
        diff = problem.components(idx, u) - problem.components(idx, u_prev)             # (b, d)
        return estimate_prev + jnp.mean(diff, axis=0), jnp.int32(2 * batch_size)

    return lax.cond(draws[n] < p, full_pass, minibatch, None)


SNAPSHOT_RULES = ("outer", "paper")


def _check_snapshot(snapshot: str) -> None:
    if snapshot not in SNAPSHOT_RULES:
        raise ValueError(f"snapshot must be one of {SNAPSHOT_RULES}, got {snapshot!r}")


def vr_forb_resolvent(problem: FiniteSumProblem, key: Array, u: Array, *, eta: float, gamma: float,
                      num_steps: Array | int, p: float | None = None,
                      snapshot: str = "outer") -> tuple[Array, Array]:
    """VR-FoRB (Alacaoglu & Malitsky 2022; Cai et al. 2024, Alg. 3) for the resolvent
    :math:`J_{\\eta(F+G)}(u)`, the solution :math:`v` of the 1-strongly monotone inclusion

    .. math::
        0 \\in \\Phi(v) + \\eta G(v), \\qquad \\Phi(v) = \\eta F(v) + v - u
        = \\frac1n \\sum_j \\Phi_j(v), \\quad \\Phi_j(v) = \\eta F_j(v) + v - u.

    From :math:`v_0 = w_0 = w_{-1} = u`, with :math:`\\alpha = 1 - p` and :math:`j_t` uniform,

    .. math::
        \\bar v_t &= \\alpha v_t + (1-\\alpha) w_t, \\\\
        v_{t+1} &= J_{\\gamma\\eta G}\\big(\\bar v_t - \\gamma[\\Phi(w_t) + \\Phi_{j_t}(v_t)
                   - \\Phi_{j_t}(w_{t-1})]\\big), \\\\
        w_{t+1} &= v_{t+1} \\text{ with probability } p, \\text{ else } w_t.

    That is Algorithm 3 as the paper prints it (``snapshot="paper"``). The default,
    ``snapshot="outer"``, is what the authors' code does (zephyr-cai/Finite-Sum-Halpern-Iteration,
    ``subsolver_FoRB`` in both ``matrix_game.py`` and ``quadratic_programming.py``): a refresh sets
    ``wx, wy = x, y``, the *outer* point :math:`u`, not :math:`v_{t+1}`. So there
    :math:`w_t = w_{t-1} = u` throughout, :math:`\\bar v_t = \\alpha v_t + p\\, u`, the estimator is
    :math:`\\Phi(u) + \\Phi_{j_t}(v_t) - \\Phi_{j_t}(u)`, and each refresh still costs ``n`` calls
    (their code recomputes :math:`\\Phi(u)`, the same value; here it is kept, and counted). Its
    noise-free fixed point solves :math:`0 \\in \\gamma\\Phi(v) + p(v - u) + G(v)`, i.e.
    :math:`v = J_{\\eta'(F+G)}(u)` with :math:`\\eta' = \\eta\\gamma/(\\gamma + p)` (a shorter resolvent
    step), and the estimator's variance does not vanish while :math:`v \\ne u`: a quirk, kept as the
    default because the paper's curves came from that code.

    Cost: ``n`` for :math:`\\Phi(w_0)`, 2 per step, ``n`` per snapshot refresh (either rule).

    Args:
      problem: the ``FiniteSumProblem``.
      key: ``jax.random`` key.
      u: the point whose resolvent is sought ``(d,)``.
      eta: :math:`\\eta > 0`, the resolvent's scale.
      gamma: :math:`\\gamma > 0`, VR-FoRB's step.
      num_steps: number of steps :math:`M` (may be traced).
      p: snapshot probability; default ``1/n``.
      snapshot: what a refresh sets the snapshot to: ``"outer"`` (default; the authors' code,
        :math:`w \\leftarrow u`) or ``"paper"`` (Algorithm 3, :math:`w \\leftarrow v_{t+1}`).

    Returns:
      ``(v_M, calls)``.
    """
    _check_snapshot(snapshot)
    n = problem.n
    p = 1.0 / n if p is None else p
    alpha = 1.0 - p

    def phi(v):
        return eta * problem.full(v) + v - u

    def body(t, carry):
        v, w, w_prev, phi_w, calls = carry
        j, refresh = _index_and_coin(jax.random.fold_in(key, t), n, p)
        diff = eta * (problem.components(j, v) - problem.components(j, w_prev))[0] + v - w_prev
        v_bar = alpha * v + (1 - alpha) * w
        v_next = problem.project(v_bar - gamma * (phi_w + diff))
        if snapshot == "paper":
            w_next, phi_next = lax.cond(refresh, lambda: (v_next, phi(v_next)), lambda: (w, phi_w))
        else:                                                 # authors' code: w <- u, i.e. w stays u
            w_next, phi_next = w, phi_w
        calls = calls + 2 + jnp.where(refresh, n, 0).astype(jnp.int32)
        return v_next, w_next, w, phi_next, calls

    carry = (u, u, u, phi(u), jnp.int32(n))
    v, _, _, _, calls = lax.fori_loop(0, num_steps, body, carry)
    return v, calls


# --------------------------------------------------------------------------------------------------
# Solvers


def halpern_page(problem: FiniteSumProblem, key: Array, *, eta: float, epochs: float,
                 batch_size: int | None = None, anchor: Schedule | None = None,
                 full_pass_prob: Schedule | None = None, num_records: int = 200) -> SolverResult:
    """Algorithm 1 of Cai et al. 2024: Halpern anchoring with the PAGE estimator (cocoercive F).

    .. math::
        u_{k+1} = \\Pi_C\\big(\\lambda_k u_0 + (1-\\lambda_k) u_k - \\eta \\tilde F_k\\big),
        \\qquad \\lambda_k = \\frac{2}{k+4},

    with :math:`\\tilde F_k` the PAGE estimator (``page_estimator``) with minibatch
    :math:`b = \\lfloor\\sqrt n\\rfloor` and full-pass probability :math:`p_k = 1` for :math:`k \\le 1`,
    :math:`4/(k+4)` while :math:`k - 1 \\le \\sqrt n`, then :math:`4/(\\sqrt n + 5)`.
    Theory: :math:`\\eta = \\Theta(1/L)`; the paper's experiments use :math:`5/\\|A\\|_F` (matrix game)
    and 0.3 (QP).

    The analysis needs F cocoercive (on average). A bilinear game is not: near an interior
    equilibrium the anchored forward step is expansive (:math:`|1 - \\lambda_k - i\\eta\\sigma| > 1`
    once :math:`\\lambda_k < \\eta^2\\sigma^2/2`), so the residual bottoms out and grows again (checked
    on rock-paper-scissors); use ``inexact_halpern`` there.

    Args:
      problem: the ``FiniteSumProblem``.
      key: ``jax.random`` key.
      eta: step :math:`\\eta`.
      epochs: budget in epochs (oracle calls / n).
      batch_size: :math:`b`; default :math:`\\lfloor\\sqrt n\\rfloor`.
      anchor: ``k -> lambda_k``; default :math:`2/(k+4)`.
      full_pass_prob: ``k -> p_k``; default the schedule above.
      num_records: about how many residuals to record.

    Returns:
      ``SolverResult``.
    """
    _check_step("eta", eta)
    n = problem.n
    b = batch_size or max(1, math.isqrt(n))
    _check_batch(b, n)
    anchor = anchor or (lambda k: 2.0 / (k + 4.0))
    sqrt_n = math.sqrt(n)
    full_pass_prob = full_pass_prob or (lambda k: jnp.where(
        k <= 1, 1.0, jnp.where(k - 1 <= sqrt_n, 4.0 / (k + 4.0), 4.0 / (sqrt_n + 5.0))))
    u0 = problem.u0

    def init(key):
        return (u0, u0, jnp.zeros_like(u0), key), 0

    def step(state, k):
        u, u_prev, estimate, key = state
        estimate, cost = page_estimator(problem, jax.random.fold_in(key, k), u, u_prev, estimate,
                                        batch_size=b, p=full_pass_prob(k))
        lam = jnp.asarray(anchor(k), u.dtype)
        u_next = problem.project(lam * u0 + (1 - lam) * u - eta * estimate)
        return (u_next, u, estimate, key), cost

    return _run(problem, key, epochs, num_records, init, step)


def inexact_halpern(problem: FiniteSumProblem, key: Array, *, eta: float, gamma: float, epochs: float,
                    inner_steps: Schedule | None = None, anchor: Schedule | None = None,
                    p: float | None = None, snapshot: str = "outer",
                    num_records: int = 200) -> SolverResult:
    """Algorithm 2 of Cai et al. 2024: inexact Halpern iteration over the resolvent (monotone
    Lipschitz F):

    .. math::
        u_{k+1} = \\lambda_k u_0 + (1-\\lambda_k)\\, \\tilde J_{\\eta(F+G)}(u_k),
        \\qquad \\lambda_k = \\frac{1}{k+2},

    where :math:`\\tilde J` is :math:`M_k` steps of VR-FoRB (``vr_forb_resolvent``) from :math:`u_k`,
    :math:`M_k = \\max(1, \\lfloor 0.05\\, n \\log(k+2) \\rfloor)` (the log growth meets the paper's
    decreasing inexactness tolerance). The paper's experiments use :math:`\\eta = \\sqrt n/\\|A\\|_F`,
    :math:`\\gamma = 5\\sqrt{p(1-p)}/(\\sqrt n + 1)` (matrix game) and :math:`\\eta = \\sqrt n`,
    :math:`\\gamma = 10^{-3}` (QP).

    Args:
      problem: the ``FiniteSumProblem``.
      key: ``jax.random`` key.
      eta: resolvent scale :math:`\\eta`.
      gamma: VR-FoRB step :math:`\\gamma`.
      epochs: budget in epochs (oracle calls / n); checked after each outer iteration.
      inner_steps: ``k -> M_k`` (int32); default above.
      anchor: ``k -> lambda_k``; default :math:`1/(k+2)`.
      p: VR-FoRB snapshot probability; default ``1/n``.
      snapshot: VR-FoRB's snapshot refresh, ``"outer"`` (default, the authors' code: w <- u_k) or
        ``"paper"`` (Algorithm 3: w <- v_{t+1}); see ``vr_forb_resolvent``.
      num_records: about how many residuals to record (at most one per outer iteration).

    Returns:
      ``SolverResult`` (``steps`` counts outer iterations).
    """
    _check_step("eta", eta)
    _check_step("gamma", gamma)
    _check_snapshot(snapshot)
    n = problem.n
    inner_steps = inner_steps or (lambda k: jnp.maximum(
        1, jnp.floor(0.05 * n * jnp.log(k + 2.0)).astype(jnp.int32)))
    anchor = anchor or (lambda k: 1.0 / (k + 2.0))
    u0 = problem.u0

    def init(key):
        return (u0, key), 0

    def step(state, k):
        u, key = state
        v, cost = vr_forb_resolvent(problem, jax.random.fold_in(key, k), u, eta=eta, gamma=gamma,
                                    num_steps=inner_steps(k), p=p, snapshot=snapshot)
        lam = jnp.asarray(anchor(k), u.dtype)
        return (lam * u0 + (1 - lam) * v, key), cost

    return _run(problem, key, epochs, num_records, init, step)


def extragradient(problem: FiniteSumProblem, key: Array | None = None, *, eta: float, epochs: float,
                  num_records: int = 200) -> SolverResult:
    """Extragradient (EG; Korpelevich 1976), deterministic, 2 full passes per iteration:

    .. math::
        \\bar u_k = \\Pi_C(u_k - \\eta F(u_k)), \\qquad u_{k+1} = \\Pi_C(u_k - \\eta F(\\bar u_k)).

    Converges for monotone :math:`L`-Lipschitz F with :math:`\\eta < 1/L`; the paper's experiments
    use :math:`5/\\|A\\|_2` (matrix game) and 0.5 (QP).

    Args:
      problem: the ``FiniteSumProblem``.
      key: unused (accepted so every solver has the same call).
      eta: step :math:`\\eta`.
      epochs: budget in epochs.
      num_records: about how many residuals to record.

    Returns:
      ``SolverResult``.
    """
    del key
    _check_step("eta", eta)

    def step(state, k):
        (u,) = state
        u_bar = problem.project(u - eta * problem.full(u))
        return (problem.project(u - eta * problem.full(u_bar)),), jnp.int32(2 * problem.n)

    return _run(problem, jax.random.key(0), epochs, num_records, lambda _: ((problem.u0,), 0), step)


def extra_anchored_gradient(problem: FiniteSumProblem, key: Array | None = None, *, eta: float,
                            epochs: float, anchor: Schedule | None = None,
                            num_records: int = 200) -> SolverResult:
    """Extra-anchored gradient (EAG; Yoon & Ryu 2021), deterministic, 2 full passes per iteration:

    .. math::
        \\bar u_k &= \\Pi_C\\big(\\lambda_k u_0 + (1-\\lambda_k) u_k - \\eta F(u_k)\\big), \\\\
        u_{k+1} &= \\Pi_C\\big(\\lambda_k u_0 + (1-\\lambda_k) u_k - \\eta F(\\bar u_k)\\big),
        \\qquad \\lambda_k = \\frac{1}{k+2}.

    The paper's experiments use :math:`\\eta = 5/\\|A\\|_2` (matrix game) and 0.3 (QP).

    Args:
      problem: the ``FiniteSumProblem``.
      key: unused.
      eta: step :math:`\\eta`.
      epochs: budget in epochs.
      anchor: ``k -> lambda_k``; default :math:`1/(k+2)`.
      num_records: about how many residuals to record.

    Returns:
      ``SolverResult``.
    """
    del key
    _check_step("eta", eta)
    anchor = anchor or (lambda k: 1.0 / (k + 2.0))
    u0 = problem.u0

    def step(state, k):
        (u,) = state
        lam = jnp.asarray(anchor(k), u.dtype)
        anchored = lam * u0 + (1 - lam) * u
        u_bar = problem.project(anchored - eta * problem.full(u))
        return (problem.project(anchored - eta * problem.full(u_bar)),), jnp.int32(2 * problem.n)

    return _run(problem, jax.random.key(0), epochs, num_records, lambda _: ((u0,), 0), step)


def vr_extragradient(problem: FiniteSumProblem, key: Array, *, gamma: float, epochs: float,
                     p: float | None = None, num_records: int = 200) -> SolverResult:
    """Loopless variance-reduced extragradient (VR-EG; Alacaoglu & Malitsky 2022, Alg. 1):

    .. math::
        \\bar u_k &= \\alpha u_k + (1-\\alpha) w_k, \\\\
        u_{k+1/2} &= \\Pi_C(\\bar u_k - \\gamma F(w_k)), \\\\
        u_{k+1} &= \\Pi_C\\big(\\bar u_k - \\gamma[F(w_k) + F_{j_k}(u_{k+1/2}) - F_{j_k}(w_k)]\\big), \\\\
        w_{k+1} &= u_{k+1} \\text{ with probability } p, \\text{ else } w_k,

    :math:`w_0 = u_0`, :math:`\\alpha = 1 - p`, :math:`p = 1/n`, :math:`j_k` uniform. Cost: ``n`` for
    :math:`F(w_0)`, 2 per step, ``n`` per snapshot refresh. The paper's experiments use
    :math:`\\gamma = 3\\sqrt p/\\|A\\|_F` (matrix game) and 0.01 (QP).

    Args:
      problem: the ``FiniteSumProblem``.
      key: ``jax.random`` key.
      gamma: step :math:`\\gamma`.
      epochs: budget in epochs.
      p: snapshot probability; default ``1/n``.
      num_records: about how many residuals to record.

    Returns:
      ``SolverResult``.
    """
    _check_step("gamma", gamma)
    n = problem.n
    p = 1.0 / n if p is None else p
    alpha = 1.0 - p

    def init(key):
        u0 = problem.u0
        return (u0, u0, problem.full(u0), key), n

    def step(state, k):
        u, w, f_w, key = state
        j, refresh = _index_and_coin(jax.random.fold_in(key, k), n, p)
        u_bar = alpha * u + (1 - alpha) * w
        u_half = problem.project(u_bar - gamma * f_w)
        diff = (problem.components(j, u_half) - problem.components(j, w))[0]
        u_next = problem.project(u_bar - gamma * (f_w + diff))
        w, f_w = lax.cond(refresh, lambda: (u_next, problem.full(u_next)), lambda: (w, f_w))
        return (u_next, w, f_w, key), 2 + jnp.where(refresh, n, 0).astype(jnp.int32)

    return _run(problem, key, epochs, num_records, init, step)
