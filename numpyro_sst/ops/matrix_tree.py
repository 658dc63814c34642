r"""Matrix-tree theorems: log-partition functions, edge marginals and their derivatives (JAX).

The same elimination as :mod:`pyro_sst.ops.matrix_tree`, in the same panels (below), and the
same results to rounding. Every function works on
*directed* log-weights ``theta[..., i, j]`` for the edge ``i -> j`` (``i`` is the parent of
``j``) and an arborescence rooted at ``root``; undirected spanning trees are the arborescences of
the symmetric digraph rooted at node 0.

Tutte's directed matrix-tree theorem: with :math:`w_{ij} = e^{\theta_{ij}}` and the
in-degree Laplacian :math:`L = \operatorname{diag}(\mathbf{1}^\top W) - W`,

.. math::

    A(\theta) = \log \sum_{x} e^{\langle \theta, x \rangle}
              = \log \det L_{\hat r \hat r},

where :math:`L_{\hat r \hat r}` drops the root's row and column.

One exact core: Gaussian elimination without subtraction (GTH). Eliminating node :math:`k`
(the Schur complement of its pivot :math:`d_k = \sum_i w_{ik}`) leaves the Laplacian of the
graph with weights

.. math::

    w'_{ij} = w_{ij} + \pi_i w_{kj}, \qquad \pi_i = w_{ik} / d_k,

(self-loops dropped), so :math:`A = \sum_k \log d_k` over the nodes in elimination order, and
every pivot and every weight is a sum of positive terms: no cancellation, entrywise relative
accuracy whatever the condition number.

The elimination is blocked (:func:`_blocked`): panels of a few nodes are eliminated one node at a
time on their own rows and columns, and the nodes left take each whole panel as one matrix product
:math:`W' = W + \Pi \Lambda` of nonnegative factors. Weights are held as numbers, each column
normalised once, in float64 where JAX has it. A column's mass only shrinks; a batch element where
some column loses more scale than :func:`~sst_common.constants.linear_elimination_max_loss` allows
(tight clusters at low temperature, where the numbers would flush what the result depends on) is
eliminated in log space instead (:func:`_eliminate_logarithmic`, node by node, with the same steps
as output; under a ``lax.cond`` that skips it when no element needs it, over batch chunks of
:data:`~sst_common.constants.JAX_LOGARITHMIC_CHUNK`, fewer for large graphs, so that its memory stays bounded).
The marginals are the exact reverse pass through the steps (in probability units) and
their derivative, the Hessian-vector product of :math:`A`, is the forward-mode derivative of that
pass, computed alongside it: no inverse, no determinant, no autodiff through the elimination. The
marginals are a ``jax.custom_jvp`` whose tangent is a primitive, linear in the vector, whose
transpose is itself (the Hessian is symmetric): ``grad`` runs the same direct computation as
``jvp``, and ``vmap`` folds into the batch. ``jit``, ``vmap``, ``grad``, ``jacfwd``, ``hessian``
and ``grad`` of ``vmap`` all work. Time :math:`O(n^3)` and memory :math:`O(n^3 / p)` per batch
element (``p`` the panel width).

For ``single_root`` (the root has exactly one child, Koo et al. 2007) scale the root's out-edges by
:math:`s`: :math:`Z(s) = s Z_1 + s^2 Z_2 + \dots`, and the linear elimination takes the limit
:math:`s \to 0` itself (:func:`_pivot_rows`): the product of its pivots is :math:`Z_1`, exactly. The
log-space elimination (and the samplers) scale them by :math:`s = e^{-c}` instead, so that
:math:`\log Z_1 = \log Z(s) + c` up to a relative error below :math:`e^{-60}`; ``c`` is chosen per batch
element from the spread of its finite logits (root row included), and :math:`Z_1 = 0` is detected exactly
from the same bound.

Special inputs. ``-inf`` logits are absent edges; where no tree of finite weight remains the
log-partition is ``-inf`` and the marginals are undefined: they raise :class:`ValueError` on
concrete input and are NaN under a JAX transformation. NaN inputs give NaN for their batch
element. Every batch element is computed independently of the others.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir
from jax.typing import ArrayLike

from sst_common.checks import check_root
from sst_common.constants import (
    JAX_LOGARITHMIC_CHUNK,
    JAX_LOGARITHMIC_CHUNK_ENTRIES,
    JAX_LOGARITHMIC_RUN_NODES,
    JAX_LOGARITHMIC_RUNS,
    JAX_PANEL_WIDTHS,
    SINGLE_ROOT_EMPTY_MARGIN,
    SINGLE_ROOT_MARGIN,
    linear_elimination_max_loss,
    panel_width,
)

from .logspace import (
    by_tiers,
    fill_nan,
    log_partition_tangent,
    log_sum_exp,
    mask_nan_elements,
    nan_elements,
    raise_if_empty,
)
from .validation import check_square, wide_dtype

__all__ = [
    "arborescence_log_partition",
    "arborescence_marginals",
    "directed_log_weights",
    "laplacian",
]


def laplacian(weights: ArrayLike) -> jax.Array:
    r"""In-degree Laplacian :math:`L = \operatorname{diag}(\mathbf 1^\top W) - W` of ``(..., n, n)`` weights.

    ``weights[..., i, j]`` is the weight of edge ``i -> j``; the diagonal is ignored.
    """
    n = weights.shape[-1]
    weights = jnp.where(jnp.eye(n, dtype=bool), 0, weights)
    return jnp.eye(n, dtype=weights.dtype) * weights.sum(-2)[..., None, :] - weights


def directed_log_weights(logits: ArrayLike, root: int) -> jax.Array:
    """Directed log-weights ``(..., n, n)`` with self-loops and edges into ``root`` set to -inf."""
    n = logits.shape[-1]
    idx = jnp.arange(n)
    excluded = (idx[:, None] == idx) | (idx == root)
    return jnp.where(excluded, -jnp.inf, logits)


class Step(NamedTuple):
    """What eliminating each node left behind, stacked over the steps (node ``n - 1`` down to 1), full size.

    The batch is the last axis: XLA's CPU loops vectorise over it, and the per-node operations of a step
    (a row, a column, a sum over parents) become contiguous slices and reductions over leading axes.
    """

    #: ``(n - 1, n, n, B)``: the share :math:`w_{ij} / w'_{ij}` of each reduced weight that was there before
    share: jax.Array
    #: ``(n - 1, n, B)``: the eliminated node's parent distribution :math:`\pi` over the nodes left
    pi: jax.Array
    #: ``(n - 1, n, B)``: its logarithm (exact where :math:`\pi` underflows)
    log_pi: jax.Array


class Elimination(NamedTuple):
    """The elimination of ``(B, n, n)`` directed log-weights, in elimination order (the root first)."""

    #: ``(B,)`` the log-partition
    log_z: jax.Array
    #: the :class:`Step` arrays, batch last (``None`` unless asked for)
    steps: Step
    #: ``order[m]`` is the node at elimination position ``m``
    order: tuple


def elimination_order(n, root):
    """The root first, then the other nodes in increasing order; nodes are eliminated from the last."""
    return tuple([root] + [i for i in range(n) if i != root])


def _permute(x, order):
    if list(order) == sorted(order):  # root 0: XLA would still gather every entry twice
        return x
    order = jnp.asarray(order)
    return x[..., order, :][..., :, order]


def _batch_last(x):
    """``(B, n, n)`` to ``(n, n, B)``."""
    return jnp.moveaxis(x, 0, -1)


def _batch_first(x):
    """``(n, n, B)`` to ``(B, n, n)``."""
    return jnp.moveaxis(x, -1, 0)


def _to_elimination_layout(x, order):
    """``(B, n, n)`` in node order to the core's layout: ``(n, n, B)`` in elimination order."""
    return _batch_last(_permute(x, order))


def _to_node_layout(x, order):
    """The core's ``(n, n, B)`` in elimination order back to ``(B, n, n)`` in node order."""
    inverse = tuple(sorted(range(len(order)), key=order.__getitem__))
    return _permute(jnp.moveaxis(x, -1, 0), inverse)


def _single_root_shift(X):
    r"""Per batch element of ``(n, n, B)`` log-weights: the shift ``c`` of the root's out-edges and the smallest
    finite logit.

    The bound on :math:`Z_{k+1} / Z_k` is :math:`n^2 e^{\mathrm{spread}}` on a complete graph and
    :math:`n^n e^{(n-1)\,\mathrm{spread}}` with absent edges: swapping a root edge for an edge between two
    root subtrees changes the weight by at most the spread, and there are at most that many trees.
    """
    n = X.shape[0]
    finite = jnp.isfinite(X)
    largest = jnp.where(finite, X, -jnp.inf).max((0, 1))
    smallest = jnp.where(finite, X, jnp.inf).min((0, 1))
    spread = jnp.where(finite.any((0, 1)), largest - smallest, 0)
    complete = finite.sum((0, 1)) == (n - 1) ** 2
    log_n = jnp.log(n)
    bound = jnp.where(complete, spread + 2 * log_n, (n - 1) * spread + n * log_n)
    return bound + SINGLE_ROOT_MARGIN, smallest


def _shifted_for_single_root(X, single_root):
    """``(X, finish)``: ``(n, n, B)`` log-weights with the root's out-edges shifted for the log-space elimination of
    ``single_root`` arborescences; ``finish(log_z)`` undoes the shift on its log-partition."""
    if not single_root:
        return X, lambda log_z: log_z
    n = X.shape[0]
    shift, smallest = _single_root_shift(X)

    def finish(log_z):
        log_z = log_z + shift
        # If Z_1 > 0 then log Z_1 >= (n - 1) * smallest; if Z_1 = 0 the shift puts the value far below.
        return jnp.where(log_z < (n - 1) * smallest - SINGLE_ROOT_EMPTY_MARGIN, -jnp.inf, log_z)

    return X.at[0].add(-shift), finish


def _no_neg_inf(x):
    return jnp.where(x == -jnp.inf, 0, x)


def _logarithmic_runs(n, runs):
    """``[(size, ks)]``: the log-space elimination's steps (nodes ``ks``, from ``n - 1`` down to 1) in at most ``runs``
    runs of about equal length whose arrays keep ``size`` nodes, those left when the run starts
    (:data:`~sst_common.constants.JAX_LOGARITHMIC_RUN_NODES`)."""
    runs = max(1, min(runs, n // JAX_LOGARITHMIC_RUN_NODES))
    sizes = [-(-n * (runs - r) // runs) for r in range(runs)]
    bounds = zip(sizes, [*sizes[1:], 1], strict=True)
    return [(size, jnp.arange(size - 1, low - 1, -1)) for size, low in bounds if size > low]  # none for one node


def _eliminate_logarithmic(X, keep_steps, steps_dtype, runs=1):
    """Eliminate nodes ``n - 1, ..., 1`` of ``(n, n, B)`` log-weights (root first), columns normalised in log space.

    Exact at any spread. Returns ``(log_z, steps)``; the step arrays keep the full size (:class:`Step`), the nodes
    left at step ``k`` (those before ``k``) selected by masks, while the elimination's own arrays shrink over the
    ``runs`` of :func:`_logarithmic_runs` to the nodes left.
    """
    n = X.shape[0]
    log_scale = log_sum_exp(X, 0)

    def eliminate(carry, k):
        W, log_scale, total, steps = carry
        size = W.shape[0]
        idx = jnp.arange(size)
        left = (idx < k)[:, None]
        block = left & (idx < k) & (idx[:, None] != idx)  # a path j -> k -> j is a self-loop: in no tree
        block = block[..., None]
        entering = jnp.where(left, jax.lax.dynamic_index_in_dim(W, k, 1, keepdims=False), -jnp.inf)
        leaving = jnp.where(left, jax.lax.dynamic_index_in_dim(W, k, 0, keepdims=False), -jnp.inf)
        old = jnp.where(block, W, -jnp.inf)
        new = jnp.where(block, jnp.logaddexp(old, entering[:, None] + leaving[None]), -jnp.inf)
        log_column = log_sum_exp(new, 0)
        W = new - _no_neg_inf(log_column)[None]
        log_scale, total = log_scale + jnp.where(left, log_column, 0), total + log_scale[k]
        if keep_steps:  # written in place into the full-size step arrays (padding each step, then joining the
            # runs, took twice the time of the elimination)
            share = jnp.where(block & (new > -jnp.inf), jnp.exp(old - _no_neg_inf(new)), 0)
            step = Step(share.astype(steps_dtype), jnp.exp(entering).astype(steps_dtype), entering)
            steps = jax.tree.map(lambda all_steps, x: _write_step(all_steps, x, n - 1 - k), steps, step)
        return (W, log_scale, total, steps), None

    steps = None
    if keep_steps:
        batch = X.shape[2:]
        steps = Step(
            jnp.zeros((n - 1, n, n, *batch), steps_dtype),
            jnp.zeros((n - 1, n, *batch), steps_dtype),
            jnp.full((n - 1, n, *batch), -jnp.inf, X.dtype),
        )
    W, total = X - _no_neg_inf(log_scale)[None], jnp.zeros(X.shape[2:], X.dtype)
    for size, ks in _logarithmic_runs(n, runs):
        (W, log_scale, total, steps), _ = jax.lax.scan(eliminate, (W[:size, :size], log_scale[:size], total, steps), ks)
    return total, steps


def _write_step(steps, step, m):
    """``step`` (its leading axes those of the nodes left) into step ``m`` of the full-size ``steps``."""
    start = (m,) + (0,) * step.ndim
    return jax.lax.dynamic_update_slice(steps, step[None], start)


def _in_chunks(function, X, *arrays):
    """``function`` of ``(n, n, B)`` log-weights and other batch-last arrays, run on chunks of at most
    ``JAX_LOGARITHMIC_CHUNK`` batch elements (fewer for large graphs: ``JAX_LOGARITHMIC_CHUNK_ENTRIES``) in turn
    (``lax.map``); its outputs are batch-last too. A last chunk that is not full is filled with copies of the first
    elements (valid inputs), whose results are dropped."""
    arrays = (X, *arrays)
    B = X.shape[-1]
    size = max(1, min(B, JAX_LOGARITHMIC_CHUNK, JAX_LOGARITHMIC_CHUNK_ENTRIES // X.shape[0] ** 3))
    count = -(-B // size)
    if count == 1:
        return function(*arrays)
    fill = count * size - B

    def split(x):
        x = jnp.concatenate([x, x[..., :fill]], -1)
        return jnp.moveaxis(x.reshape(x.shape[:-1] + (count, size)), -2, 0)

    def join(y):
        y = jnp.moveaxis(y, 0, -2)
        return y.reshape(y.shape[:-2] + (count * size,))[..., :B]

    return jax.tree.map(join, jax.lax.map(lambda chunk: function(*chunk), tuple(split(x) for x in arrays)))


def _prepared(theta, root):
    """``(X, order)``: ``(B, n, n)`` directed log-weights as ``(n, n, B)`` in elimination order and the wide dtype."""
    order = elimination_order(theta.shape[-1], root)
    return _to_elimination_layout(theta.astype(wide_dtype(theta.dtype)), order), order


def eliminate(theta, root, single_root, keep_steps=False):
    r"""The log-space elimination (:class:`Elimination`) of ``(B, n, n)`` directed log-weights, in the wide dtype.

    Exact :math:`\log \pi` of every parent, however small (the samplers draw from them); the steps' shares
    and parent probabilities are kept in the dtype of ``theta``.
    """
    X, order = _prepared(theta, root)
    X, finish = _shifted_for_single_root(X, single_root)
    log_z, steps = _eliminate_logarithmic(X, keep_steps, theta.dtype, JAX_LOGARITHMIC_RUNS)
    return Elimination(finish(log_z), steps, order)


# ------------------------------------------------------------------------------------------ the blocked elimination


def _safe_ratio(numerator, denominator):
    positive = denominator > 0
    return jnp.where(positive, numerator / jnp.where(positive, denominator, 1), 0)


def _pad_to_panels(X, p):
    """``(n, n, B)`` log-weights padded to ``1 + P p`` nodes by leaves of the root (one in-edge of log-weight 0 from
    the root, no other edge): each is a factor 1 in every tree's weight, eliminated first."""
    n = X.shape[0]
    N = 1 + -(-(n - 1) // p) * p
    if N == n:
        return X
    X = jnp.pad(X, ((0, N - n), (0, N - n), (0, 0)), constant_values=-jnp.inf)
    return X.at[0, n:].set(0.0)


class Panel(NamedTuple):
    r"""The elimination of one panel of ``p`` nodes ``a, ..., a + p - 1`` from ``(B, N, N)`` weights (batch first).

    Inside the panel its columns ``(N, p, B)`` and rows ``(p, N, B)`` are eliminated one node at a time (the
    last first); the nodes before the panel then take the whole panel as one product
    :math:`W' = W + \Pi \Lambda`.
    """

    #: ``(p, N, B)`` each step's parent distribution :math:`\pi` (step ``s`` eliminates node ``a + p - 1 - s``)
    pi: jax.Array
    #: ``(p, N, p, B)`` / ``(p, p, N, B)`` each step's share of the panel's columns / rows that was there before
    share_columns: jax.Array
    share_rows: jax.Array
    #: ``(B, N, p)`` the steps' parent distributions on the nodes before the panel, ``(B, p, N)`` their out-weights
    pi_rest: jax.Array
    lam_rest: jax.Array
    #: ``(B, N, N)`` the weights left on the nodes before the panel
    weights: jax.Array
    #: ``(p, B)`` the steps' pivots, logarithm
    log_pivots: jax.Array


def _panel_layout(x, a, p):
    """Node indices, panel-local indices, the mask of the nodes before the panel (``a``), the mask of each panel
    column's own row, and the panel's columns ``(N, p, B)`` and rows ``(p, N, B)`` (batch last, rows to the nodes
    before the panel only) of ``(B, N, N)`` ``x`` (batch first)."""
    idx, local = jnp.arange(x.shape[-1]), jnp.arange(p)
    rest = idx < a
    columns = jnp.transpose(jax.lax.dynamic_slice_in_dim(x, a, p, axis=2), (1, 2, 0))
    rows = jnp.where(rest[:, None], jnp.transpose(jax.lax.dynamic_slice_in_dim(x, a, p, axis=1), (1, 2, 0)), 0)
    return idx, local, rest, (idx[:, None] != a + local)[..., None], (columns, rows)


def _pivot_rows(idx, q, n, single_root):
    r"""``(N, 1)``: the nodes whose weight into node ``q`` its pivot sums, of the ``N`` padded from ``n``.

    Every node before ``q``; for ``single_root`` the root only where ``q`` is the last node eliminated (or a padding
    leaf of the root). The root's out-edges scaled by :math:`s \to 0`, :math:`Z(s) = s Z_1 + O(s^2)`, and at first
    order in :math:`s` the elimination leaves every other pivot without the root's weight, carries the root's row
    as :math:`w'_{rj} = w_{rj} + (w_{rq} / d_q) w_{qj}`, and ends on the pivot :math:`w'_{r1}`: the product of the
    pivots is :math:`Z_1` itself, and the root never takes a second child in the reverse pass.
    """
    before = idx < q
    if single_root:
        before = before & ((idx > 0) | (q == 1) | (q >= n))
    return before[:, None]


def _eliminate_panel(W, a, p, trailing, pivot_rows):
    """The :class:`Panel` eliminating nodes ``a + p - 1, ..., a`` of ``(B, N, N)`` weights; without ``trailing`` (the
    only panel: no node but the root is left) the weights left are not formed. ``pivot_rows(idx, q)``
    (:func:`_pivot_rows`) are the nodes whose weights the pivot of node ``q`` sums."""
    idx, local, rest, not_own, (columns, rows) = _panel_layout(W, a, p)

    def step(carry, ql):
        columns, rows = carry
        q = a + ql
        left = (idx < q)[:, None]
        column = jnp.where(left, jax.lax.dynamic_index_in_dim(columns, ql, 1, keepdims=False), 0)
        pivot = jnp.where(pivot_rows(idx, q), column, 0).sum(0)
        pi = _safe_ratio(column, pivot)
        earlier = (local < ql)[:, None]
        lam_panel = jnp.where(earlier, jax.lax.dynamic_index_in_dim(columns, q, 0, keepdims=False), 0)
        lam_rest = jax.lax.dynamic_index_in_dim(rows, ql, 0, keepdims=False)
        pi_panel = jax.lax.dynamic_slice_in_dim(pi, a, p, axis=0)
        new_columns = jnp.where(left[:, :, None] & earlier[None] & not_own, columns + pi[:, None] * lam_panel[None], 0)
        new_rows = jnp.where(earlier[:, :, None] & rest[None, :, None], rows + pi_panel[:, None] * lam_rest[None], 0)
        shares = (_safe_ratio(columns, new_columns), _safe_ratio(rows, new_rows))
        return (new_columns, new_rows), (pi, *shares, lam_rest, jnp.log(pivot))

    _, (pis, share_c, share_r, lams, log_pivots) = jax.lax.scan(step, (columns, rows), jnp.arange(p - 1, -1, -1))
    # the trailing product batch first: a batched matrix product
    pi_rest = jnp.where(rest[None, :, None], jnp.transpose(pis, (2, 1, 0)), 0)
    lam_rest = jnp.transpose(lams, (2, 0, 1))
    block = rest[:, None] & rest & (idx[:, None] != idx)
    weights = jnp.where(block, W + pi_rest @ lam_rest, 0) if trailing else jnp.zeros_like(W)
    return Panel(pis, share_c, share_r, pi_rest, lam_rest, weights, log_pivots)


class PanelTangents(NamedTuple):
    """Tangents of a :class:`Panel`'s fields along the tangent of ``log W``, and that of ``log`` of its weights."""

    #: ``(p, N, B)``, ``(p, N, p, B)``, ``(p, p, N, B)``: per step, as the :class:`Panel`'s
    pi: jax.Array
    share_columns: jax.Array
    share_rows: jax.Array
    #: ``(B, N, p)``, ``(B, p, N)``
    pi_rest: jax.Array
    lam_rest: jax.Array
    #: ``(B, N, N)``
    log_weights: jax.Array


def _panel_tangents(panel, W, dL, a, p, trailing, pivot_rows):
    """The :class:`PanelTangents` of ``panel``, eliminated from ``W``, along ``dL`` (tangent of ``log W``,
    ``(B, N, N)``)."""
    idx, local, rest, not_own, (d_columns, d_rows) = _panel_layout(dL, a, p)

    def step(carry, x):
        d_columns, d_rows = carry
        (pi, s_c, s_r), ql = x
        q = a + ql
        left = (idx < q)[:, None]
        earlier = (local < ql)[:, None]
        d_column = jnp.where(left, jax.lax.dynamic_index_in_dim(d_columns, ql, 1, keepdims=False), 0)
        d_log_pi = jnp.where(left, d_column - jnp.where(pivot_rows(idx, q), pi * d_column, 0).sum(0), 0)
        d_lam_panel = jnp.where(earlier, jax.lax.dynamic_index_in_dim(d_columns, q, 0, keepdims=False), 0)
        d_lam_rest = jax.lax.dynamic_index_in_dim(d_rows, ql, 0, keepdims=False)
        block_c = left[:, :, None] & earlier[None] & not_own
        block_r = earlier[:, :, None] & rest[None, :, None]
        # a new weight w' = w + pi lam mixes the tangents of its two terms by their shares
        d_via_c = d_log_pi[:, None] + d_lam_panel[None]
        d_via_r = jax.lax.dynamic_slice_in_dim(d_log_pi, a, p, 0)[:, None] + d_lam_rest[None]
        d_diff_c, d_diff_r = d_columns - d_via_c, d_rows - d_via_r
        carry = (jnp.where(block_c, d_via_c + s_c * d_diff_c, 0), jnp.where(block_r, d_via_r + s_r * d_diff_r, 0))
        d_step = (
            pi * d_log_pi,
            jnp.where(block_c, s_c * (1 - s_c) * d_diff_c, 0),
            jnp.where(block_r, s_r * (1 - s_r) * d_diff_r, 0),
        )
        return carry, (d_step, d_lam_rest)

    xs = ((panel.pi, panel.share_columns, panel.share_rows), jnp.arange(p - 1, -1, -1))
    _, (d_steps, d_log_lams) = jax.lax.scan(step, (d_columns, d_rows), xs)
    d_pi_rest = jnp.where(rest[None, :, None], jnp.transpose(d_steps[0], (2, 1, 0)), 0)
    d_lam_rest = panel.lam_rest * jnp.transpose(d_log_lams, (2, 0, 1))
    if not trailing:
        return PanelTangents(*d_steps, d_pi_rest, d_lam_rest, jnp.zeros_like(dL))
    d_weights = W * dL + d_pi_rest @ panel.lam_rest + panel.pi_rest @ d_lam_rest
    block = rest[:, None] & rest & (idx[:, None] != idx)
    return PanelTangents(*d_steps, d_pi_rest, d_lam_rest, jnp.where(block, _safe_ratio(d_weights, panel.weights), 0))


def _size_classes(N, p):
    """``[(size, panels)]``: the panels of ``N`` padded nodes in runs whose arrays keep ``size`` nodes, the nodes left
    when the run starts. Two runs from 4 panels on, split in the middle: the second half's panels work on at most
    half the nodes, a quarter of the trailing matrices, for one more compiled copy of each loop body.
    """
    P = (N - 1) // p
    if P < 4:
        return [(N, slice(0, P))]
    first = P // 2
    return [(N, slice(0, first)), (N - first * p, slice(first, P))]


def _scan(body, carry, xs, reverse=False):
    """``jax.lax.scan``, or one call of ``body`` where there is one step (small graphs: one panel), which compiles
    in a fraction of the time of a loop."""
    if jax.tree.leaves(xs)[0].shape[0] > 1:
        return jax.lax.scan(body, carry, xs, reverse=reverse)
    carry, out = body(carry, jax.tree.map(lambda x: x[0], xs))
    return carry, jax.tree.map(lambda x: x[None], out)


def _blocked(X, single_root, reverse=True, dX=None):
    r"""The blocked linear elimination of ``(n, n, B)`` log-weights (elimination order, batch last).

    The same elimination as :func:`_eliminate_logarithmic`, panel by panel (:class:`Panel`), on weights
    normalised once per column: every pivot and weight stays a sum of positive terms, and a column's mass
    only shrinks, so the largest loss of scale is the largest :math:`-\log` of a pivot in those units.
    Returns ``(log_z, exact, mu, d_mu)``: the log-partition, the batch mask where no column lost more than
    :func:`~sst_common.constants.linear_elimination_max_loss` (elsewhere the caller takes the log-space
    elimination), then with ``reverse`` the marginals ``(n, n, B)`` and, given ``dX``, their tangent along
    ``dX`` (the Hessian-vector product), else ``None``. The reverse pass recomputes each panel from its stored
    input and undoes its steps with the flows :math:`G = \mu' / W'` of the trailing product; the tangent pass
    runs alongside both.
    """
    n, B = X.shape[0], X.shape[-1]
    p = panel_width(n, JAX_PANEL_WIDTHS)
    X = _pad_to_panels(X, p)
    N = X.shape[0]
    P = (N - 1) // p
    log_scale = log_sum_exp(X, 0)
    # the panels' steps run batch last, on their own columns and rows; the trailing matrices batch first, as the
    # batched matrix products of the panels want them (moving the batch there and back per panel cost more)
    W = _batch_first(jnp.exp(X - _no_neg_inf(log_scale)[None]))
    tangent = dX is not None
    dL = _batch_first(jnp.pad(dX, ((0, N - n), (0, N - n), (0, 0)))) if tangent else None
    starts = N - (jnp.arange(P) + 1) * p
    trailing = P > 1
    pivot_rows = functools.partial(_pivot_rows, n=n, single_root=single_root)

    def forward(carry, a):
        W, dL, log_pivots, worst = carry
        panel = _eliminate_panel(W, a, p, trailing, pivot_rows)
        worst = jnp.maximum(worst, -panel.log_pivots.min(0))
        dL_out = _panel_tangents(panel, W, dL, a, p, trailing, pivot_rows).log_weights if tangent else None
        return (panel.weights, dL_out, log_pivots + panel.log_pivots.sum(0), worst), (W, dL) if reverse else None

    zeros = jnp.zeros((B,), X.dtype)
    carry, inputs = (W, dL, zeros, zeros), []
    classes = _size_classes(N, p)
    for size, panels in classes:  # the panels' arrays shrink to the nodes left
        W, dL = (None if x is None else x[:, :size, :size] for x in carry[:2])
        carry, stacked = _scan(forward, (W, dL, *carry[2:]), starts[panels])
        inputs.append(stacked)
    _, _, log_pivots, worst = carry
    log_z = log_pivots + log_scale[1:].sum(0)
    info = jnp.finfo(X.dtype)
    exact = jnp.isfinite(log_z) & (worst <= linear_elimination_max_loss(float(info.eps), float(info.tiny)))
    if not reverse:
        return log_z, exact, None, None
    local = jnp.arange(p)
    T = lambda x: jnp.swapaxes(x, -1, -2)  # noqa: E731
    to_step_rows = lambda x: jnp.transpose(x, (2, 1, 0))  # (B, N, p) -> (p, N, B)  # noqa: E731
    to_step_columns = lambda x: jnp.transpose(x, (1, 2, 0))  # (B, p, N) -> (p, N, B)  # noqa: E731

    def undo_panel(carry, x):
        mu, d_mu = carry
        (W, dL), a = x
        N = W.shape[-1]
        idx = jnp.arange(N)
        panel = _eliminate_panel(W, a, p, trailing, pivot_rows)  # recomputed: cheaper than storing every panel's steps
        # what the marginals of the weights left owe each panel step's parent choice and out-edges (nothing
        # where no node but the root is left)
        flows = d_flows = (jnp.zeros_like(panel.pi),) * 2
        if trailing:
            G = _safe_ratio(mu, panel.weights)
            G_lam, pi_G = G @ T(panel.lam_rest), T(panel.pi_rest) @ G
            flows = (to_step_rows(panel.pi_rest * G_lam), to_step_columns(panel.lam_rest * pi_G))
        steps = (panel.pi, panel.share_columns, panel.share_rows, *flows)
        if tangent:
            tangents = _panel_tangents(panel, W, dL, a, p, trailing, pivot_rows)
            d_pi_rest, d_lam_rest = tangents.pi_rest, tangents.lam_rest
            if trailing:
                dG = jnp.where(panel.weights > 0, _safe_ratio(d_mu, panel.weights) - G * tangents.log_weights, 0)
                d_flows = (
                    to_step_rows(d_pi_rest * G_lam + panel.pi_rest * (dG @ T(panel.lam_rest) + G @ T(d_lam_rest))),
                    to_step_columns(d_lam_rest * pi_G + panel.lam_rest * (T(d_pi_rest) @ G + T(panel.pi_rest) @ dG)),
                )
            steps = (*steps, tangents.pi, tangents.share_columns, tangents.share_rows, *d_flows)

        def into(through_c, through_r, flow):
            """What enters each node left: through the panel's columns, its rows, and the trailing product."""
            rows = through_c.sum(1) + flow
            panel_rows = jax.lax.dynamic_slice_in_dim(rows, a, p, 0) + through_r.sum(1)
            return jax.lax.dynamic_update_slice_in_dim(rows, panel_rows, a, 0)

        def undo(carry, x):
            step, ql = x
            pi, s_c, s_r, row_flow, column_flow = step[:5]
            counted = pivot_rows(idx, a + ql)
            pi = jnp.where(counted, pi, 0)  # a root not counted in the pivot takes no second child
            mu_c, mu_r = carry[:2]
            is_q = (local == ql).astype(mu_c.dtype)
            column_q, row_q = is_q[None, :, None], is_q[:, None, None]
            node_q = (idx == a + ql).astype(mu_c.dtype)[:, None, None]
            through_c, through_r = mu_c - mu_c * s_c, mu_r - mu_r * s_r
            into_rows = into(through_c, through_r, row_flow)
            total = into_rows.sum(0)
            new = (
                mu_c * s_c + (pi * (1 - total) + into_rows)[:, None] * column_q + node_q * through_c.sum(0)[None],
                mu_r * s_r + row_q * (through_r.sum(0) + column_flow)[None],
            )
            if not tangent:
                return new, None
            d_pi, d_s_c, d_s_r, d_row_flow, d_column_flow = step[5:]
            d_pi = jnp.where(counted, d_pi, 0)
            d_mu_c, d_mu_r = carry[2:]
            d_through_c = d_mu_c - d_mu_c * s_c - mu_c * d_s_c
            d_through_r = d_mu_r - d_mu_r * s_r - mu_r * d_s_r
            d_into_rows = into(d_through_c, d_through_r, d_row_flow)
            d_into_q = d_pi * (1 - total) - pi * d_into_rows.sum(0) + d_into_rows
            d_new = (
                d_mu_c * s_c + mu_c * d_s_c + d_into_q[:, None] * column_q + node_q * d_through_c.sum(0)[None],
                d_mu_r * s_r + mu_r * d_s_r + row_q * (d_through_r.sum(0) + d_column_flow)[None],
            )
            return (*new, *d_new), None

        blocks = (jnp.zeros((N, p, B), X.dtype), jnp.zeros((p, N, B), X.dtype))
        done, _ = jax.lax.scan(undo, blocks * (2 if tangent else 1), (steps, jnp.arange(p - 1, -1, -1)), reverse=True)

        def assemble(rest, c, r):
            """The panel's columns ``(N, p, B)`` and rows ``(p, N, B)`` into the batch-first marginals ``rest``."""
            out = jax.lax.dynamic_update_slice_in_dim(rest, jnp.transpose(c, (2, 0, 1)), a, 2)
            rows = jax.lax.dynamic_slice_in_dim(out, a, p, 1) + jnp.transpose(r, (2, 0, 1))
            return jax.lax.dynamic_update_slice_in_dim(out, rows, a, 1)

        nothing = jnp.zeros_like(W)
        mu = assemble(G * W if trailing else nothing, *done[:2])
        if tangent:
            d_mu = assemble((dG + G * dL) * W if trailing else nothing, *done[2:])
        return (mu, d_mu), None

    size = classes[-1][0]
    zeros = jnp.zeros((B, size, size), X.dtype)
    mu, d_mu = zeros, zeros if tangent else None
    for (size, panels), stacked in zip(classes[::-1], inputs[::-1], strict=True):
        grow = ((0, 0), (0, size - mu.shape[-1]), (0, size - mu.shape[-1]))
        mu, d_mu = (None if x is None else jnp.pad(x, grow) for x in (mu, d_mu))
        (mu, d_mu), _ = _scan(undo_panel, (mu, d_mu), (stacked, starts[panels]), reverse=True)
    return log_z, exact, _batch_last(mu[:, :n, :n]), _batch_last(d_mu[:, :n, :n]) if tangent else None


def _step_tangents(steps, dX):
    """Directional derivatives of each step's ``(share, pi)`` along ``dX`` (``(n, n, B)`` log-weights in elimination
    order, batch last like the steps).

    Linear in ``dX`` (the steps are constants here): the log-space tier of the Hessian-vector product.
    """
    n = dX.shape[0]
    idx = jnp.arange(n)

    def tangent(dX, step_k):
        (share, pi), k = step_k
        left = (idx < k)[:, None]
        block = (left & (idx < k))[..., None]
        into_k = jnp.where(left, jax.lax.dynamic_index_in_dim(dX, k, 1, keepdims=False), 0)
        d_log_pi = jnp.where(left, into_k - (pi * into_k).sum(0), 0)
        d_via_k = d_log_pi[:, None] + jnp.where(left, jax.lax.dynamic_index_in_dim(dX, k, 0, keepdims=False), 0)[None]
        d_diff = dX - d_via_k
        dX = jnp.where(block, d_via_k + share * d_diff, dX)
        return dX, (jnp.where(block, share * (1 - share) * d_diff, 0), pi * d_log_pi)

    _, tangents = jax.lax.scan(tangent, dX, ((steps.share, steps.pi), jnp.arange(n - 1, 0, -1)))
    return tangents


def _reverse(steps):
    r"""Marginals ``(n, n, B)`` from the elimination steps, in elimination order, and those of every reduced graph.

    Undoing the elimination of node :math:`k`, which replaced :math:`w_{ij}` by
    :math:`w'_{ij} = w_{ij} + \pi_i w_{kj}`: with the share :math:`f_{ij} = w_{ij} / w'_{ij}` and
    :math:`T = \mu' (1 - f)`,
    :math:`\mu_{ij} = \mu'_{ij} f_{ij}`, :math:`\mu_{kj} = \sum_i T_{ij}` and
    :math:`\mu_{ik} = \pi_i (1 - \sum T) + \sum_j T_{ij}`: probabilities and expected counts only.
    Returns ``(mu, reduced)``; ``reduced`` stacks the :math:`\mu'` each step started from, which
    :func:`_reverse_tangents` needs.
    """
    n, B = steps.pi.shape[1:]
    idx = jnp.arange(n)

    def undo(mu, step_k):
        (share, pi), k = step_k
        is_k = (idx == k).astype(mu.dtype)
        through_k = mu - mu * share
        into_k = pi * (1 - through_k.sum((0, 1))) + through_k.sum(1)
        column_k, row_k = into_k[:, None, :] * is_k[None, :, None], is_k[:, None, None] * through_k.sum(0)[None]
        return mu * share + column_k + row_k, mu

    zeros = jnp.zeros((n, n, B), steps.pi.dtype)
    return jax.lax.scan(undo, zeros, ((steps.share, steps.pi), jnp.arange(n - 1, 0, -1)), reverse=True)


def _reverse_tangents(steps, reduced, tangents):
    """The directional derivative of :func:`_reverse` given the steps' tangents (linear in those)."""
    n, B = steps.pi.shape[1:]
    idx = jnp.arange(n)

    def undo(d_mu, step_k):
        (share, pi, mu, d_share, d_pi), k = step_k
        is_k = (idx == k).astype(mu.dtype)
        through_total = (mu - mu * share).sum((0, 1))
        d_through_k = d_mu - d_mu * share - mu * d_share
        d_into_k = d_pi * (1 - through_total) - pi * d_through_k.sum((0, 1)) + d_through_k.sum(1)
        d_out_of_k = d_through_k.sum(0)
        d_mu = d_mu * share + mu * d_share
        return d_mu + d_into_k[:, None, :] * is_k[None, :, None] + is_k[:, None, None] * d_out_of_k[None], None

    per_step = (steps.share, steps.pi, reduced, *tangents)
    zeros = jnp.zeros((n, n, B), steps.pi.dtype)
    return jax.lax.scan(undo, zeros, (per_step, jnp.arange(n - 1, 0, -1)), reverse=True)[0]


def _node_layout_or_nan(x, log_z, order):
    """``(n, n, B)`` in elimination order to ``(B, n, n)`` in node order, NaN where the support is empty."""
    return jnp.where((log_z == -jnp.inf)[..., None, None], jnp.nan, _to_node_layout(x, order))


def _log_partition_value(theta, root, single_root):
    """The log-partition of ``(B, n, n)`` directed log-weights, in the wide dtype: blocked, else in log space."""
    X, _ = _prepared(theta, root)
    log_z, exact, _, _ = _blocked(X, single_root, reverse=False)
    shifted, finish = _shifted_for_single_root(X, single_root)

    def logarithmic(X):
        return _eliminate_logarithmic(X, False, X.dtype)[0]

    return by_tiers(exact, log_z, lambda: finish(_in_chunks(logarithmic, shifted)))


def _marginals_value(theta, root, single_root):
    """The marginals of ``(B, n, n)`` directed log-weights: the blocked reverse pass, else the log-space one."""
    X, order = _prepared(theta, root)
    log_z, exact, mu, _ = _blocked(X, single_root)
    shifted, finish = _shifted_for_single_root(X, single_root)

    def logarithmic(X):
        log_z, steps = _eliminate_logarithmic(X, True, X.dtype)
        return log_z, _reverse(steps)[0]

    def fallback():
        log_z, mu = _in_chunks(logarithmic, shifted)
        return finish(log_z), mu

    log_z, mu = by_tiers(exact, (log_z, mu), fallback, batch_axes=(0, 2))
    return _node_layout_or_nan(mu, log_z, order).astype(theta.dtype)


def _hessian_product_value(theta, v, *, root, single_root):
    """The Hessian-vector product of the log-partition of ``(..., n, n)`` directed log-weights along ``v``."""
    shape, n = theta.shape, theta.shape[-1]
    theta, v = theta.reshape(-1, n, n), v.reshape(-1, n, n)
    finite = jnp.isfinite(theta)
    X, order = _prepared(theta, root)
    dX = _to_elimination_layout(jnp.where(finite, v, 0).astype(X.dtype), order)
    log_z, exact, _, d_mu = _blocked(X, single_root, dX=dX)
    shifted, finish = _shifted_for_single_root(X, single_root)

    def logarithmic(X, dX):
        log_z, steps = _eliminate_logarithmic(X, True, X.dtype)
        reduced = _reverse(steps)[1]
        return log_z, _reverse_tangents(steps, reduced, _step_tangents(steps, dX))

    def fallback():
        log_z, d_mu = _in_chunks(logarithmic, shifted, dX)
        return finish(log_z), d_mu

    log_z, d_mu = by_tiers(exact, (log_z, d_mu), fallback, batch_axes=(0, 2))
    d_mu = _node_layout_or_nan(d_mu, log_z, order)
    return jnp.where(finite, d_mu, 0).astype(theta.dtype).reshape(shape)


# The Hessian-vector product as a primitive, linear in its second argument: the Hessian is symmetric, so its
# transpose (what reverse mode calls) is the same computation, run directly; JAX's own transposition of the
# product's scans would cost three to four times as much.
_hessian_product_p = Primitive("arborescence_hessian_product")
_hessian_product_p.def_impl(jax.jit(_hessian_product_value, static_argnames=("root", "single_root")))
_hessian_product_p.def_abstract_eval(lambda theta, v, **_: jax.core.ShapedArray(v.shape, theta.dtype))
mlir.register_lowering(_hessian_product_p, mlir.lower_fun(_hessian_product_value, multiple_results=False))


def _hessian_product_jvp(primals, tangents, *, root, single_root):
    (theta, v), (d_theta, d_v) = primals, tangents
    out = _hessian_product_p.bind(theta, v, root=root, single_root=single_root)
    d_out = _hessian_product_p.bind(theta, ad.instantiate_zeros(d_v), root=root, single_root=single_root)
    if type(d_theta) is not ad.Zero:  # third derivatives: forward mode through the computation itself
        product = functools.partial(_hessian_product_value, v=v, root=root, single_root=single_root)
        d_out = d_out + jax.jvp(product, (theta,), (d_theta,))[1]
    return out, d_out


def _hessian_product_transpose(cotangent, theta, v, *, root, single_root):
    if ad.is_undefined_primal(theta):
        raise NotImplementedError("the Hessian-vector product is linear in the vector only")
    cotangent = ad.instantiate_zeros(cotangent)
    return None, _hessian_product_p.bind(theta, cotangent, root=root, single_root=single_root)


def _hessian_product_batch(args, dims, *, root, single_root):
    """``vmap``: the vmapped axis becomes one more batch axis (every batch element is computed alone)."""
    size = next(x.shape[d] for x, d in zip(args, dims, strict=True) if d is not batching.not_mapped)
    theta, v = (batching.bdim_at_front(x, d, size) for x, d in zip(args, dims, strict=True))
    return _hessian_product_p.bind(theta, v, root=root, single_root=single_root), 0


ad.primitive_jvps[_hessian_product_p] = _hessian_product_jvp
ad.primitive_transposes[_hessian_product_p] = _hessian_product_transpose
batching.primitive_batchers[_hessian_product_p] = _hessian_product_batch


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _marginals(theta, root, single_root):
    return _marginals_value(theta, root, single_root)


@_marginals.defjvp
def _marginals_jvp(root, single_root, primals, tangents):
    (theta,), (v,) = primals, tangents
    mu = _marginals(theta, root, single_root)
    return mu, _hessian_product_p.bind(theta, v, root=root, single_root=single_root)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _log_partition(theta, root, single_root):
    return _log_partition_value(theta, root, single_root).astype(theta.dtype)


@_log_partition.defjvp
def _log_partition_jvp(root, single_root, primals, tangents):
    (theta,), (v,) = primals, tangents
    log_z = _log_partition(theta, root, single_root)
    complete_graph = directed_log_weights(jnp.zeros_like(theta), root)
    marginals = lambda t: _marginals(t, root, single_root)  # noqa: E731
    return log_z, log_partition_tangent(theta, v, log_z, complete_graph, marginals)


# Compiled once per shape and option: eager calls then cost one dispatch, not a retrace of every loop and branch.
@functools.partial(jax.jit, static_argnums=(0, 2, 3, 4))
def _apply_directed(function, logits, root, single_root, event_dim):
    """``function`` on the read entries of ``logits``, flattened to ``(B, n, n)``; NaN elements give NaN."""
    n = logits.shape[-1]
    theta, nan = mask_nan_elements(directed_log_weights(logits, root), 2)
    out = function(theta.reshape(-1, n, n), root, single_root)
    return fill_nan(out.reshape(logits.shape[: logits.ndim - 2 + event_dim]), nan, event_dim)


def raise_if_undefined(marginals, logits, event_dim, structure):
    """Raise (on concrete values) where marginals came out NaN from NaN-free input: an empty support."""
    dims = tuple(range(marginals.ndim - event_dim, marginals.ndim))
    raise_if_empty(jnp.any(jnp.isnan(marginals), dims) & ~nan_elements(logits, event_dim), structure)


_STRUCTURE = "spanning tree or arborescence"


def arborescence_log_partition(logits: ArrayLike, root: int = 0, single_root: bool = False) -> jax.Array:
    r"""Log-partition of the exponential family over arborescences (Tutte / Koo et al.).

    :param logits: ``(..., n, n)``; ``logits[..., i, j]`` scores edge ``i -> j``. Diagonal and
        the root column are ignored.
    :param int root: the root node.
    :param bool single_root: restrict to arborescences where the root has one child.
    :returns: ``A(logits)`` of shape ``logits.shape[:-2]``, with gradient
        :func:`arborescence_marginals` (whose own derivative is the exact Hessian).
    """
    logits = check_square(logits)
    root = check_root(logits.shape[-1], root, single_root)
    if logits.shape[-1] == 1:
        return jnp.zeros(logits.shape[:-2], logits.dtype)
    return _apply_directed(_log_partition, logits, root, bool(single_root), 0)


def arborescence_marginals(logits: ArrayLike, root: int = 0, single_root: bool = False) -> jax.Array:
    r"""Edge marginals :math:`\mu_{ij} = P(i \to j \in x) = \partial A / \partial \theta_{ij}`, ``(..., n, n)``.

    Exact at every scale (the elimination of the module docstring); the tangent is the exact
    Hessian-vector product of :math:`A` from the same steps. Every non-root column sums to 1; the
    root column and the diagonal are 0.
    """
    logits = check_square(logits)
    root = check_root(logits.shape[-1], root, single_root)
    if logits.shape[-1] == 1:
        return jnp.zeros_like(logits)
    mu = _apply_directed(_marginals, logits, root, bool(single_root), 2)
    raise_if_undefined(mu, directed_log_weights(logits, root), 2, _STRUCTURE)
    return mu
