r"""Matrix-tree theorems: log-partition functions, edge marginals and their derivatives (JAX).

The same algorithm as :mod:`pyro_sst.ops.matrix_tree`, step for step. Every function works on
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
accuracy whatever the condition number. Columns are kept normalised (each column of
:math:`w` sums to one, its scale carried as a logarithm), in float64; a batch element where
some column loses more than :data:`~sst_common.constants.LINEAR_ELIMINATION_MAX_LOSS` nats of
scale (tight clusters at low temperature, where float64 would flush what the result depends
on) is eliminated in log space instead, with the same steps as output. The marginals are the
exact reverse pass through the steps (:func:`_reverse`, in probability units) and their
backward, the Hessian-vector product of :math:`A`, is the forward-mode derivative of that pass
(:func:`_step_tangents`): no inverse, no determinant, no autodiff through the elimination. The
marginals are a ``jax.custom_jvp`` whose tangent is that product, written as plain linear
operations, so JAX transposes it for reverse mode (``grad``, ``grad`` of ``vmap``) and
``jacfwd`` / ``hessian`` use it directly. Time :math:`O(n^3)` and memory :math:`O(n^3)` per
batch element.

For ``single_root`` (the root has exactly one child, Koo et al. 2007) the root's out-edges are
scaled by :math:`s = e^{-c}`, so that :math:`Z(s) = s Z_1 + s^2 Z_2 + \dots` and
:math:`\log Z_1 = \log Z(s) + c` up to a relative error below :math:`e^{-60}`; ``c`` is chosen
per batch element from the spread of its finite logits (root row included), and
:math:`Z_1 = 0` is detected exactly from the same bound.

Special inputs. ``-inf`` logits are absent edges; where no tree of finite weight remains the
log-partition is ``-inf`` and the marginals are undefined: they raise :class:`ValueError` on
concrete input and are NaN under a JAX transformation. NaN inputs give NaN for their batch
element. Every batch element is computed independently of the others.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from sst_common.checks import check_root
from sst_common.constants import SINGLE_ROOT_EMPTY_MARGIN, SINGLE_ROOT_MARGIN, linear_elimination_max_loss

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
    order = jnp.asarray(order)
    return x[..., order, :][..., :, order]


def _batch_last(x):
    """``(B, n, n)`` to ``(n, n, B)``."""
    return jnp.moveaxis(x, 0, -1)


def _to_elimination_layout(x, order):
    """``(B, n, n)`` in node order to the core's layout: ``(n, n, B)`` in elimination order."""
    return _batch_last(_permute(x, order))


def _to_node_layout(x, order):
    """The core's ``(n, n, B)`` in elimination order back to ``(B, n, n)`` in node order."""
    inverse = tuple(sorted(range(len(order)), key=order.__getitem__))
    return _permute(jnp.moveaxis(x, -1, 0), inverse)


def _single_root_shift(X):
    r"""Per batch element: the shift ``c`` of the root's out-edges and the smallest finite logit.

    The bound on :math:`Z_{k+1} / Z_k` is :math:`n^2 e^{\mathrm{spread}}` on a complete graph and
    :math:`n^n e^{(n-1)\,\mathrm{spread}}` with absent edges: swapping a root edge for an edge between two
    root subtrees changes the weight by at most the spread, and there are at most that many trees.
    """
    n = X.shape[-1]
    finite = jnp.isfinite(X)
    largest = jnp.where(finite, X, -jnp.inf).max((-2, -1))
    smallest = jnp.where(finite, X, jnp.inf).min((-2, -1))
    spread = jnp.where(finite.any((-2, -1)), largest - smallest, 0)
    complete = finite.sum((-2, -1)) == (n - 1) ** 2
    log_n = jnp.log(n)
    bound = jnp.where(complete, spread + 2 * log_n, (n - 1) * spread + n * log_n)
    return bound + SINGLE_ROOT_MARGIN, smallest


def _no_neg_inf(x):
    return jnp.where(x == -jnp.inf, 0, x)


class _Linear:
    """Normalised columns held as numbers: fast, exact while no column loses more than the dtype allows."""

    absent = 0.0

    @staticmethod
    def from_log(x):
        return jnp.exp(x)

    @staticmethod
    def add_paths(old, entering, leaving):
        return old + entering[:, None] * leaving[None]

    @staticmethod
    def normalise(new):
        column = new.sum(0)
        return new / jnp.where(column > 0, column, 1)[None], jnp.log(column)

    @staticmethod
    def share(old, new):
        return jnp.where(new > 0, old / jnp.where(new > 0, new, 1), 0)

    @staticmethod
    def probabilities(pi):
        return pi, jnp.log(pi)


class _Logarithmic:
    """Normalised columns held as logarithms: exact at any spread."""

    absent = -jnp.inf

    @staticmethod
    def from_log(x):
        return x

    @staticmethod
    def add_paths(old, entering, leaving):
        return jnp.logaddexp(old, entering[:, None] + leaving[None])

    @staticmethod
    def normalise(new):
        log_column = log_sum_exp(new, 0)
        return new - _no_neg_inf(log_column)[None], log_column

    @staticmethod
    def share(old, new):
        return jnp.where(new > -jnp.inf, jnp.exp(old - _no_neg_inf(new)), 0)

    @staticmethod
    def probabilities(log_pi):
        return jnp.exp(log_pi), log_pi


def _eliminate_columns(X, space, keep_steps, steps_dtype):
    """Eliminate nodes ``n - 1, ..., 1`` of ``(n, n, B)`` log-weights (root first), columns normalised in ``space``.

    Returns ``(log_z, steps, worst)`` as pyro_sst does; the arrays keep their full size, the nodes
    left at step ``k`` (those before ``k``) selected by masks.
    """
    n = X.shape[0]
    idx = jnp.arange(n)
    log_scale = log_sum_exp(X, 0)
    W = space.from_log(X - _no_neg_inf(log_scale)[None])

    def eliminate(carry, k):
        W, log_scale, lost, total, worst = carry
        left = (idx < k)[:, None]
        block = left & (idx < k) & (idx[:, None] != idx)  # a path j -> k -> j is a self-loop: in no tree
        block = block[..., None]
        entering = jnp.where(left, jax.lax.dynamic_index_in_dim(W, k, 1, keepdims=False), space.absent)
        leaving = jnp.where(left, jax.lax.dynamic_index_in_dim(W, k, 0, keepdims=False), space.absent)
        old = jnp.where(block, W, space.absent)
        new = jnp.where(block, space.add_paths(old, entering, leaving), space.absent)
        W, log_column = space.normalise(new)
        log_column = jnp.where(left, log_column, 0)
        carry = (
            W,
            log_scale + log_column,
            lost - log_column,
            total + jax.lax.dynamic_index_in_dim(log_scale, k, 0, keepdims=False),
            jnp.maximum(worst, jax.lax.dynamic_index_in_dim(lost, k, 0, keepdims=False)),
        )
        pi, log_pi = space.probabilities(entering)
        share = jnp.where(block, space.share(old, new), 0)
        step = Step(share.astype(steps_dtype), pi.astype(steps_dtype), log_pi) if keep_steps else None
        return carry, step

    zeros = jnp.zeros(X.shape[2:], X.dtype)
    carry = (W, log_scale, jnp.zeros_like(log_scale), zeros, zeros)
    (_, _, _, total, worst), steps = jax.lax.scan(eliminate, carry, jnp.arange(n - 1, 0, -1))
    return total, steps, worst


def eliminate(theta, root, single_root, keep_steps=False, linear=True):
    r"""The exact elimination (:class:`Elimination`) of ``(B, n, n)`` directed log-weights, in the wide dtype.

    The steps' shares and parent probabilities are kept in the dtype of ``theta`` (as in pyro_sst).
    ``linear=False`` takes the log-space path for every element (the samplers need exact
    :math:`\log \pi` of every parent, however small).
    """
    n = theta.shape[-1]
    order = elimination_order(n, root)
    X = _permute(theta.astype(wide_dtype(theta.dtype)), order)
    if single_root:
        shift, smallest = _single_root_shift(X)
        X = X.at[..., 0, :].add(-shift[..., None])
    X = _batch_last(X)
    if linear:
        log_z, steps, worst = _eliminate_columns(X, _Linear, keep_steps, theta.dtype)
        info = jnp.finfo(X.dtype)
        exact = jnp.isfinite(log_z) & (worst <= linear_elimination_max_loss(float(info.eps), float(info.tiny)))

        def logarithmic():
            return _eliminate_columns(X, _Logarithmic, keep_steps, theta.dtype)[:2]

        step_axes = Step(3, 2, 2) if keep_steps else None  # the batch is last
        log_z, steps = by_tiers(exact, (log_z, steps), logarithmic, batch_axes=(0, step_axes))
    else:
        log_z, steps, _ = _eliminate_columns(X, _Logarithmic, keep_steps, theta.dtype)
    if single_root:
        log_z = log_z + shift
        # If Z_1 > 0 then log Z_1 >= (n - 1) * smallest; if Z_1 = 0 the shift puts the value far below.
        log_z = jnp.where(log_z < (n - 1) * smallest - SINGLE_ROOT_EMPTY_MARGIN, -jnp.inf, log_z)
    return Elimination(log_z, steps, order)


def _step_tangents(steps, dX):
    """Directional derivatives of each step's ``(share, pi)`` along ``dX`` (``(n, n, B)`` log-weights in elimination
    order, batch last like the steps).

    Linear in ``dX`` (the steps are constants here), so JAX transposes it for reverse mode.
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

    The reverse pass of pyro_sst (:func:`pyro_sst.ops.matrix_tree._reverse`): undoing the
    elimination of node :math:`k`, with :math:`T = \mu' (1 - f)`,
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


def _marginals_of(elimination):
    """The marginals of an :class:`Elimination` kept with its steps, in node order; NaN where the support is empty."""
    mu = _to_node_layout(_reverse(elimination.steps)[0], elimination.order)
    return jnp.where((elimination.log_z == -jnp.inf)[..., None, None], jnp.nan, mu)


def _hvp(elimination, reduced, v):
    """The Hessian-vector product of the log-partition along ``v``: the marginals' tangent (linear in ``v``)."""
    order, steps = elimination.order, elimination.steps
    d_mu = _reverse_tangents(steps, reduced, _step_tangents(steps, _to_elimination_layout(v, order)))
    d_mu = _to_node_layout(d_mu, order)
    return jnp.where((elimination.log_z == -jnp.inf)[..., None, None], jnp.nan, d_mu)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _marginals(theta, root, single_root):
    return _marginals_of(eliminate(theta, root, single_root, keep_steps=True)).astype(theta.dtype)


@_marginals.defjvp
def _marginals_jvp(root, single_root, primals, tangents):
    (theta,), (v,) = primals, tangents
    elimination = eliminate(theta, root, single_root, keep_steps=True)
    mu, reduced = _reverse(elimination.steps)
    empty = (elimination.log_z == -jnp.inf)[..., None, None]
    mu = jnp.where(empty, jnp.nan, _to_node_layout(mu, elimination.order))
    finite = jnp.isfinite(theta)

    def hessian_times(v):
        hvp = _hvp(elimination, reduced, jnp.where(finite, v, 0).astype(elimination.steps.pi.dtype))
        return jnp.where(finite, hvp, 0).astype(theta.dtype)

    # Linearising the (already linear) product marks its scans' tangent inputs as linear, which lets JAX
    # transpose them for reverse mode; traced as written, they would not be.
    _, linear_hessian_times = jax.linearize(hessian_times, jnp.zeros_like(v))
    return mu.astype(theta.dtype), linear_hessian_times(v)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _log_partition(theta, root, single_root):
    return eliminate(theta, root, single_root).log_z.astype(theta.dtype)


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
