"""The Pallas kernels of :mod:`lax_models.kernels` against their XLA references, on the backend at hand.

One line per (kernel, length, implementation, pass): milliseconds per call (forward, or forward +
backward of a weighted sum), the ratio to the XLA reference of the same case, and the effective
memory bandwidth at the minimum traffic (read the input once, write the output once) with its fraction
of the device's peak where the device is known.

Implementations:

* ``xla``: the reference (``jnp.fft`` for the convolution, ``jax.lax.associative_scan`` for the scan);
* ``pallas``: the kernel, compiled for the device (Triton on GPU, Mosaic on TPU). On CPU a Pallas kernel
  only runs in interpret mode, which is **not a speed measure**: it is left out unless
  ``--interpret`` is given, and then every such line says ``"interpret": true``;
* ``monarch_xla`` (convolution) / ``sequential_xla`` (scan): the kernel's own arithmetic written in
  XLA (Monarch DFT matmuls as einsums; a ``lax.scan`` over time), to time the algorithm where the
  kernel cannot be compiled.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lax_models.kernels.fftconv import fft_conv_bhl, fft_conv_monarch_xla, fft_conv_reference, monarch_sizes
from lax_models.kernels.scan import linear_scan_reference, linear_scan_split

# Peak memory bandwidth (bytes/s) by device kind, from the vendors' data sheets.
PEAK_BANDWIDTH = {"NVIDIA H100 80GB HBM3": 3.35e12, "NVIDIA H100 PCIe": 2.0e12, "NVIDIA H200": 4.8e12,
                  "NVIDIA A100-SXM4-80GB": 2.04e12, "NVIDIA A100-SXM4-40GB": 1.56e12,
                  "TPU v4": 1.2e12, "TPU v5 lite": 8.2e11, "TPU v5": 2.76e12, "TPU v6 lite": 1.64e12}


def _time(fn: Callable, args: tuple, steps: int, repeats: int) -> tuple[float, float]:
    """(best milliseconds per call, compile seconds), after compilation and a warm-up."""
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - t
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            out = fn(*args)
        jax.block_until_ready(out)
        best = min(best, time.perf_counter() - t)
    return 1e3 * best / steps, compile_s


def _with_backward(f: Callable, n_args: int) -> Callable:
    """Forward + backward: the gradient of sum(w * f(...)) in all ``n_args`` differentiable arguments."""
    def loss(w, *args):
        out = f(*args)
        outs = out if isinstance(out, tuple) else (out,)
        return sum(jnp.sum(w * o.astype(jnp.float32)) for o in outs)

    return jax.grad(loss, argnums=tuple(range(1, n_args + 1)))


def _environment() -> dict:
    device = jax.devices()[0]
    return {"backend": jax.default_backend(), "device": device.device_kind, "jax": jax.__version__}


def _cases_fftconv(length, batch, channels, dtype, rng):
    u = jnp.asarray(rng.normal(size=(batch, channels, length)), dtype)
    k = jnp.asarray(rng.normal(size=(channels, length)) / np.sqrt(length), jnp.float32)
    D = jnp.asarray(rng.normal(size=(channels,)), jnp.float32)
    lp, n1, n2 = monarch_sizes(length)
    impls = {
        "xla": lambda u, k, D: _reference_bhl(u, k, D),
        "monarch_xla": fft_conv_monarch_xla,
        "pallas": lambda u, k, D: fft_conv_bhl(u, k, D),
    }
    minimum_bytes = 2 * u.size * u.dtype.itemsize  # read u, write y (k, D are O(H L), no batch)
    return impls, (u, k, D), minimum_bytes, {"monarch": f"{n1}x{n2}", "dtype": jnp.dtype(dtype).name}


def _reference_bhl(u, k, D):
    return jnp.swapaxes(fft_conv_reference(jnp.swapaxes(u, 1, 2), k, D), 1, 2)


def _cases_scan(length, batch, channels, dtype, rng):
    shape = (batch, length, channels)
    br, bi = (jnp.asarray(rng.normal(size=shape), jnp.float32) for _ in range(2))
    mod, phase = rng.uniform(0.5, 0.999, channels), rng.uniform(-np.pi, np.pi, channels)
    ar, ai = jnp.asarray(mod * np.cos(phase), jnp.float32), jnp.asarray(mod * np.sin(phase), jnp.float32)

    def reference(ar, ai, br, bi):
        x = linear_scan_reference(jax.lax.complex(ar, ai), jax.lax.complex(br, bi))
        return jnp.real(x), jnp.imag(x)

    def sequential(ar, ai, br, bi):  # the kernel's loop, one step at a time, in XLA
        def step(state, b):
            hr, hi = state
            hr, hi = ar * hr - ai * hi + b[0], ar * hi + ai * hr + b[1]
            return (hr, hi), (hr, hi)

        _, (xr, xi) = jax.lax.scan(step, (jnp.zeros_like(br[:, 0]), jnp.zeros_like(bi[:, 0])),
                                   (jnp.swapaxes(br, 0, 1), jnp.swapaxes(bi, 0, 1)))
        return jnp.swapaxes(xr, 0, 1), jnp.swapaxes(xi, 0, 1)

    impls = {"xla": reference, "sequential_xla": sequential, "pallas": linear_scan_split}
    minimum_bytes = 4 * br.size * 4  # read Re/Im b, write Re/Im x (a is per state)
    return impls, (ar, ai, br, bi), minimum_bytes, {"dtype": "complex64 (split)"}


KERNELS = {"fftconv": _cases_fftconv, "scan": _cases_scan}


def bench_kernels(kernels: Sequence[str] = tuple(KERNELS), lengths: Sequence[int] = (1024, 4096, 16384),
                  batch: int = 16, channels: int = 256, dtype: str = "float32", backward: bool = True,
                  interpret: bool = False, steps: int = 5, repeats: int = 3) -> Iterator[dict]:
    """One dict per (kernel, length, implementation, pass). ``channels``: H of the convolution, P
    (complex states) of the scan. ``dtype``: of the convolution's input (float32 or bfloat16)."""
    unknown = sorted(set(kernels) - set(KERNELS))
    if unknown:
        raise ValueError(f"unknown kernels {unknown}; choose from {sorted(KERNELS)}")
    env = _environment()
    on_cpu = env["backend"] == "cpu"
    peak = PEAK_BANDWIDTH.get(env["device"])
    rng = np.random.default_rng(0)
    for name in kernels:
        for length in lengths:
            impls, args, minimum_bytes, extra = KERNELS[name](int(length), batch, channels,
                                                              jnp.dtype(dtype), rng)
            passes = [("fwd", False)] + ([("fwd_bwd", True)] if backward else [])
            for pass_name, with_bwd in passes:
                base = {"bench": "kernels", "kernel": name, "pass": pass_name, "length": int(length),
                        "batch": batch, "channels": channels, **extra}
                reference_ms = None
                for impl, f in impls.items():
                    line = {**base, "impl": impl}
                    if impl == "pallas" and on_cpu:
                        if not interpret:
                            yield {**line, "skipped": "CPU: Pallas runs only in interpret mode, which is not "
                                                      "a speed measure (pass --interpret to time it anyway)"}
                            continue
                        line["interpret"] = True
                        line["note"] = "interpret mode: not a speed measure"
                    fn = _with_backward(f, len(args)) if with_bwd else f
                    call_args = ((jnp.ones_like(args[-1] if name == "scan" else args[0], jnp.float32),) + args
                                 if with_bwd else args)
                    ms, compile_s = _time(jax.jit(fn), call_args, steps, repeats)
                    reference_ms = ms if impl == "xla" else reference_ms
                    # forward: read the input, write the output; backward adds about 1.5 times that
                    # (read the cotangent and the saved input, write the input's cotangent)
                    gbps = minimum_bytes * (2.5 if with_bwd else 1.0) / (ms / 1e3) / 1e9
                    line.update({"ms": round(ms, 3), "speedup_vs_xla": round(reference_ms / ms, 3),
                                 "effective_GBps_at_min_traffic": round(gbps, 2),
                                 "fraction_of_peak_bandwidth": None if peak is None else round(gbps * 1e9 / peak, 3),
                                 "compile_s": round(compile_s, 2), **env})
                    yield line
