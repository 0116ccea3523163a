"""What a run cost, recorded in results.json beside its metrics so that tables can show both.

Times are measured by the trainer and the entry point; this module reads the machine: peak memory
of the host process and (where the backend reports it) of the devices, which devices, and which
package versions produced the numbers.
"""
from __future__ import annotations

import importlib.metadata
import platform
import resource
import sys
from typing import Iterable

import jax

PACKAGES = ("neural-lax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "hydra-core", "omegaconf",
            "numpy", "scipy")


def peak_host_memory_mb() -> float:
    """Peak resident memory of this process so far (``getrusage``; KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def peak_device_memory_mb(devices: Iterable[jax.Device]) -> float | None:
    """The largest ``peak_bytes_in_use`` over ``devices``, or None where the backend does not report it."""
    peaks = []
    for d in devices:
        try:
            stats = d.memory_stats()
        except Exception:  # backends without the query raise (CPU returns None)
            stats = None
        if stats and "peak_bytes_in_use" in stats:
            peaks.append(stats["peak_bytes_in_use"])
    return round(max(peaks) / 2**20, 1) if peaks else None


def versions() -> dict[str, str]:
    """Python and the versions of the packages that produced a result."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def machine(devices: list[jax.Device]) -> dict:
    """Backend, device kind and count, process count and the peak memories, as of now."""
    local = [d for d in devices if d.process_index == jax.process_index()]
    return {
        "backend": jax.default_backend(), "device_kind": devices[0].device_kind, "n_devices": len(devices),
        "n_processes": jax.process_count(), "peak_host_memory_mb": peak_host_memory_mb(),
        "peak_device_memory_mb": peak_device_memory_mb(local), "versions": versions(),
    }
