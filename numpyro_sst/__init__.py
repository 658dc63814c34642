"""Relaxed combinatorial distributions (stochastic softmax tricks) for NumPyro.

Distributions subclass :class:`numpyro.distributions.Distribution`; the pure, jittable JAX
functions they are built from live in :mod:`numpyro_sst.ops`. The package mirrors
:mod:`pyro_sst` module for module and name for name; random numbers come from explicit
``jax.random`` keys.
"""

from . import distributions, ops
from .distributions import *  # noqa: F403

__version__ = "0.1.0"

__all__ = distributions.__all__ + ["ops"]
