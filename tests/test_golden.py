"""pyro_sst reproduces the golden vectors shared with numpyro_sst (see golden_cases.py)."""

import numpy as np
import pytest
import torch
from golden_cases import CASES, GOLDEN_PATH, evaluate_pyro

GOLDEN = np.load(GOLDEN_PATH)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_vectors(name, dtype, tol):
    out = evaluate_pyro(name, dtype)
    expected = {key[len(name) + 1 :] for key in GOLDEN.files if key.startswith(name + "/")}
    assert set(out) <= expected
    for key, value in out.items():
        np.testing.assert_allclose(value, GOLDEN[f"{name}/{key}"], atol=tol, rtol=tol, err_msg=f"{name}/{key}")
