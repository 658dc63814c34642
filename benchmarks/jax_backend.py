"""numpyro_sst under `jax.jit` against pyro_sst (eager torch) on the same work, same process and inputs.

`ours_s` is the jitted JAX call after compilation (median of repeats), `compile_s` the first call (trace +
compile + run) reported apart, `baseline_s` the pyro_sst call; `ratio` below 1 means JAX is faster. Relaxed
rows time a sample plus the gradient of a linear loss w.r.t. the logits; solver and sampler rows, the forward.
JAX runs in float32 without x64 (its default), pyro_sst in float32.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

import numpyro_sst
import pyro_sst

from .common import median_time, row

KEY = jax.random.PRNGKey(0)
#: median of this many calls per side: on a shared 2-core machine one slow stretch of seconds moved single rows of 5
#: repeats by up to 2x between runs
REPEATS = 9


def _jax_timed(fn, *args):
    compiled = jax.jit(fn)
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    compile_s = time.perf_counter() - start
    return median_time(lambda: jax.block_until_ready(compiled(*args)), repeats=REPEATS), compile_s


def _relaxed_case(name, jax_dist, torch_dist, shape):
    logits = np.random.RandomState(0).normal(size=shape).astype(np.float32)
    weights = np.random.RandomState(1).normal(size=shape).astype(np.float32)

    def jax_step(logits, weights):
        return jax.grad(lambda x: (jax_dist(x).sample(KEY) * weights).sum())(logits)

    def torch_step():
        x = torch.tensor(logits, requires_grad=True)
        (torch_dist(x).rsample() * torch.tensor(weights)).sum().backward()
        return x.grad

    ours, compile_s = _jax_timed(jax_step, jnp.asarray(logits), jnp.asarray(weights))
    return row(name, ours, median_time(torch_step, repeats=REPEATS), compile_s=compile_s)


def _forward_case(name, jax_fn, torch_fn, shape):
    w = np.random.RandomState(2).normal(size=shape).astype(np.float32)
    ours, compile_s = _jax_timed(jax_fn, jnp.asarray(w))
    return row(name, ours, median_time(lambda: torch_fn(torch.tensor(w)), repeats=REPEATS), compile_s=compile_s)


def _sampler_case(n, count, temperature):
    """``count`` exact spanning trees of one ``(n, n)`` logit matrix divided by ``temperature``, both backends."""
    logits = (np.random.RandomState(3).normal(size=(n, n)) / temperature).astype(np.float32)
    ours, compile_s = _jax_timed(lambda w: numpyro_sst.ops.sample_spanning_tree(KEY, w, (count,)), jnp.asarray(logits))
    baseline = median_time(lambda: pyro_sst.ops.sample_spanning_tree(torch.tensor(logits), (count,)), repeats=REPEATS)
    return row(f"sample_spanning_tree {count} trees n={n} t={temperature}", ours, baseline, compile_s=compile_s)


def cases(quick):
    for scale in (1.0, 10.0):
        yield _matrix_tree_case(256, 30, scale)
    for temperature in (1.0, 0.1):
        yield _sampler_case(50, 256, temperature)
    B, n = (64, 20) if quick else (256, 50)
    yield _relaxed_case(
        f"RelaxedSpanningTree rsample+grad ({B},{n},t=0.5)",
        lambda x: numpyro_sst.RelaxedSpanningTree(x, 0.5),
        lambda x: pyro_sst.RelaxedSpanningTree(x, 0.5),
        (B, n, n),
    )
    for single_root in (False, True):
        yield _relaxed_case(
            f"RelaxedArborescence rsample+grad ({B},{n // 2},t=0.5,single_root={single_root})",
            lambda x, s=single_root: numpyro_sst.RelaxedArborescence(x, 0.5, single_root=s),
            lambda x, s=single_root: pyro_sst.RelaxedArborescence(x, 0.5, single_root=s),
            (B, n // 2, n // 2),
        )
    d, k = (100, 10)
    yield _relaxed_case(
        f"RelaxedTopK rsample+grad ({B * 2},{d},{k})",
        lambda x: numpyro_sst.RelaxedTopK(x, k, 0.5),
        lambda x: pyro_sst.RelaxedTopK(x, k, 0.5),
        (B * 2, d),
    )
    yield _relaxed_case(
        f"GumbelSinkhorn rsample+grad ({B},{n // 2},t=1)",
        lambda x: numpyro_sst.GumbelSinkhorn(x, 1.0),
        lambda x: pyro_sst.GumbelSinkhorn(x, 1.0),
        (B, n // 2, n // 2),
    )
    yield _forward_case(
        f"max_spanning_tree ({B},{n})", numpyro_sst.ops.max_spanning_tree, pyro_sst.ops.max_spanning_tree, (B, n, n)
    )
    yield _forward_case(
        f"max_arborescence ({B},{n})", numpyro_sst.ops.max_arborescence, pyro_sst.ops.max_arborescence, (B, n, n)
    )
    yield _forward_case(
        f"max_assignment ({B},{n})", numpyro_sst.ops.max_assignment, pyro_sst.ops.max_assignment, (B, n, n)
    )
    yield _forward_case(
        f"sample_spanning_tree ({B},{n})",
        lambda w: numpyro_sst.ops.sample_spanning_tree(KEY, w),
        pyro_sst.ops.sample_spanning_tree,
        (B, n, n),
    )


def _reference_marginals(theta):
    """The research method in JAX: marginals as ``jax.grad`` of ``slogdet`` of the max-shifted Laplacian minor."""

    def log_partition(theta):
        theta = theta - jax.lax.stop_gradient(theta.max((-2, -1), keepdims=True))
        n = theta.shape[-1]
        weights = jnp.exp(theta) * (1 - jnp.eye(n, dtype=theta.dtype))
        laplacian = jnp.eye(n, dtype=theta.dtype) * weights.sum(-2)[..., None, :] - weights
        return jnp.linalg.slogdet(laplacian[..., 1:, 1:])[1].sum()

    return jax.grad(log_partition)(theta)


def _matrix_tree_case(B, n, scale):
    """Marginals and the gradient of a linear loss through them (the HVP), float32, against the jitted reference."""
    rng = np.random.RandomState(n)
    theta = jnp.asarray(numpyro_sst.ops.symmetrize_upper(scale * rng.normal(size=(B, n, n))), jnp.float32)
    weights = jnp.asarray(rng.normal(size=(B, n, n)), jnp.float32)

    def ours(theta):
        return jax.value_and_grad(lambda x: (numpyro_sst.ops.spanning_tree_marginals(x) * weights).sum())(theta)

    def reference_marginals(x):
        mu = _reference_marginals(numpyro_sst.ops.symmetrize_upper(x))
        return mu + jnp.swapaxes(mu, -1, -2)

    def reference(theta):
        return jax.value_and_grad(lambda x: (reference_marginals(x) * weights).sum())(theta)

    ours_s, compile_s = _jax_timed(ours, theta)
    reference_s, _ = _jax_timed(reference, theta)
    with jax.enable_x64(True):
        x64 = jnp.asarray(theta, jnp.float64)
        exact_mu = numpyro_sst.ops.spanning_tree_marginals(x64)
        exact_grad = jax.grad(lambda x: (numpyro_sst.ops.spanning_tree_marginals(x) * weights).sum())(x64)
    errors = []
    for fn in (ours, reference):
        mu = numpyro_sst.ops.spanning_tree_marginals(theta) if fn is ours else jax.jit(reference_marginals)(theta)
        grad = jax.jit(fn)(theta)[1]
        mu_error = jnp.nan_to_num(jnp.abs(mu - exact_mu), nan=jnp.inf).max()
        grad_error = jnp.nan_to_num(jnp.abs(jnp.triu(grad, 1) - jnp.triu(exact_grad, 1)), nan=jnp.inf).max()
        errors.append(max(float(mu_error), float(grad_error)))
    return row(
        f"tree marginals+grad B={B} n={n} scale={scale} vs jitted grad of slogdet",
        ours_s,
        reference_s,
        compile_s=compile_s,
        err=errors[0],
        baseline_err=errors[1],
    )
