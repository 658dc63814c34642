"""Packaging: a missing backend is named with the extra that installs it; the license and type markers ship; the
wheel and sdist build, and the wheel alone runs the README's quick starts."""

import ast
import inspect
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import typing
import zipfile

import pytest
from test_docs import python_blocks

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


#: the module a distribution installs, where the two names differ
MODULE_OF = {"pyro-ppl": "pyro"}


@pytest.mark.parametrize("package,extra", [("pyro_sst", "pyro"), ("numpyro_sst", "numpyro")])
def test_every_module_a_backend_imports_is_installed_by_its_extra(package, extra):
    """Every third-party module that the backend's code imports (at the top or inside a function) is a core
    dependency or in the backend's extra of pyproject.toml."""
    lists = dict(re.findall(r"^([\w-]+) = (\[.*\])$", (ROOT / "pyproject.toml").read_text(), re.MULTILINE))
    requirements = ast.literal_eval(lists["dependencies"]) + ast.literal_eval(lists[extra])  # (no tomllib in 3.10)
    names = {re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0] for requirement in requirements}
    installed = {MODULE_OF.get(name, name) for name in names}
    imported = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    ours = {package, "sst_common"}
    missing = imported - set(sys.stdlib_module_names) - ours - installed
    assert not missing, f"{package} imports {sorted(missing)}, which [{extra}] does not install"


def test_license_and_type_markers():
    pyproject = (ROOT / "pyproject.toml").read_text().splitlines()
    assert 'license = "Apache-2.0"' in pyproject and 'license-files = ["LICENSE"]' in pyproject  # SPDX, PEP 639
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    for package in ("pyro_sst", "numpyro_sst", "sst_common"):
        assert (ROOT / package / "py.typed").exists()


def _public_callables(package):
    """``(name, function)`` for the public functions, classes' public methods and properties of a package."""
    modules = [(package.ops, package.ops.__all__), (package.distributions, package.distributions.__all__)]
    modules.append((package.estimators, package.estimators.__all__))
    for module, names in modules:
        for name in names:
            obj = getattr(module, name)
            if not getattr(obj, "__module__", "").startswith(package.__name__):
                continue
            if not inspect.isclass(obj):
                yield f"{module.__name__}.{name}", obj
                continue
            if issubclass(obj, tuple):  # NamedTuple results: their fields are annotated by construction
                continue
            for attribute, value in vars(obj).items():
                if attribute.startswith("_") and attribute != "__init__":
                    continue
                function = value.fget if isinstance(value, property) else getattr(obj, attribute)
                if callable(function):
                    yield f"{module.__name__}.{name}.{attribute}", function


@pytest.mark.parametrize("package_name", ["pyro_sst", "numpyro_sst"])
def test_public_api_has_type_hints(package_name):
    """Every parameter (but ``self``, ``*args``, ``**kwargs``) and every return of the public API is annotated,
    and the annotations resolve (``typing.get_type_hints``)."""
    package = pytest.importorskip(package_name)
    missing = []
    for name, function in _public_callables(package):
        hints = typing.get_type_hints(function)
        parameters = inspect.signature(function).parameters.values()
        variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        unannotated = [p.name for p in parameters if p.name not in ("self", "cls") and p.kind not in variadic]
        unannotated = [p for p in unannotated if p not in hints] + ([] if "return" in hints else ["return"])
        if unannotated:
            missing.append(f"{name}: {unannotated}")
    assert not missing, "\n".join(missing)
    assert sum(1 for _ in _public_callables(package)) > 80  # the walk finds the API


def test_wheel_and_sdist_build_and_the_wheel_runs_the_readme_quick_starts(tmp_path):
    """``python -m build`` makes a wheel and an sdist; the wheel, installed into a fresh venv, runs every Python
    block of the README with the repository off the path (the venv sees this environment's torch and JAX, not
    its editable install of this project, whose import hook only the site directory's own .pth files start)."""
    source, dist = tmp_path / "source", tmp_path / "dist"  # a copy: building writes metadata beside the sources
    skipped = shutil.ignore_patterns(".*", "_build", "__pycache__", "*.egg-info", "build", "dist")
    shutil.copytree(ROOT, source, ignore=skipped)
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir", str(dist), str(source)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    for package in ("pyro_sst", "numpyro_sst", "sst_common"):
        assert f"{package}/__init__.py" in names and f"{package}/py.typed" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    assert not any(name.startswith(("tests/", "examples/", "benchmarks/")) for name in names)
    with tarfile.open(sdist) as archive:
        assert any(name.endswith("/LICENSE") for name in archive.getnames())

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (pathlib.Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=300,
    )
    blocks = python_blocks(ROOT / "README.md")
    script = tmp_path / "quick_start.py"
    script.write_text(
        "\n".join(blocks) + "\nimport pyro_sst, numpyro_sst\nprint(pyro_sst.__file__)\nprint(numpyro_sst.__file__)\n"
    )
    done = subprocess.run(
        [str(python), str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    *_, pyro_file, numpyro_file = done.stdout.strip().splitlines()
    assert pyro_file.startswith(site) and numpyro_file.startswith(site)  # the wheel's copy, not the repository
