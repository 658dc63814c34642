r"""k-subsets: the elementary-symmetric log-partition, its marginals, samplers and relaxations (JAX).

Value layout (shared with :mod:`pyro_sst`): a k-subset of ``d`` items is a k-hot vector of
shape ``(..., d)``.

The exponential family :math:`q(x) \propto e^{\langle\theta, x\rangle}` over k-hot vectors has
log-partition :math:`A(\theta) = \log e_k(e^{\theta})`, the coefficient of :math:`z^k` in
:math:`\prod_i (1 + e^{\theta_i} z)`. As in pyro_sst it is computed by multiplying the factors
pairwise in a balanced tree (the *inside* pass, truncated at degree ``k``: :math:`O(dk)` work in
:math:`\lceil\log_2 d\rceil` batched steps), and the marginals
:math:`\mu_i = e^{\theta_i} e_{k-1}(e^{\theta_{-i}}) / e_k` come from the matching *outside*
pass down the same tree. The log-partition is a ``jax.custom_jvp`` whose tangent is
:math:`\langle\mu, \dot\theta\rangle`; the marginals are differentiated through their two
passes (forward or reverse mode), which is their exact Jacobian, the Hessian of :math:`A`.

Both passes run on the tilted count distribution (derived on the concepts page of the docs, section
k-subsets): every node of the tree
holds the distribution of the number :math:`N` of Bernoulli(:math:`\sigma(\theta_i - \tau)`)
successes over its items, :math:`\log e_k(e^\theta) = \log P(N = k) + \sum_i \log(1 +
e^{\theta_i - \tau}) + k\tau` with :math:`\tau` bisected (without gradient) to put
:math:`E[N]` at ``k``, so nothing overflows or cancels at any spread, in float32 (JAX's
default) as in float64 (with ``jax_enable_x64``). For ``k > d / 2`` everything runs on the
complement, :math:`e_k(w) = \prod_i w_i \, e_{d-k}(1 / w)`: :math:`O(d \min(k, d - k))` work.

Special inputs: ``-inf`` logits are absent items. Where fewer than ``k`` items are present the
log-partition is ``-inf`` and the marginals, samplers, top-k and relaxations raise
:class:`ValueError` on concrete input (NaN under ``jit``). A NaN logit gives NaN results for its
batch element.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from sst_common import enumeration
from sst_common.checks import check_k, check_relaxation, too_few_items_message
from sst_common.constants import SUBSET_DIRECT_CONVOLUTION_MAX_LENGTH, subset_tilt_bisection_steps

from .logspace import fill_nan, log_partition_tangent, log_sum_exp, mask_nan_elements, undefined_where_empty
from .noise import sample_noise
from .validation import check_array, raise_if, wide_dtype

__all__ = [
    "RELAXATIONS",
    "binary_entropy_top_k",
    "capped_simplex_projection",
    "categorical_entropy_top_k",
    "enumerate_k_subsets",
    "log_elementary_symmetric",
    "relaxed_top_k",
    "sample_k_subset",
    "subset_marginals",
    "top_k_mask",
]


def _check_args(logits, k, name="logits"):
    logits = check_array(logits, name, 1)
    return logits, check_k(k, logits.shape[-1])


def _raise_if_too_few_items(logits, k, name="logits"):
    """Raise (on concrete values) where fewer than ``k`` entries of a NaN-free element are above ``-inf``."""
    present = (logits > -jnp.inf).sum(-1)
    raise_if(
        (present < k) & ~jnp.isnan(logits).any(-1),
        lambda bad: too_few_items_message(name, k, int(np.asarray(present)[bad].min())),
    )


def _reduced_problem(theta, k):
    r"""``(theta', k', offset, degree)`` with :math:`e_k(e^\theta) = e^{\text{offset}} e_{k'}(e^{\theta'})`.

    For ``k > d / 2``: the complement over the present items ``F``, :math:`\theta' = -\theta_F`,
    ``k' = |F| - k`` per element (negative where fewer than ``k`` items are present), offset
    :math:`\sum_F \theta_i` and ``degree = d - k``; otherwise ``theta' = theta``, ``k' = degree = k``
    and offset 0. ``degree`` (``<= d / 2``) bounds every ``k'``.
    """
    d = theta.shape[-1]
    if 2 * k <= d:
        return theta, jnp.full(theta.shape[:-1], k), jnp.zeros(theta.shape[:-1], theta.dtype), k
    present = theta > -jnp.inf
    complement = jnp.where(present, -theta, -jnp.inf)
    offset = jnp.where(present, theta, 0).sum(-1)
    return complement, present.sum(-1) - k, offset, d - k


def _windows(second, first_length, out_length, offset, fill):
    """``w[..., t, i] = second[..., t + offset - i']`` with ``i' = first_length - 1 - i`` (``fill`` outside)."""
    left = first_length - 1 - offset
    right = max(0, out_length + first_length - 1 - left - second.shape[-1])
    padded = jnp.pad(second, [(0, 0)] * (second.ndim - 1) + [(left, right)], constant_values=fill)
    return padded[..., jnp.arange(out_length)[:, None] + jnp.arange(first_length)]


def _linear_convolve(first, second, out_length, offset):
    """``out[..., t] = sum_i first[..., i] second[..., t + offset - i]`` for ``t < out_length``."""
    return _convolve_reversed(jnp.flip(first, -1), second, out_length, offset)


def _convolve_reversed(first_reversed, second, out_length, offset):
    """:func:`_linear_convolve` given ``first`` with its coefficients reversed (what the convolution matrix pairs).

    ``first_reversed`` may have one more axis than ``second``, ``(..., m, L)`` by ``(..., L')``: ``m``
    polynomials times the same one. Directly for short ``first``, by FFT for long ones
    (:data:`SUBSET_DIRECT_CONVOLUTION_MAX_LENGTH`).
    """
    shared = first_reversed.ndim > second.ndim
    first_length = first_reversed.shape[-1]
    if first_length <= SUBSET_DIRECT_CONVOLUTION_MAX_LENGTH:
        windows = _windows(second, first_length, out_length, offset, 0.0)
        if shared:
            return jnp.swapaxes(windows @ jnp.swapaxes(first_reversed, -1, -2), -1, -2)
        return (windows @ first_reversed[..., None])[..., 0]
    size = first_length + second.shape[-1] - 1
    n_fft = 1 << (size - 1).bit_length()
    second_spectrum = jnp.fft.rfft(second, n_fft)
    if shared:
        second_spectrum = second_spectrum[..., None, :]
    full = jnp.fft.irfft(jnp.fft.rfft(jnp.flip(first_reversed, -1), n_fft) * second_spectrum, n_fft)
    pad = [(0, 0)] * (full.ndim - 1) + [(0, max(0, offset + out_length - size))]
    return jnp.pad(full[..., offset:size].astype(second.dtype), pad)[..., :out_length]


def _log_convolve(first, second, out_length, offset):
    """:func:`_linear_convolve` of log-coefficients, in log space."""
    windows = _windows(second, first.shape[-1], out_length, offset, -jnp.inf)
    return log_sum_exp(windows + jnp.flip(first, -1)[..., None, :], -1)


def _leaves(theta, degree, factor):
    """Leaf polynomials ``(a_i, b_i) = factor(theta_i)``, i.e. ``a_i + b_i z`` (truncated at ``degree``).

    ``d`` is padded to a power of two with absent items (``theta = -inf``, for which ``factor`` gives the
    polynomial one).
    """
    d = theta.shape[-1]
    pad = (1 << max(d - 1, 0).bit_length()) - d
    theta = jnp.pad(theta, [(0, 0)] * (theta.ndim - 1) + [(0, pad)], constant_values=-jnp.inf)
    return jnp.stack(factor(theta), -1)[..., : min(degree, 1) + 1]


def _inside(leaves, degree, convolve):
    """Levels of the products of the leaf polynomials over blocks of ``2^l`` items, truncated at ``degree``."""
    level = leaves
    levels = [level]
    while level.shape[-2] > 1:
        length = level.shape[-1]
        level = convolve(level[..., 0::2, :], level[..., 1::2, :], min(2 * (length - 1), degree) + 1, 0)
        levels.append(level)
    return levels


def _leaf_outside(levels, root_outside):
    r"""Outside coefficients of degree ``degree - 1`` at every leaf, ``(..., 2^m)``.

    The outside polynomial of a node is the product of all other leaves' polynomials times
    :math:`z^{\text{degree} - k}`; each node keeps the window of degrees that pairs with its inside
    coefficients.
    """
    outside = root_outside[..., None, :]
    for inside in reversed(levels[:-1]):
        nodes, length = inside.shape[-2:]
        # each child's outside is its sibling's inside times the parent's outside: siblings swapped, reversed
        siblings_reversed = jnp.flip(inside.reshape(inside.shape[:-2] + (nodes // 2, 2, length)), (-2, -1))
        outside = _convolve_reversed(siblings_reversed, outside, length, outside.shape[-1] - length)
        outside = outside.reshape(outside.shape[:-3] + (nodes, length))
    return outside[..., 0]


def _root_outside(k_reduced, degree, dtype):
    r""":math:`z^{\text{degree} - k}` per batch element, as coefficients of degrees ``0 .. degree``."""
    return (jnp.arange(degree + 1) == degree - k_reduced[..., None]).astype(dtype)


def _root_coefficient(levels, k_reduced, absent):
    """``(root, root[k'])`` of the inside levels: the coefficient of degree ``k'``, ``absent`` where ``k' < 0``."""
    root = levels[-1][..., 0, :]
    coefficient = jnp.take_along_axis(root, jnp.maximum(k_reduced, 0)[..., None], -1)[..., 0]
    return root, jnp.where(k_reduced < 0, absent, coefficient)


def _tilt(theta, degree, k_reduced):
    r"""A tilt :math:`\tau` per element, ``(..., 1)``, without gradient, that puts the mean of :math:`N` near ``k'``.

    Bisection of :math:`\sum_i \sigma(\theta_i - \tau) = k'` on
    :math:`[s - \log d - 1, s + \log d]`, ``s`` the ``k'``-th largest logit (the largest for ``k' = 0``),
    where the sum is below ``k'`` at the top end (see
    :func:`~sst_common.constants.subset_tilt_bisection_steps`). Where fewer than ``k'`` items are present
    any tilt serves: :math:`P(N = k') = 0` exactly.
    """
    theta = jax.lax.stop_gradient(theta)
    d = theta.shape[-1]
    top = jax.lax.top_k(theta, degree)[0]
    anchor = jnp.take_along_axis(top, jnp.clip(k_reduced[..., None] - 1, 0, degree - 1), -1)
    anchor = jnp.where(jnp.isfinite(anchor), anchor, 0.0)
    target = k_reduced[..., None].astype(theta.dtype)

    def halve(_, bracket):
        lo, hi = bracket
        mid = (lo + hi) / 2
        above = jax.nn.sigmoid(theta - mid).sum(-1, keepdims=True) > target
        return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

    bracket = (anchor - math.log(d) - 1, anchor + math.log(d))
    lo, hi = jax.lax.fori_loop(0, subset_tilt_bisection_steps(d), halve, bracket)
    return (lo + hi) / 2


def _count_distribution(theta, degree, k_reduced):
    r"""Up pass on the tilted probabilities in the wide dtype: ``(levels, p, z, log_z)``.

    ``levels`` hold the distributions of the counts :math:`N` over blocks of items, ``p`` the
    leaves' :math:`p_i`, ``z`` :math:`= P(N = k')` and
    :math:`\log e_{k'}(e^\theta) = \log z + \sum_i \log(1 + e^{\theta_i - \tau}) + k' \tau`.
    """
    tau = _tilt(theta, degree, k_reduced)
    logit = theta - tau
    leaves = _leaves(logit, degree, lambda x: (jax.nn.sigmoid(-x), jax.nn.sigmoid(x)))
    levels = _inside(leaves, degree, _linear_convolve)
    z = _root_coefficient(levels, k_reduced, 0.0)[1]
    log_z = jnp.log(z) + jax.nn.softplus(logit).sum(-1) + k_reduced * tau[..., 0]
    return levels, leaves[..., : logit.shape[-1], 1], z, log_z


def _tilted_marginals(theta, degree, k_reduced):
    r""":math:`\mu_i = p_i P(N_{-i} = k' - 1) / P(N = k')` by the outside pass, and the log-partition."""
    levels, p, z, log_z = _count_distribution(theta, degree, k_reduced)
    outside = _leaf_outside(levels, _root_outside(k_reduced, degree, z.dtype))
    return p * outside[..., : p.shape[-1]] / z[..., None], log_z


def _degenerate_log_partition(theta, k):
    """``k = 0`` or ``k = d``: one subset (or none, where fewer than ``k`` items are present)."""
    present = theta > -jnp.inf
    log_z = jnp.where(present.sum(-1) >= k, 0.0, -jnp.inf).astype(theta.dtype)
    return log_z if k == 0 else log_z + jnp.where(present, theta, 0).sum(-1)


def _subset_marginals(theta, k):
    """``(mu, log_z)`` of NaN-free ``(B, d)`` logits, computed in the wide dtype."""
    present = (theta > -jnp.inf).astype(theta.dtype)
    if min(k, theta.shape[-1] - k) == 0:
        return present * (k > 0), _degenerate_log_partition(theta, k)
    reduced, k_reduced, offset, degree = _reduced_problem(theta.astype(wide_dtype(theta.dtype)), k)
    mu, log_z = _tilted_marginals(reduced, degree, k_reduced)
    if 2 * k > theta.shape[-1]:
        mu = present - mu
    return mu.astype(theta.dtype), (log_z + offset).astype(theta.dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _subset_log_partition(theta, k):
    if min(k, theta.shape[-1] - k) == 0:
        return _degenerate_log_partition(theta, k)
    reduced, k_reduced, offset, degree = _reduced_problem(theta.astype(wide_dtype(theta.dtype)), k)
    return (_count_distribution(reduced, degree, k_reduced)[-1] + offset).astype(theta.dtype)


@_subset_log_partition.defjvp
def _subset_log_partition_jvp(k, primals, tangents):
    (theta,), (v,) = primals, tangents
    log_z = _subset_log_partition(theta, k)
    return log_z, log_partition_tangent(theta, v, log_z, 0.0, lambda t: _subset_marginals(t, k)[0])


def _flat(logits):
    return logits.reshape(-1, logits.shape[-1])


def log_elementary_symmetric(logits: ArrayLike, k: int) -> jax.Array:
    r""":math:`\log e_k(e^{\theta}) = \log \sum_{|S| = k} \prod_{i \in S} e^{\theta_i}`, shape ``logits.shape[:-1]``.

    The k-subset log-partition :math:`A(\theta)`; its gradient is :func:`subset_marginals`, and
    both are exact and differentiable to any order.
    """
    logits, k = _check_args(logits, k)
    return _masked_log_partition(logits, k)


# Compiled once per shape and k: eager calls then cost one dispatch, not a retrace of every branch.
@functools.partial(jax.jit, static_argnums=1)
def _masked_log_partition(logits, k):
    flat, nan = mask_nan_elements(_flat(logits), 1)
    return fill_nan(_subset_log_partition(flat, k), nan, 0).reshape(logits.shape[:-1])


def subset_marginals(logits: ArrayLike, k: int) -> jax.Array:
    r"""Inclusion probabilities :math:`\mu_i = P(i \in S) = \partial A / \partial\theta_i`; they sum to ``k``.

    :math:`\mu_i = e^{\theta_i} e_{k-1}(e^{\theta_{-i}}) / e_k(e^{\theta})` by the inside-outside pass.
    """
    logits, k = _check_args(logits, k)
    _raise_if_too_few_items(logits, k)
    return _masked_marginals(logits, k)


@functools.partial(jax.jit, static_argnums=1)
def _masked_marginals(logits, k):
    flat, nan = mask_nan_elements(_flat(logits), 1)
    mu = undefined_where_empty(*_subset_marginals(flat, k), 1)
    mu = mu + jax.lax.stop_gradient(jnp.clip(mu, 0, 1) - mu)  # a saturated mu an ulp above 1
    return fill_nan(mu, nan, 1).reshape(logits.shape)


def sample_k_subset(key: jax.Array, logits: ArrayLike, k: int, sample_shape: tuple[int, ...] = ()) -> jax.Array:
    r"""Exact sample from :math:`q(x) \propto e^{\langle\theta, x\rangle}` over k-hot vectors.

    Backward sampling through the tree of partial polynomials: the root holds ``k``; a node with
    count ``c`` gives ``i`` to its left half with probability
    :math:`\propto e_i(\text{left})\, e_{c-i}(\text{right})`, down to single items
    (:math:`\lceil\log_2 d\rceil` batched steps; on the complement for ``k > d / 2``).

    :param key: a ``jax.random`` key.
    :returns: ``sample_shape + logits.shape``.
    """
    logits, k = _check_args(logits, k)
    _raise_if_too_few_items(logits, k)
    return _sample_k_subset(key, logits, k, tuple(sample_shape))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _sample_k_subset(key, logits, k, sample_shape):
    d = logits.shape[-1]
    theta, nan = mask_nan_elements(jax.lax.stop_gradient(logits), 1)
    reduced, k_reduced, _, degree = _reduced_problem(theta, k)
    counts = jnp.broadcast_to(k_reduced, sample_shape + k_reduced.shape)[..., None]
    if degree > 0:
        levels = _inside(_leaves(reduced, degree, lambda t: (jnp.zeros_like(t), t)), degree, _log_convolve)
        for depth, level in enumerate(reversed(levels[:-1])):
            table = jnp.broadcast_to(level, sample_shape + level.shape)
            left, right = table[..., 0::2, :], table[..., 1::2, :]
            length = left.shape[-1]
            rest = counts[..., None] - jnp.arange(length)
            terms = left + jnp.take_along_axis(right, jnp.clip(rest, 0, length - 1), -1)
            weights = jnp.where((rest >= 0) & (rest < length), terms, -jnp.inf)
            gumbel = sample_noise(jax.random.fold_in(key, depth), "gumbel", weights.shape, weights.dtype)
            to_left = jnp.argmax(weights + gumbel, -1)
            counts = jnp.stack([to_left, counts - to_left], -1).reshape(to_left.shape[:-1] + (2 * to_left.shape[-1],))
        x = counts[..., :d].astype(logits.dtype)
    else:
        x = jnp.zeros(sample_shape + logits.shape, logits.dtype)
    if 2 * k > d:
        x = (theta > -jnp.inf).astype(logits.dtype) - x
    return fill_nan(x, nan, 1)


def top_k_mask(utilities: ArrayLike, k: int) -> jax.Array:
    """k-hot indicator of the ``k`` largest entries; ties go to the lowest index (deterministic), no gradient."""
    utilities, k = _check_args(utilities, k, "utilities")
    _raise_if_too_few_items(utilities, k, "utilities")
    u, nan = mask_nan_elements(jax.lax.stop_gradient(utilities), 1)
    order = jnp.argsort(-u, axis=-1, stable=True)[..., :k]
    mask = (order[..., None] == jnp.arange(u.shape[-1])).any(-2).astype(utilities.dtype)
    return fill_nan(mask, nan, 1)


def enumerate_k_subsets(d: int, k: int, dtype: DTypeLike | None = jnp.float32) -> jax.Array:
    """All k-hot vectors of length ``d`` in lexicographic order of their index sets, ``(C(d, k), d)``."""
    return jnp.asarray(enumeration.k_subsets(d, check_k(k, d)), dtype)


# ---------------------------------------------------------------------------------------------- relaxations
# Each regularised relaxation is x_i = h(v_i - tau) with h increasing and tau fixed by sum(x) = k. tau is bracketed
# and bisected without gradient, then one Newton step from the bisected point is taken differentiably: its value is
# exact (the closed form on the active set for the piecewise-linear h) and its derivative is the implicit one,
# d tau / d v_i = h'_i / sum_j h'_j.


def _threshold_relaxation(h, h_prime, bracket, v, k):
    v, k = _check_args(v, k, "v")
    d = v.shape[-1]
    _raise_if_too_few_items(v, k, "v")
    if k in (0, d):
        # every item must be present for k = d (NaN under jit where one is absent), as for exp_family
        undefined = jnp.isnan(v) | (k == d) & (v == -jnp.inf).any(-1, keepdims=True)
        return jnp.where(undefined, jnp.nan, float(k == d)) + 0 * jnp.where(jnp.isfinite(v), v, 0)
    return _solve_threshold(h, h_prime, bracket, v, k)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 4))
def _solve_threshold(h, h_prime, bracket, v, k):
    d = v.shape[-1]
    v, nan = mask_nan_elements(v, 1)
    # Shift by the k-th largest score: tau lives near 0 and bisection keeps full relative precision.
    shift = jax.lax.stop_gradient(jax.lax.top_k(v, k)[0][..., -1:])
    z = v - shift
    z0 = jax.lax.stop_gradient(z)

    def bisect(_, bounds):
        lo, hi = bounds
        mid = (lo + hi) / 2
        above = h(z0 - mid).sum(-1, keepdims=True) > k
        return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

    lo, hi = jax.lax.fori_loop(0, 64, bisect, bracket(z0, d))
    tau = (lo + hi) / 2
    slope = h_prime(z0 - tau).sum(-1, keepdims=True)
    excess = h(z - tau).sum(-1, keepdims=True) - k
    tau = tau + jnp.where(slope > 0, excess / jnp.where(slope > 0, slope, 1), 0 * excess)
    # With exactly k items present every one is taken (tau = -inf for the smooth relaxations).
    present = z > -jnp.inf
    saturated = present.sum(-1, keepdims=True) == k
    x = jnp.where(saturated, present.astype(z.dtype) + 0 * jnp.where(present, z, 0), h(z - tau))
    return fill_nan(x, nan, 1)


def _clip01(z):
    # Derivative 1 on the open interval only, like _clip01_prime (jnp.clip splits it at the ends).
    return jnp.where((z > 0) & (z < 1), z, (z >= 1).astype(z.dtype))


def _clip01_prime(z):
    return ((z > 0) & (z < 1)).astype(z.dtype)


def _capped_exp(z):
    return jnp.exp(jnp.minimum(z, 0))


def _capped_exp_prime(z):
    return jnp.where(z < 0, jnp.exp(jnp.minimum(z, 0)), 0)


def _sigmoid_prime(z):
    s = jax.nn.sigmoid(z)
    return s * (1 - s)


# Brackets of tau for scores shifted to their k-th largest entry (``d`` items).
def _clip01_bracket(z, d):
    return jnp.full_like(z[..., :1], -1.0), jnp.zeros_like(z[..., :1])


def _capped_exp_bracket(z, d):
    return jnp.zeros_like(z[..., :1]), jnp.full_like(z[..., :1], math.log(d))


def _sigmoid_bracket(z, d):
    lowest = jnp.where(z == -jnp.inf, jnp.inf, z).min(-1, keepdims=True)
    return lowest - math.log(d) - 1, jnp.full_like(z[..., :1], math.log(d))


def capped_simplex_projection(v: ArrayLike, k: int) -> jax.Array:
    r"""Euclidean relaxation: the projection of ``v`` onto :math:`\{x \in [0,1]^d : \sum_i x_i = k\}`.

    .. math:: x = \arg\max_{x} \langle v, x\rangle - \tfrac12 \|x\|^2 = \operatorname{clip}(v - \tau, 0, 1),

    with :math:`\tau` such that the entries sum to ``k``; the Jacobian is the implicit one,
    :math:`\mathrm{diag}(1_F) - 1_F 1_F^\top / |F|` on the free set :math:`F = \{0 < x_i < 1\}`.
    For ``k = 1`` this is sparsemax.
    """
    return _threshold_relaxation(_clip01, _clip01_prime, _clip01_bracket, v, k)


def categorical_entropy_top_k(v: ArrayLike, k: int) -> jax.Array:
    r"""Categorical-entropy relaxation: :math:`x_i = \min(1, e^{v_i - \tau})`, :math:`\sum_i x_i = k`.

    The maximiser of :math:`\langle v, x\rangle - \sum_i x_i \log x_i` over the capped simplex.
    """
    return _threshold_relaxation(_capped_exp, _capped_exp_prime, _capped_exp_bracket, v, k)


def binary_entropy_top_k(v: ArrayLike, k: int) -> jax.Array:
    r"""Binary-entropy relaxation: :math:`x_i = \sigma(v_i - \tau)`, :math:`\sum_i x_i = k`.

    The maximiser of :math:`\langle v, x\rangle + \sum_i H_b(x_i)` over the capped simplex.
    """
    return _threshold_relaxation(jax.nn.sigmoid, _sigmoid_prime, _sigmoid_bracket, v, k)


#: the relaxations of the paper's table, each a map ``(scores U / t, k) -> x`` in the capped simplex
RELAXATIONS = {
    "exp_family": subset_marginals,
    "euclidean": capped_simplex_projection,
    "categorical_entropy": categorical_entropy_top_k,
    "binary_entropy": binary_entropy_top_k,
}


def relaxed_top_k(v: ArrayLike, k: int, relaxation: str = "exp_family") -> jax.Array:
    """The relaxed top-k of scores ``v`` (utilities over temperature) by the named relaxation."""
    check_relaxation(relaxation)
    return RELAXATIONS[relaxation](v, k)
