"""The two backends behind one interface, so that a test is written once and run on both (the ``backend`` fixture
of ``conftest.py``): arrays in and out, seeded draws, support checks, gradients and tracing."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.distributions
from jax.test_util import check_grads
from numpyro.distributions.kl import kl_divergence as numpyro_kl

import numpyro_sst
import pyro_sst


class Pyro:
    name = "pyro"
    module = pyro_sst
    ops = pyro_sst.ops
    kl_divergence = staticmethod(torch.distributions.kl_divergence)

    @staticmethod
    def precision(dtype):
        """A context in which arrays of ``dtype`` (``"float32"`` or ``"float64"``) can be made."""
        return contextlib.nullcontext()

    @staticmethod
    def array(x, dtype="float64"):
        return x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x), dtype=getattr(torch, dtype))

    @staticmethod
    def numpy(x):
        return x.detach().numpy()

    @staticmethod
    def draw(sampler, *args, seed=0):
        """``sampler(*args)``, an exact sampler of ``ops``, with its randomness fixed by ``seed``."""
        return sampler(*args, generator=torch.Generator().manual_seed(seed))

    @staticmethod
    def sample(dist, sample_shape=(), seed=0):
        """A sample with fixed noise (``rsample`` where the class has it)."""
        torch.manual_seed(seed)
        return dist.rsample(sample_shape) if dist.has_rsample else dist.sample(sample_shape)

    @staticmethod
    def hard_sample(dist, sample_shape=(), seed=0):
        torch.manual_seed(seed)
        return dist.hard_sample(sample_shape)

    @staticmethod
    def utilities(dist, sample_shape=(), seed=0):
        """``dist.sample_utilities``, the noise fixed by ``seed`` (the same noise as ``sample`` with that seed)."""
        torch.manual_seed(seed)
        return dist.sample_utilities(sample_shape)

    @staticmethod
    def relaxed_and_hard(dist, sample_shape=(), seed=0):
        torch.manual_seed(seed)
        return dist.relaxed_and_hard(sample_shape)

    @staticmethod
    def in_support(dist, x):
        return bool(dist.support.check(x).all())

    @staticmethod
    def gradient(function, x, *args, dtype="float64", has_aux=False, optimize=False):
        """The gradient of ``function(x, *args)`` in ``x``, all arrays of ``dtype``; with ``has_aux`` the function
        returns ``(value, aux)`` and so does this, ``(gradient, aux)``. ``optimize``: see :class:`NumPyro`."""
        x = torch.tensor(x, dtype=getattr(torch, dtype), requires_grad=True)
        out = function(x, *(torch.tensor(a, dtype=x.dtype) for a in args))
        (out[0] if has_aux else out).backward()
        return (x.grad.numpy(), out[1].detach().numpy()) if has_aux else x.grad.numpy()

    @staticmethod
    def check_derivatives(function, x, atol=1e-5, order=1):
        """Derivatives of ``function`` at float64 ``x`` up to ``order`` (1 or 2) against finite differences."""
        x = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(function, (x,), atol=atol)
        assert order == 1 or torch.autograd.gradgradcheck(function, (x,), atol=atol)

    @staticmethod
    def value(function, x):
        return float(function(torch.tensor(x, dtype=torch.float64)))

    @staticmethod
    def jitted(function, *args):
        """``function`` traced once (``torch.jit.trace``) at ``args``, as Pyro's JitTrace_ELBO does."""
        return torch.jit.trace(function, args, check_trace=False)


class NumPyro:
    name = "numpyro"
    module = numpyro_sst
    ops = numpyro_sst.ops
    kl_divergence = staticmethod(numpyro_kl)

    @staticmethod
    def precision(dtype):
        return jax.enable_x64(dtype == "float64")

    @staticmethod
    def array(x, dtype=None):
        """``x`` as a JAX array of ``dtype`` (default: float64 where JAX has it enabled, else float32)."""
        if dtype is None:
            dtype = "float64" if jax.config.jax_enable_x64 else "float32"
        return x if isinstance(x, jax.Array) else jnp.asarray(x, dtype)

    @staticmethod
    def numpy(x):
        return np.asarray(x)

    @staticmethod
    def draw(sampler, *args, seed=0):
        return sampler(jax.random.PRNGKey(seed), *args)

    @staticmethod
    def sample(dist, sample_shape=(), seed=0):
        return dist.sample(jax.random.PRNGKey(seed), sample_shape)

    @staticmethod
    def hard_sample(dist, sample_shape=(), seed=0):
        return dist.hard_sample(jax.random.PRNGKey(seed), sample_shape)

    @staticmethod
    def utilities(dist, sample_shape=(), seed=0):
        return dist.sample_utilities(jax.random.PRNGKey(seed), sample_shape)

    @staticmethod
    def relaxed_and_hard(dist, sample_shape=(), seed=0):
        return dist.relaxed_and_hard(jax.random.PRNGKey(seed), sample_shape)

    @staticmethod
    def in_support(dist, x):
        return bool(dist.support(x).all())

    # jit: one compiled program per function (eager JAX compiles and dispatches every operation apart)
    @staticmethod
    def gradient(function, x, *args, dtype="float64", has_aux=False, optimize=False):
        """``optimize``: compiled with LLVM's optimisations, which the suite turns off (``conftest.py``) since most
        of its programs run once: for the few that compute for seconds."""
        arrays = [jnp.asarray(a, dtype) for a in (x, *args)]
        lowered = jax.jit(jax.grad(function, has_aux=has_aux)).lower(*arrays)
        out = lowered.compile({"xla_backend_optimization_level": 2} if optimize else None)(*arrays)
        return jax.tree.map(np.asarray, out)

    @staticmethod
    def check_derivatives(function, x, atol=1e-5, order=1):
        """Forward and reverse mode of ``function`` at float64 ``x`` up to ``order`` against finite differences."""
        check_grads(jax.jit(function), (jnp.asarray(x, jnp.float64),), order=order, modes=["fwd", "rev"], atol=atol)

    @staticmethod
    def value(function, x):
        return float(jax.jit(function)(jnp.asarray(x, jnp.float64)))

    @staticmethod
    def jitted(function, *args):
        return jax.jit(function)


BACKENDS = {"pyro": Pyro, "numpyro": NumPyro}
