import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402


@pytest.fixture
def x64():
    """Enable float64 in JAX for one test only (the other tests run in JAX's default float32)."""
    import jax

    with jax.enable_x64(True):
        yield
