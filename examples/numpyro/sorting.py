"""Learn to sort numbers with Gumbel-Sinkhorn (Mena et al., 2018), small, in JAX.

The JAX mirror of ``examples/pyro/sorting.py`` (see its docstring): a network scores the ``N``
positions for each number on its own, ``GumbelSinkhorn(log_alpha, t)`` arranges the numbers, and
the loss is the squared distance of ``P^T x`` to ``sort(x)``; at test time the hard permutation is
the maximum assignment of ``log_alpha`` (``.mode``). The training step is jitted; every random
number comes from an explicit ``jax.random`` key.

    python examples/numpyro/sorting.py              # N = 5, 10, 20; about a minute on 2 cores; writes sorting.png
    python examples/numpyro/sorting.py --smoke      # seconds; used by the tests

The last stdout line is one JSON object: ``{"N=5": {"prop_sorted": ..., "prop_correct_positions": ...}, ...}``.
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import options  # noqa: E402


def parse_args(argv=None):
    return options.sorting(__doc__, __file__, argv)


if __name__ == "__main__":
    ARGS = parse_args()  # --help and argument errors answer here, before the heavy imports below

import figures
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.optim
from jax_nets import mlp, mlp_init  # noqa: E402

from numpyro_sst import GumbelSinkhorn


def position_scores(params, x):
    """Scores of the N positions for each number, the same weights for every number: ``(..., N, N)``."""
    return mlp(params, x[..., None], activation=jax.nn.relu)


def arrange(permutation, x):
    """``P^T x``: the number the (soft) permutation puts at each position."""
    return (permutation * x[..., :, None]).sum(-2)


def train(n, args):
    key_init, key_data = jax.random.split(jax.random.PRNGKey(args.seed))
    optimizer = numpyro.optim.Adam(1e-2)

    def loss_fn(params, key):
        k_x, k_p = jax.random.split(key)
        x = jax.random.uniform(k_x, (args.batch, n))
        # A fixed budget of 20 plain sweeps, differentiated through, as Mena et al.
        relaxed = GumbelSinkhorn(position_scores(params, x), args.temperature, n_iters=20, backward="unrolled")
        return ((arrange(relaxed.sample(k_p), x) - jnp.sort(x, -1)) ** 2).sum(-1).mean()

    @jax.jit
    def step(state, key):
        loss, grads = jax.value_and_grad(loss_fn)(optimizer.get_params(state), key)
        return optimizer.update(grads, state), loss

    state = optimizer.init(mlp_init(key_init, [1, 32, n]))
    losses = []
    for i in range(args.steps):
        state, loss = step(state, jax.random.fold_in(key_data, i))
        losses.append(float(loss))
        if i % max(args.steps // 5, 1) == 0:
            print(f"N={n:3d} step {i:5d} loss {losses[-1]:.4f}", flush=True)
    return optimizer.get_params(state), losses


def evaluate(params, n, args):
    x = jax.random.uniform(jax.random.PRNGKey(args.seed + 1), (args.test, n))
    hard = GumbelSinkhorn(position_scores(params, x), args.temperature).mode
    correct = np.asarray(arrange(hard, x) == jnp.sort(x, -1))
    return {
        "prop_sorted": round(float(correct.all(-1).mean()), 4),
        "prop_correct_positions": round(float(correct.mean()), 4),
    }


def main(args):
    results, curves = {}, {}
    for n in args.sizes:
        params, curves[n] = train(n, args)
        results[f"N={n}"] = evaluate(params, n, args)
        print(f"N={n:3d} {results[f'N={n}']}", flush=True)
    figures.sorting(curves, args.out, "JAX")
    print(f"figure: {args.out}")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main(ARGS)
