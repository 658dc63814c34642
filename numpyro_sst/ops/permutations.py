r"""Permutations: log-domain Sinkhorn, maximum assignment, and the log-permanent (JAX).

Value layout (shared with :mod:`pyro_sst`): a permutation of ``n`` is an ``(..., n, n)`` 0/1
matrix with ``x[i, j] = 1`` iff row ``i`` is assigned to column ``j``; its relaxations are
doubly stochastic matrices.

The exponential family over permutations has log-partition
:math:`A(\theta) = \log \operatorname{perm}(e^{\theta})`, which is #P-hard: :func:`log_permanent`
computes it exactly for ``n <= 12`` (a log-space DP over column subsets) and by the Bethe
approximation beyond (a lower bound within a factor :math:`2^{n/2}`).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

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
from .validation import check_square, raise_if, wide_dtype

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


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _sinkhorn_sweeps(log_alpha, n_iters, tol, differentiable=True):
    """Alternate row and column log-normalisations, each batch element until its row sums are within ``tol`` of 1.

    A converged element is frozen, so its result does not depend on its neighbours in the batch.
    ``differentiable``: a ``lax.scan`` of all ``n_iters`` sweeps (reverse mode needs a fixed trip
    count; the frozen elements make that the same result); otherwise a ``while_loop`` that stops
    once every element has converged.
    """
    lse = functools.partial(jax.nn.logsumexp, keepdims=True)

    def sweep(state):
        log_p, row_log_sums, active, _ = state
        step = log_p - row_log_sums
        step = step - lse(step, -2)
        log_p = jnp.where(active, step, log_p)
        row_log_sums = jnp.where(active, lse(log_p, -1), row_log_sums)
        residual = jnp.abs(jnp.exp(jax.lax.stop_gradient(row_log_sums[..., 0])) - 1).max(-1)
        return log_p, row_log_sums, active & (residual > tol)[..., None, None], residual

    # The row log-sums that measure the residual are the ones the next row normalisation divides by.
    batch = log_alpha.shape[:-2]
    state = (log_alpha, lse(log_alpha, -1), jnp.ones(batch + (1, 1), bool), jnp.full(batch, jnp.inf, log_alpha.dtype))
    if differentiable:
        state = jax.lax.scan(lambda s, _: (sweep(s), None), state, length=n_iters)[0]
    else:
        state = jax.lax.while_loop(
            lambda s: (s[-1] < n_iters) & jnp.any(s[0][2]), lambda s: (sweep(s[0]), s[1] + 1), (state, 0)
        )[0]
    return state[0], state[3]


def _sinkhorn_newton(log_alpha, max_steps, tol):
    r"""The Sinkhorn fixed point by Newton's method on the dual, each element until ``tol``.

    With columns normalised for row potentials :math:`f`, the dual
    :math:`\psi(f) = \sum_j \operatorname{logsumexp}_i (X_{ij} + f_i) - \sum_i f_i` is convex with
    gradient :math:`r - 1` (the row sums) and Hessian :math:`\operatorname{diag}(r) - P P^\top`. Each step
    solves :math:`(\operatorname{diag}(r) - P P^\top + \tfrac1n 1 1^\top + \|r - 1\|_\infty^2 I)\,\delta = 1 - r`
    with a backtracking (Armijo) line search on :math:`\psi`; where the solve breaks down, a plain
    sweep. In float64 where JAX has it enabled.
    """
    X = log_alpha.astype(wide_dtype(log_alpha.dtype))
    n = X.shape[-1]
    gauge = jnp.full((n, n), 1.0 / n, X.dtype)
    eps = jnp.finfo(X.dtype).eps

    def dual(f):
        return jax.nn.logsumexp(X + f[..., :, None], -2).sum(-1) - f.sum(-1)

    def evaluate(f):
        log_p = X + f[..., :, None]
        column_log_sums = jax.nn.logsumexp(log_p, -2, keepdims=True)
        log_p = log_p - column_log_sums
        rows = jnp.exp(log_p).sum(-1)
        return log_p, column_log_sums, rows, jnp.abs(rows - 1).max(-1)

    def newton(state):
        f, step = state
        log_p, column_log_sums, rows, residual = evaluate(f)
        active = residual > tol  # NaN elements are never active
        p = jnp.exp(log_p)
        hessian = (
            jnp.eye(n, dtype=X.dtype) * (rows + residual[..., None] ** 2)[..., None, :] - p @ jnp.swapaxes(p, -1, -2)
        ) + gauge
        delta = -jnp.linalg.solve(hessian, (rows - 1)[..., None])[..., 0]
        slope = ((rows - 1) * delta).sum(-1)
        base = column_log_sums.sum((-2, -1)) - f.sum(-1)
        rounding = 8 * eps * jnp.abs(base)  # near the optimum the decrease is below rounding

        def backtrack(search):
            alpha, _, i = search
            accepted = dual(f + alpha[..., None] * delta) <= base + 1e-4 * alpha * slope + rounding
            return jnp.where(accepted, alpha, alpha / 2), accepted, i + 1

        alpha, accepted, _ = jax.lax.while_loop(
            lambda s: ~jnp.all(s[1]) & (s[2] < 40), backtrack, (jnp.ones_like(residual), residual < 0, 0)
        )
        # Where the solve broke down (a numerically singular system) take a plain Sinkhorn sweep instead.
        newton_f = f + alpha[..., None] * delta
        sweep_f = f - jnp.log(rows)
        ok = accepted & jnp.all(jnp.isfinite(newton_f), -1)
        return jnp.where(active[..., None], jnp.where(ok[..., None], newton_f, sweep_f), f), step + 1

    def going(state):
        f, step = state
        return (step < max_steps) & jnp.any(evaluate(f)[-1] > tol)

    f = jax.lax.while_loop(going, newton, (-jax.nn.logsumexp(X, -1), 0))[0]
    log_p, _, _, residual = evaluate(f)
    return log_p.astype(log_alpha.dtype), residual.astype(log_alpha.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _implicit_sinkhorn(log_alpha, n_iters, tol):
    log_p, residual = _sinkhorn_newton(log_alpha, n_iters, tol)
    return jnp.exp(log_p), residual


def _implicit_sinkhorn_forward(log_alpha, n_iters, tol):
    p, residual = _implicit_sinkhorn(log_alpha, n_iters, tol)
    return (p, residual), p


def _implicit_sinkhorn_backward(n_iters, tol, p, grads):
    r"""The gradient of the Sinkhorn fixed point by the implicit function theorem.

    With :math:`a = (P \odot G) 1`, :math:`b = (P \odot G)^\top 1`:
    :math:`(I - P P^\top + \tfrac1n 1 1^\top)\lambda = a - P b`, :math:`\kappa = b - P^\top\lambda`,
    :math:`\nabla_X = P \odot (G - \lambda 1^\top - 1 \kappa^\top)`; the system is solved by a
    symmetric pseudo-inverse, since it becomes singular as :math:`P` approaches a permutation.
    """
    grad_p = grads[0]
    n = p.shape[-1]
    weighted = p * grad_p
    a, b = weighted.sum(-1), weighted.sum(-2)
    system = jnp.eye(n, dtype=p.dtype) - p @ jnp.swapaxes(p, -1, -2) + 1.0 / n
    rhs = a - (p @ b[..., None])[..., 0]
    lam = (jnp.linalg.pinv(system, hermitian=True) @ rhs[..., None])[..., 0]
    kappa = b - (jnp.swapaxes(p, -1, -2) @ lam[..., None])[..., 0]
    return (p * (grad_p - lam[..., :, None] - kappa[..., None, :]),)


_implicit_sinkhorn.defvjp(_implicit_sinkhorn_forward, _implicit_sinkhorn_backward)
# Compiled once per shape and options: eager calls then cost one dispatch, not a retrace of every loop.
_compiled_implicit_sinkhorn = jax.jit(_implicit_sinkhorn, static_argnums=(1, 2))


def sinkhorn(
    log_alpha: ArrayLike, n_iters: int = 100, tol: float = 1e-6, backward: str = "implicit"
) -> tuple[jax.Array, jax.Array]:
    r"""Log-domain Sinkhorn (Mena et al., 2018): the doubly stochastic scaling of :math:`e^{X}`.

    .. math::

        S(X) = \lim_{m\to\infty} (\mathcal T_c \circ \mathcal T_r)^m (X),\quad
        \mathcal T_r(X) = X - \operatorname{logsumexp}_j X_{ij},\quad
        \mathcal T_c(X) = X - \operatorname{logsumexp}_i X_{ij},

    the maximiser of :math:`\langle X, P\rangle + H(P)` over the Birkhoff polytope.

    :param backward: ``"implicit"`` (default): Newton's method on the dual (at most ``n_iters``
        steps, each element until its row sums are within ``tol`` of 1) and a ``custom_vjp`` that
        differentiates the fixed point (constant memory; reverse mode only). ``"unrolled"``: at
        most ``n_iters`` plain sweeps with the same stopping rule (converged elements frozen),
        differentiated through (forward and reverse mode; memory grows with ``n_iters``).
    :returns: ``(P, residual)``: ``P`` of the input's shape and ``residual`` (shape
        ``log_alpha.shape[:-2]``), the largest ``|row sum - 1|`` at the end.
    """
    log_alpha = check_square(log_alpha, "log_alpha")
    n_iters, tol = check_sinkhorn_args(n_iters, tol, backward)
    sinkhorn_of = functools.partial(_sinkhorn, n_iters=n_iters, tol=tol, backward=backward)
    return nan_in_nan_out(sinkhorn_of, log_alpha, 2, (2, 0))


def _sinkhorn(log_alpha, n_iters, tol, backward):
    if backward == "implicit":
        return _compiled_implicit_sinkhorn(log_alpha, n_iters, tol)
    log_p, residual = _sinkhorn_sweeps(log_alpha, n_iters, tol)
    return jnp.exp(log_p), residual


def max_assignment(weights: ArrayLike) -> jax.Array:
    r"""Maximum-weight perfect matching :math:`\arg\max_{x} \langle W, x\rangle` as a permutation matrix.

    On the CPU: the Hungarian algorithm of :func:`scipy.optimize.linear_sum_assignment`, one batch
    element at a time, as a ``jax.pure_callback`` (it beats the batched loop there, as in pyro_sst).
    On other devices, and where JAX has several CPU devices (a batch sharded over them, which a host
    callback would gather onto one): :func:`_hungarian_batched`, shortest augmenting paths for the
    whole batch at once under masks, in ``lax`` loops. The platform is chosen where the program is
    lowered (``lax.platform_dependent``), so both are jittable. Exact; ties may be broken differently by the
    two, each deterministically. Raises :class:`ValueError` on concrete input where an element has
    no assignment of finite weight (NaN under ``jit``).
    """
    weights = check_square(weights, "weights")
    n = weights.shape[-1]
    flat, nan = mask_nan_elements(jax.lax.stop_gradient(weights).reshape(-1, n, n), 2)
    columns, failed = _assignment(-flat.astype(wide_dtype(flat.dtype)))
    raise_if(
        failed & ~nan,
        lambda bad: no_assignment_message(int(bad.nonzero()[0][0])),
    )
    x = (columns[..., None] == jnp.arange(n)).astype(weights.dtype)
    return fill_nan(x, nan | failed, 2).reshape(weights.shape)


def assignment_exists(logits: ArrayLike) -> jax.Array:
    """Whether each ``(..., n, n)`` element has a permutation of finite weight, shape ``logits.shape[:-2]``.

    A perfect matching on the entries above ``-inf``: elements without an absent entry have one; where
    some element has one, every element is checked exactly with the Hungarian algorithm on its pattern (a
    ``lax.cond``; jittable; scipy's on the CPU, as :func:`max_assignment`). NaN entries count as present.
    """
    logits = check_square(logits, "logits")
    n = logits.shape[-1]
    absent = (jax.lax.stop_gradient(logits) == -jnp.inf).reshape(-1, n, n)
    return ~_assignment_fails(absent).reshape(logits.shape[:-2])


#: run :func:`_hungarian_batched` on the CPU too (for tests; scipy's loop is faster there)
_BATCHED_ASSIGNMENT_ON_CPU = False


def _assignment(cost):
    """``((B, n) int32 column of each row, (B,) infeasible)``, minimising ``(B, n, n)`` ``cost`` (``+inf`` =
    forbidden): scipy's loop on a single CPU device, :func:`_hungarian_batched` elsewhere.

    With several CPU devices (a batch sharded over them) the ``lax`` loop serves there too: XLA partitions it over
    the batch, where a host callback would gather the whole batch onto one device.
    """
    if _BATCHED_ASSIGNMENT_ON_CPU or len(jax.devices("cpu")) > 1:
        return _batched_assignment(cost)
    return _platform_assignment(cost)


def _batched_assignment(cost):
    columns, failed = _hungarian_batched(cost)
    return columns.astype(jnp.int32), failed


@jax.jit
def _platform_assignment(cost):
    return jax.lax.platform_dependent(cost, cpu=_scipy_assignment, default=_batched_assignment)


def _scipy_assignment(cost):
    """:func:`scipy.optimize.linear_sum_assignment` per element of ``(..., n, n)`` ``cost``, on the host."""
    shape = (jax.ShapeDtypeStruct(cost.shape[:-1], np.int32), jax.ShapeDtypeStruct(cost.shape[:-2], np.bool_))
    host = functools.partial(linear_sum_assignments, index_dtype=np.int32)
    return jax.pure_callback(host, shape, cost, vmap_method="broadcast_all")


@jax.jit
def _assignment_fails(absent):
    return jax.lax.cond(
        absent.any(),
        lambda a: _assignment(jnp.where(a, jnp.inf, 0.0))[1],
        lambda a: jnp.zeros(a.shape[0], bool),
        absent,
    )


class _Augmenting(NamedTuple):
    """Per batch element, the state of the Hungarian loop: duals, matching and the current row's search.

    Arrays over rows or columns are ``(n, B)``, batch last, so that the reductions over them run across the
    batch in vector lanes.
    """

    #: ``(n, B)`` row and column potentials
    u: jax.Array
    v: jax.Array
    #: ``(n, B)`` the matching so far (``-1``: unmatched)
    col4row: jax.Array
    row4col: jax.Array
    #: ``(B,)`` the row being assigned (``n``: finished)
    current: jax.Array
    #: ``(B,)`` the element is following its augmenting path back (else searching for one)
    walking: jax.Array
    #: ``(n, B)`` Dijkstra's tentative distance of each column and the row it came from
    shortest: jax.Array
    path: jax.Array
    seen_rows: jax.Array
    seen_cols: jax.Array
    #: ``(n, B)`` the distance at which each seen row was reached (that of the column it owns)
    row_distance: jax.Array
    #: ``(B,)`` the row being scanned, or while walking the column being matched
    position: jax.Array
    #: ``(B,)`` the distance of the last column reached
    min_value: jax.Array
    #: ``(B,)`` no finite assignment exists
    failed: jax.Array


@jax.jit
def _hungarian_batched(cost):
    """``((B, n) column of each row, (B,) infeasible)``, minimising ``cost`` (``+inf`` = forbidden).

    Each element assigns its rows in order, alternating a Dijkstra search for the shortest augmenting path
    (one column per step) and the walk back along it (one column per step), in one ``lax.while_loop``
    whose steps every element takes under masks. Elements do not wait for each other between rows, so
    the loop runs as many steps as the longest element needs, not the sum of each row's longest search.
    An element with no finite assignment stops (``infeasible``).
    """
    B, n = cost.shape[0], cost.shape[-1]
    b = jnp.arange(B)
    cols = jnp.arange(n)[:, None]
    row_of = jax.vmap(lambda c, i: jax.lax.dynamic_index_in_dim(c, i, 0, keepdims=False))

    def at(x, i):
        """``x[i[b], b]`` for each element ``b``."""
        return x[i, b]

    def search(s):
        """One column of the Dijkstra search from the row ``s.current`` (elements not walking)."""
        searching = ~s.walking & (s.current < n) & ~s.failed
        row = s.position
        scanned = searching & (cols == row)
        seen_rows = s.seen_rows | scanned
        row_distance = jnp.where(scanned, s.min_value, s.row_distance)
        reduced = s.min_value + row_of(cost, row).T - at(s.u, row) - s.v
        better = searching & ~s.seen_cols & (reduced < s.shortest)
        path = jnp.where(better, row, s.path)
        shortest = jnp.where(better, reduced, s.shortest)
        candidates = jnp.where(s.seen_cols, jnp.inf, shortest)
        lowest = candidates.min(0)
        stuck = searching & ~(lowest < jnp.inf)
        searching = searching & ~stuck
        # among the nearest columns, a free one first, then the lowest
        col = jnp.where(candidates == lowest, (s.row4col >= 0) * n + cols, 2 * n).min(0) % n
        min_value = jnp.where(searching, lowest, s.min_value)
        seen_cols = s.seen_cols | (searching & (cols == col))
        owner = at(s.row4col, col)
        found = searching & (owner < 0)
        # Found a free column: update the duals, then walk back from it.
        u = s.u + (found & (cols == s.current)) * min_value
        others = found & seen_rows & (cols != s.current)
        u = jnp.where(others, u + min_value - row_distance, u)
        v = jnp.where(found & seen_cols, s.v - (min_value - shortest), s.v)
        position = jnp.where(found, col, jnp.where(searching, owner, s.position))
        return s._replace(
            u=u,
            v=v,
            walking=s.walking | found,
            shortest=shortest,
            path=path,
            seen_rows=seen_rows,
            seen_cols=seen_cols,
            row_distance=row_distance,
            position=position,
            min_value=min_value,
            failed=s.failed | stuck,
        )

    def walk(s, walking):
        """One column of the walk back along the augmenting path (elements ``walking``); at its end the
        element starts its next row."""
        col = s.position
        row = at(s.path, col)
        row4col = s.row4col.at[col, b].set(jnp.where(walking, row, at(s.row4col, col)))
        previous = at(s.col4row, row)
        col4row = s.col4row.at[row, b].set(jnp.where(walking, col, previous))
        arrived = walking & (row == s.current)
        current = s.current + arrived
        return s._replace(
            col4row=col4row,
            row4col=row4col,
            current=current,
            walking=s.walking & ~arrived,
            shortest=jnp.where(arrived, jnp.inf, s.shortest),
            path=jnp.where(arrived, -1, s.path),
            seen_rows=s.seen_rows & ~arrived,
            seen_cols=s.seen_cols & ~arrived,
            position=jnp.where(arrived, current, jnp.where(walking, previous, col)),
            min_value=jnp.where(arrived, 0.0, s.min_value),
        )

    def step(s):
        walking = s.walking  # an element that finds its path this step starts walking at the next
        return walk(search(s), walking)

    unmatched = jnp.full((n, B), -1)
    start = _Augmenting(
        u=jnp.zeros((n, B), cost.dtype),
        v=jnp.zeros((n, B), cost.dtype),
        col4row=unmatched,
        row4col=unmatched,
        current=jnp.zeros(B, int),
        walking=jnp.zeros(B, bool),
        shortest=jnp.full((n, B), jnp.inf, cost.dtype),
        path=unmatched,
        seen_rows=jnp.zeros((n, B), bool),
        seen_cols=jnp.zeros((n, B), bool),
        row_distance=jnp.zeros((n, B), cost.dtype),
        position=jnp.zeros(B, int),
        min_value=jnp.zeros(B, cost.dtype),
        failed=jnp.zeros(B, bool),
    )
    final = jax.lax.while_loop(lambda s: jnp.any((s.current < n) & ~s.failed), step, start)
    return final.col4row.T, final.failed


@jax.jit
def _exact_log_permanent(logits):
    """Exact log-permanent by the log-space DP over column subsets (``n <= EXACT_MAX_N``)."""
    n = logits.shape[-1]
    states = jnp.arange(1 << n)
    bits = 1 << jnp.arange(n)
    has = (states[:, None] & bits) > 0  # (2^n, n): column j in subset S
    previous = states[:, None] ^ bits  # S without column j
    # f[S] = log sum over ways to give rows 0..|S|-1 the columns S; only |S| = row + 1 is reachable.
    f = jnp.full(logits.shape[:-2] + (1 << n,), -jnp.inf, logits.dtype).at[..., 0].set(0)
    for row in range(n):
        terms = f[..., previous] + logits[..., row, None, :]
        f = log_sum_exp(jnp.where(has, terms, -jnp.inf), -1)
    return f[..., -1]


def bethe_log_permanent(logits: ArrayLike, max_iters: int = 2000) -> tuple[jax.Array, jax.Array]:
    r"""Bethe approximation of :math:`\log\operatorname{perm}(e^{\theta})` and its beliefs.

    .. math::

        \log\operatorname{perm}_B = \max_{\gamma \in \mathcal B_n}
            \sum_{ij} \gamma_{ij}\theta_{ij} - \gamma_{ij}\log\gamma_{ij}
            + (1 - \gamma_{ij})\log(1 - \gamma_{ij}),

    a concave problem over the Birkhoff polytope (Vontobel, 2013), with
    :math:`\operatorname{perm}/2^{n/2} \le \operatorname{perm}_B \le \operatorname{perm}`. Solved by
    damped fixed-point updates of :math:`\gamma` interleaved with Sinkhorn sweeps (each element
    until its own convergence), then projected onto :math:`\mathcal B_n` by Sinkhorn. The value is
    differentiable and its gradient is :math:`\gamma` (envelope theorem).

    :returns: ``(log_perm_bethe, gamma)``.
    """
    logits = check_square(logits)
    gamma = jax.lax.stop_gradient(_bethe_beliefs(jax.lax.stop_gradient(logits), max_iters))
    entropy = -jax.scipy.special.xlogy(gamma, gamma) + jax.scipy.special.xlogy(1 - gamma, 1 - gamma)
    energy = jnp.where(gamma > 0, gamma * logits, 0)
    return (energy + entropy).sum((-2, -1)), gamma


@functools.partial(jax.jit, static_argnums=1)
def _bethe_beliefs(logits, max_iters):
    tol = 1e-10 if logits.dtype == jnp.float64 else 1e-6
    theta, nan = mask_nan_elements(logits, 2)
    eps = jnp.finfo(theta.dtype).eps

    def update(state):
        gamma, g, active, i = state
        kernel = theta - jnp.log1p(-jnp.minimum(gamma, 1 - eps))
        f = -jax.nn.logsumexp(kernel + g[..., None, :], -1)
        g_next = -jax.nn.logsumexp(kernel + f[..., :, None], -2)
        new = jnp.exp(kernel + f[..., :, None] + g_next[..., None, :])
        change = jnp.abs(new - gamma).max((-2, -1))
        damped = 0.5 * (gamma + new)
        gamma = jnp.where(active[..., None, None], damped, gamma)
        g = jnp.where(active[..., None], g_next, g)
        active = active & ~((change < tol) & (jnp.abs(damped.sum(-1) - 1).max(-1) < tol))
        return gamma, g, active, i + 1

    state = (jax.nn.softmax(theta, -1), jnp.zeros(theta.shape[:-1], theta.dtype), jnp.ones(theta.shape[:-2], bool), 0)
    gamma = jax.lax.while_loop(lambda s: jnp.any(s[2]) & (s[3] < max_iters), update, state)[0]
    log_gamma, _ = _sinkhorn_sweeps(jnp.log(gamma), 1000, tol, differentiable=False)
    return fill_nan(jnp.exp(log_gamma), nan, 2)


def _uses_bethe(logits, method):
    """Check ``logits`` and ``method``; whether the Bethe approximation (not the exact DP) applies."""
    n = logits.shape[-1]
    if method not in ("auto", "exact", "bethe"):
        raise ValueError(f"method must be 'auto', 'exact' or 'bethe', got {method!r}")
    if method == "exact" and n > EXACT_MAX_N:
        raise ValueError(f"method='exact' needs n <= {EXACT_MAX_N}, got n={n}")
    return method == "bethe" or (method == "auto" and n > EXACT_MAX_N)


def log_permanent(logits: ArrayLike, method: str = "auto") -> jax.Array:
    r""":math:`A(\theta) = \log\operatorname{perm}(e^{\theta}) = \log\sum_{\sigma}\prod_i e^{\theta_{i\sigma(i)}}`.

    :param method: ``"exact"``, ``"bethe"`` (:func:`bethe_log_permanent`), or ``"auto"``: exact up
        to ``EXACT_MAX_N`` = 12, Bethe beyond. The exact value is a log-space dynamic program over
        column subsets, :math:`O(n^2 2^n)` like Ryser's formula but a sum of positive terms only, so
        it is exact in float32 at any spread; it is differentiable to any order (its gradient is
        :func:`permutation_marginals`).
    """
    logits = check_square(logits)
    if _uses_bethe(logits, method):
        return bethe_log_permanent(logits)[0]
    return nan_in_nan_out(lambda x: program_log_partition(_exact_log_permanent, x, "permutation"), logits, 2, 0)


def permutation_marginals(logits: ArrayLike, method: str = "auto") -> jax.Array:
    r""":math:`\mu_{ij} = P(\sigma(i) = j) = \partial A / \partial\theta_{ij}` (doubly stochastic).

    Exact for ``n <= 12`` (the gradient of the exact DP, itself differentiable); the Bethe beliefs
    beyond (see :func:`log_permanent`), without a gradient.
    """
    logits = check_square(logits)
    if _uses_bethe(logits, method):
        return bethe_log_permanent(logits)[1]
    return nan_in_nan_out(lambda x: gradient_marginals(_exact_log_permanent, x, "permutation"), logits, 2, 2)


def enumerate_permutations(n: int, dtype: DTypeLike | None = jnp.float32) -> jax.Array:
    """All ``n!`` permutation matrices (``n <= 8``), shape ``(n!, n, n)``, in lexicographic order."""
    return jnp.asarray(enumeration.permutations(n), dtype)
