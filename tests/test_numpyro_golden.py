"""numpyro_sst reproduces the golden vectors shared with pyro_sst (see golden_cases.py)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from golden_cases import CASES, GOLDEN_PATH, evaluate
from numpyro.distributions import kl_divergence

import numpyro_sst

pytestmark = pytest.mark.filterwarnings("error")
GOLDEN = np.load(GOLDEN_PATH)


def evaluate_numpyro(name, dtype):
    def make(class_name, logits, temperature, options):
        cls = getattr(numpyro_sst, class_name)
        dist = cls(logits, temperature=temperature, **options) if temperature else cls(logits, **options)
        dist.kl_to = lambda other: kl_divergence(dist, other)
        return dist

    return evaluate(make, name, lambda x: jnp.asarray(x, dtype), lambda a: np.asarray(a, np.float64))


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_vectors(name, precision):
    tol = 1e-10 if precision == "float64" else 1e-5
    with jax.enable_x64(precision == "float64"), warnings.catch_warnings():
        # The case asks Sinkhorn for tol=1e-13, which float32 cannot reach: the warning is the right answer.
        warnings.filterwarnings("ignore", "GumbelSinkhorn: stopped", RuntimeWarning)
        out = evaluate_numpyro(name, jnp.float64 if precision == "float64" else jnp.float32)
    expected = {key[len(name) + 1 :] for key in GOLDEN.files if key.startswith(name + "/")}
    assert set(out) == expected - {"logits", "other_logits", "utilities"}
    for key, value in out.items():
        np.testing.assert_allclose(value, GOLDEN[f"{name}/{key}"], atol=tol, rtol=tol, err_msg=f"{name}/{key}")


def test_float32_runs_without_x64_leaking():
    assert not jax.config.jax_enable_x64
