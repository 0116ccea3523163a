"""Pallas kernels for the sequence models, each beside a pure-jnp reference of the same function.

* :mod:`lax_models.kernels.fftconv`: the FFT long convolution ``y = irfft(rfft(u, 2L) rfft(k, 2L))[:L]
  + D u`` as Monarch-decomposed DFT matrix products (FlashFFTConv's algorithm, Fu et al. 2023,
  arXiv:2311.05908), used by :class:`~lax_models.longconv.LongConv` and
  :class:`~lax_models.ssm.s4d.S4D`'s convolutional mode.
* :mod:`lax_models.kernels.scan`: the diagonal complex linear recurrence ``x_t = a_t x_{t-1} + b_t``
  chunked over time with a carried state, used by :class:`~lax_models.ssm.s5.S5` and
  :meth:`~lax_models.ssm.s4d.S4D.recurrent`.

Both have a ``jax.custom_vjp`` whose backward pass runs the same kernels (``jax.grad`` cannot
differentiate a ``pallas_call``), and an ``impl`` switch:

* ``"xla"``: the reference (``jnp.fft``, ``jax.lax.associative_scan``), what XLA compiles best on CPU;
* ``"pallas"``: the kernel; on CPU it runs in Pallas's interpret mode (correct, slow: for tests);
* ``"auto"``: ``"pallas"`` on GPU and TPU, ``"xla"`` on CPU.

Targets (what the kernels are written and lowering-tested for): **jax / jaxlib 0.10.2**; on GPU the
**Triton** backend of Pallas (``jax.experimental.pallas.triton.CompilerParams``), because the default
Mosaic GPU lowering of ``pallas_call`` in 0.10.2 has no ``dot_general`` with lane semantics (found by
lowering the Monarch DFT-as-matmul body for ``"cuda"`` without Triton compiler parameters); on TPU
**Mosaic TPU**. No complex numbers or FFTs inside a kernel (no
Pallas backend has them): real and imaginary parts are separate arrays, DFTs are matmuls. The tests
lower every kernel for ``"tpu"`` and ``"cuda"`` on a CPU-only machine
(``jax.jit(f).trace(...).lower(lowering_platforms=...)``), so a kernel that would not lower there fails
here. No GPU or TPU was available when they were written: they are checked for equality with the
references and for lowering, not timed on an accelerator.
"""
from __future__ import annotations

from typing import Literal

import jax

__all__ = ["IMPLS", "BACKENDS", "resolve_impl", "default_backend", "default_interpret"]

IMPLS = ("auto", "xla", "pallas")
BACKENDS = ("tpu", "triton")  # the Pallas lowerings the kernels target

Impl = Literal["auto", "xla", "pallas"]


def resolve_impl(impl: str) -> str:
    """``"xla"`` or ``"pallas"``: ``"auto"`` is Pallas on GPU / TPU and XLA on CPU (and anything else)."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}; got {impl!r}")
    if impl == "auto":
        return "pallas" if jax.default_backend() in ("gpu", "cuda", "rocm", "tpu") else "xla"
    return impl


def default_backend() -> str:
    """The Pallas lowering for the default device: ``"tpu"`` on TPU, else ``"triton"`` (GPU, and CPU
    interpret mode, where the choice only decides the block shapes)."""
    return "tpu" if jax.default_backend() == "tpu" else "triton"


def default_interpret() -> bool:
    """Interpret mode where no Pallas compiler exists (CPU)."""
    return jax.default_backend() == "cpu"


def check_backend(backend: str | None) -> str:
    backend = default_backend() if backend is None else backend
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} (or None: from the default device); got {backend!r}")
    return backend
