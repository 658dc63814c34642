"""Pure, batched functions on tensors: everything the distributions are built from."""

from .layout import (
    colex_edges,
    edge_logits_to_matrix,
    edges_to_matrix,
    matrix_to_edge_logits,
    matrix_to_edges,
)
from .matrix_tree import (
    arborescence_log_partition,
    arborescence_marginals,
    directed_log_weights,
    laplacian,
)
from .noise import NOISES, sample_noise, utility_kl
from .trees import (
    enumerate_arborescences,
    enumerate_spanning_trees,
    max_arborescence,
    max_spanning_tree,
    sample_arborescence,
    sample_spanning_tree,
    spanning_tree_log_partition,
    spanning_tree_marginals,
    symmetrize_upper,
)

__all__ = [
    "NOISES",
    "arborescence_log_partition",
    "arborescence_marginals",
    "colex_edges",
    "directed_log_weights",
    "edge_logits_to_matrix",
    "edges_to_matrix",
    "enumerate_arborescences",
    "enumerate_spanning_trees",
    "laplacian",
    "matrix_to_edge_logits",
    "matrix_to_edges",
    "max_arborescence",
    "max_spanning_tree",
    "sample_arborescence",
    "sample_noise",
    "sample_spanning_tree",
    "spanning_tree_log_partition",
    "spanning_tree_marginals",
    "symmetrize_upper",
    "utility_kl",
]
