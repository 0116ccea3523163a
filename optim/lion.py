"""Lion and the Lion-𝒦 family: the sign (or ∇𝒦) of an interpolated momentum, with decoupled decay.

Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", arXiv 2302.06675), for a
gradient :math:`g_t`, one momentum :math:`m` (tracking :math:`+g`) and decoupled weight decay
:math:`\\lambda`:

.. math::
    c_t &= \\beta_1 m_{t-1} + (1-\\beta_1) g_t \\\\
    \\theta_t &= \\theta_{t-1} - \\eta_t \\big(\\mathrm{sign}(c_t) + \\lambda \\theta_{t-1}\\big) \\\\
    m_t &= \\beta_2 m_{t-1} + (1-\\beta_2) g_t

Lion-𝒦 (Chen, Liu, Liang, Liu, ICLR 2024, "Lion Secretly Solves Constrained Optimization: As
Lyapunov Predicts", arXiv 2310.05898) replaces ``sign`` by the (sub)gradient of a convex function
𝒦. The paper writes the momentum as tracking the *negative* gradient, :math:`\\tilde m = -c`:

.. math::
    x_{t+1} = x_t + \\eta_t\\big(\\nabla\\mathcal K(\\tilde m_{t+1}) - \\lambda x_t\\big),
    \\qquad \\tilde m_{t+1} = \\beta_1 \\tilde m_t - (1-\\beta_1)\\nabla f(x_t),

so with optax's momentum (tracking :math:`+g`) the direction is :math:`-\\nabla\\mathcal K(-c_t)`,
which is :math:`\\nabla\\mathcal K(c_t)` for every odd ∇𝒦 (all the built-in ones). The iteration
solves

.. math::
    \\min_x\\; f(x) + \\tfrac{1}{\\lambda}\\, \\mathcal K^*(\\lambda x),

first pulling the iterate into the domain of :math:`\\mathcal K^*(\\lambda\\,\\cdot)` at rate
:math:`e^{-\\lambda t}`, then descending inside it. A fixed point satisfies
:math:`\\nabla\\mathcal K(-\\nabla f(x)) = \\lambda x`; for :math:`f = \\tfrac12\\|x-c\\|^2` that is
:math:`\\nabla\\mathcal K(c - x) = \\lambda x` (the oracle of tests/optim/test_lion.py).

optax (>= 0.2.7, required) covers sign, clip and tanh through ``optax.scale_by_lion(mode=...)``, which these
factories use; ``scale_by_lion_k`` is the general transform for any other ∇𝒦 (``"l2"`` or yours).
"""
from __future__ import annotations

import pydoc
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

GradK = Callable[[jax.Array], jax.Array]


# ------------------------------------------------------------------------------------------------
# The built-in 𝒦: each maps one parameter tensor's interpolated momentum c to a direction.
# ------------------------------------------------------------------------------------------------

def sign_grad_k(x: jax.Array) -> jax.Array:
    """∇𝒦 for :math:`\\mathcal K(x) = \\|x\\|_1`: ``sign(x)``. This is Lion itself.

    :math:`\\mathcal K^* = \\iota\\{\\|y\\|_\\infty \\le 1\\}`, so Lion-𝒦 solves
    :math:`\\min f(x)` s.t. :math:`\\|x\\|_\\infty \\le 1/\\lambda` (a box). For
    :math:`f = \\tfrac12\\|x-c\\|^2` the optimum is ``clip(c, -1/λ, 1/λ)``, reached up to the sign
    chattering of size about η.
    """
    return jnp.sign(x)


def clip_grad_k(x: jax.Array) -> jax.Array:
    """∇𝒦 for the Huber 𝒦 (:math:`x_i^2/2` for :math:`|x_i| \\le 1`, :math:`|x_i| - 1/2` beyond):
    ``clip(x, -1, 1)``; optax's ``mode="refined"``.

    :math:`\\mathcal K^*(y) = \\tfrac12\\|y\\|^2 + \\iota\\{\\|y\\|_\\infty \\le 1\\}`, so Lion-𝒦 solves
    :math:`\\min f(x) + \\tfrac{\\lambda}{2}\\|x\\|^2` s.t. :math:`\\|x\\|_\\infty \\le 1/\\lambda`: the box
    of Lion plus a ridge penalty. For :math:`f = \\tfrac12\\|x-c\\|^2` the optimum is
    ``clip(c / (1 + λ), -1/λ, 1/λ)``, reached without chattering.
    """
    return jnp.clip(x, -1.0, 1.0)


def tanh_grad_k(x: jax.Array, beta: float = 1.0) -> jax.Array:
    """∇𝒦 for :math:`\\mathcal K(x) = \\sum_i \\log\\cosh(\\beta x_i)/\\beta`: ``tanh(βx)``; optax's
    ``mode="smooth"`` with ``smooth_beta=β``.

    :math:`\\mathcal K^*(y) = \\tfrac1\\beta\\sum_i \\big[\\tfrac{1+y_i}{2}\\log(1+y_i)
    + \\tfrac{1-y_i}{2}\\log(1-y_i)\\big]` on :math:`\\|y\\|_\\infty \\le 1` (a negative binary
    entropy), so Lion-𝒦 solves :math:`\\min f(x) + \\tfrac{1}{\\lambda\\beta}\\sum_i
    \\big[\\tfrac{1+\\lambda x_i}{2}\\log(1+\\lambda x_i) + \\tfrac{1-\\lambda x_i}{2}\\log(1-\\lambda x_i)\\big]`:
    an entropy-like barrier that keeps :math:`|x_i| < 1/\\lambda` and acts as a ridge
    :math:`\\approx \\tfrac{\\lambda}{2\\beta}x_i^2` near 0. Optimality:
    :math:`\\tanh(\\beta(c_i - x_i)) = \\lambda x_i` for :math:`f = \\tfrac12\\|x-c\\|^2`.
    """
    return jnp.tanh(beta * x)


def l2_grad_k(x: jax.Array) -> jax.Array:
    """∇𝒦 for :math:`\\mathcal K(x) = \\|x\\|_2` of the whole parameter tensor: ``x / ||x||`` (0 at 0),
    i.e. normalised momentum.

    :math:`\\mathcal K^* = \\iota\\{\\|y\\|_2 \\le 1\\}`, so Lion-𝒦 solves :math:`\\min f(x)` s.t.
    :math:`\\|x\\|_2 \\le 1/\\lambda` for every parameter tensor (a ball per tensor). For
    :math:`f = \\tfrac12\\|x-c\\|^2` the optimum is the projection of c on that ball,
    :math:`c \\min(1, 1/(\\lambda\\|c\\|))`. Each step moves a tensor by η in Euclidean norm, so a
    tensor of n entries moves about :math:`\\eta/\\sqrt n` per entry (sign moves η per entry):
    scale the learning rate accordingly.
    """
    norm = jnp.sqrt(jnp.sum(jnp.square(x)))
    safe = jnp.where(norm > 0, norm, 1.0)
    return jnp.where(norm > 0, x / safe, jnp.zeros_like(x))


BUILTIN_K = {"sign": sign_grad_k, "clip": clip_grad_k, "tanh": tanh_grad_k, "l2": l2_grad_k}


def resolve_grad_k(k: str | GradK) -> GradK:
    """A callable ∇𝒦 from a callable or a dotted path (``"jax.nn.soft_sign"``, ``"mypkg.mod.fn"``)."""
    if callable(k):
        return k
    if not isinstance(k, str) or "." not in k:
        raise ValueError(f"lion_k: k must be one of {sorted(BUILTIN_K)}, a dotted path to a function "
                         f"x -> ∇𝒦(x) (e.g. 'jax.nn.soft_sign'), or a callable; got {k!r}")
    obj = pydoc.locate(k)
    if obj is None:
        raise ValueError(f"lion_k: cannot import k={k!r}; give a built-in ({sorted(BUILTIN_K)}) or the "
                         f"dotted path of an importable function x -> ∇𝒦(x)")
    if not callable(obj):
        raise ValueError(f"lion_k: k={k!r} names {type(obj).__name__}, not a function x -> ∇𝒦(x)")
    return obj


# ------------------------------------------------------------------------------------------------
# Transforms.
# ------------------------------------------------------------------------------------------------

class ScaleByLionKState(NamedTuple):
    """State of ``scale_by_lion_k``: the single momentum (an EMA of the gradients, rate b2)."""

    mu: optax.Updates


def _check_betas(b1: float, b2: float) -> None:
    for name, b in (("b1", b1), ("b2", b2)):
        if not 0.0 <= b <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {b}")


def scale_by_lion_k(
    grad_k: GradK,
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
    """Rescale updates by ∇𝒦 of Lion's interpolated momentum (Lion-𝒦, Chen et al. ICLR 2024).

    .. math::
        c_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
        d_t = -\\nabla\\mathcal K(-c_t), \\quad
        m_t = \\beta_2 m_{t-1} + (1-\\beta_2) g_t

    and returns :math:`d_t` (to be scaled by :math:`-\\eta_t`, after adding :math:`\\lambda\\theta`).
    The minus signs translate the paper's momentum of :math:`-\\nabla f` into optax's of
    :math:`+\\nabla f`; they cancel for an odd ∇𝒦. ``grad_k=jnp.sign`` gives ``optax.scale_by_lion``
    bit for bit.

    Args:
      grad_k: ∇𝒦, applied to each parameter tensor (array -> array of the same shape); see
        ``sign_grad_k``, ``clip_grad_k``, ``tanh_grad_k``, ``l2_grad_k``.
      b1: interpolation weight of the momentum in :math:`c_t`.
      b2: decay rate of the momentum.
      mu_dtype: dtype of the momentum; None keeps the parameters' dtype.

    Returns:
      An ``optax.GradientTransformation`` whose state is ``ScaleByLionKState``.
    """
    _check_betas(b1, b2)
    mu_dtype = None if mu_dtype is None else jnp.dtype(mu_dtype)

    def init_fn(params):
        return ScaleByLionKState(mu=optax.tree.zeros_like(params, dtype=mu_dtype))

    def update_fn(updates, state, params=None):
        del params

        def direction(g, m):
            c = (1.0 - b1) * g + b1 * m  # same association as optax.scale_by_lion
            return (-grad_k(-c)).astype(g.dtype)

        new_updates = jax.tree.map(direction, updates, state.mu)
        mu = optax.tree.cast(optax.tree.update_moment(updates, state.mu, b2, 1), mu_dtype)
        return new_updates, ScaleByLionKState(mu=mu)

    return optax.GradientTransformation(init_fn, update_fn)


def _with_decay_and_lr(core, learning_rate, weight_decay):
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    parts = [core]
    if weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay))
    parts.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*parts)


def lion(
    learning_rate: float | optax.Schedule,
    b1: float = 0.9,
    b2: float = 0.99,
    weight_decay: float = 0.0,
    mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
    """Lion with decoupled weight decay:
    :math:`\\theta \\leftarrow \\theta - \\eta(\\mathrm{sign}(c) + \\lambda\\theta)`.

    ``optax.scale_by_lion -> optax.add_decayed_weights(λ) -> optax.scale_by_learning_rate(η)``,
    the chain of ``optax.lion``, whose result it equals bit for bit for the same λ. The difference
    is the default of λ: **0.0** here, as in the paper's code (google/automl ``lion_pytorch.py`` /
    ``lion_optax.py``) and lucidrains/lion-pytorch, where ``optax.lion`` defaults to 1e-3. As the
    decay is multiplied by η, the strength is η·λ: the README's rule is a learning rate 3-10x
    smaller than AdamW's and λ 3-10x larger.

    Args:
      learning_rate: a float or an ``optax.Schedule`` (step -> learning rate).
      b1: interpolation weight of the momentum in the update direction (paper: 0.9; 0.95 for
        stability).
      b2: decay rate of the momentum (paper: 0.99; 0.98 for stability).
      weight_decay: decoupled decay λ (multiplied by the learning rate).
      mu_dtype: dtype of the momentum; None keeps the parameters' dtype.

    Returns:
      An ``optax.GradientTransformation``.
    """
    _check_betas(b1, b2)
    return _with_decay_and_lr(optax.scale_by_lion(b1=b1, b2=b2, mu_dtype=mu_dtype), learning_rate,
                              weight_decay)


def lion_k(
    learning_rate: float | optax.Schedule,
    k: str | GradK = "sign",
    b1: float = 0.9,
    b2: float = 0.99,
    weight_decay: float = 0.0,
    beta: float = 1.0,
    mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
    """Lion-𝒦: :math:`\\theta \\leftarrow \\theta - \\eta(-\\nabla\\mathcal K(-c) + \\lambda\\theta)`
    (Chen, Liu, Liang, Liu, ICLR 2024, arXiv 2310.05898).

    With decoupled decay λ it solves :math:`\\min f(x) + \\tfrac1\\lambda\\mathcal K^*(\\lambda x)`:

    - ``"sign"``: 𝒦 = ‖x‖₁ (Lion), ∇𝒦 = sign(x); min f s.t. ‖x‖∞ ≤ 1/λ.
    - ``"clip"``: Huber 𝒦, ∇𝒦 = clip(x, −1, 1); min f + (λ/2)‖x‖² s.t. ‖x‖∞ ≤ 1/λ.
    - ``"tanh"``: 𝒦 = Σ log cosh(βx)/β, ∇𝒦 = tanh(βx); min f + an entropy barrier on ‖x‖∞ < 1/λ.
    - ``"l2"``: 𝒦 = ‖x‖₂ per parameter tensor, ∇𝒦 = x/‖x‖₂ (normalised momentum);
      min f s.t. ‖x‖₂ ≤ 1/λ for every tensor.

    (details in ``sign_grad_k``, ``clip_grad_k``, ``tanh_grad_k``, ``l2_grad_k``). "sign", "clip"
    and "tanh" use ``optax.scale_by_lion(mode="hard" | "refined" | "smooth")``; "l2" and a
    user-supplied ∇𝒦 use ``scale_by_lion_k``. clip and tanh are not scale-free: for momenta much
    smaller than 1 (resp. 1/β) they act as momentum SGD, so they want a larger learning rate (or β)
    than sign.

    Args:
      learning_rate: a float or an ``optax.Schedule`` (step -> learning rate).
      k: "sign", "clip", "tanh", "l2", or ∇𝒦 itself: a callable array -> array applied to each
        parameter tensor, or the dotted path of one (``"jax.nn.soft_sign"``).
      b1, b2: as in ``lion``.
      weight_decay: decoupled decay λ (multiplied by the learning rate); sets the constraint 1/λ.
      beta: the sharpness β of ``k="tanh"`` (optax's ``smooth_beta``); only valid with "tanh".
      mu_dtype: dtype of the momentum; None keeps the parameters' dtype.

    Returns:
      An ``optax.GradientTransformation``.
    """
    _check_betas(b1, b2)
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if beta != 1.0 and k != "tanh":
        raise ValueError(f"beta={beta} only applies to k='tanh' (got k={k!r}); leave it at 1.0")
    if k == "sign":
        core = optax.scale_by_lion(b1=b1, b2=b2, mu_dtype=mu_dtype)
    elif k == "clip":
        core = optax.scale_by_lion(b1=b1, b2=b2, mu_dtype=mu_dtype, mode="refined")
    elif k == "tanh":
        core = optax.scale_by_lion(b1=b1, b2=b2, mu_dtype=mu_dtype, mode="smooth", smooth_beta=beta)
    elif k == "l2":
        core = scale_by_lion_k(l2_grad_k, b1=b1, b2=b2, mu_dtype=mu_dtype)
    else:
        core = scale_by_lion_k(resolve_grad_k(k), b1=b1, b2=b2, mu_dtype=mu_dtype)
    return _with_decay_and_lr(core, learning_rate, weight_decay)
