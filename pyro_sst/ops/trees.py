r"""Spanning trees and arborescences: log-partitions, marginals, solvers, samplers.

Value layouts (shared with :mod:`numpyro_sst`):

* undirected spanning tree on ``n`` nodes: ``(..., n, n)`` symmetric 0/1 matrix
  with zero diagonal; only the strict upper triangle of ``logits`` is read.
* arborescence rooted at ``root``: ``(..., n, n)`` with ``x[i, j] = 1`` iff
  ``i`` is the parent of ``j``; non-root columns sum to 1, the root column is 0.

Special inputs (the same contract for every function here): ``-inf`` logits are
absent edges; where no tree of finite weight remains, the log-partition is
``-inf`` and the marginals, solvers and samplers raise :class:`ValueError`. A NaN
among the entries read gives NaN log-partitions and marginals and NaN-filled
samples and modes for that batch element. Diagonal entries (and, for
arborescences, the root column) are never read, so they may hold anything.
"""

import functools
import math
from typing import NamedTuple

import numpy as np
import torch

from sst_common import enumeration
from sst_common.checks import check_root

from .logspace import check_nonempty, fill_nan, mask_nan_elements
from .matrix_tree import (
    _STRUCTURE,
    _check_args,
    arborescence_log_partition,
    arborescence_marginals,
    directed_log_weights,
    eliminate,
)
from .tracing import opaque_call
from .validation import check_square

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


def symmetrize_upper(x: torch.Tensor) -> torch.Tensor:
    """Mirror the strict upper triangle of ``x`` into the lower one; zero diagonal."""
    upper = torch.triu(x, 1)
    return upper + upper.mT


def spanning_tree_log_partition(logits: torch.Tensor) -> torch.Tensor:
    r"""Kirchhoff: :math:`A(\theta) = \log \sum_T \prod_{(i,j) \in T} e^{\theta_{ij}}`.

    Equals the log-determinant of the weighted Laplacian with one row and column
    removed. Reads the strict upper triangle of ``logits`` (``(..., n, n)``).
    """
    check_square(logits)
    return arborescence_log_partition(symmetrize_upper(logits), root=0)


def spanning_tree_marginals(logits: torch.Tensor) -> torch.Tensor:
    r"""Edge marginals :math:`\mu_{ij} = P((i,j) \in T)`, symmetric, rows summing to degrees.

    The sum over :math:`i<j` is :math:`n-1`. Computed as the two orientations of
    the arborescence marginals of the symmetric digraph rooted at node 0.
    """
    check_square(logits)
    mu = arborescence_marginals(symmetrize_upper(logits), root=0)
    return mu + mu.mT


def sample_arborescence(
    logits: torch.Tensor,
    root: int = 0,
    single_root: bool = False,
    sample_shape: tuple[int, ...] = (),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Exact samples from :math:`q(x) \propto e^{\langle \theta, x\rangle}` over arborescences, ``(..., n, n)``.

    Sampling through the elimination that computes the log-partition (see
    :mod:`pyro_sst.ops.matrix_tree`). Eliminating node :math:`k` gives the graph :math:`G'` with
    weights :math:`w'_{ij} = w_{ij} + \pi_i w_{kj}`, and for an arborescence :math:`x` of
    :math:`G` its edges between the other nodes, :math:`F = x \setminus \delta(k)`, are distributed
    as the edges of an arborescence :math:`x'` of :math:`G'` each kept with probability
    :math:`f_{ij} = w_{ij} / w'_{ij}` (an edge not kept was the path :math:`i \to k \to j`). Given
    :math:`F`, node :math:`k` is the parent of every node left without one, and its own parent is
    drawn from :math:`\pi` restricted to the component of :math:`F` that holds the root. (Summing
    over the ways to route the dropped edges through :math:`k`, with the weighted Cayley formula
    :math:`\sum_T \prod_v W_{\mathrm{parent}(v)} = W_0 (\sum_a W_a)^{m-1}`, gives exactly
    :math:`w(F) \prod_l w_{k t_l} \sum_{i \in C_0} w_{ik}`, the weight of the arborescences of
    :math:`G` that contain :math:`F`.) So one log-space elimination per batch element
    (:math:`O(n^3)`, exact at every scale) serves every sample, and undoing it costs
    :math:`O(n^2 \log n)` per sample: a coin per tree edge, the root's component by pointer
    doubling and one categorical draw per node. ``single_root``: draws from the distribution whose
    root edges are scaled by :math:`e^{-c}` (the log-partition's construction), where arborescences
    with several root edges weigh under :math:`e^{-60}`, and rejects those: what is accepted is
    exactly :math:`q`.

    :returns: a 0/1 tensor of shape ``sample_shape + logits.shape``.
    """
    root = _check_args(logits, root, single_root)
    sample_shape = torch.Size(sample_shape)
    sample = functools.partial(
        _sample_arborescence, root=root, single_root=single_root, sample_shape=sample_shape, generator=generator
    )
    return opaque_call(sample, logits)


def _uniform(shape, like, generator):
    return torch.rand(shape, dtype=like.dtype, device=like.device, generator=generator)


def _root_component(parent, cut, k):
    """``(N, k)``: whether the path from each node to the root (node 0) crosses no ``cut`` edge (pointer doubling)."""
    ancestor = parent[:, :k]
    for _ in range(_doublings(k)):
        cut = cut | cut.gather(-1, ancestor)
        ancestor = ancestor.gather(-1, ancestor)
    return ~cut


def _undo_elimination(steps, element, generator):
    """``(N, n)`` parent arrays (elimination order, root 0 its own parent), drawn by undoing ``steps``."""
    n = len(steps) + 1
    parent = torch.zeros(element.shape[0], n, dtype=torch.long, device=element.device)
    for k in range(1, n):
        share, log_pi = steps[n - 1 - k].share, steps[n - 1 - k].log_pi
        children = parent[:, 1:k]
        nodes = torch.arange(1, k, device=element.device)
        kept = share.flatten(-2)[element[:, None], children * k + nodes]
        dropped = _uniform(kept.shape, kept, generator) >= kept
        cut = torch.cat([dropped.new_zeros(dropped.shape[0], 1), dropped], -1)
        in_root_component = _root_component(parent, cut, k)
        parent[:, 1:k] = torch.where(dropped, k, children)
        gumbel = -(-_uniform((element.shape[0], k), log_pi, generator).log()).log()
        scores = torch.where(in_root_component, log_pi[element] + gumbel, -math.inf)
        parent[:, k] = scores.argmax(-1)
    return parent


def _sample_arborescence(logits, root, single_root, sample_shape, generator):
    n = int(logits.shape[-1])
    theta, nan = mask_nan_elements(directed_log_weights(logits, root), 2)
    theta = theta.reshape(-1, n, n).double()
    elimination = eliminate(theta, root, single_root, keep_steps=True)
    check_nonempty(elimination.log_z, _STRUCTURE)
    batch = theta.shape[0]
    element = torch.arange(batch, device=theta.device).repeat(sample_shape.numel())
    parent = _undo_elimination(elimination.steps, element, generator)
    while single_root:
        several = ((parent[:, 1:] == 0).sum(-1) != 1).nonzero().squeeze(-1)
        if not several.numel():
            break
        parent[several] = _undo_elimination(elimination.steps, element[several], generator)
    order = torch.as_tensor(elimination.order, device=theta.device)
    x = torch.zeros(element.shape[0], n, n, dtype=logits.dtype, device=theta.device)
    x[torch.arange(element.shape[0], device=theta.device)[:, None], order[parent[:, 1:]], order[1:]] = 1
    return fill_nan(x.reshape(sample_shape + logits.shape), nan, 2)


def sample_spanning_tree(
    logits: torch.Tensor, sample_shape: tuple[int, ...] = (), generator: torch.Generator | None = None
) -> torch.Tensor:
    """Exact sample from the exponential family over spanning trees (see :func:`sample_arborescence`)."""
    check_square(logits)
    x = sample_arborescence(symmetrize_upper(logits), 0, False, sample_shape, generator)
    return x + x.mT


def max_spanning_tree(weights: torch.Tensor) -> torch.Tensor:
    """Maximum-weight spanning tree by batched Prim, on the device of ``weights``.

    Reads the strict upper triangle of ``weights`` (``(..., n, n)``); ties go to
    the lowest node index (deterministic). ``n`` sequential steps of batched
    ``O(n)`` work; returns a symmetric 0/1 matrix of the input's dtype.
    """
    check_square(weights, "weights")
    return opaque_call(_prim, weights)


def _prim(weights):
    shape, n = weights.shape, weights.shape[-1]
    W = symmetrize_upper(weights).reshape(-1, n, n)
    W, nan = mask_nan_elements(W, 2)
    batch = torch.arange(W.shape[0], device=W.device)
    in_tree = torch.zeros(W.shape[0], n, dtype=torch.bool, device=W.device)
    in_tree[:, 0] = True
    key = W[:, 0, :].clone()
    parent = torch.zeros(W.shape[0], n, dtype=torch.long, device=W.device)
    x = torch.zeros_like(W)
    connected = torch.ones(W.shape[0], dtype=torch.bool, device=W.device)
    for _ in range(n - 1):
        candidates = key.masked_fill(in_tree, -float("inf"))
        v = candidates.argmax(-1)
        connected &= candidates[batch, v] > -float("inf")
        in_tree[batch, v] = True
        p = parent[batch, v]
        x[batch, p, v] = 1
        x[batch, v, p] = 1
        row = W[batch, v]
        better = (row > key) & ~in_tree
        key = torch.where(better, row, key)
        parent = torch.where(better, v[:, None], parent)
    if not bool(connected.all()):
        raise ValueError(
            "weights: the edges of finite weight do not connect all nodes, so no spanning tree exists "
            f"(batch elements {torch.nonzero(~connected).flatten().tolist()[:10]})"
        )
    return fill_nan(x, nan, 2).reshape(shape)


def _lex_argmax(penalty, score, axis):
    """Argmax in the lexicographic order of ``(penalty, score)``; ties go to the lowest index."""
    best = penalty.max(axis, keepdims=True)
    return np.where(penalty == best, score, -np.inf).argmax(axis)


def _chu_liu_edmonds(penalty, score, root):
    """Parent array of the maximum arborescence of dense weights ``(penalty, score)`` (NumPy).

    Weights are ordered lexicographically, penalty first: an ordered group, so the
    contractions (differences of weights) stay exact however far apart the two
    components are. ``-inf`` in both marks an absent edge.
    """
    n = score.shape[0]
    penalty, score = penalty.copy(), score.copy()
    for w in (penalty, score):
        np.fill_diagonal(w, -np.inf)
        w[:, root] = -np.inf
    parent = _lex_argmax(penalty, score, 0)
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
            cycle = path[path.index(v) :]
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
    sub = [np.full((c + 1, c + 1), -np.inf) for _ in range(2)]
    into = [w[np.ix_(rest, cycle)] - w[parent[cycle], cycle][None, :] for w in (penalty, score)]
    out = [w[np.ix_(cycle, rest)] for w in (penalty, score)]
    # Edges into the cycle: gain over the cycle edge they would replace. Edges out of it: best source inside.
    enter_at = _lex_argmax(*into, 1)
    leave_from = _lex_argmax(*out, 0)
    for w, s, i, o in zip(sub, (penalty, score), into, out, strict=True):
        w[:c, :c] = s[np.ix_(rest, rest)]
        w[:c, c] = i[np.arange(c), enter_at]
        w[c, :c] = o[leave_from, np.arange(c)]
    sub_parent = _chu_liu_edmonds(*sub, new_root)
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


def _lex_argmax_rows(penalty, score):
    """Per column, the row maximising ``(penalty, score)`` lexicographically (``(B, n, n) -> (B, n)``)."""
    top = penalty.amax(-2, keepdim=True)
    return torch.where(penalty == top, score, -math.inf).argmax(-2)


def _doublings(n):
    return max(n - 1, 1).bit_length()


def _cycles(parent, candidates):
    """``(on_cycle, label)``: nodes on a cycle of the map ``parent`` (restricted to ``candidates``; the
    others point to themselves) and, for those, the smallest node of their cycle."""
    n = parent.shape[-1]
    nodes = torch.arange(n, device=parent.device)
    jump = torch.where(candidates, parent, nodes)
    power = jump
    for _ in range(_doublings(n)):
        power = power.gather(-1, power)  # parent^(2^m): every node has reached its cycle (or a fixed point)
    on_cycle = torch.zeros_like(candidates).scatter(-1, power, True) & candidates
    label = torch.where(on_cycle, nodes, n)
    for _ in range(_doublings(n)):
        label = torch.minimum(label, label.gather(-1, jump))
        jump = jump.gather(-1, jump)
    return on_cycle, label


def _merge(penalty, score, origin, label):
    """Contract the ``(B, n, n)`` edges onto the ``(B, n)`` node labels: the edge kept between two labels is the
    largest in the order ``(penalty, score, -origin)`` among the edges between their nodes.

    One reduction per key over flat groups ``label[i] * n + label[j]`` (torch's CPU scatter is fastest along
    the last dimension); pairs that are no two labels are left empty (``-inf``).
    """
    B, n = label.shape
    group = (label[:, :, None] * n + label[:, None, :]).reshape(B, -1)
    penalty, score, origin = penalty.reshape(B, -1), score.reshape(B, -1), origin.reshape(B, -1)
    best_p = torch.full_like(penalty, -math.inf).scatter_reduce(-1, group, penalty, "amax")
    top = penalty == best_p.gather(-1, group)
    score = torch.where(top, score, -math.inf)
    best_s = torch.full_like(score, -math.inf).scatter_reduce(-1, group, score, "amax")
    win = top & (score == best_s.gather(-1, group))
    best_o = torch.full_like(origin, n * n).scatter_reduce(-1, group, torch.where(win, origin, n * n), "amin")
    return best_p.reshape(B, n, n), best_s.reshape(B, n, n), best_o.clamp(max=n * n - 1).reshape(B, n, n)


def _scatter_edges(result, keep, edge, n):
    """``result[b, v] = u`` for the edges ``u * n + v`` of ``edge`` where ``keep`` (column ``n`` is a sink)."""
    result.scatter_(-1, torch.where(keep, edge % n, n), edge // n)


class _Round(NamedTuple):
    """What a round of contraction leaves for the expansion, for the elements still contracting."""

    #: ``(b,)`` the batch elements still contracting
    live: torch.Tensor
    #: ``(b, n)`` the nodes on a cycle this round
    on_cycle: torch.Tensor
    #: ``(b, n)`` the original edge each node's best in-edge stands for
    edge: torch.Tensor
    #: ``(b, n)`` the node each original node was contracted into before this round
    rep: torch.Tensor


def _chu_liu_edmonds_batched(penalty, score, root):
    """``(B, n)`` parent arrays of the maximum arborescences of ``(B, n, n)`` weights ``(penalty, score)``.

    Chu-Liu-Edmonds with every cycle of a round contracted at once, as tensor operations on
    the input's device: each round takes the best in-edge of every node, finds the cycles
    by pointer doubling, rescores the edges into a cycle by their gain over the cycle edge
    they would replace and keeps, per pair of contracted nodes, the best edge (remembering
    the original edge it stands for). Batch elements leave the loop when they have no cycle
    left; the expansion then walks the rounds backwards. The graph keeps its ``n x n`` shape
    as it contracts, so a round costs ``O(n^2)`` per element.
    """
    B, n = score.shape[0], score.shape[-1]
    nodes = torch.arange(n, device=score.device)
    excluded = (nodes[:, None] == nodes) | (nodes == root)
    penalty = penalty.masked_fill(excluded, -math.inf)
    score = score.masked_fill(excluded, -math.inf)
    origin = (nodes[:, None] * n + nodes).expand(B, n, n)
    rep = nodes.expand(B, n)
    active = torch.ones(B, n, dtype=torch.bool, device=score.device)
    live = torch.arange(B, device=score.device)
    result = torch.full((B, n + 1), -1, dtype=torch.long, device=score.device)
    rounds = []
    while live.numel():
        parent = _lex_argmax_rows(penalty, score)
        on_cycle, label = _cycles(parent, active & (nodes != root))
        done = ~on_cycle.any(-1)
        if bool(done.any()):  # no cycle left: the best in-edges (mapped back to original edges) are final
            edge = origin[done].gather(-2, parent[done, None, :]).squeeze(-2)
            final = result[live[done]]
            _scatter_edges(final, active[done] & (nodes != root), edge, n)
            result[live[done]] = final
            going = ~done
            live, parent, on_cycle, label = live[going], parent[going], on_cycle[going], label[going]
            penalty, score, origin, rep, active = penalty[going], score[going], origin[going], rep[going], active[going]
            if not live.numel():
                break
        rounds.append(_Round(live, on_cycle, origin.gather(-2, parent[:, None, :]).squeeze(-2), rep))
        # An edge into a cycle node scores its gain over the cycle edge it would replace.
        into = on_cycle[:, None, :]
        penalty = torch.where(into, penalty - penalty.gather(-2, parent[:, None, :]), penalty)
        score = torch.where(into, score - score.gather(-2, parent[:, None, :]), score)
        new = torch.where(on_cycle, label, nodes)
        inside = new[:, :, None] == new[:, None, :]
        penalty, score, origin = _merge(
            penalty.masked_fill(inside, -math.inf), score.masked_fill(inside, -math.inf), origin, new
        )
        rep = new.gather(-1, rep)
        active = active & (new == nodes)
    # Each contracted cycle keeps its own edges but the one into the node its chosen in-edge enters.
    for live, on_cycle, edge, rep in reversed(rounds):
        sub = result[live]
        entered = torch.zeros(live.numel(), n + 1, dtype=torch.bool, device=score.device)
        entered.scatter_(-1, torch.where(sub[:, :n] >= 0, rep, n), True)
        _scatter_edges(sub, on_cycle & ~entered[:, :n], edge, n)
        result[live] = sub
    return result[:, :n]


def _unreachable(present, root):
    """``(B,)``: whether some node cannot be reached from ``root`` along the ``present[b, i, j]`` edges ``i -> j``."""
    seen = torch.arange(present.shape[-1], device=present.device) == root
    seen = seen.expand(present.shape[:-1]).to(present.dtype)
    while True:
        grown = ((seen[:, None, :] @ present).squeeze(-2) + seen).clamp(max=1)
        if torch.equal(grown, seen):
            return (seen == 0).any(-1)
        seen = grown


#: on the CPU, the NumPy recursion (which shrinks the matrix at each contraction) wins above this size
_BATCHED_ARBORESCENCE_MAX_NODES_ON_CPU = 64


def max_arborescence(weights: torch.Tensor, root: int = 0, single_root: bool = False) -> torch.Tensor:
    """Maximum-weight arborescence by Chu-Liu-Edmonds.

    ``weights[..., i, j]`` scores edge ``i -> j``. With ``single_root`` the
    weights are ordered lexicographically by (minus the number of root edges,
    weight), which is exact for any finite weights: the optimum uses exactly one
    root edge and is the best such arborescence. Computed in float64 by the batched
    tensor version (:func:`_chu_liu_edmonds_batched`, no loop over the batch) on
    every device but the CPU, and on the CPU for ``n <= 64``; larger graphs on the CPU
    run the NumPy recursion one batch element at a time (``O(n^3)`` each, faster there
    because each contraction shrinks its matrix). Ties may be broken differently by the
    two versions. Raises :class:`ValueError` where no arborescence (with one root edge,
    for ``single_root``) has finite weight.
    """
    root = _check_args(weights, root, single_root, "weights")
    return opaque_call(functools.partial(_max_arborescence, root=root, single_root=single_root), weights)


def _max_arborescence(weights, root, single_root):
    shape, n = weights.shape, int(weights.shape[-1])
    W, nan = mask_nan_elements(directed_log_weights(weights, root).double().reshape(-1, n, n), 2)
    unreachable = _unreachable((W > -math.inf).to(W.dtype), root)
    if bool(unreachable.any()):
        raise ValueError(
            f"weights: in batch element {int(unreachable.nonzero()[0])} some node cannot be reached from the "
            f"root {root} by edges of finite weight, so no arborescence exists"
        )
    penalty = torch.zeros_like(W)
    if single_root:
        penalty[:, root, :] = -1.0
    penalty = penalty.masked_fill(W == -math.inf, -math.inf)
    if W.device.type != "cpu" or n <= _BATCHED_ARBORESCENCE_MAX_NODES_ON_CPU:
        parent = _chu_liu_edmonds_batched(penalty, W, root)
    else:
        parent = torch.as_tensor(
            np.stack([_chu_liu_edmonds(p, w, root) for p, w in zip(penalty.numpy(), W.numpy(), strict=True)])
        )
    others = torch.arange(n, device=W.device) != root
    if single_root:
        several = (parent == root).sum(-1) != 1
        if bool((several & ~nan).any()):
            raise ValueError(
                f"weights: in batch element {int((several & ~nan).nonzero()[0])} no arborescence of finite weight "
                "has exactly one root edge"
            )
    x = torch.zeros_like(W).scatter_(-2, parent.clamp(min=0)[:, None, :], 1.0) * others
    return fill_nan(x, nan, 2).to(weights.dtype).reshape(shape)


def enumerate_arborescences(
    n: int,
    root: int = 0,
    single_root: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Every arborescence rooted at ``root`` as a ``(N, n, n)`` 0/1 tensor (``n <= 7``)."""
    root = check_root(n, root, single_root)
    return torch.as_tensor(enumeration.arborescences(n, root, single_root), dtype=dtype, device=device)


def enumerate_spanning_trees(
    n: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """Every spanning tree of ``K_n`` as a symmetric ``(N, n, n)`` 0/1 tensor (``n <= 7``)."""
    x = enumerate_arborescences(n, 0, False, dtype, device)
    return x + x.mT
