"""numpyro_sst distributions: NumPyro conformance (construction under jit with validation, SVI, Predictive), the
k-subset KL, Gumbel-softmax against Pyro, and SVI that recovers a known structure. The generic distribution
checks of both backends are in test_generic_checks.py, the tree classes' in test_tree_distributions.py."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as ndist
import pyro.distributions as pdist
import pytest
import torch
from numpyro.distributions.kl import kl_divergence
from numpyro.infer import SVI, Predictive, Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from reference import ExpFamily, k_subsets

import numpyro_sst
from numpyro_sst import (
    Arborescence,
    GumbelSinkhorn,
    KSubset,
    RelaxedArborescence,
    RelaxedOneHotCategorical,
    RelaxedOneHotCategoricalStraightThrough,
    RelaxedSpanningTree,
    RelaxedTopK,
    SpanningTree,
)

pytestmark = pytest.mark.filterwarnings("error")
KEY = jax.random.PRNGKey(0)
BATCH = (2,)


def _logits(event_shape):
    return jax.random.normal(jax.random.PRNGKey(1), BATCH + event_shape)


#: (constructor from logits, event shape, relaxed?)
CASES = {
    "RelaxedSpanningTree": (lambda x: RelaxedSpanningTree(x, 0.5), (4, 4), True),
    "RelaxedArborescence": (lambda x: RelaxedArborescence(x, 0.5, root=1, single_root=True), (4, 4), True),
    "RelaxedTopK": (lambda x: RelaxedTopK(x, 2, 0.5), (5,), True),
    "RelaxedTopK-euclidean-st": (
        lambda x: RelaxedTopK(x, 2, 0.5, relaxation="euclidean", straight_through=True),
        (5,),
        True,
    ),
    "GumbelSinkhorn": (lambda x: GumbelSinkhorn(x, 1.0), (3, 3), True),
    "RelaxedOneHotCategorical": (lambda x: RelaxedOneHotCategorical(0.5, logits=x), (4,), True),
    "SpanningTree": (lambda x: SpanningTree(x), (4, 4), False),
    "Arborescence": (lambda x: Arborescence(x, root=2), (4, 4), False),
    "KSubset": (lambda x: KSubset(x, 3), (5,), False),
}


def _make(name, logits=None):
    build, event_shape, _ = CASES[name]
    return build(_logits(event_shape) if logits is None else logits)


def test_exp_family_against_enumeration_and_kl():
    logits = np.random.RandomState(0).normal(size=(6,)).astype(np.float32)
    dist = KSubset(jnp.asarray(logits), 3)
    ref = ExpFamily(k_subsets(6, 3), logits)
    np.testing.assert_allclose(dist.entropy(), ref.entropy, rtol=1e-5)
    support = dist.enumerate_support()
    np.testing.assert_allclose(jnp.exp(dist.log_prob(support)), ref.probs, atol=1e-6)
    other = KSubset(jnp.asarray(logits[::-1].copy()), 3)
    ref_other = ExpFamily(k_subsets(6, 3), logits[::-1])
    np.testing.assert_allclose(
        kl_divergence(dist, other), (ref.probs * (np.log(ref.probs) - np.log(ref_other.probs))).sum(), rtol=1e-4
    )


def test_validation_errors_name_the_argument():
    with pytest.raises(ValueError, match="k must be an int"):
        RelaxedTopK(jnp.zeros(4), 5, 0.5)
    with pytest.raises(ValueError, match="logits must be finite"):
        KSubset(jnp.full(4, jnp.nan), 2, validate_args=True)
    SpanningTree(jnp.where(jnp.eye(3, dtype=bool), -jnp.inf, 0.0), validate_args=True)  # the diagonal is not read
    with pytest.raises(ValueError, match="noise"):
        RelaxedTopK(jnp.zeros(4), 2, 0.5, noise="cauchy")
    with pytest.raises(ValueError, match="relaxation"):
        RelaxedTopK(jnp.zeros(4), 2, 0.5, relaxation="sparsemax")
    dist = KSubset(jnp.zeros(4), 2, validate_args=True)
    with pytest.warns(UserWarning, match="Out-of-support"):
        assert dist.log_prob(jnp.array([1.0, 1.0, 1.0, 0.0])) == -jnp.inf


# ------------------------------------------------------------------------------------- Gumbel-softmax
def test_relaxed_top_k_with_k1_is_gumbel_softmax_and_sparsemax():
    logits = jax.random.normal(KEY, (3, 5))
    utilities = logits + jax.random.gumbel(jax.random.PRNGKey(2), (3, 5))
    softmax = jax.nn.softmax(utilities / 0.4, -1)
    np.testing.assert_allclose(RelaxedTopK(logits, 1, 0.4).relax(utilities), softmax, atol=1e-6)
    np.testing.assert_allclose(RelaxedOneHotCategorical(0.4, logits=logits).relax(utilities), softmax, atol=1e-6)
    # sparsemax (Martins and Astudillo, 2016): max(z - tau, 0) with tau from the sorted scores
    z = np.asarray(utilities / 0.4)
    zs = -np.sort(-z, -1)
    support = 1 + np.arange(1, 6) * zs > np.cumsum(zs, -1)
    size = support.sum(-1, keepdims=True)
    tau = (np.take_along_axis(np.cumsum(zs, -1), size - 1, -1) - 1) / size
    np.testing.assert_allclose(
        RelaxedTopK(logits, 1, 0.4, relaxation="euclidean").relax(utilities), np.maximum(z - tau, 0), atol=1e-5
    )


def test_concrete_density_equals_pyro():
    logits = np.random.RandomState(0).normal(size=(2, 4)).astype(np.float32)
    pyro_dist = pdist.RelaxedOneHotCategorical(torch.tensor(0.6), logits=torch.tensor(logits))
    torch.manual_seed(0)
    value = pyro_dist.sample((5,)).clamp(min=1e-6)  # log y of a float32 y that underflowed to 0 is -inf
    value = value / value.sum(-1, keepdim=True)
    ours = RelaxedOneHotCategorical(0.6, logits=jnp.asarray(logits))
    np.testing.assert_allclose(ours.log_prob(jnp.asarray(value.numpy())), pyro_dist.log_prob(value).numpy(), rtol=1e-5)
    from_probs = RelaxedOneHotCategorical(0.6, probs=jax.nn.softmax(jnp.asarray(logits)))
    np.testing.assert_allclose(
        from_probs.log_prob(jnp.asarray(value.numpy())), pyro_dist.log_prob(value).numpy(), rtol=1e-5
    )


def test_straight_through_categorical_is_hard_with_soft_gradient_and_exact_log_prob():
    logits = jax.random.normal(KEY, (4,))
    dist = RelaxedOneHotCategoricalStraightThrough(0.5, logits=logits)
    x = dist.sample(KEY)
    assert float(x.sum()) == 1.0 and bool(jnp.isin(x, jnp.array([0.0, 1.0])).all())
    np.testing.assert_allclose(dist.log_prob(x), jax.nn.log_softmax(logits)[jnp.argmax(x)], rtol=1e-6)
    grad = jax.grad(
        lambda x: (RelaxedOneHotCategoricalStraightThrough(0.5, logits=x).sample(KEY) * jnp.arange(4.0)).sum()
    )(logits)
    assert float(jnp.abs(grad).sum()) > 0
    frequencies = RelaxedOneHotCategorical(0.5, logits=logits).hard_sample(KEY, (20000,)).mean(0)
    np.testing.assert_allclose(frequencies, jax.nn.softmax(logits), atol=0.015)


# ------------------------------------------------------------------------------------- SVI
def _true_tree(n):
    x = np.zeros((n, n))
    for v in range(1, n):
        x[(v - 1) // 2, v] = x[v, (v - 1) // 2] = 1  # a binary tree
    return jnp.asarray(x)


@pytest.mark.parametrize("elbo", [Trace_ELBO(), TraceMeanField_ELBO()])
def test_svi_recovers_a_tree_with_relaxed_spanning_tree(elbo):
    """Observed noisy copies of a tree's adjacency; the guide's hard mode recovers the tree."""
    n = 6
    truth = _true_tree(n)
    data = truth + 0.3 * jax.random.normal(KEY, (20, n, n))

    def model(data):
        tree = numpyro.sample("tree", RelaxedSpanningTree(jnp.zeros((n, n)), 0.5))
        with numpyro.plate("copies", data.shape[0]):
            numpyro.sample("obs", ndist.Normal(tree, 0.3).to_event(2), obs=data)

    def guide(data):
        logits = numpyro.param("logits", jnp.zeros((n, n)))
        numpyro.sample("tree", RelaxedSpanningTree(logits, 0.5))

    svi = SVI(model, guide, numpyro.optim.Adam(0.1), elbo)
    result = svi.run(jax.random.PRNGKey(3), 300, data, progress_bar=False)
    mode = RelaxedSpanningTree(result.params["logits"], 0.5).mode
    np.testing.assert_array_equal(mode, truth)


def test_svi_recovers_a_subset_with_trace_graph_elbo():
    """Score-function gradients through the exact KSubset (TraceGraph_ELBO): the guide's mode is the true subset."""
    d, k = 8, 3
    truth = jnp.zeros(d).at[jnp.array([1, 4, 6])].set(1.0)
    data = truth + 0.3 * jax.random.normal(KEY, (30, d))

    def model(data):
        subset = numpyro.sample("subset", KSubset(jnp.zeros(d), k))
        with numpyro.plate("copies", data.shape[0]):
            numpyro.sample("obs", ndist.Normal(subset, 0.3).to_event(1), obs=data)

    def guide(data):
        logits = numpyro.param("logits", jnp.zeros(d))
        numpyro.sample("subset", KSubset(logits, k))

    svi = SVI(model, guide, numpyro.optim.Adam(0.1), TraceGraph_ELBO())
    result = svi.run(jax.random.PRNGKey(4), 400, data, progress_bar=False)
    np.testing.assert_array_equal(KSubset(result.params["logits"], k).mode, truth)


def test_svi_arborescence_with_trace_mean_field_and_registered_kl():
    n = 5
    truth = np.zeros((n, n))
    for v in range(1, n):
        truth[v - 1, v] = 1  # a chain rooted at 0
    truth = jnp.asarray(truth)
    data = truth + 0.3 * jax.random.normal(KEY, (20, n, n))

    def model(data):
        tree = numpyro.sample("tree", RelaxedArborescence(jnp.zeros((n, n)), 0.5))
        with numpyro.plate("copies", data.shape[0]):
            numpyro.sample("obs", ndist.Normal(tree, 0.3).to_event(2), obs=data)

    def guide(data):
        logits = numpyro.param("logits", jnp.zeros((n, n)))
        numpyro.sample("tree", RelaxedArborescence(logits, 0.5))

    svi = SVI(model, guide, numpyro.optim.Adam(0.1), TraceMeanField_ELBO())
    result = svi.run(jax.random.PRNGKey(5), 300, data, progress_bar=False)
    np.testing.assert_array_equal(RelaxedArborescence(result.params["logits"], 0.5).mode, truth)


def test_package_mirrors_pyro_sst_names():
    import pyro_sst

    assert set(pyro_sst.__all__) <= set(numpyro_sst.__all__)
    assert set(pyro_sst.ops.__all__) == set(numpyro_sst.ops.__all__)


@pytest.mark.parametrize("name", sorted(CASES))
def test_construct_under_jit_with_validation_and_run_svi_and_predictive(name):
    """Validation on (NumPyro's default): a class built inside ``jit`` from concrete logits, a model with a
    fixed prior under SVI, and Predictive of the prior (sequential) and of the guide (parallel) all run."""
    _, event_shape, relaxed = CASES[name]
    prior = jnp.zeros(event_shape)
    with numpyro.validation_enabled(True):
        logits = jax.jit(lambda _: _make(name, prior[None]).logits)(0)
        np.testing.assert_array_equal(logits, prior[None])

        def model():
            numpyro.sample("x", _make(name, prior))

        def guide():
            numpyro.sample("x", _make(name, numpyro.param("w", jnp.zeros(event_shape))))

        elbo = Trace_ELBO() if relaxed else TraceGraph_ELBO()
        result = SVI(model, guide, numpyro.optim.Adam(0.1), elbo).run(KEY, 3, progress_bar=False)
        assert np.isfinite(np.asarray(result.losses)).all()
        prior_draws = Predictive(model, num_samples=3)(KEY)["x"]  # sequential (lax.map), NumPyro's default
        posterior = Predictive(
            model, guide=guide, params=result.params, num_samples=3, parallel=True, return_sites=["x"]
        )
        assert prior_draws.shape == posterior(KEY)["x"].shape == (3,) + event_shape


@pytest.mark.parametrize("name", sorted(CASES))
def test_conformance_expand_validate_args_and_value_shape(name):
    dist = _make(name)
    with pytest.raises(ValueError, match="Cannot broadcast distribution of shape"):
        dist.expand((3,))
    assert dist.expand((4, 2)).batch_shape == (4, 2)
    with pytest.raises(ValueError, match="value must have shape"):
        dist.log_prob(jnp.zeros(BATCH + tuple(size - 1 for size in dist.event_shape)))
    with numpyro.validation_enabled(True):
        dist = _make(name)
        dist.validate_args(strict=True)  # concrete arguments: checked, and valid
        with pytest.raises(RuntimeError, match="Cannot validate arguments inside jitted code"):
            jax.jit(lambda x: _make(name, x).validate_args(strict=True) or x)(dist.logits)
        jax.jit(lambda x: _make(name, x).validate_args(strict=False) or x)(dist.logits)
        read_entry = (..., 0, -1) if len(dist.event_shape) == 2 else (..., 0)  # read by every class
        with pytest.raises(ValueError, match="logits must (be finite|not be NaN)"):
            _make(name, dist.logits.at[read_entry].set(jnp.nan))


def test_trace_rloo_elbo_does_not_warn_about_discrete_latents():
    from numpyro_sst.estimators import TraceRLOO_ELBO

    def model():
        numpyro.sample("x", KSubset(jnp.zeros(4), 2))

    def guide():
        numpyro.sample("x", KSubset(numpyro.param("w", jnp.zeros(4)), 2))

    SVI(model, guide, numpyro.optim.Adam(0.1), TraceRLOO_ELBO(2)).init(KEY)  # warnings are errors in this module


@pytest.mark.parametrize("name", sorted(name for name, case in CASES.items() if case[2]))
def test_non_positive_temperature_under_jit_gives_nan(name):
    """Eagerly a non-positive temperature raises; under jit its batch elements are NaN, the others unaffected."""
    build = {
        "GumbelSinkhorn": lambda x, t: GumbelSinkhorn(x, t),
        "RelaxedArborescence": lambda x, t: RelaxedArborescence(x, t, root=1, single_root=True),
        "RelaxedOneHotCategorical": lambda x, t: RelaxedOneHotCategorical(t, logits=x),
        "RelaxedSpanningTree": lambda x, t: RelaxedSpanningTree(x, t),
        "RelaxedTopK": lambda x, t: RelaxedTopK(x, 2, t),
        "RelaxedTopK-euclidean-st": lambda x, t: RelaxedTopK(x, 2, t, relaxation="euclidean"),
    }[name]
    _, event_shape, _ = CASES[name]
    logits = _logits(event_shape)
    with pytest.raises(ValueError, match="temperature"):
        build(logits, jnp.array([0.5, -1.0]))
    for bad in (-1.0, 0.0):
        x = jax.jit(lambda t: build(logits, t).sample(KEY))(jnp.array([0.5, bad]))
        assert bool(jnp.isnan(x[1]).all()) and bool(jnp.isfinite(x[0]).all())
