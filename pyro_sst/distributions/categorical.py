r"""Gumbel-softmax (Concrete): the relaxed one-hot categorical as the ``k = 1`` stochastic softmax trick.

A categorical variable is a 1-subset, so ``RelaxedTopK(logits, 1, t)`` already is Gumbel-softmax:
its utilities are :math:`U = \theta + G` and its relaxed sample is :math:`\mu(U/t) =
\operatorname{softmax}(U/t)` (the ``"euclidean"`` relaxation gives sparsemax instead). The classes
here add Pyro's signature ``(temperature, probs=None, logits=None)``, ``hard_sample``, the utility
KL and, for :class:`RelaxedOneHotCategorical`, the Concrete density (Maddison et al., 2017; Jang
et al., 2017) as ``log_prob``, numerically equal to :class:`pyro.distributions.RelaxedOneHotCategorical`'s:

.. math::

    \log p(y) = \log\Gamma(K) + (K - 1)\log t
        + \sum_{i=1}^K \big(\theta_i - t\log y_i - \log y_i\big)
        - K \operatorname{logsumexp}_j (\theta_j - t \log y_j).

Mirrors :mod:`numpyro_sst.distributions.categorical`.
"""

import math

import torch
from torch.distributions import constraints as torch_constraints
from torch.distributions.kl import register_kl

from sst_common.checks import INVALID_CATEGORICAL_LOGITS, INVALID_PROBS, NO_CLASS, check_event_shape

from ..ops.validation import check_array
from . import constraints
from .base import validating
from .subsets import RelaxedTopK

__all__ = ["RelaxedOneHotCategorical", "RelaxedOneHotCategoricalStraightThrough"]


def _logits_from(probs, logits, validate_args):
    if (probs is None) == (logits is None):
        raise ValueError("pass exactly one of probs or logits")
    if logits is not None:
        return logits
    check_array(probs, "probs", 1)
    if validating(validate_args):
        valid = (torch.isfinite(probs) & (probs >= 0)).all(-1) & (probs.sum(-1) > 0)
        if not bool(valid.all()):
            raise ValueError(INVALID_PROBS)
    return probs.log()


class RelaxedOneHotCategorical(RelaxedTopK):
    r"""Relaxed one-hot categorical (Gumbel-softmax / Concrete): ``RelaxedTopK(logits, 1, temperature)``.

    ``rsample()`` is :math:`\operatorname{softmax}((\theta + G)/t)`, ``hard_sample()`` the one-hot
    :math:`\arg\max(\theta + G)`, an exact categorical sample; ``log_prob`` is the Concrete density of
    a relaxed value (see the module docstring); the registered KL is the utility KL.

    :param temperature: positive scalar or tensor broadcastable to the batch shape.
    :param probs: ``(..., K)`` event probabilities (unnormalised are fine), or
    :param logits: ``(..., K)`` event log-probabilities (unnormalised).
    """

    def __init__(
        self,
        temperature: float | torch.Tensor,
        probs: torch.Tensor | None = None,
        logits: torch.Tensor | None = None,
        validate_args: bool | None = None,
    ) -> None:
        super().__init__(_logits_from(probs, logits, validate_args), 1, temperature, validate_args=validate_args)

    @property
    def probs(self) -> torch.Tensor:
        return self.logits.softmax(-1)

    def _validate_logits(self, logits):
        # -inf is a class of probability 0, as in torch's Categorical; a row of them has no class to draw.
        if bool((torch.isnan(logits) | (logits == math.inf)).any()):
            raise ValueError(INVALID_CATEGORICAL_LOGITS)
        if bool((logits == -math.inf).all(-1).any()):
            raise ValueError(NO_CLASS)

    def _relax(self, scores):
        # softmax (the k = 1 subset marginals) from its logarithm, each entry at least the dtype's smallest normal
        # number: an entry that underflowed to 0 (t = 0.1 over 1000 classes) would make log_prob of the sample
        # -inf or NaN; the Concrete density at the returned point is then finite, and the point moves by at most
        # K * tiny. The bound is applied after exp, which may round tiny to a subnormal that is flushed to 0.
        # where every class is absent the sample is undefined: raise, as hard_sample does (a trace gets NaN)
        if not torch.jit.is_tracing() and bool((scores == -math.inf).all(-1).any()):
            raise ValueError(NO_CLASS)
        return scores.log_softmax(-1).exp().clamp(min=torch.finfo(scores.dtype).tiny)

    @constraints.dependent_property(is_discrete=False, event_dim=1)
    def support(self) -> constraints.Constraint:
        return torch_constraints.simplex

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """The Concrete density of a point ``value`` of the open simplex."""
        check_event_shape(value, self.event_shape)
        if self._validate_args:
            self._validate_sample(value)
        K = self.event_shape[-1]
        t = self.temperature
        log_y = value.log()
        score = self.logits - t[..., None] * log_y
        return math.lgamma(K) + (K - 1) * t.log() + (score - log_y).sum(-1) - K * score.logsumexp(-1)


class RelaxedOneHotCategoricalStraightThrough(RelaxedOneHotCategorical):
    r"""Straight-through Gumbel-softmax: ``rsample()`` is the one-hot :math:`\arg\max(\theta + G)` in the
    forward pass with the gradient of the relaxed sample.

    Its values are exact one-hot categorical samples, so ``log_prob`` is the categorical
    log-probability :math:`\theta_i - \operatorname{logsumexp}(\theta)` of the one-hot value (Pyro's
    class of the same name scores the soft value it hides inside the returned tensor instead).
    """

    def __init__(
        self,
        temperature: float | torch.Tensor,
        probs: torch.Tensor | None = None,
        logits: torch.Tensor | None = None,
        validate_args: bool | None = None,
    ) -> None:
        super().__init__(temperature, probs, logits, validate_args)
        self.straight_through = True

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self) -> constraints.Constraint:
        return constraints.k_subset(1, relaxed=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """:math:`\\log p(x) = \\langle\\theta, x\\rangle - \\operatorname{logsumexp}(\\theta)` for a one-hot ``x``."""
        check_event_shape(value, self.event_shape)
        if self._validate_args:
            self._validate_sample(value)
        return (self.logits * value).sum(-1) - self.logits.logsumexp(-1)


for _cls in (RelaxedOneHotCategorical, RelaxedOneHotCategoricalStraightThrough):
    register_kl(_cls, _cls)(lambda q, p: q._utility_kl(p))
