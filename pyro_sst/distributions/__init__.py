from .base import ExponentialFamily, PerturbAndRelax, StructuredDistribution
from .trees import Arborescence, RelaxedArborescence, RelaxedSpanningTree, SpanningTree

__all__ = [
    "Arborescence",
    "ExponentialFamily",
    "PerturbAndRelax",
    "RelaxedArborescence",
    "RelaxedSpanningTree",
    "SpanningTree",
    "StructuredDistribution",
]
