"""Supports of the structured distributions (``event_dim`` 2 for matrices, 1 for subsets).

The hard supports check exact membership (0/1, degree conditions, and for trees
a determinant test: the Laplacian minor of a 0/1 structure has determinant 1
exactly when it is a tree / an arborescence). The relaxed supports check the
affine conditions of the convex hull, within a tolerance.
"""

import torch
from torch.distributions.constraints import Constraint, dependent_property  # noqa: F401 (the classes' decorator)

from ..ops.matrix_tree import laplacian

__all__ = ["arborescence", "k_subset", "permutation", "spanning_tree"]


def _tolerance(value):
    return 1e-4 if value.dtype in (torch.float16, torch.bfloat16, torch.float32) else 1e-8


def _minor_det_is_one(x, root):
    L = laplacian(x.double())
    keep = [i for i in range(x.shape[-1]) if i != root]
    if not keep:
        return torch.ones(x.shape[:-2], dtype=torch.bool, device=x.device)
    det = torch.linalg.det(L[..., keep, :][..., :, keep])
    return (det - 1).abs() < 0.5


class _StructureConstraint(Constraint):
    """Entries in [0, 1] (exactly 0 or 1 unless ``relaxed``) over the last ``event_dim`` dims."""

    event_dim = 2

    def __init__(self, relaxed):
        self.is_discrete = not relaxed
        self.relaxed = relaxed
        super().__init__()

    def _common(self, value):
        tol = _tolerance(value)
        dims = tuple(range(-self.event_dim, 0))
        ok = ((value >= -tol) & (value <= 1 + tol)).all(dims)
        if not self.relaxed:
            ok = ok & ((value == 0) | (value == 1)).all(dims)
        return ok, tol


class _TreeConstraint(_StructureConstraint):
    def _common(self, value):
        ok, tol = super()._common(value)
        return ok & (value.diagonal(dim1=-2, dim2=-1).abs() <= tol).all(-1), tol


class _SpanningTree(_TreeConstraint):
    """Symmetric ``(n, n)`` edge indicators of a spanning tree (or a point of its hull)."""

    def check(self, value):
        ok, tol = self._common(value)
        n = value.shape[-1]
        ok = ok & ((value - value.mT).abs() <= tol).all((-2, -1))
        ok = ok & ((value.triu(1).sum((-2, -1)) - (n - 1)).abs() <= tol * n)
        if not self.relaxed:
            ok = ok & _minor_det_is_one(value, 0)
        return ok


class _Arborescence(_TreeConstraint):
    """``x[i, j] = 1`` iff ``i -> j``: every non-root column sums to 1, no cycles."""

    def __init__(self, relaxed, root, single_root):
        self.root, self.single_root = root, single_root
        super().__init__(relaxed)

    def check(self, value):
        ok, tol = self._common(value)
        n = value.shape[-1]
        in_degree = value.sum(-2)
        is_root = torch.arange(n, device=value.device) == self.root
        target = (~is_root).to(value.dtype)
        ok = ok & ((in_degree - target).abs() <= tol).all(-1)
        if self.single_root:
            ok = ok & ((value[..., self.root, :].sum(-1) - 1).abs() <= tol)
        if not self.relaxed:
            ok = ok & _minor_det_is_one(value, self.root)
        return ok


class _KSubset(_StructureConstraint):
    """k-hot vectors (or, relaxed, points of ``[0, 1]^d`` summing to ``k``)."""

    event_dim = 1

    def __init__(self, relaxed, k):
        self.k = k
        super().__init__(relaxed)

    def check(self, value):
        ok, tol = self._common(value)
        return ok & ((value.sum(-1) - self.k).abs() <= tol * max(self.k, 1))


class _Permutation(_StructureConstraint):
    """Permutation matrices (or, relaxed, the Sinkhorn relaxation of one).

    Hard values: 0/1 with unit row and column sums. Relaxed values come from
    Sinkhorn, whose last step normalises the columns, so the columns are checked
    to the dtype's tolerance; the rows are only as close to 1 as Sinkhorn got
    before its iteration cap (:func:`pyro_sst.ops.sinkhorn` reports that residual)
    and are not checked.
    """

    def check(self, value):
        ok, tol = self._common(value)
        ok = ok & ((value.sum(-2) - 1).abs() <= tol).all(-1)
        if not self.relaxed:
            ok = ok & ((value.sum(-1) - 1).abs() <= tol).all(-1)
        return ok


def k_subset(k, relaxed=False):
    return _KSubset(relaxed, k)


def permutation(relaxed=False):
    return _Permutation(relaxed)


def spanning_tree(relaxed=False):
    return _SpanningTree(relaxed)


def arborescence(root=0, single_root=False, relaxed=False):
    return _Arborescence(relaxed, root, single_root)
