"""Instance-wise feature selection with a relaxed top-k (L2X-style, synthetic), and four relaxations.

Inputs have ``d`` standard normal features. L2X's "switch" data (Chen et al., 2018): the sign of
feature 0 picks which of two groups of ``k - 1`` features determines the target, so the true
``k``-subset ``S(x)`` is feature 0 plus one group and differs from input to input:

.. math::

    y = \\begin{cases} x_1 x_2 + \\sin(2 x_3) & x_0 > 0 \\\\ x_4^2 - 1 + x_5 x_6 & x_0 \\le 0 \\end{cases}
        + 0.1\\,\\epsilon .

An explainer network gives feature logits; a mask ``m ~ RelaxedTopK(logits, k, t)`` keeps ``k``
features in relaxed form; a predictor sees only ``x * m`` and regresses ``y`` (squared error). At
test time the mask is the hard top-k of the logits. Compared: the four relaxations of
``RelaxedTopK`` (``exp_family``, ``euclidean``, ``categorical_entropy``, ``binary_entropy``) and
the L2X baseline, the elementwise maximum of ``k`` independent relaxed one-hots (Gumbel-softmax).
Reports, per method, subset precision (``|top-k ∩ S(x)| / k``) and test MSE with the hard mask.

    python examples/pyro/subset_selection.py             # five methods, about a minute on 2 cores
    python examples/pyro/subset_selection.py --smoke     # seconds; used by the tests

The last stdout line is one JSON object: ``{"exp_family": {"subset_precision": ..., "mse": ...}, ...}``.
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import cli  # noqa: E402

METHODS = ("exp_family", "euclidean", "categorical_entropy", "binary_entropy", "l2x")


def parse_args(argv=None):
    parser = cli.example_parser(__doc__, "subset_selection.png")
    parser.add_argument(
        "--method", choices=METHODS, nargs="+", default=list(METHODS), help="relaxations to train, one model each"
    )
    parser.add_argument("--features", type=int, default=10, help="d (L2X's synthetic data uses 10)")
    parser.add_argument("--k", type=int, default=4, help="subset size (the switch and a group of k - 1)")
    parser.add_argument("--steps", type=int, default=2000, help="training steps")
    parser.add_argument("--batch", type=int, default=128, help="examples per step")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam's learning rate")
    parser.add_argument("--temperature", type=float, default=0.5, help="temperature of the relaxation")
    parser.add_argument("--test", type=int, default=5000, help="held-out examples")
    args = cli.parse(parser, argv, __file__, "subset_selection.png", steps=300, test=500)
    if args.k != 4:
        parser.error("--k must be 4: the switch feature and a group of 3")
    return args


if __name__ == "__main__":
    ARGS = parse_args()  # --help and argument errors answer here, before the heavy imports below

import torch

from pyro_sst import RelaxedOneHotCategorical, RelaxedTopK


def switch_data(n, d, generator=None):
    """``(x, y, relevant)``: inputs ``(n, d)``, targets ``(n,)`` and the true subset as a k-hot ``(n, d)``."""
    x = torch.randn(n, d, generator=generator)
    positive = x[:, 0] > 0
    y = torch.where(positive, x[:, 1] * x[:, 2] + torch.sin(2 * x[:, 3]), x[:, 4] ** 2 - 1 + x[:, 5] * x[:, 6])
    y = y + 0.1 * torch.randn(n, generator=generator)
    relevant = torch.zeros(n, d)
    relevant[:, 0] = 1
    relevant[positive, 1:4] = 1
    relevant[~positive, 4:7] = 1
    return x, y, relevant


def mlp(d_in, d_out, hidden=100):
    return torch.nn.Sequential(
        torch.nn.Linear(d_in, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, d_out),
    )


def relaxed_mask(method, logits, k, t):
    """A relaxed k-hot mask: one of the four stochastic softmax tricks, or L2X's max of k one-hots."""
    if method == "l2x":
        return RelaxedOneHotCategorical(t, logits=logits).rsample((k,)).max(0).values
    return RelaxedTopK(logits, k, t, relaxation=method).rsample()


def hard_mask(logits, k):
    return torch.zeros_like(logits).scatter_(-1, logits.topk(k, -1).indices, 1.0)


def train(method, args):
    torch.manual_seed(args.seed)
    explainer, predictor = mlp(args.features, args.features), mlp(args.features, 1)
    opt = torch.optim.Adam([*explainer.parameters(), *predictor.parameters()], lr=args.lr)
    curve = []
    for step in range(args.steps):
        x, y, _ = switch_data(args.batch, args.features)
        mask = relaxed_mask(method, explainer(x), args.k, args.temperature)
        loss = (predictor(x * mask).squeeze(-1) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        curve.append(loss.item())
        if step % max(args.steps // 5, 1) == 0:
            print(f"{method:>20} step {step:5d}  relaxed mse {loss.item():.4f}", flush=True)
    return explainer, predictor, curve


@torch.no_grad()
def evaluate(explainer, predictor, args):
    x, y, relevant = switch_data(args.test, args.features, torch.Generator().manual_seed(args.seed + 1))
    mask = hard_mask(explainer(x), args.k)
    mse = (predictor(x * mask).squeeze(-1) - y).pow(2).mean().item()
    precision = ((mask * relevant).sum(-1) / args.k).mean().item()
    return {"subset_precision": round(precision, 4), "mse": round(mse, 4)}


def plot(curves, results, args):
    plt = cli.pyplot()

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.5))
    for method, curve in curves.items():
        smooth = torch.tensor(curve).unfold(0, min(50, len(curve)), 1).mean(-1)
        ax0.plot(smooth, label=method)
    ax0.set(title="training (relaxed mask)", xlabel="training step", ylabel="squared error (moving mean)", yscale="log")
    ax0.legend(fontsize=8)
    names = list(results)
    ax1.bar(names, [results[m]["subset_precision"] for m in names], color="tab:blue")
    ax1.set(title="test subset precision (hard top-k)", ylabel="subset precision", ylim=(0, 1.05))
    ax1.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    plt.close(fig)


def main(args):
    results, curves = {}, {}
    for method in args.method:
        explainer, predictor, curves[method] = train(method, args)
        results[method] = evaluate(explainer, predictor, args)
        print(f"{method:>20} {results[method]}", flush=True)
    plot(curves, results, args)
    print(f"figure: {args.out}")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main(ARGS)
