"""Classic baselines against DQN: what each agent reaches, and at what cost in env steps.

Trains, with each agent's preset and 5 seeds side by side in one process:
  tabular Q-learning (discretized) on CartPole-v1 and MountainCar-v0,
  linear Q-learning and DQN on CartPole-v1,
then evaluates each seed's best weights greedily on 100 fresh episodes and writes
a markdown table (mean, std and interquartile mean over seeds of the final greedy
return, seeds solved, env steps used, median steps to solve, wall seconds).

    python benchmarks/baselines.py [--seeds 5] [--out docs/baselines.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from seed_stats import interquartile_mean  # benchmarks/seed_stats.py, beside this script

CASES = [
    ("tabular-q", "CartPole-v1"),
    ("tabular-q", "MountainCar-v0"),
    ("linear-q", "CartPole-v1"),
    ("dqn", "CartPole-v1"),
]


def run_case(agent: str, env_id: str, seeds: int, workdir: Path) -> dict:
    import dqnx

    start = time.perf_counter()
    run = dqnx.train(env_id, agent=agent, seeds=seeds, out=workdir / f"{agent}-{env_id}")
    wall = time.perf_counter() - start
    per_seed = run.summary["per_seed"]
    finals = [s["eval_mean_return"] for s in per_seed]
    solved_steps = [s["steps_to_solve"] for s in per_seed if s["steps_to_solve"] is not None]
    return {
        "agent": agent,
        "env_id": env_id,
        "steps": run.summary["total_steps"],
        "mean": float(np.mean(finals)),
        "std": float(np.std(finals)),
        "iqm": interquartile_mean(finals),
        "solved": sum(bool(s["solved"]) for s in per_seed),
        "seeds": len(per_seed),
        "median_steps_to_solve": statistics.median(solved_steps) if solved_steps else None,
        "wall": wall,
        "finals": finals,
    }


def commit() -> str:
    """The checkout's commit, so the page says which presets and code made its figures."""
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def markdown(rows: list[dict], seeds: int) -> str:
    lines = [
        "# Classic baselines against DQN",
        "",
        f"Produced by `python benchmarks/baselines.py --seeds {seeds}` ({time.strftime('%Y-%m-%d')}, on commit {commit()}).",
        "Each row: the agent's preset as it was on that commit (src/dqnx/presets/), seeds trained side by side",
        "in one process; the final greedy return is",
        "the best-evaluated weights of each seed over 100 fresh episodes. Solved: CartPole-v1 >= 475,",
        "MountainCar-v0 >= -110. Steps to solve: the first periodic evaluation at or above the threshold.",
        f"Wall seconds include compilation; the machine's load average was {os.getloadavg()[0]:.1f} at the end",
        f"on {os.cpu_count()} CPUs (above the CPU count, other jobs were slowing these runs down).",
        "",
        "| agent | env | env steps | final return mean ± std | IQM | seeds solved | median steps to solve | wall s (all seeds) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        steps_to_solve = "-" if r["median_steps_to_solve"] is None else f"{r['median_steps_to_solve']:,.0f}"
        lines.append(
            f"| {r['agent']} | {r['env_id']} | {r['steps']:,} | {r['mean']:.1f} ± {r['std']:.1f} | {r['iqm']:.1f} | "
            f"{r['solved']}/{r['seeds']} | {steps_to_solve} | {r['wall']:.0f} |"
        )
    lines += ["", "Per-seed final returns:", ""]
    lines += [f"- {r['agent']} on {r['env_id']}: {', '.join(f'{v:.1f}' for v in r['finals'])}" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("docs/baselines.md"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for agent, env_id in CASES:
            row = run_case(agent, env_id, args.seeds, Path(tmp))
            print(f"{agent:10s} {env_id:15s} steps {row['steps']:>8,}  return {row['mean']:8.1f} ± {row['std']:6.1f}  "
                  f"IQM {row['iqm']:8.1f}  solved {row['solved']}/{row['seeds']}  wall {row['wall']:.0f} s", flush=True)
            rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(rows, args.seeds))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
