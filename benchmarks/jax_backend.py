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


def _jax_timed(fn, *args):
    compiled = jax.jit(fn)
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    compile_s = time.perf_counter() - start
    return median_time(lambda: jax.block_until_ready(compiled(*args)), repeats=5), compile_s


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
    return row(name, ours, median_time(torch_step, repeats=5), compile_s=compile_s)


def _forward_case(name, jax_fn, torch_fn, shape):
    w = np.random.RandomState(2).normal(size=shape).astype(np.float32)
    ours, compile_s = _jax_timed(jax_fn, jnp.asarray(w))
    return row(name, ours, median_time(lambda: torch_fn(torch.tensor(w)), repeats=5), compile_s=compile_s)


def cases(quick):
    B, n = (64, 20) if quick else (256, 50)
    yield _relaxed_case(
        f"RelaxedSpanningTree rsample+grad ({B},{n},t=0.5)",
        lambda x: numpyro_sst.RelaxedSpanningTree(x, 0.5),
        lambda x: pyro_sst.RelaxedSpanningTree(x, 0.5),
        (B, n, n),
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
