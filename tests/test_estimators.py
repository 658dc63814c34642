"""Gradient estimators in both backends: unbiasedness against exact enumeration, variance and bias measured.

Unbiasedness: ``N`` independent copies of the distribution (a batch) give ``N`` independent
gradient estimates in one backward pass; each coordinate's mean must lie within 4.5 standard
errors of the exact gradient (per-coordinate two-sided level 7e-6; under 1e-3 over all the
coordinates this file tests). Seeds are fixed, so the outcome is deterministic.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as ndist
import pyro
import pyro.distributions as pdist
import pytest
import torch
from numpyro.infer import SVI

import numpyro_sst
import pyro_sst
from numpyro_sst import estimators as NE
from pyro_sst import estimators as PE

Z_LIMIT = 4.5
N = 10000


def _reward(xp, weights):
    """A non-linear reward of a structure: sin(<c, x>) + <c, x>^2 over the event dims."""
    dims = tuple(range(-weights.ndim, 0))

    def f(x):
        s = (x * weights).sum(dims) if dims else x * weights
        return xp.sin(s) + s**2

    return f


CASES = {
    # name: (logits shape, torch constructor, jax constructor, estimators)
    "categorical": (
        (5,),
        lambda w: pyro_sst.RelaxedOneHotCategorical(0.5, logits=w),
        lambda w: numpyro_sst.RelaxedOneHotCategorical(0.5, logits=w),
        ["sf", "sf_loo", "sf_constant", "rebar", "relax"],
    ),
    "top_k": (
        (6,),
        lambda w: pyro_sst.RelaxedTopK(w, 3, 0.5),
        lambda w: numpyro_sst.RelaxedTopK(w, 3, 0.5),
        ["sf", "sf_loo", "rebar", "relax"],
    ),
    "bernoulli": (
        (3,),
        lambda w: pdist.RelaxedBernoulli(torch.tensor(0.5, dtype=w.dtype), logits=w),
        lambda w: ndist.RelaxedBernoulliLogits(0.5, w),
        ["sf", "rebar", "relax"],
    ),
    "k_subset": (
        (6,),
        lambda w: pyro_sst.KSubset(w, 2),
        lambda w: numpyro_sst.KSubset(w, 2),
        ["sf", "sf_loo", "sf_learned"],
    ),
    "spanning_tree": (
        (4, 4),
        pyro_sst.SpanningTree,
        numpyro_sst.SpanningTree,
        ["sf", "sf_loo"],
    ),
    "arborescence": (
        (4, 4),
        pyro_sst.Arborescence,
        numpyro_sst.Arborescence,
        ["sf", "sf_loo"],
    ),
}


def _event_weights(shape, case):
    """The reward's weights over one event (a scalar for the Bernoulli, whose events are scalars)."""
    return np.array(1.3) if case == "bernoulli" else np.random.RandomState(1).normal(size=shape) * 0.7


def _torch_estimate(name, f, dist):
    if name == "sf":
        return PE.score_function(f, dist)
    if name == "sf_loo":
        return PE.score_function(f, dist, 4, "loo")
    if name == "sf_constant":
        return PE.score_function(f, dist, baseline=0.5)
    if name == "sf_learned":
        return PE.score_function(f, dist, 2, baseline=lambda: torch.tensor(0.7, dtype=torch.float64))
    if name == "rebar":
        return PE.rebar(f, dist, temperature=0.7, eta=0.8)
    return PE.relax(f, dist, lambda r: 0.5 * f(r) + 0.1)


def _jax_estimate(name, key, f, dist):
    if name == "sf":
        return NE.score_function(key, f, dist)
    if name == "sf_loo":
        return NE.score_function(key, f, dist, 4, "loo")
    if name == "sf_constant":
        return NE.score_function(key, f, dist, baseline=0.5)
    if name == "sf_learned":
        return NE.score_function(key, f, dist, 2, baseline=lambda: jnp.asarray(0.7))
    if name == "rebar":
        return NE.rebar(key, f, dist, temperature=0.7, eta=0.8)
    return NE.relax(key, f, dist, lambda r: 0.5 * f(r) + 0.1)


def _assert_unbiased(grads, exact):
    grads, exact = np.asarray(grads), np.asarray(exact)
    mean, std = grads.mean(0), grads.std(0)
    z = np.where(std > 0, (mean - exact) / (std / np.sqrt(len(grads)) + 1e-300), 0)
    assert np.all(np.abs(z) < Z_LIMIT), (z, mean, exact)
    # The estimator is not trivially zero where the gradient is not.
    assert np.abs(exact).max() < 1e-12 or np.abs(mean).max() > 0


def _case_params(case):
    return [(case, name) for name in CASES[case][3]]


ALL = [p for case in CASES for p in _case_params(case)]


@pytest.mark.parametrize("case,name", ALL)
def test_torch_estimators_are_unbiased(case, name):
    shape, make, _, _ = CASES[case]
    torch.manual_seed(0)
    base = torch.tensor(np.random.RandomState(2).normal(size=shape))
    f = _reward(torch, torch.tensor(_event_weights(shape, case)))
    logits = base.detach().clone().requires_grad_()
    (exact,) = torch.autograd.grad(PE.exact_expectation(f, make(logits)).sum(), logits)
    batch = base.expand((N,) + shape).clone().requires_grad_()
    (grads,) = torch.autograd.grad(_torch_estimate(name, f, make(batch)).surrogate.sum(), batch)
    _assert_unbiased(grads, exact)


@pytest.mark.parametrize("case,name", ALL)
def test_jax_estimators_are_unbiased(case, name, x64):
    shape, _, make, _ = CASES[case]
    base = jnp.asarray(np.random.RandomState(2).normal(size=shape))
    f = _reward(jnp, jnp.asarray(_event_weights(shape, case)))
    # jit: each gradient is one compiled program (eager JAX would compile and dispatch every operation apart)
    exact = jax.jit(jax.grad(lambda w: NE.exact_expectation(f, make(w)).sum()))(base)
    key = jax.random.PRNGKey(3)
    grads = jax.jit(jax.grad(lambda w: _jax_estimate(name, key, f, make(w)).surrogate.sum()))(
        jnp.broadcast_to(base, (N,) + shape)
    )
    _assert_unbiased(grads, exact)


def test_exact_expectations_agree_across_backends(x64):
    for case, (shape, make_torch, make_jax, _) in CASES.items():
        base = np.random.RandomState(5).normal(size=shape)
        weights = _event_weights(shape, case)
        a = PE.exact_expectation(_reward(torch, torch.tensor(weights)), make_torch(torch.tensor(base)))
        b = NE.exact_expectation(_reward(jnp, jnp.asarray(weights)), make_jax(jnp.asarray(base)))
        np.testing.assert_allclose(np.asarray(b), a.numpy(), rtol=1e-12, err_msg=case)


def test_gumbel_top_k_set_probabilities_match_frequencies():
    torch.manual_seed(0)
    d, k, n = 5, 2, 400000
    theta = torch.randn(d, dtype=torch.float64)
    subsets = pyro_sst.ops.enumerate_k_subsets(d, k, dtype=torch.float64)
    probs = pyro_sst.ops.gumbel_top_k_log_prob(theta, subsets, k).exp()
    np.testing.assert_allclose(probs.sum().item(), 1.0, rtol=1e-12)
    hard = pyro_sst.ops.top_k_mask(theta + pyro_sst.ops.sample_noise("gumbel", (n, d), torch.float64), k)
    freq = torch.stack([(hard == s).all(-1).double().mean() for s in subsets])
    assert torch.all((freq - probs).abs() < 4.5 * (probs * (1 - probs) / n).sqrt())
    # k = 1 is the softmax
    np.testing.assert_allclose(
        pyro_sst.ops.gumbel_top_k_log_prob(theta, torch.eye(d, dtype=torch.float64), 1),
        torch.log_softmax(theta, -1),
        rtol=1e-12,
    )


def test_conditional_utilities_reproduce_the_draw_and_keep_the_set(x64):
    rng = np.random.RandomState(0)
    theta = rng.normal(size=(7, 6))
    utilities = theta + rng.gumbel(size=(7, 6))
    z, log_order = pyro_sst.ops.conditional_gumbel_utilities(torch.tensor(theta), torch.tensor(utilities), 3)
    np.testing.assert_allclose(z, utilities, atol=1e-12)
    assert torch.all(log_order <= 0)
    zj, log_order_j = numpyro_sst.ops.conditional_gumbel_utilities(jnp.asarray(theta), jnp.asarray(utilities), 3)
    np.testing.assert_allclose(zj, z, atol=1e-12)
    np.testing.assert_allclose(log_order_j, log_order, atol=1e-12)


# ------------------------------------------------------------------------------ variance and bias
def _gradient_variance(grads):
    return grads.var(0).sum().item()


def _learned_baseline_variance(f, make, base, steps=150):
    """Train a scalar baseline on baseline_loss, then measure the gradient variance with it."""
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([b], lr=0.1)
    for _ in range(steps):
        loss = PE.score_function(f, make(base.expand((64,) + base.shape)), 4, baseline=lambda: b).baseline_loss
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
    batch = base.expand((N,) + base.shape).clone().requires_grad_()
    estimate = PE.score_function(f, make(batch), 4, baseline=lambda: b.detach())
    (grads,) = torch.autograd.grad(estimate.surrogate.sum(), batch)
    return _gradient_variance(grads)


@pytest.mark.parametrize(
    "make,shape",
    [
        (pyro_sst.SpanningTree, (5, 5)),
        (pyro_sst.Arborescence, (4, 4)),
        (lambda w: pyro_sst.KSubset(w, 3), (10,)),
        (lambda w: pyro_sst.RelaxedTopK(w, 3, 0.5), (10,)),
    ],
)
def test_baselines_reduce_variance_on_structured_problems(make, shape):
    torch.manual_seed(0)
    base = torch.tensor(np.random.RandomState(2).normal(size=shape))
    reward = _reward(torch, torch.tensor(np.random.RandomState(1).normal(size=shape) * 0.5))

    def f(x):
        return reward(x) + 2.0  # rewards with a mean away from 0, like log-likelihoods: what baselines remove

    variances = {}
    for name, baseline in (("plain", None), ("loo", "loo")):
        batch = base.expand((N,) + shape).clone().requires_grad_()
        (grads,) = torch.autograd.grad(PE.score_function(f, make(batch), 4, baseline).surrogate.sum(), batch)
        variances[name] = _gradient_variance(grads)
    variances["learned"] = _learned_baseline_variance(f, make, base)
    assert variances["loo"] < 0.8 * variances["plain"], variances
    assert variances["learned"] < 0.8 * variances["plain"], variances


def test_relax_with_a_learned_control_variate_beats_reinforce_on_the_toy_problem():
    """E[(t - b)^2], b ~ Bernoulli(sigmoid(theta)), t = 0.499 (Grathwohl et al. 2018)."""
    torch.manual_seed(0)
    t = 0.499

    def f(b):
        return (t - b) ** 2

    theta = torch.tensor(0.3, dtype=torch.float64)
    scale, shift = (torch.zeros((), dtype=torch.float64, requires_grad=True) for _ in range(2))

    def control_variate(relaxed):
        return shift + scale * f(relaxed)

    opt = torch.optim.Adam([scale, shift], lr=0.05)
    for _ in range(200):
        logits = theta.expand(64).clone().requires_grad_()
        dist = pdist.RelaxedBernoulli(torch.tensor(0.5, dtype=torch.float64), logits=logits)
        loss = PE.variance_loss(PE.relax(f, dist, control_variate).surrogate, [logits])
        opt.zero_grad()
        loss.backward()
        opt.step()

    def variance(estimate):
        logits = theta.expand(N).clone().requires_grad_()
        dist = pdist.RelaxedBernoulli(torch.tensor(0.5, dtype=torch.float64), logits=logits)
        (grads,) = torch.autograd.grad(estimate(dist).surrogate.sum(), logits)
        return grads.var().item()

    reinforce = variance(lambda d: PE.score_function(f, d))
    relaxed = variance(lambda d: PE.relax(f, d, lambda r: control_variate(r).detach()))
    assert relaxed < 0.01 * reinforce, (relaxed, reinforce)


def test_relaxed_gradient_bias_shrinks_with_the_temperature():
    torch.manual_seed(0)
    d, k = 6, 2
    base = torch.tensor(np.random.RandomState(2).normal(size=d))
    f = _reward(torch, torch.tensor(np.random.RandomState(1).normal(size=d) * 0.5))
    logits = base.clone().requires_grad_()
    (exact,) = torch.autograd.grad(PE.exact_expectation(f, pyro_sst.RelaxedTopK(logits, k, 1.0)), logits)
    bias = []
    for temperature in (2.0, 0.5, 0.1):
        batch = base.expand(50000, d).clone().requires_grad_()
        (grads,) = torch.autograd.grad(f(pyro_sst.RelaxedTopK(batch, k, temperature).rsample()).sum(), batch)
        error = (grads.mean(0) - exact).norm().item()
        standard_error = (grads.var(0).sum() / len(grads)).sqrt().item()
        bias.append((error, standard_error))
    assert bias[0][0] > bias[1][0] > bias[2][0], bias
    assert bias[0][0] > 10 * bias[0][1], bias  # the bias at t = 2 is real, not noise


# ------------------------------------------------------------------------------ errors
def test_bad_arguments_raise_value_errors_naming_them():
    dist = pyro_sst.RelaxedTopK(torch.zeros(5), 2, 0.5)
    f = _reward(torch, torch.ones(5))
    with pytest.raises(ValueError, match="baseline"):
        PE.score_function(f, dist, 2, "mean")
    with pytest.raises(ValueError, match="num_samples"):
        PE.score_function(f, dist, 1, "loo")
    with pytest.raises(ValueError, match="num_samples"):
        PE.score_function(f, dist, 0)
    with pytest.raises(ValueError, match="dist: rebar and relax does not support RelaxedSpanningTree"):
        PE.rebar(f, pyro_sst.RelaxedSpanningTree(torch.zeros(4, 4), 0.5))
    with pytest.raises(ValueError, match="noise='gaussian'"):
        PE.rebar(f, pyro_sst.RelaxedTopK(torch.zeros(5), 2, 0.5, noise="gaussian"))
    with pytest.raises(ValueError, match="exact_expectation does not support RelaxedSpanningTree"):
        PE.exact_expectation(f, pyro_sst.RelaxedSpanningTree(torch.zeros(4, 4), 0.5))
    with pytest.raises(ValueError, match=r"k must be in \[1, 7\]"):
        pyro_sst.ops.gumbel_top_k_log_prob(torch.zeros(10), torch.ones(10), 8)
    jdist = numpyro_sst.RelaxedTopK(jnp.zeros(5), 2, 0.5)
    with pytest.raises(ValueError, match="num_samples"):
        NE.score_function(jax.random.PRNGKey(0), f, jdist, 1, "loo")
    with pytest.raises(ValueError, match="num_particles"):
        NE.TraceRLOO_ELBO(num_particles=1)


# ------------------------------------------------------------------------------ SVI
def test_pyro_trace_graph_elbo_baselines_with_k_subset():
    """Pyro's own baselines (decaying average here; ``nn_baseline`` the same way) on our exact KSubset."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    truth = torch.zeros(8)
    truth[[1, 4, 6]] = 1
    data = truth + 0.5 * torch.randn(10, 8)

    def model():
        subset = pyro.sample("subset", pyro_sst.KSubset(torch.zeros(8), 3))
        with pyro.plate("copies", 10):
            pyro.sample("obs", pdist.Normal(subset, 0.5).to_event(1), obs=data)

    def guide():
        logits = pyro.param("logits", torch.zeros(8))
        pyro.sample("subset", pyro_sst.KSubset(logits, 3), infer={"baseline": {"use_decaying_avg_baseline": True}})

    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.1}), pyro.infer.TraceGraph_ELBO(num_particles=4))
    for _ in range(200):
        svi.step()
    assert torch.equal(pyro_sst.KSubset(pyro.param("logits").detach(), 3).mode, truth)


def _subset_model_and_guide(data, d, k):
    def model():
        subset = numpyro.sample("subset", numpyro_sst.KSubset(jnp.zeros(d), k))
        with numpyro.plate("copies", data.shape[0]):
            numpyro.sample("obs", ndist.Normal(subset, 0.5).to_event(1), obs=data)

    def guide():
        numpyro.sample("subset", numpyro_sst.KSubset(numpyro.param("logits", jnp.zeros(d)), k))

    return model, guide


def test_trace_rloo_elbo_gradient_is_unbiased(x64):
    d, k = 5, 2
    data = jnp.asarray(np.random.RandomState(0).normal(size=(3, d)))
    model, guide = _subset_model_and_guide(data, d, k)
    params = {"logits": jnp.asarray(np.random.RandomState(1).normal(size=d))}

    def exact_elbo(logits):
        prior, q = numpyro_sst.KSubset(jnp.zeros(d), k), numpyro_sst.KSubset(logits, k)

        def f(z):
            log_lik = ndist.Normal(z[..., None, :], 0.5).log_prob(data).sum((-2, -1))
            return prior.log_prob(z) + log_lik - q.log_prob(z)

        return NE.exact_expectation(f, q)

    exact = jax.grad(exact_elbo)(params["logits"])
    elbo = NE.TraceRLOO_ELBO(num_particles=4)
    grads = jax.vmap(lambda key: jax.grad(lambda p: -elbo.loss(key, p, model, guide))(params)["logits"])(
        jax.random.split(jax.random.PRNGKey(2), 4000)
    )
    _assert_unbiased(grads, exact)
    value = elbo.loss(jax.random.PRNGKey(0), params, model, guide)
    assert abs(float(-value) - float(exact_elbo(params["logits"]))) < 5.0  # a Monte-Carlo ELBO estimate


def test_numpyro_svi_with_trace_rloo_elbo_recovers_a_subset():
    d, k = 8, 3
    truth = jnp.zeros(d).at[jnp.array([1, 4, 6])].set(1.0)
    data = truth + 0.5 * jax.random.normal(jax.random.PRNGKey(0), (10, d))
    model, guide = _subset_model_and_guide(data, d, k)
    svi = SVI(model, guide, numpyro.optim.Adam(0.1), NE.TraceRLOO_ELBO(num_particles=4))
    result = svi.run(jax.random.PRNGKey(4), 300, progress_bar=False)
    np.testing.assert_array_equal(numpyro_sst.KSubset(result.params["logits"], k).mode, truth)


@pytest.mark.parametrize(
    "wrong",
    [
        lambda x: x.sum(),  # one number for the whole batch of draws
        lambda x: x,  # per-entry values
        lambda x: x.sum(tuple(range(1, x.ndim))),  # the batch reduced
    ],
)
def test_estimators_raise_when_f_does_not_return_one_value_per_structure(wrong):
    message = "f must return one value per structure"
    logits = torch.randn(3, 5)
    with pytest.raises(ValueError, match=message):
        PE.score_function(wrong, pyro_sst.RelaxedTopK(logits, 2, 0.5), num_samples=4)
    with pytest.raises(ValueError, match=message):
        PE.rebar(wrong, pyro_sst.RelaxedTopK(logits, 2, 0.5), num_samples=4)
    with pytest.raises(ValueError, match=message):
        PE.exact_expectation(wrong, pyro_sst.KSubset(logits, 2))
    with pytest.raises(ValueError, match="control_variate must return one value per structure"):
        PE.relax(lambda x: x.sum(-1), pyro_sst.RelaxedTopK(logits, 2, 0.5), wrong, num_samples=4)
    jax_logits = jnp.asarray(logits.numpy())
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match=message):
        NE.score_function(key, wrong, numpyro_sst.RelaxedTopK(jax_logits, 2, 0.5), num_samples=4)
    with pytest.raises(ValueError, match=message):
        NE.rebar(key, wrong, numpyro_sst.RelaxedTopK(jax_logits, 2, 0.5), num_samples=4)
    with pytest.raises(ValueError, match=message):
        NE.exact_expectation(wrong, numpyro_sst.KSubset(jax_logits, 2))


def test_unsupported_distribution_error_names_the_class_not_the_noise():
    with pytest.raises(ValueError, match=r"does not support GumbelSinkhorn$"):
        PE.exact_expectation(lambda x: x.sum((-2, -1)), pyro_sst.GumbelSinkhorn(torch.zeros(3, 3), 1.0))
    with pytest.raises(ValueError, match=r"does not support GumbelSinkhorn$"):
        NE.exact_expectation(lambda x: x.sum((-2, -1)), numpyro_sst.GumbelSinkhorn(jnp.zeros((3, 3)), 1.0))
