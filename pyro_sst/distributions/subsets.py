r"""k-subsets: the relaxed top-k (SST) and the exact exponential family over k-subsets."""

import torch
from torch.distributions.kl import register_kl

from sst_common.checks import check_relaxation
from sst_common.structures import KSubsetStructure, exp_family_kl

from ..ops.subsets import RELAXATIONS
from . import constraints
from .base import ExponentialFamily, PerturbAndRelax

__all__ = ["KSubset", "RelaxedTopK"]


class RelaxedTopK(KSubsetStructure, PerturbAndRelax):
    r"""Stochastic softmax trick over k-subsets: a relaxed top-k.

    Utilities :math:`U = \theta + E`; the hard sample is the top-k of :math:`U` and the
    relaxed sample is :math:`X_t = \arg\max_{x \in [0,1]^d,\, \sum x = k}
    \langle U, x\rangle - t f(x)`, with ``relaxation`` choosing :math:`f`
    (the paper's table; every choice lies in :math:`[0,1]^d` and sums to ``k``):

    * ``"exp_family"`` (default): :math:`f = A^*`, so :math:`X_t = \mu(U/t)`, the k-subset marginals;
    * ``"euclidean"``: :math:`f = \frac12\|x\|^2`, the projection of :math:`U/t` onto the capped simplex;
    * ``"categorical_entropy"``: :math:`f = \sum_i x_i\log x_i`, :math:`X_t = \min(1, e^{(U - \tau)/t})`;
    * ``"binary_entropy"``: :math:`f = \sum_i x_i\log x_i + (1-x_i)\log(1-x_i)`,
      :math:`X_t = \sigma((U - \tau)/t)`;

    where :math:`\tau` makes the entries sum to ``k`` (bisection, then a Newton step
    whose derivative is the implicit-function gradient).

    :param torch.Tensor logits: ``(..., d)``.
    :param int k: subset size, ``0 <= k <= d``.
    :param temperature: positive scalar or tensor broadcastable to the batch shape.
    :param str relaxation: one of the four above.
    :param str noise: ``"gumbel"`` (default), ``"gaussian"`` or ``"negative_exponential"``.
    :param bool straight_through: hard forward value, relaxed gradient.
    """

    _options = ("k", "relaxation")

    def __init__(
        self,
        logits: torch.Tensor,
        k: int,
        temperature: float | torch.Tensor,
        *,
        relaxation: str = "exp_family",
        noise: str = "gumbel",
        straight_through: bool = False,
        validate_args: bool | None = None,
    ) -> None:
        check_relaxation(relaxation)
        self.relaxation = relaxation
        self._set_k(logits, k)
        super().__init__(logits, temperature, noise, straight_through, validate_args)

    def _relax(self, scores):
        return RELAXATIONS[self.relaxation](scores, self.k)

    @constraints.dependent_property(is_discrete=False, event_dim=1)
    def support(self) -> constraints.Constraint:
        return constraints.k_subset(self.k, relaxed=True)


class KSubset(KSubsetStructure, ExponentialFamily):
    r"""Exponential family over k-subsets (conditional Poisson sampling design).

    :math:`q(x) = e^{\langle\theta, x\rangle} / e_k(e^{\theta})` for k-hot ``x``. Exact
    ``sample`` (backward sampling through the DP, :math:`\lceil\log_2 d\rceil` batched
    steps), ``log_prob``, ``entropy``, ``mean`` (= marginals), ``mode`` (top-k of
    ``logits``), ``enumerate_support`` (up to :math:`10^6` subsets).
    """

    def __init__(self, logits: torch.Tensor, k: int, *, validate_args: bool | None = None) -> None:
        self._set_k(logits, k)
        super().__init__(logits, validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self) -> constraints.Constraint:
        return constraints.k_subset(self.k, relaxed=False)


register_kl(RelaxedTopK, RelaxedTopK)(lambda q, p: q._utility_kl(p))
register_kl(KSubset, KSubset)(exp_family_kl)
