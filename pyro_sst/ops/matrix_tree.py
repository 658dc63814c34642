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
accuracy whatever the condition number.

The elimination is blocked (:func:`_blocked`, the same panels as :mod:`numpyro_sst.ops.matrix_tree`):
panels of a few nodes are eliminated one node at a time on their own rows and columns, and the nodes left
take each whole panel as one batched matrix product :math:`W' = W + \Pi \Lambda` of nonnegative factors.
Weights are held as numbers in float64, each column normalised once (its scale carried as a logarithm). A
column's mass only shrinks; a batch element where some column loses more than 662 nats of scale (tight
clusters at low temperature, where float64 would flush what the result depends on; see
:func:`~sst_common.constants.linear_elimination_max_loss`) is eliminated in log space instead
(:func:`_eliminate_logarithmic`, node by node, which the exact samplers use too). The marginals are the
exact reverse pass through the steps (:func:`_undo_panel`, :func:`_reverse`; in probability units, the
steps' shares and parent probabilities kept in the input dtype) and their backward, the Hessian-vector
product of :math:`A`, is the forward-mode derivative of that pass (:func:`_panel_tangents`,
:func:`_undo_panel_tangent`, :func:`_step_tangents`), which reads what the forward's reverse pass recorded
(:class:`PanelReverse`) instead of computing it again: no inverse, no determinant, no second-order autograd.
Time :math:`O(n^3)` and saved memory :math:`O(n^3 / p)` per batch element (``p`` the panel width).

For ``single_root`` (the root has exactly one child, Koo et al. 2007) scale the root's out-edges by
:math:`s`: :math:`Z(s) = s Z_1 + s^2 Z_2 + \dots`, and the linear elimination takes the limit
:math:`s \to 0` itself (:func:`_root_in_pivot`): the product of its pivots is :math:`Z_1`, exactly. The
log-space elimination (and the samplers) scale them by :math:`s = e^{-c}` instead, so that
:math:`\log Z_1 = \log Z(s) + c` up to a relative error below :math:`e^{-60}`; ``c`` is chosen per batch
element from the spread of its finite logits (root row included), and :math:`Z_1 = 0` is detected exactly
from the same bound.

Special inputs. ``-inf`` logits are absent edges. If no tree (or arborescence)
of finite weight remains, the log-partition is ``-inf`` and the marginals,
which are undefined, raise :class:`ValueError` (so do the solvers and samplers of
:mod:`pyro_sst.ops.trees`). A NaN among the entries that are read makes that batch
element's log-partition and marginals NaN. Every batch element is computed
independently of the others. The data-dependent branches live inside custom
autograd Functions, so ``torch.jit.trace`` records them as calls and re-runs them.
"""

import functools
import math
from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from sst_common.checks import check_root
from sst_common.constants import (
    SINGLE_ROOT_EMPTY_MARGIN,
    SINGLE_ROOT_MARGIN,
    TORCH_PANEL_WIDTHS,
    linear_elimination_max_loss,
    panel_width,
)

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


#: float64 columns of the blocked elimination may lose this many nats of scale and stay exact
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
    """The log-space elimination of ``(B, n, n)`` directed log-weights, in elimination order (the root first)."""

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
    if order == sorted(order):
        return x
    return x[..., order, :][..., :, order]


def _inverse_order(order):
    return sorted(range(len(order)), key=order.__getitem__)


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


def _prepared(theta, root):
    """``(X, order)``: ``(B, n, n)`` directed log-weights in elimination order and float64."""
    order = elimination_order(theta.shape[-1], root)
    return _permute(theta.double(), order), order


def _shifted_for_single_root(X, single_root):
    """``(X, finish)``: ``(B, n, n)`` log-weights with the root's out-edges shifted for the log-space elimination of
    ``single_root`` arborescences; ``finish(log_z)`` undoes the shift on its log-partition."""
    if not single_root:
        return X, lambda log_z: log_z
    n = X.shape[-1]
    shift, smallest = _single_root_shift(X)

    def finish(log_z):
        log_z = log_z + shift
        # If Z_1 > 0 then log Z_1 >= (n - 1) * smallest; if Z_1 = 0 the shift puts the value far below.
        return log_z.masked_fill(log_z < (n - 1) * smallest - SINGLE_ROOT_EMPTY_MARGIN, -math.inf)

    return torch.cat([X[..., :1, :] - shift[..., None, None], X[..., 1:, :]], dim=-2), finish


def _eliminate_logarithmic(X, keep_steps, steps_dtype):
    """Eliminate nodes ``n - 1, ..., 1`` of ``(B, n, n)`` log-weights (root first), columns normalised in log space.

    Exact at any spread. Returns ``(log_z, steps)``.
    """
    n = X.shape[-1]
    log_scale = log_sum_exp(X, -2)
    W = X - log_scale.nan_to_num(neginf=0.0)[..., None, :]
    self_loop = torch.eye(n, dtype=torch.bool, device=X.device)
    total = torch.zeros_like(log_scale[..., 0])
    steps = []
    for k in range(n - 1, 0, -1):
        log_pi = W[..., :k, k]
        total = total + log_scale[..., k]
        old = W[..., :k, :k]
        # A path j -> k -> j is a self-loop: in no tree.
        new = torch.logaddexp(old, log_pi[..., :, None] + W[..., k, None, :k]).masked_fill(self_loop[:k, :k], -math.inf)
        log_column = log_sum_exp(new, -2)
        W = new - log_column.nan_to_num(neginf=0.0)[..., None, :]
        if keep_steps:
            share = (old - new).exp().nan_to_num(0.0)  # NaN where both are absent
            steps.append(Step(share.to(steps_dtype), log_pi.exp().to(steps_dtype), log_pi))
        log_scale = log_scale[..., :k] + log_column
    return total, steps


def eliminate(theta, root, single_root, keep_steps=False):
    r"""The log-space elimination (:class:`Elimination`) of ``(B, n, n)`` directed log-weights, in float64.

    Exact :math:`\log \pi` of every parent, however small (the samplers draw from them); the steps' shares and
    parent probabilities are kept in the dtype of ``theta``.
    """
    X, order = _prepared(theta, root)
    X, finish = _shifted_for_single_root(X, single_root)
    log_z, steps = _eliminate_logarithmic(X, keep_steps, theta.dtype)
    return Elimination(finish(log_z), steps, order)


# ------------------------------------------------------------------------------------------ the blocked elimination


def _safe_ratio(numerator, denominator):
    """``numerator / denominator``, 0 where the denominator is 0 (a weight that is absent)."""
    return torch.where(denominator > 0, numerator / denominator, 0.0)


def _share(old, new):
    """``old / new`` for float64 weights ``new = old + added >= old >= 0``, 0 where both are 0: a zero ``new`` is
    raised to the smallest subnormal, over which the zero ``old`` gives 0 (two kernels where the mask of
    :func:`_safe_ratio` takes three, in the elimination's largest loop)."""
    return old / new.clamp_min(math.ulp(0.0))


def _pad_to_panels(X, p):
    """``(B, n, n)`` log-weights padded to ``1 + P p`` nodes by leaves of the root (one in-edge of log-weight 0 from
    the root, no other edge): each is a factor 1 in every tree's weight, eliminated first."""
    n = X.shape[-1]
    N = 1 + -(-(n - 1) // p) * p
    if N == n:
        return X
    X = F.pad(X, (0, N - n, 0, N - n), value=-math.inf)
    X[..., 0, n:] = 0.0
    return X


class Panel(NamedTuple):
    r"""The elimination of one panel of ``p`` nodes ``a, ..., a + p - 1`` from ``(B, a + p, a + p)`` weights.

    Inside the panel its columns and rows are eliminated one node at a time (the last first); the nodes
    before the panel then take the whole panel as one product :math:`W' = W + \Pi \Lambda`. Lists are indexed
    by the node's place ``l`` in the panel (node ``a + l``, the ``p - l``-th eliminated).
    """

    #: ``(B, a + l)`` each step's parent distribution :math:`\pi` over the nodes left (these three lists hold
    #: ``None`` where the steps are not kept)
    pi: list
    #: ``(B, a + l, l)`` / ``(B, l, a)`` each step's share of the panel's columns / rows that was there before
    #: (``None`` for ``l = 0``, and for the rows where only the root is left)
    share_columns: list
    share_rows: list
    #: ``(B, a, p)`` the steps' parent distributions on the nodes before the panel, ``(B, p, a)`` their out-weights
    pi_rest: torch.Tensor
    lam_rest: torch.Tensor
    #: ``(B, a, a)`` the weights left on the nodes before the panel
    weights: torch.Tensor
    #: ``(B, p)`` the steps' pivots, logarithm
    log_pivots: torch.Tensor


def _has_rows(a):
    """Whether a panel starting at node ``a`` has rows into the nodes before it: not where the root alone is left
    (``a = 1``), which no edge enters."""
    return a > 1


def _root_in_pivot(q, n, single_root):
    r"""Whether the pivot of node ``q`` (of the ``n`` before padding) sums the root's weight into it.

    Always, but for ``single_root`` only where ``q`` is the last node eliminated (or a padding leaf of the root).
    The root's out-edges scaled by :math:`s \to 0`, :math:`Z(s) = s Z_1 + O(s^2)`, and at first order in
    :math:`s` the elimination leaves every other pivot without the root's weight, carries the root's row as
    :math:`w'_{rj} = w_{rj} + (w_{rq} / d_q) w_{qj}`, and ends on the pivot :math:`w'_{r1}`: the product of the
    pivots is :math:`Z_1` itself, and the root never takes a second child in the reverse pass (its parent
    probability there is 0).
    """
    return not single_root or q == 1 or q >= n


def _eliminate_panel(W, a, p, steps_dtype, keep_steps, root_in_pivot):
    """The :class:`Panel` eliminating nodes ``a + p - 1, ..., a`` of ``(B, a + p, a + p)`` (or larger) weights; with
    ``keep_steps`` the steps' parent distributions and shares, in ``steps_dtype`` (else only what the nodes left
    and the log-partition need). ``root_in_pivot(q)`` (:func:`_root_in_pivot`) says whether node ``q``'s pivot
    sums the root's weight."""
    end, has_rows = a + p, _has_rows(a)
    columns, rows = W[:, :end, a:end].clone(), W[:, a:end, :a].clone() if has_rows else None
    pis, share_columns, share_rows = [None] * p, [None] * p, [None] * p
    pi_rest, pivots = [None] * p, [None] * p
    for l in range(p - 1, -1, -1):  # noqa: E741
        q = a + l
        column = columns[:, :q, l]
        counted = root_in_pivot(q)
        pivots[l] = (column if counted else column[:, 1:]).sum(-1, keepdim=True)
        pi = _safe_ratio(column, pivots[l])
        if keep_steps:  # the parent distribution of the reverse pass: none on a root not counted
            pis[l] = (pi if counted else F.pad(pi[:, 1:], (1, 0))).to(steps_dtype)
        pi_rest[l] = pi[:, :a]  # in float64: the trailing product may rest on what steps_dtype flushes
        if l:
            old_columns = columns[:, :q, :l]
            new_columns = torch.addcmul(old_columns, pi[:, :, None], columns[:, q, None, :l])
            new_columns.diagonal(-a, 1, 2).zero_()  # a path j -> q -> j is a self-loop: in no tree
            if keep_steps:
                share_columns[l] = _share(old_columns, new_columns).to(steps_dtype)
            columns[:, :q, :l] = new_columns
        if l and has_rows:
            old_rows = rows[:, :l]
            new_rows = torch.addcmul(old_rows, pi[:, a:q, None], rows[:, l, None, :])
            if keep_steps:
                share_rows[l] = _share(old_rows, new_rows).to(steps_dtype)
            rows[:, :l] = new_rows
    # a step's row of out-weights is final once the step is taken: later steps update the rows before it
    pi_rest, lam_rest = torch.stack(pi_rest, -1), rows if has_rows else W.new_zeros(W.shape[0], p, a)
    weights = torch.baddbmm(W[:, :a, :a], pi_rest, lam_rest)
    weights.diagonal(dim1=-2, dim2=-1).zero_()
    return Panel(pis, share_columns, share_rows, pi_rest, lam_rest, weights, torch.cat(pivots, -1).log())


class PanelTangents(NamedTuple):
    """Tangents of a :class:`Panel`'s fields along the tangent of ``log W``, and that of ``log`` of its weights."""

    pi: list
    share_columns: list
    share_rows: list
    pi_rest: torch.Tensor
    lam_rest: torch.Tensor
    log_weights: torch.Tensor


def _panel_tangents(panel, W, dL, a, p):
    """The :class:`PanelTangents` of ``panel``, eliminated from ``W``, along ``dL`` (tangent of ``log W``)."""
    end, dtype, has_rows = a + p, panel.pi[0].dtype, _has_rows(a)
    d_columns = dL[:, :end, a:end].to(dtype, copy=True)
    d_rows = dL[:, a:end, :a].to(dtype, copy=True) if has_rows else None
    d_pi, d_share_columns, d_share_rows = [None] * p, [None] * p, [None] * p
    d_log_pi_rest = [None] * p
    for l in range(p - 1, -1, -1):  # noqa: E741
        q = a + l
        pi = panel.pi[l]
        d_column = d_columns[:, :q, l]
        d_log_pi = d_column - (pi * d_column).sum(-1, keepdim=True)
        d_pi[l] = pi * d_log_pi
        d_log_pi_rest[l] = d_log_pi[:, :a]
        # a new weight w' = w + pi lam mixes the tangents of its two terms by their shares
        if l:
            s_c = panel.share_columns[l]
            d_via_c = d_log_pi[:, :, None] + d_columns[:, q, None, :l]
            d_diff_c = d_columns[:, :q, :l] - d_via_c
            d_share_columns[l] = torch.addcmul(s_c, s_c, s_c, value=-1).mul_(d_diff_c)
            new_columns = torch.addcmul(d_via_c, s_c, d_diff_c, out=d_columns[:, :q, :l])
            new_columns.diagonal(-a, 1, 2).zero_()
        if l and has_rows:
            s_r = panel.share_rows[l]
            d_via_r = d_log_pi[:, a:q, None] + d_rows[:, l, None, :]
            d_diff_r = d_rows[:, :l] - d_via_r
            d_share_rows[l] = torch.addcmul(s_r, s_r, s_r, value=-1).mul_(d_diff_r)
            torch.addcmul(d_via_r, s_r, d_diff_r, out=d_rows[:, :l])
    d_pi_rest = panel.pi_rest * torch.stack(d_log_pi_rest, -1)
    # as in the elimination, a step's row is final once the step is taken
    d_lam_rest = panel.lam_rest * d_rows if has_rows else torch.zeros_like(panel.lam_rest)
    d_weights = W[:, :a, :a] * dL[:, :a, :a] + d_pi_rest @ panel.lam_rest + panel.pi_rest @ d_lam_rest
    d_log_weights = _safe_ratio(d_weights, panel.weights)
    return PanelTangents(d_pi, d_share_columns, d_share_rows, d_pi_rest, d_lam_rest, d_log_weights)


class PanelReverse(NamedTuple):
    """What undoing a :class:`Panel` computed on the way that its tangent pass reuses (:func:`_undo_panel`)."""

    #: ``(B, a, a)`` the flows :math:`G = \mu' / W'` of the trailing product, ``(B, a, p)`` :math:`G \Lambda^\top`,
    #: ``(B, p, a)`` :math:`\Pi^\top G`
    G: torch.Tensor
    G_lam: torch.Tensor
    pi_G: torch.Tensor
    #: per step ``l``: the marginals of the panel's columns ``(B, a + l, l)`` and rows ``(B, l, a)`` before the
    #: step was undone (``None`` where there are none), and ``(B, 1)`` the probability that the step's node
    #: is a leaf of the nodes before it
    columns: list
    rows: list
    rest: list


def _undo_panel(panel, W, mu, a, p):
    r"""The marginals ``(B, a + p, a + p)`` of the weights ``W`` a panel was eliminated from, given the marginals
    ``mu`` of the weights it left, and the :class:`PanelReverse` record of the pass.

    The flows :math:`G = \mu' / W'` of the trailing product split each remaining weight's marginal between the
    weight that was there (:math:`G W`) and each panel step's paths :math:`G_{ij} \pi_i \lambda_j`; summed over
    a row or a column, those are what each step's node passes on. Then the panel's own steps are undone as in
    :func:`_reverse`.
    """
    B, end, dtype, has_rows = W.shape[0], a + p, panel.pi[0].dtype, _has_rows(a)
    G = _safe_ratio(mu, panel.weights)
    G_lam, pi_G = G @ panel.lam_rest.mT, panel.pi_rest.mT @ G
    # What each step's node receives from the nodes left, by row (its column of marginals, the panel's rows padded)
    # and by column (its row of marginals to the nodes before the panel); the steps then add their own paths.
    mu_c = F.pad(panel.pi_rest * G_lam, (0, 0, 0, p)).to(dtype)
    mu_r = (panel.lam_rest * pi_G).to(dtype)
    before_c, before_r, rests = [None] * p, [None] * p, [None] * p
    for l in range(p):  # noqa: E741
        q = a + l
        column = mu_c[:, :q, l]
        if l:
            c = mu_c[:, :q, :l]
            before_c[l] = c.clone()
            through_c = before_c[l] - c.mul_(panel.share_columns[l])
            column.add_(through_c.sum(-1))
            mu_c[:, q, :l] = through_c.sum(-2)
        if l and has_rows:
            r = mu_r[:, :l]
            before_r[l] = r.clone()
            through_r = before_r[l] - r.mul_(panel.share_rows[l])
            column[:, a:].add_(through_r.sum(-1))
            mu_r[:, l].add_(through_r.sum(-2))
        rests[l] = 1 - column.sum(-1, keepdim=True)
        column.addcmul_(panel.pi[l], rests[l])
    out = W.new_empty(B, end, end, dtype=dtype)
    out[:, :a, :a], out[:, a:, :a], out[:, :, a:] = G * W[:, :a, :a], mu_r, mu_c
    return out, PanelReverse(G, G_lam, pi_G, before_c, before_r, rests)


def _undo_panel_tangent(panel, reverse, tangents, W, dL, d_mu, a, p):
    """The tangent of :func:`_undo_panel`'s marginals along ``dL`` (tangent of ``log W``), given ``d_mu``, that of
    the marginals of the weights left, the pass's :class:`PanelReverse` record and the panel's
    :class:`PanelTangents`."""
    dtype, has_rows = panel.pi[0].dtype, _has_rows(a)
    G, G_lam, pi_G = reverse.G, reverse.G_lam, reverse.pi_G
    dG = _safe_ratio(d_mu, panel.weights) - G * tangents.log_weights
    d_row_flow = tangents.pi_rest * G_lam + panel.pi_rest * (dG @ panel.lam_rest.mT + G @ tangents.lam_rest.mT)
    d_column_flow = tangents.lam_rest * pi_G + panel.lam_rest * (tangents.pi_rest.mT @ G + panel.pi_rest.mT @ dG)
    d_mu_c, d_mu_r = F.pad(d_row_flow, (0, 0, 0, p)).to(dtype), d_column_flow.to(dtype)
    for l in range(p):  # noqa: E741
        q = a + l
        d_column = d_mu_c[:, :q, l]
        if l:
            dc = d_mu_c[:, :q, :l]
            d_kept_c = torch.addcmul(dc * panel.share_columns[l], reverse.columns[l], tangents.share_columns[l])
            d_through_c = dc - d_kept_c
            d_column.add_(d_through_c.sum(-1))
            dc.copy_(d_kept_c)
            d_mu_c[:, q, :l] = d_through_c.sum(-2)
        if l and has_rows:
            dr = d_mu_r[:, :l]
            d_kept_r = torch.addcmul(dr * panel.share_rows[l], reverse.rows[l], tangents.share_rows[l])
            d_through_r = dr - d_kept_r
            d_column[:, a:].add_(d_through_r.sum(-1))
            d_mu_r[:, l].add_(d_through_r.sum(-2))
            dr.copy_(d_kept_r)
        d_total = d_column.sum(-1, keepdim=True)
        d_column.addcmul_(tangents.pi[l], reverse.rest[l]).addcmul_(panel.pi[l], d_total, value=-1)
    d_out = W.new_empty(W.shape[0], a + p, a + p, dtype=dtype)
    d_out[:, :a, :a], d_out[:, a:, :a], d_out[:, :, a:] = (dG + G * dL[:, :a, :a]) * W[:, :a, :a], d_mu_r, d_mu_c
    return d_out


class Blocked(NamedTuple):
    """The blocked elimination of ``(B, n, n)`` log-weights (:func:`_blocked`), kept for its reverse passes."""

    #: ``(B,)`` the log-partition
    log_z: torch.Tensor
    #: ``(B,)`` where no column lost more than :data:`MAX_LOSS` nats (elsewhere the log-space elimination serves)
    exact: torch.Tensor
    #: the normalised weights ``(B, N, N)``, padded to ``N = 1 + P p`` nodes
    normalised: torch.Tensor
    #: the :class:`Panel` s, in elimination order (the last nodes first)
    panels: list

    def panel_inputs(self):
        """The weights each panel was eliminated from: the normalised ones, then each panel's weights left."""
        return [self.normalised] + [panel.weights for panel in self.panels[:-1]]

    def panel_starts(self):
        """``(starts, p)``: each panel's first node, in elimination order, and the panel width."""
        p = self.panels[0].log_pivots.shape[-1]
        return range(self.normalised.shape[-1] - p, 0, -p), p


def _blocked(X, single_root, steps_dtype, keep_steps):
    r"""The blocked elimination (:class:`Blocked`) of ``(B, n, n)`` float64 log-weights in elimination order.

    The same elimination as :func:`_eliminate_logarithmic`, panel by panel (:class:`Panel`, ``p`` nodes a
    panel, :func:`~sst_common.constants.panel_width`), on weights normalised once per column: every pivot and
    weight stays a sum of positive terms, and a column's mass only shrinks, so the largest loss of scale is
    the largest :math:`-\log` of a pivot in those units.
    """
    n = X.shape[-1]
    p = panel_width(n, TORCH_PANEL_WIDTHS)
    X = _pad_to_panels(X, p)
    N = X.shape[-1]
    log_scale = log_sum_exp(X, -2)
    normalised = weights = (X - log_scale.nan_to_num(neginf=0.0)[..., None, :]).exp()
    panels = []
    root_in_pivot = functools.partial(_root_in_pivot, n=n, single_root=single_root)
    for a in range(N - p, 0, -p):
        panels.append(_eliminate_panel(weights, a, p, steps_dtype, keep_steps, root_in_pivot))
        weights = panels[-1].weights
    log_pivots = torch.cat([panel.log_pivots for panel in panels], -1)
    log_z = log_pivots.sum(-1) + log_scale[:, 1:].sum(-1)
    exact = torch.isfinite(log_z) & (-log_pivots.amin(-1) <= MAX_LOSS)
    return Blocked(log_z, exact, normalised, panels)


def _blocked_reverse(blocked, n):
    """Marginals ``(B, n, n)`` of a :class:`Blocked` elimination (elimination order), and the :class:`PanelReverse`
    record of each panel's pass (for :func:`_blocked_reverse_tangent`)."""
    panels, weights = blocked.panels, blocked.panel_inputs()
    starts, p = blocked.panel_starts()
    mu = weights[0].new_zeros(weights[0].shape[0], 1, 1, dtype=panels[0].pi[0].dtype)
    records = [None] * len(panels)
    for i in range(len(panels) - 1, -1, -1):
        mu, records[i] = _undo_panel(panels[i], weights[i], mu, starts[i], p)
    return mu[:, :n, :n], records


def _blocked_reverse_tangent(blocked, records, n, dX):
    """The tangent of :func:`_blocked_reverse`'s marginals along ``dX`` (a tangent of the log-weights, elimination
    order): the Hessian-vector product, from the panels' tangents and the pass's ``records``."""
    panels, weights = blocked.panels, blocked.panel_inputs()
    starts, p = blocked.panel_starts()
    N = weights[0].shape[-1]
    dLs, tangents = [F.pad(dX, (0, N - n, 0, N - n))], []
    for a, panel, W in zip(starts, panels, weights, strict=False):
        tangents.append(_panel_tangents(panel, W, dLs[-1], a, p))
        dLs.append(tangents[-1].log_weights)
    d_mu = weights[0].new_zeros(weights[0].shape[0], 1, 1, dtype=panels[0].pi[0].dtype)
    for i in range(len(panels) - 1, -1, -1):
        d_mu = _undo_panel_tangent(panels[i], records[i], tangents[i], weights[i], dLs[i], d_mu, starts[i], p)
    return d_mu[:, :n, :n]


class ExactElimination(NamedTuple):
    """The exact elimination of ``(B, n, n)`` directed log-weights: blocked, else (per element) in log space."""

    #: ``(B,)`` the log-partition
    log_z: torch.Tensor
    #: the :class:`Blocked` elimination of every batch element
    blocked: Blocked
    #: ``(R,)`` the batch elements eliminated in log space instead, and their :class:`Step` s (if kept)
    rest: torch.Tensor
    steps: list
    #: ``order[m]`` is the node at elimination position ``m``
    order: list


def eliminate_exactly(theta, root, single_root, keep_steps=False):
    """The :class:`ExactElimination` of ``(B, n, n)`` directed log-weights, in float64."""
    X, order = _prepared(theta, root)
    blocked = _blocked(X, single_root, theta.dtype, keep_steps)
    rest = (~blocked.exact).nonzero().squeeze(-1)
    log_z, steps = blocked.log_z, []
    if rest.numel():
        shifted, finish = _shifted_for_single_root(X[rest], single_root)
        log_z_rest, steps = _eliminate_logarithmic(shifted, keep_steps, X.dtype)
        log_z = log_z.index_put((rest,), finish(log_z_rest))
    return ExactElimination(log_z, blocked, rest, steps, order)


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


def _marginals(elimination):
    """The marginals of an :class:`ExactElimination`, in node order, and the records of the blocked reverse pass
    that :func:`_hessian_product` reuses."""
    order, rest = elimination.order, elimination.rest
    mu, records = _blocked_reverse(elimination.blocked, len(order))
    if rest.numel():
        mu = mu.index_put((rest,), _reverse(elimination.steps)[0].to(mu.dtype))
    return _permute(mu, _inverse_order(order)), records


def _hessian_product(elimination, records, v):
    """The Hessian-vector product of the log-partition along ``v``, from an :class:`ExactElimination` and the records
    of its marginals' reverse pass (:func:`_marginals`).

    The Hessian is symmetric, so it is also the marginals' backward. It is the forward-mode derivative of the
    reverse passes, from the saved elimination: no autograd graph and no second elimination.
    """
    order, rest = elimination.order, elimination.rest
    dX = _permute(v.double(), order)
    d_mu = _blocked_reverse_tangent(elimination.blocked, records, len(order), dX)
    if rest.numel():
        d_mu_rest = _reverse(elimination.steps, _step_tangents(elimination.steps, dX[rest]))[1]
        d_mu = d_mu.index_put((rest,), d_mu_rest.to(d_mu.dtype))
    return _permute(d_mu, _inverse_order(order))


_STRUCTURE = "spanning tree or arborescence"


class _MatrixTreeMarginals(torch.autograd.Function):
    """Marginals of ``(B, n, n)`` directed log-weights by the exact elimination; backward: its HVP."""

    @staticmethod
    def forward(ctx, theta, root, single_root):
        elimination = eliminate_exactly(theta, root, single_root, keep_steps=True)
        check_nonempty(elimination.log_z, _STRUCTURE)
        mu, records = _marginals(elimination)
        if ctx.needs_input_grad[0]:
            ctx.elimination, ctx.records = elimination, records
        ctx.save_for_backward(theta)
        return mu.to(theta.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_mu):
        (theta,) = ctx.saved_tensors
        absent = ~torch.isfinite(theta)
        hvp = _hessian_product(ctx.elimination, ctx.records, grad_mu.masked_fill(absent, 0))
        return hvp.to(grad_mu.dtype).masked_fill(absent, 0), None, None


class _LogPartition(torch.autograd.Function):
    """Log-partition of ``(B, n, n)`` directed log-weights; its backward is the (differentiable) marginals."""

    @staticmethod
    def forward(ctx, theta, root, single_root):
        log_z = eliminate_exactly(theta, root, single_root).log_z.to(theta.dtype)
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
