"""Hard solvers and exact samplers at (B, n) = (256, 50), float64, against per-element loops over scipy and
networkx. ``agree`` is the fraction of batch elements where both find a structure of the same score (or, for the
sampler, nothing: it is a different random draw)."""

import networkx as nx
import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import minimum_spanning_tree

from pyro_sst import ops

from .common import median_time, row

B, N = 256, 50


def _scipy_max_spanning_tree(W):
    out = np.zeros_like(W)
    for b in range(W.shape[0]):
        # scipy minimises and treats zeros as absent: negate and shift to positive
        mst = minimum_spanning_tree(np.triu(W[b].max() + 1.0 - W[b], 1)).toarray()
        out[b] = (mst != 0) + (mst.T != 0)
    return out


def _networkx_max_arborescence(W, root=0):
    out = np.zeros_like(W)
    for b in range(W.shape[0]):
        G = nx.DiGraph()
        G.add_weighted_edges_from((i, j, W[b, i, j]) for i in range(N) for j in range(N) if i != j and j != root)
        for i, j in nx.maximum_spanning_arborescence(G).edges():
            out[b, i, j] = 1
    return out


def _scipy_assignment(W):
    out = np.zeros_like(W)
    for b in range(W.shape[0]):
        rows, cols = linear_sum_assignment(W[b], maximize=True)
        out[b, rows, cols] = 1
    return out


def _networkx_sampler(W):
    for b in range(W.shape[0]):
        G = nx.Graph()
        G.add_weighted_edges_from((i, j, np.exp(W[b, i, j])) for i in range(N) for j in range(i + 1, N))
        nx.random_spanning_tree(G, weight="weight", multiplicative=True)


def _agree(W, x, y):
    return float(np.mean(np.isclose((W * x).sum((-2, -1)), (W * y).sum((-2, -1)))))


def cases(quick):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(B, N, N, generator=g, dtype=torch.float64)
    sym = ops.symmetrize_upper(W)
    Wn, symn = W.numpy(), sym.numpy()
    few = 1 if quick else 2  # networkx loops are slow: time them on a slice and scale to the batch

    ours = median_time(lambda: ops.max_spanning_tree(sym), 3)
    base = median_time(lambda: _scipy_max_spanning_tree(symn), 3)
    agree = _agree(symn, ops.max_spanning_tree(sym).numpy(), _scipy_max_spanning_tree(symn))
    yield row(f"max_spanning_tree B={B} n={N} vs scipy loop", ours, base, agree=agree)

    ours = median_time(lambda: ops.max_arborescence(W), 3)
    base = median_time(lambda: _networkx_max_arborescence(Wn[:few]), 1) * B / few
    x = ops.max_arborescence(W[:few]).numpy()
    yield row(
        f"max_arborescence B={B} n={N} vs networkx loop",
        ours,
        base,
        agree=_agree(Wn[:few], x, _networkx_max_arborescence(Wn[:few])),
    )

    ours = median_time(lambda: ops.max_assignment(W), 3)
    base = median_time(lambda: _scipy_assignment(Wn), 3)
    yield row(
        f"max_assignment B={B} n={N} vs scipy loop",
        ours,
        base,
        agree=_agree(Wn, ops.max_assignment(W).numpy(), _scipy_assignment(Wn)),
    )

    ours = median_time(lambda: ops.sample_spanning_tree(sym), 3)
    base = median_time(lambda: _networkx_sampler(symn[:few]), 1) * B / few
    yield row(f"sample_spanning_tree B={B} n={N} vs networkx random_spanning_tree loop", ours, base)
