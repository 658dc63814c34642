r"""Spanning trees and arborescences: relaxed (SST) and exact exponential-family classes."""

import torch
from torch.distributions.kl import register_kl
from torch.distributions.utils import lazy_property

from sst_common.checks import check_root

from .. import ops
from ..ops.validation import check_square
from . import constraints
from .base import ExponentialFamily, PerturbAndRelax, exp_family_kl

__all__ = [
    "Arborescence",
    "RelaxedArborescence",
    "RelaxedSpanningTree",
    "SpanningTree",
]


class SpanningTreeStructure:
    r"""Undirected spanning trees of :math:`K_n`.

    Value: ``(..., n, n)`` symmetric 0/1 matrix with zero diagonal,
    :math:`\sum_{i<j} x_{ij} = n - 1`. Only the strict upper triangle of
    ``logits`` is read (symmetric logits are validated when ``validate_args``);
    :math:`A(\theta)` is Kirchhoff's log-determinant of the weighted Laplacian
    minor. :func:`pyro_sst.ops.edge_logits_to_matrix` converts Pyro's
    ``SpanningTree`` edge logits.
    """

    @property
    def num_nodes(self) -> int:
        return self.event_shape[-1]

    @lazy_property
    def _free_mask(self):
        n = self.num_nodes
        return torch.ones(n, n, dtype=torch.bool, device=self.logits.device).triu(1)

    def _canonical(self, x):
        return ops.symmetrize_upper(x)

    def _log_partition(self, logits):
        return ops.spanning_tree_log_partition(logits)

    def _marginals(self, logits):
        return ops.spanning_tree_marginals(logits)

    def solve(self, utilities: torch.Tensor) -> torch.Tensor:
        """Maximum spanning tree of ``utilities`` (batched Prim)."""
        return ops.max_spanning_tree(utilities)

    def _exact_sample(self, sample_shape):
        return ops.sample_spanning_tree(self.logits, sample_shape)

    def _enumerate(self):
        return ops.enumerate_spanning_trees(self.num_nodes)


class ArborescenceStructure:
    r"""Arborescences (directed spanning trees) rooted at ``root``.

    Value: ``(..., n, n)`` with ``x[i, j] = 1`` iff ``i`` is the parent of ``j``;
    non-root columns sum to 1, the root column is 0. :math:`A(\theta)` by Tutte's
    directed matrix-tree theorem; with ``single_root=True`` the root has exactly
    one child (Koo et al., 2007).
    """

    _options = ("root", "single_root")

    @property
    def num_nodes(self) -> int:
        return self.event_shape[-1]

    def _set_root(self, logits, root, single_root):
        check_square(logits)
        self.root, self.single_root = check_root(logits.shape[-1], root, single_root), bool(single_root)

    @lazy_property
    def _free_mask(self):
        n = self.num_nodes
        idx = torch.arange(n, device=self.logits.device)
        return (idx[:, None] != idx) & (idx != self.root)

    def _canonical(self, x):
        return torch.where(self._free_mask, x, torch.zeros_like(x))

    def _log_partition(self, logits):
        return ops.arborescence_log_partition(logits, self.root, self.single_root)

    def _marginals(self, logits):
        return ops.arborescence_marginals(logits, self.root, self.single_root)

    def solve(self, utilities: torch.Tensor) -> torch.Tensor:
        """Maximum arborescence of ``utilities`` (Chu-Liu-Edmonds)."""
        return ops.max_arborescence(self._canonical(utilities), self.root, self.single_root)

    def _exact_sample(self, sample_shape):
        return ops.sample_arborescence(self.logits, self.root, self.single_root, sample_shape)

    def _enumerate(self):
        return ops.enumerate_arborescences(self.num_nodes, self.root, self.single_root)


class RelaxedSpanningTree(SpanningTreeStructure, PerturbAndRelax):
    r"""Stochastic softmax trick over undirected spanning trees.

    :math:`X_t = \mu(U/t)` with :math:`\mu` the Kirchhoff edge marginals
    (explicit inverse formula with a custom backward; exact log-space fallback
    where the Laplacian is numerically singular); the hard sample is the
    maximum spanning tree of :math:`U`.

    :param torch.Tensor logits: ``(..., n, n)``; the strict upper triangle is read.
    :param temperature: positive scalar or tensor broadcastable to the batch shape.
    :param str noise: ``"gumbel"`` (default), ``"gaussian"`` or ``"negative_exponential"``.
    :param bool straight_through: hard forward value, relaxed gradient.
    """

    def __init__(
        self,
        logits: torch.Tensor,
        temperature: float | torch.Tensor,
        *,
        noise: str = "gumbel",
        straight_through: bool = False,
        validate_args: bool | None = None,
    ) -> None:
        super().__init__(logits, temperature, noise, straight_through, validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=2)
    def support(self) -> constraints.Constraint:
        return constraints.spanning_tree(relaxed=True)


class SpanningTree(SpanningTreeStructure, ExponentialFamily):
    r"""Exponential family :math:`q(x) \propto \exp\langle\theta, x\rangle` over spanning trees.

    Exact ``sample`` (ancestral sampling by conditional marginals), ``log_prob``,
    ``entropy``, ``enumerate_support`` (``n <= 7``), ``mode`` (maximum spanning tree).
    Unlike :class:`pyro.distributions.SpanningTree` (edge-list values, one sample,
    MCMC sampler) values are ``(n, n)`` matrices, batched and sampled exactly.
    """

    def __init__(self, logits: torch.Tensor, *, validate_args: bool | None = None) -> None:
        super().__init__(logits, validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=2)
    def support(self) -> constraints.Constraint:
        return constraints.spanning_tree(relaxed=False)


class RelaxedArborescence(ArborescenceStructure, PerturbAndRelax):
    r"""Stochastic softmax trick over arborescences rooted at ``root``.

    :math:`X_t = \mu(U/t)` with Tutte (or, for ``single_root``, Koo et al.)
    marginals; the hard sample is the Chu-Liu-Edmonds maximum arborescence.
    See :class:`RelaxedSpanningTree` for the other arguments.
    """

    def __init__(
        self,
        logits: torch.Tensor,
        temperature: float | torch.Tensor,
        *,
        root: int = 0,
        single_root: bool = False,
        noise: str = "gumbel",
        straight_through: bool = False,
        validate_args: bool | None = None,
    ) -> None:
        self._set_root(logits, root, single_root)
        super().__init__(logits, temperature, noise, straight_through, validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=2)
    def support(self) -> constraints.Constraint:
        return constraints.arborescence(self.root, self.single_root, relaxed=True)


class Arborescence(ArborescenceStructure, ExponentialFamily):
    r"""Exponential family over arborescences rooted at ``root`` (exact sampling)."""

    def __init__(
        self, logits: torch.Tensor, *, root: int = 0, single_root: bool = False, validate_args: bool | None = None
    ) -> None:
        self._set_root(logits, root, single_root)
        super().__init__(logits, validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=2)
    def support(self) -> constraints.Constraint:
        return constraints.arborescence(self.root, self.single_root, relaxed=False)


for _cls in (RelaxedSpanningTree, RelaxedArborescence):
    register_kl(_cls, _cls)(lambda q, p: q._utility_kl(p))
for _cls in (SpanningTree, Arborescence):
    register_kl(_cls, _cls)(exp_family_kl)
