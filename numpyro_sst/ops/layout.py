"""Converters between our ``(n, n)`` matrices and Pyro's ``SpanningTree`` layout (JAX).

Pyro's :class:`pyro.distributions.SpanningTree` stores one logit per edge of the complete graph in
colexicographic order ``(0,1), (0,2), (1,2), (0,3), ...`` (edge ``(v1, v2)`` with ``v1 < v2`` has
rank ``v1 + v2 (v2 - 1) / 2``) and a tree as a ``(n - 1, 2)`` integer array of sorted edges.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from sst_common.checks import num_nodes_from_num_edges

__all__ = [
    "colex_edges",
    "edge_logits_to_matrix",
    "edges_to_matrix",
    "matrix_to_edge_logits",
    "matrix_to_edges",
    "num_nodes_from_num_edges",
]


def colex_edges(n: int) -> tuple[jax.Array, jax.Array]:
    """``(v1, v2)`` index arrays of the ``n (n - 1) / 2`` edges in colex order."""
    v2 = np.repeat(np.arange(n), np.arange(n))
    v1 = np.concatenate([np.arange(k) for k in range(n)]) if n else v2
    return jnp.asarray(v1), jnp.asarray(v2)


def edge_logits_to_matrix(edge_logits: ArrayLike) -> jax.Array:
    """Pyro's colex ``(..., n(n-1)/2)`` edge logits to a symmetric ``(..., n, n)`` matrix (zero diagonal)."""
    n = num_nodes_from_num_edges(edge_logits.shape[-1])
    v1, v2 = colex_edges(n)
    out = jnp.zeros(edge_logits.shape[:-1] + (n, n), edge_logits.dtype)
    return out.at[..., v1, v2].set(edge_logits).at[..., v2, v1].set(edge_logits)


def matrix_to_edge_logits(logits: ArrayLike) -> jax.Array:
    """The strict upper triangle of ``(..., n, n)`` logits in Pyro's colex edge order."""
    v1, v2 = colex_edges(logits.shape[-1])
    return logits[..., v1, v2]


def edges_to_matrix(edges: ArrayLike, num_nodes: int, dtype: DTypeLike | None = jnp.float32) -> jax.Array:
    """A ``(..., n - 1, 2)`` edge list (Pyro's tree layout) to a symmetric 0/1 matrix."""
    nodes = jnp.arange(num_nodes)
    one_hot = [(edges[..., i, None] == nodes).astype(dtype) for i in (0, 1)]
    x = jnp.einsum("...ei,...ej->...ij", one_hot[0], one_hot[1])
    return x + jnp.swapaxes(x, -1, -2)


def matrix_to_edges(x: ArrayLike) -> jax.Array:
    """A symmetric 0/1 tree matrix ``(..., n, n)`` to Pyro's sorted colex ``(..., n - 1, 2)`` edges."""
    n = x.shape[-1]
    v1, v2 = colex_edges(n)
    present = x[..., v1, v2] > 0.5
    order = jnp.argsort(~present, axis=-1, stable=True)[..., : n - 1]
    return jnp.stack([v1[order], v2[order]], -1)
