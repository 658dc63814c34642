"""A hard low-temperature regime (t = 0.05, logit spread 10, n = 30, float32) for every structure, in both backends:
exact values, finite gradients. Tree marginals are checked against the matrix-tree theorem in 160-digit arithmetic
(mpmath), which no float inverse reaches here (the scaled Laplacians have condition numbers near e^200); relaxed
samples in float32 against the same samples in float64. JAX's float32 runs with float64 disabled, as it does by
default (the tree cores then have no wider dtype to compute in)."""

import math

import mpmath
import numpy as np
import pytest
import torch

from pyro_sst import ops

N, T, SPREAD = 30, 0.05, 10.0


def _draw(shape, seed):
    """``(logits, gumbel)``: float32 NumPy logits uniform in ``[0, SPREAD]`` and standard Gumbel noise."""
    g = torch.Generator().manual_seed(seed)
    logits = SPREAD * torch.rand(shape, generator=g)
    gumbel = -torch.log(-torch.log(torch.rand(shape, generator=g)))
    return logits.numpy(), gumbel.numpy()


def _perturbed(shape, seed):
    """Perturbed logits over the temperature, ``(logits + gumbel) / T``: what a relaxed tree's marginals see."""
    logits, gumbel = _draw(shape, seed)
    return (logits + gumbel) / np.float32(T)


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


def _in_both_dtypes(B, marginals, theta):
    """``marginals`` of ``theta`` (NumPy float32) by backend ``B`` in float32 and in float64."""
    with B.precision("float32"):
        mu32 = B.numpy(marginals(B.array(theta, "float32")))
    with B.precision("float64"):
        return mu32, B.numpy(marginals(B.array(theta.astype(np.float64), "float64")))


@pytest.mark.parametrize("root,single_root", [(0, False), (4, True)])
def test_arborescence_marginals_at_low_temperature_are_exact(backend, root, single_root):
    theta = _perturbed((3, N, N), seed=1)
    mu, mu64 = _in_both_dtypes(backend, lambda t: backend.ops.arborescence_marginals(t, root, single_root), theta)
    assert mu.dtype == np.float32
    # One element in 160 digits (a second each); the float64 path covers the batch.
    np.testing.assert_allclose(mu[0], _exact_arborescence_marginals(theta[0], root, single_root), atol=1e-4)
    np.testing.assert_allclose(mu, mu64, atol=1e-4)


def test_spanning_tree_marginals_at_low_temperature_are_exact(backend):
    theta = ops.symmetrize_upper(torch.as_tensor(_perturbed((3, N, N), seed=2))).numpy()
    mu, mu64 = _in_both_dtypes(backend, backend.ops.spanning_tree_marginals, theta)
    directed = _exact_arborescence_marginals(theta[0], 0, False)
    np.testing.assert_allclose(mu[0], directed + directed.T, atol=1e-4)
    np.testing.assert_allclose(mu, mu64, atol=1e-4)


def _relaxed_in_both_dtypes(B, make, logits, gumbel, atol):
    """The relaxed samples of ``make(B.module, logits)`` at utilities ``logits + gumbel`` match in float32 and
    float64 within ``atol``, and the float32 gradient of a random projection of them is finite and not zero."""
    g = np.random.default_rng(0).normal(size=logits.shape)

    def loss(w):
        return (make(B.module, w).relax(w + B.array(gumbel, "float32")) * B.array(g, "float32")).sum()

    with B.precision("float32"):
        x32 = B.numpy(make(B.module, B.array(logits, "float32")).relax(B.array(logits + gumbel, "float32")))
        grad = B.gradient(loss, logits, dtype="float32")
    with B.precision("float64"):
        u64 = B.array(logits.astype(np.float64) + gumbel, "float64")
        x64 = B.numpy(make(B.module, B.array(logits, "float64")).relax(u64))
    assert x32.dtype == np.float32
    np.testing.assert_allclose(x32, x64, atol=atol, rtol=0)
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0


RELAXED_TREES = {
    "spanning tree": lambda m, x: m.RelaxedSpanningTree(x, T),
    "arborescence": lambda m, x: m.RelaxedArborescence(x, T, root=3),
    "single root": lambda m, x: m.RelaxedArborescence(x, T, root=0, single_root=True),
}


@pytest.mark.parametrize("make", RELAXED_TREES.values(), ids=RELAXED_TREES)
def test_relaxed_trees_at_low_temperature_match_float64_with_finite_gradients(backend, make):
    _relaxed_in_both_dtypes(backend, make, *_draw((4, N, N), seed=3), atol=1e-4)


@pytest.mark.parametrize("relaxation", ["exp_family", "euclidean", "categorical_entropy", "binary_entropy"])
def test_top_k_at_low_temperature_matches_float64_with_finite_gradients(backend, relaxation):
    make = lambda m, x: m.RelaxedTopK(x, 5, T, relaxation=relaxation)  # noqa: E731
    _relaxed_in_both_dtypes(backend, make, *_draw((4, N), seed=4), atol=1e-4)


def test_sinkhorn_at_low_temperature_matches_float64_with_finite_gradients(backend):
    make = lambda m, x: m.GumbelSinkhorn(x, T, n_iters=2000, tol=1e-5)  # noqa: E731
    _relaxed_in_both_dtypes(backend, make, *_draw((4, N, N), seed=5), atol=1e-3)


@pytest.mark.parametrize("root,single_root", [(0, False), (2, True)])
def test_elimination_backward_matches_finite_differences_at_low_temperature(backend, root, single_root):
    """float64 derivatives of the marginals where every element takes the elimination path."""
    B = backend
    logits, _ = _draw((2, 6, 6), seed=6)
    theta = logits.astype(np.float64) / T
    B.check_derivatives(lambda t: B.ops.arborescence_marginals(t, root, single_root), theta, atol=1e-6)
    assert math.isfinite(B.numpy(B.ops.spanning_tree_log_partition(B.array(theta))).sum())
