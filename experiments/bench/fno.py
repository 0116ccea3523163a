"""FNO-2D training-step throughput (the Darcy configuration of the FNO paper by default), one line per
spectral-convolution path (``--impl fft dft``)."""
from __future__ import annotations

import resource
import time
from collections.abc import Sequence

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
from hydra.utils import instantiate

from experiments.allocator import malloc_tuned
from experiments.config import compose, option_files
from experiments.trainer import count_params, init_train_state, make_train_step
from operators.fno import FNO
from operators.losses import relative_lp
from operators.spectral import choose_impl


def optimizer_from_config(name: str):
    """The optimizer factory of the option ``configs/optim/<name>.yaml`` (a partial awaiting learning_rate),
    composed and checked against its schema as ``python -m experiments.train optim=<name>`` does."""
    options = sorted(o for g, o in option_files() if g == "optim")
    if name not in options:
        raise ValueError(f"no optimizer option {name!r}; options: {options}")
    return instantiate(compose([f"optim={name}"]).optim)


def _cpu_seconds() -> float:
    """CPU time of this process, all threads (less disturbed than wall time on a shared machine)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_fno(batch: int = 16, resolution: int = 64, width: int = 32, modes: int = 12, layers: int = 4,
              steps: int = 20, repeats: int = 3, optimizer: str = "adam", impl: Sequence[str] = ("fft", "dft"),
              compute_dtype: str | None = None) -> list[dict]:
    """Training samples/s of one jitted step: forward, relative-L2 loss, backward, optimizer update.

    One line per spectral-convolution path in ``impl`` (``auto`` is reported with the path it chose),
    all measured in this run with their timed repeats interleaved, so that a load change on a
    shared machine hits every path alike; ``vs_first`` is the first path's best step time over this
    one's. ``optimizer``: the option name of ``configs/optim/<name>.yaml`` (its settings, learning
    rate 1e-3).
    """
    rng = np.random.default_rng(0)
    shape = (batch, resolution, resolution, 1)
    data = {"x": jnp.asarray(rng.normal(size=shape), jnp.float32),
            "y": jnp.asarray(rng.normal(size=shape), jnp.float32)}
    runs = []
    for name in impl:
        model = FNO(1, 1, modes=(modes, modes), width=width, n_layers=layers, impl=name,
                    compute_dtype=compute_dtype, rngs=nnx.Rngs(0))
        tx = optimizer_from_config(optimizer)(learning_rate=1e-3)
        graphdef, state = init_train_state(model, tx)
        step = jax.jit(make_train_step(graphdef, lambda m, b: relative_lp(m(b["x"]), b["y"]), tx),
                       donate_argnums=0)
        t = time.perf_counter()
        state, scalars = step(state, data)
        jax.block_until_ready((state, scalars))
        compile_s = time.perf_counter() - t
        for _ in range(3):  # warm-up
            state, scalars = step(state, data)
        jax.block_until_ready(state)
        chosen = choose_impl(name, (resolution, resolution), (modes, modes), compute_dtype)
        runs.append({"impl": name, "chosen": chosen, "model": model, "step": step, "state": state,
                     "compile_s": compile_s, "best": float("inf"), "best_cpu": float("inf")})

    for _ in range(repeats):
        for run in runs:
            step, state = run["step"], run["state"]
            t, c = time.perf_counter(), _cpu_seconds()
            for _ in range(steps):
                state, scalars = step(state, data)
            jax.block_until_ready((state, scalars))
            run["best"] = min(run["best"], time.perf_counter() - t)
            run["best_cpu"] = min(run["best_cpu"], _cpu_seconds() - c)
            run["state"] = state

    lines = []
    for run in runs:
        lines.append({
            "bench": "fno_train_step", "impl": run["impl"] if run["impl"] == run["chosen"] else f"auto:{run['chosen']}",
            "compute_dtype": compute_dtype, "batch": batch, "resolution": resolution, "width": width,
            "modes": modes, "layers": layers, "params": count_params(run["model"]), "optimizer": optimizer,
            "optimizer_state_mb": round(sum(x.nbytes for x in jax.tree.leaves(run["state"]["opt_state"])) / 2**20, 3),
            "samples_per_s": round(batch * steps / run["best"], 2), "ms_per_step": round(1e3 * run["best"] / steps, 3),
            "cpu_ms_per_step": round(1e3 * run["best_cpu"] / steps, 3),
            "vs_first": round(runs[0]["best"] / run["best"], 3),
            "compile_s": round(run["compile_s"], 2), "backend": jax.default_backend(),
            "device": jax.devices()[0].device_kind, "n_devices_visible": jax.device_count(),
            "jax": jax.__version__, "malloc_tuned": malloc_tuned(),
        })
    return lines
