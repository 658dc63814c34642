"""Adversarial inputs: single-root partition functions, NaN and -inf, tracing, degenerate sizes, errors. The tests
that take ``backend`` run on both (JAX in float64 unless a test says otherwise); tracing, compilation and Pyro's
SVI are pyro_sst's."""

import itertools
import math
import os
import warnings

import numpy as np
import pyro
import pyro.distributions as pdist
import pytest
import torch
from backends import NumPyro, Pyro
from pyro.infer import SVI, JitTrace_ELBO, JitTraceGraph_ELBO
from reference import ExpFamily, arborescence_family, arborescences, k_subsets, spanning_tree_family

from pyro_sst import (
    Arborescence,
    GumbelSinkhorn,
    KSubset,
    RelaxedArborescence,
    RelaxedSpanningTree,
    RelaxedTopK,
    SpanningTree,
    ops,
)

RELAXATIONS = list(ops.RELAXATIONS)
REPRODUCER = [[0.0, 0, 5.5], [160, 0, 179], [-24, 0, 0]]


def randn(*shape, seed=0, scale=1.0):
    """Seeded normal draws: a float64 NumPy array."""
    return scale * torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).numpy()


def trandn(*shape, seed=0, scale=1.0, dtype=torch.float64):
    """The same draws as a torch tensor of ``dtype``."""
    return torch.tensor(randn(*shape, seed=seed, scale=scale), dtype=dtype)


def finite_reference(theta, root=0, single_root=False):
    """Enumeration with -inf logits as absent edges (the reference multiplies 0 * theta)."""
    support = arborescences(theta.shape[-1], root, single_root)
    theta = np.asarray(theta, dtype=np.float64)
    present = (support * np.isinf(theta)).sum((-2, -1)) == 0
    return ExpFamily(support[present], np.where(np.isinf(theta), 0.0, theta))


# ------------------------------------------------------------------ 1. single root with strong root edges


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_single_root_reproducer_matches_enumeration(backend, dtype):
    B, ref = backend, arborescence_family(np.array(REPRODUCER), 1, True)
    # pyro_sst eliminates in float64 whatever the input's dtype; JAX without float64 enabled computes in float32,
    # within the two backends' float32 agreement (1e-5)
    atol = 1e-5 if B is NumPyro and dtype == "float32" else 1e-6
    with B.precision(dtype):
        theta = B.array(REPRODUCER, dtype)
        assert float(B.ops.arborescence_log_partition(theta, 1, True)) == pytest.approx(ref.log_partition, rel=1e-6)
        np.testing.assert_allclose(B.numpy(B.ops.arborescence_marginals(theta, 1, True)), ref.marginals, atol=atol)
        dist = B.module.Arborescence(theta, root=1, single_root=True)
        x = B.sample(dist, (200,))
        assert (B.numpy(x)[:, 1].sum(-1) == 1).all() and B.in_support(dist, x)


@pytest.mark.parametrize("root_shift", [0.0, 25.0, 100.0, 400.0])
@pytest.mark.parametrize("root", [0, 3])
def test_single_root_with_heavy_root_row_matches_enumeration(backend, root_shift, root):
    B, theta = backend, randn(5, 5, seed=int(root_shift) + root, scale=3.0)
    theta[root] += root_shift
    ref = arborescence_family(theta, root, True)
    assert float(B.ops.arborescence_log_partition(B.array(theta), root, True)) == pytest.approx(
        ref.log_partition, rel=1e-10
    )
    np.testing.assert_allclose(
        B.numpy(B.ops.arborescence_marginals(B.array(theta), root, True)), ref.marginals, atol=1e-9
    )
    # float32 at low temperature: every relaxed sample has root out-degree 1.
    with B.precision("float32"):
        dist = B.module.RelaxedArborescence(B.array(theta, "float32"), 0.05, root=root, single_root=True)
        out_degree = B.numpy(B.sample(dist, (64,)))[:, root].sum(-1)
    np.testing.assert_allclose(out_degree, np.ones(64), atol=1e-4, rtol=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_single_root_with_a_child_the_root_alone_can_take_matches_enumeration(backend, dtype):
    """A node that only the root enters must be the root's one child: the linear elimination's pivot without the root
    is 0 there before the last node, and the element is computed in log space; in the same batch, an element
    without such a node, computed on the linear path."""
    B, theta = backend, randn(2, 6, 6, seed=11, scale=3.0)
    theta[0, 1:, 3] = -np.inf  # element 0: node 3 has no in-edge but the root's
    refs = [arborescence_family(np.where(np.isfinite(t), t, -1e4), 0, True) for t in theta]
    atol = 1e-5 if dtype == "float32" else 1e-10
    with B.precision(dtype):
        log_z = B.numpy(B.ops.arborescence_log_partition(B.array(theta, dtype), 0, True))
        mu = B.numpy(B.ops.arborescence_marginals(B.array(theta, dtype), 0, True))
    for b, ref in enumerate(refs):
        assert log_z[b] == pytest.approx(ref.log_partition, rel=atol)
        np.testing.assert_allclose(mu[b], ref.marginals, atol=atol)
    assert mu[0][0, 3] == pytest.approx(1.0, abs=atol)


@pytest.mark.parametrize("single_root", [False, True])
def test_batch_elements_are_independent(backend, single_root):
    """A batch mixing easy elements with ones that need the exact fallback gives the unbatched results."""
    B, hard = backend, np.array(REPRODUCER)
    batch = B.array(np.stack([hard, 0.01 * hard, randn(3, 3, seed=1), 50 * randn(3, 3, seed=2)]))
    for fn in (B.ops.arborescence_log_partition, B.ops.arborescence_marginals):
        together = B.numpy(fn(batch, 1, single_root))
        for b in range(len(batch)):
            np.testing.assert_allclose(together[b], B.numpy(fn(batch[b], 1, single_root)), rtol=1e-12, atol=1e-12)
    logits = B.array(np.stack([randn(6, 6, seed=3), 30 * randn(6, 6, seed=4)]))
    # Newton's batched solves may round differently from unbatched ones (ulps); plain sweeps are equal.
    for backward, atol in [("implicit", 1e-13), ("unrolled", 1e-15)]:
        p = B.numpy(B.ops.sinkhorn(logits, n_iters=500, tol=1e-9, backward=backward)[0])
        for b in range(2):
            single = B.numpy(B.ops.sinkhorn(logits[b], n_iters=500, tol=1e-9, backward=backward)[0])
            np.testing.assert_allclose(p[b], single, rtol=0, atol=atol)
    big = B.array(np.stack([randn(13, 13, seed=5), 5 * randn(13, 13, seed=6)]))
    gamma = B.numpy(B.ops.bethe_log_permanent(big)[1])
    for b in range(2):
        np.testing.assert_allclose(gamma[b], B.numpy(B.ops.bethe_log_permanent(big[b])[1]), rtol=0, atol=1e-15)


# ------------------------------------------------------------------ 2. NaN in, NaN out


def _nan_batch(event_shape):
    logits = randn(2, *event_shape, seed=7)
    logits[0].reshape(-1)[1] = math.nan
    return logits


@pytest.mark.parametrize(
    "make",
    [
        lambda m, x: m.RelaxedSpanningTree(x, 0.5, validate_args=False),
        lambda m, x: m.RelaxedArborescence(x, 0.5, validate_args=False),
        lambda m, x: m.RelaxedArborescence(x, 0.5, root=2, single_root=True, validate_args=False),
        lambda m, x: m.GumbelSinkhorn(x, 0.5, validate_args=False),
    ],
)
def test_nan_logits_give_nan_everywhere_for_matrices(backend, make):
    _check_nan_propagation(backend, make, (5, 5))


@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_nan_logits_give_nan_everywhere_for_subsets(backend, relaxation):
    _check_nan_propagation(
        backend, lambda m, x: m.RelaxedTopK(x, 2, 0.5, relaxation=relaxation, validate_args=False), (6,)
    )


def _check_nan_propagation(B, make, event_shape):
    logits = _nan_batch(event_shape)
    # the same batch with element 0 finite: element 1 must not see the NaN (and the shapes stay those of d)
    d, clean = make(B.module, B.array(logits)), make(B.module, B.array(np.nan_to_num(logits)))
    relaxed, hard = (B.numpy(x) for x in (B.sample(d, (3,)), B.hard_sample(d, (3,))))
    assert np.isnan(B.numpy(d.log_partition)[0]) and np.isnan(B.numpy(d.marginals)[0]).all()
    assert np.isnan(B.numpy(d.mode)[0]).all() and np.isnan(hard[:, 0]).all()
    assert np.isnan(relaxed[:, 0]).all() and np.isnan(B.numpy(d.log_prob(d.mode))[0])
    np.testing.assert_allclose(B.numpy(d.log_partition)[1], B.numpy(clean.log_partition)[1], rtol=1e-12)
    np.testing.assert_array_equal(B.numpy(d.mode)[1], B.numpy(clean.mode)[1])
    np.testing.assert_allclose(relaxed[:, 1], B.numpy(B.sample(clean, (3,)))[:, 1], rtol=1e-12, atol=1e-15)


def test_nan_logits_in_exact_samplers(backend):
    B = backend
    tree = B.sample(B.module.SpanningTree(B.array(_nan_batch((4, 4))), validate_args=False), (5,))
    subset = B.sample(B.module.KSubset(B.array(_nan_batch((6,))), 2, validate_args=False), (5,))
    for x in (B.numpy(tree), B.numpy(subset)):
        assert np.isnan(x[:, 0]).all() and not np.isnan(x[:, 1]).any()


def test_nan_on_ignored_entries_is_ignored(backend):
    B, logits = backend, randn(4, 4, seed=8)
    masked = logits.copy()
    np.fill_diagonal(masked, math.nan)
    masked[3, 0] = math.nan  # lower triangle: not read by spanning trees
    for fn in (B.ops.spanning_tree_log_partition, B.ops.max_spanning_tree):
        np.testing.assert_array_equal(B.numpy(fn(B.array(masked))), B.numpy(fn(B.array(logits))))


# ------------------------------------------------------------------ 3. -inf: absent edges, empty supports


def test_masked_but_connected_graph_is_exact(backend):
    B, theta = backend, randn(5, 5, seed=9)
    theta[0, 3] = theta[1, 3] = theta[2, 4] = theta[4, 1] = -math.inf
    for root, single_root in [(0, False), (0, True), (2, False)]:
        ref = finite_reference(theta, root, single_root)
        log_z = B.ops.arborescence_log_partition(B.array(theta), root, single_root)
        assert float(log_z) == pytest.approx(ref.log_partition)
        mu = B.ops.arborescence_marginals(B.array(theta), root, single_root)
        np.testing.assert_allclose(B.numpy(mu), ref.marginals, atol=1e-10)
        x = B.numpy(B.ops.max_arborescence(B.array(theta), root, single_root))
        assert np.nan_to_num(theta * x, nan=0.0).sum() == pytest.approx(ref.max_score)
        samples = B.draw(B.ops.sample_arborescence, B.array(theta), root, single_root, (20000,))
        assert ref.total_variation(B.numpy(samples)) < 0.03


def test_disconnected_tree_has_log_partition_minus_inf_and_clear_errors(backend):
    B, theta = backend, randn(4, 4, seed=10)
    theta[:, 3] = theta[3, :] = -math.inf  # node 3 has no edge
    theta = B.array(theta)
    assert float(B.ops.spanning_tree_log_partition(theta)) == -math.inf
    assert float(B.ops.arborescence_log_partition(theta, 0)) == -math.inf
    ops = B.ops
    for fn in (ops.spanning_tree_marginals, ops.max_spanning_tree, lambda x: B.draw(ops.sample_spanning_tree, x)):
        with pytest.raises(ValueError, match="spanning tree|finite weight|do not connect"):
            fn(theta)
    for fn in (ops.arborescence_marginals, ops.max_arborescence, lambda x, r: B.draw(ops.sample_arborescence, x, r)):
        with pytest.raises(ValueError, match="arborescence|finite weight|do not connect"):
            fn(theta, 0)
    with pytest.raises(ValueError, match="finite weight"):
        B.sample(B.module.RelaxedSpanningTree(theta, 0.5, validate_args=False))


def test_single_root_infeasible_is_minus_inf(backend):
    """Nodes 1 and 2 can only hang from the root: every arborescence has two root edges."""
    B, theta = backend, randn(4, 4, seed=11)
    theta[1:, 1] = theta[1:, 2] = -math.inf
    assert not ((arborescences(4, 0, True) * np.isinf(theta)).sum((-2, -1)) == 0).any()
    assert float(B.ops.arborescence_log_partition(B.array(theta), 0, True)) == -math.inf
    assert float(B.ops.arborescence_log_partition(B.array(theta), 0, False)) == pytest.approx(
        finite_reference(theta, 0, False).log_partition
    )
    ops = B.ops
    for fn in (ops.arborescence_marginals, ops.max_arborescence, lambda *a: B.draw(ops.sample_arborescence, *a)):
        with pytest.raises(ValueError, match="root|finite weight"):
            fn(B.array(theta), 0, True)


@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_top_k_with_minus_inf_logits(backend, relaxation):
    B, v = backend, randn(3, 8, seed=12)
    v[:, :3] = -math.inf
    for k in (1, 3, 4, 5):
        x = B.numpy(B.ops.relaxed_top_k(B.array(v / 0.3), k, relaxation))
        assert np.isfinite(x).all() and (x[:, :3] == 0).all()
        np.testing.assert_allclose(x.sum(-1), np.full(3, float(k)), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="k=6 exceeds the number of items with logits above -inf"):
        B.ops.relaxed_top_k(B.array(v), 6, relaxation)


def test_k_subset_with_minus_inf_logits(backend):
    B, v = backend, randn(7, seed=13)
    v[[1, 4]] = -math.inf
    present = np.isfinite(v)
    for k in range(8):
        subsets = itertools.combinations(np.flatnonzero(present), k)
        expected = -math.inf if k > 5 else float(np.log(sum(np.exp(v[list(s)].sum()) for s in subsets)))
        assert float(B.ops.log_elementary_symmetric(B.array(v), k)) == pytest.approx(expected, rel=1e-10)
    ref = ExpFamily(k_subsets(5, 3), v[present])
    np.testing.assert_allclose(B.numpy(B.ops.subset_marginals(B.array(v), 3))[present], ref.marginals, atol=1e-12)
    ops = B.ops
    for fn in (ops.subset_marginals, lambda *a: B.draw(ops.sample_k_subset, *a), ops.top_k_mask):
        with pytest.raises(ValueError, match=r"k=6 exceeds the number of items .*\(as few as 5 in some batch element"):
            fn(B.array(v), 6)


# ------------------------------------------------------------------ 4. tracing and compilation


def _trace(fn, example):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.trace(fn, example, check_trace=False)


def test_jit_trace_does_not_freeze_the_fallback():
    easy, hard = trandn(2, 6, 6, seed=14), 400 * trandn(2, 6, 6, seed=15)
    for fn in (
        ops.spanning_tree_marginals,
        ops.spanning_tree_log_partition,
        lambda x: ops.arborescence_marginals(x, 1, True),
        lambda x: ops.arborescence_log_partition(x, 1, True),
        ops.max_spanning_tree,
        lambda x: ops.sinkhorn(x, 1000, 1e-9)[0],
        lambda x: ops.log_elementary_symmetric(x[..., 0], 4),
        lambda x: ops.subset_marginals(x[..., 0], 4),
        lambda x: ops.binary_entropy_top_k(x[..., 0], 4),
    ):
        traced = _trace(fn, easy)
        torch.testing.assert_close(traced(hard), fn(hard), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(traced(easy), fn(easy), rtol=1e-10, atol=1e-10)
    # At logit scale 400 the exact sampler returns the maximum spanning tree (almost surely).
    traced = _trace(lambda x: ops.sample_spanning_tree(x, (3,)), easy)
    assert torch.equal(traced(hard), ops.max_spanning_tree(hard).expand(3, 2, 6, 6))


def test_jit_trace_checks_run_at_call_time():
    traced = _trace(ops.max_spanning_tree, trandn(4, 4, seed=16))
    disconnected = trandn(4, 4, seed=16)
    disconnected[:, 3] = disconnected[3, :] = -math.inf
    with pytest.raises(Exception, match="no spanning tree"):
        traced(disconnected)


GUIDES = [
    (lambda w: RelaxedSpanningTree(w, 0.02), (5, 5)),
    (lambda w: RelaxedSpanningTree(w, 0.5, straight_through=True), (5, 5)),
    (lambda w: RelaxedArborescence(40 * w, 0.02, root=1, single_root=True), (5, 5)),
    (lambda w: GumbelSinkhorn(w, 0.5), (4, 4)),
    (lambda w: GumbelSinkhorn(w, 0.5, backward="implicit"), (4, 4)),
] + [(lambda w, r=r: RelaxedTopK(w, 2, 0.5, relaxation=r), (6,)) for r in RELAXATIONS]


@pytest.mark.parametrize("make,shape", GUIDES)
def test_jit_trace_elbo_with_relaxed_guides(make, shape):
    _run_jit_svi(make, shape, JitTrace_ELBO())


@pytest.mark.parametrize(
    "make,shape",
    [(SpanningTree, (5, 5)), (lambda w: Arborescence(w, single_root=True), (4, 4)), (lambda w: KSubset(w, 3), (6,))],
)
def test_jit_trace_graph_elbo_with_exact_guides(make, shape):
    _run_jit_svi(make, shape, JitTraceGraph_ELBO())


def _in_library(filename):
    return any(f"{os.sep}{package}{os.sep}" in filename for package in ("pyro_sst", "numpyro_sst", "sst_common"))


def _run_jit_svi(make, shape, elbo):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    target = torch.zeros(shape)

    def model():
        x = pyro.sample("x", make(torch.zeros(shape)))
        pyro.sample("y", pdist.Normal(x, 1.0).to_event(len(shape)), obs=target)

    def guide():
        pyro.sample("x", make(pyro.param("w", torch.zeros(shape))))

    with warnings.catch_warnings(record=True) as caught:
        # every TracerWarning that no earlier filter handles is recorded, each time (also resets the registries)
        warnings.filterwarnings("always", category=torch.jit.TracerWarning, append=True)
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), elbo)
        losses = [svi.step() for _ in range(4)]
    assert all(math.isfinite(loss) for loss in losses)
    # the library's trace-time checks do not warn (user code and Pyro's own may)
    ours = [w for w in caught if w.category is torch.jit.TracerWarning and _in_library(w.filename)]
    assert not ours, [f"{w.filename}:{w.lineno}: {w.message}" for w in ours]
    assert torch.isfinite(pyro.param("w")).all() and (pyro.param("w") != 0).any()


@pytest.fixture
def keep_validation_default():
    """Dynamo's first ``torch.compile`` in a process turns distribution validation off process-wide
    (``Distribution.set_default_validate_args(False)``); the tests after this one expect the default."""
    default = torch.distributions.Distribution._validate_args
    yield
    torch.distributions.Distribution.set_default_validate_args(default)


@pytest.mark.parametrize(
    "make,shape",
    [
        (lambda w: RelaxedSpanningTree(w, 0.02), (5, 5)),
        (lambda w: RelaxedArborescence(w, 0.1, single_root=True), (5, 5)),
        (lambda w: RelaxedTopK(w, 2, 0.3), (6,)),
        (lambda w: RelaxedTopK(w, 2, 0.3, relaxation="binary_entropy"), (6,)),
        (lambda w: GumbelSinkhorn(w, 0.3), (4, 4)),
    ],
)
def test_torch_compile_matches_eager(make, shape, keep_validation_default):
    logits = trandn(*shape, seed=17, scale=20.0, dtype=torch.float32)
    utilities = logits + trandn(*shape, seed=18, dtype=torch.float32)

    def step(w, u):
        d = make(w)
        hard = d.solve(u)
        return d.relax(u), hard, d.log_prob(hard)

    def run(fn):
        w = logits.clone().requires_grad_()
        soft, hard, log_prob = fn(w, utilities)
        ((soft * utilities).sum() + log_prob).backward()
        return soft, hard, log_prob, w.grad

    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = run(torch.compile(step, backend="aot_eager"))
    for a, b in zip(got, run(step), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ 5. degenerate sizes


@pytest.mark.parametrize("d,k", [(9, 5), (9, 7), (9, 8), (9, 9), (9, 0), (2, 1), (1, 1), (1, 0)])
def test_complement_and_trivial_k_match_enumeration(backend, d, k):
    B, theta = backend, randn(2, d, seed=d + k, scale=3.0)
    log_z, mu = (B.numpy(f(B.array(theta), k)) for f in (B.ops.log_elementary_symmetric, B.ops.subset_marginals))
    for b in range(2):
        ref = ExpFamily(k_subsets(d, k), theta[b])
        assert log_z[b] == pytest.approx(ref.log_partition, abs=1e-10)
        np.testing.assert_allclose(mu[b], ref.marginals, atol=1e-10)
    if math.comb(d, k) > 1:
        samples = B.numpy(B.draw(B.ops.sample_k_subset, B.array(theta[0]), k, (20000,)))
        assert ExpFamily(k_subsets(d, k), theta[0]).total_variation(samples) < 0.03
    if B is Pyro:  # (numpyro_sst's derivatives: test_numpyro_ops.py::test_check_grads_subsets_and_relaxations)
        theta = torch.tensor(theta, requires_grad=True)
        torch.autograd.gradcheck(lambda t: ops.subset_marginals(t, k), (theta,))


def test_k_near_d_is_fast_at_d_10k():
    d = 10_000
    logits = trandn(d, seed=19, dtype=torch.float32).requires_grad_()
    for k in (d - 1, d):
        x = RelaxedTopK(logits, k, 0.5).rsample()
        assert x.sum().item() == pytest.approx(k, rel=1e-6)
        x.pow(2).sum().backward()
        assert torch.isfinite(logits.grad).all()
    assert torch.equal(RelaxedTopK(logits, d, 0.5).rsample(), torch.ones(d))
    assert torch.equal(RelaxedTopK(logits, 0, 0.5).rsample(), torch.zeros(d))


@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_single_item_sample_is_differentiable(relaxation):
    logits = torch.zeros(1, requires_grad=True)
    x = RelaxedTopK(logits, 1, 0.5, relaxation=relaxation).rsample()
    x.sum().backward()
    assert x.item() == 1.0 and logits.grad is not None


# ------------------------------------------------------------------ 6. bad input: clear ValueErrors


@pytest.mark.parametrize(
    "fn",
    [
        ops.spanning_tree_log_partition,
        ops.spanning_tree_marginals,
        ops.max_spanning_tree,
        ops.sample_spanning_tree,
        ops.arborescence_log_partition,
        ops.arborescence_marginals,
        ops.max_arborescence,
        ops.sample_arborescence,
        ops.sinkhorn,
        ops.max_assignment,
        ops.log_permanent,
        ops.permutation_marginals,
    ],
)
def test_ops_reject_bad_matrices(fn):
    for bad in (
        torch.zeros(4, 3),
        torch.zeros(4),
        torch.zeros(0, 0),
        torch.zeros(3, 3, dtype=torch.long),
        torch.zeros(3, 3, dtype=torch.float16),
        [[0.0, 1.0], [1.0, 0.0]],
    ):
        with pytest.raises(ValueError, match="logits|weights|log_alpha"):
            fn(bad)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: RelaxedSpanningTree(torch.zeros(4, 4, dtype=torch.long), 2.7), "float32 or float64"),
        (lambda: SpanningTree(torch.zeros(4, 4, dtype=torch.int32)), "float32 or float64"),
        (lambda: RelaxedTopK(torch.zeros(5, dtype=torch.long), 2, 0.5), "float32 or float64"),
        (lambda: RelaxedSpanningTree([[0.0, 1.0], [1.0, 0.0]], 0.5), "torch.Tensor"),
        (lambda: KSubset([0.0, 1.0], 1), "torch.Tensor"),
        (lambda: RelaxedArborescence([[0.0, 1.0], [1.0, 0.0]], 0.5), "torch.Tensor"),
        (lambda: RelaxedSpanningTree(torch.zeros(3, 4, 4), torch.ones(2)), "temperature"),
        (lambda: RelaxedTopK(torch.zeros(3, 5), 2, torch.ones(4)), "temperature"),
        (lambda: RelaxedSpanningTree(torch.zeros(0, 0), 0.5), "logits"),
        (lambda: RelaxedTopK(torch.zeros(0), 0, 0.5), "logits"),
        (lambda: GumbelSinkhorn(torch.zeros(4, 4, dtype=torch.float16), 0.5), "float32 or float64"),
        (lambda: GumbelSinkhorn(torch.zeros(4, 4), 0.5, tol="small"), "tol"),
        (lambda: GumbelSinkhorn(torch.zeros(4, 4), 0.5, tol=-1.0), "tol"),
        (lambda: RelaxedSpanningTree(torch.zeros(4, 4), "hot"), "temperature"),
    ],
)
def test_distributions_reject_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_temperature_keeps_its_value():
    assert RelaxedSpanningTree(torch.zeros(4, 4), 2.7).temperature.item() == pytest.approx(2.7)
    assert RelaxedTopK(torch.zeros(5, dtype=torch.float64), 2, 0.5).temperature.item() == 0.5


def test_tol_accepts_numpy_scalars_and_0d_tensors():
    logits = trandn(5, 5, seed=20)
    expected = GumbelSinkhorn(logits, 0.5, tol=1e-6).relax(logits)
    for tol in (np.float64(1e-6), np.float32(1e-6), torch.tensor(1e-6)):
        d = GumbelSinkhorn(logits, 0.5, tol=tol)
        assert isinstance(d.tol, float)
        torch.testing.assert_close(d.relax(logits), expected, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(ops.sinkhorn(logits, tol=tol)[0], ops.sinkhorn(logits)[0], rtol=1e-6, atol=1e-6)


def test_minus_inf_on_ignored_entries_is_accepted_when_validating(backend):
    B, logits = backend, randn(5, 5, seed=21)
    masked = logits.copy()
    np.fill_diagonal(masked, -math.inf)
    masked[:, 2] = -math.inf  # the root column is ignored too
    m, logits, masked = B.module, B.array(logits), B.array(masked)
    for a, b in [
        (m.RelaxedArborescence(masked, 0.5, root=2, validate_args=True), m.RelaxedArborescence(logits, 0.5, root=2)),
        (m.Arborescence(masked, root=2, validate_args=True), m.Arborescence(logits, root=2)),
    ]:
        np.testing.assert_allclose(B.numpy(a.log_partition), B.numpy(b.log_partition), rtol=1e-12)
        np.testing.assert_allclose(B.numpy(a.marginals), B.numpy(b.marginals), rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(B.numpy(a.mode), B.numpy(b.mode))
    read_entry_absent = B.array(np.where(np.roll(np.eye(5, dtype=bool), 1, 0), -math.inf, B.numpy(logits)))
    with pytest.raises(ValueError, match="finite"):
        m.RelaxedArborescence(read_entry_absent, 0.5, root=2, validate_args=True)


# ------------------------------------------------------------------ 7. single-root MAP with huge finite logits


@pytest.mark.parametrize("seed", range(6))
def test_single_root_map_is_exact_with_huge_finite_logits(backend, seed):
    B, theta = backend, randn(5, 5, seed=seed, scale=2.0)
    theta[seed % 5, (seed + 2) % 5] = -1e16
    theta[(seed + 1) % 5, (seed + 3) % 5] = 1e15
    for root in (0, 2):
        ref = arborescence_family(theta, root, True)
        x = B.numpy(B.ops.max_arborescence(B.array(theta), root, True))
        assert x[root].sum() == 1 and (theta * x).sum() == ref.max_score


# ------------------------------------------------------------------ 8. the natural spanning-tree guide


def test_spanning_tree_reads_the_upper_triangle_of_any_square_logits(backend):
    B, logits = backend, randn(5, 5, seed=22)
    sym = B.ops.symmetrize_upper(B.array(logits))
    a = B.module.RelaxedSpanningTree(B.array(logits), 0.5, validate_args=True)
    b = B.module.RelaxedSpanningTree(sym, 0.5)
    np.testing.assert_allclose(B.numpy(a.log_partition), B.numpy(b.log_partition), rtol=1e-12)
    np.testing.assert_allclose(B.numpy(a.marginals), B.numpy(b.marginals), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(B.numpy(a.mode), B.numpy(b.mode))
    assert float(a.log_partition) == pytest.approx(spanning_tree_family(B.numpy(sym)).log_partition)


def test_natural_spanning_tree_guide_trains_with_validation():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    n = 5
    truth = torch.zeros(n, n)
    for j in range(1, n):
        truth[j - 1, j] = truth[j, j - 1] = 1
    data = truth + 0.3 * torch.randn(10, n, n)

    def model():
        tree = pyro.sample("tree", RelaxedSpanningTree(torch.zeros(n, n), 0.5))
        with pyro.plate("obs", len(data)):
            pyro.sample("y", pdist.Normal(tree, 0.3).to_event(2), obs=data)

    def guide():
        pyro.sample("tree", RelaxedSpanningTree(pyro.param("w", torch.zeros(n, n)), 0.5))

    with pyro.validation_enabled(True):
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.1}), pyro.infer.Trace_ELBO())
        for _ in range(200):
            svi.step()
    assert torch.equal(RelaxedSpanningTree(pyro.param("w").detach(), 0.5).mode, truth)
