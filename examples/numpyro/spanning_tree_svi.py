"""Recover a latent spanning tree from noisy pairwise measurements with SVI, in JAX.

The JAX mirror of ``examples/pyro/spanning_tree_svi.py``: a random tree over ``n`` objects is
hidden and we observe ``m`` noisy copies of its adjacency matrix. The model puts a
``RelaxedSpanningTree`` prior on the tree, the guide is a ``RelaxedSpanningTree`` with learnable
logits, trained with NumPyro's ``TraceMeanField_ELBO`` (the registered utility KL). We evaluate the
*hard* tree (the guide's mode) by edge precision/recall against the truth.

    python examples/numpyro/spanning_tree_svi.py            # default size; writes spanning_tree_svi.png
    python examples/numpyro/spanning_tree_svi.py --smoke    # seconds; used by the tests

The last stdout line is one JSON object: ``{"edge_precision": ..., "edge_recall": ..., "elbo": ...}``.
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import options  # noqa: E402


def parse_args(argv=None):
    return options.spanning_tree_svi(__doc__, __file__, argv)


if __name__ == "__main__":
    ARGS = parse_args()  # --help and argument errors answer here, before the heavy imports below

import figures
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as ndist
from numpyro.infer import SVI, TraceMeanField_ELBO

from numpyro_sst import RelaxedSpanningTree, SpanningTree, ops


def model(data, temperature):
    n = data.shape[-1]
    tree = numpyro.sample("tree", RelaxedSpanningTree(jnp.zeros((n, n)), temperature))
    with numpyro.plate("measurements", data.shape[0]):
        numpyro.sample("y", ndist.Normal(tree, 1.0).to_event(2), obs=data)


def guide(data, temperature):
    n = data.shape[-1]
    # Any square parameter works: the distribution reads its strict upper triangle.
    numpyro.sample("tree", RelaxedSpanningTree(numpyro.param("edge_logits", jnp.zeros((n, n))), temperature))


def precision_recall(estimate, truth):
    upper = np.triu(np.ones(truth.shape), 1)
    hits = (estimate * truth * upper).sum()
    return float(hits / (estimate * upper).sum()), float(hits / (truth * upper).sum())


def main(args):
    key_tree, key_noise, key_svi = jax.random.split(jax.random.PRNGKey(args.seed), 3)
    truth = SpanningTree(jnp.zeros((args.nodes, args.nodes))).sample(key_tree)  # uniform random tree
    data = ops.symmetrize_upper(truth + jax.random.normal(key_noise, (args.measurements, args.nodes, args.nodes)))
    svi = SVI(model, guide, numpyro.optim.Adam(args.lr), TraceMeanField_ELBO())
    state = svi.init(key_svi, data, args.temperature)
    update = jax.jit(svi.update, static_argnums=2)
    losses = []
    for step in range(args.steps):
        state, loss = update(state, data, args.temperature)
        losses.append(float(loss))
        if step % max(args.steps // 10, 1) == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {losses[-1]:12.3f}", flush=True)
    estimate = RelaxedSpanningTree(svi.get_params(state)["edge_logits"], args.temperature).mode
    precision, recall = precision_recall(np.asarray(estimate), np.asarray(truth))
    print(f"recovered tree: edge precision {precision:.3f}, recall {recall:.3f}")
    figures.spanning_tree_svi(np.asarray(truth), np.asarray(data).mean(0), np.asarray(estimate), losses, args.out)
    print(f"figure: {args.out}")
    print(json.dumps({"edge_precision": round(precision, 4), "edge_recall": round(recall, 4), "elbo": -losses[-1]}))
    return precision, recall


if __name__ == "__main__":
    main(ARGS)
