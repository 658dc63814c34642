"""Small pure-JAX networks for the NumPyro examples: parameters are pytrees, held by ``numpyro.param``."""

import jax
import jax.numpy as jnp
import numpy as np


def mlp_init(key, sizes, zero_last=False):
    """Weights of an MLP with layer ``sizes``, PyTorch's default initialisation U(+-1/sqrt(fan_in)).

    ``zero_last`` zeroes the output layer (a network that starts by predicting nothing).
    """
    params = []
    for k, (a, b) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:], strict=True), strict=True):
        kw, kb = jax.random.split(k)
        bound = 1.0 / np.sqrt(a)
        weight = jax.random.uniform(kw, (a, b), minval=-bound, maxval=bound)
        params.append((weight, jax.random.uniform(kb, (b,), minval=-bound, maxval=bound)))
    if zero_last:
        params[-1] = jax.tree.map(jnp.zeros_like, params[-1])
    return params


def mlp(params, x, activation=jax.nn.elu):
    """Apply ``mlp_init``'s network: affine layers with ``activation`` between them."""
    for i, (w, b) in enumerate(params):
        x = x @ w + b
        if i < len(params) - 1:
            x = activation(x)
    return x
