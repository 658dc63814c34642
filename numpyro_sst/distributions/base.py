r"""Shared machinery: the structured exponential family and the perturb-and-relax trick (NumPyro).

:class:`StructuredDistribution` joins a structure of :mod:`sst_common.structures` (which supplies the
log-partition, marginals, argmax, exact sampler and enumeration, and which entries of ``logits`` are
free parameters) to NumPyro's ``Distribution``: it gives
:math:`\log q(x) = \langle\theta, x\rangle - A(\theta)`, the marginals :math:`\mu = \nabla A`, the mode,
``expand`` and shape inference; :class:`PerturbAndRelax` adds the stochastic softmax trick and
:class:`ExponentialFamily` the exact exponential-family sampler. Instances are pytrees whose leaves are
the arrays (``logits``, ``temperature``); the options (``k``, ``root``, ``noise``, ...) are static
auxiliary data, so an instance passes through ``jax.jit``, ``jax.vmap`` and ``lax.map`` and is rebuilt
with the same options.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from numpyro.distributions import Distribution, constraints
from numpyro.distributions.batch_util import _default_vmap_over, vmap_over
from numpyro.distributions.distribution import ExpandedDistribution
from numpyro.distributions.util import validate_sample

from sst_common.checks import INVALID_LOGITS, all_options, check_event_shape, check_noise, check_same_options
from sst_common.structures import Structure

from .. import ops
from ..ops.noise import sample_noise, utility_kl, utility_log_prob
from ..ops.validation import check_array, is_concrete


def validating(validate_args):
    """Whether argument checks run: explicit flag, else NumPyro's global default."""
    if validate_args is None:
        return Distribution._validate_args
    return bool(validate_args)


def validate_value(log_prob):
    """``log_prob`` that first checks the value's event shape (a ``ValueError``, not a broadcasting error), then
    masks invalid values as NumPyro's ``validate_sample`` does."""
    checked = validate_sample(log_prob)

    @functools.wraps(log_prob)
    def wrapper(self, value):
        check_event_shape(value, self.event_shape)
        return checked(self, value)

    return wrapper


def _as_temperature(temperature, logits):
    """``temperature`` as a positive array of the logits' dtype (checked where its value is known)."""
    try:
        t = jnp.asarray(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a positive number or array, got {temperature!r}") from None
    if not jnp.issubdtype(t.dtype, jnp.floating) and not jnp.issubdtype(t.dtype, jnp.integer):
        raise ValueError(f"temperature must be a positive real number or array, got dtype {t.dtype}")
    t = t.astype(logits.dtype)
    if is_concrete(t) and not bool(np.all(np.asarray(t) > 0)):
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    return t


class StructuredDistribution(Structure, Distribution):
    """Base of every structured distribution: exponential-family algebra, shapes and pytree layout."""

    _ops = ops
    #: the other arguments' constraints; ``logits`` is added per class with the structure's event dims
    arg_constraints = {}
    pytree_data_fields = ("logits",)

    def __init_subclass__(cls, **kwargs):
        logits = constraints.independent(constraints.real, cls._event_ndim)
        cls.arg_constraints = {"logits": logits, **{k: v for k, v in cls.arg_constraints.items() if k != "logits"}}
        # Options are auxiliary pytree data; numpyro gathers those of Distribution subclasses only, so each
        # class lists every option it has, including those of its structure mixin.
        cls.pytree_aux_fields = all_options(cls)
        super().__init_subclass__(**kwargs)

    def _init_structure(self, logits, extra_batch_shape, validate_args, extra_name="temperature"):
        logits = check_array(logits, "logits", self._event_ndim)
        event_shape = tuple(logits.shape[logits.ndim - self._event_ndim :])
        self._check_event_shape(event_shape)
        logits_batch = tuple(logits.shape[: logits.ndim - self._event_ndim])
        try:
            batch_shape = tuple(jnp.broadcast_shapes(logits_batch, tuple(extra_batch_shape)))
        except ValueError:
            raise ValueError(
                f"{extra_name} of shape {tuple(extra_batch_shape)} does not broadcast with the logits' batch shape "
                f"{logits_batch}"
            ) from None
        self.logits = jnp.broadcast_to(logits, batch_shape + event_shape)
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    def validate_args(self, strict: bool = True) -> None:
        """NumPyro's argument checks, except that only the entries of ``logits`` that are read must be finite.

        Inside ``jit`` the values are unknown: ``strict`` raises NumPyro's ``RuntimeError``, otherwise
        nothing is checked.
        """
        with jax.ensure_compile_time_eval():
            for name, constraint in self.arg_constraints.items():
                if name not in self.__dict__:
                    continue  # set after Distribution.__init__ (temperature): checked where it is converted
                value = self.__dict__[name]
                if not is_concrete(value):
                    if strict:
                        raise RuntimeError("Cannot validate arguments inside jitted code.")
                    continue
                if name == "logits":
                    self._validate_logits(np.asarray(value))
                elif not np.all(np.asarray(constraint(value))):
                    raise ValueError(f"{type(self).__name__} distribution got invalid {name} parameter.")

    def _validate_logits(self, logits):
        """Only the entries that are read must be finite (the diagonal, say, may hold -inf); ``logits``: NumPy."""
        if not np.all(np.isfinite(logits) | ~self._free_mask):
            raise ValueError(INVALID_LOGITS)

    @property
    def _free_mask(self):
        """``_free_entries`` as a NumPy constant of shape ``event_shape`` (never traced)."""
        idx = np.arange(self.event_shape[-1])
        free = self._free_entries(idx[:, None], idx)
        return np.ones(self.event_shape, bool) if free is None else free

    def _zero_where_not_free(self, x):
        return jnp.where(self._free_mask, x, 0)

    # ------------------------------------------------------------------ algebra
    @property
    def log_partition(self) -> jax.Array:
        r""":math:`A(\theta) = \log \sum_{x \in \mathcal X} e^{\langle\theta, x\rangle}`, shape ``batch_shape``."""
        return self._log_partition(self.logits)

    @property
    def marginals(self) -> jax.Array:
        r""":math:`\mu(\theta) = \nabla A(\theta) = \mathbb{E}_q[x]`, shape ``batch_shape + event_shape``."""
        return self._marginals(self.logits)

    @property
    def mode(self) -> jax.Array:
        r"""The MAP structure :math:`\arg\max_{x} \langle\theta, x\rangle` (deterministic ties)."""
        return self.solve(self.logits)

    @validate_value
    def log_prob(self, value: ArrayLike) -> jax.Array:
        r""":math:`\langle\theta, x\rangle - A(\theta)`, summed over the free entries."""
        return self._score(value) - self.log_partition

    # ------------------------------------------------------------------ shapes
    @classmethod
    def infer_shapes(cls, logits: ArrayLike, *args, **arg_shapes) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``(batch_shape, event_shape)`` from the shapes of the arguments: the event is the last ``event_dim`` dims
        of ``logits``, the other arguments broadcast with the rest."""
        event_shape = tuple(logits[len(logits) - cls._event_ndim :])
        batch_shape = tuple(logits[: len(logits) - cls._event_ndim])
        for name, shape in arg_shapes.items():
            if name in cls.arg_constraints and name != "logits" and shape is not None:
                batch_shape = tuple(jnp.broadcast_shapes(batch_shape, tuple(shape)))
        return batch_shape, event_shape

    def _expand_arrays(self, new, batch_shape):
        new.logits = jnp.broadcast_to(self.logits, batch_shape + self.event_shape)

    def expand(self, batch_shape: tuple[int, ...]) -> "StructuredDistribution":
        """The same class with a larger batch shape (registered KLs keep working under plates)."""
        batch_shape = tuple(batch_shape)
        if batch_shape == self.batch_shape:
            return self
        ExpandedDistribution._broadcast_shape(self.batch_shape, batch_shape)  # NumPyro's error for a bad shape
        new = type(self).__new__(type(self))
        self._expand_arrays(new, batch_shape)
        for name in all_options(type(self)):
            setattr(new, name, getattr(self, name))
        Distribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new


class ExponentialFamily(StructuredDistribution):
    r"""Exact exponential family :math:`q(x \mid \theta) = \exp(\langle\theta, x\rangle - A(\theta))`.

    ``sample`` is exact (not reparameterised): use it with score-function estimators such as
    NumPyro's ``TraceGraph_ELBO``, or as a prior.
    """

    has_enumerate_support = True
    reparametrized_params = []

    def __init__(self, logits: ArrayLike, validate_args: bool | None = None) -> None:
        self._init_structure(logits, (), validate_args)

    @property
    def mean(self) -> jax.Array:
        return self.marginals

    def entropy(self) -> jax.Array:
        r""":math:`H = A(\theta) - \langle\theta, \mu(\theta)\rangle`."""
        return self._exp_family_entropy()

    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        """Exact sample of shape ``sample_shape + batch_shape + event_shape`` from the key ``key``."""
        return self._exact_sample(tuple(sample_shape), key)

    def enumerate_support(self, expand: bool = True) -> jax.Array:
        """All structures, shape ``(N,) + batch_shape + event_shape`` (small sizes only)."""
        values = self._enumerate().astype(self.logits.dtype)
        values = values.reshape((values.shape[0],) + (1,) * len(self.batch_shape) + self.event_shape)
        if expand:
            values = jnp.broadcast_to(values, (values.shape[0],) + self.batch_shape + self.event_shape)
        return values


class PerturbAndRelax(StructuredDistribution):
    r"""Stochastic softmax trick over a structure (Paulus et al., 2020).

    Utilities :math:`U = \theta + E` with i.i.d. noise :math:`E`; the hard sample is the stochastic
    argmax :math:`X = \arg\max_{x \in \mathcal X} \langle U, x\rangle` and the relaxed sample, with
    the exponential-family entropy regulariser, is

    .. math::

        X_t = \arg\max_{x \in \operatorname{conv}\mathcal X} \langle U, x\rangle + t\,H(x) = \mu(U / t),

    a differentiable function of :math:`\theta` and :math:`t` that tends to :math:`X` as
    :math:`t \to 0`. ``sample(key)`` returns :math:`X_t` (reparameterised: gradients flow to
    ``logits`` and ``temperature``); with ``straight_through=True`` it returns :math:`X` in the
    forward pass and the gradient of :math:`X_t`.

    ``log_prob(x)`` is :math:`\langle\theta, x\rangle - A(\theta)`: exact for hard (0/1) values,
    including straight-through samples, which *are* hard; for relaxed values it is the usual
    relaxed-ELBO surrogate, not a density. ``kl_divergence`` between two instances with equal
    temperature and noise is the KL of their utility distributions, which upper-bounds the KL of
    the relaxed samples (data processing inequality).
    """

    arg_constraints = {"temperature": constraints.positive}
    pytree_data_fields = ("temperature",)
    reparametrized_params = ["logits", "temperature"]
    _options = ("noise", "straight_through")

    def __init__(
        self,
        logits: ArrayLike,
        temperature: ArrayLike,
        noise: str = "gumbel",
        straight_through: bool = False,
        validate_args: bool | None = None,
    ) -> None:
        check_noise(noise)
        logits = check_array(logits, "logits", self._event_ndim)
        temperature = _as_temperature(temperature, logits)
        self.noise = noise
        self.straight_through = bool(straight_through)
        self._init_structure(logits, temperature.shape, validate_args)
        self.temperature = jnp.broadcast_to(temperature, self.batch_shape)

    def _expand_arrays(self, new, batch_shape):
        super()._expand_arrays(new, batch_shape)
        new.temperature = jnp.broadcast_to(self.temperature, batch_shape)

    def _per_event(self, t):
        return t.reshape(t.shape + (1,) * self._event_ndim)

    # ------------------------------------------------------------- the trick
    def sample_utilities(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        """Perturbed utilities ``U = logits + E``, shape ``sample_shape + batch + event``."""
        shape = tuple(sample_shape) + self.batch_shape + self.event_shape
        return self._canonical(self.logits + sample_noise(key, self.noise, shape, self.logits.dtype))

    def utility_log_prob(self, utilities: ArrayLike) -> jax.Array:
        r"""Log-density of the utilities, :math:`\sum_{\text{free } ij} \log p_E(U_{ij} - \theta_{ij})`.

        The score of REINFORCE on hard samples ``solve(U)``: differentiable in ``logits``, shape
        ``utilities.shape[:-event_dim]``.
        """
        log_p = utility_log_prob(self.noise, utilities, self.logits)
        return self._sum_event(self._zero_where_not_free(log_p))

    def relax(self, utilities: ArrayLike) -> jax.Array:
        r"""The relaxed sample for given utilities, e.g. :math:`\mu(U / t)` (differentiable).

        A non-positive temperature raises at construction on concrete values; under ``jit`` (values unknown
        there) those batch elements come out NaN, with zero gradients; so do elements with a NaN on a free entry.
        """
        t = self._per_event(self.temperature)
        positive = t > 0
        scores = utilities / jnp.where(positive, t, 1)
        # a NaN on a free entry: that element is NaN, with a zero gradient
        nan = self._per_event(self._sum_event(jnp.isnan(scores) & self._free_mask) > 0)
        relaxed = self._relax(jnp.where(nan, 0, scores))
        return jnp.where(positive & ~nan, relaxed, jnp.nan)

    def _relax(self, scores):
        """The regularised argmax of ``scores = U / t`` (default: the exponential-family marginals)."""
        return self._marginals(scores)

    def relaxed_and_hard(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> tuple[jax.Array, jax.Array]:
        """``(relaxed, hard)`` samples computed from the same noise."""
        utilities = self.sample_utilities(key, sample_shape)
        return self.relax(utilities), self.solve(utilities)

    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        """Relaxed sample (or straight-through hard sample), differentiable in ``logits`` and ``temperature``."""
        utilities = self.sample_utilities(key, sample_shape)
        relaxed = self.relax(utilities)
        if not self.straight_through:
            return relaxed
        return self.solve(utilities) + (relaxed - jax.lax.stop_gradient(relaxed))

    def hard_sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        """Stochastic-argmax structure: an exact member of the support (no gradient)."""
        return self.solve(jax.lax.stop_gradient(self.sample_utilities(key, sample_shape)))

    def _utility_kl(self, other):
        check_same_options(self, other)
        if is_concrete(self.temperature, other.temperature) and not bool(
            np.all(np.asarray(self.temperature) == np.asarray(other.temperature))
        ):
            raise ValueError("kl_divergence needs equal temperatures; the utility KL does not bound it otherwise")
        kl = utility_kl(self.noise, self.logits, other.logits)
        return self._sum_event(self._zero_where_not_free(kl))


@vmap_over.register
def _vmap_over_structured(dist: StructuredDistribution, logits=None, temperature=None):
    """``vmap`` axes of an instance: ``logits`` (and ``temperature``) may be mapped; the options are static."""
    axes = _default_vmap_over(dist, logits=logits)
    if isinstance(dist, PerturbAndRelax):
        axes.temperature = temperature
    return axes
