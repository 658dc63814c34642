r"""Gumbel-softmax (Concrete): the relaxed one-hot categorical as the ``k = 1`` stochastic softmax trick (NumPyro).

A categorical variable is a 1-subset, so ``RelaxedTopK(logits, 1, t)`` already is Gumbel-softmax:
its utilities are :math:`U = \theta + G` and its relaxed sample is :math:`\mu(U/t) =
\operatorname{softmax}(U/t)` (the ``"euclidean"`` relaxation gives sparsemax instead). The classes
here add Pyro's signature ``(temperature, probs=None, logits=None)`` and, for
:class:`RelaxedOneHotCategorical`, the Concrete density (Maddison et al., 2017; Jang et al., 2017)
as ``log_prob``, numerically equal to :class:`pyro.distributions.RelaxedOneHotCategorical`'s:

.. math::

    \log p(y) = \log\Gamma(K) + (K - 1)\log t
        + \sum_{i=1}^K \big(\theta_i - t\log y_i - \log y_i\big)
        - K \operatorname{logsumexp}_j (\theta_j - t \log y_j).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln
from jax.typing import ArrayLike
from numpyro.distributions import constraints as numpyro_constraints
from numpyro.distributions.kl import kl_divergence

from sst_common.checks import INVALID_CATEGORICAL_LOGITS, INVALID_PROBS, NO_CLASS

from ..ops.validation import check_array, is_concrete, raise_if
from . import constraints
from .base import validate_value, validating
from .subsets import RelaxedTopK

__all__ = ["RelaxedOneHotCategorical", "RelaxedOneHotCategoricalStraightThrough"]


def _logits_from(probs, logits, validate_args):
    if (probs is None) == (logits is None):
        raise ValueError("pass exactly one of probs or logits")
    if logits is not None:
        return logits
    probs = check_array(probs, "probs", 1)
    if validating(validate_args) and is_concrete(probs):
        valid = (np.isfinite(probs) & (probs >= 0)).all(-1) & (probs.sum(-1) > 0)
        if not np.all(valid):
            raise ValueError(INVALID_PROBS)
    return jnp.log(probs)


class RelaxedOneHotCategorical(RelaxedTopK):
    r"""Relaxed one-hot categorical (Gumbel-softmax / Concrete): ``RelaxedTopK(logits, 1, temperature)``.

    ``sample(key)`` is :math:`\operatorname{softmax}((\theta + G)/t)` (reparameterised),
    ``hard_sample(key)`` the one-hot :math:`\arg\max(\theta + G)`, an exact categorical sample;
    ``log_prob`` is the Concrete density of a relaxed value (see the module docstring); the
    registered KL is the utility KL, as for every stochastic softmax trick.

    :param temperature: positive scalar or array broadcastable to the batch shape.
    :param probs: ``(..., K)`` event probabilities (unnormalised are fine), or
    :param logits: ``(..., K)`` event log-probabilities (unnormalised).
    """

    arg_constraints = {"logits": numpyro_constraints.real_vector, "temperature": numpyro_constraints.positive}

    def __init__(
        self,
        temperature: ArrayLike,
        probs: ArrayLike | None = None,
        logits: ArrayLike | None = None,
        *,
        validate_args: bool | None = None,
    ) -> None:
        super().__init__(_logits_from(probs, logits, validate_args), 1, temperature, validate_args=validate_args)

    @property
    def probs(self) -> jax.Array:
        return jax.nn.softmax(self.logits, -1)

    def _validate_logits(self, logits):
        # -inf is a class of probability 0, as in NumPyro's Categorical; a row of them has no class to draw.
        if np.any(np.isnan(logits) | (logits == np.inf)):
            raise ValueError(INVALID_CATEGORICAL_LOGITS)
        if np.any((logits == -np.inf).all(-1)):
            raise ValueError(NO_CLASS)

    def _relax(self, scores):
        # softmax from its logarithm, each entry at least the dtype's smallest normal number: an
        # underflowed 0 would make log_prob of the sample -inf or NaN. XLA flushes subnormals: bound after exp.
        # where every class is absent the sample is undefined: raise, as hard_sample does (NaN under jit)
        raise_if((scores == -jnp.inf).all(-1), lambda _: NO_CLASS)
        return jnp.maximum(jnp.exp(jax.nn.log_softmax(scores, -1)), jnp.finfo(scores.dtype).tiny)

    @constraints.dependent_property(is_discrete=False, event_dim=1)
    def support(self) -> constraints.Constraint:
        return numpyro_constraints.simplex

    @validate_value
    def log_prob(self, value: ArrayLike) -> jax.Array:
        """The Concrete density of a point ``value`` of the open simplex."""
        K = self.event_shape[-1]
        t = self.temperature
        log_y = jnp.log(value)
        score = self.logits - t[..., None] * log_y
        return gammaln(float(K)) + (K - 1) * jnp.log(t) + (score - log_y).sum(-1) - K * jax.nn.logsumexp(score, -1)


class RelaxedOneHotCategoricalStraightThrough(RelaxedOneHotCategorical):
    r"""Straight-through Gumbel-softmax: ``sample`` is the one-hot :math:`\arg\max(\theta + G)` in the
    forward pass with the gradient of the relaxed sample.

    Its values are exact one-hot categorical samples, so ``log_prob`` is the categorical
    log-probability :math:`\theta_i - \operatorname{logsumexp}(\theta)` of the one-hot value (Pyro's
    class of the same name instead scores a soft value it hides inside the returned tensor, which a
    JAX array cannot carry).
    """

    def __init__(
        self,
        temperature: ArrayLike,
        probs: ArrayLike | None = None,
        logits: ArrayLike | None = None,
        *,
        validate_args: bool | None = None,
    ) -> None:
        super().__init__(temperature, probs, logits, validate_args=validate_args)
        self.straight_through = True

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self) -> constraints.Constraint:
        return constraints.k_subset(1, relaxed=False)

    @validate_value
    def log_prob(self, value: ArrayLike) -> jax.Array:
        """:math:`\\log p(x) = \\langle\\theta, x\\rangle - \\operatorname{logsumexp}(\\theta)` for a one-hot ``x``."""
        return (self.logits * value).sum(-1) - jax.nn.logsumexp(self.logits, -1)


for _cls in (RelaxedOneHotCategorical, RelaxedOneHotCategoricalStraightThrough):
    kl_divergence.register(_cls, _cls)(lambda q, p: q._utility_kl(p))
