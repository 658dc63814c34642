"""Argument checks shared by the ops and the distributions.

Every check raises :class:`ValueError` naming the argument and the allowed range.
"""

import torch

from sst_common.checks import check_array_layout, check_square_shape

from .tracing import quiet_trace_time_checks

__all__ = []


def check_array(x, name="logits", event_dim=1):
    """``x``, which must be a float32/float64 tensor with at least ``event_dim`` dims, each event dim of size >= 1."""
    quiet_trace_time_checks()  # every entry point checks its tensor first
    if not torch.is_tensor(x):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    check_array_layout(x.shape, x.dtype, name, event_dim)
    return x


def check_square(x, name="logits"):
    """``x``, which must be a float ``(..., n, n)`` tensor with ``n >= 1``."""
    check_array(x, name, 2)
    check_square_shape(x.shape, name)
    return x
