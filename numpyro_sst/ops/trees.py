r"""Spanning trees and arborescences: log-partitions, marginals, solvers, samplers (JAX).

Value layouts (shared with :mod:`pyro_sst`):

* undirected spanning tree on ``n`` nodes: ``(..., n, n)`` symmetric 0/1 matrix with zero
  diagonal; only the strict upper triangle of ``logits`` is read.
* arborescence rooted at ``root``: ``(..., n, n)`` with ``x[i, j] = 1`` iff ``i`` is the parent
  of ``j``; non-root columns sum to 1, the root column is 0.

Every function is jittable: the solvers and samplers are ``lax`` loops over fixed shapes, batched
(no loop over the batch), with random numbers from an explicit ``jax.random`` key. Special inputs:
``-inf`` logits are absent edges; where no tree of finite weight remains, the log-partition is
``-inf`` and the marginals, solvers and samplers raise :class:`ValueError` on concrete input
(under ``jit`` their results are NaN or meaningless for that element). A NaN among the entries read
gives NaN log-partitions, marginals, samples and modes for that batch element.
"""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike, DTypeLike

from sst_common import enumeration
from sst_common.checks import check_root

from .logspace import fill_nan, mask_nan_elements
from .matrix_tree import (
    _STRUCTURE,
    arborescence_log_partition,
    arborescence_marginals,
    directed_log_weights,
    eliminate,
    raise_if_undefined,
)
from .validation import check_square, raise_if, wide_dtype

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


def symmetrize_upper(x: ArrayLike) -> jax.Array:
    """Mirror the strict upper triangle of ``x`` into the lower one; zero diagonal."""
    upper = jnp.triu(x, 1)
    return upper + jnp.swapaxes(upper, -1, -2)


def spanning_tree_log_partition(logits: ArrayLike) -> jax.Array:
    r"""Kirchhoff: :math:`A(\theta) = \log \sum_T \prod_{(i,j) \in T} e^{\theta_{ij}}`.

    The log-determinant of the weighted Laplacian with one row and column removed. Reads the
    strict upper triangle of ``logits`` (``(..., n, n)``).
    """
    return arborescence_log_partition(symmetrize_upper(check_square(logits)), root=0)


def spanning_tree_marginals(logits: ArrayLike) -> jax.Array:
    r"""Edge marginals :math:`\mu_{ij} = P((i,j) \in T)`, symmetric; the sum over :math:`i<j` is :math:`n-1`.

    The two orientations of the arborescence marginals of the symmetric digraph rooted at node 0.
    """
    mu = arborescence_marginals(symmetrize_upper(check_square(logits)), root=0)
    return mu + jnp.swapaxes(mu, -1, -2)


def sample_arborescence(
    key: jax.Array, logits: ArrayLike, root: int = 0, single_root: bool = False, sample_shape: tuple[int, ...] = ()
) -> jax.Array:
    r"""Exact samples from :math:`q(x) \propto e^{\langle \theta, x\rangle}` over arborescences, ``(..., n, n)``.

    The algorithm of :func:`pyro_sst.ops.sample_arborescence`: one log-space elimination per batch
    element (:math:`O(n^3)`, exact at every scale), undone once per sample. Undoing the
    elimination of node :math:`k` keeps each edge :math:`i \to j` of the reduced arborescence with
    probability :math:`f_{ij} = w_{ij} / w'_{ij}` (the others were the path
    :math:`i \to k \to j`, so their heads become children of :math:`k`) and draws :math:`k`'s
    parent from :math:`\pi` restricted to the root's component: :math:`O(n^2 \log n)` per sample.
    ``single_root`` rejects the draws (of total weight below :math:`e^{-60}`) with several root
    edges, so what is returned is exactly :math:`q`.

    :param key: a ``jax.random`` key.
    :returns: a 0/1 array of shape ``sample_shape + logits.shape``.
    """
    logits = check_square(logits)
    root = check_root(logits.shape[-1], root, single_root)
    x = _sample_arborescence(key, logits, root, bool(single_root), tuple(sample_shape))
    raise_if_undefined(x, directed_log_weights(logits, root), 2, _STRUCTURE)
    return x


def _root_component(parent, cut):
    """``(N, n)``: whether the path from each node to the root (node 0) crosses no ``cut`` edge (pointer doubling)."""

    def double(_, state):
        cut, ancestor = state
        return cut | jnp.take_along_axis(cut, ancestor, -1), jnp.take_along_axis(ancestor, ancestor, -1)

    # a lax loop, not unrolled: XLA would otherwise fuse the doublings into the consumer of the mask
    return ~jax.lax.fori_loop(0, _doublings(parent.shape[-1]), double, (cut, parent))[0]


#: The sampler draws its coins and Gumbel noise for a block of steps at once (one large draw runs far faster
#: than one per step: 29 ms against 40 for 256 trees of 50 nodes); blocks hold at most this many numbers of
#: each, so memory stays bounded however many samples are drawn.
RANDOM_BLOCK_NUMBERS = 2**21


def _undo_elimination(key, steps, element):
    """``(N, n)`` parent arrays (elimination order, root 0 its own parent), drawn by undoing ``steps``."""
    n = steps.pi.shape[1]
    if n == 1:  # the root alone: no step to undo
        return jnp.zeros((element.shape[0], 1), jnp.int32)
    nodes = jnp.arange(n)
    share = steps.share.reshape((n - 1, n * n, steps.share.shape[-1]))  # (n - 1, n * n, B)
    block = max(1, min(n - 1, RANDOM_BLOCK_NUMBERS // max(1, element.shape[0] * n)))

    def undo(k, parent, coins, gumbel):
        m = n - 1 - k
        children = (nodes >= 1) & (nodes < k)
        kept = share[m][parent * n + nodes, element[:, None]]
        dropped = children & (coins >= kept)
        left = _root_component(parent, dropped) & (nodes < k)
        parent = jnp.where(dropped, k, parent)
        scores = jnp.where(left, steps.log_pi[m][:, element].T + gumbel, -jnp.inf)
        return parent.at[:, k].set(jnp.argmax(scores, -1).astype(parent.dtype))

    def undo_block(j, parent):
        shape = (block, element.shape[0], n)
        coins = jax.random.uniform(jax.random.fold_in(key, 2 * j), shape, steps.share.dtype)
        gumbels = jax.random.gumbel(jax.random.fold_in(key, 2 * j + 1), shape, steps.share.dtype)

        def step(i, parent):
            k = 1 + j * block + i  # past n - 1 in a last block that is not full: those steps change nothing
            return jnp.where(k < n, undo(jnp.minimum(k, n - 1), parent, coins[i], gumbels[i]), parent)

        return jax.lax.fori_loop(0, block, step, parent)

    blocks = -(-(n - 1) // block)
    return jax.lax.fori_loop(0, blocks, undo_block, jnp.zeros((element.shape[0], n), jnp.int32))


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _sample_arborescence(key, logits, root, single_root, sample_shape):
    n = logits.shape[-1]
    theta, nan = mask_nan_elements(jax.lax.stop_gradient(directed_log_weights(logits, root)), 2)
    theta = theta.reshape(-1, n, n).astype(wide_dtype(theta.dtype))
    elimination = eliminate(theta, root, single_root, keep_steps=True)
    valid = jnp.isfinite(elimination.log_z)
    element = jnp.tile(jnp.arange(theta.shape[0]), math.prod(sample_shape))
    parent = _undo_elimination(jax.random.fold_in(key, 0), elimination.steps, element)
    if single_root:

        def rejected(parent):
            return ((parent[:, 1:] == 0).sum(-1) != 1) & valid[element]

        def redraw(state):
            attempt, parent = state
            again = _undo_elimination(jax.random.fold_in(key, attempt), elimination.steps, element)
            return attempt + 1, jnp.where(rejected(parent)[:, None], again, parent)

        parent = jax.lax.while_loop(lambda state: rejected(state[1]).any(), redraw, (1, parent))[1]
    order = jnp.asarray(elimination.order)
    x = jnp.zeros((element.shape[0], n, n), logits.dtype)
    x = x.at[jnp.arange(element.shape[0])[:, None], order[parent[:, 1:]], order[1:]].set(1)
    x = jnp.where(valid[element][:, None, None], x, jnp.nan)
    return fill_nan(x.reshape(sample_shape + logits.shape), nan, 2)


def sample_spanning_tree(key: jax.Array, logits: ArrayLike, sample_shape: tuple[int, ...] = ()) -> jax.Array:
    """Exact sample from the exponential family over spanning trees (see :func:`sample_arborescence`)."""
    x = sample_arborescence(key, symmetrize_upper(check_square(logits)), 0, False, sample_shape)
    return x + jnp.swapaxes(x, -1, -2)


def max_spanning_tree(weights: ArrayLike) -> jax.Array:
    """Maximum-weight spanning tree by batched Prim (a ``lax.fori_loop`` of ``n - 1`` batched steps).

    Reads the strict upper triangle of ``weights`` (``(..., n, n)``); ties go to the lowest node
    index (deterministic, as in pyro_sst). Returns a symmetric 0/1 array of the input's dtype,
    without gradient.
    """
    weights = check_square(weights, "weights")
    x, connected = _prim(jax.lax.stop_gradient(weights))
    raise_if(
        ~connected,
        lambda bad: (
            "weights: the edges of finite weight do not connect all nodes, so no spanning tree exists "
            f"(batch elements {list(map(int, bad.reshape(-1).nonzero()[0][:10]))})"
        ),
    )
    return x


@jax.jit
def _prim(weights):
    shape, n = weights.shape, weights.shape[-1]
    W, nan = mask_nan_elements(symmetrize_upper(weights).reshape(-1, n, n), 2)
    b = jnp.arange(W.shape[0])
    nodes = jnp.arange(n)

    def grow(_, state):
        in_tree, key, parent, x, connected = state
        candidates = jnp.where(in_tree, -jnp.inf, key)
        v = jnp.argmax(candidates, -1).astype(parent.dtype)
        connected = connected & (candidates[b, v] > -jnp.inf)
        in_tree = in_tree | (nodes == v[:, None])
        p = parent[b, v]
        x = x.at[b, p, v].set(1).at[b, v, p].set(1)
        row = W[b, v]
        better = (row > key) & ~in_tree
        return in_tree, jnp.where(better, row, key), jnp.where(better, v[:, None], parent), x, connected

    state = (
        jnp.broadcast_to(nodes == 0, (W.shape[0], n)),
        W[:, 0, :],
        jnp.zeros((W.shape[0], n), int),
        jnp.zeros_like(W),
        jnp.ones(W.shape[0], bool),
    )
    _, _, _, x, connected = jax.lax.fori_loop(0, n - 1, grow, state)
    x = jnp.where(connected[:, None, None], x, jnp.nan)
    return fill_nan(x, nan, 2).reshape(shape), (connected | nan).reshape(shape[:-2])


def _lex_argmax_rows(penalty, score):
    """Per column, the row maximising ``(penalty, score)`` lexicographically (``(B, n, n) -> (B, n)``)."""
    top = penalty == penalty.max(-2, keepdims=True)
    score = jnp.where(top, score, -jnp.inf)
    win = top & (score == score.max(-2, keepdims=True))
    # three plain reductions: XLA's variadic argmax reduction is several times slower on the CPU
    return jnp.where(win, jnp.arange(penalty.shape[-2])[:, None], penalty.shape[-2]).min(-2)


def _doublings(n):
    return max(n - 1, 1).bit_length()


def _cycles(parent, candidates):
    """``(on_cycle, label)``: nodes on a cycle of the map ``parent`` (restricted to ``candidates``; the
    others point to themselves) and, for those, the smallest node of their cycle."""
    n = parent.shape[-1]
    nodes = jnp.arange(n)
    jump = jnp.where(candidates, parent, nodes)
    # lax loops, not unrolled: XLA would otherwise fuse the doublings into every (B, n, n) consumer of the labels
    # and repeat them per entry
    power = jax.lax.fori_loop(0, _doublings(n), lambda _, p: jnp.take_along_axis(p, p, -1), jump)
    b = jnp.arange(parent.shape[0])[:, None]
    on_cycle = jnp.zeros_like(candidates).at[b, power].set(True) & candidates

    def halve(_, state):
        label, jump = state
        return jnp.minimum(label, jnp.take_along_axis(label, jump, -1)), jnp.take_along_axis(jump, jump, -1)

    label, _ = jax.lax.fori_loop(0, _doublings(n), halve, (jnp.where(on_cycle, nodes, n), jump))
    return on_cycle, label


def _merge_rows(penalty, score, origin, label):
    """Merge the rows of ``(B, n, n)`` edges that share a ``(B, n)`` label into the label's row.

    Per column, the entry of the merged rows that is largest in the order ``(penalty, score, -origin)``; rows
    that are no label are left empty (``-inf``). Scatters and gathers whole rows (XLA moves them as slices).
    """
    b = jnp.arange(label.shape[0])[:, None]
    size = origin.shape[-1] ** 2
    best_p = jnp.full_like(penalty, -jnp.inf).at[b, label].max(penalty)
    top = penalty == best_p[b, label]
    score = jnp.where(top, score, -jnp.inf)
    best_s = jnp.full_like(score, -jnp.inf).at[b, label].max(score)
    win = top & (score == best_s[b, label])
    best_o = jnp.full_like(origin, size).at[b, label].min(jnp.where(win, origin, size))
    return best_p, best_s, jnp.minimum(best_o, size - 1)


def _merge(penalty, score, origin, label):
    """Contract the ``(B, n, n)`` edges onto the ``(B, n)`` node labels: the edge kept between two labels is the
    largest in the order ``(penalty, score, -origin)`` among the edges between their nodes."""
    merged = _merge_rows(*(x.swapaxes(-1, -2) for x in (penalty, score, origin)), label)
    return _merge_rows(*(x.swapaxes(-1, -2) for x in merged), label)


def _scatter_edges(result, keep, edge, n):
    """``result[b, v] = u`` for the edges ``u * n + v`` of ``edge`` where ``keep`` (column ``n`` is a sink)."""
    b = jnp.arange(result.shape[0])[:, None]
    return result.at[b, jnp.where(keep, edge % n, n)].set(edge // n)


class _Round(NamedTuple):
    """What a round of contraction leaves for the expansion, per element (stacked over rounds in the buffers)."""

    #: ``(B,)`` the element was still contracting
    live: jax.Array
    #: ``(B, n)`` the nodes on a cycle this round
    on_cycle: jax.Array
    #: ``(B, n)`` the original edge each node's best in-edge stands for
    edge: jax.Array
    #: ``(B, n)`` the node each original node was contracted into before this round
    rep: jax.Array


class _Contraction(NamedTuple):
    """The state of the batched contraction loop: the current graph of every element and what it has done."""

    penalty: jax.Array
    score: jax.Array
    #: ``(B, n, n)`` the original edge ``u * n + v`` each edge of the contracted graph stands for
    origin: jax.Array
    rep: jax.Array
    #: ``(B, n)`` the nodes not contracted into another
    active: jax.Array
    #: ``(B,)`` the elements whose best in-edges formed no cycle: their edges are written in ``result``
    done: jax.Array
    result: jax.Array
    rounds: jax.Array
    #: a :class:`_Round` of buffers with one entry per round
    record: _Round


#: Batched Chu-Liu-Edmonds runs its rounds on the whole batch until at most a quarter of it is still contracting,
#: then moves those elements into a batch a quarter the size (and so on, down to this size): most elements finish
#: in a few rounds, a few need many (at (256, 50): 7 rounds at the median, 28 at the most).
ARBORESCENCE_SMALLEST_COMPACTION = 64


def _compactions(B):
    """The batch sizes the contraction moves to as its elements finish: a quarter each time, at least
    :data:`ARBORESCENCE_SMALLEST_COMPACTION`."""
    sizes = []
    while (B := B // 4) >= ARBORESCENCE_SMALLEST_COMPACTION:
        sizes.append(B)
    return sizes


def _contract(state, root):
    """One round of contraction of every element still contracting (:class:`_Contraction`)."""
    penalty, score, origin, rep, active, done, result, r, record = state
    n = score.shape[-1]
    nodes = jnp.arange(n)
    parent = _lex_argmax_rows(penalty, score)
    on_cycle, label = _cycles(parent, active & (nodes != root))
    edge = jnp.take_along_axis(origin, parent[:, None, :], -2)[:, 0, :]
    finishing = ~done & ~on_cycle.any(-1)
    result = _scatter_edges(result, finishing[:, None] & active & (nodes != root), edge, n)
    done = done | finishing
    live = ~done
    this_round = _Round(live, on_cycle & live[:, None], edge, rep)
    record = _Round(*(buf.at[r].set(x) for buf, x in zip(record, this_round, strict=True)))
    # An edge into a cycle node scores its gain over the cycle edge it would replace.
    into = on_cycle[:, None, :]
    penalty = jnp.where(into, penalty - jnp.take_along_axis(penalty, parent[:, None, :], -2), penalty)
    score = jnp.where(into, score - jnp.take_along_axis(score, parent[:, None, :], -2), score)
    new = jnp.where(on_cycle, label, nodes)
    inside = new[:, :, None] == new[:, None, :]
    penalty, score = jnp.where(inside, -jnp.inf, penalty), jnp.where(inside, -jnp.inf, score)
    penalty, score, origin = _merge(penalty, score, origin, new)
    rep = jnp.take_along_axis(new, rep, -1)
    active = active & (new == nodes)
    return _Contraction(penalty, score, origin, rep, active, done, result, r + 1, record)


def _empty_record(B, n):
    return _Round(jnp.zeros((n, B), bool), jnp.zeros((n, B, n), bool), *(jnp.zeros((n, B, n), int),) * 2)


def _contract_and_expand(state, root, sizes):
    """``(B, n + 1)`` results of the contraction ``state``: rounds on this batch until at most ``sizes[0]`` elements
    are still contracting, those moved to a batch of that size and solved there (recursively), then this batch's
    rounds expanded."""
    B, n = state.score.shape[0], state.score.shape[-1]
    target = sizes[0] if sizes else 0
    state = jax.lax.while_loop(
        lambda s: ((~s.done).sum() > target) & (s.rounds < n), functools.partial(_contract, root=root), state
    )
    result = state.result
    if sizes:
        picked = jnp.argsort(state.done, stable=True)[:target]  # the elements still contracting first
        per_element = ("penalty", "score", "origin", "rep", "active", "done", "result")
        moved = state._replace(
            **{field: getattr(state, field)[picked] for field in per_element},
            rounds=jnp.array(0),
            record=_empty_record(target, n),
        )
        result = result.at[picked].set(_contract_and_expand(moved, root, sizes[1:]))
    rounds, record = state.rounds, state.record

    # Each contracted cycle keeps its own edges but the one into the node its chosen in-edge enters.
    def expand(i, result):
        live, on_cycle, edge, rep = (buf[rounds - 1 - i] for buf in record)
        b = jnp.arange(B)[:, None]
        entered = jnp.zeros((B, n + 1), bool).at[b, jnp.where(result[:, :n] >= 0, rep, n)].set(True)
        return _scatter_edges(result, live[:, None] & on_cycle & ~entered[:, :n], edge, n)

    return jax.lax.fori_loop(0, rounds, expand, result)


def _chu_liu_edmonds_batched(penalty, score, root):
    """``(B, n)`` parent arrays of the maximum arborescences of ``(B, n, n)`` weights ``(penalty, score)``.

    Chu-Liu-Edmonds with every cycle of a round contracted at once, as ``lax`` loops: each round takes the best
    in-edge of every node, finds the cycles by pointer doubling, rescores the edges into a cycle by their gain
    over the cycle edge they would replace and keeps, per pair of contracted nodes, the best edge (remembering
    the original edge it stands for). An element whose best in-edges form no cycle writes its final edges and
    stops changing; as elements finish, those still contracting move to smaller batches (:func:`_compactions`).
    The rounds (at most ``n``, each removing a node) are recorded in fixed-size buffers and the expansion walks
    them backwards.
    """
    B, n = score.shape[0], score.shape[-1]
    nodes = jnp.arange(n)
    excluded = (nodes[:, None] == nodes) | (nodes == root)
    state = _Contraction(
        penalty=jnp.where(excluded, -jnp.inf, penalty),
        score=jnp.where(excluded, -jnp.inf, score),
        origin=jnp.broadcast_to(nodes[:, None] * n + nodes, (B, n, n)),
        rep=jnp.broadcast_to(nodes, (B, n)),
        active=jnp.ones((B, n), bool),
        done=jnp.zeros(B, bool),
        result=jnp.full((B, n + 1), -1),
        rounds=jnp.array(0),
        record=_empty_record(B, n),
    )
    return _contract_and_expand(state, root, _compactions(B))[:, :n]


def _unreachable(present, root):
    """``(B,)``: whether some node cannot be reached from ``root`` along the ``present[b, i, j]`` edges ``i -> j``."""
    seen = jnp.broadcast_to(jnp.arange(present.shape[-1]) == root, present.shape[:-1]).astype(present.dtype)

    def grow(state):
        seen, _ = state
        grown = jnp.minimum(jnp.einsum("bi,bij->bj", seen, present) + seen, 1)
        return grown, jnp.any(grown != seen)

    seen, _ = jax.lax.while_loop(lambda s: s[1], grow, (seen, jnp.array(True)))
    return jnp.any(seen == 0, -1)


def max_arborescence(weights: ArrayLike, root: int = 0, single_root: bool = False) -> jax.Array:
    """Maximum-weight arborescence by batched Chu-Liu-Edmonds (``lax`` loops, no loop over the batch).

    ``weights[..., i, j]`` scores edge ``i -> j``. With ``single_root`` the weights are ordered
    lexicographically by (minus the number of root edges, weight), which is exact for any finite
    weights: the optimum uses exactly one root edge and is the best such arborescence. Computes
    in float64 where JAX has it enabled. Raises :class:`ValueError` on concrete input where no
    arborescence (with one root edge, for ``single_root``) has finite weight; under ``jit`` those
    elements are NaN.
    """
    weights = check_square(weights, "weights")
    root = check_root(weights.shape[-1], root, single_root)
    x, unreachable, several = _max_arborescence(jax.lax.stop_gradient(weights), root, bool(single_root))
    raise_if(
        unreachable,
        lambda bad: (
            f"weights: in batch element {int(bad.reshape(-1).nonzero()[0][0])} some node cannot be reached from "
            f"the root {root} by edges of finite weight, so no arborescence exists"
        ),
    )
    raise_if(
        several,
        lambda bad: (
            f"weights: in batch element {int(bad.reshape(-1).nonzero()[0][0])} no arborescence of finite weight "
            "has exactly one root edge"
        ),
    )
    return x


@functools.partial(jax.jit, static_argnums=(1, 2))
def _max_arborescence(weights, root, single_root):
    shape, n = weights.shape, weights.shape[-1]
    flat = directed_log_weights(weights, root).astype(wide_dtype(weights.dtype)).reshape(-1, n, n)
    W, nan = mask_nan_elements(flat, 2)
    unreachable = _unreachable((W > -jnp.inf).astype(W.dtype), root) & ~nan
    penalty = jnp.zeros_like(W)
    if single_root:
        penalty = penalty.at[:, root, :].set(-1.0)
    penalty = jnp.where(W == -jnp.inf, -jnp.inf, penalty)
    parent = _chu_liu_edmonds_batched(penalty, W, root)
    others = jnp.arange(n) != root
    several = ((parent == root).sum(-1) != 1) & ~nan & ~unreachable if single_root else jnp.zeros_like(nan)
    x = (parent[:, None, :] == jnp.arange(n)[:, None]) & others
    x = jnp.where((unreachable | several)[:, None, None], jnp.nan, x.astype(weights.dtype))
    return fill_nan(x, nan, 2).reshape(shape), unreachable.reshape(shape[:-2]), several.reshape(shape[:-2])


def enumerate_arborescences(
    n: int, root: int = 0, single_root: bool = False, dtype: DTypeLike | None = jnp.float32
) -> jax.Array:
    """Every arborescence rooted at ``root`` as a ``(N, n, n)`` 0/1 array (``n <= 7``)."""
    root = check_root(n, root, single_root)
    return jnp.asarray(enumeration.arborescences(n, root, single_root), dtype)


def enumerate_spanning_trees(n: int, dtype: DTypeLike | None = jnp.float32) -> jax.Array:
    """Every spanning tree of ``K_n`` as a symmetric ``(N, n, n)`` 0/1 array (``n <= 7``)."""
    return jnp.asarray(enumeration.spanning_trees(n), dtype)
