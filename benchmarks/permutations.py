"""Gumbel-Sinkhorn: ``GumbelSinkhorn.relax(U)`` then ``backward()``, float32, with its defaults (at most 100
iterations, tol 1e-6) and with ``backward="implicit"``, against plain unrolled log-domain Sinkhorn with a fixed
number of iterations (20 / 100 / 500), as research code writes it. ``residual`` is the largest |row sum - 1| of
the result (columns are exact); ``saved_MB`` is what autograd keeps for the backward."""

import torch

from pyro_sst import GumbelSinkhorn

from .common import median_time, row, saved_tensor_bytes

FULL = [(256, 20), (16, 100)]
QUICK = [(256, 20)]
TEMPERATURE = 0.5


def unrolled_sinkhorn(log_alpha, n_iters):
    for _ in range(n_iters):
        log_alpha = log_alpha - torch.logsumexp(log_alpha, -1, keepdim=True)
        log_alpha = log_alpha - torch.logsumexp(log_alpha, -2, keepdim=True)
    return log_alpha.exp()


def _residual(x):
    return (x.detach().sum(-1) - 1).abs().max().item()


def case(B, n, iterations):
    g = torch.Generator().manual_seed(n)
    logits = torch.randn(B, n, n, generator=g).requires_grad_()
    gumbel = -torch.log(-torch.log(torch.rand(B, n, n, generator=g)))
    cotangent = torch.randn(B, n, n, generator=g)

    def run(make):
        def step():
            x = make()
            (x * cotangent).sum().backward()

        seconds = median_time(step, 3)
        saved, x = saved_tensor_bytes(make)
        return seconds, saved / 2**20, _residual(x)

    base_s, base_mb, base_res = run(lambda: unrolled_sinkhorn((logits + gumbel) / TEMPERATURE, iterations))
    for backward in ("unrolled", "implicit"):
        ours_s, ours_mb, ours_res = run(
            lambda b=backward: GumbelSinkhorn(logits, TEMPERATURE, backward=b).relax(logits + gumbel)
        )
        yield row(
            f"sinkhorn B={B} n={n} t={TEMPERATURE} ours={backward} vs unrolled x{iterations}",
            ours_s,
            base_s,
            saved_MB=ours_mb,
            baseline_saved_MB=base_mb,
            residual=ours_res,
            baseline_residual=base_res,
        )


def cases(quick):
    for B, n in QUICK if quick else FULL:
        for iterations in (20, 100, 500):
            yield from case(B, n, iterations)
