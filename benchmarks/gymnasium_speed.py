#!/usr/bin/env python
"""Gymnasium CartPole-v1 training throughput: dqnx's host loop against Stable-Baselines3 DQN.

Both train on Gymnasium's CartPole-v1 with the same update ratio (one gradient step
of batch 64 per 4 env steps), the same network (MLP 64-64, SB3's default for
MlpPolicy), Huber loss, Adam, gradient clipping at 10 and a 100k replay buffer. Each
measurement runs in a fresh subprocess (this script in worker mode), one after
another, never two at once:

1. warm-up: `--warmup` env steps (default 2,000), which covers compilation (dqnx) and
   the 1,000 steps of random play before the first update (both), untimed;
2. timed: `--steps` further env steps (default 20,000) of training, evaluation
   excluded for both. dqnx: HostDriver.chunk, the loop `dqnx train` runs for a
   Gymnasium env; SB3: model.learn(steps, reset_num_timesteps=False).

Settings, each measured `--repeats` times (median reported):
  n_envs=1  dqnx train_freq=4, gradient_steps=1        SB3 train_freq=4, gradient_steps=1
  n_envs=8  dqnx train_freq=8, gradient_steps=2        SB3 train_freq=1 (one vector step
            (8 env steps per iteration)                  = 8 env steps), gradient_steps=2

SB3 runs with torch.set_num_threads(1), its faster setting on this 2-core machine for
a network this small (measured in benchmarks/cartpole.py's notes). Requires the
`bench` extra (torch==2.13.0, stable-baselines3):

    python benchmarks/gymnasium_speed.py [--steps 20000] [--repeats 3] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

LEARNING_STARTS = 1_000
BATCH = 64
HIDDEN = [64, 64]
BUFFER = 100_000


def dqnx_worker(n_envs: int, warmup: int, steps: int) -> dict:
    import dqnx.api  # noqa: F401  (sets up JAX: host devices, compile cache)
    import jax

    from dqnx.config import build_config
    from dqnx.agents import make_learner
    from dqnx.drivers import make_driver
    from dqnx.envs import make_env

    config = build_config("CartPole-v1", overrides={
        "num_envs": n_envs, "train_freq": max(4, n_envs),
        "gradient_steps": max(1, n_envs // 4), "batch_size": BATCH, "hidden_sizes": HIDDEN, "buffer_size": BUFFER,
        "learning_starts": LEARNING_STARTS, "double_dqn": False, "tau": 1.0, "target_update_period": 2_500,
        "max_grad_norm": 10.0, "learning_rate": 1e-4, "total_steps": warmup + steps,
    })
    env = make_env("CartPole-v1", backend="gymnasium")
    driver = make_driver(config, env, make_learner("dqn", config, env), [0])
    state = driver.place(driver.init_states([0]))
    state, _ = driver.chunk(state, warmup // n_envs, 0)
    jax.block_until_ready(state)
    start = time.perf_counter()
    state, output = driver.chunk(state, steps // n_envs, warmup)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - start
    updates = int(state.agent.updates[0])
    driver.close()
    return {"steps_per_second": steps / seconds, "seconds": seconds, "gradient_steps_total": updates}


def peer_worker(n_envs: int, warmup: int, steps: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from stable_baselines3 import DQN
    from stable_baselines3.common.env_util import make_vec_env

    env = make_vec_env("CartPole-v1", n_envs=n_envs, seed=0)
    model = DQN(
        "MlpPolicy", env, learning_rate=1e-4, buffer_size=BUFFER, learning_starts=LEARNING_STARTS,
        batch_size=BATCH, train_freq=4 if n_envs == 1 else 1, gradient_steps=max(1, n_envs // 4),
        policy_kwargs=dict(net_arch=HIDDEN), seed=0, device="cpu", verbose=0,
    )
    model.learn(warmup)
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    seconds = time.perf_counter() - start
    return {"steps_per_second": steps / seconds, "seconds": seconds, "gradient_steps_total": int(model._n_updates)}


def run_worker(kind: str, n_envs: int, warmup: int, steps: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--n-envs", str(n_envs), "--warmup", str(warmup),
           "--steps", str(steps)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-envs", type=int, nargs="*", default=[1, 8])
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--worker", choices=["dqnx", "peer"])
    args = parser.parse_args()
    if args.worker:
        worker = dqnx_worker if args.worker == "dqnx" else peer_worker
        print(json.dumps(worker(args.n_envs[0], args.warmup, args.steps)))
        return

    load_before = os.getloadavg()
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_before": load_before},
               "steps": args.steps, "warmup": args.warmup, "settings": []}
    for n in args.n_envs:
        row = {"n_envs": n, "dqnx": [], "peer": []}
        for r in range(args.repeats):
            for kind in ("dqnx", "peer"):
                out = run_worker(kind, n, args.warmup, args.steps)
                row[kind].append(out)
                print(f"n_envs={n} repeat {r + 1}: {kind:4s} {out['steps_per_second']:8.0f} env steps/s "
                      f"({out['gradient_steps_total']} gradient steps in all)", flush=True)
        row["dqnx_median"] = statistics.median(x["steps_per_second"] for x in row["dqnx"])
        row["peer_median"] = statistics.median(x["steps_per_second"] for x in row["peer"])
        row["ratio"] = row["dqnx_median"] / row["peer_median"]
        results["settings"].append(row)
    results["machine"]["load_after"] = os.getloadavg()

    print(f"\nGymnasium CartPole-v1, {args.steps} timed env steps after {args.warmup} warm-up steps, "
          f"median of {args.repeats}; load average before/after {load_before[0]:.2f}/{results['machine']['load_after'][0]:.2f}")
    print("| envs | dqnx env steps/s | SB3 DQN env steps/s | ratio |")
    print("|---:|---:|---:|---:|")
    for row in results["settings"]:
        print(f"| {row['n_envs']} | {row['dqnx_median']:,.0f} | {row['peer_median']:,.0f} | {row['ratio']:.1f}x |")
    by_n = {row["n_envs"]: row for row in results["settings"]}
    if 1 in by_n and 8 in by_n:
        print(f"dqnx with 8 envs against SB3 with 1 (its default): {by_n[8]['dqnx_median'] / by_n[1]['peer_median']:.1f}x")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
