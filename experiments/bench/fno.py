"""FNO-2D training-step throughput (the Darcy configuration of the FNO paper by default)."""
from __future__ import annotations

import time

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from experiments.trainer import count_params, init_train_state, make_train_step
from operators.fno import FNO
from operators.losses import relative_lp


def optimizer_from_config(name: str):
    """The optimizer factory of the option ``configs/optim/<name>.yaml`` (a partial awaiting learning_rate)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from experiments.config import CONFIG_DIR, SCHEMAS

    if ("optim", name) not in SCHEMAS:
        raise ValueError(f"no optimizer option {name!r}; options: {sorted(o for g, o in SCHEMAS if g == 'optim')}")
    node = OmegaConf.merge(OmegaConf.structured(SCHEMAS["optim", name]), OmegaConf.load(CONFIG_DIR / "optim" / f"{name}.yaml"))
    return instantiate(node)


def bench_fno(batch: int = 16, resolution: int = 64, width: int = 32, modes: int = 12, layers: int = 4,
              steps: int = 20, repeats: int = 3, optimizer: str = "adam") -> dict:
    """Training samples/s of one jitted step: forward, relative-L2 loss, backward, optimizer update.

    ``optimizer``: the option name of ``configs/optim/<name>.yaml`` (its settings, learning rate 1e-3).
    """
    model = FNO(1, 1, modes=(modes, modes), width=width, n_layers=layers, rngs=nnx.Rngs(0))
    tx = optimizer_from_config(optimizer)(learning_rate=1e-3)
    graphdef, state = init_train_state(model, tx)
    step = jax.jit(make_train_step(graphdef, lambda m, b: relative_lp(m(b["x"]), b["y"]), tx),
                   donate_argnums=0)
    rng = np.random.default_rng(0)
    shape = (batch, resolution, resolution, 1)
    data = {"x": jnp.asarray(rng.normal(size=shape), jnp.float32),
            "y": jnp.asarray(rng.normal(size=shape), jnp.float32)}

    t = time.perf_counter()
    state, scalars = step(state, data)
    jax.block_until_ready((state, scalars))
    compile_s = time.perf_counter() - t
    for _ in range(3):  # warm-up
        state, scalars = step(state, data)
    jax.block_until_ready(state)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            state, scalars = step(state, data)
        jax.block_until_ready((state, scalars))
        best = min(best, time.perf_counter() - t)
    return {
        "bench": "fno_train_step", "batch": batch, "resolution": resolution, "width": width,
        "modes": modes, "layers": layers, "params": count_params(model), "optimizer": optimizer,
        "optimizer_state_mb": round(sum(x.nbytes for x in jax.tree.leaves(state["opt_state"])) / 2**20, 3),
        "samples_per_s": round(batch * steps / best, 2), "ms_per_step": round(1e3 * best / steps, 3),
        "compile_s": round(compile_s, 2), "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind, "n_devices_visible": jax.device_count(),
        "jax": jax.__version__,
    }
