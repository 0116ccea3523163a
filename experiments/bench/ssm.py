"""Forward + backward time of the sequence mixers (S4, S4D, S5, long convolution) on one layer.

Each measurement is one jitted ``value_and_grad`` of ``mean(layer(x)^2)`` with respect to the layer's
parameters, on ``x`` of shape (batch, length, d_model), after compilation and a warm-up; the best
of ``repeats`` runs of ``steps`` calls, synchronised with ``block_until_ready``. A layer whose module
is not importable is reported as skipped.
"""
from __future__ import annotations

import importlib
import time
from collections.abc import Iterator, Sequence

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from experiments.trainer import count_params

# name -> (module, class, extra constructor arguments given d_state)
LAYERS: dict[str, tuple[str, str, dict]] = {
    "s4": ("lax_models.ssm.s4", "S4", {"d_state": None}),
    "s4d": ("lax_models.ssm.s4d", "S4D", {"d_state": None}),
    "s5": ("lax_models.ssm.s5", "S5", {"d_state": None}),
    "longconv": ("lax_models.longconv", "LongConv", {}),
}


def _layer_class(name: str):
    module, cls, _ = LAYERS[name]
    try:
        return getattr(importlib.import_module(module), cls), None
    except (ImportError, AttributeError) as err:
        return None, f"{module}.{cls} is not available: {err}"


def _environment() -> dict:
    return {"backend": jax.default_backend(), "device": jax.devices()[0].device_kind, "jax": jax.__version__}


def bench_ssm(lengths: Sequence[int] = (1024, 4096, 16384), batch: int = 16, d_model: int = 128,
              d_state: int = 64, layers: Sequence[str] = tuple(LAYERS), steps: int = 10,
              repeats: int = 3) -> Iterator[dict]:
    """One dict per (layer, length): milliseconds per forward + backward step and tokens per second.

    ``d_state``: N per channel for S4 / S4D, P (complex states shared by the channels; P/2 stored
    with conjugate symmetry) for S5; the long convolution has no state (its kernel is ``length`` long).
    Every layer gets ``l_max = length``.
    """
    unknown = sorted(set(layers) - set(LAYERS))
    if unknown:
        raise ValueError(f"unknown layers {unknown}; choose from {sorted(LAYERS)}")
    rng = np.random.default_rng(0)
    for name in layers:
        cls, why = _layer_class(name)
        for length in lengths:
            base = {"bench": "ssm_layer_fwd_bwd", "layer": name, "length": int(length), "batch": batch,
                    "d_model": d_model}
            if cls is None:
                yield {**base, "skipped": why}
                continue
            kwargs = {k: d_state for k in LAYERS[name][2]}
            layer = cls(d_model, l_max=int(length), **kwargs, rngs=nnx.Rngs(0))
            if hasattr(layer, "eval"):
                layer.eval()  # no kernel dropout: time the layer itself
            graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

            def loss(params, x):
                return jnp.mean(nnx.merge(graphdef, params, rest)(x) ** 2)

            step = jax.jit(jax.value_and_grad(loss))
            x = jnp.asarray(rng.normal(size=(batch, int(length), d_model)), jnp.float32)
            t = time.perf_counter()
            jax.block_until_ready(step(params, x))
            compile_s = time.perf_counter() - t
            for _ in range(2):  # warm-up
                out = step(params, x)
            jax.block_until_ready(out)
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                for _ in range(steps):
                    out = step(params, x)
                jax.block_until_ready(out)
                best = min(best, time.perf_counter() - t)
            ms = 1e3 * best / steps
            yield {**base, **({"d_state": d_state} if kwargs else {}), "params": count_params(layer),
                   "ms_per_step": round(ms, 3), "tokens_per_s": round(batch * length / (ms / 1e3), 1),
                   "compile_s": round(compile_s, 2), **_environment()}
