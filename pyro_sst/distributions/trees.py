r"""Spanning trees and arborescences: relaxed (SST) and exact exponential-family classes."""

import torch
from torch.distributions.kl import register_kl

from sst_common.structures import ArborescenceStructure, SpanningTreeStructure, exp_family_kl

from . import constraints
from .base import ExponentialFamily, PerturbAndRelax

__all__ = [
    "Arborescence",
    "RelaxedArborescence",
    "RelaxedSpanningTree",
    "SpanningTree",
]


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
