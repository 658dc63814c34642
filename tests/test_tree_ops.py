"""The tree ops of both backends (the ``backend`` fixture, float64) against brute-force enumeration, networkx, scipy
and Pyro's own ``SpanningTree``: log-partitions, marginals and their derivatives, the maximum-weight solvers, the
exact samplers, the edge layouts and the argument checks. What only one backend has (pyro_sst's NumPy Chu-Liu-Edmonds
for large graphs on the CPU; numpyro_sst under ``jit`` and ``vmap``) is tested beside it."""

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


def random_logits(n, scale=2.0, seed=0, batch=()):
    """Seeded normal ``batch + (n, n)`` logits: a float64 NumPy array."""
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(batch + (n, n), generator=g, dtype=torch.float64).numpy()


def symmetric(logits):
    """``ops.symmetrize_upper`` of NumPy logits: the upper triangle mirrored, what a spanning tree reads."""
    return ops.symmetrize_upper(torch.from_numpy(logits)).numpy()


# ------------------------------------------------------------------------------------------ exact values


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6])
def test_spanning_tree_log_partition_marginals_and_mode_match_enumeration(backend, n):
    B, theta = backend, symmetric(random_logits(n, seed=n))
    spanning_tree_family(theta).assert_matches(
        *(B.numpy(f(B.array(theta))) for f in (B.ops.spanning_tree_log_partition, B.ops.spanning_tree_marginals)),
        B.numpy(B.ops.max_spanning_tree(B.array(theta))),
    )


@pytest.mark.parametrize("root,single_root", ROOTS)
def test_arborescence_log_partition_marginals_and_mode_match_enumeration(backend, root, single_root):
    B, theta = backend, random_logits(5, seed=root + 10 * single_root)
    arborescence_family(theta, root, single_root).assert_matches(
        *(
            B.numpy(f(B.array(theta), root, single_root))
            for f in (B.ops.arborescence_log_partition, B.ops.arborescence_marginals, B.ops.max_arborescence)
        )
    )


def test_log_partition_matches_networkx_and_pyro(backend):
    B, n = backend, 7
    theta = symmetric(random_logits(n, seed=3))
    G = nx.Graph()
    for i in range(n):
        for j in range(i + 1, n):
            G.add_edge(i, j, weight=float(np.exp(theta[i, j])))
    ours = float(B.ops.spanning_tree_log_partition(B.array(theta)))
    assert ours == pytest.approx(np.log(nx.number_of_spanning_trees(G, weight="weight")), rel=1e-10)
    pyro_tree = pdist.SpanningTree(ops.matrix_to_edge_logits(torch.tensor(theta)))
    assert ours == pytest.approx(pyro_tree.log_partition_function.item(), rel=1e-10)
    directed = random_logits(n, seed=4)
    D = nx.DiGraph()
    for i in range(n):
        for j in range(n):
            if i != j:
                D.add_edge(i, j, weight=float(np.exp(directed[i, j])))
    for root in (0, 4):
        expected = np.log(nx.number_of_spanning_trees(D, root=root, weight="weight"))
        assert float(B.ops.arborescence_log_partition(B.array(directed), root)) == pytest.approx(expected, rel=1e-10)


def test_batched_marginals_match_unbatched(backend):
    B, theta = backend, random_logits(6, batch=(3, 2), seed=5)
    mu = B.numpy(B.ops.arborescence_marginals(B.array(theta), 1))
    for idx in np.ndindex(3, 2):
        np.testing.assert_allclose(mu[idx], B.numpy(B.ops.arborescence_marginals(B.array(theta[idx]), 1)), atol=1e-12)
    assert B.ops.spanning_tree_log_partition(B.array(symmetric(theta))).shape == (3, 2)


@pytest.mark.parametrize("root,single_root", [(0, False), (2, True)])
def test_log_space_elimination_is_exact_for_huge_spreads(backend, root, single_root):
    """Spreads of 10^3: the scaled Laplacian is singular in float64; the elimination stays exact."""
    B, theta = backend, random_logits(5, scale=300.0, seed=11)
    ref = arborescence_family(theta, root, single_root)
    log_z = B.ops.arborescence_log_partition(B.array(theta), root, single_root)
    assert float(log_z) == pytest.approx(ref.log_partition, rel=1e-12)
    mu = B.ops.arborescence_marginals(B.array(theta), root, single_root)
    np.testing.assert_allclose(B.numpy(mu), ref.marginals, atol=1e-8)
    sym = symmetric(theta)
    mu = B.ops.spanning_tree_marginals(B.array(sym))
    np.testing.assert_allclose(B.numpy(mu), spanning_tree_family(sym).marginals, atol=1e-8)


def test_float32_extreme_spread_is_finite(backend):
    """Logit spread 60, temperature 0.05, n = 200, 16 elements, float32: finite marginals that sum to n - 1 and
    finite gradients."""
    B, g = backend, torch.Generator().manual_seed(0)
    logits = 60 * torch.rand(16, 200, 200, generator=g)
    gumbel = -torch.log(-torch.log(torch.rand(16, 200, 200, generator=g)))
    cotangent = torch.randn(logits.shape, generator=g)
    logits, gumbel, cotangent = logits.numpy(), gumbel.numpy(), cotangent.numpy()

    def loss(w, u, c):
        mu = B.ops.spanning_tree_marginals((w + u) / 0.05)
        return (mu * c).sum(), mu

    with B.precision("float32"):
        grad, mu = B.gradient(loss, logits, gumbel, cotangent, dtype="float32", has_aux=True, optimize=True)
    assert mu.dtype == np.float32 and np.isfinite(mu).all()
    np.testing.assert_allclose(np.triu(mu, 1).sum((-2, -1)), 199.0, atol=1e-2, rtol=0)
    assert np.isfinite(grad).all()


# ------------------------------------------------------------------------------------------ derivatives


@pytest.mark.parametrize("root,single_root", ROOTS)
def test_marginals_and_log_partition_derivatives_match_finite_differences(backend, root, single_root):
    B, theta = backend, random_logits(5, seed=7, batch=(2,))
    B.check_derivatives(lambda t: B.ops.arborescence_marginals(t, root, single_root), theta)
    B.check_derivatives(lambda t: B.ops.arborescence_log_partition(t, root, single_root), theta, order=2)


def test_spanning_tree_derivatives_match_finite_differences(backend):
    B, theta = backend, random_logits(5, seed=8)
    B.check_derivatives(B.ops.spanning_tree_marginals, theta)
    B.check_derivatives(B.ops.spanning_tree_log_partition, theta, order=2)


def test_log_partition_gradient_is_marginals(backend):
    B, theta = backend, symmetric(random_logits(6, seed=9))
    grad = B.gradient(B.ops.spanning_tree_log_partition, theta)
    mu = B.numpy(B.ops.spanning_tree_marginals(B.array(theta)))
    np.testing.assert_allclose(np.triu(grad, 1), np.triu(mu, 1), atol=1e-12)


def test_derivatives_at_large_spreads_match_finite_differences(backend):
    """Logits of scale 60 over a temperature of 0.3: several elements take the log-space elimination."""
    B, theta = backend, random_logits(4, scale=60.0, seed=12)
    B.check_derivatives(lambda t: B.ops.arborescence_marginals(t / 0.3, 0), theta, atol=1e-6)


# ------------------------------------------------------------------------------------------ solvers


def _networkx_max_weight(theta, directed, root=None):
    n = theta.shape[-1]
    G = nx.DiGraph() if directed else nx.Graph()
    for i in range(n):
        for j in range(n):
            if i != j and (directed or i < j) and j != root and np.isfinite(theta[i, j]):
                G.add_edge(i, j, weight=float(theta[i, j]))
    if directed:
        tree = nx.maximum_spanning_arborescence(G, attr="weight")
    else:
        tree = nx.maximum_spanning_tree(G, weight="weight")
    return sum(d["weight"] for _, _, d in tree.edges(data=True))


def _score(theta, x):
    """``<theta, x>`` with absent entries (``-inf``, where ``x`` is 0) left out."""
    return float(np.where(x > 0, theta, 0.0).sum())


def test_max_spanning_tree_matches_networkx_and_scipy(backend):
    B, theta = backend, symmetric(random_logits(12, batch=(5,), seed=13))
    x = B.numpy(B.ops.max_spanning_tree(B.array(theta)))
    for b in range(5):
        ours = _score(np.triu(theta[b], 1), x[b])
        assert ours == pytest.approx(_networkx_max_weight(theta[b], False), abs=1e-9)
        # scipy minimises; shift weights positive so no edge is dropped as zero.
        shifted = 100.0 - np.triu(theta[b], 1)
        assert ours == pytest.approx(100.0 * 11 - minimum_spanning_tree(np.triu(shifted, 1)).sum(), abs=1e-9)


def _networkx_max_single_root(theta, root):
    """The best arborescence whose root has one child: the best over the root's children ``c`` of the maximum
    arborescence of the graph whose root keeps only its edge to ``c``."""
    best = -math.inf
    for c in np.flatnonzero(np.isfinite(theta[root])):
        if c != root:
            restricted = theta.copy()
            restricted[root] = np.where(np.arange(len(theta)) == c, theta[root], -math.inf)
            try:
                best = max(best, _networkx_max_weight(restricted, True, root))
            except nx.NetworkXException:  # no arborescence through c alone
                pass
    return best


@pytest.mark.parametrize("root,single_root", [(0, False), (5, False), (5, True)])
def test_max_arborescence_with_absent_edges_matches_networkx(backend, root, single_root):
    B, rng = backend, np.random.RandomState(1)
    theta = random_logits(9, batch=(8,), seed=14)
    theta[rng.uniform(size=theta.shape) < 0.2] = -np.inf
    # every node reachable from the root, whose edges are heavy (so a single root changes the optimum)
    theta[:, root] = np.where(np.isfinite(theta[:, root]), theta[:, root], 0.0) + 3.0
    theta[:, :, root] = 0.0  # the root column is ignored
    x = B.numpy(B.ops.max_arborescence(B.array(theta), root, single_root))
    for b in range(8):
        assert (x[b][~np.isfinite(theta[b])] == 0).all()
        if single_root:
            expected = _networkx_max_single_root(theta[b], root)
        else:
            expected = _networkx_max_weight(theta[b], True, root)
        assert _score(theta[b], x[b]) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("root,single_root", ROOTS)
def test_max_arborescence_matches_enumeration_in_a_batch(backend, root, single_root):
    B, theta = backend, random_logits(5, batch=(4,), seed=15)
    x = B.numpy(B.ops.max_arborescence(B.array(theta), root, single_root))
    for b in range(4):
        assert _score(theta[b], x[b]) == pytest.approx(arborescence_family(theta[b], root, single_root).max_score)


def test_solvers_break_ties_deterministically(backend):
    B, theta = backend, np.zeros((3, 6, 6))
    x = B.numpy(B.ops.max_spanning_tree(B.array(theta)))
    assert (x[0] == x[1]).all() and np.triu(x[0], 1).sum() == 5
    a = B.numpy(B.ops.max_arborescence(B.array(theta), 2))
    assert (a[0] == a[2]).all() and (a.sum(-2)[0] == (np.arange(6) != 2)).all()


def test_batched_chu_liu_edmonds_breaks_ties_the_same_way_in_both_backends():
    """Integer weights tie often; both backends keep, between two contracted nodes, the edge largest in the order
    (penalty, score, -original edge), so they return the same arborescences, single-root ones included. A batch
    of 300: numpyro_sst moves the elements still contracting to a batch of 75 as the others finish."""
    import jax.numpy as jnp

    import numpyro_sst

    theta = torch.randint(0, 3, (300, 12, 12), generator=torch.Generator().manual_seed(23)).double().numpy()
    for root, single_root in ((0, False), (5, True)):
        x = ops.max_arborescence(torch.tensor(theta), root, single_root).numpy()
        y = np.asarray(numpyro_sst.ops.max_arborescence(jnp.asarray(theta, jnp.float32), root, single_root))
        np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------------------------------ samplers


@pytest.mark.parametrize("root,single_root", [(0, False), (1, True)])
def test_exact_arborescence_sampler_frequencies(backend, root, single_root):
    B, theta = backend, random_logits(4, scale=1.0, seed=16)
    x = B.numpy(B.draw(B.ops.sample_arborescence, B.array(theta), root, single_root, (40000,)))
    # an exact sampler's total variation at 40000 draws of up to 64 structures is about 0.015
    assert arborescence_family(theta, root, single_root).total_variation(x) < 0.02


def test_exact_samplers_of_an_empty_batch_and_of_a_single_node(backend):
    B = backend
    assert B.draw(B.ops.sample_spanning_tree, B.array(np.zeros((2, 0, 4, 4))), (3,)).shape == (3, 2, 0, 4, 4)
    assert B.draw(B.ops.sample_arborescence, B.array(np.zeros((0, 4, 4))), 1, True, (3,)).shape == (3, 0, 4, 4)
    np.testing.assert_array_equal(B.numpy(B.draw(B.ops.sample_arborescence, B.array(np.zeros((1, 1))))), [[0.0]])


def test_exact_spanning_tree_sampler_frequencies_batched(backend):
    B, theta = backend, symmetric(random_logits(4, scale=1.0, seed=17, batch=(2,)))
    x = B.numpy(B.draw(B.ops.sample_spanning_tree, B.array(theta), (40000,), seed=1))
    assert x.shape == (40000, 2, 4, 4)
    for b in range(2):
        assert spanning_tree_family(theta[b]).total_variation(x[:, b]) < 0.02


def test_sampler_is_exact_for_each_batch_element_at_its_own_spread(backend):
    """Element 0 at logit spread 1, element 1 at spread 40, in one call."""
    B = backend
    theta = symmetric(random_logits(5, scale=1.0, seed=3, batch=(2,)) * np.array([1.0, 40.0])[:, None, None])
    x = B.numpy(B.draw(B.ops.sample_spanning_tree, B.array(theta), (20000,), seed=2))
    for b, bound in ((0, 0.045), (1, 1e-3)):  # 125 trees: sampling noise in TV is ~0.03 at 20000 draws
        assert spanning_tree_family(theta[b]).total_variation(x[:, b]) < bound


def test_sampler_is_deterministic_for_a_fixed_seed(backend):
    B, theta = backend, random_logits(6, seed=18)

    def draw(seed):
        return B.numpy(B.draw(B.ops.sample_spanning_tree, B.array(theta), (5,), seed=seed))

    assert (draw(3) == draw(3)).all() and not (draw(3) == draw(4)).all()


# ------------------------------------------------------------------------------------------ layouts and checks


def test_edge_layout_round_trip_and_pyro_log_prob(backend):
    B, n = backend, 6
    edge_logits = torch.randn(n * (n - 1) // 2, generator=torch.Generator().manual_seed(20), dtype=torch.float64)
    matrix = B.ops.edge_logits_to_matrix(B.array(edge_logits.numpy()))
    np.testing.assert_array_equal(B.numpy(matrix), ops.edge_logits_to_matrix(edge_logits).numpy())
    np.testing.assert_array_equal(B.numpy(B.ops.matrix_to_edge_logits(matrix)), edge_logits.numpy())
    pyro_tree = pdist.SpanningTree(edge_logits)
    edges = pyro_tree.sample()
    x = B.ops.edges_to_matrix(B.array(edges.numpy(), "int64"), n)
    np.testing.assert_array_equal(B.numpy(B.ops.matrix_to_edges(x)), edges.numpy())
    ours = float((B.numpy(matrix) * B.numpy(x)).sum() / 2 - float(B.ops.spanning_tree_log_partition(matrix)))
    assert ours == pytest.approx(pyro_tree.log_prob(edges).item(), rel=1e-10)


def test_enumerations_match_the_reference(backend):
    B = backend
    assert B.ops.enumerate_spanning_trees(5).shape == (125, 5, 5)
    assert B.ops.enumerate_arborescences(5, 2).shape == (125, 5, 5)
    x = B.numpy(B.ops.enumerate_arborescences(5, 1, True))
    ref = arborescence_family(random_logits(5, seed=19), 1, True)
    assert len(x) == len(ref.support) and len(set(ref.index_of(x.astype(np.float64)))) == len(x)


def test_bad_input_raises_value_error_naming_the_argument(backend):
    B = backend
    with pytest.raises(ValueError, match="root"):
        B.ops.arborescence_marginals(B.array(np.zeros((4, 4))), root=4)
    with pytest.raises(ValueError, match="logits"):
        B.ops.arborescence_marginals(B.array(np.zeros((4, 3))))
    with pytest.raises(ValueError, match="edge_logits"):
        B.ops.edge_logits_to_matrix(B.array(np.zeros(5)))
    with pytest.raises(ValueError, match="do not connect"):
        B.ops.max_spanning_tree(B.array(np.full((3, 3), -math.inf)))
    with pytest.raises(ValueError, match="no spanning tree or arborescence has finite weight"):
        B.ops.arborescence_marginals(B.array(np.full((3, 3), -math.inf)))


# ------------------------------------------------------------------------------------------ pyro_sst only


@pytest.fixture(params=["batched", "recursive"])
def chu_liu_edmonds(request, monkeypatch):
    """pyro_sst's two Chu-Liu-Edmonds implementations in turn: the batched tensor version and the NumPy recursion
    (which it takes on the CPU past a graph size)."""
    from pyro_sst.ops import trees

    batched = request.param == "batched"
    monkeypatch.setattr(trees, "_BATCHED_ARBORESCENCE_MAX_NODES_ON_CPU", 10**6 if batched else 0)


def test_both_chu_liu_edmonds_versions_match_networkx_with_ties(chu_liu_edmonds):
    """Integer weights (ties) and absent edges."""
    g = torch.Generator().manual_seed(21)
    theta = np.concatenate(
        [random_logits(16, batch=(4,), seed=22), torch.randint(0, 3, (4, 16, 16), generator=g).double().numpy()]
    )
    theta[torch.rand(theta.shape, generator=g).numpy() < 0.3] = -math.inf
    for root in (0, 7):
        x = ops.max_arborescence(torch.tensor(theta), root).numpy()
        assert (x.sum(-2) == (np.arange(16) != root)).all()
        for b in range(8):
            weights = np.where(np.isfinite(theta[b]), theta[b], -1e6)  # absent: networkx takes dense graphs here
            assert _score(theta[b], x[b]) == pytest.approx(_networkx_max_weight(weights, True, root), abs=1e-9)


@pytest.mark.parametrize("root,single_root", ROOTS)
def test_both_chu_liu_edmonds_versions_match_enumeration(chu_liu_edmonds, root, single_root):
    theta = random_logits(5, batch=(4,), seed=15)
    x = ops.max_arborescence(torch.tensor(theta), root, single_root).numpy()
    for b in range(4):
        assert _score(theta[b], x[b]) == pytest.approx(arborescence_family(theta[b], root, single_root).max_score)
