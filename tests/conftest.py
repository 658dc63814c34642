import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One compute thread per pytest-xdist worker (`make test` runs one worker per core): torch's and XLA's
    # thread pools would otherwise each take every core and the workers would fight over them.
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    import torch

    torch.set_num_threads(1)

import pytest  # noqa: E402


@pytest.fixture
def x64():
    """Enable float64 in JAX for one test only (the other tests run in JAX's default float32)."""
    import jax

    with jax.enable_x64(True):
        yield


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module: one process compiles thousands of them, and keeping
    them all held the suite's memory near 6 GB."""
    yield
    if "jax" in sys.modules:
        sys.modules["jax"].clear_caches()
