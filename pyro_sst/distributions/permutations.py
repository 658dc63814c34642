r"""Permutations: Gumbel-Sinkhorn (the SST over the Birkhoff polytope)."""

import warnings

import torch
from torch.distributions.kl import register_kl

from sst_common.checks import check_sinkhorn_args
from sst_common.structures import PermutationStructure

from .. import ops
from ..ops.logspace import fill_nan
from . import constraints
from .base import PerturbAndRelax

__all__ = ["GumbelSinkhorn"]


_NO_PERMUTATION = (
    "logits: no permutation has finite weight in some batch element (-inf logits mark absent entries), "
    "so its samples are undefined"
)


class GumbelSinkhorn(PermutationStructure, PerturbAndRelax):
    r"""Gumbel-Sinkhorn (Mena et al., 2018): the stochastic softmax trick over permutations.

    Utilities :math:`U = \theta + E`; the hard sample is the maximum assignment of
    :math:`U` (Hungarian) and the relaxed sample is the doubly stochastic

    .. math:: X_t = \arg\max_{P \in \mathcal B_n} \langle U, P\rangle + t H(P) = S(U / t),

    computed by :func:`pyro_sst.ops.sinkhorn` (by default Newton's method on the
    Sinkhorn dual, at most ``n_iters`` steps, stopping once the rows sum to 1
    within ``tol``; columns always do). If an element stops at the cap with a
    larger residual, a ``RuntimeWarning`` names the residual (never silently).
    ``log_partition`` and ``marginals`` are the exponential family's over
    permutations: exact for ``n <= 12``, Bethe beyond, so
    ``log_prob`` of a hard value is exact for ``n <= 12``.

    :param torch.Tensor logits: ``(..., n, n)``.
    :param temperature: positive scalar or tensor broadcastable to the batch shape.
    :param int n_iters: cap on Newton steps (``"implicit"``) or Sinkhorn sweeps (``"unrolled"``).
    :param float tol: convergence tolerance on the row sums.
    :param str backward: ``"implicit"`` (default: Newton to the fixed point, whose
        derivative is taken; memory independent of ``n_iters``) or ``"unrolled"``
        (plain sweeps, differentiated through).
    :param str noise: ``"gumbel"`` (default), ``"gaussian"`` or ``"negative_exponential"``.
    :param bool straight_through: hard forward value, relaxed gradient.
    """

    _options = ("n_iters", "tol", "backward")

    def __init__(
        self,
        logits: torch.Tensor,
        temperature: float | torch.Tensor,
        *,
        n_iters: int = 100,
        tol: float = 1e-6,
        backward: str = "implicit",
        noise: str = "gumbel",
        straight_through: bool = False,
        validate_args: bool | None = None,
    ) -> None:
        self.n_iters, self.tol = check_sinkhorn_args(n_iters, tol, backward)
        self.backward = backward
        super().__init__(logits, temperature, noise, straight_through, validate_args)

    def _relax(self, scores):
        p, residual = ops.sinkhorn(scores, self.n_iters, self.tol, self.backward)
        # Without a permutation of finite weight the sample is undefined: raise, as hard_sample and marginals do
        # (a traced graph, which cannot raise, gets NaN).
        exists = ops.assignment_exists(self.logits)  # a property of the support: once per batch element
        if not torch.jit.is_tracing() and not bool(exists.all()):
            raise ValueError(_NO_PERMUTATION)
        p = fill_nan(p, ~exists, 2)
        if not torch.jit.is_tracing():  # a traced graph has no Python left to warn from
            worst = residual.detach().max().item() if residual.numel() else 0.0
            if worst > self.tol:
                warnings.warn(
                    f"GumbelSinkhorn: stopped at n_iters={self.n_iters} with row residual {worst:.3g} > "
                    f"tol={self.tol:g}; raise n_iters or the temperature",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return p

    @constraints.dependent_property(is_discrete=False, event_dim=2)
    def support(self) -> constraints.Constraint:
        return constraints.permutation(relaxed=True)


register_kl(GumbelSinkhorn, GumbelSinkhorn)(lambda q, p: q._utility_kl(p))
