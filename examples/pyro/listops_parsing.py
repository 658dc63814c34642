"""Parse ListOps with a latent arborescence: the paper's unsupervised-parsing experiment, small.

ListOps expressions (``examples/datasets.py``: ``[MIN``, ``[MAX``, ``[MED``, ``[SM`` (sum mod 10)
over digits, nested to depth 2) are read token by token; their value (0-9) is the only label.
A parser (a BiLSTM, then bilinear scores) gives arc logits ``theta[i, j]`` for "token ``i`` is
the parent of token ``j``"; a latent graph ``Z`` is drawn from

* ``--latent arborescence``: ``RelaxedArborescence(theta, t, root=0)`` (the first token is the
  root, padding hangs from it), or
* ``--latent independent``: independent relaxed Bernoulli arcs (Concrete in logit space),

and an executor GNN runs bottom-up over ``Z`` (each round, a token reads the sum of its
children's states, :math:`h_i \\leftarrow h_i + \\mathrm{MLP}([h_i, \\sum_j Z_{ij} h_j])`) and
classifies the root's state. Trained with cross-entropy through the relaxed sample; evaluated
with the hard structure (the mode of the parser's distribution): task accuracy, and edge
precision/recall of the arcs between real tokens against the true parse (every argument and
closing bracket hangs from its operator).

    python examples/pyro/listops_parsing.py            # both latents, a few minutes on 2 cores
    python examples/pyro/listops_parsing.py --smoke    # seconds; used by the tests

The last stdout line is one JSON object:
``{"arborescence": {"accuracy": ..., "edge_precision": ..., "edge_recall": ...}, "independent": {...}}``.
"""

import argparse
import json
import pathlib
import sys

import numpy as np
import torch

from pyro_sst import RelaxedArborescence

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import datasets  # noqa: E402

LATENTS = ("arborescence", "independent")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latent", choices=LATENTS, nargs="+", default=list(LATENTS))
    parser.add_argument("--length", type=int, default=20, help="maximum tokens per expression")
    parser.add_argument("--train", type=int, default=20000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3, help="executor rounds (>= the nesting depth + 1)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(pathlib.Path(__file__).with_name("listops_parsing.png")))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.length, args.train, args.test, args.steps = 12, 512, 128, 60
    return args


class Parser(torch.nn.Module):
    """Token ids ``(B, n)`` to arc logits ``(B, n, n)``; the padding's arcs are pinned to the root."""

    def __init__(self, length, hidden):
        super().__init__()
        self.embed = torch.nn.Embedding(len(datasets.LISTOPS_VOCABULARY), hidden)
        self.position = torch.nn.Parameter(0.1 * torch.randn(length, hidden))
        self.lstm = torch.nn.LSTM(hidden, hidden, batch_first=True, bidirectional=True)
        self.head = torch.nn.Linear(2 * hidden, hidden)
        self.dependent = torch.nn.Linear(2 * hidden, hidden)

    def forward(self, tokens):
        h, _ = self.lstm(self.embed(tokens) + self.position)
        logits = self.head(h) @ self.dependent(h).transpose(-1, -2) / self.head.out_features**0.5
        pad = tokens == 0
        from_root = torch.zeros_like(pad)
        from_root[:, 0] = True
        # A padding token's only arc comes from the root and it is nobody's parent: -inf logits
        # mark absent arcs, which every class and the independent arcs respect exactly.
        absent = (pad[:, None, :] & ~from_root[:, :, None]) | pad[:, :, None]
        return logits.masked_fill(absent, -float("inf"))


class Executor(torch.nn.Module):
    """A GNN over a (relaxed) parse: bottom-up rounds of child sums, then the root's state classified."""

    def __init__(self, hidden, rounds):
        super().__init__()
        self.embed = torch.nn.Embedding(len(datasets.LISTOPS_VOCABULARY), hidden)
        self.update = torch.nn.ModuleList(
            torch.nn.Sequential(
                torch.nn.Linear(2 * hidden, 2 * hidden), torch.nn.ReLU(), torch.nn.Linear(2 * hidden, hidden)
            )
            for _ in range(rounds)
        )
        self.norm = torch.nn.LayerNorm(hidden)
        self.classify = torch.nn.Linear(hidden, 10)

    def forward(self, tokens, z):
        h = self.embed(tokens)
        for update in self.update:
            h = self.norm(h + update(torch.cat([h, z @ h], -1)))
        return self.classify(h[:, 0])


def latent_graph(latent, logits, t, hard=False):
    """A relaxed sample of the parse (or, with ``hard``, the mode): ``z[b, i, j]``, i is j's parent."""
    if latent == "arborescence":
        q = RelaxedArborescence(logits, t, root=0, validate_args=False)  # -inf marks absent arcs
        return q.mode if hard else q.rsample()
    off_diagonal = 1.0 - torch.eye(logits.shape[-1])
    if hard:
        return (logits > 0).float() * off_diagonal
    # Relaxed Bernoulli arcs: sigmoid of the Concrete logit (logits + Logistic noise) / t.
    u = torch.rand_like(logits).clamp(1e-6, 1 - 1e-6)
    return torch.sigmoid((logits + u.log() - (-u).log1p()) / t) * off_diagonal


def edge_precision_recall(z, parents, tokens):
    """Arcs between real tokens against the true parse, pooled over the batch."""
    truth = torch.nn.functional.one_hot(parents.clamp(min=0), tokens.shape[-1]).transpose(-1, -2).float()
    truth[:, :, 0] = 0  # the root has no parent
    real = (tokens != 0).float()
    between_real = real[:, :, None] * real[:, None, :]
    predicted, truth = z * between_real, truth * between_real
    hits = (predicted * truth).sum()
    return (hits / predicted.sum().clamp(min=1)).item(), (hits / truth.sum()).item()


def make_data(args):
    rng = np.random.default_rng(args.seed)
    tokens, values, parents = datasets.listops(rng, args.train + args.test, max_length=args.length)
    split = lambda a: (torch.as_tensor(a[: args.train]), torch.as_tensor(a[args.train :]))  # noqa: E731
    return split(tokens), split(values), split(parents)


def train(latent, data, args):
    (tokens, test_tokens), (values, test_values), (_, test_parents) = data
    torch.manual_seed(args.seed)
    parser, executor = Parser(args.length, args.hidden), Executor(args.hidden, args.rounds)
    opt = torch.optim.Adam([*parser.parameters(), *executor.parameters()], lr=args.lr)
    curve = []
    for step in range(args.steps):
        idx = torch.randint(len(tokens), (args.batch,))
        z = latent_graph(latent, parser(tokens[idx]), args.temperature)
        loss = torch.nn.functional.cross_entropy(executor(tokens[idx], z), values[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % max(args.steps // 10, 1) == 0 or step == args.steps - 1:
            metrics = evaluate(latent, parser, executor, test_tokens, test_values, test_parents, args)
            curve.append((step, metrics["accuracy"], metrics["edge_precision"]))
            print(f"{latent:>12} step {step:5d}  loss {loss.item():.3f}  {metrics}", flush=True)
    return (parser, executor), metrics, curve


@torch.no_grad()
def evaluate(latent, parser, executor, tokens, values, parents, args):
    z = latent_graph(latent, parser(tokens), args.temperature, hard=True)
    accuracy = (executor(tokens, z).argmax(-1) == values).float().mean().item()
    precision, recall = edge_precision_recall(z, parents, tokens)
    return {"accuracy": round(accuracy, 4), "edge_precision": round(precision, 4), "edge_recall": round(recall, 4)}


def plot(curves, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9, 3.5))
    for latent, curve in curves.items():
        steps, accuracy, precision = zip(*curve, strict=True)
        ax0.plot(steps, accuracy, marker="o", label=latent)
        ax1.plot(steps, precision, marker="o", label=latent)
    ax0.set(title="test accuracy (hard parse)", xlabel="step", ylim=(0, 1))
    ax1.set(title="test edge precision", xlabel="step", ylim=(0, 1))
    ax0.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    plt.close(fig)


def main(args):
    data = make_data(args)
    results, curves = {}, {}
    for latent in args.latent:
        _, results[latent], curves[latent] = train(latent, data, args)
        print(f"{latent:>12} {results[latent]}", flush=True)
    plot(curves, args)
    print(f"figure: {args.out}")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main(parse_args())
