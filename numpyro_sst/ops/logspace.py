"""Log-space building blocks shared by the dynamic programs (subset DP, permanent DP, tree elimination)."""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from sst_common import elements
from sst_common.checks import empty_support_message

from .validation import raise_if

__all__ = ["gradient_marginals", "log_sum_exp", "program_log_partition"]


def log_sum_exp(x: ArrayLike, axis: int) -> jax.Array:
    """Max-shifted log-sum-exp whose first and second derivatives stay finite, also on all-``-inf`` slices.

    The derivatives are plain softmax weights, zero on ``-inf`` entries (``jax.nn.logsumexp``
    and ``jnp.logaddexp`` give NaN gradients on an all-``-inf`` slice). A NaN anywhere in a
    slice gives NaN.
    """
    m = jax.lax.stop_gradient(jnp.max(x, axis, keepdims=True))
    m = jnp.where(jnp.isfinite(m), m, 0)
    s = jnp.sum(jnp.exp(x - m), axis)
    empty = s == 0
    log_s = jnp.log(jnp.where(empty, 1, s))
    return jnp.where(empty, -jnp.inf, log_s + jnp.squeeze(m, axis))


def nan_elements(x, event_dim):
    """Batch mask of the elements with a NaN anywhere in their last ``event_dim`` dims."""
    return jnp.any(jnp.isnan(x), tuple(range(x.ndim - event_dim, x.ndim))) if event_dim else jnp.isnan(x)


def mask_nan_elements(x, event_dim):
    """``(x with its NaN batch elements set to 0, their mask)``: compute on the first, then :func:`fill_nan`."""
    nan = nan_elements(x, event_dim)
    return jnp.where(nan.reshape(nan.shape + (1,) * event_dim), 0, x), nan


def fill_nan(out, mask, event_dim):
    """``out`` with every batch element where ``mask`` holds set to NaN (NaN in, NaN out)."""
    return jnp.where(mask.reshape(mask.shape + (1,) * event_dim), jnp.nan, out)


def raise_if_empty(empty, structure):
    """Raise (on concrete values) where the boolean ``empty`` marks an exponential family with no support."""
    raise_if(empty, lambda _: empty_support_message(structure))


def check_nonempty(log_partition, structure):
    """Raise (on concrete values) where an exponential family has an empty support (``A = -inf``)."""
    raise_if_empty(log_partition == -jnp.inf, structure)


def nan_in_nan_out(function, x, event_dim, out_event_dims):
    """``function(x)`` with NaN batch elements of ``x`` zeroed before and NaN after (zero gradient there)."""
    return elements.nan_in_nan_out(
        function, x, event_dim, out_event_dims, mask_nan_elements=mask_nan_elements, fill_nan=fill_nan
    )


def log_partition_tangent(theta, v, log_z, safe_theta, marginals):
    """``<mu, v>``, the tangent of the log-partition ``log_z`` of ``theta``, zero where ``log_z`` is not finite.

    There (an empty support, ``+inf`` logits) the derivative is undefined; zero lets a caller who masks
    those elements out keep shared parameters finite. ``marginals`` runs on ``safe_theta`` (logits with
    a finite log-partition) at those elements.
    """
    event_axes = tuple(range(log_z.ndim - theta.ndim, 0))
    finite = jnp.isfinite(log_z).reshape(log_z.shape + (1,) * len(event_axes))
    mu = jnp.where(finite, marginals(jnp.where(finite, theta, safe_theta)), 0)
    return (mu * jnp.where(jnp.isfinite(theta), v, 0)).sum(event_axes)


def undefined_where_empty(mu, log_partition, event_dim):
    """Marginals set to NaN where the support is empty (traced inputs, where nothing can raise)."""
    return fill_nan(mu, log_partition == -jnp.inf, event_dim)


def by_tiers(ok, direct, fallback, batch_axes=0):
    """``direct`` (a pytree of arrays) where the batch mask ``ok`` holds, ``fallback()`` elsewhere.

    ``ok`` has the batch shape; it sits at axis ``batch_axes`` of every array (an int, or a pytree of
    ints matching ``direct``). The caller gives each tier safe inputs for the other tier's elements,
    so that neither's derivatives leak NaN into the other's. ``lax.cond`` skips the fallback when
    every element is trusted (under ``vmap`` both branches run and each element takes its own).
    """
    axes = jax.tree.map(lambda _: batch_axes, direct) if isinstance(batch_axes, int) else batch_axes

    def pick(axis, a, b):
        shape = (1,) * axis + ok.shape + (1,) * (a.ndim - axis - ok.ndim)
        return jnp.where(ok.reshape(shape), a, b)

    def select():
        return jax.tree.map(pick, axes, direct, fallback())

    return jax.lax.cond(jnp.all(ok), lambda: direct, select)


def program_log_partition(
    program: Callable[[ArrayLike], jax.Array], logits: ArrayLike, structure: str = "structure"
) -> jax.Array:
    r""":math:`A(\theta)` = ``program(logits)`` of a log-space program (the permanent DP).

    A ``jax.custom_jvp`` whose tangent is :math:`\langle\mu, \dot\theta\rangle` with :math:`\mu` the
    gradient of the program (:func:`gradient_marginals`, itself differentiable: any order works), zero
    where :math:`A` is not finite (see :func:`log_partition_tangent`). ``structure`` names the support
    in error messages, as in pyro_sst.
    """
    del structure
    return _program_log_partition(program, logits)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _program_log_partition(program, logits):
    return program(logits)


@_program_log_partition.defjvp
def _program_log_partition_jvp(program, primals, tangents):
    (logits,), (v,) = primals, tangents
    value = _program_log_partition(program, logits)
    return value, log_partition_tangent(logits, v, value, 0.0, jax.grad(lambda t: program(t).sum()))


def gradient_marginals(
    program: Callable[[ArrayLike], jax.Array], logits: ArrayLike, structure: str = "structure"
) -> jax.Array:
    r"""Exponential-family marginals :math:`\mu = \nabla_\theta A(\theta)` of a log-space program ``A``.

    Exact (reverse-mode autodiff), itself differentiable (its derivative is the Hessian of
    :math:`A`). Raises :class:`ValueError` on concrete input where :math:`A = -\infty` (no
    ``structure`` has finite weight).
    """
    check_nonempty(program(jax.lax.stop_gradient(logits)), structure)
    return jax.grad(lambda t: program(t).sum())(logits)


def product_where_nonzero(x, y, mask):
    """``x * y`` on ``mask`` where ``y != 0``, else 0: no ``inf * 0`` (or ``nan``) in the value or the gradient."""
    present = (y != 0) & mask
    return jnp.where(present, jnp.where(present, x, 0) * y, 0)
