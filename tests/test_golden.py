"""pyro_sst reproduces the golden vectors shared with numpyro_sst (see golden_cases.py)."""

import numpy as np
import pytest
import torch
from golden_cases import CASES, GOLDEN_PATH, evaluate
from torch.distributions import kl_divergence

import pyro_sst

GOLDEN = np.load(GOLDEN_PATH)


def _make(dtype):
    def make(class_name, logits, temperature, options):
        cls = getattr(pyro_sst, class_name)
        dist = cls(logits, temperature=temperature, **options) if temperature else cls(logits, **options)
        dist.kl_to = lambda other: kl_divergence(dist, other)
        return dist

    return make


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_vectors(name, dtype, tol):
    out = evaluate(_make(dtype), name, lambda x: torch.as_tensor(x, dtype=dtype), lambda t: t.detach().double().numpy())
    expected = {key[len(name) + 1 :] for key in GOLDEN.files if key.startswith(name + "/")}
    assert set(out) <= expected
    for key, value in out.items():
        np.testing.assert_allclose(value, GOLDEN[f"{name}/{key}"], atol=tol, rtol=tol, err_msg=f"{name}/{key}")
