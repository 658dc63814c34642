"""numpyro_sst.ops against brute-force enumeration, scipy, pyro_sst, and check_grads (float64): what the backend
template of the tree ops (test_tree_ops.py) does not cover: subsets, permutations, JAX transforms and reproducers of
JAX-specific failures."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.test_util import check_grads
from reference import arborescence_family

import numpyro_sst.ops as N
import pyro_sst.ops as P

pytestmark = pytest.mark.filterwarnings("error")
KEY = jax.random.PRNGKey(0)


def f64(x):
    return jnp.asarray(x, jnp.float64)


# ------------------------------------------------------------------------------------------ exact values
@pytest.mark.parametrize("root,single_root", [(0, False), (1, True)])
def test_elimination_fallback_is_exact_at_huge_spreads(root, single_root):
    """Spreads of 1e4 (U / t at t = 0.01): float32 in, the log-space elimination takes over, exact and finite."""
    theta = np.random.RandomState(1).normal(size=(3, 5, 5)) * 1e4
    log_z = N.arborescence_log_partition(jnp.asarray(theta, jnp.float32), root, single_root)
    mu = N.arborescence_marginals(jnp.asarray(theta, jnp.float32), root, single_root)
    for b in range(3):
        ref = arborescence_family(theta[b], root, single_root)
        np.testing.assert_allclose(log_z[b], ref.log_partition, rtol=1e-6)
        np.testing.assert_allclose(mu[b], ref.marginals, atol=1e-5)
    theta32 = jnp.asarray(theta, jnp.float32)
    grad = jax.grad(lambda t: (N.arborescence_marginals(t, root, single_root) ** 2).sum())(theta32)
    assert bool(jnp.isfinite(grad).all())


@pytest.mark.parametrize("single_root", [False, True])
def test_log_space_branch_in_chunks_matches_one_element_at_a_time(single_root):
    """A batch of 150 (chunks of 64, the last one filled) where some elements lose more scale than float32's linear
    elimination allows: the log-partition, the marginals and the Hessian-vector product of the log-space branch
    match each element computed alone, and float64 enumeration."""
    rng = np.random.RandomState(7)
    theta = rng.normal(size=(150, 5, 5)) * np.where(rng.uniform(size=(150, 1, 1)) < 0.3, 2000.0, 1.0)
    v = rng.normal(size=(150, 5, 5))
    t32, v32 = jnp.asarray(theta, jnp.float32), jnp.asarray(v, jnp.float32)

    def values(t, v):
        mu, hvp = jax.jvp(lambda t: N.arborescence_marginals(t, 0, single_root), (t,), (v,))
        return N.arborescence_log_partition(t, 0, single_root), mu, hvp

    together = values(t32, v32)
    for b in (0, 1, 2, 64, 127, 128, 149):  # the edges of the chunks, and the filled last one
        for x, y in zip(together, values(t32[b : b + 1], v32[b : b + 1]), strict=True):
            np.testing.assert_allclose(x[b], y[0], rtol=1e-5, atol=1e-5)
    big = np.flatnonzero(np.abs(theta).max((1, 2)) > 100)
    for b in [*big[:3], 0]:
        ref = arborescence_family(theta[b], 0, single_root)
        np.testing.assert_allclose(together[0][b], ref.log_partition, rtol=1e-6)
        np.testing.assert_allclose(together[1][b], ref.marginals, atol=1e-5)


def _assert_marginals_and_hvp_match_pyro_float64(theta, v, root, single_root):
    """numpyro_sst's arborescence marginals and their Hessian-vector product along ``v`` of float32 ``theta`` against
    pyro_sst's in float64 on the same rounded scores (marginals to 1e-5, the product to 1e-4 of its largest entry)."""
    marginals = lambda t: N.arborescence_marginals(t, root, single_root)  # noqa: E731
    mu, hvp = jax.jvp(marginals, (jnp.asarray(theta),), (jnp.asarray(v),))
    t64 = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    expected_mu = P.arborescence_marginals(t64, root, single_root)
    (expected_hvp,) = torch.autograd.grad((expected_mu * torch.tensor(v, dtype=torch.float64)).sum(), t64)
    np.testing.assert_allclose(mu, expected_mu.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(hvp, expected_hvp.numpy(), atol=1e-4 * max(1.0, float(expected_hvp.abs().max())))


@pytest.mark.parametrize("single_root", [False, True])
def test_log_space_elimination_in_shrinking_runs_matches_pyro(single_root):
    """n = 24: at spreads of 1e4 (float32, every element in log space) the log-partition, the marginals and the
    Hessian-vector product match pyro_sst in float64, and so does the samplers' elimination (three runs, on 24, 16
    and 8 nodes); 4000 exact samples of a graph at logit scale 1 are arborescences whose edge frequencies match its
    marginals within the sampling noise."""
    from numpyro_sst.ops.matrix_tree import _logarithmic_runs, directed_log_weights, eliminate

    n = 24
    assert len(_logarithmic_runs(n, 4)) == 3
    rng = np.random.default_rng(11)
    theta = (1e4 * rng.normal(size=(3, n, n))).astype(np.float32)
    v = rng.normal(size=(3, n, n)).astype(np.float32)
    _assert_marginals_and_hvp_match_pyro_float64(theta, v, 2, single_root)
    log_z = N.arborescence_log_partition(jnp.asarray(theta), 2, single_root)
    expected_log_z = P.arborescence_log_partition(torch.tensor(theta, dtype=torch.float64), 2, single_root)
    np.testing.assert_allclose(log_z, expected_log_z.numpy(), rtol=1e-6)
    samplers_log_z = eliminate(directed_log_weights(jnp.asarray(theta), 2), 2, single_root).log_z
    np.testing.assert_allclose(samplers_log_z, log_z, rtol=1e-6)
    logits = rng.normal(size=(n, n)).astype(np.float32)
    x = np.asarray(N.sample_arborescence(KEY, jnp.asarray(logits), 2, single_root, (4000,)))
    free = ~np.eye(n, dtype=bool)
    free[:, 2] = False
    assert (x.sum(-2)[:, free.any(0)] == 1).all() and (x[:, ~free] == 0).all()  # one parent each, none for the root
    if single_root:
        assert (x[:, 2].sum(-1) == 1).all()
    expected = P.arborescence_marginals(torch.tensor(logits, dtype=torch.float64), 2, single_root).numpy()
    assert np.abs(x.mean(0) - expected).max() < 0.04  # 5 standard deviations of a frequency of 4000 draws


def test_float32_single_root_relaxation_takes_the_linear_elimination():
    """Single-root arborescences at a relaxed sample's spread ((logits + Gumbel) / 0.5, float32 without x64): the
    linear elimination takes every element (the product of its pivots is Z_1 itself), and the marginals and their
    Hessian-vector product match pyro_sst in float64 on the same rounded scores."""
    from numpyro_sst.ops.matrix_tree import _blocked, _prepared, directed_log_weights

    rng = np.random.RandomState(5)
    theta = ((rng.normal(size=(64, 12, 12)) + rng.gumbel(size=(64, 12, 12))) / 0.5).astype(np.float32)
    v = rng.normal(size=(64, 12, 12)).astype(np.float32)
    X, _ = _prepared(directed_log_weights(jnp.asarray(theta), 0), 0)
    assert bool(_blocked(X, True, reverse=False)[1].all())
    _assert_marginals_and_hvp_match_pyro_float64(theta, v, 0, True)


@pytest.mark.parametrize("scale", [1.0, 30.0, 1000.0])
@pytest.mark.parametrize("d,k", [(33, 10), (200, 150)])
def test_subset_marginals_float32_match_pyro_float64(d, k, scale):
    """Without x64 the passes run in float32: every coefficient is a probability, so the marginals keep
    float32's relative precision at any spread (checked against pyro_sst in float64 on the same rounded logits)."""
    theta = (np.random.RandomState(3).normal(size=(3, d)) * scale).astype(np.float32)
    mu = N.subset_marginals(jnp.asarray(theta), k)
    expected = P.subset_marginals(torch.tensor(theta, dtype=torch.float64), k).numpy()
    np.testing.assert_allclose(mu, expected, atol=100 * np.finfo(np.float32).eps)
    np.testing.assert_allclose(mu.sum(-1), k, rtol=100 * np.finfo(np.float32).eps)


# ------------------------------------------------------------------------------------------ solvers
def test_solvers_under_jit_and_vmap_match_eager():
    w = jax.random.normal(KEY, (4, 6, 6))
    for solve in (N.max_spanning_tree, N.max_assignment, lambda x: N.max_arborescence(x, 1)):
        eager = solve(w)
        np.testing.assert_array_equal(jax.jit(solve)(w), eager)
        np.testing.assert_array_equal(jax.vmap(solve)(w), eager)


def test_solvers_under_jit_leave_infeasible_elements_nan_and_the_rest_exact():
    """A batch of 300 (Chu-Liu-Edmonds moves its slowest elements to a batch of 75; the Hungarian elements each go
    at their own pace): under jit an element with no finite structure is NaN, the others are what each gives
    alone."""
    w = np.random.RandomState(3).normal(size=(300, 7, 7)).astype(np.float32)
    w[5, :, 3] = -np.inf  # no edge into node 3, no entry in column 3
    for solve in (N.max_assignment, lambda x: N.max_arborescence(x, 0)):
        x = np.asarray(jax.jit(solve)(jnp.asarray(w)))
        assert np.isnan(x[5]).all() and not np.isnan(np.delete(x, 5, 0)).any()
        for b in (0, 1, 150, 299):
            np.testing.assert_array_equal(x[b], np.asarray(solve(jnp.asarray(w[b]))))


def test_bad_input_raises_value_error_naming_the_argument():
    """(The tree ops' checks: test_tree_ops.py, on both backends.)"""
    with pytest.raises(ValueError, match="k must be an int"):
        N.subset_marginals(jnp.zeros(4), 5)
    with pytest.raises(ValueError, match="float32 or float64"):
        N.subset_marginals(jnp.zeros(4, jnp.int32), 2)
    with pytest.raises(ValueError, match="no assignment"):
        N.max_assignment(jnp.full((3, 3), -jnp.inf))
    with pytest.raises(ValueError, match="n_iters"):
        N.sinkhorn(jnp.zeros((3, 3)), n_iters=0)


def test_two_batched_matrix_tree_calls_in_one_program_finish():
    # jaxlib 0.10.0-0.11.0 deadlock here on a 2-core CPU (8 runs of 8); run apart so a hang fails, not stalls.
    program = (
        "import jax, jax.numpy as jnp, numpy as np, numpyro_sst.ops as N\n"
        "t = jnp.asarray(np.random.RandomState(3).normal(size=(20000, 6, 6)), jnp.float32)\n"
        "f = jax.jit(lambda t: N.spanning_tree_log_partition(t) + N.spanning_tree_marginals(2 * t).sum((-2, -1)))\n"
        "f(t).block_until_ready(); f(t).block_until_ready()\n"
        "key = jax.random.PRNGKey(0)\n"
        "N.sample_arborescence(key, t[0], 0, False, (20000,)).block_until_ready()\n"
    )
    subprocess.run([sys.executable, "-c", program], check=True, timeout=120)


def test_float32_singular_minor_in_a_large_batch_is_exact():
    # Element 3372 has a float32-singular Laplacian minor (a pair of nodes cut off by underflow), in a batch
    # of 20000 (where XLA's CPU max can skip NaN rows, so a NaN-propagating check would not see it).
    rng = np.random.RandomState(0)
    theta = rng.normal(size=(5, 5)).astype(np.float32)
    scores = (theta + rng.gumbel(size=(20000, 5, 5)).astype(np.float32)) / 0.1
    mu = np.asarray(N.spanning_tree_marginals(jnp.asarray(scores)))
    assert np.isfinite(mu).all()
    reference = P.spanning_tree_marginals(torch.tensor(scores[3370:3375], dtype=torch.float64)).numpy()
    np.testing.assert_allclose(mu[3370:3375], reference, atol=1e-5)
    x = N.sample_spanning_tree(KEY, jnp.asarray(scores[3372]), (2000,))
    np.testing.assert_allclose(np.asarray(x).mean(0), reference[2], atol=0.05)


# ------------------------------------------------------------------------------------------ samplers
def test_samplers_are_deterministic_per_key_and_jittable():
    theta = jax.random.normal(KEY, (3, 5, 5))
    a = N.sample_spanning_tree(KEY, theta, (4,))
    np.testing.assert_array_equal(a, N.sample_spanning_tree(KEY, theta, (4,)))
    np.testing.assert_array_equal(a, jax.jit(lambda k, t: N.sample_spanning_tree(k, t, (4,)))(KEY, theta))
    assert not np.array_equal(a, N.sample_spanning_tree(jax.random.PRNGKey(1), theta, (4,)))


# ------------------------------------------------------------------------------------------ gradients
def _enumerated_hvp(theta, v):
    """Cov_q(x, <v, x>) over every arborescence rooted at 0: the exact Hessian-vector product of A."""
    ref = arborescence_family(theta)
    x = ref.support.reshape(len(ref.support), -1)
    scores = x @ np.where(np.eye(4, dtype=bool) | (np.arange(4) == 0), 0, v).reshape(-1)
    return ((ref.probs * scores) @ x - ref.marginals.reshape(-1) * (ref.probs @ scores)).reshape(theta.shape)


@pytest.mark.parametrize("scale", [40.0, 400.0])
def test_marginal_tangents_match_enumeration_at_large_spreads(scale, x64):
    """Forward and reverse mode of the marginals against the exact HVP at logit spreads of 40 and 400; pyro_sst's
    backward too."""
    theta = np.random.RandomState(1).normal(size=(4, 4)) * scale
    v = np.random.RandomState(2).normal(size=(4, 4))
    expected = _enumerated_hvp(theta, v)
    tangent = jax.jvp(N.arborescence_marginals, (f64(theta),), (f64(v),))[1]
    np.testing.assert_allclose(tangent, expected, atol=1e-6)
    # Reverse mode transposes the tangent formula, which loses a little more (cond x eps) than pyro_sst's backward.
    cotangent = jax.grad(lambda t: (N.arborescence_marginals(t) * f64(v)).sum())(f64(theta))
    np.testing.assert_allclose(cotangent, expected, atol=5e-6)
    theta_t = torch.tensor(theta, requires_grad=True)
    (P.arborescence_marginals(theta_t) * torch.tensor(v)).sum().backward()
    np.testing.assert_allclose(theta_t.grad.numpy(), expected, atol=1e-8)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_check_grads_relaxations(k, x64):
    theta = f64(np.random.RandomState(k).normal(size=(2, 7)))
    for name in ("euclidean", "categorical_entropy", "binary_entropy"):
        relaxed = jax.jit(lambda t, name=name: N.relaxed_top_k(t, k, name))
        check_grads(relaxed, (theta,), order=1, modes=["rev"], eps=1e-6)


def test_check_grads_sinkhorn_and_permanent(x64):
    theta = f64(np.random.RandomState(5).normal(size=(2, 4, 4)))
    check_grads(jax.jit(lambda t: N.sinkhorn(t, 200, 1e-12)[0]), (theta,), order=1, modes=["rev"])
    check_grads(jax.jit(lambda t: N.sinkhorn(t, 300, 1e-12, "unrolled")[0]), (theta,), order=1, modes=["fwd", "rev"])
    check_grads(jax.jit(N.log_permanent), (theta,), order=2, modes=["fwd", "rev"])


def test_relaxations_match_pyro(x64):
    rng = np.random.RandomState(6)
    v = rng.normal(size=(3, 9)) * 2
    for name in N.RELAXATIONS:
        expected = P.relaxed_top_k(torch.tensor(v), 4, name).numpy()
        np.testing.assert_allclose(N.relaxed_top_k(f64(v), 4, name), expected, atol=1e-10)


def test_low_temperature_float32_is_finite():
    """Logit spreads of 100 and t = 0.01: finite values and gradients for every relaxation (float32)."""
    key_tree, key_set = jax.random.split(KEY)
    scores = jax.random.normal(key_tree, (4, 8, 8)) * 100 / 0.01
    grads = jax.grad(lambda s: (N.spanning_tree_marginals(s) * jnp.arange(64.0).reshape(8, 8)).sum())(scores)
    assert bool(jnp.isfinite(grads).all())
    scores = jax.random.normal(key_set, (4, 50)) * 100 / 0.01
    for name in N.RELAXATIONS:
        value = jax.value_and_grad(lambda s, name=name: (N.relaxed_top_k(s, 7, name) * jnp.arange(50.0)).sum())
        x, grad = value(scores)
        assert bool(jnp.isfinite(x)) and bool(jnp.isfinite(grad).all())
