r"""Gradient estimators for :math:`\nabla_\theta\, \mathbb{E}_{x \sim q_\theta}[f(x)]` over structures.

Every estimator is a *surrogate*: the ``surrogate`` of the returned :class:`Estimate` has the value
of a Monte-Carlo estimate of :math:`\mathbb{E}_q[f(x)]` (shape ``batch_shape``, the mean over
``num_samples`` draws) and its gradient (``jax.grad``) is the estimator. Random draws come from
the explicit ``jax.random`` key each function takes first. ``f`` maps structures of shape
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
  (``numpyro.distributions.RelaxedBernoulli``), Gumbel-max (categorical) and Gumbel-top-k (k-subsets,
  :func:`numpyro_sst.ops.conditional_gumbel_utilities`, whose drawn ordering adds the score term
  :math:`-c(\tilde z) \nabla \log p(\sigma \mid b)`). Train the parameters of :math:`c` on
  :func:`variance_loss`, never on the surrogate.
* :class:`TraceRLOO_ELBO`: NumPyro's ``Trace_ELBO`` with a leave-one-out baseline over particles on
  the score-function (non-reparameterised) guide sites, for SVI.
"""

from collections.abc import Callable
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
from numpyro.distributions import Distribution, RelaxedBernoulliLogits
from numpyro.handlers import replay, seed
from numpyro.infer.elbo import ELBO
from numpyro.infer.util import log_density

from sst_common.checks import check_baseline, check_int, unsupported_distribution, values_per_structure
from sst_common.elements import with_leading_axis
from sst_common.structures import is_gumbel_top_k

from . import ops
from .distributions.base import ExponentialFamily, PerturbAndRelax

#: a function of structures ``(..., *event_shape)`` to values ``(...)``
Reward = Callable[[jax.Array], jax.Array]

__all__ = ["Estimate", "TraceRLOO_ELBO", "exact_expectation", "rebar", "relax", "score_function", "variance_loss"]


class Estimate(NamedTuple):
    """``surrogate``: value = Monte-Carlo estimate of ``E[f]``, gradient = the estimator (``batch_shape``).

    ``baseline_loss`` (score function only): the mean squared error ``(f(x) - b)^2`` of the baseline,
    whose gradient trains a learned one; ``None`` for the other estimators.
    """

    surrogate: jax.Array
    baseline_loss: Optional[jax.Array] = None


def _centred(x):
    """Value 0, gradient that of ``x``."""
    return x - jax.lax.stop_gradient(x)


def exact_expectation(f: Reward, dist: Distribution) -> jax.Array:
    r""":math:`\mathbb{E}_q[f(x)] = \sum_x q(x) f(x)` by enumerating the support; its gradient is exact.

    Supports the exponential-family classes (``SpanningTree``, ``Arborescence``, ``KSubset``), the
    hard samples of ``RelaxedTopK`` / ``RelaxedOneHotCategorical`` with Gumbel noise (Gumbel-top-k
    probabilities, ``k <= 7``) and ``RelaxedBernoulli``. Perturb-and-MAP probabilities of trees have
    no closed form: use the exponential-family classes for exact references.
    """
    values, log_probs = _support(dist)
    return (jnp.exp(log_probs) * values_per_structure(f, values, dist)).sum(0)


def _support(dist):
    if isinstance(dist, ExponentialFamily):
        values = dist.enumerate_support()
        return values, dist.log_prob(values)
    if is_gumbel_top_k(dist):
        values = ops.enumerate_k_subsets(dist.num_items, dist.k, dtype=dist.logits.dtype)
        values = jnp.broadcast_to(
            with_leading_axis(values, len(dist.batch_shape)), values.shape[:1] + dist.logits.shape
        )
        return values, ops.gumbel_top_k_log_prob(dist.logits, values, dist.k)
    if isinstance(dist, RelaxedBernoulliLogits):
        values = with_leading_axis(jnp.array([0.0, 1.0], dist.logits.dtype), dist.logits.ndim)
        values = jnp.broadcast_to(values, (2,) + dist.logits.shape)
        return values, _bernoulli_log_prob(dist.logits, values)
    raise unsupported_distribution(dist, "exact_expectation")


def _bernoulli_log_prob(logits, values):
    return values * jax.nn.log_sigmoid(logits) + (1 - values) * jax.nn.log_sigmoid(-logits)


def score_function(
    key: jax.Array,
    f: Reward,
    dist: Distribution,
    num_samples: int = 1,
    baseline: float | str | Callable[[], ArrayLike] | None = None,
) -> Estimate:
    r"""REINFORCE with an optional baseline: an unbiased estimator for any class with hard samples.

    :param key: a ``jax.random`` key.
    :param baseline: ``None``, a float, ``"loo"`` (leave-one-out over the ``num_samples`` draws,
        needs ``num_samples >= 2``) or a callable returning an array that broadcasts with
        ``batch_shape`` (a learned, input-dependent baseline; it must not depend on the draws).
    :returns: :class:`Estimate` with ``baseline_loss`` the mean of ``(f(x) - b)^2``.
    """
    n = check_int(num_samples, "num_samples", 1)
    check_baseline(baseline, n)
    x, log_q = _hard_samples_and_scores(key, dist, n)
    values = values_per_structure(f, x, dist)
    fixed = jax.lax.stop_gradient(values)
    b = _baseline_values(baseline, fixed, n)
    surrogate = values + (fixed - jax.lax.stop_gradient(b)) * _centred(log_q)
    return Estimate(surrogate.mean(0), ((fixed - b) ** 2).mean(0))


def _hard_samples_and_scores(key, dist, n):
    if isinstance(dist, ExponentialFamily):
        x = jax.lax.stop_gradient(dist.sample(key, (n,)))
        return x, dist.log_prob(x)
    if isinstance(dist, PerturbAndRelax):
        utilities = jax.lax.stop_gradient(dist.sample_utilities(key, (n,)))
        return dist.solve(utilities), dist.utility_log_prob(utilities)
    if isinstance(dist, RelaxedBernoulliLogits):
        shape = (n,) + dist.logits.shape
        x = jax.random.bernoulli(key, jax.nn.sigmoid(jax.lax.stop_gradient(dist.logits)), shape)
        x = x.astype(dist.logits.dtype)
        return x, _bernoulli_log_prob(dist.logits, x)
    raise unsupported_distribution(dist, "score_function")


def _baseline_values(baseline, values, n):
    if baseline is None:
        return jnp.zeros_like(values)
    if isinstance(baseline, str):
        return (values.sum(0, keepdims=True) - values) / (n - 1)
    if callable(baseline):
        return jnp.asarray(baseline(), values.dtype)
    return jnp.full_like(values, float(baseline))


def relax(key: jax.Array, f: Reward, dist: Distribution, control_variate: Reward, num_samples: int = 1) -> Estimate:
    r"""RELAX: the unbiased estimator above with ``c(z) = control_variate(relaxed sample of z)``.

    :param control_variate: a differentiable function of the relaxed sample (shape
        ``(..., *event_shape)``) to values of shape ``(...)``; train its parameters on
        :func:`variance_loss` of the surrogate.
    """
    return _relax_estimate(key, f, dist, lambda z: control_variate(_relaxed(dist, z, None)), num_samples)


def rebar(
    key: jax.Array,
    f: Reward,
    dist: Distribution,
    temperature: ArrayLike | None = None,
    eta: ArrayLike = 1.0,
    num_samples: int = 1,
) -> Estimate:
    r"""REBAR: RELAX with :math:`c(z) = \eta f(\sigma_\lambda(z))`, the relaxed sample at ``temperature``.

    ``temperature`` (default: the distribution's) and ``eta`` may be traced; tune them on
    :func:`variance_loss`.
    """
    return _relax_estimate(key, f, dist, lambda z: eta * f(_relaxed(dist, z, temperature)), num_samples)


def _relaxed(dist, z, temperature):
    if isinstance(dist, RelaxedBernoulliLogits):
        return jax.nn.sigmoid(z / (dist.temperature if temperature is None else temperature))
    if temperature is None:
        return dist.relax(z)
    return dist._relax(z / dist._per_event(jnp.asarray(temperature, z.dtype)))


def _relax_estimate(key, f, dist, control_variate, num_samples):
    n = check_int(num_samples, "num_samples", 1)
    z, hard, z_tilde, log_p_hard, log_p_order = _conditional_draws(key, dist, n)
    f_hard = values_per_structure(f, hard, dist)
    c_z = values_per_structure(control_variate, z, dist, "control_variate")
    c_tilde = control_variate(z_tilde)
    # No path to the logits: the coefficient of the score terms (it still depends on c's own parameters).
    c_fixed = control_variate(jax.lax.stop_gradient(z_tilde))
    surrogate = (
        f_hard
        + (jax.lax.stop_gradient(f_hard) - c_fixed) * _centred(log_p_hard)
        - c_fixed * _centred(log_p_order)
        + _centred(c_z - c_tilde)
    )
    return Estimate(surrogate.mean(0))


def _conditional_draws(key, dist, n):
    """``(z, b, z_tilde, log p(b), log p(ordering | b))``: ``z_tilde`` equals ``z``, reparameterised given ``b``."""
    if is_gumbel_top_k(dist):
        z = dist.sample_utilities(key, (n,))
        hard = dist.solve(jax.lax.stop_gradient(z))
        logits = jnp.broadcast_to(dist.logits, z.shape)
        z_tilde, log_p_order = ops.conditional_gumbel_utilities(logits, z, dist.k)
        return z, hard, z_tilde, ops.gumbel_top_k_log_prob(logits, hard, dist.k), log_p_order
    if isinstance(dist, RelaxedBernoulliLogits):
        return _conditional_logistic(key, jnp.broadcast_to(dist.logits, (n,) + dist.logits.shape))
    raise unsupported_distribution(dist, "rebar and relax")


def _conditional_logistic(key, theta):
    """Bernoulli utilities ``z = theta + logit(u)``, ``b = [z > 0]`` and ``z`` reparameterised given ``b``.

    Given ``b`` the uniform is ``u = 1 - p (1 - v)`` (``b = 1``) or ``u = (1 - p) v`` (``b = 0``) with
    ``v ~ U(0, 1)``; ``v`` is held at the value that reproduces ``z`` (Tucker et al.'s coupling).
    """
    u = jnp.clip(jax.random.uniform(key, theta.shape, theta.dtype), jnp.finfo(theta.dtype).tiny, 1 - 1e-7)
    z = theta + jnp.log(u) - jnp.log1p(-u)
    is_one = jax.lax.stop_gradient(z) > 0
    hard = is_one.astype(theta.dtype)
    logistic = jax.lax.stop_gradient(z - theta)
    log_p, log_not_p = jax.nn.log_sigmoid(theta), jax.nn.log_sigmoid(-theta)
    log_v = jnp.where(is_one, jax.nn.log_sigmoid(-logistic) - log_p, jax.nn.log_sigmoid(logistic) - log_not_p)
    small = jnp.where(is_one, log_p, log_not_p) + jax.lax.stop_gradient(log_v)  # log(1 - u) if b = 1, else log u
    large = jnp.log(-jnp.expm1(small))
    z_tilde = theta + jnp.where(is_one, large - small, small - large)
    return z, hard, z_tilde, _bernoulli_log_prob(theta, hard), jnp.zeros_like(theta)


def variance_loss(surrogate_fn: Callable[[Any], jax.Array], params: Any) -> jax.Array:
    r"""The single-sample variance surrogate :math:`\sum \hat g^2` (RELAX's objective for the control variate).

    :math:`\hat g` is ``jax.grad`` of ``surrogate_fn(params).sum()`` with respect to ``params`` (the
    distribution's parameters, any pytree). ``surrogate_fn`` closes over the control variate's
    parameters (or REBAR's ``eta`` and ``temperature``); since :math:`\mathbb{E}[\hat g]` does not
    depend on them, ``jax.grad`` of this loss in them descends the estimator's variance.
    """
    grads = jax.grad(lambda p: surrogate_fn(p).sum())(params)
    return sum((g**2).sum() for g in jax.tree.leaves(grads))


class TraceRLOO_ELBO(ELBO):
    r"""``Trace_ELBO`` whose score-function sites get a leave-one-out baseline over the particles.

    Each particle ``i`` gives the ELBO term :math:`L_i = \log p(x_i, z_i) - \log q(z_i)`; with
    :math:`S_i` the summed log-density of its non-reparameterised guide sites (``KSubset``,
    ``SpanningTree``, ``Arborescence``, discrete NumPyro sites) the surrogate is

    .. math::

        \frac1N \sum_i L_i + (L_i - \bar L_{-i}) (S_i - \operatorname{sg}(S_i)),
        \qquad \bar L_{-i} = \frac{1}{N-1}\sum_{j \ne i} L_j,

    unbiased for the ELBO's gradient; the loss value is the negative ELBO estimate. NumPyro's own
    ``TraceGraph_ELBO`` has no baselines; this is the RLOO estimator (Kool et al. 2019) with the
    whole ELBO as the reward, which needs no dependency graph.

    :param int num_particles: ``>= 2``.
    """

    can_infer_discrete = True  # score-function sites are what it is for: no "discrete latent" warning

    def __init__(self, num_particles: int = 2) -> None:
        super().__init__(num_particles=check_int(num_particles, "num_particles", 2))

    def loss_with_mutable_state(
        self, rng_key: jax.Array, param_map: dict, model: Callable, guide: Callable, *args, **kwargs
    ) -> dict:
        def particle(key):
            guide_key, model_key = jax.random.split(key)
            log_q, guide_trace = log_density(seed(guide, guide_key), args, kwargs, param_map)
            log_p, _ = log_density(replay(seed(model, model_key), guide_trace), args, kwargs, param_map)
            score = sum(
                (site["fn"].log_prob(jax.lax.stop_gradient(site["value"])) * _scale(site)).sum()
                for site in guide_trace.values()
                if site["type"] == "sample" and not site["is_observed"] and not site["fn"].has_rsample
            )
            return log_p - log_q, jnp.asarray(score, log_p.dtype)

        elbo, score = jax.vmap(particle)(jax.random.split(rng_key, self.num_particles))
        fixed = jax.lax.stop_gradient(elbo)
        leave_one_out = (fixed.sum() - fixed) / (self.num_particles - 1)
        surrogate = elbo + (fixed - leave_one_out) * _centred(score)
        return {"loss": -surrogate.mean(), "mutable_state": None}


def _scale(site):
    return 1.0 if site["scale"] is None else site["scale"]
