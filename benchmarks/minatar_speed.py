#!/usr/bin/env python
"""Throughput of the DQN and PQN MinAtar presets in the compiled loop, and where the time goes.

For each game and agent (the presets of src/dqnx/presets/), one seed as `dqnx train` runs it:

- env steps/s of the compiled loop after compiling, evaluation excluded: a first chunk
  compiles (and passes DQN's learning_starts), then `--chunks` chunks of `--iterations`
  iterations are timed; wall and CPU seconds (the process's user + sys: with a loaded
  machine wall stretches and CPU seconds stay closer to the work) and the load average;
- with `--compare`, the same runs with the optimizer flattened by optax.flatten (the path
  before agents/dqn.py's `flatten`) built in the same process, timed round by round
  alternating with the current path, so both see the same load; and whether both paths end
  in the same state (a digest of the agent's state after the warm-up chunk);
- with `--breakdown`, one more chunk under jax.profiler: the duration of every XLA operation,
  grouped by what it computes (read from the operation's source in the compiled program):
  env step, acting, replay insert, replay sampling, forward passes inside the loss (online
  and target network), backward pass, and the rest of the update (optimizer, flattening,
  Polyak averaging). On a loaded machine an operation split over both cores also counts the
  time it waits for the other core, so the shares are rough there.

    python benchmarks/minatar_speed.py                                  # DQN and PQN on Breakout
    python benchmarks/minatar_speed.py --games Breakout-MinAtar SpaceInvaders-MinAtar --agents dqn --compare --breakdown

Run it at `nice -n 10` on a shared machine, and read CPU seconds beside wall.
"""

from __future__ import annotations

import argparse
import collections
import glob
import hashlib
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from dqnx import api  # noqa: E402,F401  (configures JAX as dqnx train does: devices, compile cache)
from dqnx.agents import dqn as dqn_module  # noqa: E402
from dqnx.agents import make_learner  # noqa: E402
from dqnx.agents import pqn as pqn_module  # noqa: E402
from dqnx.config import build_config  # noqa: E402
from dqnx.envs.minatar import GAMES as MINATAR_GAMES  # noqa: E402
from dqnx.drivers import jax_loop  # noqa: E402
from dqnx.envs import make_env  # noqa: E402

# (what an operation's source says, the part it belongs to), first match wins.
PARTS = [
    (r"vmap\(jit\(step", "env step"),
    (r"transpose\(jvp\(", "backward pass"),
    (r"jvp\((SmallCNN|QNetwork)", "forward in the loss (online + target)"),
    (r"(SmallCNN|QNetwork)", "forward without gradient (acting; PQN's targets)"),
    (r"gather", "replay / minibatch sampling"),
    (r"scatter|dynamic_update_slice", "replay insert, flattening"),
]
OTHER = "rest (optimizer, Polyak, loop, rng)"


def build(game: str, agent: str, old_flatten: bool, env_steps: int):
    """The compiled chunk of `game`'s `agent` preset (optax.flatten's optimizer when `old_flatten`),
    compiled and run past learning_starts: (config, state, chunk, iterations, env steps done)."""
    flatten = optax.flatten if old_flatten else dqn_module.flatten
    saved = dqn_module.flatten, pqn_module.flatten
    dqn_module.flatten = pqn_module.flatten = flatten  # read while the chunk is traced, in warm_up
    try:
        config = build_config(game, agent=agent)
        env = make_env(game)
        program = jax_loop.make_program(config, env, make_learner(agent, config, env))
        state = jax.jit(program.init)(jax_loop.seed_key(0))  # as the driver: distinct buffers, donatable
        chunk = jax.jit(lambda s, start, k: program.chunk(s, k, start), static_argnums=2, donate_argnums=0)
        rollout = getattr(config, "rollout_steps", 1)  # PQN's chunks are whole rollouts
        iterations = max(rollout, env_steps // config.num_envs // rollout * rollout)
        return (config, *warm_up(config, state, chunk, iterations), chunk, iterations)
    finally:
        dqn_module.flatten, pqn_module.flatten = saved


def digest(tree) -> str:
    return hashlib.sha256(b"".join(np.asarray(x).tobytes() for x in jax.tree.leaves(tree))).hexdigest()[:16]


def warm_up(config, state, chunk, iterations: int):
    """Compile, and run past learning_starts: the timed chunks all train."""
    done = 0
    while True:
        state, _ = chunk(state, jnp.int32(done), iterations)
        done += iterations * config.num_envs
        if done >= getattr(config, "learning_starts", 0):
            break
    jax.block_until_ready(state)
    return state, done


def timed_chunk(config, state, chunk, iterations: int, start: int):
    wall, cpu = time.perf_counter(), time.process_time()
    state, _ = chunk(state, jnp.int32(start), iterations)
    jax.block_until_ready(state)
    return state, time.perf_counter() - wall, time.process_time() - cpu


def breakdown(config, state, chunk, iterations: int, start: int) -> dict[str, float]:
    """Microseconds per env step of each part, from jax.profiler's operation events."""
    text = chunk.lower(state, jnp.int32(start), iterations).compile().as_text()
    source = {}
    for line in text.splitlines():
        match = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = .*?op_name=\"([^\"]*)\"", line)
        if match:
            source[match.group(1)] = match.group(2)
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            state, _ = chunk(state, jnp.int32(start), iterations)
            jax.block_until_ready(state)
        data = jax.profiler.ProfileData.from_file(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)[0])
    totals: collections.Counter = collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_XLAEigen"):  # the threads running the program's operations
                continue
            for event in line.events:
                if event.name.split(".")[0] in ("ThunkExecutor::Execute", "while", "cond", "call", "conditional"):
                    continue  # containers: their operations are counted themselves
                origin = source.get(event.name, "")
                part = next((name for pattern, name in PARTS if re.search(pattern, origin)), OTHER)
                totals[part] += event.duration_ns
    steps = iterations * config.num_envs
    return {part: ns / 1e3 / steps for part, ns in totals.most_common()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", nargs="+", default=["Breakout-MinAtar"], choices=MINATAR_GAMES)
    parser.add_argument("--agents", nargs="+", default=["dqn", "pqn"], choices=["dqn", "pqn"])
    parser.add_argument("--env-steps", type=int, default=64 * 50, help="env steps per timed chunk (default 3,200)")
    parser.add_argument("--chunks", type=int, default=10, help="timed chunks per path (default 10)")
    parser.add_argument("--compare", action="store_true", help="also time the optax.flatten path, alternating")
    parser.add_argument("--breakdown", action="store_true", help="profile one chunk of the current path")
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f} at start")
    for game in args.games:
        for agent in args.agents:
            paths = {"current": False, "optax.flatten": True} if args.compare else {"current": False}
            runs = {}
            for name, old in paths.items():
                compile_start = time.perf_counter()
                config, state, done, chunk, iterations = build(game, agent, old, args.env_steps)
                runs[name] = {"config": config, "state": state, "chunk": chunk, "done": done, "wall": [], "cpu": [],
                              "iterations": iterations, "digest": digest(state.agent),
                              "warm_up": time.perf_counter() - compile_start}
            for _ in range(args.chunks):  # round by round: the paths share the machine's load
                for run in runs.values():
                    run["state"], wall, cpu = timed_chunk(run["config"], run["state"], run["chunk"], run["iterations"],
                                                          run["done"])
                    run["done"] += run["iterations"] * run["config"].num_envs
                    run["wall"].append(wall)
                    run["cpu"].append(cpu)
            for name, run in runs.items():
                steps = run["iterations"] * run["config"].num_envs  # per chunk
                wall, cpu = sum(run["wall"]), sum(run["cpu"])
                run["rate"], run["best"] = args.chunks * steps / wall, steps / min(run["wall"])
                run["best_cpu"] = min(run["cpu"])
                print(f"{game} {agent} [{name}]: {args.chunks} chunks of {steps:,} env steps in {wall:.1f} s wall, "
                      f"{cpu:.1f} CPU s: {run['rate']:,.0f} env steps/s (fastest chunk {run['best']:,.0f}; "
                      f"{args.chunks * steps / cpu:,.0f} per CPU second); warm-up incl. compile {run['warm_up']:.1f} s; "
                      f"state digest after warm-up {run['digest']}")
            if args.compare:
                new, old = runs["current"], runs["optax.flatten"]
                print(f"  current / optax.flatten: {new['rate'] / old['rate']:.2f}x env steps/s "
                      f"(fastest chunks {new['best'] / old['best']:.2f}x), {sum(old['cpu']) / sum(new['cpu']):.2f}x fewer "
                      f"CPU seconds (fastest chunks {old['best_cpu'] / new['best_cpu']:.2f}x); same state after warm-up: "
                      f"{new['digest'] == old['digest']}")
            if args.breakdown:
                run = runs["current"]
                parts = breakdown(run["config"], run["state"], run["chunk"], run["iterations"], run["done"])
                total = sum(parts.values())
                print(f"  breakdown of one chunk (operation time, {total:.1f} us per env step):")
                for part, us in parts.items():
                    print(f"    {us:8.2f} us/env step {100 * us / total:5.1f}%  {part}")
            print(f"  load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
