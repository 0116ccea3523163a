"""Optimizers and schedules as optax transformations."""
from optim.adam import adam
from optim.adamp import adamp, sgdp
from optim.lion import lion, lion_k, scale_by_lion_k
from optim import schedules

__all__ = ["adam", "adamp", "lion", "lion_k", "scale_by_lion_k", "schedules", "sgdp"]
