"""Golden vectors shared by both backends: fixed inputs, and the outputs every class must reproduce.

The cases are plain data (a class name, its keyword options, a temperature), so each backend builds
them with its own classes. ``python tests/golden_cases.py`` recomputes the outputs with pyro_sst in
float64, checks the log-partitions, marginals, entropies and mode scores against brute-force
enumeration (1e-12), and writes ``tests/golden.npz``; ``tests/test_golden.py`` asserts them (float64 1e-10, float32
1e-5) and numpyro_sst's tests assert the same file.

Per case the file holds ``<case>/<quantity>`` for the quantities below; inputs are ``<case>/logits``,
``<case>/other_logits`` (the second argument of the KL) and ``<case>/utilities``.
"""

import os

import numpy as np

GOLDEN_PATH = os.path.join(os.path.dirname(__file__), "golden.npz")
BATCH = 2
TEMPERATURE = 0.7

#: name -> (class name, options, event shape)
CASES = {
    "RelaxedSpanningTree": ("RelaxedSpanningTree", {}, (5, 5)),
    "RelaxedArborescence[root=1]": ("RelaxedArborescence", {"root": 1}, (5, 5)),
    "RelaxedArborescence[root=1,single_root]": ("RelaxedArborescence", {"root": 1, "single_root": True}, (5, 5)),
    "GumbelSinkhorn": ("GumbelSinkhorn", {"n_iters": 5000, "tol": 1e-13}, (5, 5)),
    "SpanningTree": ("SpanningTree", {}, (5, 5)),
    "Arborescence[root=2,single_root]": ("Arborescence", {"root": 2, "single_root": True}, (5, 5)),
    "KSubset[k=3]": ("KSubset", {"k": 3}, (7,)),
    "KSubset[k=5]": ("KSubset", {"k": 5}, (7,)),
}
for _relaxation in ("exp_family", "euclidean", "categorical_entropy", "binary_entropy"):
    CASES[f"RelaxedTopK[k=3,{_relaxation}]"] = ("RelaxedTopK", {"k": 3, "relaxation": _relaxation}, (7,))

#: quantities of every class; the relaxed classes add RELAXED_QUANTITIES, the exponential families ``entropy``
QUANTITIES = ("log_partition", "marginals", "mode", "solve", "log_prob_mode", "kl")
RELAXED_QUANTITIES = ("relax",)


def is_relaxed(class_name):
    return class_name.startswith(("Relaxed", "Gumbel"))


def inputs(name):
    """``(logits, other_logits, utilities)`` of a case, float64 NumPy arrays of shape ``(BATCH,) + event``."""
    _, _, event = CASES[name]
    rng = np.random.RandomState(sorted(CASES).index(name))
    shape = (BATCH,) + event
    logits = rng.normal(size=shape)
    other = rng.normal(size=shape)
    utilities = logits - np.log(-np.log(rng.uniform(size=shape)))
    return logits, other, utilities


def evaluate(make, name, to_input, to_array):
    """Every quantity of case ``name`` as NumPy arrays.

    ``make(class_name, logits, temperature, options)`` builds an instance with a ``kl_to(other)`` method;
    ``to_input`` turns a NumPy array into the backend's array, ``to_array`` does the reverse.
    """
    class_name, options, _ = CASES[name]
    logits, other_logits, utilities = (to_input(x) for x in inputs(name))
    temperature = TEMPERATURE if is_relaxed(class_name) else None
    q = make(class_name, logits, temperature, options)
    p = make(class_name, other_logits, temperature, options)
    out = {
        "log_partition": q.log_partition,
        "marginals": q.marginals,
        "mode": q.mode,
        "solve": q.solve(utilities),
        "log_prob_mode": q.log_prob(q.mode),
        "kl": q.kl_to(p),
    }
    if is_relaxed(class_name):
        out["relax"] = q.relax(utilities)
    else:
        out["entropy"] = q.entropy()
    return {key: to_array(value) for key, value in out.items()}


def _enumerated(name, logits):
    """The brute-force exponential family of one batch element of a case (``reference.py``)."""
    from reference import ExpFamily, arborescence_family, k_subsets, permutations, spanning_tree_family

    class_name, options, _ = CASES[name]
    if "SpanningTree" in class_name:
        return spanning_tree_family(logits)
    if "Arborescence" in class_name:
        return arborescence_family(logits, options["root"], options.get("single_root", False))
    if "Sinkhorn" in class_name:
        return ExpFamily(permutations(logits.shape[-1]), logits)
    return ExpFamily(k_subsets(logits.shape[-1], options["k"]), logits)


def _check_against_enumeration(name, out):
    logits = inputs(name)[0]
    for b in range(BATCH):
        ref = _enumerated(name, logits[b])
        np.testing.assert_allclose(out["log_partition"][b], ref.log_partition, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(out["marginals"][b], ref.marginals, atol=1e-12)
        np.testing.assert_allclose(out["log_prob_mode"][b], ref.max_score - ref.log_partition, atol=1e-12)
        if "entropy" in out:
            np.testing.assert_allclose(out["entropy"][b], ref.entropy, atol=1e-12)


def evaluate_pyro(name, dtype):
    """:func:`evaluate` with pyro_sst's classes in ``dtype`` (a ``torch.dtype``)."""
    import torch
    from torch.distributions import kl_divergence

    import pyro_sst

    def make(class_name, logits, temperature, options):
        cls = getattr(pyro_sst, class_name)
        dist = cls(logits, temperature=temperature, **options) if temperature else cls(logits, **options)
        dist.kl_to = lambda other: kl_divergence(dist, other)
        return dist

    return evaluate(make, name, lambda x: torch.as_tensor(x, dtype=dtype), lambda t: t.detach().double().numpy())


def _write():
    import torch

    arrays = {}
    for name in CASES:
        for key, value in zip(("logits", "other_logits", "utilities"), inputs(name), strict=True):
            arrays[f"{name}/{key}"] = value
        out = evaluate_pyro(name, torch.float64)
        _check_against_enumeration(name, out)
        for key, value in out.items():
            arrays[f"{name}/{key}"] = value
    np.savez_compressed(GOLDEN_PATH, **arrays)
    print(f"wrote {len(arrays)} arrays to {GOLDEN_PATH}")


if __name__ == "__main__":
    _write()
