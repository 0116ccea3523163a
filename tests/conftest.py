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

# The suite compiles hundreds of small programs and runs each a few times, so cheaper XLA:CPU code
# generation (LLVM at -O1, no expensive passes) cuts its time by about 15%; the programs compute the same
# operations. (-O0 would cut a third, but XLA:CPU then returns NaN in the float64 gradient of the U-Net
# of tests/operators/test_unet.py, finite at -O1 and the default -O3.) A user's XLA_FLAGS win. The
# subprocess runs of tests/experiments/test_train_cli.py drop every XLA_* variable, so they compile as
# users' runs do.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=1 --xla_llvm_disable_expensive_passes=true")
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
