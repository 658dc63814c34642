"""Brute-force NumPy references shared by the test-suites of both backends.

Everything here enumerates the whole support, so it is only for small sizes, and
it deliberately shares no code with the packages under test.
"""

import itertools

import numpy as np
from scipy.special import logsumexp, xlogy


def _connected(n, edges):
    parent = list(range(n))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, j in edges:
        parent[find(i)] = find(j)
    return len({find(v) for v in range(n)}) == 1


def spanning_trees(n):
    """All spanning trees of K_n as symmetric 0/1 matrices, shape (N, n, n)."""
    pairs = list(itertools.combinations(range(n), 2))
    trees = []
    for edges in itertools.combinations(pairs, n - 1):
        if _connected(n, edges):
            x = np.zeros((n, n))
            for i, j in edges:
                x[i, j] = x[j, i] = 1
            trees.append(x)
    return np.stack(trees)


def arborescences(n, root=0, single_root=False):
    """All arborescences of the complete digraph rooted at ``root``, shape (N, n, n).

    ``x[i, j] = 1`` iff ``i`` is the parent of ``j``.
    """
    others = [v for v in range(n) if v != root]
    out = []
    for parents in itertools.product(range(n), repeat=len(others)):
        if any(p == v for p, v in zip(parents, others, strict=True)):
            continue
        par = dict(zip(others, parents, strict=True))
        ok = True
        for v in others:  # every node must reach the root without a cycle
            seen, u = set(), v
            while u != root and ok:
                if u in seen:
                    ok = False
                seen.add(u)
                u = par[u]
        if not ok:
            continue
        if single_root and sum(p == root for p in parents) != 1:
            continue
        x = np.zeros((n, n))
        for v, p in par.items():
            x[p, v] = 1
        out.append(x)
    return np.stack(out)


def k_subsets(d, k):
    """All k-hot vectors of length d, shape (N, d)."""
    out = []
    for idx in itertools.combinations(range(d), k):
        x = np.zeros(d)
        x[list(idx)] = 1
        out.append(x)
    return np.stack(out)


def permutations(n):
    """All n x n permutation matrices, shape (n!, n, n)."""
    return np.stack([np.eye(n)[list(p)] for p in itertools.permutations(range(n))])


def subset_marginals_by_dp(theta, k):
    """k-subset marginals of float64 logits ``(d,)`` by the sequential prefix/suffix DP in log space, ``O(d k)``.

    Independent of the library's tree of FFT-multiplied count distributions; accurate to about
    ``eps`` times the largest partial log-weight.
    """
    theta = np.asarray(theta, np.float64)
    d = theta.shape[0]

    def prefixes(items):
        table = np.full((d + 1, k + 1), -np.inf)
        table[0, 0] = 0.0
        for i, t in enumerate(items):
            table[i + 1] = table[i]
            table[i + 1, 1:] = np.logaddexp(table[i, 1:], table[i, :-1] + t)
        return table

    before = prefixes(theta)  # before[i]: items 0 .. i-1
    after = prefixes(theta[::-1])[::-1]  # after[i]: items i .. d-1
    # log e_{k-1} of the items other than i: sum over j of before[i, j] * after[i + 1, k - 1 - j]
    others = before[:d, :k] + after[1:, k - 1 :: -1]
    top = others.max(-1, keepdims=True)
    log_others = top[:, 0] + np.log(np.exp(others - top).sum(-1))
    return np.exp(theta + log_others - before[d, k])


class ExpFamily:
    """Exponential family ``q(x) = exp(<theta, x> - A)`` over an explicit support.

    ``weight_mask`` selects the free entries of theta that enter ``<theta, x>``
    (the strict upper triangle for undirected trees).
    """

    def __init__(self, support, theta, weight_mask=None):
        self.support = np.asarray(support, dtype=np.float64)
        theta = np.asarray(theta, dtype=np.float64)
        mask = np.ones(theta.shape) if weight_mask is None else weight_mask
        flat = self.support.reshape(len(self.support), -1)
        self.scores = flat @ np.where(mask, theta, 0).reshape(-1)
        self.log_partition = logsumexp(self.scores)
        self.probs = np.exp(self.scores - self.log_partition)
        self.marginals = np.tensordot(self.probs, self.support, axes=1)
        self.mode = self.support[np.argmax(self.scores)]
        self.max_score = self.scores.max()
        self.entropy = -xlogy(self.probs, self.probs).sum()

    def assert_matches(self, log_partition, marginals, mode, atol=1e-10):
        """The log-partition, marginals and mode of one element (NumPy) match the enumeration within ``atol``."""
        assert abs(float(log_partition) - self.log_partition) < atol
        np.testing.assert_allclose(marginals, self.marginals, atol=atol)
        np.testing.assert_array_equal(mode, self.mode)

    def index_of(self, values):
        """Position of each value in the support (values: (S, ...) 0/1 arrays), by a table of their bytes."""
        positions = {row.tobytes(): i for i, row in enumerate(self._as_bytes(self.support))}
        index = np.array([positions.get(row.tobytes(), -1) for row in self._as_bytes(values)])
        assert (index >= 0).all(), "value outside the support"
        return index

    @staticmethod
    def _as_bytes(values):
        values = np.asarray(values)
        rounded = np.rint(values)
        assert np.abs(values - rounded).max(initial=0.0) < 0.25, "values must be 0/1 structures"
        return rounded.astype(np.int8).reshape(len(values), -1)

    def total_variation(self, values):
        """TV distance between the empirical distribution of ``values`` and q."""
        counts = np.bincount(self.index_of(values), minlength=len(self.support))
        return 0.5 * np.abs(counts / counts.sum() - self.probs).sum()


def upper_mask(n):
    return np.triu(np.ones((n, n), dtype=bool), 1)


def spanning_tree_family(theta):
    n = theta.shape[-1]
    return ExpFamily(spanning_trees(n), theta, upper_mask(n))


def arborescence_family(theta, root=0, single_root=False):
    return ExpFamily(arborescences(theta.shape[-1], root, single_root), theta)


def exact_hessian_vector_product(support, theta, vector, weight_mask=None, digits=60):
    """``(A(theta), mu, H v)`` of the exponential family over ``support`` in ``digits``-digit arithmetic (mpmath).

    ``H v = Cov_q(x) v = E[x <x, v>] - mu <mu, v>``: every float reference (autograd of ``logdet``
    included) loses digits at large spreads, this one does not.
    """
    import mpmath

    support = np.asarray(support, dtype=np.float64)
    mask = np.ones(support.shape[1:], dtype=bool) if weight_mask is None else weight_mask
    flat = support.reshape(len(support), -1)
    theta = np.where(mask, np.asarray(theta, dtype=np.float64), 0).reshape(-1)
    vector = np.where(mask, np.asarray(vector, dtype=np.float64), 0).reshape(-1)
    with mpmath.workdps(digits):
        scores = [mpmath.fsum(mpmath.mpf(float(t)) for t, on in zip(theta, x, strict=True) if on) for x in flat]
        log_z = mpmath.log(mpmath.fsum(mpmath.exp(s) for s in scores))
        probs = [mpmath.exp(s - log_z) for s in scores]
        dots = [mpmath.fsum(mpmath.mpf(float(v)) for v, on in zip(vector, x, strict=True) if on) for x in flat]
        mean_dot = mpmath.fsum(p * d for p, d in zip(probs, dots, strict=True))
        columns = flat.T
        mu = [mpmath.fsum(p for p, on in zip(probs, c, strict=True) if on) for c in columns]
        hvp = [mpmath.fsum(p * (d - mean_dot) for p, d, on in zip(probs, dots, c, strict=True) if on) for c in columns]
        shape = support.shape[1:]
        return (
            float(log_z),
            np.array([float(m) for m in mu]).reshape(shape),
            np.array([float(h) for h in hvp]).reshape(shape),
        )
