"""Learning-rate schedules built from the run's length.

Every factory here has the same signature, ``(..., *, steps_per_epoch, total_steps) -> optax.Schedule``,
so the runner can build any of them from a config without knowing which one it is: the config gives
the schedule's own hyperparameters, the runner supplies ``steps_per_epoch`` and ``total_steps``.
"""
from __future__ import annotations

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
