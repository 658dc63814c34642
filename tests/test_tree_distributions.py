"""Tree distribution classes: shapes, sampling, log_prob, KL, validation, SVI."""

import math

import numpy as np
import pyro
import pyro.distributions as pdist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from reference import arborescence_family, spanning_tree_family
from torch.distributions import kl_divergence

import pyro_sst
from pyro_sst import Arborescence, RelaxedArborescence, RelaxedSpanningTree, SpanningTree, ops


def sym_logits(n, batch=(), scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ops.symmetrize_upper(scale * torch.randn(batch + (n, n), generator=g, dtype=torch.float64))


def test_relaxed_tree_shapes_and_support():
    d = RelaxedSpanningTree(sym_logits(5, (3,)), torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64))
    assert d.batch_shape == (3,) and d.event_shape == (5, 5)
    x = d.rsample((4,))
    assert x.shape == (4, 3, 5, 5)
    assert d.support.check(x).all() and d.support.event_dim == 2 and not d.support.is_discrete
    assert d.log_prob(x).shape == (4, 3)
    assert d.log_partition.shape == (3,) and d.marginals.shape == (3, 5, 5)
    hard = d.hard_sample((2,))
    assert SpanningTree(d.logits).support.check(hard).all()


def test_relaxed_sample_converges_to_hard_sample_from_same_noise():
    logits = sym_logits(6, (8,), scale=2.0, seed=1)
    for cls, kwargs in [
        (RelaxedSpanningTree, {}),
        (RelaxedArborescence, {"root": 2}),
        (RelaxedArborescence, {"single_root": True}),
    ]:
        d = cls(logits, 1.0, **kwargs)
        torch.manual_seed(0)
        utilities = d.sample_utilities()
        hard = d.solve(utilities)
        errors = [(cls(logits, t, **kwargs).relax(utilities) - hard).abs().max().item() for t in (1.0, 0.1, 1e-3)]
        assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-6
        torch.manual_seed(0)
        soft, hard2 = cls(logits, 1e-3, **kwargs).relaxed_and_hard()
        assert torch.equal(hard, hard2)


def test_straight_through_is_hard_forward_relaxed_backward():
    logits = sym_logits(5, seed=2).requires_grad_()
    d = RelaxedSpanningTree(logits, 0.5, straight_through=True)
    torch.manual_seed(0)
    x = d.rsample()
    assert ((x == 0) | (x == 1)).all() and SpanningTree(logits).support.check(x.detach())
    torch.manual_seed(0)
    soft = RelaxedSpanningTree(logits, 0.5).rsample()
    w = torch.randn(5, 5, dtype=torch.float64)
    (g_st,) = torch.autograd.grad((x * w).sum(), logits)
    (g_soft,) = torch.autograd.grad((soft * w).sum(), logits)
    torch.testing.assert_close(g_st, g_soft)
    # Straight-through values are hard, so log_prob scores them exactly.
    ref = spanning_tree_family(logits.detach().numpy())
    assert d.log_prob(x).item() == pytest.approx(np.log(ref.probs[ref.index_of(x.detach()[None].numpy())[0]]))


@pytest.mark.parametrize("noise", ["gumbel", "gaussian", "negative_exponential"])
def test_rsample_gradcheck(noise):
    logits = sym_logits(4, seed=3).requires_grad_()
    temperature = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(0)
    noise_draw = (RelaxedSpanningTree(logits, 1.0, noise=noise).sample_utilities() - logits).detach()

    def relaxed(th, t):
        return RelaxedSpanningTree(th, t, noise=noise).relax(ops.symmetrize_upper(th + noise_draw))

    torch.autograd.gradcheck(relaxed, (logits, temperature))
    arb_logits = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda th: RelaxedArborescence(th, 0.5, root=1).relax(th + noise_draw), (arb_logits,))


def test_noise_distributions_have_the_right_moments():
    torch.manual_seed(0)
    logits = torch.zeros(200, 30, 30, dtype=torch.float64)
    for noise, mean, var in [
        ("gumbel", np.euler_gamma, np.pi**2 / 6),
        ("gaussian", 0, 1),
        ("negative_exponential", -1, 1),
    ]:
        u = RelaxedArborescence(logits, 1.0, noise=noise).sample_utilities()
        free = u[:, 1:, :][u[:, 1:, :] != 0]  # root column and diagonal are zeroed
        assert free.mean().item() == pytest.approx(mean, abs=0.02)
        assert free.var().item() == pytest.approx(var, rel=0.03)


@pytest.mark.parametrize(
    "cls,kwargs", [(SpanningTree, {}), (Arborescence, {"root": 1}), (Arborescence, {"single_root": True})]
)
def test_exp_family_matches_enumeration(cls, kwargs):
    logits = sym_logits(5, seed=4) if cls is SpanningTree else torch.randn(5, 5, dtype=torch.float64)
    d = cls(logits, **kwargs)
    ref = (
        spanning_tree_family(logits.numpy())
        if cls is SpanningTree
        else arborescence_family(logits.numpy(), kwargs.get("root", 0), kwargs.get("single_root", False))
    )
    support = d.enumerate_support()
    assert support.shape == (len(ref.support), 5, 5)
    np.testing.assert_allclose(d.log_prob(support).exp().sum().item(), 1.0, rtol=1e-10)
    np.testing.assert_allclose(np.sort(d.log_prob(support).numpy()), np.sort(np.log(ref.probs)), atol=1e-10)
    assert d.entropy().item() == pytest.approx(ref.entropy, abs=1e-10)
    np.testing.assert_allclose(d.mean.numpy(), ref.marginals, atol=1e-10)
    assert (d.mode * logits * d._free_mask).sum().item() == pytest.approx(ref.max_score, abs=1e-10)
    assert d.support.check(support).all() and d.support.is_discrete


def test_exp_family_batched_sampling_and_enumerate_shape():
    d = SpanningTree(sym_logits(4, (2, 3)))
    assert d.sample((5,)).shape == (5, 2, 3, 4, 4)
    assert d.enumerate_support().shape == (16, 2, 3, 4, 4)
    assert d.enumerate_support(expand=False).shape == (16, 1, 1, 4, 4)
    # log_prob broadcasts over enumeration and particle dims.
    assert d.log_prob(d.enumerate_support(expand=False)).shape == (16, 2, 3)


def test_support_rejects_non_trees():
    cycle = torch.zeros(4, 4)
    for i, j in [(0, 1), (1, 2), (2, 0)]:
        cycle[i, j] = cycle[j, i] = 1
    assert not SpanningTree(torch.zeros(4, 4)).support.check(cycle)
    bad_arb = torch.zeros(3, 3)
    bad_arb[1, 2] = bad_arb[2, 1] = 1  # a 2-cycle away from the root
    assert not Arborescence(torch.zeros(3, 3)).support.check(bad_arb)


def test_expand_keeps_class_and_kl_registered():
    q = RelaxedSpanningTree(sym_logits(5, seed=5), 0.5)
    p = RelaxedSpanningTree(torch.zeros(5, 5, dtype=torch.float64), 0.5)
    qe = q.expand((3,))
    assert type(qe) is RelaxedSpanningTree and qe.batch_shape == (3,) and qe.temperature.shape == (3,)
    diff = q.logits.triu(1)
    expected = (diff - 1 + torch.exp(-diff)).triu(1).sum()
    torch.testing.assert_close(kl_divergence(q, p), expected)  # each edge counted once
    assert kl_divergence(qe, p.expand((3,))).shape == (3,)
    with pytest.raises(ValueError, match="temperature"):
        kl_divergence(q, RelaxedSpanningTree(q.logits, 0.4))
    a = Arborescence(torch.randn(4, 4, dtype=torch.float64), root=1)
    b = Arborescence(torch.randn(4, 4, dtype=torch.float64), root=1)
    support = a.enumerate_support()
    exact = (a.log_prob(support).exp() * (a.log_prob(support) - b.log_prob(support))).sum()
    torch.testing.assert_close(kl_divergence(a, b), exact)
    with pytest.raises(ValueError, match="root"):
        kl_divergence(a, Arborescence(b.logits, root=2))


def test_utility_kl_with_absent_arcs():
    """Arcs absent (-inf) from both distributions add nothing to the KL and get no NaN gradient."""
    absent = torch.tensor([[0, 1, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    theta = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    q = RelaxedArborescence(theta.masked_fill(absent, -math.inf), 0.5, validate_args=False)
    zeros = torch.zeros(4, 4, dtype=torch.float64)
    p = RelaxedArborescence(zeros.masked_fill(absent, -math.inf), 0.5, validate_args=False)
    free = ~absent & ~torch.eye(4, dtype=torch.bool)
    free[:, 0] = False  # nothing enters the root
    diff = theta.detach()[free]
    kl = kl_divergence(q, p)
    torch.testing.assert_close(kl, (diff - 1 + torch.exp(-diff)).sum())
    kl.backward()
    assert torch.isfinite(theta.grad).all() and (theta.grad[absent] == 0).all()
    present = RelaxedArborescence(torch.zeros(4, 4, dtype=torch.float64), 0.5)
    assert kl_divergence(q, present) == math.inf and kl_divergence(present, p) == math.inf


def test_infer_shapes():
    batch, event = RelaxedArborescence.infer_shapes(logits=(2, 1, 5, 5), temperature=(3,))
    assert batch == (2, 3) and event == (5, 5)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: RelaxedSpanningTree(torch.zeros(4, 4), 0.0), "temperature"),
        (lambda: RelaxedSpanningTree(torch.zeros(4, 4), -1.0), "temperature"),
        (lambda: RelaxedSpanningTree(torch.full((4, 4), float("nan")), 1.0), "logits"),
        (lambda: SpanningTree(torch.full((4, 4), float("inf"))), "logits"),
        (lambda: RelaxedSpanningTree(torch.zeros(4, 3), 1.0), "logits"),
        (lambda: RelaxedSpanningTree(torch.zeros(4), 1.0), "logits"),
        (lambda: RelaxedArborescence(torch.zeros(4, 4), 1.0, root=4), "root"),
        (lambda: Arborescence(torch.zeros(4, 4), root=-1), "root"),
        (lambda: RelaxedSpanningTree(torch.zeros(4, 4), 1.0, noise="cauchy"), "noise"),
    ],
)
def test_bad_arguments_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_trivial_single_node():
    d = RelaxedSpanningTree(torch.zeros(1, 1), 1.0)
    assert d.rsample().shape == (1, 1) and d.log_partition.item() == 0.0
    assert SpanningTree(torch.zeros(1, 1)).sample().sum() == 0


# ----------------------------------------------------------------------------- SVI


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


@pytest.mark.parametrize(
    "make,event_shape",
    [
        (lambda x: RelaxedSpanningTree(x, 0.5), (4, 4)),
        (lambda x: RelaxedArborescence(x, 0.5, single_root=True), (4, 4)),
        (lambda x: SpanningTree(x), (4, 4)),
        (lambda x: Arborescence(x, root=1), (4, 4)),
        (lambda x: pyro_sst.GumbelSinkhorn(x, 1.0), (4, 4)),
        (lambda x: pyro_sst.RelaxedTopK(x, 2, 0.5), (5,)),
        (lambda x: pyro_sst.KSubset(x, 2), (5,)),
        (lambda x: pyro_sst.RelaxedOneHotCategorical(0.5, logits=x), (5,)),
        (lambda x: pyro_sst.RelaxedOneHotCategoricalStraightThrough(0.5, logits=x), (5,)),
    ],
)
def test_log_prob_of_a_value_of_the_wrong_event_shape_names_value(make, event_shape):
    dist = make(torch.randn((2,) + event_shape))
    with pytest.raises(ValueError, match=r"value must have shape \(\.\.\., "):
        dist.log_prob(torch.zeros((2,) + tuple(size - 1 for size in event_shape)))
