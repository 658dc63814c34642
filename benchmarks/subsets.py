"""Relaxed top-k, exponential-family relaxation: ``RelaxedTopK.relax(U)`` then ``backward()``, float32, against a
NumPy log-space forward-backward DP for the marginals whose backward is a central finite difference along the
cotangent (valid because the Jacobian of the marginals is the symmetric Hessian of the log-partition). Errors are
max abs errors of the relaxed sample against float64 exact values. The d = 10^4 rows (B = 1) run each backend in a
fresh process and give its time (``jax`` jitted, after compilation) and peak resident memory, torch or JAX
included."""

import multiprocessing
import resource
import time

import numpy as np
import torch

from pyro_sst import RelaxedTopK, ops

from .common import median_time, row

FULL = [(128, 100, 10), (16, 10_000, 100)]
QUICK = FULL
LARGE_D = 10_000
LARGE_K = [10, 1000, 5000, 9000]
TEMPERATURE = 0.5


def _log_e(theta, k):
    """Forward DP tables alpha[i, :, j] = log e_j(exp theta[:, :i]) for j <= k, shape (d + 1, B, k + 1)."""
    B, d = theta.shape
    alpha = np.full((d + 1, B, k + 1), -np.inf)
    alpha[0, :, 0] = 0.0
    for i in range(d):
        shifted = np.concatenate([np.full((B, 1), -np.inf), alpha[i, :, :-1] + theta[:, i : i + 1]], 1)
        alpha[i + 1] = np.logaddexp(alpha[i], shifted)
    return alpha


def numpy_marginals(theta, k):
    """Inclusion probabilities by a forward and a backward DP in log space."""
    alpha = _log_e(theta, k)
    beta = _log_e(theta[:, ::-1], k)[::-1]  # beta[i] = log e_j(theta[:, i:])
    d = theta.shape[1]
    mu = np.empty_like(theta)
    for i in range(d):
        # e_{k-1} of all items but i: sum_j alpha[i, j] beta[i+1, k-1-j]
        pairs = alpha[i][:, :k] + beta[i + 1][:, k - 1 :: -1]
        mu[:, i] = np.exp(theta[:, i] + np.logaddexp.reduce(pairs, axis=1) - alpha[d][:, k])
    return mu


def case(B, d, k):
    g = torch.Generator().manual_seed(d)
    logits = torch.randn(B, d, generator=g).requires_grad_()
    gumbel = -torch.log(-torch.log(torch.rand(B, d, generator=g)))
    cotangent = torch.randn(B, d, generator=g)
    exact = ops.subset_marginals((logits.detach().double() + gumbel) / TEMPERATURE, k)
    repeats = 5 if d <= 1000 else 2

    def ours():
        x = RelaxedTopK(logits, k, TEMPERATURE).relax(logits + gumbel)
        (x * cotangent).sum().backward()
        return x

    def baseline():
        theta = ((logits.detach() + gumbel) / TEMPERATURE).double().numpy()
        mu = numpy_marginals(theta, k)
        h = 1e-4
        v = cotangent.double().numpy()
        vjp = (numpy_marginals(theta + h * v, k) - numpy_marginals(theta - h * v, k)) / (2 * h) / TEMPERATURE
        return torch.from_numpy(mu), torch.from_numpy(vjp)

    ours_s = median_time(ours, repeats)
    base_s = median_time(baseline, repeats)
    logits.grad = None
    ours()
    mu, vjp = baseline()
    return row(
        f"top-k exp_family B={B} d={d} k={k}",
        ours_s,
        base_s,
        err=(ours().double() - exact).abs().max().item(),
        baseline_err=(mu - exact).abs().max().item(),
        grad_diff=(logits.grad.double() / 2 - vjp).abs().max().item(),  # ours() ran twice since the reset
    )


def _large_d_child(backend, k, out):
    """In a fresh process: the median of 3 rsample + backward at (1, LARGE_D) and the peak RSS (GB)."""
    rng = np.random.default_rng(0)
    logits, cotangent = rng.normal(size=LARGE_D), rng.normal(size=LARGE_D)
    if backend == "pyro":
        logits_t = torch.tensor(logits, dtype=torch.float32, requires_grad=True)

        def step():
            x = RelaxedTopK(logits_t, k, TEMPERATURE).rsample()
            (x * torch.tensor(cotangent, dtype=torch.float32)).sum().backward()

    else:
        import jax
        import jax.numpy as jnp

        import numpyro_sst

        key = jax.random.PRNGKey(0)
        grad = jax.jit(jax.grad(lambda x: (numpyro_sst.RelaxedTopK(x, k, TEMPERATURE).rsample(key) * cotangent).sum()))
        logits_j = jnp.asarray(logits, jnp.float32)

        def step():
            grad(logits_j).block_until_ready()

    out.put((median_time(step, 3), _peak_resident_gb()))


def _peak_resident_gb():
    """This process's peak resident memory: ``VmHWM`` on Linux (``ru_maxrss`` survives the ``exec`` of a spawned
    child and would report the parent's peak)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def large_case(k):
    context = multiprocessing.get_context("spawn")
    results = {}
    for backend in ("pyro", "numpyro"):
        queue = context.Queue()
        child = context.Process(target=_large_d_child, args=(backend, k, queue))
        child.start()
        results[backend] = queue.get()
        child.join()
    theta = np.random.default_rng(0).normal(size=(1, LARGE_D)) / TEMPERATURE
    start = time.perf_counter()
    numpy_marginals(theta, min(k, LARGE_D - k))  # the DP on the complement for k > d / 2, forward only
    numpy_s = time.perf_counter() - start
    return row(
        f"top-k exp_family B=1 d={LARGE_D} k={k}",
        results["pyro"][0],
        numpy_s,
        pyro_peak_gb=results["pyro"][1],
        numpyro_s=results["numpyro"][0],
        numpyro_peak_gb=results["numpyro"][1],
        note="baseline: the NumPy DP's forward only",
    )


def cases(quick):
    for B, d, k in QUICK if quick else FULL:
        yield case(B, d, k)
    for k in LARGE_K[2:] if quick else LARGE_K:
        yield large_case(k)
