"""Packaging: a missing backend is named with the extra that installs it; the license and type markers ship."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "package,hidden,extra",
    [("numpyro_sst", "jax", "[numpyro]"), ("numpyro_sst", "numpyro", "[numpyro]"), ("pyro_sst", "torch", "[pyro]")],
)
def test_a_missing_backend_names_its_extra(package, hidden, extra):
    """Import ``package`` in a fresh interpreter where ``hidden`` cannot be imported."""
    code = f"import sys; sys.modules[{hidden!r}] = None; import {package}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("ImportError:") and hidden in message and extra in message, message


def test_license_and_type_markers():
    pyproject = (ROOT / "pyproject.toml").read_text().splitlines()
    assert 'license = "Apache-2.0"' in pyproject and 'license-files = ["LICENSE"]' in pyproject  # SPDX, PEP 639
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    for package in ("pyro_sst", "numpyro_sst", "sst_common"):
        assert (ROOT / package / "py.typed").exists()
