"""Relaxed top-k, exponential-family relaxation: ``RelaxedTopK.relax(U)`` then ``backward()``, float32, against a
NumPy log-space forward-backward DP for the marginals whose backward is a central finite difference along the
cotangent (valid because the Jacobian of the marginals is the symmetric Hessian of the log-partition). Errors are
max abs errors of the relaxed sample against float64 exact values."""

import numpy as np
import torch

from pyro_sst import RelaxedTopK, ops

from .common import median_time, row

FULL = [(128, 100, 10), (16, 10_000, 100)]
QUICK = FULL
TEMPERATURE = 0.5


def _log_e(theta, k):
    """Forward DP tables alpha[i, :, j] = log e_j(exp theta[:, :i]) for j <= k, shape (d + 1, B, k + 1)."""
    B, d = theta.shape
    alpha = np.full((d + 1, B, k + 1), -np.inf)
    alpha[0, :, 0] = 0.0
    for i in range(d):
        shifted = np.concatenate([np.full((B, 1), -np.inf), alpha[i, :, :-1] + theta[:, i : i + 1]], 1)
        alpha[i + 1] = np.logaddexp(alpha[i], shifted)
    return alpha


def numpy_marginals(theta, k):
    """Inclusion probabilities by a forward and a backward DP in log space."""
    alpha = _log_e(theta, k)
    beta = _log_e(theta[:, ::-1], k)[::-1]  # beta[i] = log e_j(theta[:, i:])
    d = theta.shape[1]
    mu = np.empty_like(theta)
    for i in range(d):
        # e_{k-1} of all items but i: sum_j alpha[i, j] beta[i+1, k-1-j]
        pairs = alpha[i][:, :k] + beta[i + 1][:, k - 1 :: -1]
        mu[:, i] = np.exp(theta[:, i] + np.logaddexp.reduce(pairs, axis=1) - alpha[d][:, k])
    return mu


def case(B, d, k):
    g = torch.Generator().manual_seed(d)
    logits = torch.randn(B, d, generator=g).requires_grad_()
    gumbel = -torch.log(-torch.log(torch.rand(B, d, generator=g)))
    cotangent = torch.randn(B, d, generator=g)
    exact = ops.subset_marginals((logits.detach().double() + gumbel) / TEMPERATURE, k)
    repeats = 5 if d <= 1000 else 2

    def ours():
        x = RelaxedTopK(logits, k, TEMPERATURE).relax(logits + gumbel)
        (x * cotangent).sum().backward()
        return x

    def baseline():
        theta = ((logits.detach() + gumbel) / TEMPERATURE).double().numpy()
        mu = numpy_marginals(theta, k)
        h = 1e-4
        v = cotangent.double().numpy()
        vjp = (numpy_marginals(theta + h * v, k) - numpy_marginals(theta - h * v, k)) / (2 * h) / TEMPERATURE
        return torch.from_numpy(mu), torch.from_numpy(vjp)

    ours_s = median_time(ours, repeats)
    base_s = median_time(baseline, repeats)
    logits.grad = None
    ours()
    mu, vjp = baseline()
    return row(
        f"top-k exp_family B={B} d={d} k={k}",
        ours_s,
        base_s,
        err=(ours().double() - exact).abs().max().item(),
        baseline_err=(mu - exact).abs().max().item(),
        grad_diff=(logits.grad.double() / 2 - vjp).abs().max().item(),  # ours() ran twice since the reset
    )


def cases(quick):
    for B, d, k in QUICK if quick else FULL:
        yield case(B, d, k)
