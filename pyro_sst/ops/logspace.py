r"""Log-space building blocks shared by the dynamic programs (subset DP, permanent DP, tree elimination).

An exponential family whose log-partition :math:`A(\theta)` is computed by a log-space program
gets its marginals :math:`\mu = \nabla A` and their backward (the Hessian-vector product of
:math:`A`) from :func:`program_log_partition` and :func:`gradient_marginals`. Both are custom
autograd Functions, so the data-dependent parts of the program run in Python at call time
even inside ``torch.jit.trace`` (which records one opaque call instead of freezing branches).
"""

import functools
import math
from collections.abc import Callable

import torch
from torch.autograd.function import once_differentiable

from sst_common import elements
from sst_common.checks import empty_support_message

from .tracing import untraced

__all__ = ["gradient_marginals", "log_sum_exp", "program_log_partition"]


def log_sum_exp(x: torch.Tensor, dim: int | tuple[int, ...]) -> torch.Tensor:
    """Max-shifted log-sum-exp whose first and second derivatives stay finite, also on all-``-inf`` slices.

    (``torch.logsumexp`` back-propagates NaN from an all-``-inf`` slice, and
    ``torch.logaddexp``'s second derivative is inf/inf for far-apart arguments;
    here the derivatives are plain softmax weights, zero on ``-inf`` entries.)
    A NaN anywhere in a slice gives NaN.
    """
    m = x.amax(dim, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    s = torch.exp(x - m).sum(dim)
    empty = s == 0
    log_s = torch.log(torch.where(empty, torch.ones_like(s), s))
    return torch.where(empty, torch.full_like(s, -math.inf), log_s + m.squeeze(dim))


def zeros_in_graph(x):
    """Zeros of ``x``'s shape that stay in its autograd graph (zero gradient, even where ``x`` is infinite)."""
    return x.masked_fill(torch.ones_like(x, dtype=torch.bool), 0)


def mask_nan_elements(x, event_dim):
    """``(x with its NaN batch elements set to 0, their mask)``: compute on the first, then :func:`fill_nan`.

    A batch element is NaN if a NaN is anywhere in its last ``event_dim`` dims.
    """
    nan = torch.isnan(x).flatten(x.dim() - event_dim).any(-1) if event_dim else torch.isnan(x)
    return x.masked_fill(nan.reshape(nan.shape + (1,) * event_dim), 0), nan


def fill_nan(out, mask, event_dim):
    """``out`` with every batch element where ``mask`` holds set to NaN (NaN in, NaN out)."""
    mask = mask.reshape(mask.shape + (1,) * event_dim)
    return torch.where(mask, torch.full_like(out, math.nan), out)


def nan_in_nan_out(function, x, event_dim, out_event_dims):
    """``function(x)`` with NaN batch elements of ``x`` zeroed before and NaN after (zero gradient there)."""
    return elements.nan_in_nan_out(
        function, x, event_dim, out_event_dims, mask_nan_elements=mask_nan_elements, fill_nan=fill_nan
    )


def log_partition_backward(grad, theta, log_z, safe_theta, marginals):
    """``grad * mu``, the backward of the log-partition ``log_z`` of ``theta``, zero where ``log_z`` is not finite.

    There (an empty support, ``+inf`` or NaN logits) the gradient is undefined; zero lets a caller who
    masks those elements out keep shared parameters finite. ``marginals`` runs on ``safe_theta`` (logits
    with a finite log-partition) at those elements.
    """
    event_dims = (1,) * (theta.dim() - log_z.dim())
    finite = torch.isfinite(log_z).reshape(log_z.shape + event_dims)
    mu = marginals(torch.where(finite, theta, safe_theta))
    return torch.where(finite, grad.reshape(grad.shape + event_dims) * mu, torch.zeros_like(mu))


def check_nonempty(log_partition, structure):
    """Raise where an exponential family has an empty support (``A = -inf``): its marginals are undefined."""
    if bool((log_partition == -math.inf).any()):
        raise ValueError(empty_support_message(structure))


def program_gradient(program, theta, create_graph=False):
    """``(x, A(x), dA/dx)`` of ``program`` at ``x``, a fresh leaf copy of ``theta``.

    Without ``create_graph`` the value and gradient are returned detached (and may then be
    used inside a traced Function body).
    """
    with torch.enable_grad(), untraced():
        x = theta.detach().requires_grad_()
        value = program(x)
        (mu,) = torch.autograd.grad(value.sum(), x, create_graph=create_graph, allow_unused=True)
        mu = torch.zeros_like(theta) if mu is None else mu
        if not create_graph:
            value, mu = value.detach(), mu.detach()
    return x, value, mu


def program_hvp(program, theta, v):
    r"""The Hessian-vector product :math:`\nabla^2 A(\theta)\, v` of ``program`` by second-order autograd."""
    x, _, mu = program_gradient(program, theta, create_graph=True)
    with torch.enable_grad(), untraced():
        hvp = torch.autograd.grad(mu, x, v, allow_unused=True)[0] if mu.requires_grad else None
    return torch.zeros_like(theta) if hvp is None else hvp


class _ProgramLogPartition(torch.autograd.Function):
    @staticmethod
    def forward(ctx, program, structure, theta):
        with torch.no_grad():
            value = program(theta)
        ctx.program, ctx.structure = program, structure
        ctx.save_for_backward(theta, value)
        return value

    @staticmethod
    def backward(ctx, grad):
        theta, value = ctx.saved_tensors
        marginals = functools.partial(_GradientMarginals.apply, ctx.program, ctx.structure)
        return None, None, log_partition_backward(grad, theta, value, torch.zeros_like(theta), marginals)


class _GradientMarginals(torch.autograd.Function):
    @staticmethod
    def forward(ctx, program, structure, theta):
        _, value, mu = program_gradient(program, theta, create_graph=False)
        check_nonempty(value, structure)
        ctx.program = program
        ctx.save_for_backward(theta)
        return mu.clone()  # jit.trace maps a Function's outputs through its recorded body: make mu part of it

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_mu):
        (theta,) = ctx.saved_tensors
        return None, None, program_hvp(ctx.program, theta, grad_mu)


def program_log_partition(
    program: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor, structure: str = "structure"
) -> torch.Tensor:
    r""":math:`A(\theta)` = ``program(logits)``; its gradient is :func:`gradient_marginals` (itself differentiable)."""
    return _ProgramLogPartition.apply(program, structure, logits)


def gradient_marginals(
    program: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor, structure: str = "structure"
) -> torch.Tensor:
    r"""Exponential-family marginals :math:`\mu = \nabla_\theta A(\theta)` of a log-space program ``A``.

    Exact (reverse-mode autograd inside a custom Function, no finite differences); the
    backward is the exact Hessian-vector product of ``A``. Raises :class:`ValueError`
    where ``A = -inf`` (no ``structure`` has finite weight).
    """
    return _GradientMarginals.apply(program, structure, logits)


def product_where_nonzero(x, y, mask):
    """``x * y`` on ``mask`` where ``y != 0``, else 0: no ``inf * 0`` (or ``nan``) in the value or the gradient."""
    present = (y != 0) & mask
    return torch.where(present, torch.where(present, x, 0) * y, 0)
