"""Log-space building blocks shared by the dynamic programs (subset DP, permanent DP, tree elimination)."""

import math

import torch

__all__ = ["gradient_marginals", "log_sum_exp"]


def log_sum_exp(x, dim):
    """Max-shifted log-sum-exp whose first and second derivatives stay finite, also on all-``-inf`` slices.

    (``torch.logsumexp`` back-propagates NaN from an all-``-inf`` slice, and
    ``torch.logaddexp``'s second derivative is inf/inf for far-apart arguments;
    here the derivatives are plain softmax weights, zero on ``-inf`` entries.)
    """
    m = x.amax(dim, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    s = torch.exp(x - m).sum(dim)
    positive = s > 0
    log_s = torch.log(torch.where(positive, s, torch.ones_like(s)))
    return torch.where(positive, log_s + m.squeeze(dim), torch.full_like(s, -math.inf))


def gradient_marginals(log_partition, logits):
    r"""Exponential-family marginals :math:`\mu = \nabla_\theta A(\theta)` of a log-space program ``log_partition``.

    Exact (reverse-mode autograd, no finite differences); when ``logits`` needs a
    gradient the result is built with ``create_graph``, so its backward is the
    exact Hessian-vector product of ``A``.
    """
    create_graph = torch.is_grad_enabled() and logits.requires_grad
    with torch.enable_grad():
        theta = logits if create_graph else logits.detach().requires_grad_()
        (mu,) = torch.autograd.grad(log_partition(theta).sum(), theta, create_graph=create_graph)
    return mu
