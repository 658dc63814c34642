r"""Gradient estimators for :math:`\nabla_\theta\, \mathbb{E}_{x \sim q_\theta}[f(x)]` over structures.

Every estimator is a *surrogate*: the ``surrogate`` of the returned :class:`Estimate` has the value
of a Monte-Carlo estimate of :math:`\mathbb{E}_q[f(x)]` (shape ``batch_shape``, the mean over
``num_samples`` draws) and its autograd gradient is the estimator. ``f`` maps structures of shape
``(..., *event_shape)`` to values of shape ``(...)``; parameters inside ``f`` get their ordinary
(pathwise) gradient too.

* :func:`exact_expectation`: the sum over the support, and so the exact gradient (small structures).
* :func:`score_function`: REINFORCE,
  :math:`\hat g = \frac1N \sum_i (f(x_i) - b_i)\, \nabla \log q(x_i)`, with a baseline ``b``:
  none, a constant, leave-one-out (RLOO, :math:`b_i = \frac{1}{N-1}\sum_{j \ne i} f(x_j)`) or a
  learned callable (NVIL), which ``baseline_loss`` trains. The exponential-family classes score
  :math:`\log q(x)`; the relaxed classes score their hard samples :math:`x = \arg\max \langle U,
  x\rangle` through the density of the utilities :math:`U = \theta + E`, as the paper's REINFORCE
  baselines do.
* :func:`relax` (Grathwohl et al. 2018) and :func:`rebar` (Tucker et al. 2017): with utilities
  :math:`z`, the hard sample :math:`b = H(z)`, conditional utilities :math:`\tilde z \sim p(z \mid b)`
  and a control variate :math:`c`,

  .. math::

      \hat g = \big(f(b) - c(\tilde z)\big) \nabla \log p(b) + \nabla c(z) - \nabla c(\tilde z),

  unbiased for any differentiable :math:`c`; REBAR is :math:`c(z) = \eta f(\sigma_\lambda(z))`, the
  relaxed sample at temperature :math:`\lambda`. Exact conditioning exists for Bernoulli utilities
  (``pyro.distributions.RelaxedBernoulli``), Gumbel-max (categorical) and Gumbel-top-k (k-subsets,
  :func:`pyro_sst.ops.conditional_gumbel_utilities`, whose drawn ordering adds the score term
  :math:`-c(\tilde z) \nabla \log p(\sigma \mid b)`). Train the parameters of :math:`c` on
  :func:`variance_loss`, never on the surrogate.
"""

from collections.abc import Callable, Iterable
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Distribution
from torch.distributions import RelaxedBernoulli as TorchRelaxedBernoulli

from sst_common.checks import check_baseline, check_int, unsupported_distribution, values_per_structure
from sst_common.elements import with_leading_axis
from sst_common.structures import is_gumbel_top_k

from . import ops
from .distributions.base import ExponentialFamily, PerturbAndRelax

#: a function of structures ``(..., *event_shape)`` to values ``(...)``
Reward = Callable[[torch.Tensor], torch.Tensor]

__all__ = ["Estimate", "exact_expectation", "rebar", "relax", "score_function", "variance_loss"]


class Estimate(NamedTuple):
    """``surrogate``: value = Monte-Carlo estimate of ``E[f]``, gradient = the estimator (``batch_shape``).

    ``baseline_loss`` (score function only): the mean squared error ``(f(x) - b)^2`` of the baseline,
    whose gradient trains a learned one; ``None`` for the other estimators.
    """

    surrogate: torch.Tensor
    baseline_loss: Optional[torch.Tensor] = None


def _centred(x):
    """Value 0, gradient that of ``x``."""
    return x - x.detach()


def exact_expectation(f: Reward, dist: Distribution) -> torch.Tensor:
    r""":math:`\mathbb{E}_q[f(x)] = \sum_x q(x) f(x)` by enumerating the support; its gradient is exact.

    Supports the exponential-family classes (``SpanningTree``, ``Arborescence``, ``KSubset``), the
    hard samples of ``RelaxedTopK`` / ``RelaxedOneHotCategorical`` with Gumbel noise (Gumbel-top-k
    probabilities, ``k <= 7``) and ``RelaxedBernoulli``. Perturb-and-MAP probabilities of trees have
    no closed form: use the exponential-family classes for exact references.
    """
    values, log_probs = _support(dist)
    return (log_probs.exp() * values_per_structure(f, values, dist)).sum(0)


def _support(dist):
    if isinstance(dist, ExponentialFamily):
        values = dist.enumerate_support()
        return values, dist.log_prob(values)
    if is_gumbel_top_k(dist):
        values = ops.enumerate_k_subsets(dist.num_items, dist.k, dtype=dist.logits.dtype, device=dist.logits.device)
        values = with_leading_axis(values, len(dist.batch_shape)).expand((-1,) + dist.batch_shape + dist.event_shape)
        return values, ops.gumbel_top_k_log_prob(dist.logits, values, dist.k)
    if isinstance(dist, TorchRelaxedBernoulli):
        values = torch.tensor([0.0, 1.0], dtype=dist.logits.dtype, device=dist.logits.device)
        values = with_leading_axis(values, dist.logits.dim()).expand((2,) + dist.logits.shape)
        return values, Bernoulli(logits=dist.logits).log_prob(values)
    raise unsupported_distribution(dist, "exact_expectation")


def score_function(
    f: Reward,
    dist: Distribution,
    num_samples: int = 1,
    baseline: float | str | Callable[[], torch.Tensor] | None = None,
) -> Estimate:
    r"""REINFORCE with an optional baseline: an unbiased estimator for any class with hard samples.

    :param baseline: ``None``, a float, ``"loo"`` (leave-one-out over the ``num_samples`` draws,
        needs ``num_samples >= 2``) or a callable returning a tensor that broadcasts with
        ``batch_shape`` (a learned, input-dependent baseline; it must not depend on the draws).
    :returns: :class:`Estimate` with ``baseline_loss`` the mean of ``(f(x) - b)^2``.
    """
    n = check_int(num_samples, "num_samples", 1)
    check_baseline(baseline, n)
    x, log_q = _hard_samples_and_scores(dist, n)
    values = values_per_structure(f, x, dist)
    b = _baseline_values(baseline, values.detach(), n)
    surrogate = values + (values.detach() - b.detach()) * _centred(log_q)
    return Estimate(surrogate.mean(0), ((values.detach() - b) ** 2).mean(0))


def _hard_samples_and_scores(dist, n):
    if isinstance(dist, ExponentialFamily):
        x = dist.sample((n,))
        return x, dist.log_prob(x)
    if isinstance(dist, PerturbAndRelax):
        utilities = dist.sample_utilities((n,)).detach()
        return dist.solve(utilities), dist.utility_log_prob(utilities)
    if isinstance(dist, TorchRelaxedBernoulli):
        bernoulli = Bernoulli(logits=dist.logits)
        x = bernoulli.sample((n,))
        return x, bernoulli.log_prob(x)
    raise unsupported_distribution(dist, "score_function")


def _baseline_values(baseline, values, n):
    if baseline is None:
        return torch.zeros_like(values)
    if isinstance(baseline, str):
        return (values.sum(0, keepdim=True) - values) / (n - 1)
    if callable(baseline):
        return torch.as_tensor(baseline(), dtype=values.dtype, device=values.device)
    return torch.full_like(values, float(baseline))


def relax(f: Reward, dist: Distribution, control_variate: Reward, num_samples: int = 1) -> Estimate:
    r"""RELAX: the unbiased estimator above with ``c(z) = control_variate(relaxed sample of z)``.

    :param control_variate: a differentiable function of the relaxed sample (shape
        ``(..., *event_shape)``) to values of shape ``(...)``; train its parameters on
        :func:`variance_loss` of the surrogate.
    """
    return _relax_estimate(f, dist, lambda z: control_variate(_relaxed(dist, z, None)), num_samples)


def rebar(
    f: Reward,
    dist: Distribution,
    temperature: float | torch.Tensor | None = None,
    eta: float | torch.Tensor = 1.0,
    num_samples: int = 1,
) -> Estimate:
    r"""REBAR: RELAX with :math:`c(z) = \eta f(\sigma_\lambda(z))`, the relaxed sample at ``temperature``.

    ``temperature`` (default: the distribution's) and ``eta`` may be tensors that require grad;
    tune them on :func:`variance_loss`.
    """
    return _relax_estimate(f, dist, lambda z: eta * f(_relaxed(dist, z, temperature)), num_samples)


def _relaxed(dist, z, temperature):
    if isinstance(dist, TorchRelaxedBernoulli):
        return torch.sigmoid(z / (dist.temperature if temperature is None else temperature))
    if temperature is None:
        return dist.relax(z)
    return dist._relax(z / dist._per_event(torch.as_tensor(temperature, dtype=z.dtype, device=z.device)))


def _relax_estimate(f, dist, control_variate, num_samples):
    n = check_int(num_samples, "num_samples", 1)
    z, hard, z_tilde, log_p_hard, log_p_order = _conditional_draws(dist, n)
    f_hard = values_per_structure(f, hard, dist)
    c_z = values_per_structure(control_variate, z, dist, "control_variate")
    c_tilde = control_variate(z_tilde)
    # No path to the logits: the coefficient of the score terms (it still depends on c's own parameters).
    c_fixed = control_variate(z_tilde.detach())
    surrogate = (
        f_hard
        + (f_hard.detach() - c_fixed) * _centred(log_p_hard)
        - c_fixed * _centred(log_p_order)
        + _centred(c_z - c_tilde)
    )
    return Estimate(surrogate.mean(0))


def _conditional_draws(dist, n):
    """``(z, b, z_tilde, log p(b), log p(ordering | b))``: ``z_tilde`` equals ``z``, reparameterised given ``b``."""
    if is_gumbel_top_k(dist):
        z = dist.sample_utilities((n,))
        hard = dist.solve(z.detach())
        logits = dist.logits.expand(z.shape)
        z_tilde, log_p_order = ops.conditional_gumbel_utilities(logits, z, dist.k)
        return z, hard, z_tilde, ops.gumbel_top_k_log_prob(logits, hard, dist.k), log_p_order
    if isinstance(dist, TorchRelaxedBernoulli):
        return _conditional_logistic(dist.logits.expand((n,) + dist.logits.shape))
    raise unsupported_distribution(dist, "rebar and relax")


def _conditional_logistic(theta):
    """Bernoulli utilities ``z = theta + logit(u)``, ``b = [z > 0]`` and ``z`` reparameterised given ``b``.

    Given ``b`` the uniform is ``u = 1 - p (1 - v)`` (``b = 1``) or ``u = (1 - p) v`` (``b = 0``) with
    ``v ~ U(0, 1)``; ``v`` is held at the value that reproduces ``z`` (Tucker et al.'s coupling).
    """
    tiny = torch.finfo(theta.dtype).tiny
    u = torch.rand(theta.shape, dtype=theta.dtype, device=theta.device).clamp(tiny, 1 - 1e-7)
    z = theta + u.log() - torch.log1p(-u)
    hard = (z > 0).to(theta.dtype).detach()
    logistic = (z - theta).detach()
    log_p, log_not_p = F.logsigmoid(theta), F.logsigmoid(-theta)
    is_one = hard > 0
    log_v = torch.where(is_one, F.logsigmoid(-logistic) - log_p, F.logsigmoid(logistic) - log_not_p).detach()
    small = torch.where(is_one, log_p, log_not_p) + log_v  # log(1 - u) if b = 1, else log u
    large = torch.log(-torch.expm1(small))
    z_tilde = theta + torch.where(is_one, large - small, small - large)
    log_p_hard = hard * log_p + (1 - hard) * log_not_p
    return z, hard, z_tilde, log_p_hard, torch.zeros_like(log_p_hard)


def variance_loss(surrogate: torch.Tensor, params: Iterable[torch.Tensor]) -> torch.Tensor:
    r"""The single-sample variance surrogate :math:`\sum \hat g^2` (RELAX's objective for the control variate).

    :math:`\hat g` is the gradient of ``surrogate.sum()`` with respect to ``params`` (the
    distribution's parameters), kept differentiable; since :math:`\mathbb{E}[\hat g]` does not
    depend on the control variate, descending this loss in the control variate's parameters (or
    REBAR's ``eta`` and ``temperature``) minimises the estimator's variance.
    """
    grads = torch.autograd.grad(surrogate.sum(), list(params), create_graph=True)
    return sum((g**2).sum() for g in grads)
