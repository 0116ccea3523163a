"""Parameter groups: their own learning-rate scale, weight decay or projection for selected parameters.

State-space models train Lambda, B and Delta with a smaller learning rate and no weight decay;
biases and norm scales usually get no weight decay; a learned proximal network keeps some weights
non-negative by projecting them after every step. All of these are one optimizer, built once per
group with that group's settings, and routed by ``optax.multi_transform``:

.. math::
    \\theta^{(g)}_{t+1} = P_g\\big(\\theta^{(g)}_t + \\mathrm{tx}(\\eta_t \\cdot s_g, \\lambda_g)(\\nabla^{(g)}_t)\\big)

for every group g of parameters, with ``s_g`` its learning-rate scale, ``lambda_g`` its weight decay
(the optimizer's own when not given) and ``P_g`` its projection (identity when not given). Parameters
that no group selects form the group ``"default"`` with the optimizer as configured.

A group selects parameters by NNX variable type (an ``nnx.Variable`` subclass such as a model's
``SSMParam``; subclasses match too) and/or by a regular expression searched in the parameter's
path, joined with "/" (``"bias$"``, ``"layers/\\d+/norm"``). The first group that matches wins.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Sequence

import flax.nnx as nnx
import jax
import optax

DEFAULT_GROUP = "default"


@dataclasses.dataclass(frozen=True)
class ParamGroup:
    """Which parameters form a group, and what is special about their update.

    Args:
      name: the group's label (not "default").
      variable_type: select variables of this ``nnx.Variable`` subclass (or of its subclasses).
      path: select parameters whose "/"-joined path matches this regular expression (``re.search``).
        With both given, a parameter must match both; with neither, the group is an error.
      lr_scale: the group's learning rate is ``lr_scale`` times the schedule's, at every step.
      weight_decay: the group's weight decay (passed to the optimizer factory); None keeps the
        optimizer's own.
      projection: applied to the parameters after every update (e.g.
        ``optax.projections.projection_non_negative``); None for none.
    """

    name: str
    variable_type: type | None = None
    path: str | None = None
    lr_scale: float = 1.0
    weight_decay: float | None = None
    projection: Callable[[jax.Array], jax.Array] | None = None

    def __post_init__(self):
        if self.name == DEFAULT_GROUP:
            raise ValueError(f"'{DEFAULT_GROUP}' names the parameters no group selects; choose another name")
        if self.variable_type is None and self.path is None:
            raise ValueError(f"parameter group {self.name!r} selects nothing: give variable_type and/or path")

    def selects(self, path: str, variable: Any) -> bool:
        if self.variable_type is not None and not isinstance(variable, self.variable_type):
            return False
        return self.path is None or re.search(self.path, path) is not None


def _is_variable(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def _path_str(path: tuple) -> str:
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def group_labels(params: Any, groups: Sequence[ParamGroup]) -> Any:
    """The label (group name, or "default") of every parameter, as a tree shaped like ``params``.

    Raises a ValueError naming the group and some parameter paths if a group selects no parameter.
    """
    used = set()

    def label(path, variable):
        p = _path_str(path)
        for g in groups:
            if g.selects(p, variable):
                used.add(g.name)
                return g.name
        return DEFAULT_GROUP

    labels = jax.tree.map_with_path(label, params, is_leaf=_is_variable)
    unused = [g.name for g in groups if g.name not in used]
    if unused:
        paths = [_path_str(p) for p, _ in jax.tree.leaves_with_path(params, is_leaf=_is_variable)]
        kinds = sorted({type(v).__name__ for v in jax.tree.leaves(params, is_leaf=_is_variable)})
        raise ValueError(f"parameter group(s) {unused} select no parameter. Parameter paths look like "
                         f"{paths[:6]}{' ...' if len(paths) > 6 else ''}; variable types present: {kinds}")
    return labels


def project_after_update(projection: Callable[[jax.Array], jax.Array]) -> optax.GradientTransformation:
    """Updates ``u`` that land the parameters on ``projection(p + u)`` (a projected step).

    Put last in a chain. For ``projection_non_negative`` the result of ``apply_updates`` is exactly
    non-negative in floating point (``p + (max(p + u, 0) - p)`` rounds to a value >= 0).
    """

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("project_after_update needs the parameters: call tx.update(grads, state, params)")
        updates = jax.tree.map(lambda p, u: (projection(p + u) - p).astype(p.dtype), params, updates)
        return updates, state

    return optax.GradientTransformation(init_fn, update_fn)


def _scaled(learning_rate: float | optax.Schedule, scale: float) -> float | optax.Schedule:
    if scale == 1.0:
        return learning_rate
    if callable(learning_rate):
        return lambda step: scale * learning_rate(step)
    return scale * learning_rate


def partition_optimizer(
    make_tx: Callable[..., optax.GradientTransformation],
    learning_rate: float | optax.Schedule,
    groups: Sequence[ParamGroup] = (),
) -> optax.GradientTransformation:
    """One optimizer per parameter group, routed with ``optax.multi_transform``.

    Args:
      make_tx: the optimizer factory, called as ``make_tx(learning_rate=...)`` for the default group
        and ``make_tx(learning_rate=..., weight_decay=...)`` for a group that sets its weight decay.
      learning_rate: a float or schedule (step -> learning rate) for the default group.
      groups: the parameter groups; none gives ``make_tx(learning_rate=learning_rate)`` itself.

    Returns:
      An ``optax.GradientTransformation`` over the parameter tree (an ``nnx.State`` of variables).
    """
    if not groups:
        return make_tx(learning_rate=learning_rate)
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise ValueError(f"parameter group names must be unique, got {names}")
    transforms = {DEFAULT_GROUP: make_tx(learning_rate=learning_rate)}
    for g in groups:
        kwargs = {} if g.weight_decay is None else {"weight_decay": g.weight_decay}
        tx = make_tx(learning_rate=_scaled(learning_rate, g.lr_scale), **kwargs)
        if g.projection is not None:
            tx = optax.chain(tx, project_after_update(g.projection))
        transforms[g.name] = tx
    return optax.multi_transform(transforms, lambda params: group_labels(params, groups))
