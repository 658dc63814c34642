"""Argument checks shared by the ops and the distributions.

Every check raises :class:`ValueError` naming the argument and the allowed range.
"""

import torch

from .tracing import quiet_trace_time_checks

__all__ = []

#: floating dtypes the ops compute in (float16/bfloat16 lack the batched linear algebra and the range)
FLOAT_DTYPES = (torch.float32, torch.float64)


def check_tensor(x, name="logits", event_dim=1):
    """``x`` must be a float32/float64 tensor with at least ``event_dim`` dims, each event dim of size >= 1."""
    quiet_trace_time_checks()  # every entry point checks its tensor first
    if not torch.is_tensor(x):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must have dtype float32 or float64, got {x.dtype}")
    if x.dim() < event_dim or any(size == 0 for size in x.shape[x.dim() - event_dim :]):
        layout = "(..., d)" if event_dim == 1 else "(..., n, n)"
        raise ValueError(f"{name} must have shape {layout} with size >= 1, got shape {tuple(x.shape)}")


def check_square(x, name="logits"):
    """``x`` must be a float ``(..., n, n)`` tensor with ``n >= 1``."""
    check_tensor(x, name, 2)
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"{name} must have shape (..., n, n), got shape {tuple(x.shape)}")
