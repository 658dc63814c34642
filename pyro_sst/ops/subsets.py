r"""k-subsets: the elementary-symmetric log-partition, its marginals, samplers and relaxations.

Value layout (shared with :mod:`numpyro_sst`): a k-subset of ``d`` items is a
k-hot vector of shape ``(..., d)``.

The exponential family :math:`q(x) \propto e^{\langle\theta, x\rangle}` over
k-hot vectors has log-partition :math:`A(\theta) = \log e_k(e^{\theta})`, the
elementary symmetric polynomial, i.e. the coefficient of :math:`z^k` in
:math:`\prod_i (1 + e^{\theta_i} z)`. It is computed by multiplying the
factors pairwise in a balanced tree (the *inside* pass), truncated at degree
``k``: :math:`O(d k)` work like the sequential DP, but in
:math:`\lceil\log_2 d\rceil` batched steps instead of ``d``. The marginals
:math:`\mu_i = e^{\theta_i} e_{k-1}(e^{\theta_{-i}}) / e_k` come from the
matching *outside* pass down the same tree, and their backward (the Hessian-
vector product of :math:`A`) is the forward-mode derivative of the two passes:
no finite differences and no second-order autograd graph.

The passes run on a tilted problem that has no range limit. With
:math:`p_i = \sigma(\theta_i - \tau)` for any :math:`\tau`,
:math:`\prod_i (1 + e^{\theta_i - \tau} z) = \prod_i (1 + e^{\theta_i - \tau}) \, E[z^N]`, ``N`` the
number of successes of independent Bernoulli(:math:`p_i`) trials, so

.. math::

    \log e_k(e^\theta) = \log P(N = k) + \sum_i \log(1 + e^{\theta_i - \tau}) + k \tau,
    \qquad \mu_i = p_i \, P(N_{-i} = k - 1) / P(N = k).

Every node of the tree holds a probability distribution (positive sums only, so no loss of
relative precision, and no overflow), in float64, and :math:`\tau` is bisected (without
gradient) to put the mean of ``N`` at ``k``, where :math:`P(N = k)` is near its mode and far
from underflow at any spread of the logits. The log-space inside pass (max-shifted
log-sum-exps) drives the exact sampler: walking the tree top-down, each node splits its count
between its two halves in proportion to the product of their coefficients.

For ``k > d / 2`` everything runs on the complement,
:math:`e_k(w) = \prod_i w_i \; e_{d-k}(1 / w)`, so the work is
:math:`O(d \min(k, d - k))` and ``k = d`` costs :math:`O(d)`.

Special inputs: ``-inf`` logits are absent items. Where fewer than ``k`` items
are present the log-partition is ``-inf`` and the marginals, the samplers, the
top-k and the relaxations raise :class:`ValueError`. A NaN logit gives NaN
results (NaN-filled samples and masks) for its batch element.
"""

import functools
import math
import warnings

import torch
from torch.autograd.function import once_differentiable

from sst_common import enumeration
from sst_common.checks import check_k, check_relaxation, too_few_items_message
from sst_common.constants import SUBSET_DIRECT_CONVOLUTION_MAX_LENGTH, subset_tilt_bisection_steps

from .logspace import (
    fill_nan,
    log_partition_backward,
    log_sum_exp,
    mask_nan_elements,
    zeros_in_graph,
)
from .noise import sample_noise
from .tracing import opaque_call, untraced
from .validation import check_array

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
    check_array(logits, name, 1)
    return check_k(k, logits.shape[-1])


def _raise_if_too_few_items(logits, k, name="logits"):
    """Raise where fewer than ``k`` entries of a (NaN-free) batch element are above ``-inf``."""
    present = (logits > -math.inf).sum(-1)
    if bool((present < k).any()):
        raise ValueError(too_few_items_message(name, k, int(present.min())))


def _split_terms(left, right, totals):
    """Log-weights of the ways to split each total between two truncated polynomials (``(..., L)`` each).

    ``terms[..., t, i] = left[..., i] + right[..., totals[..., t] - i]``, ``-inf`` where
    ``totals - i`` falls outside ``[0, L)``.
    """
    length = left.shape[-1]
    rest = totals[..., None] - torch.arange(length, device=left.device)
    shape = torch.broadcast_shapes(left.shape[:-1] + (1, length), rest.shape)
    gathered = right[..., None, :].expand(shape).gather(-1, rest.clamp(0, length - 1).expand(shape))
    terms = left[..., None, :] + gathered
    return torch.where((rest >= 0) & (rest < length), terms, torch.full_like(terms, -math.inf))


def _reduced_problem(theta, k):
    r"""``(theta', k', offset, degree)`` with :math:`e_k(e^\theta) = e^{\text{offset}} e_{k'}(e^{\theta'})`.

    ``degree`` (an int, ``<= d / 2``) bounds every ``k'``: the polynomials are truncated there.
    For ``k > d / 2``: the complement over the present items ``F`` (logits above ``-inf``),
    :math:`\theta' = -\theta_F` (absent items stay absent), ``k' = |F| - k`` per batch element
    (negative where fewer than ``k`` items are present), offset :math:`\sum_F \theta_i` and
    ``degree = d - k``; otherwise ``theta' = theta``, ``k' = degree = k`` and offset ``None``.
    """
    d = int(theta.shape[-1])
    if 2 * k <= d:
        return theta, torch.full(theta.shape[:-1], k, dtype=torch.long, device=theta.device), None, k
    present = theta > -math.inf
    complement = torch.where(present, -theta, torch.full_like(theta, -math.inf))
    offset = torch.where(present, theta, torch.zeros_like(theta)).sum(-1)
    return complement, present.sum(-1) - k, offset, d - k


def _windows(second, first_length, out_length, offset, fill):
    """``w[..., t, i] = second[..., t + offset - i']`` with ``i' = first_length - 1 - i`` (``fill`` outside).

    A strided view of the padded ``second``: the (reversed) convolution matrix without a gather.
    Needs ``0 <= offset < first_length``.
    """
    left = first_length - 1 - offset
    right = max(0, out_length + first_length - 1 - left - int(second.shape[-1]))
    padded = torch.nn.functional.pad(second, (left, right), value=fill)
    return padded.unfold(-1, first_length, 1)[..., :out_length, :]


def _linear_convolve(first, second, out_length, offset):
    """``out[..., t] = sum_i first[..., i] second[..., t + offset - i]`` for ``t < out_length``."""
    return _convolve_reversed(first.flip(-1), second, out_length, offset)


def _convolve_reversed(first_reversed, second, out_length, offset):
    """:func:`_linear_convolve` given ``first`` with its coefficients reversed (what the convolution matrix pairs).

    ``first_reversed`` may have one more axis than ``second``, ``(..., m, L)`` by ``(..., L')``: ``m``
    polynomials times the same one (one product with the shared convolution matrix, no broadcast
    copy). Directly for short ``first``, by FFT for long ones (:data:`SUBSET_DIRECT_CONVOLUTION_MAX_LENGTH`).
    """
    shared = first_reversed.dim() > second.dim()
    first_length = int(first_reversed.shape[-1])
    if first_length <= SUBSET_DIRECT_CONVOLUTION_MAX_LENGTH:
        windows = _windows(second, first_length, out_length, offset, 0.0)
        if shared:
            return (windows @ first_reversed.mT).mT
        return (windows @ first_reversed[..., None]).squeeze(-1)
    size = first_length + int(second.shape[-1]) - 1
    n_fft = 1 << (size - 1).bit_length()
    second_spectrum = torch.fft.rfft(second, n_fft)
    if shared:
        second_spectrum = second_spectrum[..., None, :]
    full = torch.fft.irfft(torch.fft.rfft(first_reversed.flip(-1), n_fft) * second_spectrum, n_fft)
    return torch.nn.functional.pad(full[..., offset:size], (0, max(0, offset + out_length - size)))[..., :out_length]


def _log_convolve(first, second, out_length, offset):
    """:func:`_linear_convolve` of log-coefficients, in log space."""
    windows = _windows(second, int(first.shape[-1]), out_length, offset, -math.inf)
    return log_sum_exp(windows + first.flip(-1)[..., None, :], -1)


def _leaves(theta, degree, factor):
    """Leaf polynomials ``(a_i, b_i) = factor(theta_i)``, i.e. ``a_i + b_i z`` (truncated at ``degree``).

    ``d`` is padded to a power of two with absent items (``theta = -inf``, for which ``factor`` gives the
    polynomial one). Shape ``(..., 2^m, min(degree, 1) + 1)``.
    """
    d = int(theta.shape[-1])  # a traced value under jit.trace
    theta = torch.nn.functional.pad(theta, (0, (1 << max(d - 1, 0).bit_length()) - d), value=-math.inf)
    return torch.stack(factor(theta), -1)[..., : min(degree, 1) + 1]


def _inside(leaves, degree, convolve):
    """Levels of the products of the leaf polynomials over blocks of ``2^l`` items, truncated at ``degree``.

    Level ``l`` has shape ``(..., 2^(m - l), min(2^l, degree) + 1)``; the last level is the whole product.
    """
    level = leaves
    levels = [level]
    while level.shape[-2] > 1:
        length = int(level.shape[-1])
        level = convolve(level[..., 0::2, :], level[..., 1::2, :], min(2 * (length - 1), degree) + 1, 0)
        levels.append(level)
    return levels


def _leaf_outside(levels, root_outside):
    r"""Outside coefficients of degree ``degree - 1`` at every leaf, ``(..., 2^m)``.

    The outside polynomial of a node is the product of all other leaves' polynomials times
    :math:`z^{\text{degree} - k}`, so that :math:`[z^{\text{degree}}]\,(\text{inside} \cdot
    \text{outside}) = e_k`. Each node keeps only the window of degrees ``degree - L + 1 ..
    degree`` (``L`` its inside length) that pairs with its inside coefficients, so the down
    pass costs what the up pass costs.
    """
    outside = root_outside[..., None, :]
    for inside in reversed(levels[:-1]):
        nodes, length = (int(size) for size in inside.shape[-2:])
        # each child's outside is its sibling's inside times the parent's outside: siblings swapped, reversed
        siblings_reversed = inside.unflatten(-2, (nodes // 2, 2)).flip((-2, -1))
        outside = _convolve_reversed(siblings_reversed, outside, length, int(outside.shape[-1]) - length)
        outside = outside.flatten(-3, -2)
    return outside[..., 0]


def _root_outside(k_reduced, degree, dtype):
    r""":math:`z^{\text{degree} - k}` per batch element, as coefficients of degrees ``0 .. degree``."""
    return (torch.arange(degree + 1, device=k_reduced.device) == degree - k_reduced[..., None]).to(dtype)


def _root_coefficient(levels, k_reduced, absent):
    """``(root, root[k'])`` of the inside levels: the coefficient of degree ``k'``, ``absent`` where ``k' < 0``."""
    root = levels[-1][..., 0, :]
    coefficient = root.gather(-1, k_reduced.clamp(min=0)[..., None]).squeeze(-1)
    return root, coefficient.masked_fill(k_reduced < 0, absent)


def _tilt(theta, degree, k_reduced):
    r"""A tilt :math:`\tau` per element, ``(B, 1)``, without gradient, that puts the mean of :math:`N` near ``k'``.

    Bisection of :math:`\sum_i \sigma(\theta_i - \tau) = k'` on
    :math:`[s - \log d - 1, s + \log d]`, ``s`` the ``k'``-th largest logit (the largest for ``k' = 0``),
    where the sum is below ``k'`` at the top end (see
    :func:`~sst_common.constants.subset_tilt_bisection_steps`). Where fewer than ``k'`` items are present
    any tilt serves: :math:`P(N = k') = 0` exactly.
    """
    theta = theta.detach()
    d = int(theta.shape[-1])
    top = theta.topk(degree, -1).values
    anchor = top.gather(-1, (k_reduced[..., None] - 1).clamp(0, degree - 1))
    anchor = anchor.masked_fill(~torch.isfinite(anchor), 0.0)
    lo, hi = anchor - math.log(d) - 1, anchor + math.log(d)
    k_reduced = k_reduced[..., None].to(theta.dtype)
    for _ in range(subset_tilt_bisection_steps(d)):
        mid = (lo + hi) / 2
        above = torch.sigmoid(theta - mid).sum(-1, keepdim=True) > k_reduced
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    return (lo + hi) / 2


def _count_distribution(theta, degree, k_reduced):
    r"""Up pass on the tilted probabilities in float64: ``(levels, p, z, log_z)``.

    ``levels`` hold the distributions of the counts :math:`N` over blocks of items, ``p`` the
    leaves' :math:`p_i`, ``z`` :math:`= P(N = k')` and
    :math:`\log e_{k'}(e^\theta) = \log z + \sum_i \log(1 + e^{\theta_i - \tau}) + k' \tau`.
    """
    theta = theta.double()
    tau = _tilt(theta, degree, k_reduced)
    logit = theta - tau
    leaves = _leaves(logit, degree, lambda x: (torch.sigmoid(-x), torch.sigmoid(x)))
    levels = _inside(leaves, degree, _linear_convolve)
    z = _root_coefficient(levels, k_reduced, 0.0)[1]
    log_z = torch.log(z) + torch.nn.functional.softplus(logit).sum(-1) + k_reduced * tau[..., 0]
    return levels, leaves[..., : logit.shape[-1], 1], z, log_z


def _tilted_marginals(theta, degree, k_reduced):
    r""":math:`\mu_i = p_i P(N_{-i} = k' - 1) / P(N = k')` by the outside pass, and the log-partition."""
    levels, p, z, log_z = _count_distribution(theta, degree, k_reduced)
    outside = _leaf_outside(levels, _root_outside(k_reduced, degree, z.dtype))
    return p * outside[..., : p.shape[-1]] / z[..., None], log_z


def _subset_log_partition(theta, k):
    """``log e_k(e^theta)`` of NaN-free ``(B, d)`` logits."""
    if min(k, theta.shape[-1] - k) == 0:
        log_z = torch.where((theta > -math.inf).sum(-1) >= k, 0.0, -math.inf).to(theta.dtype)
        return log_z if k == 0 else log_z + torch.where(theta > -math.inf, theta, 0).sum(-1)
    reduced, k_reduced, offset, degree = _reduced_problem(theta, k)
    log_z = _count_distribution(reduced, degree, k_reduced)[-1]
    return (log_z if offset is None else log_z + offset.double()).to(theta.dtype)


def _subset_marginals(theta, k):
    """``(mu, log_z)`` of NaN-free ``(B, d)`` logits."""
    present = (theta > -math.inf).to(theta.dtype)
    if min(k, theta.shape[-1] - k) == 0:
        return present * (k > 0), _subset_log_partition(theta, k)
    reduced, k_reduced, offset, degree = _reduced_problem(theta, k)
    mu, log_z = _tilted_marginals(reduced, degree, k_reduced)
    if offset is not None:
        mu, log_z = present - mu, log_z + offset.double()
    return mu.to(theta.dtype), log_z.to(theta.dtype)


def _flat(logits):
    return logits.reshape(-1, logits.shape[-1])


class _SubsetLogPartition(torch.autograd.Function):
    @staticmethod
    def forward(ctx, theta, k):
        with untraced():  # shapes and branches are data here, not traced values
            flat, nan = mask_nan_elements(_flat(theta), 1)
            log_z = fill_nan(_subset_log_partition(flat, k), nan, 0).reshape(theta.shape[:-1])
        ctx.k = k
        ctx.save_for_backward(theta, log_z)
        return log_z.clone()  # jit.trace maps a Function's outputs through its recorded body

    @staticmethod
    def backward(ctx, grad):
        theta, log_z = ctx.saved_tensors
        marginals = lambda t: _SubsetMarginals.apply(t, ctx.k)  # noqa: E731
        return log_partition_backward(grad, theta, log_z, torch.zeros_like(theta), marginals), None


class _SubsetMarginals(torch.autograd.Function):
    r"""Marginals by an explicit inside-outside pass over the tree of partial polynomials.

    Float64 linear space (positive sums only, so exact while the range check passes), log
    space for the other batch elements. The backward is the Hessian-vector product
    :math:`\nabla^2 A\, v`, the forward-mode derivative of the same pass (the Jacobian of
    the marginals is the symmetric Hessian), so no autograd graph is stored.
    """

    @staticmethod
    def forward(ctx, theta, k):
        with untraced():
            flat, nan = mask_nan_elements(_flat(theta), 1)
            _raise_if_too_few_items(flat, k)  # the only empty support: fewer than k items above -inf
            mu, _ = _subset_marginals(flat, k)
            mu = fill_nan(mu.clamp(0, 1), nan, 1).reshape(theta.shape)  # clamp: a saturated mu an ulp above 1
        ctx.k = k
        ctx.save_for_backward(theta)
        return mu.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_mu):
        (theta,) = ctx.saved_tensors
        flat, nan = mask_nan_elements(_flat(theta), 1)
        v = _flat(grad_mu).masked_fill(nan[..., None], 0)
        with warnings.catch_warnings():
            # torch.func.jvp scripts a helper of torch's own with torch.jit.script, which torch 2.13 reports as
            # deprecated: nothing this library or its users can change.
            warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
            _, hvp = torch.func.jvp(lambda t: _subset_marginals(t, ctx.k)[0], (flat,), (v,))
        return hvp.masked_fill(nan[..., None], 0).reshape(theta.shape), None


def log_elementary_symmetric(logits: torch.Tensor, k: int) -> torch.Tensor:
    r""":math:`\log e_k(e^{\theta}) = \log \sum_{|S| = k} \prod_{i \in S} e^{\theta_i}`, shape ``logits.shape[:-1]``.

    The k-subset log-partition :math:`A(\theta)`. Its gradient is
    :func:`subset_marginals`; both are exact and twice differentiable.
    """
    k = _check_args(logits, k)
    return _SubsetLogPartition.apply(logits, k)


def subset_marginals(logits: torch.Tensor, k: int) -> torch.Tensor:
    r"""Inclusion probabilities :math:`\mu_i = P(i \in S) = \partial A / \partial\theta_i`.

    :math:`\mu_i = e^{\theta_i} e_{k-1}(e^{\theta_{-i}}) / e_k(e^{\theta})`; sums to ``k``.
    Computed by an inside-outside pass (see :class:`_SubsetMarginals`); differentiable, with the
    exact Hessian-vector product of :math:`A` as the backward.
    """
    k = _check_args(logits, k)
    return _SubsetMarginals.apply(logits, k)


def sample_k_subset(
    logits: torch.Tensor, k: int, sample_shape: tuple[int, ...] = (), generator: torch.Generator | None = None
) -> torch.Tensor:
    r"""Exact sample from :math:`q(x) \propto e^{\langle\theta, x\rangle}` over k-hot vectors.

    Backward sampling through the tree of partial polynomials: the root holds
    ``k``; a node with count ``c`` gives ``i`` to its left half with probability
    :math:`\propto e_i(\text{left})\, e_{c-i}(\text{right})`, down to single items.
    :math:`\lceil\log_2 d\rceil` batched steps (on the complement for ``k > d / 2``);
    returns ``sample_shape + logits.shape``.
    """
    k = _check_args(logits, k)
    sample = functools.partial(_sample_k_subset, k=k, sample_shape=torch.Size(sample_shape), generator=generator)
    return opaque_call(sample, logits)


def _sample_k_subset(logits, k, sample_shape, generator):
    d = int(logits.shape[-1])
    theta, nan = mask_nan_elements(logits, 1)
    _raise_if_too_few_items(theta, k)
    reduced, k_reduced, offset, degree = _reduced_problem(theta, k)
    levels = _inside(_leaves(reduced, degree, lambda t: (torch.zeros_like(t), t)), degree, _log_convolve)
    counts = k_reduced.expand(sample_shape + k_reduced.shape)[..., None]
    for level in reversed(levels[:-1]):
        table = level.expand(sample_shape + level.shape)
        weights = _split_terms(table[..., 0::2, :], table[..., 1::2, :], counts[..., None]).squeeze(-2)
        gumbel = sample_noise("gumbel", weights.shape, weights.dtype, weights.device, generator)
        to_left = (weights + gumbel).argmax(-1)
        counts = torch.stack([to_left, counts - to_left], -1).flatten(-2)
    x = counts[..., :d].to(logits.dtype)
    if offset is not None:
        x = (theta > -math.inf).to(logits.dtype) - x
    return fill_nan(x, nan, 1)


def top_k_mask(utilities: torch.Tensor, k: int) -> torch.Tensor:
    """k-hot indicator of the ``k`` largest entries; ties go to the lowest index (deterministic)."""
    k = _check_args(utilities, k, "utilities")
    return opaque_call(functools.partial(_top_k_mask, k=k), utilities)


def _top_k_mask(utilities, k):
    utilities, nan = mask_nan_elements(utilities, 1)
    _raise_if_too_few_items(utilities, k, "utilities")
    order = torch.sort(utilities, dim=-1, descending=True, stable=True).indices
    mask = torch.zeros_like(utilities).scatter(-1, order[..., :k], 1.0)
    return fill_nan(mask, nan, 1)


def enumerate_k_subsets(
    d: int, k: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """All k-hot vectors of length ``d`` in lexicographic order of their index sets, ``(C(d, k), d)``."""
    k = check_k(k, d)
    return torch.as_tensor(enumeration.k_subsets(d, k), dtype=dtype, device=device)


# ---------------------------------------------------------------------------------------------- relaxations
# Each regularised relaxation is x_i = h(v_i - tau) with h increasing and tau fixed by sum(x) = k. tau is bracketed
# and bisected without gradient, then one Newton step from the bisected point is taken differentiably: its value is
# exact (it is the closed form on the active set for the piecewise-linear h) and its derivative is the implicit one,
# d tau / d v_i = h'_i / sum_j h'_j.


def _check_present(v, k):
    """Raise where fewer than ``k`` entries of a NaN-free row of ``v`` are above ``-inf``."""
    _raise_if_too_few_items(mask_nan_elements(v, 1)[0], k, "v")
    return v.new_zeros(())


def _kth_largest(v, k):
    """The k-th largest entry of each row (raising where fewer than ``k`` entries are above ``-inf``)."""
    _raise_if_too_few_items(v, k, "v")
    return torch.topk(v, k, dim=-1).values[..., -1:]


def _threshold_relaxation(h, h_prime, bracket, v, k):
    d = v.shape[-1]
    if k in (0, d):
        if k == d:  # every item must be present, as for the exp_family relaxation
            opaque_call(functools.partial(_check_present, k=k), v)
        return torch.full_like(v, float(k == d)).masked_fill(torch.isnan(v), math.nan) + zeros_in_graph(v)
    v, nan = mask_nan_elements(v, 1)
    # Shift by the k-th largest score: tau lives near 0 and bisection keeps full relative precision.
    shift = opaque_call(functools.partial(_kth_largest, k=k), v)
    with torch.no_grad():
        z = v.detach() - shift
        lo, hi = bracket(z, d)
        for _ in range(64):
            mid = (lo + hi) / 2
            above = h(z - mid).sum(-1, keepdim=True) > k
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        tau = (lo + hi) / 2
    z = v - shift
    slope = h_prime(z.detach() - tau).sum(-1, keepdim=True)
    excess = h(z - tau).sum(-1, keepdim=True) - k
    tau = tau + torch.where(slope > 0, excess / torch.where(slope > 0, slope, torch.ones_like(slope)), 0 * excess)
    # With exactly k items present every one is taken (tau = -inf for the smooth relaxations).
    present = z > -math.inf
    saturated = present.sum(-1, keepdim=True) == k
    x = torch.where(saturated, present.to(z.dtype) + zeros_in_graph(z), h(z - tau))
    return fill_nan(x, nan, 1)


def _clip01(z):
    # Derivative 1 on the open interval only, like _clip01_prime (clamp passes it at the ends too, which is wrong
    # where bisection leaves an item exactly at 0 or 1: there x is locally constant).
    return torch.where((z > 0) & (z < 1), z, (z >= 1).to(z.dtype))


def _clip01_prime(z):
    return ((z > 0) & (z < 1)).to(z.dtype)


def _capped_exp(z):
    return torch.exp(z.clamp(max=0))


def _capped_exp_prime(z):
    return torch.where(z < 0, torch.exp(z.clamp(max=0)), torch.zeros_like(z))


def _sigmoid_prime(z):
    s = torch.sigmoid(z)
    return s * (1 - s)


def capped_simplex_projection(v: torch.Tensor, k: int) -> torch.Tensor:
    r"""Euclidean relaxation: the projection of ``v`` onto :math:`\{x \in [0,1]^d : \sum_i x_i = k\}`.

    .. math:: x = \arg\max_{x} \langle v, x\rangle - \tfrac12 \|x\|^2 = \operatorname{clip}(v - \tau, 0, 1),

    with :math:`\tau` such that the entries sum to ``k`` (found by bisection
    after a shift to the k-th largest score; exact on the final active set).
    The Jacobian is the implicit one: :math:`\mathrm{diag}(1_F) - 1_F 1_F^\top / |F|` on
    the free set :math:`F = \{0 < x_i < 1\}`.
    """
    k = _check_args(v, k, "v")
    return _threshold_relaxation(
        _clip01, _clip01_prime, lambda z, d: (torch.full_like(z[..., :1], -1.0), torch.zeros_like(z[..., :1])), v, k
    )


def categorical_entropy_top_k(v: torch.Tensor, k: int) -> torch.Tensor:
    r"""Categorical-entropy relaxation: :math:`x_i = \min(1, e^{v_i - \tau})`, :math:`\sum_i x_i = k`.

    The maximiser of :math:`\langle v, x\rangle - \sum_i x_i \log x_i` over the
    capped simplex (the paper's relaxed top-k by a capped softmax).
    """
    k = _check_args(v, k, "v")
    return _threshold_relaxation(
        _capped_exp,
        _capped_exp_prime,
        lambda z, d: (torch.zeros_like(z[..., :1]), torch.full_like(z[..., :1], math.log(d))),
        v,
        k,
    )


def binary_entropy_top_k(v: torch.Tensor, k: int) -> torch.Tensor:
    r"""Binary-entropy relaxation: :math:`x_i = \sigma(v_i - \tau)`, :math:`\sum_i x_i = k`.

    The maximiser of :math:`\langle v, x\rangle + \sum_i H_b(x_i)`,
    :math:`H_b(p) = -p\log p - (1-p)\log(1-p)`, over the capped simplex.
    """
    k = _check_args(v, k, "v")
    return _threshold_relaxation(
        torch.sigmoid,
        _sigmoid_prime,
        lambda z, d: (
            z.masked_fill(z == -math.inf, math.inf).amin(-1, keepdim=True) - math.log(d) - 1,
            torch.full_like(z[..., :1], math.log(d)),
        ),
        v,
        k,
    )


#: the relaxations of the paper's table, each a map ``(scores U / t, k) -> x`` in the capped simplex
RELAXATIONS = {
    "exp_family": subset_marginals,
    "euclidean": capped_simplex_projection,
    "categorical_entropy": categorical_entropy_top_k,
    "binary_entropy": binary_entropy_top_k,
}


def relaxed_top_k(v: torch.Tensor, k: int, relaxation: str = "exp_family") -> torch.Tensor:
    """The relaxed top-k of scores ``v`` (utilities over temperature) by the named relaxation."""
    check_relaxation(relaxation)
    return RELAXATIONS[relaxation](v, k)
