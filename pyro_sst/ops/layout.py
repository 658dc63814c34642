"""Converters between our ``(n, n)`` matrices and Pyro's ``SpanningTree`` layout.

Pyro's :class:`pyro.distributions.SpanningTree` stores one logit per edge of the
complete graph in colexicographic order ``(0,1), (0,2), (1,2), (0,3), ...``
(edge ``(v1, v2)`` with ``v1 < v2`` has rank ``v1 + v2 (v2 - 1) / 2``) and a
tree as a ``(n - 1, 2)`` long tensor of sorted edges in the same order.
"""

import torch

from sst_common.checks import num_nodes_from_num_edges

__all__ = [
    "colex_edges",
    "edge_logits_to_matrix",
    "edges_to_matrix",
    "matrix_to_edge_logits",
    "matrix_to_edges",
    "num_nodes_from_num_edges",
]


def colex_edges(n: int, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(v1, v2)`` index tensors of the ``n (n - 1) / 2`` edges in colex order."""
    v2 = torch.arange(n, device=device).repeat_interleave(torch.arange(n, device=device))
    v1 = torch.cat([torch.arange(k, device=device) for k in range(n)]) if n else v2
    return v1, v2


def edge_logits_to_matrix(edge_logits: torch.Tensor) -> torch.Tensor:
    """Pyro's colex ``(..., n(n-1)/2)`` edge logits to a symmetric ``(..., n, n)`` matrix."""
    n = num_nodes_from_num_edges(edge_logits.shape[-1])
    v1, v2 = colex_edges(n, edge_logits.device)
    out = edge_logits.new_zeros(edge_logits.shape[:-1] + (n, n))
    out[..., v1, v2] = edge_logits
    out[..., v2, v1] = edge_logits
    return out


def matrix_to_edge_logits(logits: torch.Tensor) -> torch.Tensor:
    """The strict upper triangle of ``(..., n, n)`` logits in Pyro's colex edge order."""
    v1, v2 = colex_edges(logits.shape[-1], logits.device)
    return logits[..., v1, v2]


def edges_to_matrix(edges: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """A ``(..., n - 1, 2)`` edge list (Pyro's tree layout) to a symmetric 0/1 matrix."""
    flat = torch.zeros(edges.shape[:-2] + (num_nodes * num_nodes,), device=edges.device)
    one = torch.ones(edges.shape[:-1], device=edges.device)
    flat.scatter_(-1, edges[..., 0] * num_nodes + edges[..., 1], one)
    flat.scatter_(-1, edges[..., 1] * num_nodes + edges[..., 0], one)
    return flat.reshape(edges.shape[:-2] + (num_nodes, num_nodes))


def matrix_to_edges(x: torch.Tensor) -> torch.Tensor:
    """A symmetric 0/1 tree matrix ``(..., n, n)`` to Pyro's sorted colex ``(..., n - 1, 2)`` edges."""
    n = x.shape[-1]
    v1, v2 = colex_edges(n, x.device)
    present = x[..., v1, v2] > 0.5
    order = torch.argsort((~present).to(torch.int8), dim=-1, stable=True)[..., : n - 1]
    return torch.stack([v1[order], v2[order]], dim=-1)
