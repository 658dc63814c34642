"""Recover a latent spanning tree from noisy pairwise measurements with SVI.

A random tree over ``n`` objects is hidden; we observe ``m`` noisy copies of its
adjacency matrix. The model puts a ``RelaxedSpanningTree`` prior on the tree and
the guide is a ``RelaxedSpanningTree`` with learnable logits, trained with
``TraceMeanField_ELBO`` (the registered utility KL). We evaluate the *hard*
tree (the guide's mode) by edge precision/recall against the truth.

    python examples/pyro/spanning_tree_svi.py            # default size; writes spanning_tree_svi.png
    python examples/pyro/spanning_tree_svi.py --smoke    # seconds; used by the tests

The last stdout line is one JSON object: ``{"edge_precision": ..., "edge_recall": ..., "elbo": ...}``.
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import options  # noqa: E402


def _add_elbo(parser):
    parser.add_argument(
        "--elbo",
        choices=["meanfield", "trace"],
        default="meanfield",
        help="meanfield: the registered utility KL; trace: log_prob",
    )


def parse_args(argv=None):
    return options.spanning_tree_svi(__doc__, __file__, argv, _add_elbo)


if __name__ == "__main__":
    ARGS = parse_args()  # --help and argument errors answer here, before the heavy imports below

import figures
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO

from pyro_sst import RelaxedSpanningTree, SpanningTree, ops


def model(data, temperature):
    n = data.shape[-1]
    tree = pyro.sample("tree", RelaxedSpanningTree(torch.zeros(n, n), temperature))
    with pyro.plate("measurements", data.shape[0]):
        pyro.sample("y", dist.Normal(tree, 1.0).to_event(2), obs=data)


def guide(data, temperature):
    n = data.shape[-1]
    # Any square parameter works: the distribution reads its strict upper triangle.
    pyro.sample("tree", RelaxedSpanningTree(pyro.param("edge_logits", torch.zeros(n, n)), temperature))


def precision_recall(estimate, truth):
    hits = (estimate * truth).triu(1).sum()
    return (hits / estimate.triu(1).sum()).item(), (hits / truth.triu(1).sum()).item()


def main(args):
    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    truth = SpanningTree(torch.zeros(args.nodes, args.nodes)).sample()  # uniform random tree
    data = truth + torch.randn(args.measurements, args.nodes, args.nodes)
    data = ops.symmetrize_upper(data)
    elbo = TraceMeanField_ELBO() if args.elbo == "meanfield" else Trace_ELBO()
    svi = SVI(model, guide, pyro.optim.Adam({"lr": args.lr}), elbo)
    losses = []
    for step in range(args.steps):
        loss = svi.step(data, args.temperature)
        losses.append(loss)
        if step % max(args.steps // 10, 1) == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss:12.3f}", flush=True)
    estimate = RelaxedSpanningTree(pyro.param("edge_logits").detach(), args.temperature).mode
    precision, recall = precision_recall(estimate, truth)
    print(f"recovered tree: edge precision {precision:.3f}, recall {recall:.3f}")
    figures.spanning_tree_svi(truth.numpy(), data.mean(0).numpy(), estimate.numpy(), losses, args.out)
    print(f"figure: {args.out}")
    print(json.dumps({"edge_precision": round(precision, 4), "edge_recall": round(recall, 4), "elbo": -losses[-1]}))
    return precision, recall


if __name__ == "__main__":
    main(ARGS)
