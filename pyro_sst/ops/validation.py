"""Argument checks shared by the ops and the distributions."""

import operator

__all__ = []


def check_int(value, name, low, high, context=""):
    """``value`` as a Python int in ``[low, high]``; any integral type (NumPy, 0-d tensors) is accepted, bool is not."""
    try:
        index = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        index = None
    if index is None or not low <= index <= high:
        raise ValueError(f"{name} must be an int in [{low}, {high}]{context}, got {value!r}")
    return index
