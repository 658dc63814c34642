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

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike, DTypeLike

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
    key: jax.Array, noise: str, shape: tuple[int, ...], dtype: DTypeLike | None = jnp.float32
) -> jax.Array:
    """Draw i.i.d. noise of the given kind and shape from the ``jax.random`` key ``key``."""
    check_noise(noise)
    if noise == "gaussian":
        return jax.random.normal(key, shape, dtype)
    tiny = jnp.finfo(dtype).tiny
    v = jnp.clip(jax.random.uniform(key, shape, dtype), tiny, 1 - 1e-7)
    if noise == "gumbel":
        return -jnp.log(-jnp.log(v))
    return jnp.log(v)


def utility_kl(noise: str, theta_q: ArrayLike, theta_p: ArrayLike) -> jax.Array:
    """Entry-wise KL between the utility distributions ``theta_q + E`` and ``theta_p + E``.

    An entry absent from both (``-inf`` in both) contributes 0; absent from one only, ``inf``.
    """
    check_noise(noise)
    # inf - inf is NaN: zero the difference where the two agree, so that neither the value nor
    # the gradient sees it.
    diff = jnp.where(theta_q == theta_p, 0.0, theta_q - theta_p)
    if noise == "gumbel":
        lost = diff == -jnp.inf  # exp(inf) - inf is NaN; the KL is inf
        finite_diff = jnp.where(lost, 0.0, diff)
        return jnp.where(lost, jnp.inf, finite_diff - 1 + jnp.exp(-finite_diff))
    if noise == "gaussian":
        return 0.5 * diff**2
    return jnp.where(diff <= 0, -diff, jnp.inf)


def utility_log_prob(noise: str, utilities: ArrayLike, logits: ArrayLike) -> jax.Array:
    """Entry-wise log-density of the utilities ``U = logits + E`` (differentiable in ``logits``)."""
    check_noise(noise)
    e = utilities - logits
    if noise == "gumbel":
        return -e - jnp.exp(-e)
    if noise == "gaussian":
        return -0.5 * e**2 - 0.5 * math.log(2 * math.pi)
    return jnp.where(e <= 0, e, -jnp.inf)


def _orderings(items):
    """``items[..., k]`` in each of the ``k!`` orders, ``(..., k!, k)``; the first is ``items`` itself."""
    return items[..., jnp.array(list(itertools.permutations(range(items.shape[-1]))))]


def _log_remaining(logits, items, ordered):
    """Log-sum-exp of the logits not placed before each position of the orderings ``ordered`` of ``items``."""
    theta = jnp.take_along_axis(logits[..., None, :], ordered, -1)
    outside = jax.nn.logsumexp(_put(logits, items, -jnp.inf), -1)
    suffix = jnp.flip(jax.lax.cumlogsumexp(jnp.flip(theta, -1), axis=theta.ndim - 1), -1)
    return theta, jnp.logaddexp(outside[..., None, None], suffix)


def _put(x, indices, values):
    """``x`` with ``x[..., indices] = values`` along the last axis (a batched scatter)."""
    hit = (indices[..., :, None] == jnp.arange(x.shape[-1])).any(-2)
    if jnp.ndim(values) == 0:
        return jnp.where(hit, values, x)
    spread = (jnp.where(indices[..., :, None] == jnp.arange(x.shape[-1]), values[..., :, None], 0)).sum(-2)
    return jnp.where(hit, spread, x)


def gumbel_top_k_log_prob(logits: ArrayLike, value: ArrayLike, k: int) -> jax.Array:
    r""":math:`\log P(\operatorname{top-k}(\theta + G) = S)` for the k-hot ``value`` marking ``S`` (Gumbel ``G``).

    The sum of the Plackett-Luce probabilities of the ``k!`` orderings of ``S``; ``k`` up to
    ``sst_common.checks.MAX_ORDERED_K`` (7). ``k = 1`` is ``log_softmax``. Differentiable in ``logits``.
    """
    check_ordered_k(k)
    value, logits = jnp.broadcast_arrays(value, logits)
    items = jax.lax.top_k(value, k)[1]
    theta, log_remaining = _log_remaining(logits, items, _orderings(items))
    return jax.nn.logsumexp((theta - log_remaining).sum(-1), -1)


def conditional_gumbel_utilities(logits: ArrayLike, utilities: ArrayLike, k: int) -> jax.Array:
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
    utilities, logits = jnp.broadcast_arrays(jax.lax.stop_gradient(utilities), logits)
    top, order = jax.lax.top_k(utilities, k)  # the set, in its drawn order
    theta, log_remaining = _log_remaining(logits, order, _orderings(order))
    log_probs = (theta - log_remaining).sum(-1)
    # The noise that reproduces U: invert e^{-U_j} = sum_{i <= j} e^{-g_i} (g_j = L_j + G_j) and
    # U_i = -log(e^{-U_k} + e^{-h_i}) (h_i = theta_i + G_i) for the items outside the set.
    previous = jnp.concatenate([jnp.full_like(top[..., :1], jnp.inf), top[..., :-1]], -1)
    top_noise = jax.lax.stop_gradient(top - jnp.log(-jnp.expm1(top - previous)) - log_remaining[..., 0, :])
    outside = ~_put(jnp.zeros(utilities.shape, bool), order, True)
    h = utilities - jnp.log(-jnp.expm1(jnp.where(outside, utilities - top[..., -1:], -1.0)))
    others_noise = jax.lax.stop_gradient(jnp.where(outside, h - logits, 0))
    top_tilde = -jax.lax.cumlogsumexp(-(log_remaining[..., 0, :] + top_noise), axis=top.ndim - 1)
    others = -jnp.logaddexp(-top_tilde[..., -1:], -(logits + others_noise))
    return _put(others, order, top_tilde), log_probs[..., 0] - jax.nn.logsumexp(log_probs, -1)
