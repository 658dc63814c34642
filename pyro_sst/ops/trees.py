r"""Spanning trees and arborescences: log-partitions, marginals, solvers, samplers.

Value layouts (shared with :mod:`numpyro_sst`):

* undirected spanning tree on ``n`` nodes: ``(..., n, n)`` symmetric 0/1 matrix
  with zero diagonal; only the strict upper triangle of ``logits`` is read.
* arborescence rooted at ``root``: ``(..., n, n)`` with ``x[i, j] = 1`` iff
  ``i`` is the parent of ``j``; non-root columns sum to 1, the root column is 0.
"""

import numpy as np
import torch

from .matrix_tree import (
    _check_args,
    arborescence_log_partition,
    arborescence_marginals,
    check_root,
    directed_log_weights,
)

__all__ = [
    "enumerate_arborescences",
    "enumerate_spanning_trees",
    "max_arborescence",
    "max_spanning_tree",
    "sample_arborescence",
    "sample_spanning_tree",
    "spanning_tree_log_partition",
    "spanning_tree_marginals",
    "symmetrize_upper",
]


def symmetrize_upper(x):
    """Mirror the strict upper triangle of ``x`` into the lower one; zero diagonal."""
    upper = torch.triu(x, 1)
    return upper + upper.mT


def spanning_tree_log_partition(logits):
    r"""Kirchhoff: :math:`A(\theta) = \log \sum_T \prod_{(i,j) \in T} e^{\theta_{ij}}`.

    Equals the log-determinant of the weighted Laplacian with one row and column
    removed. Reads the strict upper triangle of ``logits`` (``(..., n, n)``).
    """
    return arborescence_log_partition(symmetrize_upper(logits), root=0)


def spanning_tree_marginals(logits):
    r"""Edge marginals :math:`\mu_{ij} = P((i,j) \in T)`, symmetric, rows summing to degrees.

    The sum over :math:`i<j` is :math:`n-1`. Computed as the two orientations of
    the arborescence marginals of the symmetric digraph rooted at node 0.
    """
    mu = arborescence_marginals(symmetrize_upper(logits), root=0)
    return mu + mu.mT


def _categorical(probs, generator=None):
    """One draw per row of ``probs`` (..., m) by inverse CDF."""
    u = torch.rand(probs.shape[:-1] + (1,), dtype=probs.dtype, device=probs.device, generator=generator)
    cdf = probs.cumsum(-1)
    cdf = cdf / cdf[..., -1:]
    return torch.searchsorted(cdf, u).squeeze(-1).clamp(max=probs.shape[-1] - 1)


def sample_arborescence(logits, root=0, single_root=False, sample_shape=(), generator=None):
    r"""Exact sample from :math:`q(x) \propto e^{\langle \theta, x\rangle}` over arborescences.

    Colbourn-style ancestral sampling: the parent of each non-root node is drawn
    in turn from its conditional marginals given the parents already drawn
    (conditioning keeps only the chosen in-edge of that node), so the product of
    the conditionals is exactly ``q``. ``n - 1`` rounds of batched marginals:
    :math:`O(n^4)` work, no Python loop over the batch.

    :returns: a 0/1 tensor of shape ``sample_shape + logits.shape``.
    """
    root = _check_args(logits, root, single_root)
    n = logits.shape[-1]
    sample_shape = torch.Size(sample_shape)
    with torch.no_grad():
        theta = directed_log_weights(logits.detach(), root)
        theta = theta.expand(sample_shape + theta.shape).clone()
        for j in range(n):
            if j == root:
                continue
            probs = arborescence_marginals(theta, root, single_root)[..., :, j]
            parent = _categorical(probs.clamp(min=0), generator)
            keep = torch.arange(n, device=theta.device) == parent[..., None]
            theta[..., :, j] = theta[..., :, j].masked_fill(~keep, -float("inf"))
        return torch.isfinite(theta).to(logits.dtype) * (~torch.eye(n, dtype=torch.bool, device=logits.device))


def sample_spanning_tree(logits, sample_shape=(), generator=None):
    """Exact sample from the exponential family over spanning trees (see :func:`sample_arborescence`)."""
    x = sample_arborescence(symmetrize_upper(logits), 0, False, sample_shape, generator)
    return x + x.mT


def max_spanning_tree(weights):
    """Maximum-weight spanning tree by batched Prim, on the device of ``weights``.

    Reads the strict upper triangle of ``weights`` (``(..., n, n)``); ties go to
    the lowest node index (deterministic). ``n`` sequential steps of batched
    ``O(n)`` work; returns a symmetric 0/1 matrix of the input's dtype.
    """
    shape, n = weights.shape, weights.shape[-1]
    with torch.no_grad():
        W = symmetrize_upper(weights.detach()).reshape(-1, n, n)
        batch = torch.arange(W.shape[0], device=W.device)
        in_tree = torch.zeros(W.shape[0], n, dtype=torch.bool, device=W.device)
        in_tree[:, 0] = True
        key = W[:, 0, :].clone()
        parent = torch.zeros(W.shape[0], n, dtype=torch.long, device=W.device)
        x = torch.zeros_like(W)
        for _ in range(n - 1):
            v = key.masked_fill(in_tree, -float("inf")).argmax(-1)
            in_tree[batch, v] = True
            p = parent[batch, v]
            x[batch, p, v] = 1
            x[batch, v, p] = 1
            row = W[batch, v]
            better = (row > key) & ~in_tree
            key = torch.where(better, row, key)
            parent = torch.where(better, v[:, None], parent)
        return x.reshape(shape)


def _chu_liu_edmonds(W, root):
    """Parent array of the maximum arborescence of dense weights ``W`` (NumPy)."""
    n = W.shape[0]
    score = W.astype(np.float64).copy()
    np.fill_diagonal(score, -np.inf)
    score[:, root] = -np.inf
    parent = score.argmax(0)
    parent[root] = -1
    # Find a cycle in the best-in-edge graph.
    color = np.zeros(n, dtype=np.int64)
    cycle = None
    for start in range(n):
        path, v = [], start
        while v != -1 and color[v] == 0:
            color[v] = start + 1
            path.append(v)
            v = parent[v]
        if v != -1 and color[v] == start + 1:
            cycle = path[path.index(v):]
            break
        for u in path:
            color[u] = -1
    if cycle is None:
        return parent
    in_cycle = np.zeros(n, dtype=bool)
    in_cycle[cycle] = True
    rest = np.flatnonzero(~in_cycle)
    c = len(rest)  # index of the contracted node
    new_root = int(np.flatnonzero(rest == root)[0])
    sub = np.full((c + 1, c + 1), -np.inf)
    sub[:c, :c] = score[np.ix_(rest, rest)]
    # Edges into the cycle: gain over the cycle edge they would replace.
    into = score[np.ix_(rest, cycle)] - score[parent[cycle], cycle][None, :]
    enter_at = into.argmax(1)
    sub[:c, c] = into[np.arange(c), enter_at]
    # Edges out of the cycle: best source inside it.
    out = score[np.ix_(cycle, rest)]
    leave_from = out.argmax(0)
    sub[c, :c] = out[leave_from, np.arange(c)]
    sub_parent = _chu_liu_edmonds(sub, new_root)
    result = parent.copy()
    for k, v in enumerate(rest):
        if k == new_root:
            continue
        p = sub_parent[k]
        result[v] = cycle[leave_from[k]] if p == c else rest[p]
    entering = sub_parent[c]
    v_enter = cycle[enter_at[entering]]
    result[v_enter] = rest[entering]
    return result


def max_arborescence(weights, root=0, single_root=False):
    """Maximum-weight arborescence by Chu-Liu-Edmonds.

    ``weights[..., i, j]`` scores edge ``i -> j``. With ``single_root`` every root
    edge is penalised by more than the total weight range, so the optimum uses
    exactly one root edge and is the best such arborescence. Ties go to the lowest
    parent index. The contraction recursion runs in NumPy on the CPU, one batch
    element at a time (``O(n^3)`` each); the result is moved back to the input's
    device and dtype.
    """
    root = _check_args(weights, root, single_root)
    shape, n = weights.shape, weights.shape[-1]
    W = weights.detach().cpu().double().reshape(-1, n, n).numpy()
    if single_root:
        spread = np.ptp(W[np.isfinite(W)]) if np.isfinite(W).any() else 0.0
        W = W.copy()
        W[:, root, :] -= n * (spread + 1.0)
    x = np.zeros_like(W)
    others = np.array([v for v in range(n) if v != root], dtype=np.int64)
    for b in range(W.shape[0]):
        parent = _chu_liu_edmonds(W[b], root)
        x[b, parent[others], others] = 1
    return torch.as_tensor(x, dtype=weights.dtype, device=weights.device).reshape(shape)


_MAX_ENUMERATE_NODES = 7


def _prufer_trees(n):
    """Parent arrays (rooted at 0) of all n^(n-2) labelled trees, by Prüfer decoding."""
    import itertools

    parents = []
    for seq in itertools.product(range(n), repeat=max(n - 2, 0)):
        degree = [1] * n
        for a in seq:
            degree[a] += 1
        adj = [[] for _ in range(n)]
        for a in seq:
            leaf = degree.index(1)
            adj[leaf].append(a)
            adj[a].append(leaf)
            degree[leaf] -= 1
            degree[a] -= 1
        u, v = [i for i in range(n) if degree[i] == 1]
        adj[u].append(v)
        adj[v].append(u)
        parents.append(adj)
    return parents


def _orient(adj, root):
    parent, stack = {root: -1}, [root]
    while stack:
        u = stack.pop()
        for v in adj[u]:
            if v not in parent:
                parent[v] = u
                stack.append(v)
    return parent


def enumerate_arborescences(n, root=0, single_root=False, dtype=None, device=None):
    """Every arborescence rooted at ``root`` as a ``(N, n, n)`` 0/1 tensor (``n <= 7``)."""
    root = check_root(n, root, single_root)
    if n > _MAX_ENUMERATE_NODES:
        raise ValueError(f"enumeration needs n <= {_MAX_ENUMERATE_NODES}, got n={n}")
    if n == 1:
        return torch.zeros(1, 1, 1, dtype=dtype, device=device)
    out = []
    for adj in _prufer_trees(n):
        if single_root and len(adj[root]) != 1:
            continue
        x = np.zeros((n, n))
        for v, p in _orient(adj, root).items():
            if p >= 0:
                x[p, v] = 1
        out.append(x)
    return torch.as_tensor(np.stack(out), dtype=dtype, device=device)


def enumerate_spanning_trees(n, dtype=None, device=None):
    """Every spanning tree of ``K_n`` as a symmetric ``(N, n, n)`` 0/1 tensor (``n <= 7``)."""
    x = enumerate_arborescences(n, 0, False, dtype, device)
    return x + x.mT
