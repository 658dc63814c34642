"""Relaxed combinatorial distributions (stochastic softmax tricks) for Pyro.

Distributions subclass :class:`pyro.distributions.TorchDistribution`; the pure
tensor functions they are built from live in :mod:`pyro_sst.ops`; gradient estimators
(score function, REBAR, RELAX, exact references) in :mod:`pyro_sst.estimators`.
"""

from . import distributions, estimators, ops
from .distributions import *  # noqa: F403

__version__ = "0.1.0"

__all__ = distributions.__all__ + ["estimators", "ops"]
