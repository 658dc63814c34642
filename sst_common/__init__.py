"""Backend-neutral pieces shared by :mod:`pyro_sst` and :mod:`numpyro_sst` (pure NumPy, no torch or JAX)."""
