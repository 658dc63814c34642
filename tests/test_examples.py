"""The examples run end to end in their tiny mode and recover the hidden structure."""

import importlib.util
import pathlib

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples" / "pyro"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_spanning_tree_svi_example_tiny():
    example = _load("spanning_tree_svi")
    precision, recall = example.main(example.parse_args(["--tiny"]))
    assert precision >= 0.85 and recall >= 0.85
