"""A hard low-temperature regime (t = 0.05, logit spread 10, n = 30, float32) for every structure: exact values, finite
gradients. Tree marginals (both backends) are checked against the matrix-tree theorem in 160-digit arithmetic
(mpmath), which no float inverse reaches here (the scaled Laplacians have condition numbers near e^200)."""

import math

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
import torch

import numpyro_sst.ops as numpyro_ops
from pyro_sst import GumbelSinkhorn, RelaxedArborescence, RelaxedSpanningTree, RelaxedTopK, ops

N, T, SPREAD = 30, 0.05, 10.0


def _utilities(shape, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = SPREAD * torch.rand(shape, generator=g, dtype=dtype)
    gumbel = -torch.log(-torch.log(torch.rand(shape, generator=g, dtype=dtype)))
    return logits, (logits + gumbel) / T


def _exact_arborescence_marginals(theta, root, single_root):
    """Marginals of directed log-weights by the (Koo) matrix-tree theorem, in 160-digit arithmetic."""
    n = theta.shape[-1]
    with mpmath.workdps(160):
        w = [
            [mpmath.e ** mpmath.mpf(float(theta[i, j])) if i != j and j != root else 0 for j in range(n)]
            for i in range(n)
        ]
        nodes = [j for j in range(n) if j != root]
        anchor = nodes[0]
        M = mpmath.matrix(n - 1, n - 1)
        for a, i in enumerate(nodes):
            for b, j in enumerate(nodes):
                if single_root and i == anchor:
                    M[a, b] = w[root][j]
                elif i == j:
                    M[a, b] = sum(w[k][j] for k in range(n) if k != root or not single_root)
                else:
                    M[a, b] = -w[i][j]
        C = (M**-1).T
        pos = {j: a for a, j in enumerate(nodes)}
        mu = np.zeros((n, n))
        for i in range(n):
            for j in nodes:
                if i == j:
                    continue
                if single_root:
                    grad = (
                        C[pos[anchor], pos[j]]
                        if i == root
                        else ((C[pos[j], pos[j]] if j != anchor else 0) - (C[pos[i], pos[j]] if i != anchor else 0))
                    )
                else:
                    grad = C[pos[j], pos[j]] - (C[pos[i], pos[j]] if i != root else 0)
                mu[i, j] = float(w[i][j] * grad)
    return mu


def _pyro_marginals(theta, root, single_root, spanning_tree):
    """``(float32 marginals, float64 marginals)`` of float32 ``theta`` by pyro_sst."""
    theta = torch.as_tensor(theta)
    if spanning_tree:
        return ops.spanning_tree_marginals(theta).numpy(), ops.spanning_tree_marginals(theta.double()).numpy()
    marginals = lambda t: ops.arborescence_marginals(t, root, single_root).numpy()  # noqa: E731
    return marginals(theta), marginals(theta.double())


def _jax_marginals(theta, root, single_root, spanning_tree):
    """The same by numpyro_sst: float32 as JAX runs by default (30 nodes are four panels there), float64 under x64."""

    def marginals(t):
        if spanning_tree:
            return np.asarray(numpyro_ops.spanning_tree_marginals(t))
        return np.asarray(numpyro_ops.arborescence_marginals(t, root, single_root))

    mu32 = marginals(jnp.asarray(theta, jnp.float32))
    with jax.enable_x64(True):
        return mu32, marginals(jnp.asarray(np.asarray(theta, np.float64)))


BACKENDS = {"pyro_sst": _pyro_marginals, "numpyro_sst": _jax_marginals}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("root,single_root", [(0, False), (4, True)])
def test_arborescence_marginals_at_low_temperature_are_exact(root, single_root, backend):
    _, theta = _utilities((3, N, N), seed=1)
    mu, mu64 = BACKENDS[backend](theta.numpy(), root, single_root, spanning_tree=False)
    assert mu.dtype == np.float32
    # One element in 160 digits (a second each); the float64 path covers the batch.
    np.testing.assert_allclose(mu[0], _exact_arborescence_marginals(theta[0], root, single_root), atol=1e-4)
    np.testing.assert_allclose(mu, mu64, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_spanning_tree_marginals_at_low_temperature_are_exact(backend):
    _, theta = _utilities((3, N, N), seed=2)
    theta = ops.symmetrize_upper(theta)
    mu, mu64 = BACKENDS[backend](theta.numpy(), 0, False, spanning_tree=True)
    directed = _exact_arborescence_marginals(theta[0], 0, False)
    np.testing.assert_allclose(mu[0], directed + directed.T, atol=1e-4)
    np.testing.assert_allclose(mu, mu64, atol=1e-4)


@pytest.mark.parametrize(
    "make",
    [
        lambda x: RelaxedSpanningTree(x, T),
        lambda x: RelaxedArborescence(x, T, root=3),
        lambda x: RelaxedArborescence(x, T, root=0, single_root=True),
    ],
)
def test_relaxed_trees_at_low_temperature_match_float64_with_finite_gradients(make):
    logits, _ = _utilities((4, N, N), seed=3)
    logits.requires_grad_()
    d32, d64 = make(logits), make(logits.detach().double())
    utilities = d32.sample_utilities()
    x32, x64 = d32.relax(utilities), d64.relax(utilities.double())
    torch.testing.assert_close(x32.double(), x64, atol=1e-4, rtol=0)
    (x32 * torch.randn_like(x32)).sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_top_k_at_low_temperature_matches_float64_with_finite_gradients():
    logits, _ = _utilities((4, N), seed=4)
    logits.requires_grad_()
    for relaxation in ("exp_family", "euclidean", "categorical_entropy", "binary_entropy"):
        d = RelaxedTopK(logits, 5, T, relaxation=relaxation)
        utilities = d.sample_utilities()
        x32 = d.relax(utilities)
        x64 = RelaxedTopK(logits.detach().double(), 5, T, relaxation=relaxation).relax(utilities.double())
        torch.testing.assert_close(x32.double(), x64, atol=1e-4, rtol=0)
        (x32 * torch.randn_like(x32)).sum().backward()
        assert torch.isfinite(logits.grad).all()


def test_sinkhorn_at_low_temperature_matches_float64_with_finite_gradients():
    logits, _ = _utilities((4, N, N), seed=5)
    logits.requires_grad_()
    d = GumbelSinkhorn(logits, T, n_iters=2000, tol=1e-5)
    utilities = d.sample_utilities()
    x32 = d.relax(utilities)
    x64 = GumbelSinkhorn(logits.detach().double(), T, n_iters=2000, tol=1e-5).relax(utilities.double())
    torch.testing.assert_close(x32.double(), x64, atol=1e-3, rtol=0)
    (x32 * torch.randn_like(x32)).sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_elimination_backward_matches_finite_differences_at_low_temperature():
    """float64 gradcheck of the marginals where every element takes the elimination path."""
    g = torch.Generator().manual_seed(6)
    theta = (SPREAD * torch.rand(2, 6, 6, generator=g, dtype=torch.float64) / T).requires_grad_()
    for root, single_root in [(0, False), (2, True)]:
        torch.autograd.gradcheck(
            lambda t, r=root, s=single_root: ops.arborescence_marginals(t, r, s), (theta,), atol=1e-6
        )
    assert math.isfinite(ops.spanning_tree_log_partition(theta).sum().item())
