"""Supports of the structured distributions (``event_dim`` 2 for matrices, 1 for subsets), as NumPyro constraints.

The hard supports check exact membership (0/1, degree conditions, and for trees a determinant
test: the Laplacian minor of a 0/1 structure has determinant 1 exactly when it is a tree / an
arborescence). The relaxed supports check the affine conditions of the convex hull, within a
tolerance. Same checks as :mod:`pyro_sst.distributions.constraints`.
"""

import jax.numpy as jnp
from numpyro.distributions.constraints import Constraint, dependent_property  # noqa: F401 (the classes' decorator)

from ..ops.matrix_tree import laplacian

__all__ = ["arborescence", "k_subset", "permutation", "spanning_tree"]


def _tolerance(value):
    return 1e-4 if jnp.result_type(value) != jnp.float64 else 1e-8


def _minor_det_is_one(x, root):
    n = x.shape[-1]
    keep = jnp.array([i for i in range(n) if i != root], dtype=int)
    if n == 1:
        return jnp.ones(x.shape[:-2], bool)
    L = laplacian(x)[..., keep, :][..., :, keep]
    return jnp.abs(jnp.linalg.det(L) - 1) < 0.5


class _StructureConstraint(Constraint):
    """Entries in [0, 1] (exactly 0 or 1 unless ``relaxed``) over the last ``event_dim`` dims."""

    event_dim = 2
    _params = ()

    def __init__(self, relaxed, *params):
        self.relaxed = relaxed
        self.is_discrete = not relaxed
        for name, value in zip(self._params, params, strict=True):
            setattr(self, name, value)

    def tree_flatten(self):
        return (), ((), {"relaxed": self.relaxed, "is_discrete": self.is_discrete, **self._param_values()})

    def _param_values(self):
        return {name: getattr(self, name) for name in self._params}

    def eq(self, other, static=False):
        same_class = type(self) is type(other) and self.relaxed == other.relaxed
        return same_class and self._param_values() == other._param_values()

    def _common(self, value):
        value = jnp.asarray(value)
        tol = _tolerance(value)
        dims = tuple(range(-self.event_dim, 0))
        ok = ((value >= -tol) & (value <= 1 + tol)).all(dims)
        if not self.relaxed:
            ok = ok & ((value == 0) | (value == 1)).all(dims)
        return value, ok, tol

    def __call__(self, value):
        return self.check(value)


class _TreeConstraint(_StructureConstraint):
    def _common(self, value):
        value, ok, tol = super()._common(value)
        return value, ok & (jnp.abs(jnp.diagonal(value, axis1=-2, axis2=-1)) <= tol).all(-1), tol


class _SpanningTree(_TreeConstraint):
    """Symmetric ``(n, n)`` edge indicators of a spanning tree (or a point of its hull)."""

    def check(self, value):
        value, ok, tol = self._common(value)
        n = value.shape[-1]
        ok = ok & (jnp.abs(value - jnp.swapaxes(value, -1, -2)) <= tol).all((-2, -1))
        ok = ok & (jnp.abs(jnp.triu(value, 1).sum((-2, -1)) - (n - 1)) <= tol * n)
        if not self.relaxed:
            ok = ok & _minor_det_is_one(value, 0)
        return ok

    def feasible_like(self, prototype):
        n = prototype.shape[-1]
        path = jnp.eye(n, k=1) + jnp.eye(n, k=-1)
        uniform = (1 - jnp.eye(n)) * 2 / n  # every edge once in n / 2 of the trees, on average
        return jnp.broadcast_to(uniform if self.relaxed else path, prototype.shape)


class _Arborescence(_TreeConstraint):
    """``x[i, j] = 1`` iff ``i -> j``: every non-root column sums to 1, no cycles."""

    _params = ("root", "single_root")

    def check(self, value):
        value, ok, tol = self._common(value)
        n = value.shape[-1]
        target = (jnp.arange(n) != self.root).astype(value.dtype)
        ok = ok & (jnp.abs(value.sum(-2) - target) <= tol).all(-1)
        if self.single_root:
            ok = ok & (jnp.abs(value[..., self.root, :].sum(-1) - 1) <= tol)
        if not self.relaxed:
            ok = ok & _minor_det_is_one(value, self.root)
        return ok

    def feasible_like(self, prototype):
        n = prototype.shape[-1]
        order = [self.root] + [i for i in range(n) if i != self.root]
        x = jnp.zeros((n, n)).at[jnp.array(order[:-1], int), jnp.array(order[1:], int)].set(1.0)
        return jnp.broadcast_to(x, prototype.shape)


class _KSubset(_StructureConstraint):
    """k-hot vectors (or, relaxed, points of ``[0, 1]^d`` summing to ``k``)."""

    event_dim = 1
    _params = ("k",)

    def check(self, value):
        value, ok, tol = self._common(value)
        return ok & (jnp.abs(value.sum(-1) - self.k) <= tol * max(self.k, 1))

    def feasible_like(self, prototype):
        return jnp.broadcast_to((jnp.arange(prototype.shape[-1]) < self.k).astype(prototype.dtype), prototype.shape)


class _Permutation(_StructureConstraint):
    """Permutation matrices (or, relaxed, a Sinkhorn output: columns checked, rows as Sinkhorn left them)."""

    def check(self, value):
        value, ok, tol = self._common(value)
        ok = ok & (jnp.abs(value.sum(-2) - 1) <= tol).all(-1)
        if not self.relaxed:
            ok = ok & (jnp.abs(value.sum(-1) - 1) <= tol).all(-1)
        return ok

    def feasible_like(self, prototype):
        return jnp.broadcast_to(jnp.eye(prototype.shape[-1], dtype=prototype.dtype), prototype.shape)


def k_subset(k, relaxed=False):
    return _KSubset(relaxed, k)


def permutation(relaxed=False):
    return _Permutation(relaxed)


def spanning_tree(relaxed=False):
    return _SpanningTree(relaxed)


def arborescence(root=0, single_root=False, relaxed=False):
    return _Arborescence(relaxed, root, single_root)
