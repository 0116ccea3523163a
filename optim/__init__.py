"""Optimizers and schedules as optax transformations."""
from optim.adam import adam
from optim import schedules

__all__ = ["adam", "schedules"]
