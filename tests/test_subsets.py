"""k-subsets: ops and distributions against brute-force enumeration. The tests that take ``backend`` run on both
(float64 unless a test says otherwise); the rest are pyro_sst's (numpyro_sst's distributions:
test_numpyro_distributions.py)."""

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as pdist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from reference import ExpFamily, k_subsets, subset_marginals_by_dp
from torch.distributions import kl_divergence

from pyro_sst import KSubset, RelaxedTopK, ops

RELAXATIONS = ["exp_family", "euclidean", "categorical_entropy", "binary_entropy"]


def family(theta, k):
    return ExpFamily(k_subsets(theta.shape[-1], k), theta)


def _covariance(ref):
    """The covariance of the k-hot vector under an enumerated family: the Jacobian of the marginals."""
    centred = ref.support - ref.marginals
    return (ref.probs[:, None, None] * centred[:, :, None] * centred[:, None, :]).sum(0)


@pytest.mark.parametrize("d,k", [(9, 4), (9, 0), (9, 9), (1, 1), (5, 1), (7, 6), (7, 3), (7, 5)])
def test_log_partition_marginals_and_mode_match_enumeration(backend, d, k):
    B = backend
    theta = torch.randn(3, d, dtype=torch.float64, generator=torch.Generator().manual_seed(d + k)).numpy() * 3
    log_z = B.numpy(B.ops.log_elementary_symmetric(B.array(theta), k))
    mu = B.numpy(B.ops.subset_marginals(B.array(theta), k))
    mode = B.numpy(B.ops.top_k_mask(B.array(theta), k))
    for b in range(3):
        family(theta[b], k).assert_matches(log_z[b], mu[b], mode[b])


def test_log_partition_is_stable_at_large_spreads_in_float32(backend):
    B = backend
    theta = torch.randn(2, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).numpy() * 1000
    with B.precision("float32"):
        log_z = B.numpy(B.ops.log_elementary_symmetric(B.array(theta, "float32"), 4))
        mu = B.numpy(B.ops.subset_marginals(B.array(theta, "float32"), 4))
    for b in range(2):
        ref = family(theta[b], 4).log_partition
        assert abs(log_z[b] - ref) < 1e-6 * abs(ref)
    assert mu.dtype == np.float32 and np.isfinite(mu).all()


def test_marginals_derivatives_are_exact(backend):
    """Finite differences (marginals, and the log-partition to second order), and the Jacobian of the marginals
    against the enumerated covariance of the k-hot vector."""
    B = backend
    theta = torch.randn(2, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).numpy()
    B.check_derivatives(lambda t: B.ops.subset_marginals(t, 3), theta)
    B.check_derivatives(lambda t: B.ops.log_elementary_symmetric(t, 3), theta, order=2)
    # the whole Jacobian in one gradient: row i is the gradient of marginal i, taken on a batch of 7 copies
    copies = np.tile(theta[0], (7, 1))
    jacobian = B.gradient(lambda t: (B.ops.subset_marginals(t, 3) * B.array(np.eye(7))).sum(), copies)
    np.testing.assert_allclose(jacobian, _covariance(family(theta[0], 3)), atol=1e-10)


@pytest.mark.parametrize("k", [3, 6])  # 6 of 9 runs on the complement
def test_batch_mixing_small_and_huge_spreads_matches_enumeration(backend, k):
    """Spreads of 2 and 2000 in one batch: values, marginals and the HVP against enumeration."""
    B, gen = backend, torch.Generator().manual_seed(k)
    theta = (torch.randn(2, 9, dtype=torch.float64, generator=gen) * torch.tensor([[2.0], [2000.0]])).numpy()
    v = torch.randn(2, 9, dtype=torch.float64, generator=gen).numpy()
    log_z = B.numpy(B.ops.log_elementary_symmetric(B.array(theta), k))
    mu = B.numpy(B.ops.subset_marginals(B.array(theta), k))
    hvp = B.gradient(lambda t: (B.ops.subset_marginals(t, k) * B.array(v)).sum(), theta)
    for b in range(2):
        ref = family(theta[b], k)
        assert abs(log_z[b] - ref.log_partition) < 1e-10 * max(1.0, abs(ref.log_partition))
        np.testing.assert_allclose(mu[b], ref.marginals, atol=1e-10)
        np.testing.assert_allclose(hvp[b], _covariance(ref) @ v[b], atol=1e-10)
    B.check_derivatives(lambda t: B.ops.subset_marginals(t, k), theta)


def _subset_marginals_in(backend, logits, k):
    if backend == "pyro":
        return ops.subset_marginals(torch.tensor(logits), k).numpy()
    import jax

    import numpyro_sst

    with jax.enable_x64(logits.dtype == np.float64):
        return np.asarray(numpyro_sst.ops.subset_marginals(jax.numpy.asarray(logits), k))


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
@pytest.mark.parametrize(
    "dtype,spread", [(np.float32, 1e5), (np.float32, 1e30), (np.float64, 1e12), (np.float64, 1e14), (np.float64, 1e300)]
)
@pytest.mark.parametrize("k", [100, 300])
def test_marginals_are_exact_at_any_spread(backend, dtype, spread, k):
    """Logits ``spread / 400`` apart: the marginals are the top-k indicator (to e^-250 at least), to a few roundings."""
    logits = np.linspace(-spread / 2, spread / 2, 400).astype(dtype)
    np.random.default_rng(0).shuffle(logits)
    expected = (logits >= np.sort(logits)[-k]).astype(np.float64)
    mu = _subset_marginals_in(backend, logits, k)
    assert mu.dtype == dtype
    np.testing.assert_allclose(mu, expected, atol=100 * np.finfo(dtype).eps)


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1.0, 30.0, 1e3])
def test_marginals_at_large_d_match_the_sequential_dp(backend, dtype, scale):
    """d = 2000, k = 700 (C(d, k) ~ e^1270 overflows any dtype; the passes multiply long count distributions by
    FFT): each backend in each dtype against the log-space DP on the same (rounded) logits. Tolerance: a few
    hundred roundings of the dtype, or the DP's own error (eps times its log-weights, up to ~1e6)."""
    logits = (np.random.default_rng(1).normal(size=(2, 2000)) * scale).astype(dtype)
    mu = _subset_marginals_in(backend, logits, 700)
    atol = max(300 * np.finfo(dtype).eps, 1e-9)
    for b in range(2):
        np.testing.assert_allclose(mu[b], subset_marginals_by_dp(logits[b], 700), atol=atol)
    np.testing.assert_allclose(mu.sum(-1), 700, rtol=atol)


def test_exact_sampler_matches_enumeration(backend):
    B = backend
    theta = torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).numpy()
    samples = B.numpy(B.draw(B.ops.sample_k_subset, B.array(theta), 2, (40000,), seed=2))
    assert samples.shape == (40000, 6) and (samples.sum(-1) == 2).all()
    assert family(theta, 2).total_variation(samples) < 0.02


def test_exact_sampler_of_an_empty_batch(backend):
    B = backend
    assert B.draw(B.ops.sample_k_subset, B.array(np.zeros((3, 0, 5))), 2, (4,)).shape == (4, 3, 0, 5)


def test_exact_sampler_is_batched_and_deterministic(backend):
    B = backend
    theta = torch.randn(3, 4, 11, generator=torch.Generator().manual_seed(5)).numpy()
    a, b = (B.numpy(B.draw(B.ops.sample_k_subset, B.array(theta), 5, (2,), seed=0)) for _ in range(2))
    assert a.shape == (2, 3, 4, 11) and (a == b).all()
    assert (a.sum(-1) == 5).all() and ((a == 0) | (a == 1)).all()
    # A logit far above the rest is always drawn.
    theta = np.zeros(11)
    theta[3] = 50.0
    assert (B.numpy(B.draw(B.ops.sample_k_subset, B.array(theta), 2, (100,), seed=1))[:, 3] == 1).all()


def test_top_k_mask_matches_argsort_and_breaks_ties_by_index():
    u = torch.randn(4, 3, 20)
    mask = ops.top_k_mask(u, 6)
    idx = np.argsort(-u.numpy(), axis=-1)[..., :6]
    expected = np.zeros(u.shape)
    np.put_along_axis(expected, idx, 1, axis=-1)
    np.testing.assert_array_equal(mask.numpy(), expected)
    assert torch.equal(ops.top_k_mask(torch.zeros(5), 2), torch.tensor([1.0, 1, 0, 0, 0]))


def _objective(relaxation, v, x):
    """<v, x> - f(x) for the relaxation's regulariser f (float64 NumPy)."""
    xlogx = lambda p: np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0.0)  # noqa: E731
    if relaxation == "euclidean":
        return v @ x - 0.5 * x @ x
    if relaxation == "categorical_entropy":
        return v @ x - xlogx(x).sum()
    return v @ x - (xlogx(x) + xlogx(1 - x)).sum()  # binary entropy


@pytest.mark.parametrize("relaxation", RELAXATIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_relaxation_lies_in_capped_simplex(relaxation, dtype):
    v = torch.randn(5, 4, 30, dtype=dtype, generator=torch.Generator().manual_seed(0)) * 3
    for k in (1, 7, 29):
        x = ops.relaxed_top_k(v, k, relaxation)
        assert x.shape == v.shape
        assert x.min() >= 0 and x.max() <= 1
        assert (x.sum(-1) - k).abs().max() < 1e-5 * k
    assert torch.equal(ops.relaxed_top_k(v, 0, relaxation), torch.zeros_like(v))
    assert torch.equal(ops.relaxed_top_k(v, 30, relaxation), torch.ones_like(v))


@pytest.mark.parametrize("relaxation", ["euclidean", "categorical_entropy", "binary_entropy"])
def test_relaxation_maximises_its_regularised_objective(relaxation):
    rng = np.random.default_rng(0)
    d, k = 8, 3
    vertices = k_subsets(d, k)
    for _ in range(5):
        v = rng.normal(size=d) * 2
        x = ops.relaxed_top_k(torch.tensor(v), k, relaxation).numpy()
        best = _objective(relaxation, v, x)
        for eps in (1e-1, 1e-3):
            others = (1 - eps) * x + eps * vertices  # every feasible direction is towards a vertex
            assert max(_objective(relaxation, v, y) for y in others) <= best + 1e-12


def test_exp_family_relaxation_is_the_marginals():
    v = torch.randn(9, dtype=torch.float64)
    np.testing.assert_allclose(ops.relaxed_top_k(v, 4).numpy(), family(v.numpy(), 4).marginals, atol=1e-10)


@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_relaxation_gradcheck(relaxation):
    v = torch.randn(3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(3), requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: ops.relaxed_top_k(t, 3, relaxation), (v,))


def test_euclidean_jacobian_is_the_implicit_one():
    v = torch.tensor([2.0, 0.3, 0.1, -0.2, -3.0], dtype=torch.float64)
    x = ops.capped_simplex_projection(v, 2)
    free = ((x > 0) & (x < 1)).double()
    expected = torch.diag(free) - free[:, None] * free[None, :] / free.sum()
    jac = torch.autograd.functional.jacobian(lambda t: ops.capped_simplex_projection(t, 2), v)
    torch.testing.assert_close(jac, expected)


@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_relaxed_sample_converges_to_hard_top_k(relaxation):
    torch.manual_seed(0)
    dist = RelaxedTopK(torch.randn(4, 12, dtype=torch.float64), 5, 1.0, relaxation=relaxation)
    utilities = dist.sample_utilities((8,))
    hard = dist.solve(utilities)
    errors = [(ops.relaxed_top_k(utilities / t, 5, relaxation) - hard).abs().max().item() for t in (1.0, 1e-2, 1e-6)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-3


@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_float32_robustness_at_scale(relaxation):
    gen = torch.Generator().manual_seed(0)
    logits = (torch.rand(10**4, generator=gen) * 40 - 20).requires_grad_()
    dist = RelaxedTopK(logits, 100, 0.1, relaxation=relaxation)
    x = dist.rsample()
    (x * torch.randn(x.shape, generator=gen)).sum().backward()
    assert torch.isfinite(x).all() and torch.isfinite(logits.grad).all()
    assert x.min() >= 0 and x.max() <= 1 and abs(x.sum().item() - 100) < 1e-3
    assert torch.isfinite(dist.log_partition) and torch.isfinite(dist.marginals).all()


# ----------------------------------------------------------------------------- distributions


def test_relaxed_top_k_shapes_support_and_straight_through():
    logits = torch.randn(3, 10, requires_grad=True)
    dist = RelaxedTopK(logits, 4, torch.tensor([0.5, 1.0, 2.0]), validate_args=True)
    assert dist.batch_shape == (3,) and dist.event_shape == (10,)
    x = dist.rsample((2,))
    assert x.shape == (2, 3, 10) and bool(dist.support.check(x).all())
    assert dist.log_prob(x).shape == (2, 3)
    hard = dist.hard_sample((5,))
    assert bool(pdist.constraints.boolean.check(hard).all()) and torch.all(hard.sum(-1) == 4)
    assert dist.support.event_dim == 1 and not dist.support.is_discrete
    assert KSubset(logits, 4).support.is_discrete

    st = RelaxedTopK(logits, 4, 0.5, straight_through=True)
    torch.manual_seed(1)
    y = st.rsample()
    torch.manual_seed(1)
    relaxed, hard = st.relaxed_and_hard()
    assert torch.equal(y, hard)
    (g1,) = torch.autograd.grad((y * torch.arange(10.0)).sum(), logits)
    (g2,) = torch.autograd.grad((relaxed * torch.arange(10.0)).sum(), logits)
    torch.testing.assert_close(g1, g2)


def test_k_subset_distribution_matches_enumeration():
    theta = torch.randn(2, 7, dtype=torch.float64)
    dist = KSubset(theta, 3, validate_args=True)
    support = dist.enumerate_support()
    assert support.shape == (35, 2, 7)
    log_p = dist.log_prob(support)
    for b in range(2):
        ref = family(theta[b].numpy(), 3)
        np.testing.assert_allclose(log_p[:, b].exp().numpy(), ref.probs, atol=1e-12)
        assert abs(dist.entropy()[b].item() - ref.entropy) < 1e-10
        np.testing.assert_array_equal(dist.mode[b].numpy(), ref.mode)
        np.testing.assert_allclose(dist.mean[b].numpy(), ref.marginals, atol=1e-10)
    other = KSubset(torch.randn(2, 7, dtype=torch.float64), 3)
    p, q = dist.log_prob(support).exp(), other.log_prob(support).exp()
    torch.testing.assert_close(kl_divergence(dist, other), (p * (p.log() - q.log())).sum(0))
    assert dist.sample((4,)).shape == (4, 2, 7)
    with pytest.raises(ValueError):
        dist.log_prob(torch.ones(7, dtype=torch.float64))


def test_expand_keeps_class_options_and_kl():
    q = RelaxedTopK(torch.randn(6), 2, 0.5, relaxation="euclidean")
    p = RelaxedTopK(torch.zeros(6), 2, 0.5, relaxation="euclidean")
    qe, pe = q.expand((4,)), p.expand((4,))
    assert type(qe) is RelaxedTopK and qe.k == 2 and qe.relaxation == "euclidean"
    expected = (q.logits - 1 + torch.exp(-q.logits)).sum()
    torch.testing.assert_close(kl_divergence(qe, pe), expected.expand(4))
    with pytest.raises(ValueError, match="k"):
        kl_divergence(q, RelaxedTopK(torch.zeros(6), 3, 0.5, relaxation="euclidean"))
    assert RelaxedTopK.infer_shapes(logits=(3, 6), temperature=(4, 1)) == ((4, 3), (6,))


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: RelaxedTopK(torch.zeros(5), 6, 1.0), "k must be an int in \\[0, 5\\]"),
        (lambda: RelaxedTopK(torch.zeros(5), -1, 1.0), "k must be"),
        (lambda: RelaxedTopK(torch.zeros(5), 2.0, 1.0), "k must be"),
        (lambda: KSubset(torch.zeros(5), 7), "k must be"),
        (lambda: RelaxedTopK(torch.zeros(5), 2, 0.0), "temperature"),
        (lambda: RelaxedTopK(torch.zeros(5), 2, 1.0, relaxation="sparsemax"), "relaxation"),
        (lambda: RelaxedTopK(torch.tensor([0.0, math.nan]), 1, 1.0, validate_args=True), "logits"),
        (lambda: ops.log_elementary_symmetric(torch.zeros(()), 0), "logits"),
    ],
)
def test_bad_arguments_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ----------------------------------------------------------------------------- SVI

TRUTH = torch.tensor([0.0, 1, 0, 0, 1, 0, 1, 0])


def _subset_model(dist_factory, data):
    def model():
        z = pyro.sample("z", dist_factory(torch.zeros(data.shape[-1])))
        with pyro.plate("obs", data.shape[0]):
            pyro.sample("y", pdist.Normal(z, 0.5).to_event(1), obs=data)

    return model


def _subset_guide(dist_factory, d):
    def guide():
        pyro.sample("z", dist_factory(pyro.param("q_logits", torch.zeros(d))))

    return guide


@pytest.mark.parametrize("elbo", [Trace_ELBO, TraceMeanField_ELBO])
@pytest.mark.parametrize("relaxation", ["exp_family", "euclidean"])
def test_svi_relaxed_top_k_recovers_subset(elbo, relaxation):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    data = TRUTH + 0.5 * torch.randn(10, 8)
    factory = lambda logits: RelaxedTopK(logits, 3, 0.5, relaxation=relaxation)  # noqa: E731
    svi = SVI(_subset_model(factory, data), _subset_guide(factory, 8), pyro.optim.Adam({"lr": 0.1}), elbo())
    for _ in range(200):
        svi.step()
    assert torch.equal(factory(pyro.param("q_logits").detach()).mode, TRUTH)


def test_svi_k_subset_with_score_function():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    data = TRUTH + 0.5 * torch.randn(10, 8)
    factory = lambda logits: KSubset(logits, 3)  # noqa: E731
    elbo = TraceGraph_ELBO(num_particles=16, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(_subset_model(factory, data), _subset_guide(factory, 8), pyro.optim.Adam({"lr": 0.1}), elbo)
    for _ in range(200):
        svi.step()
    assert torch.equal(factory(pyro.param("q_logits").detach()).mode, TRUTH)


def test_float32_relaxed_top_k_at_d_10k_k_1000():
    gen = torch.Generator().manual_seed(1)
    logits = (torch.rand(10**4, generator=gen) * 40 - 20).requires_grad_()
    x = RelaxedTopK(logits, 1000, 0.1).rsample()
    (x * torch.randn(x.shape, generator=gen)).sum().backward()
    assert torch.isfinite(x).all() and torch.isfinite(logits.grad).all()
    assert abs(x.sum().item() - 1000) < 1e-2


def test_k_accepts_any_integral_type():
    logits = torch.randn(6)
    for k in (np.int64(2), torch.tensor(2)):
        dist = RelaxedTopK(logits, k, 1.0)
        assert type(dist.k) is int and dist.k == 2
        assert KSubset(logits, k).sample().sum() == 2


def test_euclidean_gradient_where_an_item_saturates_matches_finite_differences():
    """k = 1 with one utility far ahead: x is one-hot and locally constant, so its Jacobian is 0 (clamp's gradient
    at the ends of [0, 1] must not leak through)."""
    theta = torch.tensor(np.random.RandomState(1).normal(size=(2, 7)), dtype=torch.float64, requires_grad=True)
    v = torch.tensor(np.random.RandomState(2).normal(size=(2, 7)))
    direction = torch.tensor(np.random.RandomState(3).normal(size=(2, 7)))
    (ops.capped_simplex_projection(theta, 1) * v).sum().backward()
    eps = 1e-6
    with torch.no_grad():
        plus = (ops.capped_simplex_projection(theta + eps * direction, 1) * v).sum()
        minus = (ops.capped_simplex_projection(theta - eps * direction, 1) * v).sum()
    assert ops.capped_simplex_projection(theta, 1)[1].max() == 1  # the saturated element
    np.testing.assert_allclose((theta.grad * direction).sum().item(), ((plus - minus) / (2 * eps)).item(), rtol=1e-6)


def test_relaxed_top_k_with_k1_is_gumbel_softmax_and_matches_pyro_concrete():
    """The categorical is the 1-subset: RelaxedTopK(k=1) relaxes to softmax(U / t), Pyro's Gumbel-softmax, and
    RelaxedOneHotCategorical adds the Concrete density, equal to Pyro's."""
    from pyro_sst import RelaxedOneHotCategorical, RelaxedOneHotCategoricalStraightThrough

    logits = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    utilities = logits - torch.empty(3, 5).exponential_(generator=torch.Generator().manual_seed(1)).log()
    softmax = (utilities / 0.4).softmax(-1)
    torch.testing.assert_close(RelaxedTopK(logits, 1, 0.4).relax(utilities), softmax, atol=1e-6, rtol=0)
    torch.testing.assert_close(RelaxedOneHotCategorical(0.4, logits=logits).relax(utilities), softmax)
    pyro_dist = pdist.RelaxedOneHotCategorical(torch.tensor(0.4), logits=logits)
    pyro.set_rng_seed(0)
    value = pyro_dist.rsample((4,)).clamp(min=1e-6)
    value = value / value.sum(-1, keepdim=True)  # in the open simplex
    ours = RelaxedOneHotCategorical(0.4, logits=logits)
    torch.testing.assert_close(ours.log_prob(value), pyro_dist.log_prob(value), rtol=1e-5, atol=1e-5)
    from_probs = RelaxedOneHotCategorical(0.4, probs=logits.softmax(-1))
    torch.testing.assert_close(from_probs.log_prob(value), ours.log_prob(value))
    wide = ours.expand((2, 3))  # keeps the class and its options (k, noise, ...)
    assert type(wide) is RelaxedOneHotCategorical and wide.rsample().shape == (2, 3, 5)
    torch.testing.assert_close(wide.log_prob(value[:, None]), ours.log_prob(value)[:, None].expand(4, 2, 3))
    st = RelaxedOneHotCategoricalStraightThrough(0.4, logits=logits.requires_grad_())
    x = st.rsample()
    assert torch.equal(x.sum(-1), torch.ones(3)) and bool(((x == 0) | (x == 1)).all())
    torch.testing.assert_close(st.log_prob(x), (logits.log_softmax(-1) * x).sum(-1))
    (x * torch.arange(5.0)).sum().backward()
    assert logits.grad.abs().sum() > 0


def test_k_zero_enumerates_the_empty_subset_in_both_backends():
    import jax.numpy as jnp

    import numpyro_sst

    support = KSubset(torch.zeros(4), 0).enumerate_support()
    assert support.shape == (1, 4) and support.sum() == 0
    assert KSubset(torch.zeros(4), 0).log_prob(support).item() == 0.0
    jax_support = numpyro_sst.KSubset(jnp.zeros(4), 0).enumerate_support()
    assert jax_support.shape == (1, 4) and float(jax_support.sum()) == 0.0


def test_k_subset_backward_emits_no_deprecation_warning():
    x = torch.randn(3, 6, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (ops.subset_marginals(x, 2) * torch.randn(3, 6)).sum().backward()
    assert torch.isfinite(x.grad).all()
