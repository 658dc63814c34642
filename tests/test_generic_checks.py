"""The generic checks Pyro and NumPyro run on every distribution, written once and run on every class of both
backends: shapes and support, ``infer_shapes``, ``expand`` (with the registered KL, and its error), ``to_event``,
``mask``, ``log_prob``
under ``jit``, the JAX transforms of a distribution (pytree flatten/unflatten, ``jit``, ``vmap`` via ``vmap_over``,
``lax.map``), and gradients of samples and ``log_prob`` against central finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.distributions
from backends import BACKENDS, NumPyro, Pyro
from numpyro.distributions.batch_util import vmap_over

import numpyro_sst
import pyro_sst
from sst_common.checks import RELAXATIONS, all_options

BATCH = (2,)

#: name: (constructor from (backend module, logits), event shape, relaxed?, straight-through?)
CASES = {
    "RelaxedSpanningTree": (lambda m, x: m.RelaxedSpanningTree(x, 0.5), (4, 4), True, False),
    "RelaxedArborescence": (lambda m, x: m.RelaxedArborescence(x, 0.5, root=1, single_root=True), (4, 4), True, False),
    "RelaxedTopK": (lambda m, x: m.RelaxedTopK(x, 2, 0.5), (5,), True, False),
    "RelaxedTopK-euclidean-st": (
        lambda m, x: m.RelaxedTopK(x, 2, 0.5, relaxation="euclidean", straight_through=True),
        (5,),
        True,
        True,
    ),
    "GumbelSinkhorn": (lambda m, x: m.GumbelSinkhorn(x, 1.0, n_iters=200, tol=1e-10), (3, 3), True, False),
    "RelaxedOneHotCategorical": (lambda m, x: m.RelaxedOneHotCategorical(0.5, logits=x), (4,), True, False),
    "RelaxedOneHotCategoricalStraightThrough": (
        lambda m, x: m.RelaxedOneHotCategoricalStraightThrough(0.5, logits=x),
        (4,),
        True,
        True,
    ),
    "SpanningTree": (lambda m, x: m.SpanningTree(x), (4, 4), False, False),
    "Arborescence": (lambda m, x: m.Arborescence(x, root=2), (4, 4), False, False),
    "KSubset": (lambda m, x: m.KSubset(x, 3), (5,), False, False),
}


def _logits(event_shape, seed=1):
    return np.random.default_rng(seed).normal(size=BATCH + event_shape)


def _make(backend, name, logits=None):
    build, event_shape = CASES[name][:2]
    return build(backend.module, backend.array(_logits(event_shape) if logits is None else logits))


def _scored_value(backend, name, dist):
    """A value ``log_prob`` scores: a point of the open simplex for the Concrete density, else a structure."""
    return backend.sample(dist) if name == "RelaxedOneHotCategorical" else dist.mode


def _cases():
    return [pytest.param(BACKENDS[b], name, id=f"{b}-{name}") for b in BACKENDS for name in sorted(CASES)]


@pytest.mark.parametrize("backend,name", _cases())
def test_shapes_support_and_samples(backend, name):
    dist = _make(backend, name)
    _, event_shape, relaxed, _ = CASES[name]
    assert tuple(dist.batch_shape) == BATCH and tuple(dist.event_shape) == event_shape
    assert dist.has_rsample == relaxed
    # event_dim is the distributions' derived property; the logits' constraint covers the same trailing dims
    assert dist.event_dim == len(event_shape) == dist.arg_constraints["logits"].event_dim
    x = backend.sample(dist, (3,))
    assert tuple(x.shape) == (3,) + BATCH + event_shape == tuple(dist.shape((3,)))
    assert backend.in_support(dist, x)
    assert tuple(dist.log_prob(x).shape) == (3,) + BATCH
    if relaxed:
        hard = backend.hard_sample(dist, (3,))
        assert hard.shape == x.shape and set(np.unique(backend.numpy(hard))) <= {0.0, 1.0}
        np.testing.assert_array_equal(backend.numpy(backend.relaxed_and_hard(dist, (3,))[1]), backend.numpy(hard))


@pytest.mark.parametrize("backend,name", _cases())
def test_infer_shapes(backend, name):
    dist = _make(backend, name)
    temperature = {"temperature": (3, 1)} if CASES[name][2] else {}
    batch, event = type(dist).infer_shapes(logits=(1,) + tuple(dist.logits.shape), **temperature)
    assert tuple(batch) == ((3,) + BATCH if temperature else (1,) + BATCH)
    assert tuple(event) == tuple(dist.event_shape)


@pytest.mark.parametrize("package", [pyro_sst, numpyro_sst], ids=lambda p: p.__name__)
def test_static_options_are_collected_from_the_class_hierarchy(package):
    """Each class declares its own options; a class has those of every class it derives from, once."""
    assert all_options(package.RelaxedArborescence) == ("root", "single_root", "noise", "straight_through")
    assert all_options(package.RelaxedTopK) == ("k", "relaxation", "noise", "straight_through")
    assert all_options(package.GumbelSinkhorn) == ("n_iters", "tol", "backward", "noise", "straight_through")
    assert all_options(package.SpanningTree) == () and all_options(package.KSubset) == ("k",)
    assert tuple(package.ops.subsets.RELAXATIONS) == RELAXATIONS


@pytest.mark.parametrize("backend,name", _cases())
def test_expand_keeps_class_options_and_log_prob(backend, name):
    dist = _make(backend, name)
    wide = dist.expand((3,) + BATCH)
    assert type(wide) is type(dist) and tuple(wide.batch_shape) == (3,) + BATCH
    for option in all_options(type(dist)):
        assert getattr(wide, option) == getattr(dist, option)
    assert tuple(backend.sample(wide).shape) == (3,) + BATCH + tuple(dist.event_shape)
    value = _scored_value(backend, name, dist)
    expected = np.broadcast_to(backend.numpy(dist.log_prob(value)), (3,) + BATCH)
    np.testing.assert_allclose(backend.numpy(wide.log_prob(value)), expected, rtol=1e-6)
    other = _make(backend, name, _logits(CASES[name][1], seed=2)).expand((3,) + BATCH)
    kl = backend.numpy(backend.kl_divergence(wide, other))
    assert kl.shape == (3,) + BATCH and (kl >= -1e-6).all()
    with pytest.raises(ValueError, match="Cannot broadcast distribution of shape"):
        dist.expand((3,))


@pytest.mark.parametrize("backend,name", _cases())
def test_to_event_and_mask(backend, name):
    dist = _make(backend, name)
    value = _scored_value(backend, name, dist)
    log_prob = backend.numpy(dist.log_prob(value))
    joint = dist.to_event(1)
    assert tuple(joint.batch_shape) == () and tuple(joint.event_shape) == BATCH + tuple(dist.event_shape)
    np.testing.assert_allclose(backend.numpy(joint.log_prob(value)), log_prob.sum(), rtol=1e-6)
    mask = np.array([True, False])
    masked = dist.mask(torch.tensor(mask) if backend is Pyro else jnp.asarray(mask))
    np.testing.assert_allclose(backend.numpy(masked.log_prob(value)), np.where(mask, log_prob, 0.0), rtol=1e-6)


@pytest.mark.parametrize("backend,name", _cases())
def test_log_prob_under_jit_matches_eager_on_new_logits(backend, name):
    """Compiled (traced) at one set of logits, called at another: the same values as eager code."""
    event_shape = CASES[name][1]
    dist = _make(backend, name)
    value = _scored_value(backend, name, dist)
    log_prob = backend.jitted(lambda logits, v: _make(backend, name, logits).log_prob(v), dist.logits, value)
    other = backend.array(_logits(event_shape, seed=2))
    expected = backend.numpy(_make(backend, name, other).log_prob(value))
    np.testing.assert_allclose(backend.numpy(log_prob(other, value)), expected, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_jax_transforms_of_the_distribution(name):
    """numpyro_sst only (the transforms are JAX's): pytree round trip, jit, vmap_over, lax.map."""
    dist = _make(NumPyro, name)
    same = jax.jit(lambda d: d)(dist)
    assert type(same) is type(dist) and same.batch_shape == dist.batch_shape
    for option in all_options(type(dist)):
        assert getattr(same, option) == getattr(dist, option)
    leaves, tree = jax.tree_util.tree_flatten(dist)
    np.testing.assert_allclose(jax.tree_util.tree_unflatten(tree, leaves).log_partition, dist.log_partition, rtol=1e-6)
    value = dist.mode
    axes = vmap_over(dist, logits=0, temperature=0 if CASES[name][2] else None)
    mapped = jax.vmap(lambda d, v: d.log_prob(v), in_axes=(axes, 0))(dist, value)
    np.testing.assert_allclose(mapped, dist.log_prob(value), rtol=1e-5)
    per_element = jax.lax.map(lambda logits: _make(NumPyro, name, logits[None]).log_partition[0], dist.logits)
    np.testing.assert_allclose(per_element, dist.log_partition, rtol=1e-5)


@pytest.mark.parametrize("backend,name", _cases())
def test_gradients_of_samples_and_log_prob_match_finite_differences(backend, name):
    """float64: d/de f(logits + e v) at e = 0 by autodiff and by a central difference, where
    f = <sample with fixed noise, c> + sum(log_prob(value)). A straight-through sample is piecewise constant in
    the logits (its gradient is the relaxed one's by design): there the sample term is only checked finite."""
    build, event_shape, relaxed, straight_through = CASES[name]
    rng = np.random.default_rng(3)
    logits, direction = _logits(event_shape), rng.normal(size=BATCH + event_shape)
    weights = rng.normal(size=BATCH + event_shape)
    with jax.enable_x64(True):
        value = _scored_value(backend, name, _make(backend, name))

        def f(x, with_sample=True):
            dist = build(backend.module, x)
            total = dist.log_prob(value).sum()
            if relaxed and with_sample:
                total = total + (backend.sample(dist) * backend.array(weights)).sum()
            return total

        gradient = backend.gradient(f, logits)
        assert np.isfinite(gradient).all() and np.abs(gradient).sum() > 0
        smooth = (lambda x: f(x, with_sample=False)) if straight_through else f
        if straight_through:
            gradient = backend.gradient(smooth, logits)
        h = 1e-5
        difference = (backend.value(smooth, logits + h * direction) - backend.value(smooth, logits - h * direction)) / (
            2 * h
        )
    np.testing.assert_allclose((gradient * direction).sum(), difference, rtol=1e-5, atol=1e-6)
