"""The examples run end to end in their smoke mode and recover the hidden structure."""

import importlib.util
import pathlib
import subprocess
import sys
import tempfile

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _load(name, backend="pyro"):
    spec = importlib.util.spec_from_file_location(f"{backend}_{name}", EXAMPLES / backend / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_spanning_tree_svi_example_smoke(backend, tmp_path):
    example = _load("spanning_tree_svi", backend)
    precision, recall = example.main(example.parse_args(["--smoke", "--out", str(tmp_path / "tree.png")]))
    assert precision >= 0.85 and recall >= 0.85
    assert (tmp_path / "tree.png").stat().st_size > 0


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_estimators_example_smoke(backend, tmp_path):
    example = _load("estimators", backend)
    summary = example.main(example.parse_args(["--smoke", "--out", str(tmp_path / "estimators.png")]))
    assert (tmp_path / "estimators.png").stat().st_size > 0
    assert set(summary["toy"]) == {"reinforce", "reinforce_rloo", "concrete", "straight_through", "rebar", "relax"}
    rows = summary["structured"]["k_subset"]["estimators"]
    # Unbiased estimators agree with the exact gradient within 5 standard errors, even at the smoke size.
    for name in ("reinforce", "reinforce_rloo_x4", "rebar@t=0.3", "relax_f_cv@t=0.3"):
        assert rows[name]["bias"] < 5 * rows[name]["bias_standard_error"], (name, rows[name])
    # RLOO (4 draws) has far less variance than plain REINFORCE (1 draw) on this reward.
    assert rows["reinforce_rloo_x4"]["variance"] * 4 < rows["reinforce"]["variance"]


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_sorting_example_smoke(backend, tmp_path):
    example = _load("sorting", backend)
    results = example.main(example.parse_args(["--smoke", "--out", str(tmp_path / "sorting.png")]))
    assert set(results) == {"N=5"}  # the smoke size: lists of 5 only
    assert results["N=5"]["prop_correct_positions"] >= 0.9
    assert (tmp_path / "sorting.png").stat().st_size > 0


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_graph_layout_example_smoke(backend, tmp_path):
    example = _load("graph_layout", backend)
    results = example.main(example.parse_args(["--smoke", "--out", str(tmp_path / "layout.png")]))
    assert (tmp_path / "layout.png").stat().st_size > 0
    assert set(results) == {"tree", "topk", "independent"}
    for metrics in results.values():
        assert set(metrics) == {"edge_precision", "edge_recall", "elbo", "mode_edge_precision"}
    # Trees and (n-1)-subsets have n - 1 edges, like the truth: precision equals recall.
    for latent in ("tree", "topk"):
        assert results[latent]["edge_precision"] == results[latent]["edge_recall"]
    # 60 steps on 6 nodes already beat chance (2 / n = 0.33 of the pairs are edges).
    assert results["tree"]["edge_precision"] > 0.5


def test_subset_selection_example_smoke(tmp_path):
    example = _load("subset_selection")
    results = example.main(example.parse_args(["--smoke", "--out", str(tmp_path / "subsets.png")]))
    assert (tmp_path / "subsets.png").stat().st_size > 0
    assert set(results) == {"exp_family", "euclidean", "categorical_entropy", "binary_entropy", "l2x"}
    # Chance is k / d = 0.4 at the smoke size (d = 10).
    assert all(metrics["subset_precision"] > 0.55 for metrics in results.values()), results


def test_listops_parsing_example_smoke(tmp_path):
    example = _load("listops_parsing")
    results = example.main(example.parse_args(["--smoke", "--out", str(tmp_path / "listops.png")]))
    assert (tmp_path / "listops.png").stat().st_size > 0
    assert set(results) == {"arborescence", "independent", "true_parse"}
    for metrics in results.values():
        assert set(metrics) == {"accuracy", "edge_precision", "edge_recall"}
    assert results["true_parse"]["edge_precision"] == results["true_parse"]["edge_recall"] == 1.0
    # Padding hangs from the root by -inf logits, so every real non-root token has one real parent.
    assert results["arborescence"]["edge_precision"] == results["arborescence"]["edge_recall"]
    assert results["arborescence"]["accuracy"] > 0.2  # ten classes


def test_listops_parser_allows_operators_as_parents_only():
    import numpy as np
    import torch

    example = _load("listops_parsing")
    tokens, _, true_parents = example.datasets.listops(np.random.default_rng(1), 64, max_length=16)
    tokens, true_parents = torch.as_tensor(tokens), torch.as_tensor(true_parents)
    logits = example.Parser(16, 8)(tokens)
    batch, parents, children = torch.isfinite(logits).nonzero(as_tuple=True)
    parent_tokens, child_tokens = tokens[batch, parents], tokens[batch, children]
    assert example.is_operator(parent_tokens).all()
    no_value = (child_tokens == example.PAD) | (child_tokens == example.BRACKET)
    assert (parents[no_value] == 0).all()  # brackets and padding hang from the root only
    mode, _ = example.latent_graph("arborescence", logits, 0.5, hard=True)
    assert (mode.sum(-2)[:, 1:] == 1).all()  # one parent each, from the allowed arcs
    assert (mode * ~torch.isfinite(logits)).sum() == 0
    # The true parse is one of the arborescences the mask allows.
    truth = example.parse_adjacency(true_parents, tokens)
    assert (truth.sum(-2)[:, 1:] == 1).all() and (truth[:, :, 0] == 0).all()
    assert (truth * ~torch.isfinite(logits)).sum() == 0


def test_listops_data_parses_match_the_expressions():
    import sys

    import numpy as np

    sys.path.insert(0, str(EXAMPLES))
    import datasets

    tokens, values, parents = datasets.listops(np.random.default_rng(0), 200)
    vocabulary = datasets.LISTOPS_VOCABULARY
    operators = {"[MIN": min, "[MAX": max, "[MED": lambda a: int(np.median(a)), "[SM": lambda a: sum(a) % 10}

    def evaluate(row, node):
        # The value of a node from the parse alone: an operator applied to its children's values.
        token = vocabulary[tokens[row, node]]
        if token.isdigit():
            return int(token)
        children = [c for c in range(1, tokens.shape[1]) if parents[row, c] == node and tokens[row, c] > 1]
        return operators[token]([evaluate(row, c) for c in children])

    for row in range(len(tokens)):
        assert evaluate(row, 0) == values[row]
        real = tokens[row] != 0
        # Every closing bracket hangs from an operator that opens before it.
        for c in np.flatnonzero(real & (tokens[row] == 1)):
            assert vocabulary[tokens[row, parents[row, c]]].startswith("[") and parents[row, c] < c


def test_random_trees_are_uniform_spanning_trees():
    import sys
    from collections import Counter

    import networkx as nx
    import numpy as np

    sys.path.insert(0, str(EXAMPLES))
    import datasets

    trees = datasets.random_trees(np.random.default_rng(0), 8000, 4)
    assert all(nx.is_tree(nx.from_numpy_array(a)) for a in trees)
    counts = Counter(tuple(a[np.triu_indices(4, 1)]) for a in trees)
    # Cayley: 16 labelled trees on 4 nodes, 500 draws each expected (sd ~22).
    assert len(counts) == 16 and all(abs(c - 500) < 100 for c in counts.values())


@pytest.mark.parametrize(
    "backend,name",
    [(b, p.stem) for b in ("pyro", "numpyro") for p in sorted((EXAMPLES / b).glob("*.py"))],
)
def test_smoke_runs_never_write_over_the_documented_figure(backend, name):
    example = _load(name, backend)
    documented = EXAMPLES / backend / f"{name}.png"
    assert pathlib.Path(example.parse_args([]).out) == documented
    smoke = example.parse_args(["--smoke"])
    smoke_out = pathlib.Path(smoke.out)
    assert smoke_out == pathlib.Path(tempfile.gettempdir()) / f"smoke_{name}.png"
    assert smoke_out != documented and EXAMPLES not in smoke_out.parents
    sizes = {key: value for key, value in vars(smoke).items() if key not in ("out", "smoke")}
    assert sizes != {key: value for key, value in vars(example.parse_args([])).items() if key not in ("out", "smoke")}
    assert pathlib.Path(example.parse_args(["--smoke", "--out", "x.png"]).out) == pathlib.Path("x.png")


@pytest.mark.parametrize("script", sorted(EXAMPLES.glob("*/*.py")), ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_help_answers_before_torch_or_jax_loads_and_shows_the_defaults(script):
    # With torch, JAX, Pyro and NumPyro unimportable, --help still answers: it never waits for them to load.
    code = (
        "import runpy, sys; sys.modules.update(torch=None, jax=None, pyro=None, numpyro=None); "
        "sys.argv = [sys.argv[1], '--help']; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    done = subprocess.run([sys.executable, "-c", code, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--smoke" in done.stdout and "(default: 0)" in done.stdout  # --seed's default, shown


def test_a_missing_matplotlib_is_named_with_its_extra_before_any_training():
    code = (
        "import runpy, sys; sys.modules.update(matplotlib=None, torch=None); "
        "sys.argv = [sys.argv[1], '--smoke']; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    script = EXAMPLES / "pyro" / "spanning_tree_svi.py"
    done = subprocess.run([sys.executable, "-c", code, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "'.[examples]'" in done.stderr, done.stderr[-2000:]
