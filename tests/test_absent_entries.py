"""``-inf`` logits (absent edges or items) in the exponential-family classes of both backends: ``log_prob``,
``entropy`` and ``kl_divergence`` are finite and equal to enumeration over the structures that remain, with
finite gradients (no ``-inf * 0``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from numpyro.distributions.kl import kl_divergence
from reference import ExpFamily, k_subsets, spanning_trees, upper_mask

import numpyro_sst
import pyro_sst


def _tree_logits():
    logits = np.random.default_rng(0).normal(size=(4, 4))
    logits[0, 1] = logits[1, 0] = -np.inf
    return logits


def _subset_logits():
    logits = np.random.default_rng(1).normal(size=5)
    logits[2] = -np.inf
    return logits


# (logits, constructor in a backend module without validation (-inf is invalid input to it), support, mask)
CASES = {
    "SpanningTree": (
        _tree_logits,
        lambda m, x: m.SpanningTree(x, validate_args=False),
        lambda: spanning_trees(4),
        upper_mask(4),
    ),
    "KSubset": (_subset_logits, lambda m, x: m.KSubset(x, 2, validate_args=False), lambda: k_subsets(5, 2), None),
}


def _reference(support, logits, mask):
    """The family over the structures of finite weight (those using no absent entry)."""
    mask = np.ones(logits.shape, bool) if mask is None else mask
    usable = ~((support > 0) & ~np.isfinite(logits) & mask).reshape(len(support), -1).any(-1)
    return ExpFamily(support[usable], np.where(np.isfinite(logits), logits, 0), mask)


@pytest.mark.parametrize("name", sorted(CASES))
def test_log_prob_entropy_and_kl_with_absent_entries(name):
    make_logits, make, make_support, mask = CASES[name]
    logits = make_logits()
    other = logits + np.random.default_rng(2).normal(size=logits.shape) * np.isfinite(logits)
    ref = _reference(make_support(), logits, mask)
    ref_other = _reference(make_support(), other, mask)
    mode = ref.mode
    expected_kl = float((ref.probs * (np.log(ref.probs) - np.log(ref_other.probs))).sum())

    x = torch.tensor(logits, requires_grad=True)
    q, p = make(pyro_sst, x), make(pyro_sst, torch.tensor(other))
    log_prob = q.log_prob(torch.tensor(mode))
    np.testing.assert_allclose(log_prob.item(), ref.scores[ref.index_of(mode[None])[0]] - ref.log_partition)
    np.testing.assert_allclose(q.entropy().item(), ref.entropy, rtol=1e-10)
    np.testing.assert_allclose(torch.distributions.kl_divergence(q, p).item(), expected_kl, rtol=1e-8, atol=1e-12)
    (log_prob + q.entropy()).backward()
    assert torch.isfinite(x.grad).all()

    with jax.enable_x64(True):
        jq, jp = make(numpyro_sst, jnp.asarray(logits)), make(numpyro_sst, jnp.asarray(other))
        np.testing.assert_allclose(float(jq.log_prob(jnp.asarray(mode))), log_prob.item(), rtol=1e-10)
        np.testing.assert_allclose(float(jq.entropy()), ref.entropy, rtol=1e-10)
        np.testing.assert_allclose(float(kl_divergence(jq, jp)), expected_kl, rtol=1e-8)
        grad = jax.grad(lambda t: make(numpyro_sst, t).log_prob(jnp.asarray(mode)) + make(numpyro_sst, t).entropy())
        assert bool(jnp.isfinite(grad(jnp.asarray(logits))).all())
