"""Root test configuration.

Eight virtual CPU devices so that the data-parallel code paths run on a CPU-only machine, and cheap
XLA:CPU code generation (below). This must happen before any JAX backend is initialised, hence at
import time of the root conftest (of every pytest-xdist worker too).

The tests under tests/experiments compose ``configs/train.yaml`` (with ``experiments.config.compose``
or Hydra's own ``compose``): its generated schemas are registered once, before the first of them.
"""
import os
import pathlib
import sys

import pytest

# The suite compiles hundreds of small programs and runs each a few times, so XLA:CPU's cheapest code
# generation (no LLVM optimisation, no expensive passes) cuts its time by about a quarter; the programs
# compute the same operations. A user's XLA_FLAGS win. The subprocess runs of the command drop every
# XLA_* variable (tests/experiments/test_train_cli.py), so they compile as users' runs do.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

from experiments.config import register_schemas  # noqa: E402  (imports no JAX)

EXPERIMENT_TESTS = pathlib.Path(__file__).parent / "experiments"
sys.path.append(str(EXPERIMENT_TESTS))  # its helper modules (toy_tasks, published_layouts) for every test directory


@pytest.fixture(scope="session")
def config_schemas():
    """``experiments.config.register_schemas()``: the schemas of configs/, registered in Hydra's ConfigStore."""
    return register_schemas()


@pytest.fixture(scope="module", autouse=True)
def _register_config_schemas(request):
    """Before the module-scoped fixtures of a test module under tests/experiments."""
    if request.path.is_relative_to(EXPERIMENT_TESTS):
        request.getfixturevalue("config_schemas")
