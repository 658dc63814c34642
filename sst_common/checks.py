"""Argument checks and option names that do not depend on the array library (both backends import them).

Every check raises :class:`ValueError` naming the argument and the allowed range.
"""

import math
import operator

#: utility (noise) distributions of the perturb-and-relax trick
NOISES = ("gumbel", "gaussian", "negative_exponential")
#: how Sinkhorn is differentiated
BACKWARDS = ("unrolled", "implicit")
#: largest ``n`` for which the log-permanent is exact by default (``n^2 2^n`` work)
EXACT_MAX_N = 12


def check_int(value, name, low, high=None, context=""):
    """``value`` as a Python int in ``[low, high]`` (``high=None``: unbounded).

    Any integral type (NumPy ints, 0-d integer tensors or arrays) is accepted; bool is not.
    """
    try:
        index = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        index = None
    if index is None or index < low or (high is not None and index > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an int {allowed}{context}, got {value!r}")
    return index


def check_float(value, name, low=None, inclusive=False):
    """``value`` as a Python float, above ``low`` (or equal, if ``inclusive``); NumPy scalars and 0-d arrays too."""
    try:
        number = None if isinstance(value, bool) else float(value)
    except (TypeError, ValueError, RuntimeError):
        number = None
    in_range = number is not None and (low is None or number > low or (inclusive and number == low))
    if not in_range or number != number:
        allowed = "a float" if low is None else f"a float {'>=' if inclusive else '>'} {low}"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return number


#: floating dtypes the ops compute in, by name (float16/bfloat16 lack the batched linear algebra and the range)
FLOAT_DTYPE_NAMES = ("float32", "float64")


def check_array_layout(shape, dtype, name, event_dim):
    """An array of ``shape`` and ``dtype`` must be float32/float64 with at least ``event_dim`` dims, each event
    dim of size >= 1 (``dtype`` as the array library names it: ``torch.float32`` or ``float32``)."""
    if str(dtype).removeprefix("torch.") not in FLOAT_DTYPE_NAMES:
        raise ValueError(f"{name} must have dtype float32 or float64, got {dtype}")
    if len(shape) < event_dim or any(size == 0 for size in shape[len(shape) - event_dim :]):
        layout = "(..., d)" if event_dim == 1 else "(..., n, n)"
        raise ValueError(f"{name} must have shape {layout} with size >= 1, got shape {tuple(shape)}")


def check_square_shape(shape, name):
    """An array of ``shape`` (checked by :func:`check_array_layout` with ``event_dim=2``) must be ``(..., n, n)``."""
    if shape[-1] != shape[-2]:
        raise ValueError(f"{name} must have shape (..., n, n), got shape {tuple(shape)}")


def empty_support_message(structure):
    """What the marginals, samplers and solvers raise where no ``structure`` has finite weight."""
    return (
        f"logits: no {structure} has finite weight (the log-partition is -inf), so the marginals, "
        "samples and modes are undefined; -inf logits mark absent edges or items"
    )


def too_few_items_message(name, k, fewest):
    """What the k-subset ops raise where a batch element has only ``fewest`` items above ``-inf``, fewer than ``k``."""
    return (
        f"{name}: k={k} exceeds the number of items with logits above -inf (as few as {fewest} in some batch element)"
    )


def no_assignment_message(element):
    """What ``max_assignment`` raises where batch element ``element`` has no permutation of finite weight."""
    return f"weights: batch element {element} has no assignment of finite weight"


#: relaxations of a k-subset (``RelaxedTopK(relaxation=...)``), in the order the docs list them
RELAXATIONS = ("exp_family", "euclidean", "categorical_entropy", "binary_entropy")


def check_relaxation(relaxation):
    if relaxation not in RELAXATIONS:
        raise ValueError(f"relaxation must be one of {RELAXATIONS}, got {relaxation!r}")


def all_options(cls):
    """The static options of a distribution class: the ``_options`` that it and each class it derives from
    declare, in the order of its method resolution order, each once."""
    return tuple(dict.fromkeys(name for base in cls.__mro__ for name in base.__dict__.get("_options", ())))


def check_same_options(q, p):
    """KL divergences need the two distributions to live on the same structure (``straight_through`` aside)."""
    if type(q) is not type(p) or q.event_shape != p.event_shape:
        raise ValueError(f"kl_divergence needs two {type(q).__name__} with the same event shape")
    for name in all_options(type(q)):
        if name != "straight_through" and getattr(q, name) != getattr(p, name):
            raise ValueError(f"kl_divergence needs the same {name}, got {getattr(q, name)!r} and {getattr(p, name)!r}")


def check_baseline(baseline, num_samples):
    """An estimator's ``baseline``: ``None``, ``"loo"`` (with at least 2 samples), a number or a callable."""
    if isinstance(baseline, str):
        if baseline != "loo":
            raise ValueError(f"baseline must be None, 'loo', a float or a callable, got {baseline!r}")
        if num_samples < 2:
            raise ValueError(f"num_samples must be >= 2 for baseline='loo', got {num_samples}")
    elif not (baseline is None or callable(baseline) or isinstance(baseline, (int, float))):
        raise ValueError(f"baseline must be None, 'loo', a float or a callable, got {type(baseline).__name__}")


def check_noise(noise):
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")


def check_root(n, root, single_root):
    """``root`` as an int in ``[0, n - 1]``; ``single_root`` needs ``n >= 2``."""
    root = check_int(root, "root", 0, n - 1, f" for {n} nodes")
    if single_root and n < 2:
        raise ValueError("single_root=True needs at least 2 nodes")
    return root


def check_k(k, d):
    """``k`` as an int in ``[0, d]``."""
    return check_int(k, "k", 0, d, f" (d={d} items)")


def check_sinkhorn_args(n_iters, tol, backward):
    """``(n_iters, tol)`` as an int >= 1 and a float >= 0; ``backward`` one of :data:`BACKWARDS`."""
    n_iters = check_int(n_iters, "n_iters", 1)
    tol = check_float(tol, "tol", 0.0, inclusive=True)
    if backward not in BACKWARDS:
        raise ValueError(f"backward must be one of {BACKWARDS}, got {backward!r}")
    return n_iters, tol


def num_nodes_from_num_edges(num_edges: int) -> int:
    """``n`` with ``n (n - 1) / 2 == num_edges`` (Pyro's colex edge layout)."""
    n = int(round(0.5 + math.sqrt(0.25 + 2 * num_edges)))
    if n * (n - 1) // 2 != num_edges:
        raise ValueError(f"edge_logits must have n(n-1)/2 entries in its last dim, got {num_edges}")
    return n


#: largest ``k`` whose Gumbel-top-k set probabilities are summed over the ``k!`` orderings
MAX_ORDERED_K = 7


def check_ordered_k(k):
    """``k`` small enough to enumerate the ``k!`` orderings of a Gumbel-top-k set."""
    if not 1 <= k <= MAX_ORDERED_K:
        raise ValueError(
            f"k must be in [1, {MAX_ORDERED_K}] for Gumbel-top-k set probabilities and conditional utilities "
            f"(they sum over the k! orderings of the set), got {k}"
        )
    return k


def check_event_shape(value, event_shape):
    """Raise unless ``value`` (any array) ends in ``event_shape``: ``log_prob`` broadcasts only its leading dims."""
    shape = tuple(value.shape)
    event_shape = tuple(event_shape)
    if shape[len(shape) - len(event_shape) :] != event_shape or len(shape) < len(event_shape):
        layout = ", ".join(["..."] + [str(size) for size in event_shape])
        raise ValueError(f"value must have shape ({layout}) (event shape {event_shape}), got shape {shape}")


def unsupported_distribution(dist, what):
    """The ``ValueError`` of an estimator (``what``) given a distribution it has no method for."""
    note = f" with noise={dist.noise!r} (needs 'gumbel')" if getattr(dist, "noise", "gumbel") != "gumbel" else ""
    return ValueError(f"dist: {what} does not support {type(dist).__name__}{note}")


def values_per_structure(f, structures, dist, name="f"):
    """``f(structures)`` for structures of ``dist``, checked to hold one value per structure (a ``ValueError``
    naming ``name`` otherwise)."""
    return check_per_structure(f(structures), structures, len(dist.event_shape), name)


def check_per_structure(values, structures, event_ndim, name="f"):
    """Raise unless ``values`` (what ``name`` returned for ``structures``) has one entry per structure.

    ``structures`` has shape ``sample_shape + batch_shape + event_shape``; ``values`` must have shape
    ``sample_shape + batch_shape``.
    """
    expected = tuple(structures.shape[: len(structures.shape) - event_ndim])
    if tuple(values.shape) != expected:
        raise ValueError(
            f"{name} must return one value per structure: shape {expected} (sample_shape + batch_shape) for "
            f"structures of shape {tuple(structures.shape)}, got shape {tuple(values.shape)}"
        )
    return values


#: the check on ``logits`` under validation: only the entries a structure reads are parameters
INVALID_LOGITS = "logits must be finite (no NaN or inf) on the entries that are read"
#: categoricals: ``-inf`` is a class of probability 0 (as in torch's and NumPyro's ``Categorical``)
INVALID_CATEGORICAL_LOGITS = "logits must not be NaN or +inf (-inf marks a class of probability 0)"
NO_CLASS = "logits: every class is absent (-inf) in some batch element, so its samples are undefined"
INVALID_PROBS = (
    "probs must be finite and nonnegative with a positive sum over the last dimension (a class of probability 0 "
    "is absent)"
)
