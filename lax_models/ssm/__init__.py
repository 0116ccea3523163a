"""State-space sequence mixers (S4, S4D, S5, and the S4-PTD / S5-PTD initialisations).

The contract every sequence mixer of ``lax_models`` follows (these and ``lax_models.longconv``), so
that ``lax_models.sequence`` stacks any of them and the runner trains any of them:

* ``__init__(self, d_model: int, ..., l_max: int | None = None, *, rngs: nnx.Rngs)``: plain
  arguments; ``l_max`` is the longest sequence it will see (a long convolution's kernel length; an
  SSM may ignore it and build its kernel for the length it is called with).
* ``__call__(x) -> y``, ``(batch, length, d_model) -> (batch, length, d_model)``: the parallel
  (convolutional or scan) mode used for training.
* ``init_state(batch_size) -> state`` and ``step(state, x_t) -> (state, y_t)`` with
  ``x_t, y_t: (batch, d_model)``: the recurrent mode used for generation; stepping through a sequence
  gives ``__call__``'s output (tested for every mixer). Only causal mixers step.
* State-space parameters (Lambda, P, B, log_dt, a long convolution's kernel) are ``SSMParam``, so
  that configs can give them their own learning rate and no weight decay (``param_groups.ssm.
  variable_type: lax_models.ssm.SSMParam``), as the reference implementations do; the output map C
  and the skip D are regular parameters, in the regular group (state-spaces/s4, lindermanlab/S5).
"""
from __future__ import annotations

import flax.nnx as nnx


class SSMParam(nnx.Param):
    """A state-space parameter (eigenvalues, input / output maps, timescales): its own optimizer group."""


__all__ = ["SSMParam"]
