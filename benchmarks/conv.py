"""Why dqnx's networks convolve by patches (networks.PatchConv) and not with nn.Conv.

Times gradient steps of two networks inside a compiled loop (lax.scan, as dqnx's training
runs) and alone, with flax's nn.Conv and with PatchConv (the same parameters and outputs):

- the MinAtar network (one 3x3 convolution of 16 channels, a dense layer of 128) on
  batches of 128 boards of 10x10x4 (Breakout-MinAtar), PQN's minibatch;
- the Nature CNN (32 8x8/4, 64 4x4/2, 64 3x3/1, a dense layer of 512) on batches of 32
  frames of 84x84x4, DQN's Atari minibatch.

    python benchmarks/conv.py [--repeats 5] [--cpu-time] [--network "Nature CNN"]

Prints milliseconds per gradient step and the ratio nn.Conv / PatchConv for each. --cpu-time
measures the process's CPU time (every thread's, summed) instead of wall time: on a machine
other jobs share, wall time grows with their load and CPU time much less; on an idle 2-core
machine a step that keeps both cores busy costs about twice its wall time in CPU time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from dqnx.agents.networks import PatchConv  # noqa: E402

NETWORKS = {  # name -> (convolutions (channels, size, stride), dense widths, actions, batch, input shape)
    "MinAtar network": ([(16, 3, 1)], [128], 3, 128, (10, 10, 4)),
    "Nature CNN": ([(32, 8, 4), (64, 4, 2), (64, 3, 1)], [512], 6, 32, (84, 84, 4)),
}


class Net(nn.Module):
    convolutions: tuple
    widths: tuple
    actions: int
    patches: bool

    @nn.compact
    def __call__(self, x):
        for i, (channels, size, stride) in enumerate(self.convolutions):
            if self.patches:
                x = PatchConv(channels, size, stride, name=f"Conv_{i}")(x)
            else:
                x = nn.Conv(channels, (size, size), strides=(stride, stride), padding="VALID", name=f"Conv_{i}")(x)
            x = nn.relu(x)
        x = x.reshape(x.shape[0], -1)
        for width in self.widths:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.actions)(x)


def time_network(net: Net, batch: int, shape: tuple, steps: int, repeats: int,
                 clock=time.perf_counter) -> tuple[float, float]:
    """Milliseconds per SGD step (of `clock`): inside lax.scan over `steps` batches, and one jitted step alone."""
    xs = jax.random.uniform(jax.random.PRNGKey(0), (steps, batch, *shape))
    params = net.init(jax.random.PRNGKey(1), xs[0])

    def step(params, x):
        grads = jax.grad(lambda p: (net.apply(p, x) ** 2).mean())(params)
        return jax.tree.map(lambda w, g: w - 1e-3 * g, params, grads), None

    looped = jax.jit(lambda p, xs: jax.lax.scan(step, p, xs)[0])
    alone = jax.jit(lambda p, x: step(p, x)[0])
    jax.block_until_ready(looped(params, xs))
    jax.block_until_ready(alone(params, xs[0]))
    start = clock()
    for _ in range(repeats):
        out = looped(params, xs)
    jax.block_until_ready(out)
    in_loop = (clock() - start) / (repeats * steps) * 1e3
    start = clock()
    for _ in range(repeats * steps):
        out = alone(params, xs[0])
    jax.block_until_ready(out)
    return in_loop, (clock() - start) / (repeats * steps) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cpu-time", action="store_true", help="CPU time of the process instead of wall time")
    parser.add_argument("--network", choices=sorted(NETWORKS), action="append", help="only these (repeatable)")
    args = parser.parse_args()
    clock = time.process_time if args.cpu_time else time.perf_counter
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {'CPU' if args.cpu_time else 'wall'} ms per step")
    for name, (convs, widths, actions, batch, shape) in NETWORKS.items():
        if args.network and name not in args.network:
            continue
        steps = 64 if batch >= 128 else 8
        row = {}
        for patches in (False, True):
            net = Net(tuple(convs), tuple(widths), actions, patches)
            row[patches] = time_network(net, batch, shape, steps, args.repeats, clock)
        (flax_loop, flax_alone), (ours_loop, ours_alone) = row[False], row[True]
        print(f"{name}, batch {batch}: in lax.scan nn.Conv {flax_loop:.1f} ms, PatchConv {ours_loop:.1f} ms "
              f"({flax_loop / ours_loop:.1f}x); alone nn.Conv {flax_alone:.1f} ms, PatchConv {ours_alone:.1f} ms "
              f"({flax_alone / ours_alone:.1f}x)")


if __name__ == "__main__":
    main()
