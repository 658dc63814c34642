r"""Matrix-tree theorems: log-partition functions, edge marginals and their backward.

Every function here works on *directed* log-weights ``theta[..., i, j]`` for the edge
``i -> j`` (``i`` is the parent of ``j``) and an arborescence rooted at ``root``. Undirected
spanning trees are arborescences of the symmetric digraph rooted at node 0 (each tree has
exactly one orientation away from the root, with the same weight), so
:mod:`pyro_sst.ops.trees` builds on the same code.

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
:math:`w` sums to one, its scale carried as a logarithm), in float64. A batch element where
some column loses more than 662 nats of scale (tight clusters at low temperature, where float64
would flush what the result depends on; see
:func:`~sst_common.constants.linear_elimination_max_loss`) is eliminated with the same
normalised columns held as logarithms, which have no range limit, and gives the same steps. The marginals are the
exact reverse pass through the steps (:func:`_reverse`, in probability units) and their
backward, the Hessian-vector product of :math:`A`, is the forward-mode derivative of that pass
(:func:`_step_tangents`): no inverse, no determinant, no second-order autograd. Time
:math:`O(n^3)` and saved memory :math:`O(n^3)` per batch element.

For ``single_root`` (the root has exactly one child, Koo et al. 2007) the root's out-edges are
scaled by :math:`s = e^{-c}`, so that :math:`Z(s) = s Z_1 + s^2 Z_2 + \dots` and
:math:`\log Z_1 = \log Z(s) + c` up to a relative error below :math:`e^{-60}`; ``c`` is chosen
per batch element from the spread of its finite logits (root row included), and
:math:`Z_1 = 0` is detected exactly from the same bound.

Special inputs. ``-inf`` logits are absent edges. If no tree (or arborescence)
of finite weight remains, the log-partition is ``-inf`` and the marginals,
which are undefined, raise :class:`ValueError` (so do the solvers and samplers of
:mod:`pyro_sst.ops.trees`). A NaN among the entries that are read makes that batch
element's log-partition and marginals NaN. Every batch element is computed
independently of the others. The data-dependent branches live inside custom
autograd Functions, so ``torch.jit.trace`` records them as calls and re-runs them.
"""

import math
from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable

from sst_common.checks import check_root
from sst_common.constants import SINGLE_ROOT_EMPTY_MARGIN, SINGLE_ROOT_MARGIN, linear_elimination_max_loss

from .logspace import (
    check_nonempty,
    fill_nan,
    log_partition_backward,
    log_sum_exp,
    mask_nan_elements,
    zeros_in_graph,
)
from .validation import check_square

__all__ = [
    "arborescence_log_partition",
    "arborescence_marginals",
    "directed_log_weights",
    "laplacian",
]


def laplacian(weights: torch.Tensor) -> torch.Tensor:
    r"""In-degree Laplacian :math:`L = \operatorname{diag}(\mathbf 1^\top W) - W` of ``(..., n, n)`` weights.

    ``weights[..., i, j]`` is the weight of edge ``i -> j``; the diagonal is
    ignored. For a symmetric ``weights`` this is the usual graph Laplacian.
    """
    n = weights.shape[-1]
    eye = torch.eye(n, dtype=torch.bool, device=weights.device)
    weights = weights.masked_fill(eye, 0)
    return torch.diag_embed(weights.sum(-2)) - weights


def directed_log_weights(logits: torch.Tensor, root: int) -> torch.Tensor:
    """Directed log-weights ``(..., n, n)`` with self-loops and edges into ``root`` set to -inf."""
    n = logits.shape[-1]
    idx = torch.arange(n, device=logits.device)
    excluded = (idx[:, None] == idx) | (idx == root)
    return logits.masked_fill(excluded, -float("inf"))


#: float64 columns of the linear elimination may lose this many nats of scale and stay exact
MAX_LOSS = linear_elimination_max_loss(torch.finfo(torch.float64).eps, torch.finfo(torch.float64).tiny)


class Step(NamedTuple):
    """What eliminating node ``k`` (the last of the ``k + 1`` nodes left, in elimination order) leaves behind."""

    #: ``(B, k, k)``: the share :math:`w_{ij} / w'_{ij}` of each reduced weight that was there before (0 where absent)
    share: torch.Tensor
    #: ``(B, k)``: the parent distribution :math:`\pi` of node ``k`` over the nodes left
    pi: torch.Tensor
    #: ``(B, k)``: its logarithm (exact where :math:`\pi` underflows)
    log_pi: torch.Tensor


class Elimination(NamedTuple):
    """The elimination of ``(B, n, n)`` directed log-weights, in elimination order (the root first)."""

    #: ``(B,)`` the log-partition
    log_z: torch.Tensor
    #: one :class:`Step` per eliminated node, in the order they were eliminated (node ``n - 1`` down to 1)
    steps: list
    #: ``order[m]`` is the node at elimination position ``m``
    order: list


def elimination_order(n, root):
    """The root first, then the other nodes in increasing order; nodes are eliminated from the last."""
    return [root] + [i for i in range(n) if i != root]


def _permute(x, order):
    return x[..., order, :][..., :, order]


def _single_root_shift(X):
    r"""Per batch element: the shift ``c`` of the root's out-edges and the smallest finite logit.

    Swapping a root edge for an edge between two root subtrees bounds :math:`Z_{k+1} / Z_k` by
    :math:`n^2 e^{\mathrm{spread}}` on a complete graph; with absent edges only the tree count bounds it:
    :math:`Z_{>1} / Z_1 \le n^n e^{(n-1)\,\mathrm{spread}}` when :math:`Z_1 > 0`.
    """
    n = X.shape[-1]
    finite = torch.isfinite(X)
    largest = X.masked_fill(~finite, -math.inf).amax((-2, -1))
    smallest = X.masked_fill(~finite, math.inf).amin((-2, -1))
    spread = torch.where(finite.any((-2, -1)), largest - smallest, torch.zeros_like(largest))
    complete = finite.sum((-2, -1)) == (n - 1) ** 2
    log_n = math.log(n)
    bound = torch.where(complete, spread + 2 * log_n, (n - 1) * spread + n * log_n)
    return bound + SINGLE_ROOT_MARGIN, smallest


class _Linear:
    """Normalised columns held as numbers: fast, exact while no column loses more than :data:`MAX_LOSS` nats."""

    absent = 0.0

    @staticmethod
    def from_log(x):
        return x.exp()

    @staticmethod
    def add_paths(old, entering, leaving):
        return torch.addcmul(old, entering[..., :, None], leaving[..., None, :])

    @staticmethod
    def normalise(new):
        column = new.sum(-2)
        return new / torch.where(column > 0, column, 1.0)[..., None, :], column.log()

    @staticmethod
    def share(old, new):
        return torch.where(new > 0, old / new, 0.0)

    @staticmethod
    def probabilities(pi):
        return pi, pi.log()


class _Logarithmic:
    """Normalised columns held as logarithms: exact at any spread."""

    absent = -math.inf

    @staticmethod
    def from_log(x):
        return x

    @staticmethod
    def add_paths(old, entering, leaving):
        return torch.logaddexp(old, entering[..., :, None] + leaving[..., None, :])

    @staticmethod
    def normalise(new):
        log_column = log_sum_exp(new, -2)
        return new - log_column.nan_to_num(neginf=0.0)[..., None, :], log_column

    @staticmethod
    def share(old, new):
        return (old - new).exp().nan_to_num(0.0)  # NaN where both are absent

    @staticmethod
    def probabilities(log_pi):
        return log_pi.exp(), log_pi


def _eliminate_columns(X, space, keep_steps, steps_dtype):
    """Eliminate nodes ``n - 1, ..., 1`` of ``(B, n, n)`` log-weights (root first), columns normalised in ``space``.

    Returns ``(log_z, steps, worst)``: ``worst`` is the most nats of scale any column lost before
    its own elimination (what decides whether :class:`_Linear` was exact).
    """
    n = X.shape[-1]
    log_scale = log_sum_exp(X, -2)
    W = space.from_log(X - log_scale.nan_to_num(neginf=0.0)[..., None, :])
    self_loop = torch.eye(n, dtype=torch.bool, device=X.device)
    lost = torch.zeros_like(log_scale)
    total = torch.zeros_like(log_scale[..., 0])
    worst = torch.zeros_like(total)
    steps = []
    for k in range(n - 1, 0, -1):
        entering = W[..., :k, k]
        total = total + log_scale[..., k]
        worst = torch.maximum(worst, lost[..., k])
        old = W[..., :k, :k]
        # A path j -> k -> j is a self-loop: in no tree.
        new = space.add_paths(old, entering, W[..., k, :k]).masked_fill(self_loop[:k, :k], space.absent)
        W, log_column = space.normalise(new)
        if keep_steps:
            pi, log_pi = space.probabilities(entering)
            steps.append(Step(space.share(old, new).to(steps_dtype), pi.to(steps_dtype), log_pi))
        log_scale = log_scale[..., :k] + log_column
        lost = lost[..., :k] - log_column
    return total, steps, worst


def eliminate(theta, root, single_root, keep_steps=False, linear=True):
    r"""The exact elimination (:class:`Elimination`) of ``(B, n, n)`` directed log-weights, in float64.

    The steps' shares and parent probabilities (numbers in ``[0, 1]``, each to a relative accuracy of
    a few roundings) are kept in the dtype of ``theta``: the reverse pass and its derivative then run
    at that precision, half the memory traffic for float32. ``linear=False`` takes the log-space
    path for every element (the samplers need exact :math:`\log \pi` of every parent, however small).
    """
    n = theta.shape[-1]
    order = elimination_order(n, root)
    X = _permute(theta.double(), order)
    if single_root:
        shift, smallest = _single_root_shift(X)
        X = torch.cat([X[..., :1, :] - shift[..., None, None], X[..., 1:, :]], dim=-2)
    if not linear:
        log_z, steps, _ = _eliminate_columns(X, _Logarithmic, keep_steps, theta.dtype)
    else:
        log_z, steps, worst = _eliminate_columns(X, _Linear, keep_steps, theta.dtype)
        rest = (~(torch.isfinite(log_z) & (worst <= MAX_LOSS))).nonzero().squeeze(-1)
        if rest.numel():
            log_z_rest, steps_rest, _ = _eliminate_columns(X[rest], _Logarithmic, keep_steps, theta.dtype)
            log_z = log_z.index_put((rest,), log_z_rest)
            for step, step_rest in zip(steps, steps_rest, strict=True):
                for field, value in zip(step, step_rest, strict=True):
                    field[rest] = value
    if single_root:
        log_z = log_z + shift
        # If Z_1 > 0 then log Z_1 >= (n - 1) * smallest; if Z_1 = 0 the shift puts the value far below.
        log_z = log_z.masked_fill(log_z < (n - 1) * smallest - SINGLE_ROOT_EMPTY_MARGIN, -math.inf)
    return Elimination(log_z, steps, order)


def _step_tangents(steps, dX):
    """Directional derivatives of each step's ``(share, pi)`` along ``dX`` (log-weights in elimination order)."""
    tangents = []
    for step in steps:
        share, pi = step.share, step.pi
        k = pi.shape[-1]
        d_log_pi = dX[..., :k, k] - (pi * dX[..., :k, k]).sum(-1, keepdim=True)
        d_via_k = d_log_pi[..., :, None] + dX[..., k, None, :k]
        d_diff = dX[..., :k, :k] - d_via_k
        dX = d_via_k + share * d_diff
        tangents.append((share * (1 - share) * d_diff, pi * d_log_pi))
    return tangents


def _reverse(steps, tangents=None):
    r"""Marginals (and their directional derivative) from the elimination steps, in elimination order.

    Undoing the elimination of node :math:`k`, which replaced :math:`w_{ij}` by
    :math:`w'_{ij} = w_{ij} + \pi_i w_{kj}`: given the marginals :math:`\mu'` of the reduced
    graph and the share :math:`f_{ij} = w_{ij} / w'_{ij}`, with :math:`T = \mu' (1 - f)`,

    .. math::

        \mu_{ij} = \mu'_{ij} f_{ij}, \qquad \mu_{kj} = \sum_i T_{ij}, \qquad
        \mu_{ik} = \pi_i \Big(1 - \sum_{l, j} T_{lj}\Big) + \sum_j T_{ij}.

    Every quantity is a probability or an expected count: no cancellation at any spread.
    """
    first_pi = steps[0].pi
    n = first_pi.shape[-1] + 1
    mu = first_pi.new_zeros(first_pi.shape[:-1] + (n, n))
    d_mu = None if tangents is None else torch.zeros_like(mu)
    for i in range(len(steps) - 1, -1, -1):
        share, pi = steps[i].share, steps[i].pi
        k = pi.shape[-1]
        top = mu[..., :k, :k]
        through_k = top - top * share
        through_total = through_k.sum((-2, -1))[..., None]
        if d_mu is not None:
            d_share, d_pi = tangents[i]
            d_top = d_mu[..., :k, :k]
            d_through_k = d_top - d_top * share - top * d_share
            d_into_k = d_pi * (1 - through_total) - pi * d_through_k.sum((-2, -1))[..., None]
            d_mu[..., :k, k] = d_into_k + d_through_k.sum(-1)
            d_mu[..., k, :k] = d_through_k.sum(-2)
            d_top.mul_(share).add_(top * d_share)
        mu[..., :k, k] = pi * (1 - through_total) + through_k.sum(-1)
        mu[..., k, :k] = through_k.sum(-2)
        top.mul_(share)
    return mu, d_mu


def _inverse_order(order):
    return sorted(range(len(order)), key=order.__getitem__)


def _marginals(elimination):
    """The marginals of an :class:`Elimination` kept with its steps, in node order."""
    mu, _ = _reverse(elimination.steps)
    return _permute(mu, _inverse_order(elimination.order))


def _hvp(elimination, v):
    """The Hessian-vector product of the log-partition along ``v``: the marginals' derivative.

    Forward mode through the saved steps and their reverse pass, so there is no autograd graph
    and no second elimination. The Hessian is symmetric, so this is also the marginals' backward.
    """
    order = elimination.order
    steps = elimination.steps
    _, d_mu = _reverse(steps, _step_tangents(steps, _permute(v.to(steps[0].pi.dtype), order)))
    return _permute(d_mu, _inverse_order(order))


_STRUCTURE = "spanning tree or arborescence"


class _MatrixTreeMarginals(torch.autograd.Function):
    """Marginals of ``(B, n, n)`` directed log-weights by the exact elimination; backward: its HVP."""

    @staticmethod
    def forward(ctx, theta, root, single_root):
        elimination = eliminate(theta, root, single_root, keep_steps=True)
        check_nonempty(elimination.log_z, _STRUCTURE)
        ctx.elimination = elimination
        ctx.save_for_backward(theta)
        return _marginals(elimination).to(theta.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_mu):
        (theta,) = ctx.saved_tensors
        absent = ~torch.isfinite(theta)
        hvp = _hvp(ctx.elimination, grad_mu.masked_fill(absent, 0))
        return hvp.to(grad_mu.dtype).masked_fill(absent, 0), None, None


class _LogPartition(torch.autograd.Function):
    """Log-partition of ``(B, n, n)`` directed log-weights; its backward is the (differentiable) marginals."""

    @staticmethod
    def forward(ctx, theta, root, single_root):
        log_z = eliminate(theta, root, single_root).log_z.to(theta.dtype)
        ctx.save_for_backward(theta, log_z)
        ctx.root, ctx.single_root = root, single_root
        return log_z

    @staticmethod
    def backward(ctx, grad):
        theta, log_z = ctx.saved_tensors
        complete_graph = directed_log_weights(torch.zeros_like(theta), ctx.root)
        marginals = lambda t: _MatrixTreeMarginals.apply(t, ctx.root, ctx.single_root)  # noqa: E731
        return log_partition_backward(grad, theta, log_z, complete_graph, marginals), None, None


def _check_args(logits, root, single_root, name="logits"):
    check_square(logits, name)
    return check_root(logits.shape[-1], root, single_root)


def _apply_directed(function, logits, root, single_root, event_dim):
    """``function`` on the read entries of ``logits``, flattened to ``(B, n, n)``; NaN elements give NaN."""
    n = logits.shape[-1]
    theta = directed_log_weights(logits, root)
    theta, nan = mask_nan_elements(theta, 2)
    out = function.apply(theta.reshape(-1, n, n), root, single_root)
    return fill_nan(out.reshape(logits.shape[: logits.dim() - 2 + event_dim]), nan, event_dim)


def arborescence_log_partition(logits: torch.Tensor, root: int = 0, single_root: bool = False) -> torch.Tensor:
    r"""Log-partition of the exponential family over arborescences (Tutte / Koo et al.).

    :param logits: ``(..., n, n)``; ``logits[..., i, j]`` scores edge ``i -> j``.
        Diagonal and the root column are ignored.
    :param int root: the root node.
    :param bool single_root: restrict to arborescences where the root has one child.
    :returns: ``A(logits)`` of shape ``logits.shape[:-2]``; differentiable, with
        gradient :func:`arborescence_marginals` (itself differentiable).
    """
    root = _check_args(logits, root, single_root)
    if logits.shape[-1] == 1:
        return zeros_in_graph(logits).sum((-2, -1))
    return _apply_directed(_LogPartition, logits, root, single_root, 0)


def arborescence_marginals(logits: torch.Tensor, root: int = 0, single_root: bool = False) -> torch.Tensor:
    r"""Edge marginals :math:`\mu_{ij} = P(i \to j \in x) = \partial A / \partial \theta_{ij}`, ``(..., n, n)``.

    Exact at every scale (the elimination of the module docstring); the backward is the exact
    Hessian-vector product of :math:`A` from the same steps. Every non-root column sums to 1; the
    root column and diagonal are 0.
    """
    root = _check_args(logits, root, single_root)
    if logits.shape[-1] == 1:
        return zeros_in_graph(logits)
    return _apply_directed(_MatrixTreeMarginals, logits, root, single_root, 2)
