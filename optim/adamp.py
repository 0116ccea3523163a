"""AdamP and SGDP: Adam and momentum SGD without the radial part of the step on scale-invariant weights.

Heo, Chun, Oh, Han, Yun, Kim, Uh, Ha, "AdamP: Slowing Down the Slowdown for Momentum Optimizers on
Scale-invariant Weights", ICLR 2021, arXiv 2006.08217; reference code clovaai/AdamP
(``adamp/adamp.py``, ``adamp/sgdp.py``).

A weight followed by a normalisation layer is scale invariant, :math:`f(cw) = f(w)`, so its gradient
is orthogonal to it and its effective step is :math:`\\eta/\\|w\\|^2`. Momentum adds radial cross
terms that inflate :math:`\\|w\\|` and shrink that step prematurely. AdamP / SGDP detect such
weights from the gradient and remove the radial component of the update direction :math:`d`
(Adam's :math:`m/(\\sqrt{v}+\\epsilon)` or SGD's momentum buffer), row by row:

.. math::
    \\text{if } \\max_r \\frac{|\\langle g_r, w_r\\rangle|}{\\|g_r\\|\\,\\|w_r\\|} < \\frac{\\delta}{\\sqrt{n_{\\rm row}}}:
    \\quad d_r \\leftarrow d_r - \\hat w_r\\langle \\hat w_r, d_r\\rangle,
    \\;\\; \\hat w_r = \\frac{w_r}{\\|w_r\\| + \\epsilon},
    \\;\\; \\lambda \\leftarrow \\lambda \\cdot \\texttt{wd\\_ratio}.

The rows are first one per output channel (the channel view) and, if that test fails, the whole
tensor as one row (the layer view); if both fail nothing changes. Tensors with ndim <= 1 (biases,
norm gains) are never projected. Weight decay is decoupled and applied before the step, as in the
reference: AdamP :math:`w \\leftarrow w(1 - \\eta\\lambda r) - \\eta\\, d/(1-\\beta_1^t)`, SGDP
:math:`w \\leftarrow w(1 - \\eta\\lambda r/(1-\\mu)) - \\eta\\, d`, with :math:`r` = wd_ratio on a
projected tensor and 1 otherwise.
SGDP without Nesterov also stores the projected direction as its momentum buffer, as the
reference's in-place projection does (``project_buffer``; see ``sgdp``).

**Output channel axis.** Flax stores kernels with the output channel *last* (``nnx.Linear``:
(in, out); ``nnx.Conv``: HWIO), where PyTorch stores it first (out, in) / OIHW and the reference
takes ``x.view(x.size(0), -1)``. Here ``channel_axis=-1`` (default) makes one row per output
channel of a Flax kernel; pass ``channel_axis=0`` for PyTorch-layout weights.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

NO_PROJECTION, CHANNEL_VIEW, LAYER_VIEW = 0, 1, 2


# ------------------------------------------------------------------------------------------------
# The projection, on one parameter tensor.
# ------------------------------------------------------------------------------------------------

def channel_rows(x: jax.Array, channel_axis: int = -1) -> jax.Array:
    """``x`` as one row per output channel: shape (channels, size // channels)."""
    if not -x.ndim <= channel_axis < x.ndim:
        raise ValueError(f"channel_axis={channel_axis} is out of range for a parameter of shape {x.shape}; "
                         f"use -1 for Flax kernels (output channel last) or 0 for PyTorch layout")
    rows = jnp.moveaxis(x, channel_axis, 0)  # (channels, *rest)
    return rows.reshape(rows.shape[0], -1)   # (channels, prod(rest))


def _from_channel_rows(rows: jax.Array, shape: tuple[int, ...], channel_axis: int) -> jax.Array:
    """Inverse of ``channel_rows``."""
    moved = list(shape)
    channels = moved.pop(channel_axis % len(shape))
    return jnp.moveaxis(rows.reshape(channels, *moved), 0, channel_axis)


def _abs_cosine(a: jax.Array, b: jax.Array, eps: float) -> jax.Array:
    """|cos| between matching rows of (rows, n) arrays, each norm floored at eps (torch's
    ``F.cosine_similarity(a, b, dim=1, eps=eps).abs()``)."""
    dot = jnp.sum(a * b, axis=1)
    na = jnp.maximum(jnp.linalg.norm(a, axis=1), eps)
    nb = jnp.maximum(jnp.linalg.norm(b, axis=1), eps)
    return jnp.abs(dot / (na * nb))


def _passes(weight_rows: jax.Array, grad_rows: jax.Array, delta: float, eps: float) -> jax.Array:
    """The reference's scale-invariance test on one view: max_r |cos(g_r, w_r)| < delta / sqrt(row_dim)."""
    return jnp.max(_abs_cosine(grad_rows, weight_rows, eps)) < delta / math.sqrt(weight_rows.shape[1])


def projection_view(param: jax.Array, grad: jax.Array, delta: float = 0.1, eps: float = 1e-8,
                    channel_axis: int = -1) -> jax.Array:
    """Which view the AdamP test picks for one tensor: ``CHANNEL_VIEW`` (1), ``LAYER_VIEW`` (2) or
    ``NO_PROJECTION`` (0, also for every tensor with ndim <= 1). An int32 scalar (traceable)."""
    if param.ndim <= 1:
        return jnp.asarray(NO_PROJECTION, jnp.int32)
    rows_w, rows_g = channel_rows(param, channel_axis), channel_rows(grad, channel_axis)
    channel = _passes(rows_w, rows_g, delta, eps)
    layer = _passes(param.reshape(1, -1), grad.reshape(1, -1), delta, eps)  # (1, size)
    return jnp.where(channel, CHANNEL_VIEW, jnp.where(layer, LAYER_VIEW, NO_PROJECTION)).astype(jnp.int32)


def _remove_radial(weight_rows: jax.Array, direction_rows: jax.Array, eps: float) -> jax.Array:
    """d_r - ŵ_r <ŵ_r, d_r> with ŵ_r = w_r / (||w_r|| + eps), on (rows, n) arrays."""
    unit = weight_rows / (jnp.linalg.norm(weight_rows, axis=1, keepdims=True) + eps)
    return direction_rows - unit * jnp.sum(unit * direction_rows, axis=1, keepdims=True)


def project_scale_invariant(param: jax.Array, grad: jax.Array, direction: jax.Array, delta: float = 0.1,
                            eps: float = 1e-8, channel_axis: int = -1) -> tuple[jax.Array, jax.Array]:
    """The reference ``_projection`` on one tensor: (direction without its radial part, or unchanged;
    whether it was projected). The test uses the gradient, the projection acts on ``direction``."""
    view = projection_view(param, grad, delta, eps, channel_axis)
    if param.ndim <= 1:
        return direction, view != NO_PROJECTION
    by_channel = _from_channel_rows(
        _remove_radial(channel_rows(param, channel_axis), channel_rows(direction, channel_axis), eps),
        param.shape, channel_axis)
    by_layer = _remove_radial(param.reshape(1, -1), direction.reshape(1, -1), eps).reshape(param.shape)
    out = jnp.where(view == CHANNEL_VIEW, by_channel, jnp.where(view == LAYER_VIEW, by_layer, direction))
    return out, view != NO_PROJECTION


def _projected_with_decay(param, grad, direction, *, direction_scale, decay, delta, wd_ratio, eps,
                          channel_axis):
    """direction_scale * projected direction + decay * ratio * param (ratio = wd_ratio if projected)."""
    d, projected = project_scale_invariant(param, grad, direction, delta, eps, channel_axis)
    out = direction_scale * d
    if decay:
        out = out + (decay * jnp.where(projected, wd_ratio, 1.0)) * param
    return out.astype(grad.dtype)


def _need_params(name, params):
    if params is None:
        raise ValueError(f"{name} needs the parameters (its projection tests the gradient against the "
                         f"weights): call tx.update(grads, state, params)")


def _check(**values):
    for name, (value, ok, what) in values.items():
        if not ok(value):
            raise ValueError(f"{name} must be {what}, got {value}")


# ------------------------------------------------------------------------------------------------
# AdamP.
# ------------------------------------------------------------------------------------------------

class ScaleByAdamPState(NamedTuple):
    """Step count and Adam's first and second moments."""

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates


def scale_by_adamp(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
                   delta: float = 0.1, wd_ratio: float = 0.1, nesterov: bool = False,
                   channel_axis: int = -1) -> optax.GradientTransformation:
    """AdamP's direction and decay, to be scaled by :math:`-\\eta_t`:

    .. math::
        m &= \\beta_1 m + (1-\\beta_1) g, \\quad v = \\beta_2 v + (1-\\beta_2) g^2, \\quad
        p = \\frac{m \\;(\\text{or } \\beta_1 m + (1-\\beta_1) g)}{\\sqrt{v}/\\sqrt{1-\\beta_2^t} + \\epsilon} \\\\
        u &= \\frac{\\Pi(p)}{1-\\beta_1^t} + \\lambda r\\, w

    with :math:`\\Pi` the projection of the module docstring and r its weight-decay ratio. The
    Nesterov direction follows the reference (both terms corrected by :math:`1-\\beta_1^t`), which
    differs from ``optax.scale_by_adam(nesterov=True)``. Needs ``params`` in ``update``.
    """
    _check(b1=(b1, lambda b: 0 <= b < 1, "in [0, 1)"), b2=(b2, lambda b: 0 <= b < 1, "in [0, 1)"),
           eps=(eps, lambda e: e > 0, "> 0"), weight_decay=(weight_decay, lambda w: w >= 0, ">= 0"),
           delta=(delta, lambda d: d > 0, "> 0"), wd_ratio=(wd_ratio, lambda r: r >= 0, ">= 0"))

    def init_fn(params):
        return ScaleByAdamPState(count=jnp.zeros([], jnp.int32), mu=optax.tree.zeros_like(params),
                                 nu=optax.tree.zeros_like(params))

    def update_fn(updates, state, params=None):
        _need_params("adamp", params)
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count = optax.safe_increment(state.count)

        def leaf(g, m, v, w):
            t = count.astype(g.dtype)
            bias1, bias2 = 1 - b1**t, 1 - b2**t
            denom = jnp.sqrt(v) / jnp.sqrt(bias2) + eps
            direction = (b1 * m + (1 - b1) * g if nesterov else m) / denom
            return _projected_with_decay(w, g, direction, direction_scale=1 / bias1,
                                         decay=weight_decay, delta=delta, wd_ratio=wd_ratio, eps=eps,
                                         channel_axis=channel_axis)

        new_updates = jax.tree.map(leaf, updates, mu, nu, params)
        return new_updates, ScaleByAdamPState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def adamp(
    learning_rate: float | optax.Schedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    delta: float = 0.1,
    wd_ratio: float = 0.1,
    nesterov: bool = False,
    channel_axis: int = -1,
) -> optax.GradientTransformation:
    """AdamP (Heo et al. ICLR 2021): Adam with decoupled weight decay whose step on a scale-invariant
    weight has its radial part removed, and whose decay there is multiplied by ``wd_ratio``.

    Per tensor with ndim > 1,
    :math:`w \\leftarrow w(1 - \\eta\\lambda r) - \\eta\\,\\Pi(\\hat m/(\\sqrt{\\hat v} + \\epsilon))`
    (see the module docstring); elsewhere the update of ``optax.adamw``.

    Args:
      learning_rate: a float or an ``optax.Schedule`` (step -> learning rate).
      b1, b2: decay rates of Adam's moments.
      eps: added to :math:`\\sqrt{\\hat v}`; also the norm floor of the cosine and projection.
      weight_decay: decoupled decay λ (multiplied by the learning rate, AdamW-style).
      delta: threshold of the scale-invariance test, max |cos| < delta / sqrt(row size).
      wd_ratio: factor on the weight decay of a projected tensor.
      nesterov: Nesterov direction (β1 m + (1-β1) g) / denom, as the reference.
      channel_axis: the output-channel axis of a weight: -1 for Flax kernels (Linear (in, out), Conv
        HWIO), 0 for PyTorch layout.

    Returns:
      An ``optax.GradientTransformation`` whose ``update`` needs ``params``.
    """
    return optax.chain(
        scale_by_adamp(b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, delta=delta, wd_ratio=wd_ratio,
                       nesterov=nesterov, channel_axis=channel_axis),
        optax.scale_by_learning_rate(learning_rate),
    )


# ------------------------------------------------------------------------------------------------
# SGDP.
# ------------------------------------------------------------------------------------------------

class ScaleBySGDPState(NamedTuple):
    """The momentum buffer (torch's ``momentum_buffer``, started at zero); with
    ``project_buffer=True`` and ``nesterov=False`` it is stored projected, as the reference leaves it."""

    momentum: optax.Updates


def scale_by_sgdp(momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
                  nesterov: bool = False, eps: float = 1e-8, delta: float = 0.1, wd_ratio: float = 0.1,
                  channel_axis: int = -1, project_buffer: bool = True) -> optax.GradientTransformation:
    """SGDP's direction and decay, to be scaled by :math:`-\\eta_t`:

    .. math::
        b &= \\mu b + (1 - \\text{dampening})\\, g, \\quad d = g + \\mu b \\text{ (Nesterov) or } b \\\\
        u &= \\Pi(d) + \\frac{\\lambda r}{1-\\mu} w, \\qquad
        b \\leftarrow \\Pi(b) \\text{ if not Nesterov and project\\_buffer}

    (the :math:`1/(1-\\mu)` on the decay is the reference's). The last assignment is the reference's
    in-place projection (see ``sgdp``). Needs ``params`` in ``update``.
    """
    _check(momentum=(momentum, lambda m: 0 <= m < 1, "in [0, 1)"),
           dampening=(dampening, lambda d: 0 <= d <= 1, "in [0, 1]"),
           eps=(eps, lambda e: e > 0, "> 0"), weight_decay=(weight_decay, lambda w: w >= 0, ">= 0"),
           delta=(delta, lambda d: d > 0, "> 0"), wd_ratio=(wd_ratio, lambda r: r >= 0, ">= 0"))
    decay = weight_decay / (1 - momentum)
    # Without Nesterov the reference's d_p *is* the buffer, and _projection edits it in place.
    buffer_is_direction = project_buffer and not nesterov

    def init_fn(params):
        return ScaleBySGDPState(momentum=optax.tree.zeros_like(params))

    def update_fn(updates, state, params=None):
        _need_params("sgdp", params)
        buf = jax.tree.map(lambda b, g: momentum * b + (1 - dampening) * g, state.momentum, updates)

        def leaf(g, b, w):  # -> (update, new buffer)
            direction = g + momentum * b if nesterov else b
            d, projected = project_scale_invariant(w, g, direction, delta, eps, channel_axis)
            out = d + (decay * jnp.where(projected, wd_ratio, 1.0)) * w if decay else d
            return out.astype(g.dtype), (d.astype(b.dtype) if buffer_is_direction else b)

        pairs = jax.tree.map(leaf, updates, buf, params)  # the tree of updates, a pair at each leaf
        new_updates, new_buf = jax.tree.transpose(jax.tree.structure(updates), jax.tree.structure((0, 0)),
                                                  pairs)
        return new_updates, ScaleBySGDPState(momentum=new_buf)

    return optax.GradientTransformation(init_fn, update_fn)


def sgdp(
    learning_rate: float | optax.Schedule,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    eps: float = 1e-8,
    delta: float = 0.1,
    wd_ratio: float = 0.1,
    channel_axis: int = -1,
    project_buffer: bool = True,
) -> optax.GradientTransformation:
    """SGDP (Heo et al. ICLR 2021): momentum SGD whose step on a scale-invariant weight has its radial
    part removed, with decoupled weight decay :math:`w \\leftarrow w(1 - \\eta\\lambda r/(1-\\mu))`.

    Elsewhere (ndim <= 1, or not detected as scale invariant) it is torch-style momentum SGD
    (buffer started at zero) with that decoupled decay.

    **Which buffer is projected.** The paper (arXiv 2006.08217, Algorithm "SGDP") keeps the momentum
    :math:`p_t = \\mu p_{t-1} + g_t` and steps along the projected copy :math:`q_t = \\Pi(p_t)`. The
    public code (clovaai/AdamP ``adamp/sgdp.py``, ``SGDP.step``) does not: without Nesterov
    ``d_p = buf`` is the buffer itself and ``_projection`` subtracts the radial part in place
    (``perturb -= p_n * ...``), so the stored buffer is projected and carries that into later
    steps; with Nesterov ``d_p = grad + momentum * buf`` is a new tensor and the buffer is untouched.
    ``project_buffer=True`` (default) is the public code, ``project_buffer=False`` the paper's text;
    the two differ only when ``nesterov=False`` on a projected tensor.

    Args:
      learning_rate: a float or an ``optax.Schedule`` (step -> learning rate).
      momentum: μ, in [0, 1).
      dampening: the gradient enters the buffer as (1 - dampening) g.
      weight_decay: decoupled decay λ; the reference divides it by (1 - μ).
      nesterov: d = g + μ b instead of b.
      eps: norm floor of the cosine and projection.
      delta: threshold of the scale-invariance test, max |cos| < delta / sqrt(row size).
      wd_ratio: factor on the weight decay of a projected tensor.
      channel_axis: the output-channel axis of a weight: -1 for Flax kernels (Linear (in, out), Conv
        HWIO), 0 for PyTorch layout.
      project_buffer: with ``nesterov=False``, store the projected direction as the momentum buffer
        (True, clovaai/AdamP's in-place projection) or keep the buffer unprojected and project a
        copy (False, the paper's algorithm). No effect with ``nesterov=True``.

    Returns:
      An ``optax.GradientTransformation`` whose ``update`` needs ``params``.
    """
    return optax.chain(
        scale_by_sgdp(momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                      eps=eps, delta=delta, wd_ratio=wd_ratio, channel_axis=channel_axis,
                      project_buffer=project_buffer),
        optax.scale_by_learning_rate(learning_rate),
    )
