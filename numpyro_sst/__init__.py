"""Relaxed combinatorial distributions (stochastic softmax tricks) for NumPyro.

Distributions subclass :class:`numpyro.distributions.Distribution`; the pure, jittable JAX
functions they are built from live in :mod:`numpyro_sst.ops`. The package mirrors
:mod:`pyro_sst` module for module and name for name; random numbers come from explicit
``jax.random`` keys.
"""

import re
import warnings

try:
    import jax  # noqa: F401
    import jaxlib
    import numpyro  # noqa: F401
except ImportError as error:
    raise ImportError(
        f"numpyro_sst needs JAX and NumPyro ({error.name} is not installed): pip install 'sst-distributions[numpyro]'"
    ) from error

from . import distributions, estimators, ops
from .distributions import *  # noqa: F403

__version__ = "0.1.0"

# jaxlib 0.10.0 to 0.11.0 split batched LAPACK calls over the CPU thread pool and block on them: two in
# one program (say, the matrix-tree functions of two distributions) can deadlock. pyproject excludes them.
if (0, 10, 0) <= tuple(int(p) for p in re.findall(r"\d+", jaxlib.__version__)[:3]) < (0, 11, 1):
    warnings.warn(
        f"numpyro_sst: jaxlib {jaxlib.__version__} can deadlock on the CPU when two batched linear-algebra "
        "calls run at once (jaxlib 0.10.0 to 0.11.0); install jax and jaxlib 0.9.x or 0.11.1 and later",
        RuntimeWarning,
        stacklevel=2,
    )

__all__ = distributions.__all__ + ["estimators", "ops"]
