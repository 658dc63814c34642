"""Permutations: Sinkhorn, assignment, log-permanent and GumbelSinkhorn against brute force and scipy. The tests that
take ``backend`` run on both (float64 unless a test says otherwise); the rest are pyro_sst's."""

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as pdist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from reference import ExpFamily, permutations
from scipy.optimize import linear_sum_assignment
from torch.distributions import kl_divergence

from pyro_sst import GumbelSinkhorn, ops


def family(theta):
    return ExpFamily(permutations(theta.shape[-1]), theta)


def bethe_objective(gamma, theta):
    xlogx = lambda p: np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0.0)  # noqa: E731
    return (gamma * theta - xlogx(gamma) + xlogx(1 - gamma)).sum()


# ----------------------------------------------------------------------------- log-permanent


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_log_permanent_marginals_and_mode_match_enumeration(backend, n):
    B = backend
    theta = torch.randn(2, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n)).numpy() * 2
    log_z = B.numpy(B.ops.log_permanent(B.array(theta)))
    mu = B.numpy(B.ops.permutation_marginals(B.array(theta)))
    mode = B.numpy(B.ops.max_assignment(B.array(theta)))
    for b in range(2):
        family(theta[b]).assert_matches(log_z[b], mu[b], mode[b])


def test_exact_log_permanent_has_no_cancellation_at_large_spreads(backend):
    B = backend
    theta = torch.randn(7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).numpy() * 100
    ref = family(theta).log_partition
    assert abs(float(B.ops.log_permanent(B.array(theta))) - ref) < 1e-10 * abs(ref)
    with B.precision("float32"):
        assert abs(float(B.ops.log_permanent(B.array(theta, "float32"))) - ref) < 1e-6 * abs(ref)


def test_permutation_marginals_match_finite_differences(backend):
    theta = torch.randn(2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).numpy()
    backend.check_derivatives(backend.ops.permutation_marginals, theta)


@pytest.mark.parametrize("n,scale", [(4, 1.0), (6, 3.0), (7, 10.0)])
def test_bethe_log_permanent_is_a_bounded_optimum(backend, n, scale):
    B = backend
    theta = torch.randn(n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n)).numpy() * scale
    value, gamma = (B.numpy(x) for x in B.ops.bethe_log_permanent(B.array(theta)))
    exact = family(theta).log_partition
    assert exact - 0.5 * n * math.log(2) <= value <= exact + 1e-9  # Gurvits; Anari and Rezaei
    np.testing.assert_allclose(gamma.sum(-1), 1.0, atol=1e-10)
    np.testing.assert_allclose(gamma.sum(-2), 1.0, atol=1e-10)
    best = bethe_objective(gamma, theta)
    assert abs(best - value) < 1e-9
    for p in permutations(n)[:: max(1, math.factorial(n) // 200)]:  # mixing towards vertices never helps
        assert bethe_objective(0.99 * gamma + 0.01 * p, theta) <= best + 1e-12
    grad = B.gradient(lambda t: B.ops.bethe_log_permanent(t)[0], theta)
    np.testing.assert_allclose(grad, gamma, atol=1e-7)


def test_log_permanent_method_switch_and_errors(backend):
    B = backend
    theta = B.array(torch.randn(13, 13, generator=torch.Generator().manual_seed(2)).numpy())
    np.testing.assert_allclose(B.numpy(B.ops.log_permanent(theta)), B.numpy(B.ops.bethe_log_permanent(theta)[0]))
    np.testing.assert_allclose(B.numpy(B.ops.permutation_marginals(theta)).sum(-1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="n <= 12"):
        B.ops.log_permanent(theta, method="exact")
    with pytest.raises(ValueError, match="method"):
        B.ops.log_permanent(theta, method="ryser")


# ----------------------------------------------------------------------------- Sinkhorn


def test_sinkhorn_is_doubly_stochastic_within_tolerance(backend):
    B = backend
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).numpy() * 3
    p, residual = (B.numpy(y) for y in B.ops.sinkhorn(B.array(x), n_iters=10_000, tol=1e-9))
    assert residual.shape == (3, 2) and (residual <= 1e-9).all()
    assert np.abs(p.sum(-1) - 1).max() <= 1e-9 and np.abs(p.sum(-2) - 1).max() < 1e-12
    np.testing.assert_allclose(residual, np.abs(p.sum(-1) - 1).max(-1), atol=1e-14)  # a few roundings of 1
    # The iteration cap is respected and reported through the residual.
    _, capped = B.ops.sinkhorn(B.array(x * 10), n_iters=2, tol=1e-9)
    assert (B.numpy(capped) > 1e-9).any()
    # S(X) is the scaling of exp(X): p / exp(x) has rank one.
    ratio = p / np.exp(x)
    np.testing.assert_allclose(ratio * ratio[..., :1, :1], ratio[..., :, :1] * ratio[..., :1, :], rtol=1e-10)


def test_sinkhorn_implicit_and_unrolled_gradients_agree(backend):
    B, gen = backend, torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 6, dtype=torch.float64, generator=gen).numpy()
    weights = torch.randn(2, 6, 6, dtype=torch.float64, generator=gen).numpy()
    grads = {
        backward: B.gradient(lambda t, b=backward: (B.ops.sinkhorn(t, 5000, 1e-13, b)[0] * B.array(weights)).sum(), x)
        for backward in ("unrolled", "implicit")
    }
    assert np.abs(grads["unrolled"] - grads["implicit"]).max() < 1e-6


def test_sinkhorn_derivatives_match_finite_differences():
    """(numpyro_sst: test_numpyro_ops.py::test_check_grads_sinkhorn_and_permanent, reverse mode for the implicit
    backward, which has no forward mode.)"""
    x = torch.randn(2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    for backward in ("unrolled", "implicit"):
        assert torch.autograd.gradcheck(lambda t, b=backward: ops.sinkhorn(t, 5000, 1e-13, b)[0], (x,))


def test_sinkhorn_float32_large(backend):
    B, gen = backend, torch.Generator().manual_seed(0)
    x = (torch.randn(2, 200, 200, generator=gen) * 10 / 0.1).numpy()
    cotangent = torch.randn(x.shape, generator=gen).numpy()
    for backward in ("unrolled", "implicit"):

        def loss(t, c, backward=backward):
            p = B.ops.sinkhorn(t, n_iters=50, tol=1e-6, backward=backward)[0]
            return (p * c).sum(), p

        with B.precision("float32"):
            grad, p = B.gradient(loss, x, cotangent, dtype="float32", has_aux=True)
        assert p.dtype == np.float32 and np.isfinite(p).all() and np.isfinite(grad).all()


# ----------------------------------------------------------------------------- assignment


def test_max_assignment_matches_scipy(backend):
    B = backend
    w = torch.randn(2, 3, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(4)).numpy()
    x = B.numpy(B.ops.max_assignment(B.array(w)))
    assert x.shape == w.shape and (x.sum(-1) == 1).all() and (x.sum(-2) == 1).all()
    for idx in np.ndindex(2, 3):
        rows, cols = linear_sum_assignment(w[idx], maximize=True)
        np.testing.assert_array_equal(x[idx].argmax(-1)[rows], cols)


def test_max_assignment_with_forbidden_entries_matches_scipy(backend):
    B, rng = backend, np.random.RandomState(2)
    w = rng.normal(size=(25, 8, 8))
    w[rng.uniform(size=w.shape) < 0.3] = -np.inf
    w = np.where(np.eye(8, dtype=bool), 0.0, w)  # the identity stays feasible
    x = B.numpy(B.ops.max_assignment(B.array(w)))
    for b in range(25):
        rows, cols = linear_sum_assignment(np.where(np.isfinite(w[b]), w[b], -1e9), maximize=True)
        assert (x[b][~np.isfinite(w[b])] == 0).all()
        assert np.where(x[b] > 0, w[b], 0).sum() == pytest.approx(w[b][rows, cols].sum(), abs=1e-9)
    w[1, :, 4] = -np.inf  # no finite entry in column 4: one message on both backends (pyro_sst: scipy's path)
    with pytest.raises(ValueError, match="^weights: batch element 1 has no assignment of finite weight$"):
        B.ops.max_assignment(B.array(w))


def test_batched_hungarian_matches_scipy(backend, monkeypatch):
    """The batched shortest augmenting paths (both backends' path on other devices, run on the CPU): real and
    tied integer weights, absent edges, NaN elements."""
    import numpyro_sst.ops.permutations
    import pyro_sst.ops.permutations

    B = backend
    for module in (pyro_sst.ops.permutations, numpyro_sst.ops.permutations):
        monkeypatch.setattr(module, "_BATCHED_ASSIGNMENT_ON_CPU", True)
    g = torch.Generator().manual_seed(5)
    w = torch.cat([torch.randn(6, 12, 12, generator=g), torch.randint(0, 3, (6, 12, 12), generator=g).float()])
    w = w.masked_fill(torch.rand(w.shape, generator=g) < 0.2, -math.inf)
    w[3, 0, 0] = math.nan
    w = w.numpy()
    x = B.numpy(B.ops.max_assignment(B.array(w, "float32")))
    assert np.isnan(x[3]).all() and not np.isnan(x[np.arange(12) != 3]).any()
    for b in set(range(12)) - {3}:
        wb = w[b].astype(np.float64)
        rows, cols = linear_sum_assignment(wb, maximize=True)
        assert np.all(x[b].sum(-1) == 1) and np.all(x[b].sum(-2) == 1)
        assert (x[b] * np.nan_to_num(wb, neginf=0.0)).sum() == pytest.approx(wb[rows, cols].sum())
        assert np.isfinite(wb[x[b] == 1]).all()
    with pytest.raises(ValueError, match="batch element 1 has no assignment"):
        B.ops.max_assignment(B.array(np.where(np.arange(2)[:, None, None] == 1, -np.inf, np.zeros((2, 3, 3)))))


def test_enumerate_permutations_matches_reference():
    np.testing.assert_array_equal(ops.enumerate_permutations(4, dtype=torch.float64).numpy(), permutations(4))
    with pytest.raises(ValueError, match="n <= 8"):
        ops.enumerate_permutations(9)


# ----------------------------------------------------------------------------- GumbelSinkhorn


def test_gumbel_sinkhorn_samples():
    logits = torch.randn(3, 5, 5, requires_grad=True)
    dist = GumbelSinkhorn(logits, 0.5, validate_args=True)
    assert dist.batch_shape == (3,) and dist.event_shape == (5, 5)
    x = dist.rsample((2,))
    assert x.shape == (2, 3, 5, 5) and bool(dist.support.check(x).all())
    hard = dist.hard_sample((4,))
    assert torch.all(hard.sum(-1) == 1) and torch.all(hard.sum(-2) == 1)
    assert torch.all((hard == 0) | (hard == 1))
    np.testing.assert_array_equal(dist.mode.numpy(), ops.max_assignment(logits).numpy())

    st = GumbelSinkhorn(logits, 0.5, straight_through=True)
    torch.manual_seed(3)
    y = st.rsample()
    torch.manual_seed(3)
    relaxed, hard = st.relaxed_and_hard()
    assert torch.equal(y, hard)
    (g1,) = torch.autograd.grad((y * torch.arange(25.0).reshape(5, 5)).sum(), logits)
    (g2,) = torch.autograd.grad((relaxed * torch.arange(25.0).reshape(5, 5)).sum(), logits)
    torch.testing.assert_close(g1, g2)


def test_gumbel_sinkhorn_converges_to_hard_sample():
    torch.manual_seed(0)
    dist = GumbelSinkhorn(torch.randn(4, 5, 5, dtype=torch.float64), 1.0)
    utilities = dist.sample_utilities((8,)).reshape(-1, 5, 5)
    # Keep the samples whose best assignment beats the runner-up by a margin (ties split the limit).
    scores = torch.einsum("bij,pij->bp", utilities, torch.tensor(permutations(5))).sort(-1, descending=True).values
    utilities = utilities[scores[:, 0] - scores[:, 1] > 1.0]
    assert len(utilities) >= 5
    hard = dist.solve(utilities)
    errors = [(ops.sinkhorn(utilities / t, 2000, 1e-9)[0] - hard).abs().max().item() for t in (1.0, 0.2, 0.05)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-2


def test_gumbel_sinkhorn_log_prob_kl_and_expand():
    theta = torch.randn(2, 5, 5, dtype=torch.float64)
    dist = GumbelSinkhorn(theta, 0.5)
    support = torch.tensor(permutations(5))
    log_p = dist.log_prob(support[:, None])
    for b in range(2):
        np.testing.assert_allclose(log_p[:, b].exp().numpy(), family(theta[b].numpy()).probs, atol=1e-12)
    other = GumbelSinkhorn(torch.zeros(2, 5, 5, dtype=torch.float64), 0.5)
    expected = (theta - 1 + torch.exp(-theta)).sum((-2, -1))
    torch.testing.assert_close(kl_divergence(dist, other), expected)
    expanded = dist.expand((4, 2))
    assert type(expanded) is GumbelSinkhorn and expanded.n_iters == dist.n_iters
    assert kl_divergence(expanded, other.expand((4, 2))).shape == (4, 2)
    with pytest.raises(ValueError, match="n_iters"):
        kl_divergence(dist, GumbelSinkhorn(theta, 0.5, n_iters=7))


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: GumbelSinkhorn(torch.zeros(3, 4), 1.0), "shape"),
        (lambda: GumbelSinkhorn(torch.zeros(3, 3), -1.0), "temperature"),
        (lambda: GumbelSinkhorn(torch.zeros(3, 3), 1.0, n_iters=0), "n_iters"),
        (lambda: GumbelSinkhorn(torch.zeros(3, 3), 1.0, tol=-1.0), "tol"),
        (lambda: GumbelSinkhorn(torch.zeros(3, 3), 1.0, backward="adjoint"), "backward"),
        (lambda: ops.sinkhorn(torch.zeros(3, 4)), "log_alpha"),
        (lambda: ops.max_assignment(torch.zeros(3)), "weights"),
    ],
)
def test_bad_arguments_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.filterwarnings("ignore:GumbelSinkhorn. stopped at n_iters=50:RuntimeWarning")  # capped on purpose
@pytest.mark.parametrize("elbo", [Trace_ELBO, TraceMeanField_ELBO])
@pytest.mark.parametrize("backward", ["unrolled", "implicit"])
def test_svi_gumbel_sinkhorn_recovers_permutation(elbo, backward):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    n = 5
    truth = torch.eye(n)[torch.tensor([2, 0, 4, 1, 3])]
    data = truth + 0.5 * torch.randn(10, n, n)
    factory = lambda logits: GumbelSinkhorn(logits, 0.5, n_iters=50, backward=backward)  # noqa: E731

    def model():
        x = pyro.sample("perm", factory(torch.zeros(n, n)))
        with pyro.plate("obs", data.shape[0]):
            pyro.sample("y", pdist.Normal(x, 0.5).to_event(2), obs=data)

    def guide():
        pyro.sample("perm", factory(pyro.param("q_logits", torch.zeros(n, n))))

    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.1}), elbo())
    for _ in range(200):
        svi.step()
    assert torch.equal(factory(pyro.param("q_logits").detach()).mode, truth)


@pytest.mark.parametrize("n", [12, 20, 50])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gumbel_sinkhorn_defaults_converge_down_to_temperature_0_1(n, dtype):
    g = torch.Generator().manual_seed(n)
    logits = torch.randn(8, n, n, generator=g, dtype=dtype)
    for t in (1.0, 0.5, 0.2, 0.1):
        d = GumbelSinkhorn(logits, t)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            x = d.relax(d.sample_utilities()).double()
        tol = 1e-6 if dtype == torch.float64 else 1e-5
        assert (x.sum(-1) - 1).abs().max() < tol and (x.sum(-2) - 1).abs().max() < tol


def test_gumbel_sinkhorn_warns_when_the_cap_is_hit():
    logits = torch.randn(4, 20, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    d = GumbelSinkhorn(logits, 0.1, n_iters=3, backward="unrolled")
    with pytest.warns(RuntimeWarning, match="residual"):
        d.rsample()


def test_implicit_sinkhorn_memory_does_not_grow_with_iterations():
    logits = torch.randn(4, 20, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    logits.requires_grad_()
    saved = {}
    for n_iters in (1, 20, 500):
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            ops.sinkhorn(logits / 0.2, n_iters, 0.0, "implicit")
        saved[n_iters] = total
    assert saved[1] == saved[20] == saved[500]
