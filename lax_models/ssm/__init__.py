"""State-space sequence mixers (S4, S4D, S5, and the S4-PTD / S5-PTD initialisations).

Modules: :mod:`~lax_models.ssm.hippo` (HiPPO matrices, NPLR / DPLR forms), :mod:`~lax_models.ssm.ptd`
(perturb-then-diagonalise), :mod:`~lax_models.ssm.s4`, :mod:`~lax_models.ssm.s4d`,
:mod:`~lax_models.ssm.s5` (the layers; S4-PTD is ``S4D(init="ptd")``, S5-PTD ``S5(init="ptd")``) and
:mod:`~lax_models.ssm.common` (what they share: complex storage, discretisation, BLAS threads).

Every layer here (and :class:`lax_models.longconv.LongConv`) is a :class:`lax_models.sequence.Mixer`,
so that :class:`lax_models.sequence.SequenceModel` stacks any of them and the runner trains any of them.
State-space parameters (Lambda, P, B, log_dt, a long convolution's kernel) are :class:`SSMParam`, so
that configs can give them their own learning rate and no weight decay (``param_groups.ssm.
variable_type: lax_models.ssm.SSMParam``), as the reference implementations do; the output map C and
the skip D are regular parameters, in the regular group (state-spaces/s4, lindermanlab/S5).
"""
from __future__ import annotations

import flax.nnx as nnx


class SSMParam(nnx.Param):
    """A state-space parameter (eigenvalues, input / output maps, timescales): its own optimizer group."""


__all__ = ["SSMParam"]
