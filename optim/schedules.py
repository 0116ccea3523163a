"""Learning-rate schedules built from the run's length.

Every factory here has the same signature, ``(..., *, steps_per_epoch, total_steps) -> optax.Schedule``,
so the runner can build any of them from a config without knowing which one it is: the config gives
the schedule's own hyperparameters, the runner supplies ``steps_per_epoch`` and ``total_steps``.
"""
from __future__ import annotations

import json
import os
import pathlib

import jax.numpy as jnp
import numpy as np
import optax


def constant(value: float, *, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """The learning rate ``value`` at every step."""
    del steps_per_epoch, total_steps
    return optax.constant_schedule(value)


def step_decay(
    value: float, every_epochs: float, gamma: float = 0.5, *, steps_per_epoch: int, total_steps: int
) -> optax.Schedule:
    """``value * gamma ** floor(epoch / every_epochs)``: torch ``StepLR`` stepped once per epoch.

    The FNO scripts use ``StepLR(step_size=100, gamma=0.5)`` (Darcy) and ``StepLR(50, 0.5)`` (Burgers),
    stepped per epoch; here the epoch is ``step // steps_per_epoch``.
    """
    del total_steps
    if every_epochs <= 0:
        raise ValueError(f"schedule.every_epochs must be > 0, got {every_epochs}")
    every = max(1, round(every_epochs * steps_per_epoch))
    return optax.exponential_decay(value, transition_steps=every, decay_rate=gamma, staircase=True)


def cosine(
    value: float, warmup_epochs: float = 0.0, final_fraction: float = 0.0, *,
    steps_per_epoch: int, total_steps: int,
) -> optax.Schedule:
    """Linear warm-up over ``warmup_epochs``, then cosine decay to ``final_fraction * value`` at the end."""
    warmup = round(warmup_epochs * steps_per_epoch)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup else value, peak_value=value, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=final_fraction * value,
    )


def _warmup_steps(warmup_epochs: float, steps_per_epoch: int, total_steps: int) -> int:
    warmup = round(warmup_epochs * steps_per_epoch)
    if not 0 <= warmup < max(total_steps, 1):
        raise ValueError(f"schedule.warmup_epochs={warmup_epochs} gives {warmup} warm-up steps, but the run has "
                         f"{total_steps} steps; it must be at least 0 and shorter than the run")
    return warmup


def linear(
    value: float, warmup_epochs: float = 0.0, final_fraction: float = 0.0, *,
    steps_per_epoch: int, total_steps: int,
) -> optax.Schedule:
    """Linear warm-up over ``warmup_epochs``, then linear decay to ``final_fraction * value`` at the end.

    Linear decay, eta_t = eta (1 - t / T), is worst-case optimal for the last iterate and matches or
    beats cosine in practice (Defazio, Cutkosky, Mehta, Mishchenko, "When, Why and How Much?
    Adaptive Learning Rate Scheduling by Refinement", arXiv 2310.07831).
    """
    warmup = _warmup_steps(warmup_epochs, steps_per_epoch, total_steps)
    decay = optax.linear_schedule(value, final_fraction * value, max(total_steps - warmup, 1))
    if not warmup:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, value, warmup), decay], [warmup])


def onecycle(
    value: float, pct_start: float = 0.3, div_factor: float = 25.0, final_div_factor: float = 1e4,
    per_epoch: bool = False, *, steps_per_epoch: int, total_steps: int,
) -> optax.Schedule:
    """One-cycle (Smith and Topin 2017, arXiv 1708.07120; torch ``OneCycleLR``, cosine annealing), via
    ``optax.cosine_onecycle_schedule``: cosine from ``value / div_factor`` up to ``value`` over the first
    ``pct_start`` of the run, then cosine down to ``value / (div_factor * final_div_factor)`` at its end.

    ``per_epoch``: hold the rate for an epoch and count the cycle in epochs, as a torch ``OneCycleLR``
    with ``steps_per_epoch=1`` stepped once per epoch (MgNO's scripts: ``div_factor=2``,
    ``final_div_factor=100``, ``pct_start=0.2``). optax puts the peak at step ``int(pct_start * T)`` and
    the final value at T, torch one step earlier at each.
    """
    if not 0 < pct_start < 1 or div_factor <= 0 or final_div_factor <= 0:
        raise ValueError(f"schedule.pct_start must lie in (0, 1) and the div factors be > 0; got pct_start="
                         f"{pct_start}, div_factor={div_factor}, final_div_factor={final_div_factor}")
    if not per_epoch:
        return optax.cosine_onecycle_schedule(max(total_steps, 1), value, pct_start, div_factor, final_div_factor)
    epochs = max(1, -(-total_steps // max(steps_per_epoch, 1)))  # ceil
    by_epoch = optax.cosine_onecycle_schedule(epochs, value, pct_start, div_factor, final_div_factor)
    return lambda step: by_epoch(step // steps_per_epoch)


def read_grad_norms(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(steps, gradient norms) logged by a previous run: its ``metrics.jsonl`` or its run directory.

    The runner logs the mean gradient norm of every ``log_every`` steps as ``"grad_norm"``.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"no metrics file at {path}: schedule=refined needs schedule.grad_norms=<the run "
                         f"directory (or metrics.jsonl) of a previous run of the same problem>")
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a torn last line of a killed run
            continue
        if isinstance(row.get("grad_norm"), (int, float)) and "split" not in row:
            rows.append((row["step"], row["grad_norm"]))
    if len(rows) < 2:
        raise ValueError(f"{path} holds {len(rows)} gradient-norm rows; the refined schedule needs the log of a "
                         f"run of at least two log intervals (trainer.log_every)")
    steps, norms = (np.asarray(c, np.float64) for c in zip(*sorted(dict(rows).items())))
    if not (np.isfinite(norms).all() and (norms > 0).all()):
        raise ValueError(f"{path}: the logged gradient norms must be finite and positive")
    return steps, norms


def refined_weights(grad_norms: np.ndarray, filter_width: int = 1) -> np.ndarray:
    """The refined schedule's shape from per-step gradient norms G_1..G_T (Defazio et al., sec. 3):

    .. math::  w_t = G_t^{-2} \\sum_{p=t+1}^{T} G_p^{-2}, \\qquad w_T = 0, \\qquad \\eta_t \\propto w_t,

    after a median filter of ``filter_width`` (odd; 1: none) over G. Normalised to max 1. Constant
    gradient norms give linear decay.
    """
    g = np.asarray(grad_norms, np.float64)
    if filter_width > 1:
        from scipy.ndimage import median_filter

        g = median_filter(g, size=filter_width, mode="reflect")
    inv_sq = g**-2.0
    tail = np.concatenate([np.cumsum(inv_sq[::-1])[::-1][1:], [0.0]])  # sum_{p > t} G_p^-2
    w = inv_sq * tail
    return w / w.max()


def refined(
    value: float, grad_norms: str, smoothing: float = 0.05, *, steps_per_epoch: int, total_steps: int,
) -> optax.Schedule:
    """The learning-rate schedule refined from the gradient norms of a previous run (Defazio et al. 2023).

    Reads the ``grad_norm`` log of a previous run of the same problem (``grad_norms``: its run
    directory or metrics.jsonl), stretches it over this run's ``total_steps`` (by the fraction of
    training done), median-filters it over ``smoothing`` of the run (the reference's
    ``filter_width = 2 * (int(sigma * T) // 2) + 1``) and returns ``value * w_t`` with ``w`` from
    ``refined_weights``: a warm-up where early gradients are large, a fast anneal at the end, linear
    decay when the norms are constant. The previous run is usually one with ``schedule=linear``.
    """
    del steps_per_epoch
    steps, norms = read_grad_norms(grad_norms)
    fraction = (np.arange(total_steps) + 0.5) / total_steps
    per_step = np.interp(fraction, steps / steps[-1], norms)
    width = 2 * (int(smoothing * total_steps) // 2) + 1
    table = jnp.asarray(value * refined_weights(per_step, width), jnp.float32)
    return lambda step: table[jnp.clip(step, 0, total_steps - 1)]
