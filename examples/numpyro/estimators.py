"""Which gradient estimator? REINFORCE, RLOO, REBAR, RELAX and relaxed / straight-through samples, in JAX.

The JAX mirror of ``examples/pyro/estimators.py`` (see its docstring): part 1 trains theta on the
toy problem E[(t - b)^2], b ~ Bernoulli(sigmoid(theta)), t = 0.499, with each estimator and logs
its gradient variance; part 2 measures the bias and variance of every estimator per temperature on
a k-subset (d = 10, k = 3), a spanning tree (n = 5) and an arborescence (n = 4) with a non-linear
reward. Random numbers come from explicit ``jax.random`` keys; the estimates are jitted.

    python examples/numpyro/estimators.py            # a few minutes on 2 cores; writes estimators.png
    python examples/numpyro/estimators.py --smoke    # seconds; used by the tests

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

TOY_ESTIMATORS = ("reinforce", "reinforce_rloo", "concrete", "straight_through", "rebar", "relax")


def parse_args(argv=None):
    return options.estimators(__doc__, __file__, argv)


if __name__ == "__main__":
    ARGS = parse_args()  # --help and argument errors answer here, before the heavy imports below

import figures
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as ndist
import numpyro.optim

from numpyro_sst import RelaxedArborescence, RelaxedSpanningTree, RelaxedTopK
from numpyro_sst import estimators as E


# ------------------------------------------------------------------------------ part 1: the toy problem
def toy_reward(b):
    return (TOY_TARGET - b) ** 2


def toy_surrogate(name, key, logits, learned):
    """The estimator's surrogate; ``learned`` holds REBAR's (eta, log lambda) and RELAX's control variate."""
    dist = ndist.RelaxedBernoulliLogits(0.5, logits)
    if name == "reinforce":
        return E.score_function(key, toy_reward, dist).surrogate
    if name == "reinforce_rloo":
        return E.score_function(key, toy_reward, dist, 2, "loo").surrogate
    if name in ("concrete", "straight_through"):
        relaxed = dist.rsample(key)
        if name == "straight_through":
            hard = (relaxed > 0.5).astype(relaxed.dtype)
            relaxed = hard + relaxed - jax.lax.stop_gradient(relaxed)
        return toy_reward(relaxed)
    if name == "rebar":
        eta, log_temperature = learned["rebar"]
        return E.rebar(key, toy_reward, dist, jnp.exp(log_temperature), eta).surrogate
    shift, scale, slope = learned["relax"]
    return E.relax(key, toy_reward, dist, lambda r: shift + scale * toy_reward(r) + slope * r).surrogate


@functools.partial(jax.jit, static_argnums=0)
def toy_step(name, key, theta, learned):
    """``(gradient of theta, gradient of the learned parameters' variance objective)``."""

    def gradient(learned):
        return jax.grad(lambda t: toy_surrogate(name, key, t, learned).sum())(theta)

    grad = gradient(learned)
    return grad, jax.grad(lambda p: (gradient(p) ** 2).sum())(learned)


@functools.partial(jax.jit, static_argnums=(0, 3))
def toy_gradients(name, key, theta, batch, learned):
    logits = jnp.broadcast_to(theta, (batch,))
    return jax.grad(lambda t: toy_surrogate(name, key, t, learned).sum())(logits)


def run_toy(args):
    results, curves = {}, {}
    theta_opt, learned_opt = numpyro.optim.Adam(0.01), numpyro.optim.Adam(0.01)
    for name in TOY_ESTIMATORS:
        key = jax.random.PRNGKey(args.seed)
        learned = {"rebar": jnp.array([1.0, math.log(0.5)]), "relax": jnp.zeros(3)}
        theta_state, learned_state = theta_opt.init(jnp.zeros(1)), learned_opt.init(learned)
        curve = []
        for step in range(args.steps):
            key, step_key, measure_key = jax.random.split(key, 3)
            theta, learned = theta_opt.get_params(theta_state), learned_opt.get_params(learned_state)
            grad, learned_grad = toy_step(name, step_key, theta, learned)
            theta_state = theta_opt.update(grad, theta_state)
            learned_state = learned_opt.update(learned_grad, learned_state)
            if step % max(args.steps // 20, 1) == 0 or step == args.steps - 1:
                grads = toy_gradients(name, measure_key, theta, args.batch // 10, learned)
                curve.append((step, math.log(float(grads.var()) + 1e-30)))
        curves[name] = curve
        p = float(jax.nn.sigmoid(theta_opt.get_params(theta_state))[0])
        results[name] = {"final_p": round(p, 4), "correct_side": p < 0.5, "final_log_variance": round(curve[-1][1], 3)}
        print(f"toy {name:17s} p(b=1) = {p:.3f}  log var = {curve[-1][1]:.2f}", flush=True)
    return results, curves


# ------------------------------------------------------------------------------ part 2: structures
def structured_reward(weights):
    dims = tuple(range(-weights.ndim, 0))

    def f(x):
        s = (x * weights).sum(dims)
        return jnp.sin(s) + s**2 + 2.0

    return f


STRUCTURES = {
    "k_subset": ((10,), lambda logits, t: RelaxedTopK(logits, 3, t)),
    "spanning_tree": ((5, 5), lambda logits, t: RelaxedSpanningTree(logits, t)),
    "arborescence": ((4, 4), lambda logits, t: RelaxedArborescence(logits, t)),
}


def structured_surrogates(make, f, structure):
    """Estimator name -> (temperature-dependent?, surrogate(key, logits, t))."""

    def straight_through(key, logits, t):
        relaxed, hard = make(logits, t).relaxed_and_hard(key)
        return f(hard + relaxed - jax.lax.stop_gradient(relaxed))

    table = {
        "reinforce": (False, lambda key, logits, t: E.score_function(key, f, make(logits, t)).surrogate),
        "reinforce_rloo_x4": (
            False,
            lambda key, logits, t: E.score_function(key, f, make(logits, t), 4, "loo").surrogate,
        ),
        "relaxed": (True, lambda key, logits, t: f(make(logits, t).sample(key))),
        "straight_through": (True, straight_through),
    }
    if structure == "k_subset":
        table["rebar"] = (True, lambda key, logits, t: E.rebar(key, f, make(logits, 1.0), temperature=t).surrogate)
        table["relax_f_cv"] = (
            True,
            lambda key, logits, t: E.relax(key, f, make(logits, t), lambda r: 0.9 * f(r)).surrogate,
        )
    return table


def gradient_batch(surrogate, key, theta, batch):
    """``batch`` independent gradient estimates at ``theta`` (one gradient over a batch of copies).

    Compiled as one program: run eagerly, the gradient would dispatch (and compile) each operation on its own.
    """
    logits = jnp.broadcast_to(theta, (batch,) + theta.shape)
    return jax.jit(jax.grad(lambda k, t: surrogate(k, t).sum(), argnums=1))(key, logits)


def run_structures(args):
    table = {}
    for index, structure in enumerate(args.structures or STRUCTURES):
        shape, make = STRUCTURES[structure]
        rng = np.random.RandomState(args.seed + index)
        theta = jnp.asarray(rng.normal(size=shape), jnp.float32)
        f = structured_reward(jnp.asarray(rng.normal(size=shape) * 0.5, jnp.float32))
        key = jax.random.PRNGKey(args.seed + index)
        reference, reference_se = reference_gradient(structure, make, f, key, theta, args)
        rows = {}
        for name, (tempered, surrogate) in structured_surrogates(make, f, structure).items():
            for t in args.temperatures if tempered else (1.0,):
                key, sub = jax.random.split(key)
                grads = gradient_batch(lambda k, logits, s=surrogate, t=t: s(k, logits, t), sub, theta, args.batch)
                bias = float(jnp.linalg.norm(grads.mean(0) - reference))
                standard_error = float(jnp.sqrt(grads.var(0).sum() / len(grads)))
                label = f"{name}@t={t}" if tempered else name
                rows[label] = {
                    "bias": round(bias, 4),
                    "bias_standard_error": round(standard_error, 4),
                    "variance": round(float(grads.var(0).sum()), 3),
                }
                print(
                    f"{structure:13s} {label:26s} bias {bias:8.4f} (se {standard_error:.4f})  "
                    f"variance {rows[label]['variance']:10.3f}",
                    flush=True,
                )
        table[structure] = {"reference_standard_error": round(reference_se, 5), "estimators": rows}
    return table


def reference_gradient(structure, make, f, key, theta, args):
    """Exact for the k-subset (enumeration); else an unbiased RLOO estimate from many samples, with its error."""
    if structure == "k_subset":
        return jax.jit(jax.grad(lambda t: E.exact_expectation(f, make(t, 1.0))))(theta), 0.0

    def rloo(k, logits):
        return E.score_function(k, f, make(logits, 1.0), 16, "loo").surrogate

    grads = gradient_batch(rloo, key, theta, args.batch)
    return grads.mean(0), float(jnp.sqrt(grads.var(0).sum() / len(grads)))


def main(args):
    toy, curves = run_toy(args)
    table = run_structures(args)
    figures.estimators(curves, table, args.out, "JAX")
    print(f"figure: {args.out}")
    summary = {"toy": toy, "structured": table}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(ARGS)
