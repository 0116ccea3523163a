"""Adam with coupled (L2) weight decay: the optimizer of the original FNO scripts.

The FNO reference code (zongyi-li/fourier_neural_operator, ``Adam.py``) uses ``torch.optim.Adam``
semantics, where ``weight_decay`` is added to the gradient *before* the moment estimates
(Kingma & Ba 2015 with an L2 penalty), not decoupled as in AdamW (Loshchilov & Hutter 2019):

.. math::
    g_t &= \\nabla f(\\theta_{t-1}) + \\lambda \\theta_{t-1} \\\\
    m_t &= \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2 \\\\
    \\theta_t &= \\theta_{t-1} - \\eta_t \\, \\hat m_t / (\\sqrt{\\hat v_t} + \\epsilon)

with bias-corrected :math:`\\hat m_t = m_t/(1-\\beta_1^t)`, :math:`\\hat v_t = v_t/(1-\\beta_2^t)`.
Use ``optax.adamw`` for the decoupled variant.
"""
from __future__ import annotations

import optax


def adam(
    learning_rate: float | optax.Schedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """Adam with torch-style L2 weight decay (coupled), as an optax transformation.

    Args:
      learning_rate: a float or an ``optax.Schedule`` (step -> learning rate).
      b1, b2: exponential decay rates of the first and second moment estimates.
      eps: added to the denominator, outside the square root (torch convention).
      weight_decay: L2 coefficient :math:`\\lambda` added to the gradient before the moments.

    Returns:
      An ``optax.GradientTransformation``.
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    parts = []
    if weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay))
    parts += [optax.scale_by_adam(b1=b1, b2=b2, eps=eps), optax.scale_by_learning_rate(learning_rate)]
    return optax.chain(*parts)
