"""Relaxed spanning trees: ``RelaxedSpanningTree.relax(U)`` then ``backward()``, float32, against the reference
method (marginals as autograd of ``slogdet`` with ``create_graph=True``, then backward through that) and the floor
(one batched ``torch.linalg.inv`` of the same minors, forward only). Errors are max abs errors of the marginals
against the float64 exact values."""

import torch

from pyro_sst import RelaxedSpanningTree, ops

from .common import median_time, row, try_time

FULL = [(1024, 10), (256, 30), (32, 100), (2, 300), (1, 500)]
QUICK = [(1024, 10), (256, 30), (32, 100), (1, 500)]
TEMPERATURES = [1.0, 0.5, 0.1]


def _laplacian_minor(theta):
    theta = theta - theta.detach().amax((-2, -1), keepdim=True)  # max-shift against overflow
    W = theta.exp() * (1 - torch.eye(theta.shape[-1], dtype=theta.dtype))
    return (torch.diag_embed(W.sum(-2)) - W)[..., 1:, 1:]


def reference_marginals(theta):
    """The ten-line research method: marginals as the gradient of log det, kept differentiable."""
    log_det = torch.linalg.slogdet(_laplacian_minor(theta)).logabsdet
    (grad,) = torch.autograd.grad(log_det.sum(), theta, create_graph=True)
    return grad + grad.mT


def case(B, n, t):
    g = torch.Generator().manual_seed(n)
    logits = torch.randn(B, n, n, generator=g).requires_grad_()
    gumbel = -torch.log(-torch.log(torch.rand(B, n, n, generator=g)))
    cotangent = torch.randn(B, n, n, generator=g)
    utilities = ops.symmetrize_upper(logits.detach() + gumbel)
    exact = ops.spanning_tree_marginals(utilities.double() / t)
    repeats = 5 if B * n**3 < 3e7 else 2

    def ours():
        x = RelaxedSpanningTree(logits, t).relax(ops.symmetrize_upper(logits + gumbel))
        (x * cotangent).sum().backward()
        return x

    def reference():
        x = reference_marginals(ops.symmetrize_upper(logits + gumbel) / t)
        (x * cotangent).sum().backward()
        return x

    ours_s = median_time(ours, repeats)
    ref_s, crash = try_time(reference, repeats)
    floor_s = median_time(lambda: torch.linalg.inv_ex(_laplacian_minor(utilities / t)), repeats)
    err = (ours().double() - exact).abs().max().item()
    ref_err = None if crash else (reference().detach().double() - exact).abs().max().nan_to_num(float("inf")).item()
    return row(
        f"tree B={B} n={n} t={t}",
        ours_s,
        ref_s,
        floor_s=floor_s,
        vs_floor=ours_s / floor_s,
        err=err,
        baseline_err=ref_err,
        note=crash or "",
    )


def cases(quick):
    for B, n in QUICK if quick else FULL:
        for t in TEMPERATURES[:2] if quick and n >= 100 else TEMPERATURES:
            yield case(B, n, t)
