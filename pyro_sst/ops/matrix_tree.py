r"""Matrix-tree theorems: log-partition functions and edge marginals.

Every function here works on *directed* log-weights ``theta[..., i, j]`` for the
edge ``i -> j`` (``i`` is the parent of ``j``) and an arborescence rooted at
``root``. Undirected spanning trees are arborescences of the symmetric digraph
rooted at node 0 (each tree has exactly one orientation away from the root, with
the same weight), so :mod:`pyro_sst.ops.trees` builds on the same code.

Tutte's directed matrix-tree theorem: with :math:`w_{ij} = e^{\theta_{ij}}` and
the in-degree Laplacian :math:`L = \operatorname{diag}(\mathbf{1}^\top W) - W`,

.. math::

    A(\theta) = \log \sum_{x} e^{\langle \theta, x \rangle}
              = \log \det L_{\hat r \hat r},

where :math:`L_{\hat r \hat r}` drops the root's row and column. Koo et al.
(2007) give the single-root variant (the root has exactly one child): replace
the first non-root row of the non-root Laplacian by the root's out-weights.

Numerics. Columns are scaled by their total in-weight, so the matrix that is
inverted is :math:`M = \mathcal{A}^*(P) + e_r e_r^\top` with the column softmax
:math:`P_{ij} = e^{\theta_{ij}} / \sum_k e^{\theta_{kj}}` (unit diagonal, no
overflow), and

.. math::

    A = \log\det M + \sum_{j \ne r} \operatorname{logsumexp}_i \theta_{ij},\qquad
    \mu_{ij} = P_{ij}\, \mathcal{A}(B^\top)_{ij},\quad B = M^{-1},

where :math:`\mathcal{A}` is the adjoint of the linear map
:math:`\mathcal{A}^*` that builds the Laplacian (for Tutte,
:math:`\mathcal{A}(X)_{ij} = X_{jj} - [i \ne r] X_{ij}`). The marginals have an
explicit backward (a Hessian-vector product of :math:`A`, two matrix products),
so no double backward through ``slogdet`` is ever needed.

When weights spread so far that :math:`M` is singular in floating point (a
cluster of nodes joined by edges :math:`e^{60}` times heavier than its links to
the rest, the common case for :math:`U / t` at low temperature), the inverse is
meaningless. A float32 element is first retried with a float64 inverse; what
still fails falls back to an exact log-space Gaussian elimination (Kron
reduction, the GTH trick): eliminating node :math:`k` adds
:math:`w_{ik} w_{kj} / d_k` to every remaining weight, a sum of positive terms with
no cancellation, and the log-determinant is the sum of the log pivots
:math:`\log d_k`. Its marginals come from an explicit reverse pass in probability
units (see :func:`_reverse`) and their backward from the forward-mode derivative
of that pass: :math:`O(n^3)` time and saved memory, no autograd graph.
For ``single_root`` the root's
out-edges are scaled by :math:`s = e^{-c}`, so that
:math:`Z(s) = s Z_1 + s^2 Z_2 + \dots` and :math:`\log Z_1 = \log Z(s) + c` up to a
relative error below :math:`e^{-60}`; ``c`` is chosen per batch element from the
spread of its finite logits (root row included), and :math:`Z_1 = 0` is detected
exactly from the same bound.

Special inputs. ``-inf`` logits are absent edges. If no tree (or arborescence)
of finite weight remains, the log-partition is ``-inf`` and the marginals,
which are undefined, raise :class:`ValueError` (so do the solvers and samplers of
:mod:`pyro_sst.ops.trees`). A NaN among the entries that are read makes that batch
element's log-partition and marginals NaN. Every batch element is computed
independently of the others. The data-dependent branches live inside custom
autograd Functions, so ``torch.jit.trace`` records them as calls and re-runs them.
"""

import math

import torch
from torch.autograd.function import once_differentiable

from sst_common.checks import check_root

from .logspace import check_nonempty, fill_nan, log_sum_exp, mask_nan_elements, zeros_in_graph
from .validation import check_square

__all__ = [
    "arborescence_log_partition",
    "arborescence_marginals",
    "directed_log_weights",
    "laplacian",
]


def laplacian(weights):
    r"""In-degree Laplacian :math:`L = \operatorname{diag}(\mathbf 1^\top W) - W`.

    ``weights[..., i, j]`` is the weight of edge ``i -> j``; the diagonal is
    ignored. For a symmetric ``weights`` this is the usual graph Laplacian.
    """
    n = weights.shape[-1]
    eye = torch.eye(n, dtype=torch.bool, device=weights.device)
    weights = weights.masked_fill(eye, 0)
    return torch.diag_embed(weights.sum(-2)) - weights


def directed_log_weights(logits, root):
    """Directed log-weights with self-loops and edges into ``root`` set to -inf."""
    n = logits.shape[-1]
    idx = torch.arange(n, device=logits.device)
    excluded = (idx[:, None] == idx) | (idx == root)
    return logits.masked_fill(excluded, -float("inf"))


def _anchor(root):
    """The non-root node whose Laplacian row Koo et al. replace by root weights."""
    return 1 if root == 0 else 0


def _masks(n, root, device):
    idx = torch.arange(n, device=device)
    not_root = idx != root
    not_anchor = idx != _anchor(root)
    return not_root, not_anchor


def _columns_and_diagonal(x, columns):
    """The column indices ``x`` holds (all by default) and the ``(n, c)`` mask of their diagonal entries."""
    n = x.shape[-2]
    rows = torch.arange(n, device=x.device)
    columns = rows if columns is None else columns
    return columns, rows[:, None] == columns


def _laplacian_map(Q, root, single_root, columns=None):
    r"""The linear map :math:`\mathcal{A}^*` from edge weights to the Laplacian minor.

    Rows/columns of the root are left zero (the caller puts 1 at ``(root, root)``). Column ``j``
    of the result depends on column ``j`` of ``Q`` alone, so ``Q`` may hold only the columns
    ``columns`` (``(..., n, c)``; all ``n`` by default) and the result holds the same ones.
    """
    not_root, not_anchor = _masks(Q.shape[-2], root, Q.device)
    columns, diagonal = _columns_and_diagonal(Q, columns)
    if not single_root:
        return torch.where(diagonal, Q.sum(-2, keepdim=True), 0) - Q * not_root[:, None]
    Q_nonroot = Q * not_root[:, None]
    M = torch.where(diagonal & not_anchor[columns], Q_nonroot.sum(-2, keepdim=True), 0)
    M = M - Q_nonroot * not_anchor[:, None]
    return M + torch.where(~not_anchor[:, None], Q[..., root : root + 1, :], 0)


def _laplacian_adjoint(X, root, single_root, columns=None):
    r"""The adjoint :math:`\mathcal{A}`: ``<X, A*(Q)> == <A(X), Q>`` for every ``Q``.

    As for :func:`_laplacian_map`, ``X`` may hold only the columns ``columns``.
    """
    not_root, not_anchor = _masks(X.shape[-2], root, X.device)
    columns, _ = _columns_and_diagonal(X, columns)
    diag = X.gather(-2, columns.expand(X.shape[:-2] + (1, X.shape[-1])))
    if not single_root:
        return diag - X * not_root[:, None]
    a = _anchor(root)
    out = (diag * not_anchor[columns] - X * (not_root & not_anchor)[:, None]) * not_root[:, None]
    return torch.where(not_root[:, None], out, X[..., a : a + 1, :])


def _scaled_minor(theta, root, single_root):
    """Column softmax ``P``, the column log-normalisers and the scaled minor ``M``."""
    n = theta.shape[-1]
    idx = torch.arange(n, device=theta.device)
    root_col = idx == root
    # The root column is all -inf; give it finite values so softmax stays NaN-free.
    log_norm = theta.masked_fill(root_col, 0).logsumexp(-2)
    P = (theta - log_norm[..., None, :]).exp().masked_fill(root_col, 0)
    log_norm = log_norm.masked_fill(root_col, 0)
    E_rr = (root_col[:, None] & root_col).to(theta.dtype)
    M = _laplacian_map(P, root, single_root) + E_rr
    return P, log_norm, M


def _well_conditioned(M, B, info, out_dtype):
    """Batch mask of inverses that can be trusted: condition number below ``eps_out^(1/2) / eps``.

    ``eps`` is the working precision and ``eps_out`` that of the result, so a float64
    re-solve of float32 input accepts condition numbers up to ~1e12 (float32 itself: ~3e3)
    (the first-order error bound ``cond * eps`` stays below ``eps_out^(1/2)``).
    """
    limit = torch.finfo(out_dtype).eps ** 0.5 / torch.finfo(M.dtype).eps
    norm_m = M.abs().sum(-1).amax(-1)
    norm_b = B.abs().sum(-1).amax(-1)
    cond = norm_m * norm_b
    return (info == 0) & torch.isfinite(cond) & (cond < limit)


def _scaled_inverse(theta, root, single_root, out_dtype=None):
    """``P``, column log-normalisers, ``M``, ``B = M^{-1}`` and the mask of trustworthy elements."""
    P, log_norm, M = _scaled_minor(theta, root, single_root)
    B, info = torch.linalg.inv_ex(M)
    return P, log_norm, M, B, _well_conditioned(M, B, info, out_dtype or theta.dtype)


def _eliminate(theta, root, single_root, keep_steps=False):
    """Log-space Kron reduction of ``(B, n, n)`` directed log-weights (float64).

    Returns ``(log_z, steps, order)``; with ``keep_steps``, ``steps`` holds per eliminated
    node what the reverse pass needs: the share of every reduced weight that was already
    there (not created by the path through the node) and the node's parent distribution
    ``pi``. ``order`` puts the root first.
    """
    n = theta.shape[-1]
    order = [root] + [i for i in range(n) if i != root]
    X = theta.double()[..., order, :][..., :, order]
    shift = X.new_zeros(X.shape[:-2])
    if single_root:
        # Root edges scaled by s = e^{-shift}: Z(s) = s Z_1 + s^2 Z_2 + ...  Swapping a root edge for an
        # edge between two root subtrees bounds Z_{k+1} / Z_k by n^2 e^{spread} on a complete graph; with
        # absent edges only the tree count bounds it: Z_{>1} / Z_1 <= n^n e^{(n-1) spread} when Z_1 > 0.
        finite = torch.isfinite(X)
        largest = X.masked_fill(~finite, -math.inf).amax((-2, -1))
        smallest = X.masked_fill(~finite, math.inf).amin((-2, -1))
        spread = torch.where(finite.any((-2, -1)), largest - smallest, torch.zeros_like(largest))
        complete = finite.sum((-2, -1)) == (n - 1) ** 2
        log_n = math.log(n)
        shift = torch.where(complete, spread + 2 * log_n, (n - 1) * spread + n * log_n) + 60.0
        X = torch.cat([X[..., :1, :] - shift[..., None, None], X[..., 1:, :]], dim=-2)
    total = X.new_zeros(X.shape[:-2])
    steps = []
    for k in range(n - 1, 0, -1):
        into_k = X[..., :k, k]
        log_pivot = log_sum_exp(into_k, -1)
        total = total + log_pivot
        # A zero pivot (no tree) leaves every into_k at -inf: keep -inf - (-inf) from making NaN.
        log_pi = into_k - torch.where(torch.isfinite(log_pivot), log_pivot, 0)[..., None]
        old = X[..., :k, :k]
        X = torch.logaddexp(old, log_pi[..., :, None] + X[..., k, None, :k])
        if keep_steps:
            steps.append(((old - X).exp_().nan_to_num_(0.0), log_pi.exp()))  # share: NaN where both are absent
    log_z = total + shift
    if single_root:
        # If Z_1 > 0 then log Z_1 >= (n - 1) * smallest; if Z_1 = 0 the bound above puts the value 60 below.
        log_z = log_z.masked_fill(log_z < (n - 1) * smallest - 30.0, -math.inf)
    return log_z, steps, order


def _step_tangents(steps, dX):
    """Directional derivatives of each step's ``(share, pi)`` along ``dX`` (log-weights in elimination order)."""
    tangents = []
    for share, pi in steps:
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
    first_pi = steps[0][1]
    n = first_pi.shape[-1] + 1
    mu = first_pi.new_zeros(first_pi.shape[:-1] + (n, n))
    d_mu = None if tangents is None else torch.zeros_like(mu)
    for i in range(len(steps) - 1, -1, -1):
        share, pi = steps[i]
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


def _permute(x, order):
    return x[..., order, :][..., :, order]


def _elimination_marginals(theta, root, single_root):
    """Log-partition, exact marginals and the elimination state of ``(B, n, n)`` directed log-weights (float64).

    The state (the steps, the elimination order and its inverse) serves :func:`_elimination_hvp`.
    """
    log_z, steps, order = _eliminate(theta, root, single_root, keep_steps=True)
    mu, _ = _reverse(steps)
    inverse = sorted(range(len(order)), key=order.__getitem__)
    return log_z, _permute(mu, inverse), (steps, order, inverse)


def _elimination_hvp(elimination, v):
    """The Hessian-vector product of the log-partition: the marginals' derivative along ``v``.

    Forward mode through the saved steps of :func:`_elimination_marginals` and its reverse pass,
    so there is no autograd graph and no second elimination.
    """
    steps, order, inverse = elimination
    _, d_mu = _reverse(steps, _step_tangents(steps, _permute(v.double(), order)))
    return _permute(d_mu, inverse)


_STRUCTURE = "spanning tree or arborescence"


def _inverse_marginals(theta, root, single_root, out_dtype=None):
    """``(mu, P, B, ok)`` by the explicit inverse formula; ``mu`` and ``B`` are zero where ``ok`` fails."""
    P, _, _, B, ok = _scaled_inverse(theta, root, single_root, out_dtype)
    B = torch.where(ok[..., None, None], B, 0)
    mu = torch.where(ok[..., None, None], P * _laplacian_adjoint(B.mT, root, single_root), 0)
    return mu, P, B, ok


def _inverse_hvp(v, P, B, ok, root, single_root):
    """The Hessian-vector product of the log-partition on the inverse path (zero where ``ok`` fails).

    The Hessian is symmetric, so this forward-mode derivative of the marginals along ``v`` is also
    their backward. Through ``mu = P * A(B^T)``: ``dP = P * (v - column mean of v under P)``,
    ``dM = A*(dP)`` and ``dB^T = -B^T dM^T B^T``. Centring ``dP`` drops the column scalings that ``mu``
    is invariant to; without it they cancel only in exact arithmetic (the error grew with the
    condition number: 8e-5 at a logit spread of 40 in float64, against 5e-7 now).
    """
    Bt = B.mT
    dP = P * (v - (P * v).sum(-2, keepdim=True))
    dBt = -Bt @ _laplacian_map(dP, root, single_root).mT @ Bt
    hvp = dP * _laplacian_adjoint(Bt, root, single_root) + P * _laplacian_adjoint(dBt, root, single_root)
    return torch.where(ok[..., None, None], hvp, 0)


def _by_inverse_tiers(theta, direct):
    """``direct(theta, out_dtype) -> (value, ok, state)`` in the input's dtype, then in float64 where rejected.

    Returns the values (wrong where still rejected), the tiers ``[(index or None, state)]`` and the
    indices of the elements that no inverse could be trusted for (they need the elimination).
    """
    value, ok, state = direct(theta, theta.dtype)
    tiers = [(None, state)]
    rest = (~ok).nonzero().squeeze(-1)
    if rest.numel() and theta.dtype != torch.float64:
        value64, ok64, state64 = direct(theta[rest].double(), theta.dtype)
        value[rest] = value64.to(value.dtype)
        tiers.append((rest, state64))
        rest = rest[~ok64]
    return value, tiers, rest


class _MatrixTreeMarginals(torch.autograd.Function):
    """Marginals of ``(B, n, n)`` directed log-weights, each batch element by the cheapest exact path.

    1. The explicit inverse in the input's dtype, where its condition test passes;
    2. for float32 input, the float64 inverse of the rejected elements (on a CPU it costs
       about as much as float32, and it is trusted up to condition numbers ~1e12);
    3. log-space elimination with its explicit reverse pass for the rest.

    The backward is the explicit Hessian-vector product on the inverse paths and the
    forward-mode derivative of the elimination's reverse pass on the other elements.
    """

    @staticmethod
    def forward(ctx, theta, root, single_root):
        def direct(t, out_dtype):
            state = _inverse_marginals(t, root, single_root, out_dtype)
            return state[0], state[-1], state

        mu, ctx.tiers, rest = _by_inverse_tiers(theta, direct)
        ctx.rest = rest
        if rest.numel():
            bad = theta[rest]
            log_z, mu_bad, ctx.elimination = _elimination_marginals(bad, root, single_root)
            check_nonempty(log_z, _STRUCTURE)
            mu[rest] = mu_bad.to(mu.dtype).masked_fill(~torch.isfinite(bad), 0)
        ctx.save_for_backward(theta)
        ctx.root, ctx.single_root = root, single_root
        return mu

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_mu):
        (theta,) = ctx.saved_tensors
        root, single_root, rest = ctx.root, ctx.single_root, ctx.rest
        (_, whole), *retried = ctx.tiers
        grad = _inverse_hvp(grad_mu, *whole[1:], root, single_root)
        for index, tier in retried:
            ok = tier[-1]
            hvp = _inverse_hvp(grad_mu[index].to(tier[0].dtype), *tier[1:], root, single_root)
            grad[index[ok]] = hvp[ok].to(grad.dtype)
        if rest.numel():
            bad = theta[rest]
            hvp = _elimination_hvp(ctx.elimination, grad_mu[rest].masked_fill(~torch.isfinite(bad), 0))
            grad[rest] = hvp.to(grad.dtype).masked_fill(~torch.isfinite(bad), 0)
        return grad, None, None


def _determinant_log_partition(theta, root, single_root, out_dtype=None):
    """Log-partition by ``slogdet`` of the scaled minor, and the mask of elements where it can be trusted."""
    _, log_norm, M, _, ok = _scaled_inverse(theta, root, single_root, out_dtype)
    sign, logabsdet = torch.linalg.slogdet(M)
    return logabsdet + log_norm.sum(-1), ok & (sign > 0)


class _LogPartition(torch.autograd.Function):
    """Log-partition of ``(B, n, n)`` directed log-weights (same tiers as the marginals); its backward is the
    (differentiable) marginals."""

    @staticmethod
    def forward(ctx, theta, root, single_root):
        def direct(t, out_dtype):
            return *_determinant_log_partition(t, root, single_root, out_dtype), None

        log_z, _, rest = _by_inverse_tiers(theta, direct)
        if rest.numel():
            log_z[rest] = _eliminate(theta[rest], root, single_root)[0].to(log_z.dtype)
        ctx.save_for_backward(theta)
        ctx.root, ctx.single_root = root, single_root
        return log_z

    @staticmethod
    def backward(ctx, grad):
        (theta,) = ctx.saved_tensors
        return grad[..., None, None] * _MatrixTreeMarginals.apply(theta, ctx.root, ctx.single_root), None, None


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


def arborescence_log_partition(logits, root=0, single_root=False):
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


def arborescence_marginals(logits, root=0, single_root=False):
    r"""Edge marginals :math:`\mu_{ij} = P(i \to j \in x) = \partial A / \partial \theta_{ij}`.

    Explicit inverse formula with an explicit backward; ill-conditioned batch
    elements fall back to exact log-space elimination (see module docstring).
    Every non-root column sums to 1; the root column and diagonal are 0.
    """
    root = _check_args(logits, root, single_root)
    if logits.shape[-1] == 1:
        return zeros_in_graph(logits)
    return _apply_directed(_MatrixTreeMarginals, logits, root, single_root, 2)
