"""Relaxed combinatorial distributions (stochastic softmax tricks) for Pyro.

Distributions subclass :class:`pyro.distributions.TorchDistribution`; the pure
tensor functions they are built from live in :mod:`pyro_sst.ops`.
"""

from . import ops
from .distributions import (
    Arborescence,
    ExponentialFamily,
    PerturbAndRelax,
    RelaxedArborescence,
    RelaxedSpanningTree,
    SpanningTree,
    StructuredDistribution,
)

__version__ = "0.1.0"

__all__ = [
    "Arborescence",
    "ExponentialFamily",
    "PerturbAndRelax",
    "RelaxedArborescence",
    "RelaxedSpanningTree",
    "SpanningTree",
    "StructuredDistribution",
    "ops",
]
