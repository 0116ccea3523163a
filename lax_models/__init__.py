"""Sequence models and implicit models.

* :mod:`lax_models.ssm` (S4, S4D, S5 and the PTD initialisations), :mod:`lax_models.longconv` (long
  convolutions), :mod:`lax_models.kernels` (their Pallas kernels) and :mod:`lax_models.sequence` (the
  residual sequence model that stacks any :class:`lax_models.sequence.Mixer`);
* :mod:`lax_models.lpn` (learned proximal networks) with :mod:`lax_models.inverse_problems`, and
  :mod:`lax_models.cgs` (convergent graph solvers) with :mod:`lax_models.gnn`.
"""
