"""Argument checks shared by the ops and the distributions.

Every check raises :class:`ValueError` naming the argument and the allowed range. Checks on
*values* (not shapes) can only run on concrete arrays: under ``jax.jit`` the value-dependent
conditions that raise in eager mode give NaN results instead (see :func:`raise_if`).
"""

import jax
import jax.numpy as jnp
import numpy as np

from sst_common.checks import check_array_layout, check_square_shape

__all__ = []


def check_array(x, name="logits", event_dim=1):
    """``x`` as a JAX array; it must be a float32/float64 array with at least ``event_dim`` dims, each event dim of
    size >= 1."""
    if not isinstance(x, (jax.Array, np.ndarray)):
        raise ValueError(f"{name} must be a JAX or NumPy array, got {type(x).__name__}")
    check_array_layout(x.shape, x.dtype, name, event_dim)
    return jnp.asarray(x)


def check_square(x, name="logits"):
    """``x`` as a JAX array; it must be a float ``(..., n, n)`` array with ``n >= 1``."""
    x = check_array(x, name, 2)
    check_square_shape(x.shape, name)
    return x


def is_concrete(*arrays):
    """Whether every array holds values (not a tracer of ``jit``, ``vmap`` or ``grad``)."""
    return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def raise_if(condition, message):
    """Raise ``ValueError(message(condition))`` where the concrete boolean array ``condition`` holds anywhere.

    Under a JAX transformation the values are unknown and nothing is raised: the caller's result
    is NaN for those batch elements instead.
    """
    if is_concrete(condition) and bool(np.any(np.asarray(condition))):
        raise ValueError(message(np.asarray(condition)))


def wide_dtype(dtype):
    """float64 where JAX has it enabled (``jax_enable_x64``), else ``dtype``."""
    return jnp.float64 if jax.config.jax_enable_x64 else dtype
