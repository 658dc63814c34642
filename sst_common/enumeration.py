"""Every member of a small support, as NumPy arrays: the backends wrap these in their own arrays.

All structures use the value layouts of the packages: symmetric ``(n, n)`` trees, ``x[i, j] = 1``
for the arborescence edge ``i -> j``, k-hot vectors, and ``x[i, j] = 1`` iff row ``i`` goes to
column ``j`` for permutations.
"""

import itertools
import math

import numpy as np

#: largest number of nodes for which trees and arborescences are enumerated (n^(n-2) = 16807 trees at 7)
MAX_TREE_NODES = 7
#: largest number of subsets enumerated
MAX_SUBSETS = 10**6
#: largest n for which permutations are enumerated (8! = 40320)
MAX_PERMUTATION_ITEMS = 8


def _prufer_trees(n):
    """Adjacency lists of all n^(n-2) labelled trees, by Prüfer decoding."""
    trees = []
    for seq in itertools.product(range(n), repeat=max(n - 2, 0)):
        degree = [1] * n
        for a in seq:
            degree[a] += 1
        adj = [[] for _ in range(n)]
        for a in seq:
            leaf = degree.index(1)
            adj[leaf].append(a)
            adj[a].append(leaf)
            degree[leaf] -= 1
            degree[a] -= 1
        u, v = [i for i in range(n) if degree[i] == 1]
        adj[u].append(v)
        adj[v].append(u)
        trees.append(adj)
    return trees


def _orient(adj, root):
    parent, stack = {root: -1}, [root]
    while stack:
        u = stack.pop()
        for v in adj[u]:
            if v not in parent:
                parent[v] = u
                stack.append(v)
    return parent


def arborescences(n, root=0, single_root=False):
    """Every arborescence of the complete digraph on ``n`` nodes rooted at ``root``, ``(N, n, n)``."""
    if n > MAX_TREE_NODES:
        raise ValueError(f"enumeration needs n <= {MAX_TREE_NODES}, got n={n}")
    if n == 1:
        return np.zeros((1, 1, 1))
    out = []
    for adj in _prufer_trees(n):
        if single_root and len(adj[root]) != 1:
            continue
        x = np.zeros((n, n))
        for v, p in _orient(adj, root).items():
            if p >= 0:
                x[p, v] = 1
        out.append(x)
    return np.stack(out)


def spanning_trees(n):
    """Every spanning tree of ``K_n`` as a symmetric ``(N, n, n)`` 0/1 array."""
    x = arborescences(n)
    return x + np.swapaxes(x, -1, -2)


def k_subsets(d, k):
    """All k-hot vectors of length ``d`` in lexicographic order of their index sets, ``(C(d, k), d)``."""
    if math.comb(d, k) > MAX_SUBSETS:
        raise ValueError(f"enumerate_k_subsets: C(d={d}, k={k}) = {math.comb(d, k)} subsets is too many (max 10^6)")
    index = np.array(list(itertools.combinations(range(d), k)), dtype=np.int64).reshape(math.comb(d, k), k)
    x = np.zeros((index.shape[0], d))
    np.put_along_axis(x, index, 1.0, axis=-1)
    return x


def permutations(n):
    """All ``n!`` permutation matrices, ``(n!, n, n)``, in lexicographic order."""
    if n > MAX_PERMUTATION_ITEMS:
        raise ValueError(f"enumerate_permutations needs n <= {MAX_PERMUTATION_ITEMS}, got n={n}")
    index = np.array(list(itertools.permutations(range(n))), dtype=np.int64).reshape(math.factorial(n), n)
    return np.eye(n)[index]
