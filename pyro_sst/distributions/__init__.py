from .base import ExponentialFamily, PerturbAndRelax, StructuredDistribution
from .permutations import GumbelSinkhorn
from .subsets import KSubset, RelaxedTopK
from .trees import Arborescence, RelaxedArborescence, RelaxedSpanningTree, SpanningTree

__all__ = [
    "Arborescence",
    "ExponentialFamily",
    "GumbelSinkhorn",
    "KSubset",
    "PerturbAndRelax",
    "RelaxedArborescence",
    "RelaxedSpanningTree",
    "RelaxedTopK",
    "SpanningTree",
    "StructuredDistribution",
]
