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
"""

import jax
import jax.numpy as jnp

from sst_common.checks import NOISES, check_noise

__all__ = ["NOISES", "sample_noise", "utility_kl"]


def sample_noise(key, noise, shape, dtype=jnp.float32):
    """Draw i.i.d. noise of the given kind and shape from the ``jax.random`` key ``key``."""
    check_noise(noise)
    if noise == "gaussian":
        return jax.random.normal(key, shape, dtype)
    tiny = jnp.finfo(dtype).tiny
    v = jnp.clip(jax.random.uniform(key, shape, dtype), tiny, 1 - 1e-7)
    if noise == "gumbel":
        return -jnp.log(-jnp.log(v))
    return jnp.log(v)


def utility_kl(noise, theta_q, theta_p):
    """Entry-wise KL between the utility distributions ``theta_q + E`` and ``theta_p + E``."""
    check_noise(noise)
    diff = theta_q - theta_p
    if noise == "gumbel":
        return diff - 1 + jnp.exp(-diff)
    if noise == "gaussian":
        return 0.5 * diff**2
    return jnp.where(diff <= 0, -diff, jnp.inf)
