from .base import ExponentialFamily, PerturbAndRelax, StructuredDistribution
from .categorical import RelaxedOneHotCategorical, RelaxedOneHotCategoricalStraightThrough
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
    "RelaxedOneHotCategorical",
    "RelaxedOneHotCategoricalStraightThrough",
    "RelaxedSpanningTree",
    "RelaxedTopK",
    "SpanningTree",
    "StructuredDistribution",
]
