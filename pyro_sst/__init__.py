"""Relaxed combinatorial distributions (stochastic softmax tricks) for Pyro.

Distributions subclass :class:`pyro.distributions.TorchDistribution`; the pure
tensor functions they are built from live in :mod:`pyro_sst.ops`; gradient estimators
(score function, REBAR, RELAX, exact references) in :mod:`pyro_sst.estimators`.
"""

try:
    import pyro  # noqa: F401
    import torch  # noqa: F401
except ImportError as error:
    raise ImportError(
        f"pyro_sst needs PyTorch and Pyro ({error.name} is not installed): pip install 'sst-distributions[pyro]' "
        "(install torch first, pinned to a CPU or CUDA build: see the README)"
    ) from error

from . import distributions, estimators, ops  # noqa: E402
from .distributions import *  # noqa: F403

__version__ = "0.1.0"

__all__ = distributions.__all__ + ["estimators", "ops"]
