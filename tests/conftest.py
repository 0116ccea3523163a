"""Root test configuration.

Eight virtual CPU devices so that the data-parallel code paths run on a CPU-only machine. This must
happen before any JAX backend is initialised, hence at import time of the root conftest.
"""
import os

os.environ.setdefault("XLA_FLAGS", "")
import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
