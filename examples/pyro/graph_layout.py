"""Graph layout with a latent spanning tree: the NRI experiment of Paulus et al. (2020), small.

Each example is a random tree over ``n`` nodes (hidden) and the trajectory of a force-directed
layout of it: springs along the tree's edges, repulsion between every pair
(``examples/datasets.py``). A VAE learns to explain the trajectories:

* encoder (NRI-style): node embeddings from each node's trajectory, pair embeddings from the
  two nodes and their distances over time, one more round of message passing, then edge logits;
* latent graph ``z``: ``--latent tree`` (``RelaxedSpanningTree``), ``topk`` (``RelaxedTopK`` over
  the ``n(n-1)/2`` edges with ``k = n - 1``) or ``independent`` (relaxed Bernoulli edges);
* decoder (a GNN over ``z``): node ``i`` moves by :math:`\\sum_j (x_j - x_i)(g(r_{ij}) + z_{ij}
  h(r_{ij}))`, with ``(g, h)`` one small MLP of the distance, and the next positions are
  ``Normal(x_t + move, sigma)``.

Trained with Pyro's SVI and ``TraceMeanField_ELBO`` (the utility KL to a uniform prior for the
tree and top-k, the Monte Carlo KL of the logits
of relaxed Bernoulli edges). Reports edge precision and
recall of hard samples of the guide (one per trajectory) against the true trees on held-out
trajectories, and the edge precision of the guide's mode.

    python examples/pyro/graph_layout.py                          # all three latents, a few minutes
    python examples/pyro/graph_layout.py --latent tree            # one of them
    python examples/pyro/graph_layout.py --smoke                  # seconds; used by the tests

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
import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, TraceMeanField_ELBO

from pyro_sst import RelaxedSpanningTree, RelaxedTopK


def mlp(sizes):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [torch.nn.Linear(a, b), torch.nn.ELU()]
    return torch.nn.Sequential(*layers[:-1])


def pairwise_distances(x):
    return (x[..., None, :, :] - x[..., :, None, :]).pow(2).sum(-1).add(1e-8).sqrt()


class Encoder(torch.nn.Module):
    """Trajectories ``(B, T + 1, n, 2)`` to symmetric edge logits ``(B, n, n)``.

    A pair's features over time are its distance and how far each end moves towards the other,
    ``<v_i, x_j - x_i> / r_ij``; the pair network sees both orders and sums,
    so the logits are symmetric. A round of node messages then lets an edge see the other edges
    at its two ends (which neighbours already explain a node's motion).
    """

    def __init__(self, frames, hidden):
        super().__init__()
        self.pair = mlp([3 * (frames - 1), hidden, hidden])
        self.node = mlp([hidden + 4 * frames - 2, hidden, hidden])
        self.edge = mlp([3 * hidden, hidden, hidden, 1])

    def forward(self, x):
        n = x.shape[-2]
        velocity = 20.0 * (x[:, 1:] - x[:, :-1])  # (B, T, n, 2), scaled to order one
        diff = x[:, :-1, None, :, :] - x[:, :-1, :, None, :]  # (B, T, i, j, 2): x_j - x_i
        r = diff.pow(2).sum(-1).add(1e-8).sqrt()
        towards = (velocity[..., :, None, :] * diff).sum(-1) / r  # i moving towards j
        ij = torch.stack([r, towards, towards.transpose(-1, -2)], -1).permute(0, 2, 3, 1, 4).flatten(-2)
        ji = torch.stack([r, towards.transpose(-1, -2), towards], -1).permute(0, 2, 3, 1, 4).flatten(-2)
        e = self.pair(ij) + self.pair(ji)  # (B, n, n, hidden), symmetric
        off_diagonal = (1.0 - torch.eye(n))[..., None]
        trajectory = torch.cat([x, velocity], 1).permute(0, 2, 1, 3).flatten(-2)
        h = self.node(torch.cat([(e * off_diagonal).sum(-2) / (n - 1), trajectory], -1))
        ends = torch.cat([h[..., :, None, :] + h[..., None, :, :], h[..., :, None, :] * h[..., None, :, :]], -1)
        return self.edge(torch.cat([ends, e], -1)).squeeze(-1)


class Decoder(torch.nn.Module):
    """One layout step over a (relaxed) graph: ``x_{t+1} = x_t + sum_j (x_j - x_i)(g + z_ij h)(r_ij)``."""

    def __init__(self, hidden):
        super().__init__()
        self.pair_weights = mlp([2, hidden, hidden, 2])  # (g, h) of the distance
        torch.nn.init.zeros_(self.pair_weights[-1].weight)  # start from "nothing moves"
        torch.nn.init.zeros_(self.pair_weights[-1].bias)

    def forward(self, x, z):
        diff = x[..., None, :, :] - x[..., :, None, :]  # (B, T, i, j, 2): x_j - x_i
        r2 = diff.pow(2).sum(-1, keepdim=True)
        features = torch.cat([r2, 1.0 / (r2 + 0.05)], -1)
        every_pair, along_edge = self.pair_weights(features).unbind(-1)
        weight = (every_pair + z * along_edge)[..., None]
        return x + (weight * diff).sum(-2)


class GraphLayoutVAE(torch.nn.Module):
    def __init__(self, args):
        super().__init__()
        self.n, self.latent, self.t, self.sigma = args.nodes, args.latent_kind, args.temperature, args.sigma
        self.encoder = Encoder(args.frames + 1, args.hidden)
        self.decoder = Decoder(args.decoder_hidden)
        self.rows, self.cols = torch.triu_indices(self.n, self.n, 1)

    def to_adjacency(self, edges):
        adjacency = edges.new_zeros(edges.shape[:-1] + (self.n, self.n))
        adjacency[..., self.rows, self.cols] = edges
        return adjacency + adjacency.transpose(-1, -2)

    def latent_dist(self, logits):
        """The relaxed graph distribution for ``(B, n, n)`` logits; its samples go through ``as_graph``."""
        if self.latent == "tree":
            return RelaxedSpanningTree(logits, self.t)
        edge_logits = logits[..., self.rows, self.cols]
        if self.latent == "topk":
            return RelaxedTopK(edge_logits, self.n - 1, self.t)
        # Concrete edges in logit space, where the density is bounded (Maddison et al., 2017):
        # the logit of a relaxed Bernoulli(logits, t) is Logistic(logits / t, 1 / t).
        return dist.Logistic(edge_logits / self.t, torch.tensor(1.0 / self.t)).to_event(1)

    def as_graph(self, z):
        if self.latent == "tree":
            return z
        return self.to_adjacency(z.sigmoid() if self.latent == "independent" else z)

    def prior_logits(self, batch):
        # Uniform over trees / (n-1)-subsets; independent edges with the trees' edge density 2/n.
        logits = torch.zeros(batch, self.n, self.n)
        return logits if self.latent != "independent" else logits + np.log(2.0 / (self.n - 2))

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("graphs", x.shape[0]):
            z = pyro.sample("z", self.latent_dist(self.prior_logits(x.shape[0])))
            mean = self.decoder(x[:, :-1], self.as_graph(z)[:, None])
            pyro.sample("x", dist.Normal(mean, self.sigma).to_event(3), obs=x[:, 1:])

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("graphs", x.shape[0]):
            pyro.sample("z", self.latent_dist(self.encoder(x)))

    @torch.no_grad()
    def hard_graphs(self, x, mode=False):
        """One hard sample of the guide per trajectory (the stochastic argmax / Bernoulli edges), or its mode."""
        logits = self.encoder(x)
        if self.latent == "independent":
            probs = torch.sigmoid(logits[..., self.rows, self.cols])
            return self.to_adjacency((probs > 0.5).float() if mode else torch.bernoulli(probs))
        q = self.latent_dist(logits)
        return self.as_graph(q.mode if mode else q.hard_sample())


def edge_precision_recall(estimate, truth):
    hits = (estimate * truth).triu(1).sum()
    return (hits / estimate.triu(1).sum().clamp(min=1)).item(), (hits / truth.triu(1).sum()).item()


def make_data(args):
    rng = np.random.default_rng(args.seed)
    adjacency = datasets.random_trees(rng, args.train + args.test, args.nodes)
    x = datasets.layout_trajectories(rng, adjacency, steps=args.frames)
    as_tensor = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return (as_tensor(x[: args.train]), as_tensor(x[args.train :])), as_tensor(adjacency[args.train :])


def train(latent, data, args):
    (x_train, x_test), true_test = data
    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    args.latent_kind = latent
    vae = GraphLayoutVAE(args)
    optimizer = pyro.optim.ClippedAdam({"lr": args.lr, "clip_norm": 10.0, "lrd": 0.1 ** (1 / args.steps)})
    svi = SVI(vae.model, vae.guide, optimizer, TraceMeanField_ELBO())
    curve = []
    for step in range(args.steps):
        batch = x_train[torch.randint(len(x_train), (args.batch,))]
        loss = svi.step(batch) / args.batch
        if step % max(args.steps // 10, 1) == 0 or step == args.steps - 1:
            precision, _ = edge_precision_recall(vae.hard_graphs(x_test), true_test)
            curve.append((step, precision))
            print(f"{latent:>11} step {step:5d}  -elbo/graph {loss:10.2f}  test edge precision {precision:.3f}")
    precision, recall = edge_precision_recall(vae.hard_graphs(x_test), true_test)
    mode_precision, _ = edge_precision_recall(vae.hard_graphs(x_test, mode=True), true_test)
    with torch.no_grad():
        elbo = -svi.evaluate_loss(x_test) / len(x_test)
    result = {"edge_precision": round(precision, 4), "edge_recall": round(recall, 4), "elbo": round(elbo, 2)}
    result["mode_edge_precision"] = round(mode_precision, 4)
    example = vae.hard_graphs(x_test[:1])[0].numpy()  # the figure's hard sample
    return example, result, curve


def main(args):
    data = make_data(args)
    results, examples, curves = {}, {}, {}
    for latent in args.latent:
        examples[latent], results[latent], curves[latent] = train(latent, data, args)
        print(f"{latent:>11} {results[latent]}", flush=True)
    (_, x_test), true_test = data
    figures.graph_layout(examples, curves, x_test[0, -1].numpy(), true_test[0].numpy(), args.out)
    print(f"figure: {args.out}")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main(ARGS)
