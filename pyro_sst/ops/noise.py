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

import torch

from sst_common.checks import NOISES, check_noise

__all__ = ["NOISES", "sample_noise", "utility_kl"]


def sample_noise(noise, shape, dtype=None, device=None, generator=None):
    """Draw i.i.d. noise of the given kind and shape."""
    check_noise(noise)
    if noise == "gaussian":
        return torch.randn(shape, dtype=dtype, device=device, generator=generator)
    tiny = torch.finfo(dtype or torch.get_default_dtype()).tiny
    v = torch.rand(shape, dtype=dtype, device=device, generator=generator).clamp(min=tiny, max=1 - 1e-7)
    if noise == "gumbel":
        return -(-v.log()).log()
    return v.log()


def utility_kl(noise, theta_q, theta_p):
    """Entry-wise KL between the utility distributions ``theta_q + E`` and ``theta_p + E``."""
    check_noise(noise)
    diff = theta_q - theta_p
    if noise == "gumbel":
        return diff - 1 + torch.exp(-diff)
    if noise == "gaussian":
        return 0.5 * diff**2
    return torch.where(diff <= 0, -diff, torch.full_like(diff, float("inf")))
