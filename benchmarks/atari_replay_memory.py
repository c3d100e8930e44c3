#!/usr/bin/env python
"""Replay memory for 1M Atari transitions: frame-deduplicated (dqnx) against whole stacks.

Builds dqnx's Atari replay (replay/frames.py) for `--transitions` transitions of
4x84x84 uint8 observations, fills every slot (so the memory is really touched), and
measures the process's resident memory before and after (peak RSS from
/proc/self/status). The naive layout, which stores obs and next_obs as whole
stacks, is computed from its array shapes rather than allocated (56 GB does not fit
this machine).

    python benchmarks/atari_replay_memory.py [--transitions 1000000] [--num-envs 1]
"""

from __future__ import annotations

import argparse
import time


def rss_gb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=1_000_000)
    parser.add_argument("--num-envs", type=int, default=1)
    parser.add_argument("--fill-block", type=int, default=5_000, help="transitions written per compiled call")
    args = parser.parse_args()

    import dqnx.api  # noqa: F401  (JAX setup)
    import jax
    import jax.numpy as jnp

    from dqnx.agents import Batch
    from dqnx.replay import frames

    stack, size = 4, 84
    n = args.num_envs
    before = rss_gb()
    buffer = frames.init_frame_replay(args.transitions, n, (stack, size, size))
    array_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(buffer))

    def fill(buffer, key):
        def one(buffer, k):
            frame = jax.random.randint(k, (n, 1, size, size), 0, 256, jnp.int32).astype(jnp.uint8)
            obs = jnp.repeat(frame, stack, axis=1)
            end = jax.random.uniform(k, (n,)) < 0.001  # episodes of about 1,000 steps
            batch = Batch(obs=obs, action=jnp.zeros((n,), jnp.int32), reward=jnp.zeros((n,)), next_obs=obs,
                          terminated=end, episode_end=end)
            return frames.add(buffer, batch), None

        return jax.lax.scan(one, buffer, jax.random.split(key, args.fill_block))[0]

    fill = jax.jit(fill, donate_argnums=0)
    start = time.perf_counter()
    writes = -(-args.transitions // (n * args.fill_block)) + 1  # past full, so every slot is written
    for i in range(writes):
        buffer = fill(buffer, jax.random.PRNGKey(i))
    jax.block_until_ready(buffer)
    seconds = time.perf_counter() - start
    sample = jax.jit(lambda b, k: frames.sample(b, k, 32))(buffer, jax.random.PRNGKey(0))
    assert sample.obs.shape == (32, stack, size, size)
    after, peak = rss_gb(), rss_gb("VmHWM")
    naive = args.transitions * 2 * stack * size * size

    print(f"Atari replay, {args.transitions:,} transitions of {stack}x{size}x{size} uint8 observations, {n} env(s)")
    print(f"  dqnx frame replay arrays: {array_bytes / 1e9:.2f} GB ({array_bytes / args.transitions:,.0f} bytes a transition)")
    print(f"  process RSS: {before:.2f} GB before, {after:.2f} GB after filling every slot (peak {peak:.2f} GB); "
          f"filled in {seconds:.1f} s")
    print(f"  whole stacks (obs and next_obs stored per transition): {naive / 1e9:.1f} GB by their shapes")
    print(f"  ratio: {naive / array_bytes:.1f}x less memory")


if __name__ == "__main__":
    main()
