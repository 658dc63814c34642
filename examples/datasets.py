"""Synthetic data shared by the PyTorch and JAX examples (NumPy, seeded ``Generator``s).

The two backends' scripts import this module, so they train on the same data for the same seed.
"""

import numpy as np


def random_trees(rng, batch, n):
    """Uniform random labelled trees on ``n`` nodes, as ``(batch, n, n)`` 0/1 adjacency matrices.

    A uniform Pruefer sequence of length ``n - 2`` decodes to a uniform tree (Cayley's bijection).
    """
    adjacency = np.zeros((batch, n, n))
    for b in range(batch):
        sequence = rng.integers(0, n, size=n - 2)
        degree = np.ones(n, dtype=int)
        np.add.at(degree, sequence, 1)
        for node in sequence:
            leaf = np.flatnonzero(degree == 1)[0]
            adjacency[b, leaf, node] = adjacency[b, node, leaf] = 1
            degree[leaf] -= 1
            degree[node] -= 1
        u, v = np.flatnonzero(degree == 1)
        adjacency[b, u, v] = adjacency[b, v, u] = 1
    return adjacency


def layout_trajectories(rng, adjacency, steps=10, step_size=0.1, repulsion=0.01):
    r"""Force-directed layout (Fruchterman-Reingold style) of each graph from random positions.

    Node :math:`i` moves by ``step_size`` times :math:`\sum_j A_{ij}(x_j - x_i) - \rho
    \sum_{j \ne i} (x_j - x_i) / (\|x_j - x_i\|^2 + 0.05)`: springs along the edges pull
    neighbours together, every pair repels. Returns positions ``(batch, steps + 1, n, 2)``.
    """
    batch, n, _ = adjacency.shape
    x = rng.uniform(-1.0, 1.0, size=(batch, n, 2))
    frames = [x]
    for _ in range(steps):
        x = x + step_size * layout_forces(x, adjacency, repulsion)
        frames.append(x)
    return np.stack(frames, axis=1)


def layout_forces(x, adjacency, repulsion):
    diff = x[:, None, :, :] - x[:, :, None, :]  # (batch, i, j, 2): x_j - x_i
    sq_dist = (diff**2).sum(-1, keepdims=True)
    attraction = (adjacency[..., None] * diff).sum(2)
    off_diagonal = 1.0 - np.eye(x.shape[1])[None, :, :, None]
    push = (off_diagonal * diff / (sq_dist + 0.05)).sum(2)
    return attraction - repulsion * push
