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


LISTOPS_OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
LISTOPS_VOCABULARY = ("<pad>", "]") + LISTOPS_OPERATORS + tuple(str(d) for d in range(10))


def listops(rng, count, max_depth=2, max_args=4, max_length=20):
    """ListOps expressions (Nangia & Bowman, 2018), their values and their parse arborescences.

    Returns ``(tokens, values, parents)``: token ids ``(count, max_length)`` padded with 0, values
    in 0..9 ``(count,)``, and the parse as parent indices ``(count, max_length)``: every argument
    and closing bracket hangs from its operator, the first token is the root (parent -1), and
    padding hangs from the root. Expressions longer than ``max_length`` are redrawn.
    """
    vocabulary = {token: i for i, token in enumerate(LISTOPS_VOCABULARY)}
    tokens = np.zeros((count, max_length), dtype=np.int64)
    parents = np.zeros((count, max_length), dtype=np.int64)
    values = np.zeros(count, dtype=np.int64)
    for row in range(count):
        while True:
            sequence, heads = [], []
            value = _listops_expression(rng, 0, max_depth, max_args, -1, sequence, heads)
            if len(sequence) <= max_length:
                break
        tokens[row, : len(sequence)] = [vocabulary[t] for t in sequence]
        parents[row, : len(heads)] = heads
        parents[row, 0] = -1
        values[row] = value
    return tokens, values, parents


def _listops_expression(rng, depth, max_depth, max_args, parent, sequence, heads):
    """Append one expression (an operator and its arguments, or a digit) under ``parent``; return its value."""
    position = len(sequence)
    if depth == max_depth or (depth > 0 and rng.random() < 0.4):
        digit = int(rng.integers(10))
        sequence.append(str(digit))
        heads.append(parent)
        return digit
    operator = LISTOPS_OPERATORS[rng.integers(len(LISTOPS_OPERATORS))]
    sequence.append(operator)
    heads.append(parent)
    arguments = [
        _listops_expression(rng, depth + 1, max_depth, max_args, position, sequence, heads)
        for _ in range(rng.integers(2, max_args + 1))
    ]
    sequence.append("]")
    heads.append(position)
    value = {"[MIN": min, "[MAX": max, "[MED": lambda a: int(np.median(a)), "[SM": lambda a: sum(a) % 10}[operator]
    return value(arguments)
