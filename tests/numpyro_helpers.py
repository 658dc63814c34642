"""Shared fixtures of the numpyro_sst test modules: float64 inside a fixture, never leaking out."""

import jax
import pytest


@pytest.fixture
def x64():
    """Enable float64 in JAX for one test only (the other tests run in JAX's default float32)."""
    with jax.enable_x64(True):
        yield
