"""Argument checks shared by the ops and the distributions."""

import operator

__all__ = []


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


def check_square(x, name="logits"):
    """``x`` must be a ``(..., n, n)`` tensor."""
    if x.dim() < 2 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"{name} must have shape (..., n, n), got shape {tuple(x.shape)}")
