"""Pure, batched, jittable functions on JAX arrays: everything the distributions are built from."""

from . import layout, logspace, matrix_tree, noise, permutations, subsets, trees
from .layout import *  # noqa: F403
from .logspace import *  # noqa: F403
from .matrix_tree import *  # noqa: F403
from .noise import *  # noqa: F403
from .permutations import *  # noqa: F403
from .subsets import *  # noqa: F403
from .trees import *  # noqa: F403

__all__ = sorted(
    set().union(*(m.__all__ for m in (layout, logspace, matrix_tree, noise, permutations, subsets, trees)))
)
