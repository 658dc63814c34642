"""Which gradient estimator? REINFORCE, RLOO, REBAR, RELAX and relaxed / straight-through samples, measured.

Part 1, the toy problem of Grathwohl et al. (2018): minimise E[(t - b)^2] over
b ~ Bernoulli(sigmoid(theta)) with t = 0.499. The right answer is p -> 0, but the two outcomes
differ by 0.002, so the gradient is tiny next to its noise. Each estimator trains theta with Adam;
we log the variance of its gradient and where theta ends.

Part 2, structured problems with a non-linear reward f(x) = sin(<c, x>) + <c, x>^2 + 2: a
k-subset (d = 10, k = 3, RelaxedTopK with Gumbel noise), a spanning tree (n = 5) and an
arborescence (n = 4) (RelaxedSpanningTree / RelaxedArborescence). Per estimator and temperature,
the bias of the gradient against the exact one and its variance, from a batch of independent
estimates. The k-subset's exact gradient comes from enumeration (Gumbel-top-k probabilities);
perturb-and-MAP probabilities of trees have no closed form, so their reference is an unbiased
RLOO estimate from many samples, whose standard error the table reports.

    python examples/pyro/estimators.py            # a few minutes on 2 cores; writes estimators.png
    python examples/pyro/estimators.py --smoke    # seconds; used by the tests

The last stdout line is one JSON object with the measured table.
"""

import functools
import json
import math
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import options  # noqa: E402
from options import TOY_TARGET  # noqa: E402


def parse_args(argv=None):
    return options.estimators(__doc__, __file__, argv)


if __name__ == "__main__":
    ARGS = parse_args()  # --help and argument errors answer here, before the heavy imports below

import figures
import pyro.distributions as pdist
import torch

from pyro_sst import RelaxedArborescence, RelaxedSpanningTree, RelaxedTopK
from pyro_sst import estimators as E


# ------------------------------------------------------------------------------ part 1: the toy problem
def toy_reward(b):
    return (TOY_TARGET - b) ** 2


class ToyEstimators:
    """The six estimators of the toy problem; REBAR's (eta, log lambda) and RELAX's control variate learn."""

    names = ("reinforce", "reinforce_rloo", "concrete", "straight_through", "rebar", "relax")

    def __init__(self):
        self.rebar_params = torch.tensor([1.0, math.log(0.5)], dtype=torch.float64, requires_grad=True)
        self.relax_params = torch.zeros(3, dtype=torch.float64, requires_grad=True)

    def control_variate(self, relaxed):
        shift, scale, slope = self.relax_params
        return shift + scale * toy_reward(relaxed) + slope * relaxed

    def surrogate(self, name, logits):
        dist = pdist.RelaxedBernoulli(torch.tensor(0.5, dtype=logits.dtype), logits=logits)
        if name == "reinforce":
            return E.score_function(toy_reward, dist).surrogate
        if name == "reinforce_rloo":
            return E.score_function(toy_reward, dist, 2, "loo").surrogate
        if name == "concrete":
            return toy_reward(dist.rsample())
        if name == "straight_through":
            st = pdist.RelaxedBernoulliStraightThrough(torch.tensor(0.5, dtype=logits.dtype), logits=logits)
            return toy_reward(st.rsample())
        if name == "rebar":
            eta, log_temperature = self.rebar_params
            return E.rebar(toy_reward, dist, log_temperature.exp(), eta).surrogate
        return E.relax(toy_reward, dist, self.control_variate).surrogate

    def learned(self, name):
        return {"rebar": [self.rebar_params], "relax": [self.relax_params]}.get(name, [])


def gradient_batch(surrogate, theta, batch):
    """``batch`` independent gradient estimates at ``theta`` (one backward pass over a batch of copies)."""
    logits = theta.detach().expand((batch,) + theta.shape).clone().requires_grad_()
    (grads,) = torch.autograd.grad(surrogate(logits).sum(), logits)
    return grads


def run_toy(args):
    results, curves = {}, {}
    for name in ToyEstimators.names:
        torch.manual_seed(args.seed)
        estimators = ToyEstimators()
        theta = torch.zeros((), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.Adam([theta], lr=0.01)
        learned = estimators.learned(name)
        opt_cv = torch.optim.Adam(learned, lr=0.01) if learned else None
        curve = []
        for step in range(args.steps):
            logits = theta.reshape(1)
            surrogate = estimators.surrogate(name, logits)
            if opt_cv is not None:
                # RELAX: theta descends the estimate, the control variate its variance.
                (grad,) = torch.autograd.grad(surrogate.sum(), theta, create_graph=True)
                opt_cv.zero_grad()
                (grad**2).backward(inputs=learned)
                opt_cv.step()
                theta.grad = grad.detach()
            else:
                opt.zero_grad()
                surrogate.sum().backward()
            opt.step()
            if step % max(args.steps // 20, 1) == 0 or step == args.steps - 1:
                grads = gradient_batch(functools.partial(estimators.surrogate, name), theta, args.batch // 10)
                curve.append((step, math.log(grads.var().item() + 1e-30)))
        curves[name] = curve
        p = torch.sigmoid(theta).item()
        results[name] = {"final_p": round(p, 4), "correct_side": p < 0.5, "final_log_variance": round(curve[-1][1], 3)}
        print(f"toy {name:17s} p(b=1) = {p:.3f}  log var = {curve[-1][1]:.2f}", flush=True)
    return results, curves


# ------------------------------------------------------------------------------ part 2: structures
def structured_reward(weights):
    dims = tuple(range(-weights.dim(), 0))

    def f(x):
        s = (x * weights).sum(dims)
        return torch.sin(s) + s**2 + 2.0

    return f


STRUCTURES = {
    "k_subset": ((10,), lambda logits, t: RelaxedTopK(logits, 3, t)),
    "spanning_tree": ((5, 5), lambda logits, t: RelaxedSpanningTree(logits, t)),
    "arborescence": ((4, 4), lambda logits, t: RelaxedArborescence(logits, t)),
}


def structured_surrogates(make, f, structure):
    """Estimator name -> (temperature-dependent?, surrogate(logits, t))."""

    def straight_through(logits, t):
        dist = make(logits, t)
        relaxed, hard = dist.relaxed_and_hard()
        return f(hard + relaxed - relaxed.detach())

    table = {
        "reinforce": (False, lambda logits, t: E.score_function(f, make(logits, t)).surrogate),
        "reinforce_rloo_x4": (False, lambda logits, t: E.score_function(f, make(logits, t), 4, "loo").surrogate),
        "relaxed": (True, lambda logits, t: f(make(logits, t).rsample())),
        "straight_through": (True, straight_through),
    }
    if structure == "k_subset":
        table["rebar"] = (True, lambda logits, t: E.rebar(f, make(logits, 1.0), temperature=t).surrogate)
        table["relax_f_cv"] = (True, lambda logits, t: E.relax(f, make(logits, t), lambda r: 0.9 * f(r)).surrogate)
    return table


def run_structures(args):
    table = {}
    for structure in args.structures or STRUCTURES:
        shape, make = STRUCTURES[structure]
        torch.manual_seed(args.seed)
        gen = torch.Generator().manual_seed(args.seed + 1)
        theta = torch.randn(shape, dtype=torch.float64, generator=gen)
        f = structured_reward(torch.randn(shape, dtype=torch.float64, generator=gen) * 0.5)
        reference, reference_se = reference_gradient(structure, make, f, theta, args)
        rows = {}
        for name, (tempered, surrogate) in structured_surrogates(make, f, structure).items():
            for t in args.temperatures if tempered else (1.0,):
                grads = gradient_batch(lambda logits, s=surrogate, t=t: s(logits, t), theta, args.batch)
                bias = (grads.mean(0) - reference).norm().item()
                standard_error = (grads.var(0).sum() / len(grads)).sqrt().item()
                key = f"{name}@t={t}" if tempered else name
                rows[key] = {
                    "bias": round(bias, 4),
                    "bias_standard_error": round(standard_error, 4),
                    "variance": round(grads.var(0).sum().item(), 3),
                }
                print(
                    f"{structure:13s} {key:26s} bias {bias:8.4f} (se {standard_error:.4f})  "
                    f"variance {rows[key]['variance']:10.3f}",
                    flush=True,
                )
        table[structure] = {"reference_standard_error": round(reference_se, 5), "estimators": rows}
    return table


def reference_gradient(structure, make, f, theta, args):
    """Exact for the k-subset (enumeration); else an unbiased RLOO estimate from many samples, with its error."""
    if structure == "k_subset":
        logits = theta.clone().requires_grad_()
        (exact,) = torch.autograd.grad(E.exact_expectation(f, make(logits, 1.0)), logits)
        return exact, 0.0

    def rloo(logits):
        return E.score_function(f, make(logits, 1.0), 16, "loo").surrogate

    grads = gradient_batch(rloo, theta, args.batch)
    return grads.mean(0), (grads.var(0).sum() / len(grads)).sqrt().item()


def main(args):
    toy, curves = run_toy(args)
    table = run_structures(args)
    figures.estimators(curves, table, args.out, "PyTorch")
    print(f"figure: {args.out}")
    summary = {"toy": toy, "structured": table}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(ARGS)
