"""Tree distribution classes, each check written once and run on both backends: shapes, relaxed samples against
hard ones from the same noise, straight-through, derivatives against finite differences, noise moments, the
exponential families against enumeration, support, the registered KLs, argument errors, a single node. Then SVI
with Pyro (NumPyro's is in test_numpyro_distributions.py)."""

import numpy as np
import pyro
import pyro.distributions as pdist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from reference import arborescence_family, spanning_tree_family

from pyro_sst import RelaxedSpanningTree, SpanningTree, ops


def sym_logits(n, batch=(), scale=1.0, seed=0):
    """Symmetric float64 logits ``batch + (n, n)``."""
    upper = np.triu(scale * np.random.default_rng(seed).normal(size=batch + (n, n)), 1)
    return upper + np.swapaxes(upper, -1, -2)


def test_relaxed_tree_shapes_and_support(backend):
    m = backend.module
    d = m.RelaxedSpanningTree(backend.array(sym_logits(5, (3,))), backend.array([0.5, 1.0, 2.0]))
    assert tuple(d.batch_shape) == (3,) and tuple(d.event_shape) == (5, 5)
    x = backend.sample(d, (4,))
    assert x.shape == (4, 3, 5, 5)
    assert backend.in_support(d, x) and d.support.event_dim == 2 and not d.support.is_discrete
    assert d.log_prob(x).shape == (4, 3)
    assert d.log_partition.shape == (3,) and d.marginals.shape == (3, 5, 5)
    assert backend.in_support(m.SpanningTree(d.logits), backend.hard_sample(d, (2,)))


@pytest.mark.parametrize(
    "structure,options",
    [("RelaxedSpanningTree", {}), ("RelaxedArborescence", {"root": 2}), ("RelaxedArborescence", {"single_root": True})],
)
def test_relaxed_sample_converges_to_hard_sample_from_same_noise(backend, structure, options):
    cls = getattr(backend.module, structure)
    logits = backend.array(sym_logits(6, (8,), scale=2.0, seed=1))
    utilities = backend.utilities(cls(logits, 1.0, **options))
    hard = backend.numpy(cls(logits, 1.0, **options).solve(utilities))
    errors = [np.abs(backend.numpy(cls(logits, t, **options).relax(utilities)) - hard).max() for t in (1.0, 0.1, 1e-4)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-6
    _, hard_too = backend.relaxed_and_hard(cls(logits, 1e-4, **options))
    np.testing.assert_array_equal(backend.numpy(hard_too), hard)


def test_straight_through_is_hard_forward_relaxed_backward(backend):
    m = backend.module
    logits = sym_logits(5, seed=2)
    straight_through = m.RelaxedSpanningTree(backend.array(logits), 0.5, straight_through=True)
    x = backend.sample(straight_through)
    assert np.isin(backend.numpy(x), (0, 1)).all() and backend.in_support(m.SpanningTree(backend.array(logits)), x)

    def loss(straight_through):
        def value(th, w):
            return (backend.sample(m.RelaxedSpanningTree(th, 0.5, straight_through=straight_through)) * w).sum()

        return value

    w = np.random.default_rng(3).normal(size=(5, 5))
    np.testing.assert_allclose(backend.gradient(loss(True), logits, w), backend.gradient(loss(False), logits, w))
    # straight-through values are hard, so log_prob scores them exactly
    ref = spanning_tree_family(logits)
    expected = np.log(ref.probs[ref.index_of(backend.numpy(x)[None])[0]])
    assert float(straight_through.log_prob(x)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("noise", ["gumbel", "gaussian", "negative_exponential"])
def test_relaxed_samples_match_finite_differences(backend, noise):
    """Relaxed trees and arborescences for fixed noise, in the logits and in the temperature."""
    m = backend.module
    logits = sym_logits(4, seed=3)
    noise_draw = backend.numpy(backend.utilities(m.RelaxedSpanningTree(backend.array(logits), 1.0, noise=noise)))
    noise_draw = noise_draw - logits

    def tree(th, t=0.7):
        return m.RelaxedSpanningTree(th, t, noise=noise).relax(m.ops.symmetrize_upper(th + backend.array(noise_draw)))

    backend.check_derivatives(tree, logits)
    backend.check_derivatives(lambda t: tree(backend.array(logits), t), 0.7)
    arborescence_logits = np.random.default_rng(4).normal(size=(4, 4))
    backend.check_derivatives(
        lambda th: m.RelaxedArborescence(th, 0.5, root=1).relax(th + backend.array(noise_draw)), arborescence_logits
    )


def test_noise_distributions_have_the_right_moments(backend):
    logits = backend.array(np.zeros((200, 30, 30)))
    for noise, mean, var in [
        ("gumbel", np.euler_gamma, np.pi**2 / 6),
        ("gaussian", 0, 1),
        ("negative_exponential", -1, 1),
    ]:
        u = backend.numpy(backend.utilities(backend.module.RelaxedArborescence(logits, 1.0, noise=noise)))
        free = u[:, 1:, :][u[:, 1:, :] != 0]  # the root column and the diagonal are zeroed
        assert free.mean() == pytest.approx(mean, abs=0.02)
        assert free.var() == pytest.approx(var, rel=0.03)


@pytest.mark.parametrize(
    "structure,options", [("SpanningTree", {}), ("Arborescence", {"root": 1}), ("Arborescence", {"single_root": True})]
)
def test_exp_family_matches_enumeration(backend, structure, options):
    undirected = structure == "SpanningTree"
    logits = sym_logits(5, seed=4) if undirected else np.random.default_rng(4).normal(size=(5, 5))
    d = getattr(backend.module, structure)(backend.array(logits), **options)
    if undirected:
        ref = spanning_tree_family(logits)
    else:
        ref = arborescence_family(logits, options.get("root", 0), options.get("single_root", False))
    support = d.enumerate_support()
    assert support.shape == (len(ref.support), 5, 5)
    log_probs = backend.numpy(d.log_prob(support))
    np.testing.assert_allclose(np.exp(log_probs).sum(), 1.0, rtol=1e-10)
    np.testing.assert_allclose(np.sort(log_probs), np.sort(np.log(ref.probs)), atol=1e-10)
    assert float(d.entropy()) == pytest.approx(ref.entropy, abs=1e-10)
    np.testing.assert_allclose(backend.numpy(d.mean), ref.marginals, atol=1e-10)
    score = backend.numpy(d.mode) * logits  # each edge of a spanning tree is in the matrix twice
    assert (np.triu(score, 1) if undirected else score).sum() == pytest.approx(ref.max_score, abs=1e-10)
    assert backend.in_support(d, support) and d.support.is_discrete


def test_exp_family_batched_sampling_and_enumerate_shape(backend):
    d = backend.module.SpanningTree(backend.array(sym_logits(4, (2, 3))))
    assert backend.sample(d, (5,)).shape == (5, 2, 3, 4, 4)
    assert d.enumerate_support().shape == (16, 2, 3, 4, 4)
    assert d.enumerate_support(expand=False).shape == (16, 1, 1, 4, 4)
    # log_prob broadcasts over enumeration and particle dims
    assert d.log_prob(d.enumerate_support(expand=False)).shape == (16, 2, 3)


def test_support_rejects_non_trees(backend):
    m = backend.module
    cycle = np.zeros((4, 4))
    for i, j in [(0, 1), (1, 2), (2, 0)]:
        cycle[i, j] = cycle[j, i] = 1
    assert not backend.in_support(m.SpanningTree(backend.array(np.zeros((4, 4)))), backend.array(cycle))
    two_cycle = np.zeros((3, 3))
    two_cycle[1, 2] = two_cycle[2, 1] = 1  # away from the root
    assert not backend.in_support(m.Arborescence(backend.array(np.zeros((3, 3)))), backend.array(two_cycle))


def test_registered_kls(backend):
    """The relaxed classes' utility KL counts each edge of a spanning tree once; the exact classes' KL is the sum
    over the enumerated support; both refuse distributions with other options."""
    m, kl = backend.module, backend.kl_divergence
    logits = sym_logits(5, seed=5)
    q = m.RelaxedSpanningTree(backend.array(logits), 0.5)
    p = m.RelaxedSpanningTree(backend.array(np.zeros((5, 5))), 0.5)
    diff = np.triu(logits, 1)
    assert float(kl(q, p)) == pytest.approx(np.triu(diff - 1 + np.exp(-diff), 1).sum(), rel=1e-12)
    assert tuple(kl(q.expand((3,)), p.expand((3,))).shape) == (3,)
    with pytest.raises(ValueError, match="temperature"):
        kl(q, m.RelaxedSpanningTree(q.logits, 0.4))
    rng = np.random.default_rng(6)
    a, b = (m.Arborescence(backend.array(rng.normal(size=(4, 4))), root=1) for _ in range(2))
    support = a.enumerate_support()
    log_a, log_b = backend.numpy(a.log_prob(support)), backend.numpy(b.log_prob(support))
    assert float(kl(a, b)) == pytest.approx((np.exp(log_a) * (log_a - log_b)).sum(), rel=1e-10)
    with pytest.raises(ValueError, match="root"):
        kl(a, m.Arborescence(b.logits, root=2))


def test_utility_kl_with_absent_arcs(backend):
    """Arcs absent (-inf) from both distributions add nothing to the KL and get a zero gradient, not NaN; where
    only one of the two has an arc the KL is infinite."""
    m = backend.module
    absent = np.array([[0, 1, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)
    mask = np.where(absent, -np.inf, 0.0)
    theta = np.random.default_rng(0).normal(size=(4, 4))

    def kl(theta, mask):
        q = m.RelaxedArborescence(theta + mask, 0.5, validate_args=False)
        value = backend.kl_divergence(q, m.RelaxedArborescence(mask, 0.5, validate_args=False))
        return value, value

    grad, value = backend.gradient(kl, theta, mask, has_aux=True)
    free = ~absent & ~np.eye(4, dtype=bool)
    free[:, 0] = False  # nothing enters the root
    diff = theta[free]
    assert float(value) == pytest.approx((diff - 1 + np.exp(-diff)).sum(), rel=1e-12)
    assert np.isfinite(grad).all() and (grad[absent] == 0).all()
    present = m.RelaxedArborescence(backend.array(np.zeros((4, 4))), 0.5)
    with_absent = m.RelaxedArborescence(backend.array(theta + mask), 0.5, validate_args=False)
    assert float(backend.kl_divergence(with_absent, present)) == np.inf
    assert float(backend.kl_divergence(present, with_absent)) == np.inf


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda m, a: m.RelaxedSpanningTree(a(np.zeros((4, 4))), 0.0), "temperature"),
        (lambda m, a: m.RelaxedSpanningTree(a(np.zeros((4, 4))), -1.0), "temperature"),
        (lambda m, a: m.RelaxedSpanningTree(a(np.full((4, 4), np.nan)), 1.0, validate_args=True), "logits"),
        (lambda m, a: m.SpanningTree(a(np.full((4, 4), np.inf)), validate_args=True), "logits"),
        (lambda m, a: m.RelaxedSpanningTree(a(np.zeros((4, 3))), 1.0), "logits"),
        (lambda m, a: m.RelaxedSpanningTree(a(np.zeros(4)), 1.0), "logits"),
        (lambda m, a: m.RelaxedArborescence(a(np.zeros((4, 4))), 1.0, root=4), "root"),
        (lambda m, a: m.Arborescence(a(np.zeros((4, 4))), root=-1), "root"),
        (lambda m, a: m.RelaxedSpanningTree(a(np.zeros((4, 4))), 1.0, noise="cauchy"), "noise"),
    ],
)
def test_bad_arguments_raise_value_error(backend, make, match):
    with pytest.raises(ValueError, match=match):
        make(backend.module, backend.array)


def test_trivial_single_node(backend):
    m, zeros = backend.module, backend.array(np.zeros((1, 1)))
    d = m.RelaxedSpanningTree(zeros, 1.0)
    assert backend.sample(d).shape == (1, 1) and float(d.log_partition) == 0.0
    assert backend.numpy(backend.sample(m.SpanningTree(zeros))).sum() == 0


@pytest.mark.parametrize(
    "make,event_shape",
    [
        (lambda m, x: m.RelaxedSpanningTree(x, 0.5), (4, 4)),
        (lambda m, x: m.RelaxedArborescence(x, 0.5, single_root=True), (4, 4)),
        (lambda m, x: m.SpanningTree(x), (4, 4)),
        (lambda m, x: m.Arborescence(x, root=1), (4, 4)),
        (lambda m, x: m.GumbelSinkhorn(x, 1.0), (4, 4)),
        (lambda m, x: m.RelaxedTopK(x, 2, 0.5), (5,)),
        (lambda m, x: m.KSubset(x, 2), (5,)),
        (lambda m, x: m.RelaxedOneHotCategorical(0.5, logits=x), (5,)),
        (lambda m, x: m.RelaxedOneHotCategoricalStraightThrough(0.5, logits=x), (5,)),
    ],
)
def test_log_prob_of_a_value_of_the_wrong_event_shape_names_value(backend, make, event_shape):
    dist = make(backend.module, backend.array(np.random.default_rng(7).normal(size=(2,) + event_shape)))
    with pytest.raises(ValueError, match=r"value must have shape \(\.\.\., "):
        dist.log_prob(backend.array(np.zeros((2,) + tuple(size - 1 for size in event_shape))))


# ----------------------------------------------------------------------------- SVI with Pyro


def _true_tree(n):
    x = torch.zeros(n, n)
    for j in range(1, n):
        x[(j - 1) // 2, j] = x[j, (j - 1) // 2] = 1  # a binary tree
    return x


def _tree_model(dist_factory, data):
    def model():
        tree = pyro.sample("tree", dist_factory(torch.zeros(data.shape[-1], data.shape[-1])))
        with pyro.plate("obs", data.shape[0]):
            pyro.sample("y", pdist.Normal(tree, 0.5).to_event(2), obs=data)

    return model


def _tree_guide(dist_factory, n):
    def guide():
        logits = pyro.param("q_logits", torch.zeros(n, n))
        pyro.sample("tree", dist_factory(ops.symmetrize_upper(logits)))

    return guide


@pytest.mark.parametrize("elbo", [Trace_ELBO, TraceMeanField_ELBO])
def test_svi_relaxed_spanning_tree_recovers_tree(elbo):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    n = 6
    truth = _true_tree(n)
    data = truth + 0.5 * torch.randn(20, n, n)
    factory = lambda logits: RelaxedSpanningTree(logits, 0.5)  # noqa: E731
    svi = SVI(_tree_model(factory, data), _tree_guide(factory, n), pyro.optim.Adam({"lr": 0.1}), elbo())
    for _ in range(300):
        svi.step()
    q = RelaxedSpanningTree(ops.symmetrize_upper(pyro.param("q_logits").detach()), 0.5)
    assert torch.equal(q.mode, truth)


def test_svi_exact_spanning_tree_with_score_function():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    n = 5
    truth = _true_tree(n)
    data = truth + 0.5 * torch.randn(10, n, n)
    elbo = TraceGraph_ELBO(num_particles=16, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(_tree_model(SpanningTree, data), _tree_guide(SpanningTree, n), pyro.optim.Adam({"lr": 0.1}), elbo)
    for _ in range(400):
        svi.step()
    q = SpanningTree(ops.symmetrize_upper(pyro.param("q_logits").detach()))
    assert torch.equal(q.mode, truth)
