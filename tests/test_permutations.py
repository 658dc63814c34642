"""Permutations: Sinkhorn, assignment, log-permanent and GumbelSinkhorn against brute force and scipy."""

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
def test_log_permanent_and_marginals_match_enumeration(n):
    theta = torch.randn(2, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n)) * 2
    log_z, mu = ops.log_permanent(theta), ops.permutation_marginals(theta)
    for b in range(2):
        ref = family(theta[b].numpy())
        assert abs(log_z[b].item() - ref.log_partition) < 1e-10
        np.testing.assert_allclose(mu[b].numpy(), ref.marginals, atol=1e-10)


def test_exact_log_permanent_has_no_cancellation_at_large_spreads():
    theta = torch.randn(7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 100
    ref = family(theta.numpy()).log_partition
    assert abs(ops.log_permanent(theta).item() - ref) < 1e-10 * abs(ref)
    assert abs(ops.log_permanent(theta.float()).item() - ref) < 1e-6 * abs(ref)


def test_permutation_marginals_gradcheck():
    theta = torch.randn(2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ops.permutation_marginals, (theta,))


@pytest.mark.parametrize("n,scale", [(4, 1.0), (6, 3.0), (7, 10.0)])
def test_bethe_log_permanent_is_a_bounded_optimum(n, scale):
    theta = torch.randn(n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n)) * scale
    value, gamma = ops.bethe_log_permanent(theta)
    exact = family(theta.numpy()).log_partition
    assert exact - 0.5 * n * math.log(2) <= value.item() <= exact + 1e-9  # Gurvits; Anari and Rezaei
    torch.testing.assert_close(gamma.sum(-1), torch.ones(n, dtype=torch.float64))
    torch.testing.assert_close(gamma.sum(-2), torch.ones(n, dtype=torch.float64))
    g, th = gamma.numpy(), theta.numpy()
    best = bethe_objective(g, th)
    assert abs(best - value.item()) < 1e-9
    for p in permutations(n)[:: max(1, math.factorial(n) // 200)]:  # mixing towards vertices never helps
        assert bethe_objective(0.99 * g + 0.01 * p, th) <= best + 1e-12
    (grad,) = torch.autograd.grad(ops.bethe_log_permanent(theta.requires_grad_())[0], theta)
    torch.testing.assert_close(grad, gamma)


def test_log_permanent_method_switch_and_errors():
    theta = torch.randn(13, 13)
    bethe = ops.log_permanent(theta)
    torch.testing.assert_close(bethe, ops.bethe_log_permanent(theta)[0])
    torch.testing.assert_close(ops.permutation_marginals(theta).sum(-1), torch.ones(13))
    with pytest.raises(ValueError, match="n <= 12"):
        ops.log_permanent(theta, method="exact")
    with pytest.raises(ValueError, match="method"):
        ops.log_permanent(theta, method="ryser")


# ----------------------------------------------------------------------------- Sinkhorn


def test_sinkhorn_is_doubly_stochastic_within_tolerance():
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64) * 3
    p, residual = ops.sinkhorn(x, n_iters=10_000, tol=1e-9)
    assert residual.shape == (3, 2) and bool((residual <= 1e-9).all())
    assert (p.sum(-1) - 1).abs().max() <= 1e-9 and (p.sum(-2) - 1).abs().max() < 1e-12
    torch.testing.assert_close(residual, (p.sum(-1) - 1).abs().amax(-1))
    # The iteration cap is respected and reported through the residual.
    _, capped = ops.sinkhorn(x * 10, n_iters=2, tol=1e-9)
    assert bool((capped > 1e-9).any())
    # S(X) is the scaling of exp(X): p / exp(x) has rank one.
    ratio = p / x.exp()
    torch.testing.assert_close(ratio * ratio[..., :1, :1], ratio[..., :, :1] * ratio[..., :1, :])


def test_sinkhorn_implicit_and_unrolled_gradients_agree():
    x = torch.randn(2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    weights = torch.randn(2, 6, 6, dtype=torch.float64)
    grads = {}
    for backward in ("unrolled", "implicit"):
        p, _ = ops.sinkhorn(x, n_iters=5000, tol=1e-13, backward=backward)
        (grads[backward],) = torch.autograd.grad((p * weights).sum(), x)
    assert (grads["unrolled"] - grads["implicit"]).abs().max() < 1e-6
    for backward in ("unrolled", "implicit"):
        assert torch.autograd.gradcheck(lambda t, b=backward: ops.sinkhorn(t, 5000, 1e-13, b)[0], (x,))


def test_sinkhorn_float32_large():
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 200, 200, generator=gen) * 10 / 0.1).requires_grad_()
    for backward in ("unrolled", "implicit"):
        p, _ = ops.sinkhorn(x, n_iters=50, tol=1e-6, backward=backward)
        (grad,) = torch.autograd.grad((p * torch.randn(p.shape, generator=gen)).sum(), x)
        assert torch.isfinite(p).all() and torch.isfinite(grad).all()


# ----------------------------------------------------------------------------- assignment


def test_max_assignment_matches_scipy():
    w = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    x = ops.max_assignment(w)
    assert x.shape == w.shape
    assert torch.all(x.sum(-1) == 1) and torch.all(x.sum(-2) == 1)
    for idx in np.ndindex(2, 3):
        rows, cols = linear_sum_assignment(w[idx].numpy(), maximize=True)
        np.testing.assert_array_equal(x[idx].numpy().argmax(-1)[rows], cols)
    ref = family(w[0, 0].numpy())
    np.testing.assert_array_equal(x[0, 0].numpy(), ref.mode)


def test_batched_hungarian_matches_scipy(monkeypatch):
    """The device path, run on the CPU: real and tied integer weights, absent edges, NaN elements."""
    from pyro_sst.ops import permutations

    monkeypatch.setattr(permutations, "_BATCHED_ASSIGNMENT_ON_CPU", True)
    g = torch.Generator().manual_seed(5)
    w = torch.cat([torch.randn(6, 12, 12, generator=g), torch.randint(0, 3, (6, 12, 12), generator=g).float()])
    w = w.masked_fill(torch.rand(w.shape, generator=g) < 0.2, -math.inf)
    w[3, 0, 0] = math.nan
    x = ops.max_assignment(w)
    assert torch.isnan(x[3]).all() and not torch.isnan(x[torch.arange(12) != 3]).any()
    for b in set(range(12)) - {3}:
        wb = w[b].double().numpy()
        rows, cols = linear_sum_assignment(wb, maximize=True)
        assert torch.all(x[b].sum(-1) == 1) and torch.all(x[b].sum(-2) == 1)
        assert (x[b].double().numpy() * np.nan_to_num(wb, neginf=0.0)).sum() == pytest.approx(wb[rows, cols].sum())
        assert np.isfinite(wb[x[b].numpy() == 1]).all()
    with pytest.raises(ValueError, match="batch element 1 has no assignment"):
        ops.max_assignment(torch.zeros(2, 3, 3).index_fill(0, torch.tensor([1]), -math.inf))


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
