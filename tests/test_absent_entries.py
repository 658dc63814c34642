"""``-inf`` logits (absent edges or items) in the exponential-family classes of both backends: ``log_prob``,
``entropy`` and ``kl_divergence`` are finite and equal to enumeration over the structures that remain, with
finite gradients (no ``-inf * 0``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from numpyro.distributions.kl import kl_divergence
from reference import ExpFamily, k_subsets, spanning_trees, upper_mask

import numpyro_sst
import pyro_sst


def _tree_logits():
    logits = np.random.default_rng(0).normal(size=(4, 4))
    logits[0, 1] = logits[1, 0] = -np.inf
    return logits


def _subset_logits():
    logits = np.random.default_rng(1).normal(size=5)
    logits[2] = -np.inf
    return logits


# (logits, constructor in a backend module without validation (-inf is invalid input to it), support, mask)
CASES = {
    "SpanningTree": (
        _tree_logits,
        lambda m, x: m.SpanningTree(x, validate_args=False),
        lambda: spanning_trees(4),
        upper_mask(4),
    ),
    "KSubset": (_subset_logits, lambda m, x: m.KSubset(x, 2, validate_args=False), lambda: k_subsets(5, 2), None),
}


def _reference(support, logits, mask):
    """The family over the structures of finite weight (those using no absent entry)."""
    mask = np.ones(logits.shape, bool) if mask is None else mask
    usable = ~((support > 0) & ~np.isfinite(logits) & mask).reshape(len(support), -1).any(-1)
    return ExpFamily(support[usable], np.where(np.isfinite(logits), logits, 0), mask)


@pytest.mark.parametrize("name", sorted(CASES))
def test_log_prob_entropy_and_kl_with_absent_entries(name):
    make_logits, make, make_support, mask = CASES[name]
    logits = make_logits()
    other = logits + np.random.default_rng(2).normal(size=logits.shape) * np.isfinite(logits)
    ref = _reference(make_support(), logits, mask)
    ref_other = _reference(make_support(), other, mask)
    mode = ref.mode
    expected_kl = float((ref.probs * (np.log(ref.probs) - np.log(ref_other.probs))).sum())

    x = torch.tensor(logits, requires_grad=True)
    q, p = make(pyro_sst, x), make(pyro_sst, torch.tensor(other))
    log_prob = q.log_prob(torch.tensor(mode))
    np.testing.assert_allclose(log_prob.item(), ref.scores[ref.index_of(mode[None])[0]] - ref.log_partition)
    np.testing.assert_allclose(q.entropy().item(), ref.entropy, rtol=1e-10)
    np.testing.assert_allclose(torch.distributions.kl_divergence(q, p).item(), expected_kl, rtol=1e-8, atol=1e-12)
    (log_prob + q.entropy()).backward()
    assert torch.isfinite(x.grad).all()

    with jax.enable_x64(True):
        jq, jp = make(numpyro_sst, jnp.asarray(logits)), make(numpyro_sst, jnp.asarray(other))
        np.testing.assert_allclose(float(jq.log_prob(jnp.asarray(mode))), log_prob.item(), rtol=1e-10)
        np.testing.assert_allclose(float(jq.entropy()), ref.entropy, rtol=1e-10)
        np.testing.assert_allclose(float(kl_divergence(jq, jp)), expected_kl, rtol=1e-8)
        grad = jax.grad(lambda t: make(numpyro_sst, t).log_prob(jnp.asarray(mode)) + make(numpyro_sst, t).entropy())
        assert bool(jnp.isfinite(grad(jnp.asarray(logits))).all())


def _sample_in(backend, make):
    """A relaxed sample of ``make(module, array_fn)``: ``rsample()`` in pyro_sst, ``sample(key)`` in numpyro_sst."""
    if backend == "pyro":
        return make(pyro_sst, lambda a: torch.tensor(a, dtype=torch.float32)).rsample()
    return make(numpyro_sst, lambda a: jnp.asarray(a, jnp.float32)).sample(jax.random.PRNGKey(0))


_INF = np.inf
# Relaxed classes whose support is empty for these logits (validation off: -inf means absent), with the error
EMPTY_SUPPORTS = {
    "GumbelSinkhorn, a row of -inf": lambda m, a: m.GumbelSinkhorn(
        a([[-_INF] * 3, [0.0, 1, 2], [0, 1, 2]]), 0.5, validate_args=False
    ),
    "GumbelSinkhorn, two rows with one column": lambda m, a: m.GumbelSinkhorn(
        a([[0.0, -_INF, -_INF], [0, -_INF, -_INF], [0, 1, 2]]), 0.5, validate_args=False
    ),
    "RelaxedOneHotCategorical, every class -inf": lambda m, a: m.RelaxedOneHotCategorical(
        0.5, logits=a([-_INF] * 3), validate_args=False
    ),
    **{
        f"RelaxedTopK k = d, one item -inf, {relaxation}": (
            lambda m, a, relaxation=relaxation: m.RelaxedTopK(
                a([0.0, 1, -_INF]), 3, 0.5, relaxation=relaxation, validate_args=False
            )
        )
        for relaxation in ("exp_family", "euclidean", "categorical_entropy", "binary_entropy")
    },
}


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
@pytest.mark.parametrize("case", sorted(EMPTY_SUPPORTS))
def test_relaxed_sample_of_an_empty_support_raises(backend, case):
    """One rule for every relaxed class: no structure of finite weight, no sample (as hard samples and marginals)."""
    with pytest.raises(ValueError, match="logits|v: k=3"):
        _sample_in(backend, lambda m, a: EMPTY_SUPPORTS[case](m, lambda x: a(np.asarray(x))))


@pytest.mark.parametrize("case", sorted(EMPTY_SUPPORTS))
def test_relaxed_sample_of_an_empty_support_is_nan_under_jit(case):
    def sample(logits_like):
        return EMPTY_SUPPORTS[case](numpyro_sst, lambda x: jnp.asarray(x, jnp.float32) + logits_like).sample(
            jax.random.PRNGKey(0)
        )

    assert bool(jnp.isnan(jax.jit(sample)(jnp.float32(0.0))).all())


def test_assignment_exists_matches_scipy_in_both_backends():
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(3)
    logits = np.where(rng.random((40, 4, 4)) < 0.55, -np.inf, rng.normal(size=(40, 4, 4)))
    expected = []
    for element in logits:
        try:
            linear_sum_assignment(np.where(np.isfinite(element), 0.0, np.inf))
            expected.append(True)
        except ValueError:
            expected.append(False)
    assert 5 < sum(expected) < 35  # both outcomes occur
    np.testing.assert_array_equal(pyro_sst.ops.assignment_exists(torch.tensor(logits)).numpy(), expected)
    np.testing.assert_array_equal(np.asarray(numpyro_sst.ops.assignment_exists(jnp.asarray(logits))), expected)
    jitted = jax.jit(numpyro_sst.ops.assignment_exists)(jnp.asarray(logits, jnp.float32))
    np.testing.assert_array_equal(np.asarray(jitted), expected)


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_categorical_probs_are_validated_by_name_and_zero_is_an_absent_class(backend):
    module, array = (pyro_sst, torch.tensor) if backend == "pyro" else (numpyro_sst, jnp.asarray)
    make = lambda probs: module.RelaxedOneHotCategorical(array(0.5), probs=array(probs))  # noqa: E731
    for bad in ([0.5, -0.5, 1.0], [0.0, 0.0], [np.nan, 1.0], [np.inf, 1.0]):
        with pytest.raises(ValueError, match="^probs must be finite and nonnegative"):
            make(bad)
    with pytest.raises(ValueError, match="^probs must have dtype"):
        make([1, 2])
    dist = make([0.25, 0.75, 0.0])  # validates: the third class is absent
    np.testing.assert_allclose(np.asarray(dist.probs), [0.25, 0.75, 0.0], rtol=1e-6)
    hard = dist.hard_sample() if backend == "pyro" else dist.hard_sample(jax.random.PRNGKey(0))
    assert float(np.asarray(hard)[2]) == 0.0
    with pytest.raises(ValueError, match="logits must not be NaN or \\+inf"):
        module.RelaxedOneHotCategorical(array(0.5), logits=array([0.0, np.inf]))
    with pytest.raises(ValueError, match="every class is absent"):
        module.RelaxedOneHotCategorical(array(0.5), logits=array([-np.inf, -np.inf]))


def _weights(shape):
    # not all equal: a sum of relaxed samples (each on a simplex or polytope face) has a zero gradient
    return np.random.default_rng(6).normal(size=shape)


def _gradient_rows(backend, function, x):
    """Gradient of ``sum(w * where(finite(out), out, 0))`` with respect to ``x``, one row per batch element."""
    if backend == "pyro":
        x = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        out = function(pyro_sst, x)
        (torch.where(torch.isfinite(out), out, 0) * torch.tensor(_weights(out.shape))).sum().backward()
        return x.grad.numpy().reshape(len(x), -1)

    def loss(x):
        out = function(numpyro_sst, x)
        return (jnp.where(jnp.isfinite(out), out, 0) * _weights(out.shape)).sum()

    return np.asarray(jax.grad(loss)(jnp.asarray(x, jnp.float32))).reshape(len(x), -1)


def _nan_in(shape, index):
    x = np.random.default_rng(4).normal(size=shape)
    x[index] = np.nan
    return x


_T = lambda m: torch.tensor(0.5) if m is pyro_sst else 0.5  # noqa: E731


def _relaxed(make):
    """A relaxed sample (reparameterised) of the distribution ``make(module, logits)``."""
    return lambda m, x: make(m, x).rsample() if m is pyro_sst else make(m, x).rsample(jax.random.PRNGKey(0))


# (function of (module, logits), logits with batch element 1 NaN on a read entry)
NAN_ELEMENTS = {
    "RelaxedSpanningTree": (_relaxed(lambda m, x: m.RelaxedSpanningTree(x, _T(m), validate_args=False)), (1, 0, 2)),
    "RelaxedArborescence": (_relaxed(lambda m, x: m.RelaxedArborescence(x, _T(m), validate_args=False)), (1, 2, 1)),
    "RelaxedTopK": (_relaxed(lambda m, x: m.RelaxedTopK(x, 2, _T(m), validate_args=False)), (1, 0)),
    "RelaxedOneHotCategorical": (
        _relaxed(lambda m, x: m.RelaxedOneHotCategorical(_T(m), logits=x, validate_args=False)),
        (1, 0),
    ),
    "GumbelSinkhorn": (_relaxed(lambda m, x: m.GumbelSinkhorn(x, _T(m), validate_args=False)), (1, 0, 1)),
    "GumbelSinkhorn.log_partition": (
        lambda m, x: m.GumbelSinkhorn(x, _T(m), validate_args=False).log_partition,
        (1, 0, 1),
    ),
    "SpanningTree.log_prob": (
        lambda m, x: m.SpanningTree(x, validate_args=False).log_prob(m.SpanningTree(x[0] * 0).mode),
        (1, 0, 2),
    ),
    "KSubset.log_prob": (
        lambda m, x: m.KSubset(x, 2, validate_args=False).log_prob(m.KSubset(x[0] * 0, 2).mode),
        (1, 0),
    ),
}


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
@pytest.mark.parametrize("case", sorted(NAN_ELEMENTS))
def test_a_nan_element_has_a_zero_gradient_row_and_leaves_the_others_finite(backend, case):
    function, index = NAN_ELEMENTS[case]
    shape = (2, 4, 4) if len(index) == 3 else (2, 4)
    grad = _gradient_rows(backend, function, _nan_in(shape, index))
    assert np.isfinite(grad[0]).all() and np.abs(grad[0]).sum() > 0
    np.testing.assert_array_equal(grad[1], 0.0)


def _non_finite_log_partitions(kind):
    """Three elements: ordinary, an empty support (-inf), a +inf logit (+inf)."""
    rng = np.random.default_rng(5)
    if kind == "subset":
        x = rng.normal(size=(3, 5))
        x[1, :4], x[2, 0] = -np.inf, np.inf
        return x
    x = rng.normal(size=(3, 4, 4))
    if kind == "permanent":
        x[1, 0, :], x[2, 0, 0] = -np.inf, np.inf
    else:
        x[1, :, 3] = x[1, 3, :] = -np.inf  # node 3 cut off
        x[2, 0, 1] = np.inf
    return x


LOG_PARTITIONS = {
    "spanning tree": ("tree", lambda m, x: m.ops.spanning_tree_log_partition(x)),
    "arborescence": ("tree", lambda m, x: m.ops.arborescence_log_partition(x)),
    "single-root arborescence": ("tree", lambda m, x: m.ops.arborescence_log_partition(x, single_root=True)),
    "k-subset": ("subset", lambda m, x: m.ops.log_elementary_symmetric(x, 2)),
    "permanent": ("permanent", lambda m, x: m.ops.log_permanent(x)),
}


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
@pytest.mark.parametrize("case", sorted(LOG_PARTITIONS))
def test_log_partition_gradient_is_zero_where_it_is_not_finite(backend, case):
    """Masked out by the caller (a zero cotangent), an element with A = -inf or +inf leaves the gradient finite."""
    kind, function = LOG_PARTITIONS[case]
    x = _non_finite_log_partitions(kind)
    grad = _gradient_rows(backend, function, x)
    assert np.isfinite(grad[0]).all() and np.abs(grad[0]).sum() > 0
    np.testing.assert_array_equal(grad[1:], 0.0)
