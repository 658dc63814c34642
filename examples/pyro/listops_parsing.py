"""Parse ListOps with a latent arborescence: the paper's unsupervised-parsing experiment, small.

ListOps expressions (``examples/datasets.py``: ``[MIN``, ``[MAX``, ``[MED``, ``[SM`` (sum mod 10)
over digits, nested to depth 2) are read token by token; their value (0-9) is the only label.
A parser (a BiLSTM, then bilinear scores) gives arc logits ``theta[i, j]`` for "token ``i`` is
the parent of token ``j``", with only operators as possible parents (the grammar's leaves, digits
and closing brackets, have no children; the parse itself is not given). Closing brackets carry
no value, so no loss could tell where they hang: they hang from the root, as padding does, and
the latent parse is that of the arguments (operators and digits). A latent graph ``Z`` is drawn
from

* ``--latent arborescence``: ``RelaxedArborescence(theta, t, root=0)`` (the first token is the
  root, padding hangs from it), or
* ``--latent independent``: independent relaxed Bernoulli arcs (Concrete in logit space),
* ``--latent true_parse``: the true parse, given (the executor's upper bound; no parser),

and an executor GNN whose messages are values (distributions over the digits) runs bottom-up over
``Z`` (see ``Executor``) and classifies the root. The loss is the cross-entropy through the
relaxed sample plus ``beta`` times the KL of the parser's utilities to those of the uniform prior
(``theta = 0`` on the allowed arcs); without it the parser collapses to the star "every token
hangs from the root" within a few hundred steps. The first ``--flat-steps`` steps train on flat
expressions (one operator over digits, a parse the arc mask fixes), so that the executor knows
the operators before the parser's gradients have to mean something. Evaluated on nested
expressions with the hard structure (the mode of the parser's distribution): task accuracy, and
edge precision/recall of the arcs into the arguments against the true parse (every argument
hangs from its operator).

    python examples/pyro/listops_parsing.py            # all three, a few minutes on 2 cores
    python examples/pyro/listops_parsing.py --smoke    # seconds; used by the tests

The last stdout line is one JSON object:
``{"arborescence": {"accuracy": ..., "edge_precision": ..., "edge_recall": ...}, "independent": {...}, ...}``.
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import cli  # noqa: E402

LATENTS = ("arborescence", "independent", "true_parse")


def parse_args(argv=None):
    parser = cli.example_parser(__doc__, "listops_parsing.png")
    parser.add_argument(
        "--latent", choices=LATENTS, nargs="+", default=list(LATENTS), help="latent structures to train, one model each"
    )
    parser.add_argument("--length", type=int, default=20, help="maximum tokens per expression")
    parser.add_argument("--train", type=int, default=20000, help="training examples")
    parser.add_argument("--test", type=int, default=2000, help="held-out examples")
    parser.add_argument("--steps", type=int, default=5000, help="training steps")
    parser.add_argument("--flat-steps", type=int, default=1000, help="first steps on flat expressions")
    parser.add_argument("--batch", type=int, default=64, help="examples per step")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam's learning rate")
    parser.add_argument("--temperature", type=float, default=0.5, help="temperature of the relaxation")
    parser.add_argument("--beta", type=float, default=0.01, help="weight of the KL to the uniform prior")
    parser.add_argument("--rounds", type=int, default=3, help="executor rounds (>= the nesting depth)")
    parser.add_argument("--hidden", type=int, default=64, help="hidden width")
    return cli.parse(
        parser, argv, __file__, "listops_parsing.png", length=12, train=512, test=128, steps=120, flat_steps=40
    )


if __name__ == "__main__":
    ARGS = parse_args()  # --help and argument errors answer here, before the heavy imports below

import datasets  # noqa: E402
import numpy as np
import torch
from pyro.distributions import Logistic
from torch.distributions import kl_divergence

from pyro_sst import RelaxedArborescence

OPERATOR_0 = datasets.LISTOPS_VOCABULARY.index("[MIN")  # the operators' ids, then the digits'
DIGIT_0 = datasets.LISTOPS_VOCABULARY.index("0")
PAD, BRACKET = datasets.LISTOPS_VOCABULARY.index("<pad>"), datasets.LISTOPS_VOCABULARY.index("]")


class Parser(torch.nn.Module):
    """Token ids ``(B, n)`` to arc logits ``(B, n, n)``.

    Operators are the only parents; closing brackets and padding hang from the root.
    """

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
        no_value = hangs_from_root(tokens)
        from_root = torch.zeros_like(no_value)
        from_root[:, 0] = True
        leaf = ~is_operator(tokens)  # digits, brackets, padding
        # -inf logits mark absent arcs, which every class and the independent arcs respect
        # exactly: a leaf has no children, and a bracket's or padding token's one arc comes from the root.
        absent = leaf[:, :, None] | (no_value[:, None, :] & ~from_root[:, :, None])
        return logits.masked_fill(absent, -float("inf"))


class Executor(torch.nn.Module):
    """A GNN over a (relaxed) parse whose messages are values: distributions over the digits 0-9.

    A digit's state is its one-hot value and stays so; an operator's state is recomputed each
    round from its own embedding and the sum of its children's states (with a hard parse, the
    histogram of their values): :math:`p_i \\leftarrow \\mathrm{softmax}(\\mathrm{MLP}([e_i,
    \\sum_j Z_{ij} p_j]))`. Closing brackets and padding carry nothing. After ``rounds`` rounds
    (at least the nesting depth) the root's logits classify the expression. The 10-dimensional
    bottleneck is the inductive bias a parse is for: the executor can only combine the values
    it is given as children, so a wrong parse costs accuracy.
    """

    def __init__(self, hidden, rounds):
        super().__init__()
        self.rounds = rounds
        self.embed = torch.nn.Embedding(len(datasets.LISTOPS_VOCABULARY), hidden)
        self.combine = torch.nn.Sequential(
            torch.nn.Linear(hidden + 10, 2 * hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(2 * hidden, 2 * hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(2 * hidden, 10),
        )

    def forward(self, tokens, z):
        digit = tokens - DIGIT_0
        operator = is_operator(tokens)
        digits = torch.nn.functional.one_hot(digit.clamp(min=0), 10).float() * (digit >= 0)[..., None]
        values, e = digits, self.embed(tokens)
        for _ in range(self.rounds):
            logits = self.combine(torch.cat([e, z @ values], -1))
            values = torch.where(operator[..., None], logits.softmax(-1), digits)
        return logits[:, 0]


def is_operator(tokens):
    return (tokens >= OPERATOR_0) & (tokens < DIGIT_0)


def hangs_from_root(tokens):
    """Closing brackets and padding: no value, so their one arc is fixed to come from the root."""
    return (tokens == PAD) | (tokens == BRACKET)


def latent_graph(latent, logits, t, hard=False):
    """A relaxed sample of the parse and its utility KL to the uniform prior, ``(z, kl)``.

    ``z[b, i, j]`` is the weight of "i is j's parent"; with ``hard``, the mode and no KL.
    """
    present = torch.isfinite(logits)
    prior_logits = torch.zeros_like(logits).masked_fill(~present, -float("inf"))
    if latent == "arborescence":
        q = RelaxedArborescence(logits, t, root=0, validate_args=False)  # -inf marks absent arcs
        if hard:
            return q.mode, None
        return q.rsample(), kl_divergence(q, RelaxedArborescence(prior_logits, t, root=0, validate_args=False))
    off_diagonal = 1.0 - torch.eye(logits.shape[-1])
    if hard:
        return (logits > 0).float() * off_diagonal, None
    # Relaxed Bernoulli arcs: sigmoid(U / t) of the utility U = theta + Logistic noise; the KL of
    # the utilities to those of the prior is estimated at the sample (no closed form).
    theta = torch.where(present, logits, torch.zeros_like(logits))
    utility = Logistic(theta, 1.0)
    u = utility.rsample()
    log_ratio = utility.log_prob(u) - Logistic(torch.zeros_like(theta), 1.0).log_prob(u)
    z = torch.sigmoid(u / t) * present * off_diagonal
    return z, (log_ratio * present * off_diagonal).sum((-1, -2))


def parse_adjacency(parents, tokens):
    """The true parse of the arguments as ``(B, n, n)`` arcs ``[parent, child]``.

    Closing brackets and padding hang from the root, as in ``Parser``.
    """
    parents = parents.masked_fill(hangs_from_root(tokens), 0).clamp(min=0)
    truth = torch.nn.functional.one_hot(parents, tokens.shape[-1]).transpose(-1, -2).float()
    truth[:, :, 0] = 0  # the root has no parent
    return truth


def edge_precision_recall(z, parents, tokens):
    """Arcs between arguments (operators and digits) against the true parse, pooled over the batch."""
    argument = (~hangs_from_root(tokens)).float()
    between_arguments = argument[:, :, None] * argument[:, None, :]
    predicted, truth = z * between_arguments, parse_adjacency(parents, tokens) * between_arguments
    hits = (predicted * truth).sum()
    return (hits / predicted.sum().clamp(min=1)).item(), (hits / truth.sum()).item()


def make_data(args):
    """``(flat, nested, test)``, each ``(tokens, values, parents)``; flat expressions have depth 1."""
    rng = np.random.default_rng(args.seed)
    flat = datasets.listops(rng, args.train, max_depth=1, max_length=args.length)
    nested = datasets.listops(rng, args.train + args.test, max_length=args.length)
    tensors = lambda arrays, rows: tuple(torch.as_tensor(a[rows]) for a in arrays)  # noqa: E731
    return tensors(flat, slice(None)), tensors(nested, slice(args.train)), tensors(nested, slice(args.train, None))


def train(latent, data, args):
    flat, nested, test = data
    torch.manual_seed(args.seed)
    parser, executor = Parser(args.length, args.hidden), Executor(args.hidden, args.rounds)
    opt = torch.optim.Adam([*parser.parameters(), *executor.parameters()], lr=args.lr)
    curve = []
    for step in range(args.steps):
        idx = torch.randint(args.train, (args.batch,))
        tokens, values, parents = (a[idx] for a in (flat if step < args.flat_steps else nested))
        if latent == "true_parse":
            z, kl = parse_adjacency(parents, tokens), torch.zeros(())
        else:
            z, kl = latent_graph(latent, parser(tokens), args.temperature)
        loss = torch.nn.functional.cross_entropy(executor(tokens, z), values) + args.beta * kl.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % max(args.steps // 10, 1) == 0 or step == args.steps - 1:
            metrics = evaluate(latent, parser, executor, *test, args)
            curve.append((step, metrics["accuracy"], metrics["edge_precision"]))
            print(f"{latent:>12} step {step:5d}  loss {loss.item():.3f}  {metrics}", flush=True)
    return (parser, executor), metrics, curve


@torch.no_grad()
def evaluate(latent, parser, executor, tokens, values, parents, args):
    if latent == "true_parse":
        z = parse_adjacency(parents, tokens)
    else:
        z, _ = latent_graph(latent, parser(tokens), args.temperature, hard=True)
    accuracy = (executor(tokens, z).argmax(-1) == values).float().mean().item()
    precision, recall = edge_precision_recall(z, parents, tokens)
    return {"accuracy": round(accuracy, 4), "edge_precision": round(precision, 4), "edge_recall": round(recall, 4)}


def plot(curves, args):
    plt = cli.pyplot()

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9, 3.5))
    for latent, curve in curves.items():
        steps, accuracy, precision = zip(*curve, strict=True)
        ax0.plot(steps, accuracy, marker="o", label=latent)
        ax1.plot(steps, precision, marker="o", label=latent)
    for ax in (ax0, ax1):
        ax.axvline(args.flat_steps, color="gray", linestyle=":")  # flat expressions before, nested after
    ax0.set(title="test accuracy (hard parse)", xlabel="training step", ylabel="accuracy", ylim=(0, 1))
    ax1.set(title="test edge precision", xlabel="training step", ylabel="edge precision", ylim=(0, 1))
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
    main(ARGS)
