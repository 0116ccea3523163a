"""Keep XLA:CPU's per-step buffers in the heap: glibc ``malloc`` settings for the entry points.

XLA:CPU allocates an executable's temporary buffers (one arena of tens to hundreds of MiB for an
FNO training step) at every call and frees them at its end. With glibc's defaults such a block is
``mmap``-ed (above the 32 MiB ceiling of the dynamic mmap threshold, or from a worker thread's
arena, whose heaps are capped at 64 MiB) and returned to the kernel when freed, so every step
page-faults its whole working set in again: 1.75 million minor faults in 23 FNO-2D steps
(batch 16, 64 x 64, width 32), a third of the step's CPU time. Three ``mallopt`` settings keep the
pages: one arena for all threads (``M_ARENA_MAX=1``), no ``mmap`` below 1 GiB
(``M_MMAP_THRESHOLD``) and no trimming of the heap top below 2 GiB (``M_TRIM_THRESHOLD``).
Measured on 2 CPU cores (``experiments/bench/fno.py``): the same step's CPU time fell from 435 ms
to 289 ms (FFT path) and from 360 ms to 212 ms (DFT path), the faults to those of start-up.

The settings only act on threads that have not allocated yet, so :func:`tune_malloc` must run
before JAX starts its CPU backend (the first array or device query); the entry points
(``python -m experiments.train``, ``python -m experiments.bench``) call it first thing. Elsewhere
than glibc it does nothing. ``NEURAL_LAX_MALLOC=default`` in the environment turns it off.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

# mallopt parameter numbers of glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

SETTINGS = {_M_ARENA_MAX: 1, _M_MMAP_THRESHOLD: 1 << 30, _M_TRIM_THRESHOLD: (1 << 31) - 1}  # C ints

_tuned = False


def malloc_tuned() -> bool:
    """Whether :func:`tune_malloc` applied its settings in this process."""
    return _tuned


def _backend_started() -> bool:
    try:
        from jax._src import xla_bridge
    except ImportError:  # jax not installed or internal layout changed: assume not started
        return False
    return bool(getattr(xla_bridge, "_backends", None))


def tune_malloc() -> bool:
    """Apply :data:`SETTINGS` with glibc's ``mallopt``; ``True`` if all were accepted.

    Does nothing (``False``) when ``NEURAL_LAX_MALLOC=default``, off glibc, or once the JAX backend
    has started (then its worker threads already own their arenas; a debug message says so).
    """
    if os.environ.get("NEURAL_LAX_MALLOC", "").lower() == "default":
        return False
    if _backend_started():
        log.debug("malloc settings skipped: the JAX backend has already started")
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt, Windows)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    global _tuned
    _tuned = all([mallopt(param, value) == 1 for param, value in SETTINGS.items()])
    return _tuned
