"""Argument checks shared by the ops and the distributions.

Every check raises :class:`ValueError` naming the argument and the allowed range.
"""

import operator

import torch

__all__ = []

#: floating dtypes the ops compute in (float16/bfloat16 lack the batched linear algebra and the range)
FLOAT_DTYPES = (torch.float32, torch.float64)


def check_int(value, name, low, high=None, context=""):
    """``value`` as a Python int in ``[low, high]`` (``high=None``: unbounded).

    Any integral type (NumPy ints, 0-d integer tensors) is accepted; bool is not.
    """
    try:
        index = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        index = None
    if index is None or index < low or (high is not None and index > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an int {allowed}{context}, got {value!r}")
    return index


def check_float(value, name, low=None, inclusive=False):
    """``value`` as a Python float, above ``low`` (or equal, if ``inclusive``); NumPy scalars and 0-d tensors too."""
    try:
        number = None if isinstance(value, bool) else float(value)
    except (TypeError, ValueError, RuntimeError):
        number = None
    in_range = number is not None and (low is None or number > low or (inclusive and number == low))
    if not in_range or number != number:
        allowed = "a float" if low is None else f"a float {'>=' if inclusive else '>'} {low}"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return number


def check_tensor(x, name="logits", event_dim=1):
    """``x`` must be a float32/float64 tensor with at least ``event_dim`` dims, each event dim of size >= 1."""
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
