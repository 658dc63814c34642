"""Graph layout with a latent spanning tree, in JAX: the NRI experiment of Paulus et al. (2020), small.

The JAX mirror of ``examples/pyro/graph_layout.py`` (see its docstring): the same data
(``examples/datasets.py``), encoder, decoder and latents (``--latent tree``, ``topk``,
``independent``), trained with NumPyro's SVI and ``TraceMeanField_ELBO``; the networks are small
pure-JAX MLPs held as ``numpyro.param`` pytrees, every random number comes from an explicit
``jax.random`` key, and the SVI step is jitted.

    python examples/numpyro/graph_layout.py                  # all three latents, a few minutes
    python examples/numpyro/graph_layout.py --smoke          # seconds; used by the tests

The last stdout line is one JSON object:
``{"tree": {"edge_precision": ..., "edge_recall": ..., "elbo": ..., "mode_edge_precision": ...}, ...}``.
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import options  # noqa: E402


def parse_args(argv=None):
    return options.graph_layout(__doc__, __file__, argv)


if __name__ == "__main__":
    ARGS = parse_args()  # --help and argument errors answer here, before the heavy imports below

import datasets  # noqa: E402
import figures
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as ndist
from jax_nets import mlp, mlp_init  # noqa: E402
from numpyro.infer import SVI, TraceMeanField_ELBO

from numpyro_sst import RelaxedSpanningTree, RelaxedTopK


# ------------------------------------------------------------------ networks (pure JAX)
def encoder_init(key, frames, hidden):
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "pair": mlp_init(k1, [3 * (frames - 1), hidden, hidden]),
        "node": mlp_init(k2, [hidden + 4 * frames - 2, hidden, hidden]),
        "edge": mlp_init(k3, [3 * hidden, hidden, hidden, 1]),
    }


def encoder(params, x):
    """Trajectories ``(B, T + 1, n, 2)`` to symmetric edge logits ``(B, n, n)`` (as in the Pyro script)."""
    n = x.shape[-2]
    velocity = 20.0 * (x[:, 1:] - x[:, :-1])  # (B, T, n, 2), scaled to order one
    diff = x[:, :-1, None, :, :] - x[:, :-1, :, None, :]  # (B, T, i, j, 2): x_j - x_i
    r = jnp.sqrt((diff**2).sum(-1) + 1e-8)
    towards = (velocity[..., :, None, :] * diff).sum(-1) / r  # i moving towards j
    towards_t = jnp.swapaxes(towards, -1, -2)

    def per_pair(*features):
        stacked = jnp.stack(features, -1).transpose(0, 2, 3, 1, 4)
        return stacked.reshape(stacked.shape[:3] + (-1,))

    e = mlp(params["pair"], per_pair(r, towards, towards_t)) + mlp(params["pair"], per_pair(r, towards_t, towards))
    off_diagonal = (1.0 - jnp.eye(n))[..., None]
    trajectory = jnp.concatenate([x, velocity], 1).transpose(0, 2, 1, 3).reshape(x.shape[0], n, -1)
    h = mlp(params["node"], jnp.concatenate([(e * off_diagonal).sum(-2) / (n - 1), trajectory], -1))
    ends = jnp.concatenate([h[..., :, None, :] + h[..., None, :, :], h[..., :, None, :] * h[..., None, :, :]], -1)
    return mlp(params["edge"], jnp.concatenate([ends, e], -1))[..., 0]


def decoder_init(key, hidden):
    return mlp_init(key, [2, hidden, hidden, 2], zero_last=True)  # (g, h) of the distance


def decoder(params, x, z):
    """One layout step over a (relaxed) graph: ``x_{t+1} = x_t + sum_j (x_j - x_i)(g + z_ij h)(r_ij)``."""
    diff = x[..., None, :, :] - x[..., :, None, :]
    r2 = (diff**2).sum(-1, keepdims=True)
    features = jnp.concatenate([r2, 1.0 / (r2 + 0.05)], -1)
    every_pair, along_edge = jnp.moveaxis(mlp(params, features), -1, 0)
    weight = (every_pair + z * along_edge)[..., None]
    return x + (weight * diff).sum(-2)


# ------------------------------------------------------------------ the VAE
class GraphLayoutVAE:
    def __init__(self, latent, key, args):
        self.n, self.latent, self.t, self.sigma = args.nodes, latent, args.temperature, args.sigma
        k_enc, k_dec = jax.random.split(key)
        self.encoder_init = encoder_init(k_enc, args.frames + 1, args.hidden)
        self.decoder_init = decoder_init(k_dec, args.decoder_hidden)
        self.rows, self.cols = np.triu_indices(self.n, 1)

    def to_adjacency(self, edges):
        adjacency = jnp.zeros(edges.shape[:-1] + (self.n, self.n)).at[..., self.rows, self.cols].set(edges)
        return adjacency + jnp.swapaxes(adjacency, -1, -2)

    def latent_dist(self, logits):
        if self.latent == "tree":
            return RelaxedSpanningTree(logits, self.t)
        edge_logits = logits[..., self.rows, self.cols]
        if self.latent == "topk":
            return RelaxedTopK(edge_logits, self.n - 1, self.t)
        # Concrete edges in logit space (bounded density): Logistic(logits / t, 1 / t).
        return ndist.Logistic(edge_logits / self.t, 1.0 / self.t).to_event(1)

    def as_graph(self, z):
        if self.latent == "tree":
            return z
        return self.to_adjacency(jax.nn.sigmoid(z) if self.latent == "independent" else z)

    def prior_logits(self, batch):
        # Uniform over trees / (n-1)-subsets; independent edges with the trees' edge density 2/n.
        logits = jnp.zeros((batch, self.n, self.n))
        return logits if self.latent != "independent" else logits + np.log(2.0 / (self.n - 2))

    def model(self, x):
        params = numpyro.param("decoder", self.decoder_init)
        with numpyro.plate("graphs", x.shape[0]):
            z = numpyro.sample("z", self.latent_dist(self.prior_logits(x.shape[0])))
            mean = decoder(params, x[:, :-1], self.as_graph(z)[:, None])
            numpyro.sample("x", ndist.Normal(mean, self.sigma).to_event(3), obs=x[:, 1:])

    def guide(self, x):
        params = numpyro.param("encoder", self.encoder_init)
        with numpyro.plate("graphs", x.shape[0]):
            numpyro.sample("z", self.latent_dist(encoder(params, x)))

    def hard_graphs(self, key, params, x, mode=False):
        """One hard sample of the guide per trajectory (the stochastic argmax / Bernoulli edges), or its mode."""
        logits = encoder(params["encoder"], x)
        if self.latent == "independent":
            probs = jax.nn.sigmoid(logits[..., self.rows, self.cols])
            edges = probs > 0.5 if mode else jax.random.bernoulli(key, probs)
            return self.to_adjacency(edges.astype(logits.dtype))
        q = self.latent_dist(logits)
        return self.as_graph(q.mode if mode else q.hard_sample(key))


def edge_precision_recall(estimate, truth):
    upper = np.triu(np.ones(truth.shape[-2:]), 1)
    hits = (estimate * truth * upper).sum()
    return float(hits / max((estimate * upper).sum(), 1)), float(hits / (truth * upper).sum())


def make_data(args):
    rng = np.random.default_rng(args.seed)
    adjacency = datasets.random_trees(rng, args.train + args.test, args.nodes)
    x = datasets.layout_trajectories(rng, adjacency, steps=args.frames).astype(np.float32)
    return (jnp.asarray(x[: args.train]), jnp.asarray(x[args.train :])), adjacency[args.train :]


def train(latent, data, args):
    (x_train, x_test), true_test = data
    key_init, key_svi, key_batches, key_eval = jax.random.split(jax.random.PRNGKey(args.seed), 4)
    vae = GraphLayoutVAE(latent, key_init, args)
    schedule = lambda i: args.lr * 0.1 ** (i / args.steps)  # noqa: E731
    svi = SVI(vae.model, vae.guide, numpyro.optim.ClippedAdam(schedule, clip_norm=10.0), TraceMeanField_ELBO())
    state = jax.jit(svi.init)(key_svi, x_train[: args.batch])  # compiled: eager would dispatch op by op
    step_fn = jax.jit(svi.update)
    hard = jax.jit(vae.hard_graphs, static_argnames="mode")
    curve = []
    for step in range(args.steps):
        idx = jax.random.randint(jax.random.fold_in(key_batches, step), (args.batch,), 0, len(x_train))
        state, loss = step_fn(state, x_train[idx])
        if step % max(args.steps // 10, 1) == 0 or step == args.steps - 1:
            graphs = hard(jax.random.fold_in(key_eval, step), svi.get_params(state), x_test)
            precision, _ = edge_precision_recall(np.asarray(graphs), true_test)
            curve.append((step, precision))
            print(
                f"{latent:>11} step {step:5d}  -elbo/graph {float(loss) / args.batch:10.2f}  "
                f"test edge precision {precision:.3f}",
                flush=True,
            )
    params = svi.get_params(state)
    precision, recall = edge_precision_recall(np.asarray(hard(key_eval, params, x_test)), true_test)
    mode_precision, _ = edge_precision_recall(np.asarray(hard(key_eval, params, x_test, mode=True)), true_test)
    elbo = -float(jax.jit(svi.evaluate)(state, x_test)) / len(x_test)
    result = {"edge_precision": round(precision, 4), "edge_recall": round(recall, 4), "elbo": round(elbo, 2)}
    result["mode_edge_precision"] = round(mode_precision, 4)
    example = np.asarray(hard(jax.random.PRNGKey(0), params, x_test)[0])  # the figure's hard sample
    return example, result, curve


def main(args):
    data = make_data(args)
    results, examples, curves = {}, {}, {}
    for latent in args.latent:
        examples[latent], results[latent], curves[latent] = train(latent, data, args)
        print(f"{latent:>11} {results[latent]}", flush=True)
    (_, x_test), true_test = data
    figures.graph_layout(examples, curves, np.asarray(x_test[0, -1]), np.asarray(true_test[0]), args.out)
    print(f"figure: {args.out}")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main(ARGS)
