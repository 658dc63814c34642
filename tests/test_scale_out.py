"""Scale-out on the engines users already have: a batch of distributions sharded over JAX devices, and a guide
whose gradient is averaged by PyTorch's DistributedDataParallel.

Each check runs this file as a script in a fresh interpreter: JAX fixes its device count when it starts
(``--xla_force_host_platform_device_count=4`` gives four CPU devices), and DDP's workers are processes."""

import os
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DDP_NODES, DDP_ITEMS = 6, 8


def _run_script(*args):
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=600, cwd=HERE)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()


def test_jax_batch_sharded_over_devices_matches_unsharded_and_stays_sharded():
    lines = _run_script("jax")
    assert len(lines) == 9 and all(line.endswith(" ok") for line in lines), lines  # every class


def test_ddp_over_two_processes_gives_the_one_process_gradient():
    with socket.socket() as s:  # a free port for the process group
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (line,) = _run_script("ddp", str(port))
    difference, size = map(float, line.split())
    assert size > 0.1 and difference <= 1e-6 * size


# ---------------------------------------------------------------------------------------- the scripts
def jax_sharding():
    """Every class of numpyro_sst (once each) on a batch of 8 sharded over 4 devices, under ``jit``: samples (exact and
    relaxed), hard samples, ``log_prob`` and gradients equal the unsharded ones, and keep the batch sharding."""
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4 " + os.environ.get("XLA_FLAGS", "")
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    from test_generic_checks import CASES

    import numpyro_sst

    assert len(jax.devices()) == 4, jax.devices()
    by_batch = NamedSharding(Mesh(np.array(jax.devices()), ("batch",)), PartitionSpec("batch"))
    key = jax.random.PRNGKey(0)
    for name, (make, event_shape, relaxed, _) in CASES.items():
        if "-" in name:  # a second configuration of a class already checked
            continue
        logits = jax.random.normal(jax.random.PRNGKey(1), (8,) + event_shape)
        weights = jax.random.normal(jax.random.PRNGKey(2), (8,) + event_shape)

        def loss(logits, make=make, relaxed=relaxed, weights=weights):
            # relaxed classes: the reparameterised gradient; exact ones: the score's
            d = make(numpyro_sst, logits)
            x = d.sample(key)
            return (x * weights).sum() if relaxed else d.log_prob(x).sum()

        def run(logits, make=make, relaxed=relaxed, loss=loss):
            d = make(numpyro_sst, logits)
            x = d.sample(key)
            hard = d.hard_sample(key) if relaxed else x
            return x, hard, d.log_prob(x), jax.grad(loss)(logits)

        plain = jax.jit(run)(logits)
        sharded = jax.jit(run)(jax.device_put(logits, by_batch))
        for a, b in zip(plain, sharded, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5, err_msg=name)
            assert b.sharding.is_equivalent_to(by_batch, b.ndim), (name, b.sharding)
        print(name, "ok")


def _ddp_guide():
    """A guide module (torch is imported in the script, not when pytest collects this file)."""
    import torch

    from pyro_sst import RelaxedSpanningTree

    class Guide(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.logits = torch.nn.Parameter(torch.linspace(-1, 1, DDP_NODES**2).reshape(DDP_NODES, DDP_NODES))

        def forward(self, noise):  # one reparameterised relaxed tree per data item, from fixed Gumbel noise
            return RelaxedSpanningTree(self.logits, 0.5).relax(self.logits + noise)

    return Guide()


def _ddp_data():
    import torch

    g = torch.Generator().manual_seed(0)
    targets = torch.randn(DDP_ITEMS, DDP_NODES, DDP_NODES, generator=g)
    noise = -torch.log(-torch.log(torch.rand(DDP_ITEMS, DDP_NODES, DDP_NODES, generator=g)))
    return targets, noise


def _ddp_loss(model, targets, noise):
    return ((model(noise) - targets) ** 2).sum((-2, -1)).mean()


def _ddp_rank(rank, world, port, out):
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = DistributedDataParallel(_ddp_guide())
    targets, noise = _ddp_data()
    _ddp_loss(model, targets[rank::world], noise[rank::world]).backward()  # DDP averages the ranks' gradients
    if rank == 0:
        torch.save(model.module.logits.grad, out)
    dist.destroy_process_group()


def ddp(port):
    """The guide's gradient over 2 gloo processes (half the data each) against one process (all of it): prints the
    largest difference and the gradient's size."""
    import tempfile

    import torch
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "grad.pt")
        mp.spawn(_ddp_rank, args=(2, int(port), out), nprocs=2)
        distributed = torch.load(out)
    single = _ddp_guide()
    _ddp_loss(single, *_ddp_data()).backward()
    print(float((distributed - single.logits.grad).abs().max()), float(single.logits.grad.abs().max()))


if __name__ == "__main__":
    {"jax": jax_sharding, "ddp": ddp}[sys.argv[1]](*sys.argv[2:])
