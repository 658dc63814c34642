"""The matrix-tree core of both backends against enumeration in 60-digit arithmetic, at the extremes.

One template, parametrised over the backend and the dtype: log-partitions, marginals and their
Hessian-vector products (what every relaxed-tree ``rsample`` backpropagates) at temperatures down to
0.05 and logit scales up to 1000, the reproducers of the inputs where inverse-based marginals had a
backward off by 1e4, reverse mode through ``vmap`` (NumPyro's vectorised particles), and the exact
samplers' frequencies. References are computed from the input as rounded to its dtype, so the
tolerances measure the algorithm, not the rounding of the input.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from reference import arborescences, exact_hessian_vector_product, spanning_trees, upper_mask

import numpyro_sst.ops as N
import pyro_sst.ops as P

#: worst error allowed relative to max(1, |H g|): float32 keeps about 7 digits through the elimination, float64 15
TOLERANCE = {"float32": 1e-4, "float64": 1e-9}

# Inputs where the backward of inverse-formula marginals is off by 1.3e4 (float32, the first) and 4.9e-4
# (float64, the second), although the marginals themselves are right.
HARD_BACKWARD_INPUTS = [
    (
        [
            [0, -48.6, -6.9, 5.7, -5.5],
            [0, 0, 10.3, 40.9, 18.2],
            [0, 4.6, 0, -16.1, 19.7],
            [0, -2.9, -4.1, 0, -18.5],
            [0, -3.5, 18.2, -29.4, 0],
        ],
        [
            [0, -0.2, 0.8, -1.4, -0.3],
            [0, 0, 0.9, 0.4, 1.2],
            [0, 0, 0, -0.2, 0.5],
            [0, -0.2, -0.4, 0, 0.3],
            [0, -0.3, -0.3, -0.1, 0],
        ],
    ),
    (
        [
            [0, 12.73, 8.06, -19.83, -30.06],
            [0, 0, -15.2, -11.52, 23.14],
            [0, 39.09, 0, 17.02, -3.68],
            [0, -13.15, -5.98, 0, 20.85],
            [0, 21.3, 23.48, -27.97, 0],
        ],
        [
            [0, 0.3, -0.26, 0.16, -0.93],
            [0, 0, -0.22, 0.16, -1.52],
            [0, -1.18, 0, -0.96, 1.73],
            [0, -0.46, -0.84, 0, -3.13],
            [0, 0.16, 0.54, -2.35, 0],
        ],
    ),
]

# (structure, root, single_root): the support, and the mask of the entries that score a structure
STRUCTURES = [("tree", 0, False), ("arborescence", 0, False), ("arborescence", 2, True)]


class Torch:
    name = "pyro_sst"

    @staticmethod
    def marginals_and_hvp(theta, g, structure, root, single_root, dtype):
        x = torch.tensor(theta, dtype=getattr(torch, dtype), requires_grad=True)
        if structure == "tree":
            log_z, mu = P.spanning_tree_log_partition(x), P.spanning_tree_marginals(x)
        else:
            log_z = P.arborescence_log_partition(x, root, single_root)
            mu = P.arborescence_marginals(x, root, single_root)
        (hvp,) = torch.autograd.grad((mu * torch.tensor(g, dtype=x.dtype)).sum(), x)
        return float(log_z.detach()), mu.detach().double().numpy(), hvp.double().numpy()

    @staticmethod
    def sample(theta, structure, root, single_root, count, seed):
        generator = torch.Generator().manual_seed(seed)
        x = torch.tensor(theta, dtype=torch.float64)
        if structure == "tree":
            return P.sample_spanning_tree(x, (count,), generator=generator).numpy()
        return P.sample_arborescence(x, root, single_root, (count,), generator=generator).numpy()


class Jax:
    name = "numpyro_sst"

    @staticmethod
    def _functions(structure, root, single_root):
        if structure == "tree":
            return N.spanning_tree_log_partition, N.spanning_tree_marginals
        return (
            lambda t: N.arborescence_log_partition(t, root, single_root),
            lambda t: N.arborescence_marginals(t, root, single_root),
        )

    @classmethod
    def marginals_and_hvp(cls, theta, g, structure, root, single_root, dtype):
        log_partition, marginals = cls._functions(structure, root, single_root)
        with jax.enable_x64(dtype == "float64"):
            x, g = jnp.asarray(theta, dtype), jnp.asarray(g, dtype)
            hvp_forward = jax.jvp(marginals, (x,), (g,))[1]
            hvp_reverse = jax.grad(lambda t: (marginals(t) * g).sum())(x)
            if structure == "tree":  # the tangent of the symmetric marginals; the gradient reaches the upper half
                hvp_forward = jnp.triu(hvp_forward, 1)
            np.testing.assert_allclose(hvp_forward, hvp_reverse, atol=TOLERANCE[dtype], rtol=0)
            return float(log_partition(x)), np.asarray(marginals(x), np.float64), np.asarray(hvp_reverse, np.float64)

    @staticmethod
    def sample(theta, structure, root, single_root, count, seed):
        with jax.enable_x64(True):
            key, x = jax.random.PRNGKey(seed), jnp.asarray(theta, jnp.float64)
            if structure == "tree":
                return np.asarray(N.sample_spanning_tree(key, x, (count,)))
            return np.asarray(N.sample_arborescence(key, x, root, single_root, (count,)))


BACKENDS = [Torch, Jax]


def _support(structure, n, root, single_root):
    if structure == "tree":
        return spanning_trees(n), upper_mask(n)
    return arborescences(n, root, single_root), None


def _check(backend, theta, g, structure, root, single_root, dtype):
    theta = np.asarray(theta, dtype).astype(np.float64)  # the input as the dtype holds it
    g = np.asarray(g, dtype).astype(np.float64)
    support, mask = _support(structure, theta.shape[-1], root, single_root)
    if structure == "tree":  # only the strict upper triangle is read: it alone gets a derivative
        g = np.triu(g, 1)
    exact_log_z, exact_mu, exact_hvp = exact_hessian_vector_product(support, theta, g, mask)
    if structure == "tree":
        exact_hvp = np.triu(exact_hvp, 1)
    log_z, mu, hvp = backend.marginals_and_hvp(theta, g, structure, root, single_root, dtype)
    tolerance = TOLERANCE[dtype]
    assert abs(log_z - exact_log_z) <= tolerance * max(1.0, abs(exact_log_z))
    np.testing.assert_allclose(mu, exact_mu, atol=tolerance, rtol=0)
    np.testing.assert_allclose(hvp, exact_hvp, atol=tolerance * max(1.0, np.abs(exact_hvp).max()), rtol=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("case", range(len(HARD_BACKWARD_INPUTS)))
def test_marginal_backward_on_the_reproducers(case, backend, dtype):
    theta, g = HARD_BACKWARD_INPUTS[case]
    _check(backend, theta, g, "arborescence", 0, False, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("structure,root,single_root", STRUCTURES)
@pytest.mark.parametrize("temperature", [1.0, 0.5, 0.2, 0.1, 0.05])
def test_relaxation_backward_at_low_temperature(temperature, structure, root, single_root, backend, dtype):
    """``theta = (logits + Gumbel) / t``, logits of scale 3: the Hessian-vector products of ``rsample``."""
    rng = np.random.default_rng(int(temperature * 100) + root)
    utilities = 3.0 * rng.normal(size=(5, 5)) + rng.gumbel(size=(5, 5))
    if structure == "tree":
        utilities = np.triu(utilities, 1) + np.triu(utilities, 1).T
    _check(backend, utilities / temperature, rng.normal(size=(5, 5)), structure, root, single_root, dtype)


def _log_det_minor(theta, drop):
    """``log det`` of the in-degree Laplacian of ``exp(theta)`` without row and column ``drop`` (LAPACK, float64)."""
    n = theta.shape[-1]
    weights = theta.exp() * (1 - torch.eye(n, dtype=theta.dtype))
    laplacian = torch.diag_embed(weights.sum(-2)) - weights
    keep = [i for i in range(n) if i != drop]
    return torch.linalg.slogdet(laplacian[keep][:, keep]).logabsdet


def _slogdet_log_partition(theta, structure, root, single_root):
    """The log-partition by Kirchhoff/Tutte determinants; for ``single_root``, the root's one child ``c`` times the
    arborescences rooted at ``c`` of the graph without the root (one determinant per child)."""
    if structure == "tree":
        theta = theta.triu(1) + theta.triu(1).T
    if not single_root:
        return _log_det_minor(theta, root)
    others = [i for i in range(theta.shape[-1]) if i != root]
    sub = theta[others][:, others]
    terms = [theta[root, c] + _log_det_minor(sub, m) for m, c in enumerate(others)]
    return torch.logsumexp(torch.stack(terms), 0)


# pyro_sst in both dtypes; numpyro_sst (seven seconds of compiling a case) in one dtype per structure
SEVERAL_PANELS = [
    (structure, root, single_root, backend, dtype)
    for structure, root, single_root, jax_dtype in [("tree", 0, False, "float32"), ("arborescence", 3, True, "float64")]
    for backend, dtype in [(Torch, "float32"), (Torch, "float64"), (Jax, jax_dtype)]
]


@pytest.mark.parametrize(
    "structure,root,single_root,backend,dtype", SEVERAL_PANELS, ids=lambda x: getattr(x, "name", str(x))
)
def test_graphs_of_several_panels_match_determinants(structure, root, single_root, backend, dtype):
    """45 nodes: several panels in both backends (the last one padded in numpyro_sst). The reference is LAPACK's
    ``slogdet`` in float64 and its first and second autograd derivatives, accurate at logit scale 2."""
    rng = np.random.default_rng(45 + root)
    theta = np.asarray(2.0 * rng.normal(size=(45, 45)), dtype).astype(np.float64)
    g = np.asarray(rng.normal(size=(45, 45)), dtype).astype(np.float64)
    if structure == "tree":
        g = np.triu(g, 1)
    x = torch.tensor(theta, requires_grad=True)
    exact_log_z = _slogdet_log_partition(x, structure, root, single_root)
    (exact_mu,) = torch.autograd.grad(exact_log_z, x, create_graph=True)
    (exact_hvp,) = torch.autograd.grad((exact_mu * torch.tensor(g)).sum(), x)
    exact_mu, exact_hvp = exact_mu.detach().numpy(), exact_hvp.numpy()
    if structure == "tree":  # the reference differentiates the upper half only; the marginals are symmetric
        exact_mu = exact_mu + exact_mu.T
    if root:
        exact_mu[:, root] = exact_hvp[:, root] = 0.0  # edges into the root are never read
    log_z, mu, hvp = backend.marginals_and_hvp(theta, g, structure, root, single_root, dtype)
    tolerance = TOLERANCE[dtype]
    assert abs(log_z - exact_log_z.item()) <= tolerance * abs(exact_log_z.item())
    np.testing.assert_allclose(mu, exact_mu, atol=tolerance, rtol=0)
    np.testing.assert_allclose(hvp, exact_hvp, atol=tolerance * max(1.0, np.abs(exact_hvp).max()), rtol=0)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("structure,root,single_root", STRUCTURES)
@pytest.mark.parametrize("scale", [1.0, 10.0, 100.0, 1000.0])
def test_values_and_backward_at_large_logit_scales(scale, structure, root, single_root, backend):
    rng = np.random.default_rng(int(scale) + 7 * root)
    theta = scale * rng.normal(size=(5, 5))
    if structure == "tree":
        theta = np.triu(theta, 1) + np.triu(theta, 1).T
    _check(backend, theta, rng.normal(size=(5, 5)), structure, root, single_root, "float64")


def _noise_level(probs, count):
    """Twice the expected total variation of ``count`` multinomial draws: sum_i sqrt(p_i (1 - p_i) / count)."""
    return float(np.sqrt(probs * (1 - probs) / count).sum())


def _sampler_logits(theta, structure):
    """Spanning trees read the upper triangle: make it symmetric, as the structure is."""
    return np.triu(theta, 1) + np.triu(theta, 1).T if structure == "tree" else theta


def _check_samples(x, theta, structure, root, single_root):
    """Every sample in the support, none of probability below 1e-12, frequencies within the multinomial noise."""
    n, count = theta.shape[-1], len(x)
    support, mask = _support(structure, n, root, single_root)
    mask = np.ones((n, n), bool) if mask is None else mask
    scores = (support * np.where(mask, theta, 0)).sum((-2, -1))
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    match = np.abs(x[:, None] - support[None]).sum((-2, -1)) < 0.5
    assert match.sum(-1).min() == 1, "a sample outside the support"
    index = match.argmax(-1)
    assert probs[index].min() > 1e-12
    frequencies = np.bincount(index, minlength=len(support)) / count
    assert 0.5 * np.abs(frequencies - probs).sum() <= _noise_level(probs, count) + 1e-12


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("structure,root,single_root", STRUCTURES)
@pytest.mark.parametrize("scale", [1.0, 10.0, 100.0, 400.0, 1000.0])
def test_exact_samplers_at_every_logit_scale(scale, structure, root, single_root, backend):
    """No sampled structure below probability 1e-12, frequencies within the multinomial noise (float64)."""
    n, count = 5, 4000
    rng = np.random.default_rng(int(scale) + 11 * root + (structure == "tree"))
    theta = _sampler_logits(scale * rng.normal(size=(n, n)), structure)
    x = backend.sample(theta, structure, root, single_root, count, seed=int(scale))
    _check_samples(x, theta, structure, root, single_root)


@pytest.mark.parametrize("structure,root,single_root", STRUCTURES)
def test_jax_sampler_draws_its_noise_in_blocks_of_steps(structure, root, single_root, monkeypatch):
    """Blocks of 3 of the sampler's 4 steps (the last block partly empty): the frequencies still match
    enumeration. (A sample count no other test uses, so that the sampler is compiled afresh with the block.)"""
    import numpyro_sst.ops.trees

    n, count = 5, 3001
    monkeypatch.setattr(numpyro_sst.ops.trees, "RANDOM_BLOCK_NUMBERS", 3 * count * n)
    theta = _sampler_logits(2 * np.random.default_rng(21 + root).normal(size=(n, n)), structure)
    _check_samples(Jax.sample(theta, structure, root, single_root, count, seed=4), theta, structure, root, single_root)


@pytest.mark.parametrize("structure", ["tree", "arborescence"])
def test_reverse_mode_through_vmap(structure):
    """NumPyro vectorises particles: grad of a vmap of marginals, against the per-element loop and pyro_sst."""
    marginals = N.spanning_tree_marginals if structure == "tree" else N.arborescence_marginals
    scales = jnp.array([1.0, 2.0, 40.0])
    logits = jnp.asarray(np.random.default_rng(3).normal(size=(5, 5)), jnp.float32)

    def loss(x, s):
        return (marginals(x * s) * jnp.arange(25.0).reshape(5, 5)).sum()

    batched = jax.grad(lambda x: jax.vmap(lambda s: loss(x, s))(scales).sum())(logits)
    looped = sum(jax.grad(loss)(logits, s) for s in scales)
    np.testing.assert_allclose(batched, looped, rtol=1e-4, atol=1e-4)
    torch_marginals = P.spanning_tree_marginals if structure == "tree" else P.arborescence_marginals
    x = torch.tensor(np.asarray(logits), requires_grad=True)
    weights = torch.arange(25.0).reshape(5, 5)
    sum((torch_marginals(x * float(s)) * weights).sum() for s in scales).backward()
    np.testing.assert_allclose(batched, x.grad.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("temperature", [0.1, 0.05])
def test_float32_backward_matches_float64_in_sst_use(temperature, backend):
    """n = 10, batch 128, ``theta = (logits + Gumbel) / t``: inverse-formula backwards are off by up to 460 here."""
    rng = np.random.default_rng(int(100 * temperature))
    theta = ((rng.normal(size=(128, 10, 10)) + rng.gumbel(size=(128, 10, 10))) / temperature).astype(np.float32)
    g = rng.normal(size=(128, 10, 10)).astype(np.float32)
    if backend is Torch:
        results = []
        for dtype in (torch.float32, torch.float64):
            x = torch.tensor(theta, dtype=dtype, requires_grad=True)
            (P.arborescence_marginals(x) * torch.tensor(g, dtype=dtype)).sum().backward()
            results.append(x.grad.double().numpy())
    else:
        results = []
        for dtype in ("float32", "float64"):
            with jax.enable_x64(dtype == "float64"):
                cotangent = jnp.asarray(g, dtype)
                grad = jax.grad(lambda t, c=cotangent: (N.arborescence_marginals(t) * c).sum())
                results.append(np.asarray(grad(jnp.asarray(theta, dtype)), np.float64))
    scale = np.maximum(1.0, np.abs(results[1]).max((-2, -1), keepdims=True))
    assert (np.abs(results[0] - results[1]) / scale).max() < 1e-3


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize(
    "structure,seed,single_root", [("tree", 5, False), ("arborescence", 8, False), ("arborescence", 8, True)]
)
def test_sampler_reproducers_at_logit_scale_100(structure, seed, single_root, backend):
    """Logit scale 100, where samplers on rank-one-updated inverses draw trees of probability 8e-32."""
    theta = 100 * np.random.default_rng(seed).normal(size=(5, 5))
    support, mask = _support(structure, 5, 0, single_root)
    mask = np.ones((5, 5), bool) if mask is None else mask
    scores = (support * np.where(mask, theta, 0)).sum((-2, -1))
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    x = backend.sample(theta, structure, 0, single_root, 2000, seed=0)
    index = (np.abs(x[:, None] - support[None]).sum((-2, -1)) < 0.5).argmax(-1)
    assert probs[index].min() > 1e-12
    frequencies = np.bincount(index, minlength=len(support)) / 2000
    assert 0.5 * np.abs(frequencies - probs).sum() <= _noise_level(probs, 2000) + 1e-12


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_sampler_draws_the_certain_maximum_tree_at_logit_scale_400(backend):
    """Element 0 of this batch has one tree of probability 1 (score 2067); a sampler on inverses draws score 1108."""
    theta = (400 * torch.randn((2, 6, 6), generator=torch.Generator().manual_seed(15), dtype=torch.float64)).numpy()
    best = P.max_spanning_tree(torch.tensor(theta)).numpy()
    for b in range(2):
        x = backend.sample(theta[b], "tree", 0, False, 200, seed=b)
        assert (x == best[b]).all()


# ------------------------------------------------------------------ numpyro_sst: every transform users compose
def _tree_classes():
    import numpyro_sst as S

    return {
        "RelaxedSpanningTree": lambda x: S.RelaxedSpanningTree(x, 0.5),
        "RelaxedArborescence": lambda x: S.RelaxedArborescence(x, 0.5, root=1),
        "RelaxedArborescence single_root": lambda x: S.RelaxedArborescence(x, 0.5, single_root=True),
        "SpanningTree": lambda x: S.SpanningTree(x),
        "Arborescence": lambda x: S.Arborescence(x, root=2),
        "Arborescence single_root": lambda x: S.Arborescence(x, single_root=True),
    }


def _support_of(name, n):
    if "Spanning" in name:
        return spanning_trees(n), upper_mask(n)
    root = {"RelaxedArborescence": 1, "Arborescence": 2}.get(name, 0)
    return arborescences(n, root, "single_root" in name), None


@pytest.mark.parametrize("name", list(_tree_classes()))
def test_jit_vmap_grad_jacfwd_hessian_compose(name, x64):
    """The Hessian of the log-partition (jacfwd over grad, and ``jax.hessian``) is the covariance of the structure."""
    make = _tree_classes()[name]
    n = 4
    logits = jnp.asarray(np.random.default_rng(5).normal(size=(n, n)) * 3)

    def log_partition(x):
        return make(x).log_partition

    support, mask = _support_of(name, n)
    mask = np.ones((n, n), bool) if mask is None else mask
    flat = support.reshape(len(support), -1) * mask.reshape(-1)
    scores = flat @ np.asarray(logits).reshape(-1)
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    covariance = (flat.T * probs) @ flat - np.outer(probs @ flat, probs @ flat)
    hessian = np.asarray(jax.hessian(log_partition)(logits)).reshape(n * n, n * n)
    np.testing.assert_allclose(hessian, covariance, atol=1e-10)
    forward_over_reverse = jax.jit(jax.jacfwd(jax.grad(log_partition)))(logits).reshape(n * n, n * n)
    np.testing.assert_allclose(forward_over_reverse, covariance, atol=1e-10)
    scales = jnp.array([0.5, 1.0, 2.0])
    batched = jax.grad(lambda x: jax.vmap(lambda s: log_partition(x * s))(scales).sum())(logits)
    looped = sum(jax.grad(lambda x, s=s: log_partition(x * s))(logits) for s in scales)
    np.testing.assert_allclose(batched, looped, atol=1e-10)
    np.testing.assert_allclose(
        jax.vmap(jax.grad(log_partition))(logits[None] * scales[:, None, None])[1],
        jax.grad(log_partition)(logits),
        atol=1e-12,
    )


def test_third_derivatives_are_the_third_cumulant(x64):
    """Reverse over forward over reverse (the marginals' tangent differentiated again): the third cumulant of the
    structure, contracted twice, against enumeration (single-root arborescences: the root shift included)."""
    name, n = "RelaxedArborescence single_root", 4
    make = _tree_classes()[name]
    logits = jnp.asarray(np.random.default_rng(5).normal(size=(n, n)) * 3)
    support, _ = _support_of(name, n)
    flat = support.reshape(len(support), -1)
    scores = flat @ np.asarray(logits).reshape(-1)
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    u, v = (np.random.default_rng(seed).normal(size=n * n) for seed in (6, 7))
    centred = flat - probs @ flat
    cumulant = ((centred * probs[:, None]).T * (centred @ u) * (centred @ v)).sum(-1)

    def curvature(x):
        tangent = jax.jvp(jax.grad(lambda y: make(y).log_partition), (x,), (jnp.asarray(u.reshape(n, n)),))[1]
        return tangent.reshape(-1) @ v

    np.testing.assert_allclose(np.asarray(jax.grad(curvature)(logits)).reshape(-1), cumulant, atol=1e-10)


@pytest.mark.parametrize("name", [k for k in _tree_classes() if k.startswith("Relaxed")])
@pytest.mark.parametrize("elbo", ["Trace_ELBO", "TraceMeanField_ELBO", "TraceRLOO_ELBO"])
def test_svi_with_vectorised_particles(name, elbo):
    """NumPyro vectorises particles with vmap, and SVI differentiates through it (grad of vmap)."""
    import numpyro
    import numpyro.distributions as ndist
    from numpyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO

    from numpyro_sst.estimators import TraceRLOO_ELBO

    make = _tree_classes()[name]
    n = 5
    data = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)))

    def model():
        x = numpyro.sample("x", make(jnp.zeros((n, n))))
        numpyro.sample("obs", ndist.Normal(x, 1.0).to_event(2), obs=data)

    def guide():
        numpyro.sample("x", make(numpyro.param("w", jnp.zeros((n, n)))))

    loss = {"Trace_ELBO": Trace_ELBO, "TraceMeanField_ELBO": TraceMeanField_ELBO, "TraceRLOO_ELBO": TraceRLOO_ELBO}
    svi = SVI(model, guide, numpyro.optim.Adam(0.1), loss[elbo](num_particles=4))
    result = svi.run(jax.random.PRNGKey(1), 5, progress_bar=False)
    assert np.isfinite(np.asarray(result.losses)).all()
    assert np.abs(np.asarray(result.params["w"])).max() > 0


@pytest.mark.parametrize(
    "logits,root,single_root",
    [
        (np.where(np.kron(np.eye(2), np.ones((2, 2))) > 0, 0.0, -np.inf), 0, False),  # two components
        (np.where(np.arange(4)[None, :] == 3, -np.inf, np.zeros((4, 4))), 0, False),  # node 3 has no parent
        (np.where(np.arange(4)[:, None] == 0, -np.inf, np.zeros((4, 4))), 0, True),  # the root has no out-edge
    ],
)
@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_samplers_raise_on_an_empty_support(logits, root, single_root, backend):
    with pytest.raises(ValueError, match="no spanning tree or arborescence"):
        backend.sample(logits, "arborescence", root, single_root, 3, seed=0)
