r"""Shared machinery: the structured exponential family and the perturb-and-relax trick.

:class:`StructuredDistribution` joins a structure of :mod:`sst_common.structures` (which supplies the
log-partition, marginals, argmax, exact sampler and enumeration, and which entries of ``logits`` are
free parameters) to Pyro's ``TorchDistribution``: it gives
:math:`\log q(x) = \langle\theta, x\rangle - A(\theta)`, the marginals :math:`\mu = \nabla A`, the mode,
``expand`` and shape inference; :class:`PerturbAndRelax` adds the stochastic softmax trick and
:class:`ExponentialFamily` the exact exponential-family sampler.
"""

import torch
from pyro.distributions.torch_distribution import TorchDistribution
from torch.distributions import constraints
from torch.distributions.utils import lazy_property

from sst_common.checks import INVALID_LOGITS, all_options, check_event_shape, check_noise, check_same_options
from sst_common.structures import Structure

from .. import ops
from ..ops.logspace import fill_nan
from ..ops.noise import sample_noise, utility_kl, utility_log_prob
from ..ops.validation import check_array


def validating(validate_args):
    """Whether argument checks run: explicit flag, else torch's global default."""
    if validate_args is None:
        return torch.distributions.Distribution._validate_args
    return bool(validate_args)


def _as_temperature(temperature, logits):
    """``temperature`` as a positive tensor of the logits' dtype whose shape broadcasts with their batch shape."""
    try:
        t = torch.as_tensor(temperature, device=logits.device)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"temperature must be a positive number or tensor, got {temperature!r}") from None
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"temperature must be a positive real number or tensor, got dtype {t.dtype}")
    if not torch.is_tensor(temperature) and t.is_floating_point():
        t = torch.as_tensor(temperature, dtype=torch.float64, device=logits.device)  # not via float32
    t = t.to(logits.dtype)
    if not bool((t > 0).all()):
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    return t


def _broadcasts_to(shape, target):
    try:
        return torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False


class StructuredDistribution(Structure, TorchDistribution):
    """Base of every structured distribution: exponential-family algebra and shapes."""

    _ops = ops
    #: the other arguments' constraints; ``logits`` is added per class with the structure's event dims
    arg_constraints = {}

    def __init_subclass__(cls, **kwargs):
        logits = constraints.independent(constraints.real, cls._event_ndim)
        cls.arg_constraints = {"logits": logits, **{k: v for k, v in cls.arg_constraints.items() if k != "logits"}}
        super().__init_subclass__(**kwargs)

    def _event_shape_of(self, logits):
        return logits.shape[logits.dim() - self._event_ndim :]

    def _init_structure(self, logits, extra_batch_shape, validate_args, extra_name="temperature"):
        check_array(logits, "logits", self._event_ndim)
        event_shape = self._event_shape_of(logits)
        self._check_event_shape(event_shape)
        logits_batch = logits.shape[: logits.dim() - self._event_ndim]
        try:
            batch_shape = torch.broadcast_shapes(logits_batch, extra_batch_shape)
        except RuntimeError:
            raise ValueError(
                f"{extra_name} of shape {tuple(extra_batch_shape)} does not broadcast with the logits' batch shape "
                f"{tuple(logits_batch)}"
            ) from None
        self.logits = logits.expand(batch_shape + event_shape)
        super().__init__(batch_shape, event_shape, validate_args=validate_args)
        if validating(validate_args):
            self._validate_logits(logits)

    def _validate_logits(self, logits):
        """Only the entries that are read must be finite (the diagonal, say, may hold -inf)."""
        if not bool(torch.isfinite(logits).logical_or(~self._free_mask).all()):
            raise ValueError(INVALID_LOGITS)

    @lazy_property
    def _free_mask(self):
        """``_free_entries`` as a boolean tensor of shape ``event_shape``."""
        idx = torch.arange(self.event_shape[-1], device=self.logits.device)
        free = self._free_entries(idx[:, None], idx)
        return torch.ones(self.event_shape, dtype=torch.bool, device=self.logits.device) if free is None else free

    def _zero_where_not_free(self, x):
        return torch.where(self._free_mask, x, torch.zeros_like(x))

    # ------------------------------------------------------------------ algebra
    @lazy_property
    def log_partition(self) -> torch.Tensor:
        r""":math:`A(\theta) = \log \sum_{x \in \mathcal X} e^{\langle\theta, x\rangle}`, shape ``batch_shape``."""
        return self._log_partition(self.logits)

    @lazy_property
    def marginals(self) -> torch.Tensor:
        r""":math:`\mu(\theta) = \nabla A(\theta) = \mathbb{E}_q[x]`, shape ``batch_shape + event_shape``."""
        return self._marginals(self.logits)

    @property
    def mode(self) -> torch.Tensor:
        r"""The MAP structure :math:`\arg\max_{x} \langle\theta, x\rangle` (deterministic ties)."""
        return self.solve(self.logits)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        r""":math:`\langle\theta, x\rangle - A(\theta)`, summed over the free entries."""
        check_event_shape(value, self.event_shape)
        if self._validate_args:
            self._validate_sample(value)
        return self._score(value) - self.log_partition

    # ------------------------------------------------------------------ shapes
    @classmethod
    def infer_shapes(cls, logits: torch.Tensor, **arg_shapes) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Batch and event shapes from argument shapes: the event is the last ``event_dim`` dims of ``logits``,
        the other arguments broadcast with the rest."""
        event_shape = torch.Size(logits[len(logits) - cls._event_ndim :])
        batch_shape = torch.Size(logits[: len(logits) - cls._event_ndim])
        for name, shape in arg_shapes.items():
            if name in cls.arg_constraints:
                batch_shape = torch.broadcast_shapes(batch_shape, shape)
        return batch_shape, event_shape

    def _expand_tensors(self, new, batch_shape):
        new.logits = self.logits.expand(batch_shape + self.event_shape)

    def expand(
        self, batch_shape: tuple[int, ...], _instance: "StructuredDistribution | None" = None
    ) -> "StructuredDistribution":
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        if not _broadcasts_to(self.batch_shape, batch_shape):
            raise ValueError(
                f"Cannot broadcast distribution of shape {tuple(self.batch_shape)} to shape {tuple(batch_shape)}"
            )
        self._expand_tensors(new, batch_shape)
        for name in all_options(type(self)):
            setattr(new, name, getattr(self, name))
        super(StructuredDistribution, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new


class ExponentialFamily(StructuredDistribution):
    r"""Exact exponential family :math:`q(x \mid \theta) = \exp(\langle\theta, x\rangle - A(\theta))`.

    ``sample`` is exact (not reparameterised): use it with score-function
    estimators such as Pyro's ``TraceGraph_ELBO``, or as a prior.
    """

    has_rsample = False
    has_enumerate_support = True

    def __init__(self, logits: torch.Tensor, validate_args: bool | None = None) -> None:
        self._init_structure(logits, torch.Size(), validate_args)

    @property
    def mean(self) -> torch.Tensor:
        return self.marginals

    def entropy(self) -> torch.Tensor:
        r""":math:`H = A(\theta) - \langle\theta, \mu(\theta)\rangle`."""
        return self._exp_family_entropy()

    def sample(self, sample_shape: tuple[int, ...] = torch.Size()) -> torch.Tensor:
        """Exact sample of shape ``sample_shape + batch_shape + event_shape``."""
        return self._exact_sample(torch.Size(sample_shape))

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        """All structures, shape ``(N,) + batch_shape + event_shape`` (small sizes only)."""
        values = self._enumerate().to(dtype=self.logits.dtype, device=self.logits.device)
        values = values.reshape((values.shape[0],) + (1,) * len(self.batch_shape) + self.event_shape)
        if expand:
            values = values.expand((values.shape[0],) + self.batch_shape + self.event_shape)
        return values


class PerturbAndRelax(StructuredDistribution):
    r"""Stochastic softmax trick over a structure (Paulus et al., 2020).

    Utilities :math:`U = \theta + E` with i.i.d. noise :math:`E`; the hard
    sample is the stochastic argmax :math:`X = \arg\max_{x \in \mathcal X}
    \langle U, x\rangle` and the relaxed sample, with the exponential-family
    entropy regulariser, is

    .. math::

        X_t = \arg\max_{x \in \operatorname{conv}\mathcal X}
              \langle U, x\rangle + t\,H(x) = \mu(U / t),

    a differentiable function of :math:`\theta` and :math:`t` that tends to
    :math:`X` as :math:`t \to 0`. With ``straight_through=True``, ``rsample``
    returns :math:`X` in the forward pass and the gradient of :math:`X_t`.

    ``log_prob(x)`` is :math:`\langle\theta, x\rangle - A(\theta)`: exact for hard
    (0/1) values, including straight-through samples, which *are* hard (unlike
    Pyro's relaxed straight-through classes, which score a hidden soft value);
    for relaxed values it is the usual relaxed-ELBO surrogate, not a density.
    ``kl_divergence`` between two instances with equal temperature and noise
    is the KL of their utility distributions, which upper-bounds the KL of the
    relaxed samples (data processing inequality).
    """

    arg_constraints = {"temperature": constraints.positive}
    has_rsample = True

    def __init__(
        self,
        logits: torch.Tensor,
        temperature: float | torch.Tensor,
        noise: str = "gumbel",
        straight_through: bool = False,
        validate_args: bool | None = None,
    ) -> None:
        check_noise(noise)
        check_array(logits, "logits", self._event_ndim)
        temperature = _as_temperature(temperature, logits)
        self.noise = noise
        self.straight_through = bool(straight_through)
        self.temperature = temperature
        self._init_structure(logits, temperature.shape, validate_args)
        self.temperature = temperature.expand(self.batch_shape)

    _options = ("noise", "straight_through")

    def _expand_tensors(self, new, batch_shape):
        super()._expand_tensors(new, batch_shape)
        new.temperature = self.temperature.expand(batch_shape)

    def _per_event(self, t):
        return t.reshape(t.shape + (1,) * self._event_ndim)

    # ------------------------------------------------------------- the trick
    def sample_utilities(self, sample_shape: tuple[int, ...] = torch.Size()) -> torch.Tensor:
        """Perturbed utilities ``U = logits + E``, shape ``sample_shape + batch + event``."""
        shape = self._extended_shape(sample_shape)
        noise = sample_noise(self.noise, shape, self.logits.dtype, self.logits.device)
        return self._canonical(self.logits + noise)

    def utility_log_prob(self, utilities: torch.Tensor) -> torch.Tensor:
        r"""Log-density of the utilities, :math:`\sum_{\text{free } ij} \log p_E(U_{ij} - \theta_{ij})`.

        The score of REINFORCE on hard samples ``solve(U)``: differentiable in ``logits``, shape
        ``utilities.shape[:-event_dim]``.
        """
        log_p = utility_log_prob(self.noise, utilities, self.logits)
        return self._sum_event(self._zero_where_not_free(log_p))

    def relax(self, utilities: torch.Tensor) -> torch.Tensor:
        r"""The relaxed sample for given utilities, e.g. :math:`\mu(U / t)` (differentiable).

        A batch element with a NaN on a free entry comes out NaN, with a zero gradient.
        """
        scores = utilities / self._per_event(self.temperature)
        nan = self._sum_event(torch.isnan(scores) & self._free_mask) > 0
        return fill_nan(self._relax(scores.masked_fill(self._per_event(nan), 0)), nan, self._event_ndim)

    def _relax(self, scores):
        """The regularised argmax of ``scores = U / t`` (default: the exponential-family marginals)."""
        return self._marginals(scores)

    def relaxed_and_hard(self, sample_shape: tuple[int, ...] = torch.Size()) -> tuple[torch.Tensor, torch.Tensor]:
        """``(relaxed, hard)`` samples computed from the same noise."""
        utilities = self.sample_utilities(sample_shape)
        return self.relax(utilities), self.solve(utilities)

    def rsample(self, sample_shape: tuple[int, ...] = torch.Size()) -> torch.Tensor:
        """Relaxed sample (or straight-through hard sample), differentiable in ``logits``."""
        utilities = self.sample_utilities(sample_shape)
        relaxed = self.relax(utilities)
        if not self.straight_through:
            return relaxed
        hard = self.solve(utilities)
        return hard + (relaxed - relaxed.detach())

    def hard_sample(self, sample_shape: tuple[int, ...] = torch.Size()) -> torch.Tensor:
        """Stochastic-argmax structure: an exact member of the support (no gradient)."""
        with torch.no_grad():
            return self.solve(self.sample_utilities(sample_shape))

    def _utility_kl(self, other):
        check_same_options(self, other)
        if not bool((self.temperature == other.temperature).all()):
            raise ValueError("kl_divergence needs equal temperatures; the utility KL does not bound it otherwise")
        kl = utility_kl(self.noise, self.logits, other.logits)
        return self._sum_event(self._zero_where_not_free(kl))
