r"""Utility (perturbation) distributions and the KL divergences between them.

The stochastic argmax trick perturbs logits with i.i.d. noise ``E``:
``U = theta + E``. Supported noise:

* ``"gumbel"``: standard Gumbel, :math:`E = -\log(-\log V)`, :math:`V \sim U(0,1)`.
* ``"gaussian"``: standard normal.
* ``"negative_exponential"``: :math:`E = -\mathrm{Exp}(1)` (support :math:`(-\infty, 0]`).

``utility_kl`` is :math:`\mathrm{KL}(\theta_q + E \,\|\, \theta_p + E)` per entry:

.. math::

    \text{gumbel: } \theta_q - \theta_p - 1 + e^{\theta_p - \theta_q},\qquad
    \text{gaussian: } \tfrac12 (\theta_q - \theta_p)^2,\qquad
    \text{neg. exp.: } \theta_p - \theta_q \text{ if } \theta_q \le \theta_p \text{ else } \infty.

``utility_log_prob`` is the log-density of ``U`` (the score of REINFORCE on hard samples). With
Gumbel noise the top-k set of ``U`` has a closed form (the Plackett-Luce probabilities of its
``k!`` orderings, summed: :func:`gumbel_top_k_log_prob`), and ``U`` can be drawn given that set
(:func:`conditional_gumbel_utilities`, the conditioning REBAR and RELAX need): draw an ordering
``sigma`` of the set, then the ordered maxima top-down, :math:`U_{\sigma_j} \sim
\mathrm{Gumbel}(L_j)` truncated below :math:`U_{\sigma_{j-1}}` with :math:`L_j` the log-sum-exp
of the logits not yet placed, and every other item :math:`\mathrm{Gumbel}(\theta_i)` truncated
below :math:`U_{\sigma_k}` (Maddison et al. 2014; Kool et al. 2019).
"""

import itertools
import math

import torch

from sst_common.checks import NOISES, check_noise, check_ordered_k

__all__ = [
    "NOISES",
    "conditional_gumbel_utilities",
    "gumbel_top_k_log_prob",
    "sample_noise",
    "utility_kl",
    "utility_log_prob",
]


def sample_noise(
    noise: str,
    shape: tuple[int, ...],
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw i.i.d. noise of the given kind and shape."""
    check_noise(noise)
    if noise == "gaussian":
        return torch.randn(shape, dtype=dtype, device=device, generator=generator)
    tiny = torch.finfo(dtype or torch.get_default_dtype()).tiny
    v = torch.rand(shape, dtype=dtype, device=device, generator=generator).clamp(min=tiny, max=1 - 1e-7)
    if noise == "gumbel":
        return -(-v.log()).log()
    return v.log()


def utility_kl(noise: str, theta_q: torch.Tensor, theta_p: torch.Tensor) -> torch.Tensor:
    """Entry-wise KL between the utility distributions ``theta_q + E`` and ``theta_p + E``.

    An entry absent from both (``-inf`` in both) contributes 0; absent from one only, ``inf``.
    """
    check_noise(noise)
    # inf - inf is NaN: zero the difference where the two agree, so that neither the value nor
    # the gradient sees it.
    diff = torch.where(theta_q == theta_p, torch.zeros_like(theta_q), theta_q - theta_p)
    if noise == "gumbel":
        lost = diff == -math.inf  # exp(inf) - inf is NaN; the KL is inf
        finite_diff = torch.where(lost, torch.zeros_like(diff), diff)
        return torch.where(lost, torch.full_like(diff, math.inf), finite_diff - 1 + torch.exp(-finite_diff))
    if noise == "gaussian":
        return 0.5 * diff**2
    return torch.where(diff <= 0, -diff, torch.full_like(diff, float("inf")))


def utility_log_prob(noise: str, utilities: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Entry-wise log-density of the utilities ``U = logits + E`` (differentiable in ``logits``)."""
    check_noise(noise)
    e = utilities - logits
    if noise == "gumbel":
        return -e - torch.exp(-e)
    if noise == "gaussian":
        return -0.5 * e**2 - 0.5 * math.log(2 * math.pi)
    return torch.where(e <= 0, e, torch.full_like(e, -math.inf))


def _log_remaining(logits, items, ordered):
    """Log-sum-exp of the logits not placed before each position of the orderings ``ordered`` of ``items``."""
    theta = torch.gather(logits.unsqueeze(-2).expand(ordered.shape[:-1] + logits.shape[-1:]), -1, ordered)
    outside = logits.scatter(-1, items, -math.inf).logsumexp(-1)
    suffix = torch.logcumsumexp(theta.flip(-1), -1).flip(-1)
    return theta, torch.logaddexp(outside.reshape(outside.shape + (1,) * (ordered.dim() - outside.dim())), suffix)


def gumbel_top_k_log_prob(logits: torch.Tensor, value: torch.Tensor, k: int) -> torch.Tensor:
    r""":math:`\log P(\operatorname{top-k}(\theta + G) = S)` for the k-hot ``value`` marking ``S`` (Gumbel ``G``).

    The sum of the Plackett-Luce probabilities of the ``k!`` orderings of ``S``; ``k`` up to
    ``sst_common.checks.MAX_ORDERED_K`` (7). ``k = 1`` is ``log_softmax``. Differentiable in ``logits``.
    """
    check_ordered_k(k)
    value, logits = torch.broadcast_tensors(value, logits)
    items = torch.topk(value, k, -1).indices
    ordered = items[..., torch.tensor(list(itertools.permutations(range(k))), device=items.device)]
    theta, log_remaining = _log_remaining(logits, items, ordered)
    return (theta - log_remaining).sum(-1).logsumexp(-1)


def conditional_gumbel_utilities(logits: torch.Tensor, utilities: torch.Tensor, k: int) -> torch.Tensor:
    r"""``utilities`` as a draw from :math:`p(U \mid \operatorname{top-k}(U))`, reparameterised in ``logits``.

    Equal in value to ``utilities`` (Gumbel perturbations of ``logits``); the gradient is that of
    the conditional sampler of the module docstring with its noise held fixed at the values that
    reproduce ``utilities`` (the coupling REBAR uses: given the set, that noise has the right
    distribution, and sharing it with the unconditional draw cuts the variance). The ordering of
    the set is a discrete part of the draw: the second output, :math:`\log p(\sigma \mid S)`,
    carries its score. :returns: ``(conditional_utilities, order_log_prob)``, shapes
    ``utilities.shape`` and ``utilities.shape[:-1]``.
    """
    check_ordered_k(k)
    utilities, logits = torch.broadcast_tensors(utilities.detach(), logits)
    order = torch.topk(utilities, k, -1).indices  # the set, in its drawn order
    orderings = order[..., torch.tensor(list(itertools.permutations(range(k))), device=order.device)]
    theta, log_remaining = _log_remaining(logits, order, orderings)
    log_probs = (theta - log_remaining).sum(-1)
    top = torch.gather(utilities, -1, order)
    # The noise that reproduces U: invert e^{-U_j} = sum_{i <= j} e^{-g_i} (g_j = L_j + G_j) and
    # U_i = -log(e^{-U_k} + e^{-h_i}) (h_i = theta_i + G_i) for the items outside the set.
    previous = torch.cat([torch.full_like(top[..., :1], math.inf), top[..., :-1]], -1)
    top_noise = (top - torch.log(-torch.expm1(top - previous)) - log_remaining[..., 0, :]).detach()
    outside = torch.zeros_like(utilities, dtype=torch.bool).scatter(-1, order, True).logical_not()
    h = utilities - torch.log(-torch.expm1(utilities - top[..., -1:]))
    others_noise = torch.where(outside, h - logits, torch.zeros_like(h)).detach()
    top_tilde = -torch.logcumsumexp(-(log_remaining[..., 0, :] + top_noise), -1)
    others = -torch.logaddexp(-top_tilde[..., -1:], -(logits + others_noise))
    return others.scatter(-1, order, top_tilde), log_probs[..., 0] - log_probs.logsumexp(-1)
