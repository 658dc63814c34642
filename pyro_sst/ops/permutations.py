r"""Permutations: log-domain Sinkhorn, maximum assignment, and the log-permanent.

Value layout (shared with :mod:`numpyro_sst`): a permutation of ``n`` is an
``(..., n, n)`` 0/1 matrix with ``x[i, j] = 1`` iff row ``i`` is assigned to
column ``j``; its relaxations are doubly stochastic matrices.

The exponential family over permutations, :math:`q(x) \propto e^{\langle\theta, x\rangle}`,
has log-partition :math:`A(\theta) = \log \operatorname{perm}(e^{\theta})`, which is #P-hard.
:func:`log_permanent` computes it exactly for ``n <= 12`` (a log-space DP over column subsets, the
cost of Ryser's formula without its cancellations) and by the Bethe
approximation beyond (a lower bound within a factor :math:`2^{n/2}`).
"""

import functools
import math

import numpy as np
import torch

from sst_common import enumeration
from sst_common.assignment import linear_sum_assignments
from sst_common.checks import BACKWARDS, EXACT_MAX_N, check_sinkhorn_args, no_assignment_message

from .logspace import (
    fill_nan,
    gradient_marginals,
    log_sum_exp,
    mask_nan_elements,
    nan_in_nan_out,
    program_log_partition,
)
from .tracing import opaque_call
from .validation import check_square

__all__ = [
    "BACKWARDS",
    "EXACT_MAX_N",
    "assignment_exists",
    "bethe_log_permanent",
    "enumerate_permutations",
    "log_permanent",
    "max_assignment",
    "permutation_marginals",
    "sinkhorn",
]

_STRUCTURE = "permutation"


def _sinkhorn_iterations(log_alpha, n_iters, tol):
    """Alternate row and column log-normalisations, each batch element until its row sums are within ``tol`` of 1.

    A converged element is frozen, so its result does not depend on its neighbours in the
    batch. The loop stops once every element has converged, except under ``torch.jit.trace``,
    where it runs all ``n_iters`` iterations (the frozen elements make that the same result).
    """
    # The row log-sums that measure the residual are the ones the next row normalisation divides by.
    row_log_sums = torch.logsumexp(log_alpha, -1, keepdim=True)
    log_p = log_alpha
    active = torch.ones(log_alpha.shape[:-2] + (1, 1), dtype=torch.bool, device=log_alpha.device)
    for _ in range(n_iters):
        step = log_p - row_log_sums
        step = step - torch.logsumexp(step, -2, keepdim=True)
        log_p = torch.where(active, step, log_p)
        row_log_sums = torch.where(active, torch.logsumexp(log_p, -1, keepdim=True), row_log_sums)
        residual = (row_log_sums.detach().squeeze(-1).exp() - 1).abs().amax(-1)
        active = active & (residual > tol)[..., None, None]
        if not torch.jit.is_tracing() and not bool(active.any()):
            break
    return log_p, residual


def _sinkhorn_newton(log_alpha, max_steps, tol):
    r"""The Sinkhorn fixed point by Newton's method on the dual (float64 inside), each element until ``tol``.

    With columns normalised for row potentials :math:`f`, the dual
    :math:`\psi(f) = \sum_j \operatorname{logsumexp}_i (X_{ij} + f_i) - \sum_i f_i` is convex with
    gradient :math:`r - 1` (the row sums) and Hessian :math:`\operatorname{diag}(r) - P P^\top`, singular
    along the gauge :math:`f + c`. Each step solves
    :math:`(\operatorname{diag}(r) - P P^\top + \tfrac1n 1 1^\top + \|r - 1\|_\infty^2 I)\,\delta = 1 - r`
    (the damping vanishes at the solution, so convergence stays quadratic) with a backtracking
    (Armijo) line search on :math:`\psi`; where the solve breaks down, a plain sweep. Where plain
    Sinkhorn needs thousands of sweeps near a vertex (low temperature), this takes 5-50 steps of one
    ``n x n`` solve each.
    """
    X = log_alpha.double()
    n = X.shape[-1]
    f = -torch.logsumexp(X, -1)
    gauge = torch.full((n, n), 1.0 / n, dtype=X.dtype, device=X.device)

    def dual(f):
        return torch.logsumexp(X + f[..., :, None], -2).sum(-1) - f.sum(-1)

    for step in range(max_steps + 1):
        log_p = X + f[..., :, None]
        column_log_sums = torch.logsumexp(log_p, -2, keepdim=True)
        log_p = log_p - column_log_sums
        p = log_p.exp()
        rows = p.sum(-1)
        residual = (rows - 1).abs().amax(-1)
        active = residual > tol  # NaN elements are never active
        if not bool(active.any()) or step == max_steps:
            break
        hessian = torch.diag_embed(rows + residual[..., None] ** 2) - p @ p.mT + gauge
        delta = -torch.linalg.solve_ex(hessian, (rows - 1)[..., None])[0].squeeze(-1)
        slope = ((rows - 1) * delta).sum(-1)
        base, alpha = column_log_sums.sum((-2, -1)) - f.sum(-1), torch.ones_like(residual)  # dual(f)
        rounding = 8 * torch.finfo(X.dtype).eps * base.abs()  # near the optimum the decrease is below rounding
        for _ in range(40):
            accepted = dual(f + alpha[..., None] * delta) <= base + 1e-4 * alpha * slope + rounding
            if bool(accepted.all()):
                break
            alpha = torch.where(accepted, alpha, alpha / 2)
        # Where the solve broke down (a numerically singular system) take a plain Sinkhorn sweep instead.
        newton = f + alpha[..., None] * delta
        sweep = f - rows.log()
        f = torch.where(active[..., None], torch.where(accepted[..., None], newton, sweep), f)
    return log_p.to(log_alpha.dtype), residual.to(log_alpha.dtype)


class _ImplicitSinkhorn(torch.autograd.Function):
    r"""Sinkhorn with the backward of its fixed point (memory independent of the iteration count).

    At the fixed point :math:`P = \mathrm{diag}(e^f)\, e^X \mathrm{diag}(e^g)` with unit
    row and column sums. Differentiating those constraints gives, for an incoming
    gradient :math:`G`, with :math:`a = (P \odot G) 1`, :math:`b = (P \odot G)^\top 1`,

    .. math::

        (I - P P^\top + \tfrac1n 1 1^\top)\,\lambda = a - P b,\qquad
        \kappa = b - P^\top \lambda,\qquad
        \nabla_X = P \odot (G - \lambda 1^\top - 1 \kappa^\top).

    (The rank-one term fixes the gauge :math:`f + c, g - c`; the right-hand side
    is orthogonal to it. The system is solved by a symmetric pseudo-inverse, since
    it becomes singular as :math:`P` approaches a permutation.)
    """

    @staticmethod
    def forward(ctx, log_alpha, n_iters, tol):
        log_p, residual = _sinkhorn_newton(log_alpha, n_iters, tol)
        p = log_p.exp()
        ctx.save_for_backward(p)
        ctx.mark_non_differentiable(residual)
        return p, residual

    @staticmethod
    def backward(ctx, grad_p, grad_residual):
        (p,) = ctx.saved_tensors
        n = p.shape[-1]
        weighted = p * grad_p
        a, b = weighted.sum(-1), weighted.sum(-2)
        system = torch.eye(n, dtype=p.dtype, device=p.device) - p @ p.mT + 1.0 / n
        # Near a vertex (low temperature) the system is singular but consistent, and the pseudo-inverse
        # solution gives the right limit (a vanishing gradient) where a plain solve fails.
        rhs = a - (p @ b[..., None]).squeeze(-1)
        lam = (torch.linalg.pinv(system, hermitian=True) @ rhs[..., None]).squeeze(-1)
        kappa = b - (p.mT @ lam[..., None]).squeeze(-1)
        return p * (grad_p - lam[..., :, None] - kappa[..., None, :]), None, None


def sinkhorn(
    log_alpha: torch.Tensor, n_iters: int = 100, tol: float = 1e-6, backward: str = "implicit"
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Log-domain Sinkhorn (Mena et al., 2018): the doubly stochastic scaling of :math:`e^{X}`.

    .. math::

        S(X) = \lim_{m\to\infty} (\mathcal T_c \circ \mathcal T_r)^m (X),\quad
        \mathcal T_r(X) = X - \operatorname{logsumexp}_j X_{ij},\quad
        \mathcal T_c(X) = X - \operatorname{logsumexp}_i X_{ij},

    the maximiser of :math:`\langle X, P\rangle + H(P)` over the Birkhoff polytope.

    :param backward: ``"implicit"`` (default) solves for the fixed point by Newton's
        method on the dual (:func:`_sinkhorn_newton`; at most ``n_iters`` steps, each
        element until its row sums are within ``tol`` of 1; converges at temperatures
        where plain sweeps take thousands of iterations) and differentiates the fixed
        point (:class:`_ImplicitSinkhorn`; constant memory, exact once converged).
        ``"unrolled"`` runs at most ``n_iters`` plain row/column sweeps with the same
        stopping rule and differentiates through them (the exact derivative of what
        is returned; memory grows with the iterations; slow to converge near a vertex).
    :returns: ``(P, residual)``: ``P`` of the input's shape, and ``residual``
        (shape ``log_alpha.shape[:-2]``), the largest ``|row sum - 1|`` at the end.
    """
    check_square(log_alpha, "log_alpha")
    n_iters, tol = check_sinkhorn_args(n_iters, tol, backward)
    sinkhorn_of = functools.partial(_sinkhorn, n_iters=n_iters, tol=tol, backward=backward)
    return nan_in_nan_out(sinkhorn_of, log_alpha, 2, (2, 0))


def _sinkhorn(log_alpha, n_iters, tol, backward):
    if backward == "implicit":
        return _ImplicitSinkhorn.apply(log_alpha, n_iters, tol)
    log_p, residual = _sinkhorn_iterations(log_alpha, n_iters, tol)
    return log_p.exp(), residual


def max_assignment(weights: torch.Tensor) -> torch.Tensor:
    r"""Maximum-weight perfect matching :math:`\arg\max_{x} \langle W, x\rangle` as a permutation matrix.

    On the CPU: the Hungarian algorithm of :func:`scipy.optimize.linear_sum_assignment`, one
    batch element at a time (it beats the batched version there at every size measured). On
    other devices: :func:`_hungarian_batched`, shortest augmenting paths run for the whole batch
    at once under masks, on the device. Both are exact; ties may be broken differently by the two,
    each deterministically.
    """
    check_square(weights, "weights")
    return opaque_call(_max_assignment, weights)


def assignment_exists(logits: torch.Tensor) -> torch.Tensor:
    """Whether each ``(..., n, n)`` element has a permutation of finite weight, shape ``logits.shape[:-2]``.

    A perfect matching on the entries above ``-inf``: elements without an absent entry have one; the
    others are checked exactly with the Hungarian algorithm on their pattern (scipy, on the CPU).
    NaN entries count as present (NaN in, NaN out is the caller's business).
    """
    check_square(logits, "logits")
    return opaque_call(_assignment_exists, logits)


def _assignment_exists(logits):
    n = int(logits.shape[-1])
    absent = (logits == -math.inf).reshape(-1, n, n)
    exists = torch.ones(absent.shape[0], dtype=torch.bool, device=logits.device)
    checked = absent.flatten(1).any(-1)  # only elements with an absent entry
    failed = linear_sum_assignments(np.where(absent[checked].cpu().numpy(), np.inf, 0.0))[1]
    exists[checked] = torch.as_tensor(~failed, device=logits.device)
    return exists.reshape(logits.shape[:-2])


#: run :func:`_hungarian_batched` on the CPU too (for tests; scipy's loop is faster there)
_BATCHED_ASSIGNMENT_ON_CPU = False


def _hungarian_batched(cost):
    """(B, n) column assigned to each row, minimising ``cost`` (``(B, n, n)``, ``+inf`` = forbidden).

    Shortest augmenting paths with dual potentials (Jonker-Volgenant, as in Crouse 2016), one row
    at a time; every batch element runs the same steps under masks.
    """
    B, n = cost.shape[0], cost.shape[-1]
    batch = torch.arange(B, device=cost.device)
    cols = torch.arange(n, device=cost.device)
    u = torch.zeros(B, n, dtype=cost.dtype, device=cost.device)
    v = torch.zeros_like(u)
    col4row = torch.full((B, n), -1, dtype=torch.long, device=cost.device)
    row4col = torch.full_like(col4row, -1)
    for current in range(n):
        shortest = torch.full_like(u, math.inf)
        path = torch.full_like(col4row, -1)
        seen_rows = torch.zeros(B, n, dtype=torch.bool, device=cost.device)
        seen_cols = torch.zeros_like(seen_rows)
        row = torch.full((B,), current, dtype=torch.long, device=cost.device)
        min_value = torch.zeros(B, dtype=cost.dtype, device=cost.device)
        sink = torch.full_like(row, -1)
        searching = torch.ones(B, dtype=torch.bool, device=cost.device)
        while bool(searching.any()):
            seen_rows[batch, row] |= searching
            reduced = min_value[:, None] + cost[batch, row] - u[batch, row][:, None] - v
            better = searching[:, None] & ~seen_cols & (reduced < shortest)
            path = torch.where(better, row[:, None], path)
            shortest = torch.where(better, reduced, shortest)
            candidates = shortest.masked_fill(seen_cols, math.inf)
            lowest = candidates.min(-1).values
            stuck = searching & (lowest == math.inf)
            if bool(stuck.any()):
                raise ValueError(no_assignment_message(int(stuck.nonzero()[0])))
            tied = candidates == lowest[:, None]
            free_tied = tied & (row4col < 0)
            col = torch.where(free_tied.any(-1), free_tied.int().argmax(-1), tied.int().argmax(-1))
            min_value = torch.where(searching, lowest, min_value)
            seen_cols[batch, col] |= searching
            owner = row4col[batch, col]
            found = searching & (owner < 0)
            sink = torch.where(found, col, sink)
            row = torch.where(searching & ~found, owner, row)
            searching = searching & ~found
        u[:, current] += min_value
        others = seen_rows & (cols != current)
        u = torch.where(others, u + min_value[:, None] - shortest.gather(-1, col4row.clamp(min=0)), u)
        v = torch.where(seen_cols, v - (min_value[:, None] - shortest), v)
        col = sink
        walking = torch.ones(B, dtype=torch.bool, device=cost.device)
        while bool(walking.any()):
            row = path[batch, col]
            row4col[batch, col] = torch.where(walking, row, row4col[batch, col])
            previous = col4row[batch, row]
            col4row[batch, row] = torch.where(walking, col, previous)
            walking = walking & (row != current)
            col = torch.where(walking, previous, col)
    return col4row


def _max_assignment(weights):
    n = int(weights.shape[-1])
    flat = weights.reshape(-1, n, n)
    nan = torch.isnan(flat).flatten(1).any(-1)
    cost = -flat.double().masked_fill(nan[:, None, None], 0)
    if flat.device.type != "cpu" or _BATCHED_ASSIGNMENT_ON_CPU:
        columns = _hungarian_batched(cost)
    else:
        columns, failed = linear_sum_assignments(cost.numpy())
        if failed.any():
            raise ValueError(no_assignment_message(int(failed.nonzero()[0][0])))
        columns = torch.as_tensor(columns)
    x = torch.zeros_like(flat).scatter_(-1, columns[..., None], 1.0)
    if bool(nan.any()):
        x = fill_nan(x, nan, 2)
    return x.reshape(weights.shape)


def _exact_log_permanent(logits):
    """Exact log-permanent by the log-space DP over column subsets (``n <= EXACT_MAX_N``)."""
    n = logits.shape[-1]
    states = torch.arange(1 << n, device=logits.device)
    bits = 1 << torch.arange(n, device=logits.device)
    has = (states[:, None] & bits) > 0  # (2^n, n): column j in subset S
    previous = states[:, None] ^ bits  # S without column j
    # f[S] = log sum over ways to give rows 0..|S|-1 the columns S; only |S| = row + 1 is reachable.
    f = torch.full(logits.shape[:-2] + (1 << n,), -math.inf, dtype=logits.dtype, device=logits.device)
    f[..., 0] = 0
    for row in range(n):
        terms = f[..., previous] + logits[..., row, None, :]
        f = log_sum_exp(torch.where(has, terms, torch.full_like(terms, -math.inf)), -1)
    return f[..., -1]


def bethe_log_permanent(logits: torch.Tensor, max_iters: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Bethe approximation of :math:`\log\operatorname{perm}(e^{\theta})` and its beliefs.

    .. math::

        \log\operatorname{perm}_B = \max_{\gamma \in \mathcal B_n}
            \sum_{ij} \gamma_{ij}\theta_{ij} - \gamma_{ij}\log\gamma_{ij}
            + (1 - \gamma_{ij})\log(1 - \gamma_{ij}),

    a concave problem over the Birkhoff polytope :math:`\mathcal B_n` (Vontobel, 2013), with
    :math:`\operatorname{perm}/2^{n/2} \le \operatorname{perm}_B \le \operatorname{perm}`
    (Gurvits; Anari and Rezaei). Its stationarity condition
    :math:`\gamma_{ij} = e^{\theta_{ij} + f_i + g_j} / (1 - \gamma_{ij})` is solved by damped
    updates of :math:`\gamma` interleaved with Sinkhorn sweeps of the scalings
    :math:`f, g`; the final beliefs are projected onto :math:`\mathcal B_n` by Sinkhorn, so the
    value is a lower bound of the permanent up to that projection's residual (at logit
    spreads of ~100 the beliefs approach a vertex and both iterations slow down). The
    value is differentiable and its gradient is :math:`\gamma` (envelope theorem).

    :returns: ``(log_perm_bethe, gamma)``.
    """
    check_square(logits)
    gamma = opaque_call(functools.partial(_bethe_beliefs, max_iters=max_iters), logits)
    entropy = -torch.special.xlogy(gamma, gamma) + torch.special.xlogy(1 - gamma, 1 - gamma)
    energy = torch.where(gamma > 0, gamma * logits, torch.zeros_like(logits))
    return (energy + entropy).sum((-2, -1)), gamma


def _bethe_beliefs(logits, max_iters):
    """The Bethe fixed point, each batch element iterated until its own convergence (then frozen)."""
    tol = 1e-10 if logits.dtype == torch.float64 else 1e-6
    theta, nan = mask_nan_elements(logits, 2)
    g = theta.new_zeros(theta.shape[:-2] + theta.shape[-1:])
    gamma = torch.softmax(theta, -1)
    active = torch.ones(theta.shape[:-2], dtype=torch.bool, device=theta.device)
    for _ in range(max_iters):
        kernel = theta - torch.log1p(-gamma.clamp(max=1 - torch.finfo(theta.dtype).eps))
        f = -torch.logsumexp(kernel + g[..., None, :], -1)
        g_next = -torch.logsumexp(kernel + f[..., :, None], -2)
        update = (kernel + f[..., :, None] + g_next[..., None, :]).exp()
        change = (update - gamma).abs().amax((-2, -1))
        damped = 0.5 * (gamma + update)
        gamma = torch.where(active[..., None, None], damped, gamma)
        g = torch.where(active[..., None], g_next, g)
        active = active & ~((change < tol) & ((damped.sum(-1) - 1).abs().amax(-1) < tol))
        if not bool(active.any()):
            break
    log_gamma, _ = _sinkhorn_iterations(gamma.log(), 1000, tol)
    return fill_nan(log_gamma.exp(), nan, 2)


def _uses_bethe(logits, method):
    """Check ``logits`` and ``method``; whether the Bethe approximation (not the exact DP) applies."""
    check_square(logits)
    n = logits.shape[-1]
    if method not in ("auto", "exact", "bethe"):
        raise ValueError(f"method must be 'auto', 'exact' or 'bethe', got {method!r}")
    if method == "exact" and n > EXACT_MAX_N:
        raise ValueError(f"method='exact' needs n <= {EXACT_MAX_N}, got n={n}")
    return method == "bethe" or (method == "auto" and n > EXACT_MAX_N)


def log_permanent(logits: torch.Tensor, method: str = "auto") -> torch.Tensor:
    r""":math:`A(\theta) = \log\operatorname{perm}(e^{\theta}) = \log\sum_{\sigma}\prod_i e^{\theta_{i\sigma(i)}}`.

    :param method: ``"exact"``, ``"bethe"`` (:func:`bethe_log_permanent`), or
        ``"auto"``: exact up to ``EXACT_MAX_N`` = 12, Bethe beyond. The exact value is a
        log-space dynamic program over column subsets, :math:`O(n^2 2^n)` like Ryser's
        formula but a sum of positive terms only (Ryser's alternating signs cancel
        catastrophically at large logit spreads), so it is exact in float32 at any spread.
    """
    if _uses_bethe(logits, method):
        return bethe_log_permanent(logits)[0]
    return nan_in_nan_out(lambda x: program_log_partition(_exact_log_permanent, x, _STRUCTURE), logits, 2, 0)


def permutation_marginals(logits: torch.Tensor, method: str = "auto") -> torch.Tensor:
    r""":math:`\mu_{ij} = P(\sigma(i) = j) = \partial A / \partial\theta_{ij}` (doubly stochastic).

    Exact for ``n <= 12`` (gradient of the exact DP, twice differentiable); the
    Bethe beliefs beyond (see :func:`log_permanent`), returned without a gradient.
    """
    if _uses_bethe(logits, method):
        return bethe_log_permanent(logits)[1]
    return nan_in_nan_out(lambda x: gradient_marginals(_exact_log_permanent, x, _STRUCTURE), logits, 2, 2)


def enumerate_permutations(
    n: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """All ``n!`` permutation matrices (``n <= 8``), shape ``(n!, n, n)``, in lexicographic order."""
    return torch.as_tensor(enumeration.permutations(n), dtype=dtype, device=device)
