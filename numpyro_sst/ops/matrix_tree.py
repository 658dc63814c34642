r"""Matrix-tree theorems: log-partition functions and edge marginals (JAX).

The same math as :mod:`pyro_sst.ops.matrix_tree`. Every function works on *directed*
log-weights ``theta[..., i, j]`` for the edge ``i -> j`` (``i`` is the parent of ``j``) and
an arborescence rooted at ``root``; undirected spanning trees are the arborescences of the
symmetric digraph rooted at node 0.

Tutte's directed matrix-tree theorem: with :math:`w_{ij} = e^{\theta_{ij}}` and the
in-degree Laplacian :math:`L = \operatorname{diag}(\mathbf{1}^\top W) - W`,

.. math::

    A(\theta) = \log \sum_{x} e^{\langle \theta, x \rangle} = \log \det L_{\hat r \hat r},

where :math:`L_{\hat r \hat r}` drops the root's row and column. Koo et al. (2007) give the
single-root variant: replace the first non-root row of the minor by the root's out-weights.

Numerics. Columns are scaled by their total in-weight, so the matrix that is inverted is
:math:`M = \mathcal{A}^*(P) + e_r e_r^\top` with the column softmax
:math:`P_{ij} = e^{\theta_{ij}} / \sum_k e^{\theta_{kj}}`, and

.. math::

    A = \log\det M + \sum_{j \ne r} \operatorname{logsumexp}_i \theta_{ij},\qquad
    \mu_{ij} = P_{ij}\, \mathcal{A}(B^\top)_{ij},\quad B = M^{-1},

with :math:`\mathcal{A}` the adjoint of the linear map :math:`\mathcal{A}^*` that builds the
Laplacian. The marginals are a ``jax.custom_jvp`` whose tangent is the explicit
Hessian-vector product of :math:`A` (two matrix products), and the log-partition is a
``custom_jvp`` whose tangent is :math:`\langle \mu, \dot\theta\rangle`: no autodiff through
``slogdet`` or ``inv``, in forward or reverse mode, to any order.

Where the inverse cannot be trusted (condition number above :math:`\epsilon^{-1/2}`, the
common case of :math:`U / t` at low temperature), a batch element falls back to exact
log-space Gaussian elimination (Kron reduction, the GTH trick): eliminating node :math:`k`
adds :math:`w_{ik} w_{kj} / d_k` to every remaining weight, a sum of positive terms with no
cancellation, and :math:`A` is the sum of the log pivots. Its marginals are the exact
gradient of that program and their tangent its Hessian-vector product (forward over reverse
mode). Under ``jit`` the fallback is a ``lax.cond``: it only runs when some element needs it
(under ``vmap`` both branches run and each element takes its own). For ``single_root`` the
elimination scales the root's out-edges by :math:`e^{-c}` with ``c`` chosen per element from
the spread of its logits, as in pyro_sst.

Special inputs. ``-inf`` logits are absent edges; where no tree of finite weight remains the
log-partition is ``-inf`` and the marginals are undefined: they raise :class:`ValueError` on
concrete input and are NaN under a JAX transformation. NaN inputs give NaN for their batch
element. Every batch element is computed independently of the others.
"""

import functools

import jax
import jax.numpy as jnp

from sst_common.checks import check_root

from .logspace import by_tiers, fill_nan, log_add, log_sum_exp, mask_nan_elements, nan_elements, raise_if_empty
from .validation import check_square

__all__ = [
    "arborescence_log_partition",
    "arborescence_marginals",
    "directed_log_weights",
    "laplacian",
]


def laplacian(weights):
    r"""In-degree Laplacian :math:`L = \operatorname{diag}(\mathbf 1^\top W) - W` (the diagonal of ``W`` is ignored)."""
    n = weights.shape[-1]
    weights = jnp.where(jnp.eye(n, dtype=bool), 0, weights)
    return jnp.eye(n, dtype=weights.dtype) * weights.sum(-2)[..., None, :] - weights


def directed_log_weights(logits, root):
    """Directed log-weights with self-loops and edges into ``root`` set to -inf."""
    n = logits.shape[-1]
    idx = jnp.arange(n)
    excluded = (idx[:, None] == idx) | (idx == root)
    return jnp.where(excluded, -jnp.inf, logits)


def _anchor(root):
    """The non-root node whose Laplacian row Koo et al. replace by root weights."""
    return 1 if root == 0 else 0


def _masks(n, root):
    idx = jnp.arange(n)
    return idx != root, idx != _anchor(root)


def _laplacian_map(Q, root, single_root):
    r"""The linear map :math:`\mathcal{A}^*` from edge weights to the Laplacian minor (root row/column left zero)."""
    n = Q.shape[-1]
    not_root, not_anchor = _masks(n, root)
    eye = jnp.eye(n, dtype=bool)
    if not single_root:
        return jnp.where(eye, Q.sum(-2, keepdims=True), 0) - Q * not_root[:, None]
    Q_nonroot = Q * not_root[:, None]
    M = jnp.where(eye & not_anchor, Q_nonroot.sum(-2, keepdims=True), 0) - Q_nonroot * not_anchor[:, None]
    return M + jnp.where(~not_anchor[:, None], Q[..., root : root + 1, :], 0)


def _laplacian_adjoint(X, root, single_root):
    r"""The adjoint :math:`\mathcal{A}`: ``<X, A*(Q)> == <A(X), Q>`` for every ``Q``."""
    not_root, not_anchor = _masks(X.shape[-1], root)
    diag = jnp.diagonal(X, axis1=-2, axis2=-1)[..., None, :]
    if not single_root:
        return diag - X * not_root[:, None]
    a = _anchor(root)
    out = (diag * not_anchor - X * (not_root & not_anchor)[:, None]) * not_root[:, None]
    return jnp.where(not_root[:, None], out, X[..., a : a + 1, :])


def _scaled_minor(theta, root, single_root):
    """Column softmax ``P``, the column log-normalisers and the scaled minor ``M``."""
    n = theta.shape[-1]
    root_col = jnp.arange(n) == root
    # The root column is all -inf; give it finite values so the softmax stays NaN-free.
    log_norm = log_sum_exp(jnp.where(root_col, 0, theta), -2)
    P = jnp.where(root_col, 0, jnp.exp(theta - log_norm[..., None, :]))
    log_norm = jnp.where(root_col, 0, log_norm)
    E_rr = (root_col[:, None] & root_col).astype(theta.dtype)
    return P, log_norm, _laplacian_map(P, root, single_root) + E_rr


def _scaled_inverse(theta, root, single_root):
    """``(P, log_norm, B, sign, log_abs_det, ok)`` of ``M``, with ``B = M^{-1}``, from one LU factorisation.

    One factorisation serves both the inverse and the determinant: half the work of ``inv`` plus
    ``slogdet``, and no two independent batched LAPACK calls in one program (jaxlib 0.10 can
    deadlock its CPU thread pool on those). Trusted elements ``ok``: condition number below
    ``eps^(-1/2)``, so the first-order error ``cond * eps`` of everything computed from ``B``
    stays below ``eps^(1/2)``.
    """
    P, log_norm, M = _scaled_minor(theta, root, single_root)
    lu, pivots, _ = jax.lax.linalg.lu(M)
    B = jax.scipy.linalg.lu_solve((lu, pivots), jnp.broadcast_to(jnp.eye(M.shape[-1], dtype=M.dtype), M.shape))
    pivot_values = jnp.diagonal(lu, axis1=-2, axis2=-1)
    swaps = (pivots != jnp.arange(M.shape[-1])).sum(-1)
    sign = jnp.where(swaps % 2 == 1, -1, 1) * jnp.prod(jnp.sign(pivot_values), -1)
    log_abs_det = jnp.log(jnp.abs(pivot_values)).sum(-1)
    cond = jnp.abs(M).sum(-1).max(-1) * jnp.abs(B).sum(-1).max(-1)
    # Test B for NaN with a boolean reduction: XLA's CPU max may skip NaN rows (measured: a singular
    # float32 minor passed a NaN-propagating test in a batch of 20000, not alone), so isfinite(cond) is not enough.
    ok = jnp.isfinite(B).all((-2, -1)) & (cond < jnp.finfo(theta.dtype).eps ** -0.5)
    return P, log_norm, B, sign, log_abs_det, ok


def _elimination_log_partition(theta, root, single_root):
    """Log-space Kron reduction of ``(B, n, n)`` directed log-weights: ``A`` for any spread (see module doc)."""
    n = theta.shape[-1]
    order = jnp.array([root] + [i for i in range(n) if i != root])
    X = theta[..., order, :][..., :, order]
    shift = jnp.zeros(X.shape[:-2], X.dtype)
    if single_root:
        # Root edges scaled by s = e^{-shift}: Z(s) = s Z_1 + s^2 Z_2 + ...; the bound on Z_{k+1} / Z_k is
        # n^2 e^{spread} on a complete graph and n^n e^{(n-1) spread} with absent edges (pyro_sst's reasoning).
        finite = jnp.isfinite(X)
        largest = jnp.where(finite, X, -jnp.inf).max((-2, -1))
        smallest = jnp.where(finite, X, jnp.inf).min((-2, -1))
        spread = jax.lax.stop_gradient(jnp.where(finite.any((-2, -1)), largest - smallest, 0))
        complete = finite.sum((-2, -1)) == (n - 1) ** 2
        log_n = jnp.log(n)
        shift = jnp.where(complete, spread + 2 * log_n, (n - 1) * spread + n * log_n) + 60.0
        X = X.at[..., 0, :].add(-shift[..., None])
    idx = jnp.arange(n)

    def eliminate(carry, k):
        X, total = carry
        before = idx < k
        into_k = jnp.where(before, jnp.take(X, k, axis=-1), -jnp.inf)
        log_pivot = log_sum_exp(into_k, -1)
        # A zero pivot (no tree) leaves every into_k at -inf: keep -inf - (-inf) from making NaN.
        log_pi = into_k - jnp.where(jnp.isfinite(log_pivot), log_pivot, 0)[..., None]
        from_k = jnp.where(before, jnp.take(X, k, axis=-2), -jnp.inf)
        reduced = log_add(X, log_pi[..., :, None] + from_k[..., None, :])
        return (jnp.where(before[:, None] & before, reduced, X), total + log_pivot), None

    (_, total), _ = jax.lax.scan(eliminate, (X, jnp.zeros_like(shift)), jnp.arange(n - 1, 0, -1))
    log_z = total + shift
    if single_root:
        # If Z_1 > 0 then log Z_1 >= (n - 1) * smallest; if Z_1 = 0 the bound above puts the value 60 below.
        log_z = jnp.where(log_z < (n - 1) * smallest - 30.0, -jnp.inf, log_z)
    return log_z


def _elimination_marginals(theta, root, single_root):
    """Exact marginals (the gradient of the elimination), NaN where the support is empty."""
    per_element = jax.grad(lambda t: _sum_and_values(_elimination_log_partition(t, root, single_root)), has_aux=True)
    mu, log_z = per_element(theta)
    return jnp.where((log_z == -jnp.inf)[..., None, None], jnp.nan, jnp.where(jnp.isfinite(theta), mu, 0))


def _sum_and_values(x):
    return x.sum(), jax.lax.stop_gradient(x)


def _elimination_marginals_jvp(theta, v, root, single_root):
    """``(mu, its tangent along v)`` of the elimination in one pass (entries at ``-inf`` logits stay 0)."""
    finite = jnp.isfinite(theta)
    mu, tangent = jax.jvp(lambda t: _elimination_marginals(t, root, single_root), (theta,), (jnp.where(finite, v, 0),))
    return mu, jnp.where(finite, tangent, 0)


def _untrusted(theta, ok):
    """``theta`` with the trusted elements replaced by zeros (safe inputs for the fallback tier)."""
    return jnp.where(ok[..., None, None], 0, theta)


def _inverse_marginals(theta, root, single_root):
    """``(mu, P, B, ok, inverse)``: the inverse tier from ``B``, the ``inverse`` of ``M`` zeroed where untrusted.

    The zeros keep inf and NaN of singular elements out of the derivatives of the other tier.
    """
    P, _, inverse, _, _, ok = _scaled_inverse(theta, root, single_root)
    B = jnp.where(ok[..., None, None], inverse, 0)
    return P * _laplacian_adjoint(jnp.swapaxes(B, -1, -2), root, single_root), P, B, ok, inverse


def _tiered_marginals(theta, root, single_root):
    """``(mu, inverse)``: the marginals by tiers and the raw inverse of ``M`` (the sampler goes on from it)."""
    mu, _, _, ok, inverse = _inverse_marginals(theta, root, single_root)
    return by_tiers(ok, mu, lambda: _elimination_marginals(_untrusted(theta, ok), root, single_root)), inverse


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _marginals(theta, root, single_root):
    return _tiered_marginals(theta, root, single_root)[0]


@_marginals.defjvp
def _marginals_jvp(root, single_root, primals, tangents):
    (theta,), (v,) = primals, tangents
    mu, P, B, ok, _ = _inverse_marginals(theta, root, single_root)
    # mu = P * A(B^T): through B = M^{-1} (dM = -B^T dB B^T), M = A*(P) and dP = P * (v - column mean of v).
    Bt = jnp.swapaxes(B, -1, -2)
    dP = P * (v - (P * v).sum(-2, keepdims=True))
    dBt = -Bt @ jnp.swapaxes(_laplacian_map(dP, root, single_root), -1, -2) @ Bt
    direct = dP * _laplacian_adjoint(Bt, root, single_root) + P * _laplacian_adjoint(dBt, root, single_root)
    direct = jnp.where(ok[..., None, None], direct, 0)
    return by_tiers(
        ok,
        (mu, direct),
        lambda: _elimination_marginals_jvp(_untrusted(theta, ok), _untrusted(v, ok), root, single_root),
    )


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _log_partition(theta, root, single_root):
    _, log_norm, _, sign, log_abs_det, ok = _scaled_inverse(theta, root, single_root)
    ok = ok & (sign > 0)
    direct = jnp.where(ok, log_abs_det + log_norm.sum(-1), 0)
    return by_tiers(ok, direct, lambda: _elimination_log_partition(_untrusted(theta, ok), root, single_root))


@_log_partition.defjvp
def _log_partition_jvp(root, single_root, primals, tangents):
    (theta,), (v,) = primals, tangents
    mu = _marginals(theta, root, single_root)
    return _log_partition(theta, root, single_root), (mu * jnp.where(jnp.isfinite(theta), v, 0)).sum((-2, -1))


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


def arborescence_log_partition(logits, root=0, single_root=False):
    r"""Log-partition of the exponential family over arborescences (Tutte / Koo et al.).

    :param logits: ``(..., n, n)``; ``logits[..., i, j]`` scores edge ``i -> j``. Diagonal and
        the root column are ignored.
    :param int root: the root node.
    :param bool single_root: restrict to arborescences where the root has one child.
    :returns: ``A(logits)`` of shape ``logits.shape[:-2]``, differentiable to any order, with
        gradient :func:`arborescence_marginals`.
    """
    logits = check_square(logits)
    root = check_root(logits.shape[-1], root, single_root)
    if logits.shape[-1] == 1:
        return jnp.zeros(logits.shape[:-2], logits.dtype)
    return _apply_directed(_log_partition, logits, root, bool(single_root), 0)


def arborescence_marginals(logits, root=0, single_root=False):
    r"""Edge marginals :math:`\mu_{ij} = P(i \to j \in x) = \partial A / \partial \theta_{ij}`.

    Explicit inverse formula with an explicit tangent; ill-conditioned batch elements fall
    back to exact log-space elimination (see the module docstring). Every non-root column sums
    to 1; the root column and the diagonal are 0.
    """
    logits = check_square(logits)
    root = check_root(logits.shape[-1], root, single_root)
    if logits.shape[-1] == 1:
        return jnp.zeros_like(logits)
    mu = _apply_directed(_marginals, logits, root, bool(single_root), 2)
    raise_if_undefined(mu, directed_log_weights(logits, root), 2, _STRUCTURE)
    return mu
