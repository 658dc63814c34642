"""Learn to sort numbers with Gumbel-Sinkhorn (Mena et al., 2018), small.

Each of ``N`` numbers drawn from U(0, 1) goes, on its own, through a small network that scores
the ``N`` positions; the scores of all the numbers form ``log_alpha`` (item x position). A relaxed
permutation ``P ~ GumbelSinkhorn(log_alpha, t)`` puts the numbers in order, ``P^T x``, and the
loss is the squared distance to ``sort(x)``: the network never sees a sorted list, only how
far its soft arrangement is from one. At test time the hard permutation is the maximum
assignment of ``log_alpha`` (Hungarian, ``GumbelSinkhorn(...).mode``). Reports, per ``N``, the
proportion of test lists sorted exactly and of numbers put in their correct position.

    python examples/pyro/sorting.py              # N = 5, 10, 20; about a minute on 2 cores; writes sorting.png
    python examples/pyro/sorting.py --smoke      # seconds; used by the tests

The last stdout line is one JSON object: ``{"N=5": {"prop_sorted": ..., "prop_correct_positions": ...}, ...}``.
"""

import json
import pathlib
import sys
import warnings

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import options  # noqa: E402


def parse_args(argv=None):
    return options.sorting(__doc__, __file__, argv)


if __name__ == "__main__":
    ARGS = parse_args()  # --help and argument errors answer here, before the heavy imports below

import figures
import torch

from pyro_sst import GumbelSinkhorn


class PositionScorer(torch.nn.Module):
    """Scores the N positions for one number at a time (the same weights for every number)."""

    def __init__(self, n, hidden=32):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(1, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, n))

    def forward(self, x):
        return self.net(x[..., None])  # (..., N items, N positions)


def arrange(permutation, x):
    """``P^T x``: the number the (soft) permutation puts at each position."""
    return (permutation * x[..., :, None]).sum(-2)


def train(n, args):
    torch.manual_seed(args.seed)
    scorer = PositionScorer(n)
    opt = torch.optim.Adam(scorer.parameters(), lr=1e-2)
    losses = []
    for step in range(args.steps):
        x = torch.rand(args.batch, n)
        # A fixed budget of 20 plain sweeps, differentiated through, as Mena et al.: rows sum to 1
        # within a few percent, which the distribution reports in a warning that is expected here.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "GumbelSinkhorn: stopped at n_iters", RuntimeWarning)
            relaxed = GumbelSinkhorn(scorer(x), args.temperature, n_iters=20, backward="unrolled").rsample()
        loss = ((arrange(relaxed, x) - x.sort(-1).values) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % max(args.steps // 5, 1) == 0:
            print(f"N={n:3d} step {step:5d} loss {loss.item():.4f}", flush=True)
    return scorer, losses


@torch.no_grad()
def evaluate(scorer, n, args):
    x = torch.rand(args.test, n, generator=torch.Generator().manual_seed(args.seed + 1))
    hard = GumbelSinkhorn(scorer(x), args.temperature).mode
    correct = arrange(hard, x) == x.sort(-1).values
    return {
        "prop_sorted": round(correct.all(-1).float().mean().item(), 4),
        "prop_correct_positions": round(correct.float().mean().item(), 4),
    }


def main(args):
    results, curves = {}, {}
    for n in args.sizes:
        scorer, curves[n] = train(n, args)
        results[f"N={n}"] = evaluate(scorer, n, args)
        print(f"N={n:3d} {results[f'N={n}']}", flush=True)
    figures.sorting(curves, args.out, "PyTorch")
    print(f"figure: {args.out}")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main(ARGS)
