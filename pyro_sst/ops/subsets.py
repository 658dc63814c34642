r"""k-subsets: the elementary-symmetric log-partition, its marginals, samplers and relaxations.

Value layout (shared with :mod:`numpyro_sst`): a k-subset of ``d`` items is a
k-hot vector of shape ``(..., d)``.

The exponential family :math:`q(x) \propto e^{\langle\theta, x\rangle}` over
k-hot vectors has log-partition :math:`A(\theta) = \log e_k(e^{\theta})`, the
elementary symmetric polynomial, i.e. the coefficient of :math:`z^k` in
:math:`\prod_i (1 + e^{\theta_i} z)`. It is computed by multiplying the
factors pairwise in a balanced tree, in log-space and truncated at degree
``k``: :math:`O(d k)` work like the sequential DP, but in
:math:`\lceil\log_2 d\rceil` batched steps instead of ``d``. Every step is a
max-shifted log-sum-exp, so nothing overflows; the marginals are the exact
gradient of that computation, and their backward is exact second-order
autograd (no finite differences). The same tree of partial polynomials drives
the exact sampler: walking it top-down, each node splits its count between its
two halves in proportion to the product of their coefficients.

For ``k > d / 2`` everything runs on the complement,
:math:`e_k(w) = \prod_i w_i \; e_{d-k}(1 / w)`, so the work is
:math:`O(d \min(k, d - k))` and ``k = d`` costs :math:`O(d)`.

Special inputs: ``-inf`` logits are absent items. Where fewer than ``k`` items
are present the log-partition is ``-inf`` and the marginals, the samplers, the
top-k and the relaxations raise :class:`ValueError`. A NaN logit gives NaN
results (NaN-filled samples and masks) for its batch element.
"""

import functools
import itertools
import math

import torch

from .logspace import (
    fill_nan,
    gradient_marginals,
    log_sum_exp,
    mask_nan_elements,
    program_log_partition,
    zeros_in_graph,
)
from .noise import sample_noise
from .tracing import opaque_call
from .validation import check_int, check_tensor

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


def check_k(k, d):
    """``k`` as an int in ``[0, d]``."""
    return check_int(k, "k", 0, d, f" (d={d} items)")


def _check_args(logits, k, name="logits"):
    check_tensor(logits, name, 1)
    return check_k(k, logits.shape[-1])


def _check_enough_items(logits, k, name="logits"):
    """Raise where fewer than ``k`` entries of a (NaN-free) batch element are above ``-inf``."""
    present = (logits > -math.inf).sum(-1)
    if bool((present < k).any()):
        raise ValueError(
            f"{name}: k={k} exceeds the number of items with logits above -inf "
            f"(as few as {int(present.min())} in some batch element)"
        )


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


def _multiply(left, right, k):
    """Log-coefficients of the product of two truncated polynomials, ``(..., L)`` each."""
    out_length = min(2 * (left.shape[-1] - 1), k) + 1
    return log_sum_exp(_split_terms(left, right, torch.arange(out_length, device=left.device)), -1)


def _polynomial_tree(logits, k):
    """Levels of log-coefficients of :math:`\\prod_{i \\in \\text{block}} (1 + e^{\\theta_i} z)` up to degree k.

    ``d`` is padded to a power of two ``2^m`` with absent items (``-inf`` logits,
    factor 1); level ``l`` has shape ``(..., 2^(m - l), min(2^l, k) + 1)`` for the
    blocks of ``2^l`` consecutive items, and the last level is the whole product.
    """
    d = int(logits.shape[-1])
    width = 1 << max(d - 1, 0).bit_length()
    theta = torch.nn.functional.pad(logits, (0, width - d), value=-math.inf)
    level = torch.stack([torch.zeros_like(theta), theta], -1)[..., : min(k, 1) + 1]
    levels = [level]
    while level.shape[-2] > 1:
        level = _multiply(level[..., 0::2, :], level[..., 1::2, :], k)
        levels.append(level)
    return levels


def _reduced_problem(theta, k):
    r"""``(theta', k', offset)`` with :math:`e_k(e^\theta) = e^{\text{offset}} e_{k'}(e^{\theta'})` and ``k' <= d / 2``.

    For ``k > d / 2``: the complement over the present items ``F`` (logits above ``-inf``),
    :math:`\theta' = -\theta_F` (absent items stay absent), ``k' = |F| - k`` per batch element
    (negative where fewer than ``k`` items are present) and offset :math:`\sum_F \theta_i`.
    """
    d = theta.shape[-1]
    if 2 * k <= d:
        return theta, torch.full(theta.shape[:-1], k, dtype=torch.long, device=theta.device), None
    present = theta > -math.inf
    complement = torch.where(present, -theta, torch.full_like(theta, -math.inf))
    offset = torch.where(present, theta, torch.zeros_like(theta)).sum(-1)
    return complement, present.sum(-1) - k, offset


def _log_elementary_symmetric_program(theta, k):
    reduced, k_reduced, offset = _reduced_problem(theta, k)
    degree = k if offset is None else theta.shape[-1] - k
    coefficients = _polynomial_tree(reduced, degree)[-1][..., 0, :]
    log_e = coefficients.gather(-1, k_reduced.clamp(min=0)[..., None]).squeeze(-1)
    log_e = log_e.masked_fill(k_reduced < 0, -math.inf)
    return log_e if offset is None else log_e + offset


def log_elementary_symmetric(logits, k):
    r""":math:`\log e_k(e^{\theta}) = \log \sum_{|S| = k} \prod_{i \in S} e^{\theta_i}`, shape ``logits.shape[:-1]``.

    The k-subset log-partition :math:`A(\theta)`. Its gradient is
    :func:`subset_marginals`; both are exact and twice differentiable.
    """
    k = _check_args(logits, k)
    return program_log_partition(functools.partial(_log_elementary_symmetric_program, k=k), logits, "k-subset")


def subset_marginals(logits, k):
    r"""Inclusion probabilities :math:`\mu_i = P(i \in S) = \partial A / \partial\theta_i`.

    :math:`\mu_i = e^{\theta_i} e_{k-1}(e^{\theta_{-i}}) / e_k(e^{\theta})`; sums to ``k``.
    Differentiable: the backward is the exact Hessian-vector product of
    :math:`A`, by second-order autograd through the log-space tree.
    """
    k = _check_args(logits, k)
    mu = gradient_marginals(functools.partial(_log_elementary_symmetric_program, k=k), logits, "k-subset")
    return mu.clamp(0, 1)  # rounding can leave a saturated probability an ulp above 1


def sample_k_subset(logits, k, sample_shape=(), generator=None):
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
    d = logits.shape[-1]
    theta, nan = mask_nan_elements(logits, 1)
    _check_enough_items(theta, k)
    reduced, k_reduced, offset = _reduced_problem(theta, k)
    levels = _polynomial_tree(reduced, k if offset is None else d - k)
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


def top_k_mask(utilities, k):
    """k-hot indicator of the ``k`` largest entries; ties go to the lowest index (deterministic)."""
    k = _check_args(utilities, k, "utilities")
    return opaque_call(functools.partial(_top_k_mask, k=k), utilities)


def _top_k_mask(utilities, k):
    utilities, nan = mask_nan_elements(utilities, 1)
    _check_enough_items(utilities, k, "utilities")
    order = torch.sort(utilities, dim=-1, descending=True, stable=True).indices
    mask = torch.zeros_like(utilities).scatter(-1, order[..., :k], 1.0)
    return fill_nan(mask, nan, 1)


def enumerate_k_subsets(d, k, dtype=None, device=None):
    """All k-hot vectors of length ``d`` in lexicographic order of their index sets, ``(C(d, k), d)``."""
    k = check_k(k, d)
    if math.comb(d, k) > 10**6:
        raise ValueError(f"enumerate_k_subsets: C(d={d}, k={k}) = {math.comb(d, k)} subsets is too many (max 10^6)")
    index = torch.tensor(list(itertools.combinations(range(d), k)), dtype=torch.long, device=device)
    x = torch.zeros(index.shape[0], d, dtype=dtype, device=device)
    return x.scatter(-1, index.reshape(index.shape[0], k), 1.0)


# ---------------------------------------------------------------------------------------------- relaxations
# Each regularised relaxation is x_i = h(v_i - tau) with h increasing and tau fixed by sum(x) = k. tau is bracketed
# and bisected without gradient, then one Newton step from the bisected point is taken differentiably: its value is
# exact (it is the closed form on the active set for the piecewise-linear h) and its derivative is the implicit one,
# d tau / d v_i = h'_i / sum_j h'_j.


def _kth_largest(v, k):
    """The k-th largest entry of each row (raising where fewer than ``k`` entries are above ``-inf``)."""
    _check_enough_items(v, k, "v")
    return torch.topk(v, k, dim=-1).values[..., -1:]


def _threshold_relaxation(h, h_prime, bracket, v, k):
    d = v.shape[-1]
    if k in (0, d):
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
    return z.clamp(0, 1)


def _clip01_prime(z):
    return ((z > 0) & (z < 1)).to(z.dtype)


def _capped_exp(z):
    return torch.exp(z.clamp(max=0))


def _capped_exp_prime(z):
    return torch.where(z < 0, torch.exp(z.clamp(max=0)), torch.zeros_like(z))


def _sigmoid_prime(z):
    s = torch.sigmoid(z)
    return s * (1 - s)


def capped_simplex_projection(v, k):
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


def categorical_entropy_top_k(v, k):
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


def binary_entropy_top_k(v, k):
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


def check_relaxation(relaxation):
    if relaxation not in RELAXATIONS:
        raise ValueError(f"relaxation must be one of {tuple(RELAXATIONS)}, got {relaxation!r}")


def relaxed_top_k(v, k, relaxation="exp_family"):
    """The relaxed top-k of scores ``v`` (utilities over temperature) by the named relaxation."""
    check_relaxation(relaxation)
    return RELAXATIONS[relaxation](v, k)
