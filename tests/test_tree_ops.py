"""pyro_sst.ops for trees against brute force, networkx, scipy and Pyro."""

import math

import networkx as nx
import numpy as np
import pyro.distributions as pdist
import pytest
import torch
from reference import arborescence_family, spanning_tree_family
from scipy.sparse.csgraph import minimum_spanning_tree

from pyro_sst import ops

ROOTS = [(0, False), (2, False), (0, True), (3, True)]


def random_logits(n, scale=2.0, seed=0, batch=(), dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(batch + (n, n), generator=g, dtype=dtype)


def symmetric(logits):
    return ops.symmetrize_upper(logits)


@pytest.mark.parametrize("n", [2, 3, 5, 6])
def test_spanning_tree_log_partition_and_marginals_match_enumeration(n):
    theta = symmetric(random_logits(n, seed=n))
    ref = spanning_tree_family(theta.numpy())
    assert ops.spanning_tree_log_partition(theta).item() == pytest.approx(ref.log_partition, abs=1e-10)
    np.testing.assert_allclose(ops.spanning_tree_marginals(theta).numpy(), ref.marginals, atol=1e-8)


@pytest.mark.parametrize("root,single_root", ROOTS)
def test_arborescence_log_partition_and_marginals_match_enumeration(root, single_root):
    theta = random_logits(5, seed=root + 10 * single_root)
    ref = arborescence_family(theta.numpy(), root, single_root)
    log_z = ops.arborescence_log_partition(theta, root, single_root)
    assert log_z.item() == pytest.approx(ref.log_partition, abs=1e-10)
    mu = ops.arborescence_marginals(theta, root, single_root)
    np.testing.assert_allclose(mu.numpy(), ref.marginals, atol=1e-8)


def test_log_partition_matches_networkx_and_pyro():
    n = 7
    theta = symmetric(random_logits(n, seed=3))
    G = nx.Graph()
    for i in range(n):
        for j in range(i + 1, n):
            G.add_edge(i, j, weight=float(np.exp(float(theta[i, j]))))
    ours = ops.spanning_tree_log_partition(theta).item()
    assert ours == pytest.approx(np.log(nx.number_of_spanning_trees(G, weight="weight")), rel=1e-10)
    pyro_tree = pdist.SpanningTree(ops.matrix_to_edge_logits(theta))
    assert ours == pytest.approx(pyro_tree.log_partition_function.item(), rel=1e-10)
    directed = random_logits(n, seed=4)
    D = nx.DiGraph()
    for i in range(n):
        for j in range(n):
            if i != j:
                D.add_edge(i, j, weight=float(np.exp(float(directed[i, j]))))
    for root in (0, 4):
        expected = np.log(nx.number_of_spanning_trees(D, root=root, weight="weight"))
        assert ops.arborescence_log_partition(directed, root).item() == pytest.approx(expected, rel=1e-10)


def test_batched_marginals_match_unbatched():
    theta = random_logits(6, batch=(3, 2), seed=5)
    mu = ops.arborescence_marginals(theta, 1)
    for idx in np.ndindex(3, 2):
        torch.testing.assert_close(mu[idx], ops.arborescence_marginals(theta[idx], 1))
    log_z = ops.spanning_tree_log_partition(symmetric(theta))
    assert log_z.shape == (3, 2)


@pytest.mark.parametrize("root,single_root", ROOTS)
def test_gradcheck_marginals_custom_backward(root, single_root):
    theta = random_logits(5, seed=7, batch=(2,)).requires_grad_()
    torch.autograd.gradcheck(lambda t: ops.arborescence_marginals(t, root, single_root), (theta,))
    torch.autograd.gradgradcheck(lambda t: ops.arborescence_log_partition(t, root, single_root), (theta,))


def test_gradcheck_spanning_tree():
    theta = random_logits(5, seed=8).requires_grad_()
    torch.autograd.gradcheck(ops.spanning_tree_marginals, (theta,))
    torch.autograd.gradgradcheck(ops.spanning_tree_log_partition, (theta,))


def test_log_partition_gradient_is_marginals():
    theta = symmetric(random_logits(6, seed=9)).requires_grad_()
    (grad,) = torch.autograd.grad(ops.spanning_tree_log_partition(theta), theta)
    mu = ops.spanning_tree_marginals(theta.detach())
    torch.testing.assert_close(grad.triu(1), mu.triu(1))


@pytest.mark.parametrize("root,single_root", [(0, False), (2, True)])
def test_log_space_fallback_is_exact_for_huge_spreads(root, single_root):
    """Spreads of 10^3 make the scaled Laplacian singular; the fallback stays exact."""
    theta = random_logits(5, scale=300.0, seed=11)
    ref = arborescence_family(theta.numpy(), root, single_root)
    assert ops.arborescence_log_partition(theta, root, single_root).item() == pytest.approx(
        ref.log_partition, rel=1e-12
    )
    np.testing.assert_allclose(ops.arborescence_marginals(theta, root, single_root).numpy(), ref.marginals, atol=1e-8)
    sym = symmetric(theta)
    np.testing.assert_allclose(
        ops.spanning_tree_marginals(sym).numpy(), spanning_tree_family(sym.numpy()).marginals, atol=1e-8
    )


def test_fallback_gradient_matches_finite_differences():
    theta = random_logits(4, scale=60.0, seed=12).requires_grad_()
    # Scale 60 in float64 triggers the fallback for some entries; gradcheck the whole map.
    torch.autograd.gradcheck(lambda t: ops.arborescence_marginals(t / 0.3, 0), (theta,), atol=1e-6)


def test_float32_extreme_spread_is_finite():
    """Logit spread 60, temperature 0.05, n=200, batch 16: finite values and gradients."""
    g = torch.Generator().manual_seed(0)
    logits = (60 * torch.rand(16, 200, 200, generator=g)).requires_grad_()
    gumbel = -torch.log(-torch.log(torch.rand(16, 200, 200, generator=g)))
    mu = ops.spanning_tree_marginals((logits + gumbel) / 0.05)
    assert torch.isfinite(mu).all()
    torch.testing.assert_close(mu.triu(1).sum((-2, -1)), torch.full((16,), 199.0), atol=1e-2, rtol=0)
    (mu * torch.randn(mu.shape, generator=g)).sum().backward()
    assert torch.isfinite(logits.grad).all()


def _networkx_max_weight(theta, directed, root=None):
    n = theta.shape[-1]
    G = nx.DiGraph() if directed else nx.Graph()
    for i in range(n):
        for j in range(n):
            if i != j and (directed or i < j) and j != root:
                G.add_edge(i, j, weight=float(theta[i, j]))
    if directed:
        tree = nx.maximum_spanning_arborescence(G, attr="weight")
    else:
        tree = nx.maximum_spanning_tree(G, weight="weight")
    return sum(d["weight"] for _, _, d in tree.edges(data=True))


def test_max_spanning_tree_matches_networkx_and_scipy():
    theta = symmetric(random_logits(12, batch=(5,), seed=13))
    x = ops.max_spanning_tree(theta)
    for b in range(5):
        ours = (theta[b] * x[b]).triu(1).sum().item()
        assert ours == pytest.approx(_networkx_max_weight(theta[b].numpy(), False), abs=1e-9)
        # scipy minimises; shift weights positive so no edge is dropped as zero.
        shifted = 100.0 - np.triu(theta[b].numpy(), 1)
        assert ours == pytest.approx(100.0 * 11 - minimum_spanning_tree(np.triu(shifted, 1)).sum(), abs=1e-9)


def test_max_arborescence_matches_networkx():
    theta = random_logits(9, batch=(6,), seed=14)
    for root in (0, 5):
        x = ops.max_arborescence(theta, root)
        for b in range(6):
            ours = (theta[b] * x[b]).sum().item()
            assert ours == pytest.approx(_networkx_max_weight(theta[b].numpy(), True, root), abs=1e-9)


@pytest.mark.parametrize("batched", [True, False])
def test_both_chu_liu_edmonds_versions_match_networkx(batched, monkeypatch):
    """The batched tensor version and the NumPy recursion, with ties (integer weights) and absent edges."""
    from pyro_sst.ops import trees

    monkeypatch.setattr(trees, "_BATCHED_ARBORESCENCE_MAX_NODES_ON_CPU", 10**6 if batched else 0)
    g = torch.Generator().manual_seed(21)
    theta = torch.cat([random_logits(16, batch=(4,), seed=22), torch.randint(0, 3, (4, 16, 16), generator=g).double()])
    theta = theta.masked_fill(torch.rand(theta.shape, generator=g) < 0.3, -math.inf)
    for root in (0, 7):
        x = ops.max_arborescence(theta, root)
        assert torch.equal(x.sum(-2), (torch.arange(16) != root).double().expand(8, 16))
        for b in range(8):
            ours = (theta[b] * x[b]).nan_to_num(0.0, 0.0, 0.0).sum().item()
            weights = theta[b].numpy().copy()
            weights[~np.isfinite(weights)] = -1e6  # absent: networkx takes dense graphs here
            assert ours == pytest.approx(_networkx_max_weight(weights, True, root), abs=1e-9)


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("root,single_root", ROOTS)
def test_max_arborescence_matches_enumeration(root, single_root, batched, monkeypatch):
    from pyro_sst.ops import trees

    monkeypatch.setattr(trees, "_BATCHED_ARBORESCENCE_MAX_NODES_ON_CPU", 10**6 if batched else 0)
    theta = random_logits(5, batch=(4,), seed=15)
    x = ops.max_arborescence(theta, root, single_root)
    for b in range(4):
        ref = arborescence_family(theta[b].numpy(), root, single_root)
        assert (theta[b] * x[b]).sum().item() == pytest.approx(ref.max_score, abs=1e-9)


def test_solvers_handle_ties_deterministically():
    theta = torch.zeros(3, 6, 6)
    x = ops.max_spanning_tree(theta)
    assert torch.equal(x[0], x[1]) and x[0].triu(1).sum() == 5
    a = ops.max_arborescence(theta, 2)
    assert torch.equal(a[0], a[2]) and torch.equal(a.sum(-2)[0], (torch.arange(6) != 2).float())


@pytest.mark.parametrize("root,single_root", [(0, False), (1, True)])
def test_exact_arborescence_sampler_frequencies(root, single_root):
    theta = random_logits(4, scale=1.0, seed=16)
    torch.manual_seed(0)
    x = ops.sample_arborescence(theta, root, single_root, (40000,))
    assert arborescence_family(theta.numpy(), root, single_root).total_variation(x.numpy()) < 0.02


def test_exact_spanning_tree_sampler_frequencies_batched():
    theta = symmetric(random_logits(4, scale=1.0, seed=17, batch=(2,)))
    torch.manual_seed(1)
    x = ops.sample_spanning_tree(theta, (40000,))
    assert x.shape == (40000, 2, 4, 4)
    for b in range(2):
        assert spanning_tree_family(theta[b].numpy()).total_variation(x[:, b].numpy()) < 0.02


def test_sampler_is_exact_for_each_batch_element_at_its_own_spread():
    """Element 0 at logit spread 1, element 1 at spread 40, in one call."""
    theta = symmetric(random_logits(5, scale=1.0, seed=3, batch=(2,)) * torch.tensor([1.0, 40.0])[:, None, None])
    torch.manual_seed(2)
    x = ops.sample_spanning_tree(theta, (20000,))
    for b, bound in ((0, 0.045), (1, 1e-3)):  # 125 trees: sampling noise in TV is ~0.03 at 20000 draws
        assert spanning_tree_family(theta[b].numpy()).total_variation(x[:, b].numpy()) < bound


def test_sampler_is_deterministic_for_fixed_seed():
    theta = random_logits(6, seed=18)
    torch.manual_seed(3)
    a = ops.sample_spanning_tree(theta, (5,))
    torch.manual_seed(3)
    b = ops.sample_spanning_tree(theta, (5,))
    assert torch.equal(a, b)


def test_pyro_layout_round_trip():
    n = 6
    edge_logits = torch.randn(n * (n - 1) // 2, dtype=torch.float64)
    matrix = ops.edge_logits_to_matrix(edge_logits)
    torch.testing.assert_close(ops.matrix_to_edge_logits(matrix), edge_logits)
    pyro_tree = pdist.SpanningTree(edge_logits)
    edges = pyro_tree.sample()
    x = ops.edges_to_matrix(edges, n)
    assert torch.equal(ops.matrix_to_edges(x), edges)
    expected = pyro_tree.log_prob(edges).item()
    ours = (matrix * x).triu(1).sum() - ops.spanning_tree_log_partition(matrix)
    assert ours.item() == pytest.approx(expected, rel=1e-10)


def test_enumeration_counts_match_reference():
    assert ops.enumerate_spanning_trees(5).shape == (125, 5, 5)
    assert ops.enumerate_arborescences(5, 2).shape == (125, 5, 5)
    theta = random_logits(5, seed=19)
    x = ops.enumerate_arborescences(5, 1, True, dtype=torch.float64)
    ref = arborescence_family(theta.numpy(), 1, True)
    assert len(x) == len(ref.support)
    assert len(set(ref.index_of(x.numpy()))) == len(x)


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="root"):
        ops.arborescence_marginals(torch.zeros(4, 4), root=4)
    with pytest.raises(ValueError, match="logits"):
        ops.arborescence_marginals(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="edge_logits"):
        ops.edge_logits_to_matrix(torch.zeros(5))
