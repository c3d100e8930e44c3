#!/usr/bin/env python
"""Does `dqnx tune` find a CartPole-v1 configuration that solves within 30,000 env steps?

1. `dqnx.tune("CartPole-v1", trials=32, steps=30_000)`: Optuna TPE over the default
   space (learning rate, gamma, tau, epsilon floor and decay fraction; the preset's other
   settings), batches of 8 trials in one program, 2 seeds per trial (seeds 0-1), objective
   `auc` (mean periodic greedy return), median pruning. Wall clock of the whole study.
2. The best trial's preset (best.toml) trained from scratch for 30,000 env steps on 5
   held-out seeds (1000-1004, never seen by the study), as `dqnx train --config best.toml`
   would: per seed, the final greedy return of the best weights over 100 fresh episodes
   and the first periodic evaluation >= 475 (steps_to_solve).
3. The same 5 seeds with the CartPole-v1 preset cut to 30,000 steps, for reference.

    python benchmarks/tune.py [--trials 32] [--steps 30000] [--batch 8] [--trial-seeds 2] [--out DIR]

Prints a markdown report (and writes it with --report FILE).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HELD_OUT = [1000, 1001, 1002, 1003, 1004]
THRESHOLD = 475.0


def held_out_runs(label: str, config_file: Path | None, steps: int, workdir: Path) -> dict:
    import dqnx

    start = time.perf_counter()
    run = dqnx.train("CartPole-v1", seed=HELD_OUT[0], seeds=len(HELD_OUT), steps=steps, config_file=config_file,
                     tensorboard=False, out=workdir / label.replace(" ", "-"))
    per_seed = run.summary["per_seed"]
    return {
        "label": label,
        "finals": [s["eval_mean_return"] for s in per_seed],
        "steps_to_solve": [s["steps_to_solve"] for s in per_seed],
        "wall": time.perf_counter() - start,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--trial-seeds", type=int, default=2)
    parser.add_argument("--out", default=None, help="study directory (default: a temporary one)")
    parser.add_argument("--report", default=None, help="also write the markdown report to this file")
    args = parser.parse_args()

    import dqnx

    workdir = Path(tempfile.mkdtemp(prefix="dqnx-tune-bench-"))
    out = Path(args.out) if args.out else workdir / "study"
    start = time.perf_counter()
    result = dqnx.tune("CartPole-v1", trials=args.trials, steps=args.steps, batch=args.batch, seeds=args.trial_seeds,
                       out=out)
    tune_wall = time.perf_counter() - start
    states = {}
    for line in (out / "trials.csv").read_text().splitlines()[1:]:
        state = line.split(",")[1]
        states[state] = states.get(state, 0) + 1
    rows = [held_out_runs("tuned (best.toml)", result.best_config_path, args.steps, workdir),
            held_out_runs("CartPole-v1 preset", None, args.steps, workdir)]

    lines = [
        f"# dqnx tune on CartPole-v1: {args.trials} trials of {args.steps:,} env steps",
        "",
        f"Study: {result.trials_finished} finished trials ({', '.join(f'{v} {k.lower()}' for k, v in sorted(states.items()))}), "
        f"batches of {args.batch}, {args.trial_seeds} seeds per trial, objective auc; {tune_wall:.0f} s wall.",
        f"Best objective {result.best_value:.1f}; best parameters: "
        + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.best_params.items()),
        "",
        f"Trained from scratch for {args.steps:,} env steps on held-out seeds {HELD_OUT[0]}-{HELD_OUT[-1]} "
        "(final: 100 fresh greedy episodes of each seed's best weights):",
        "",
        "| config | final return per seed | mean | seeds >= 475 | steps_to_solve per seed | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        solved = sum(f >= THRESHOLD for f in row["finals"])
        lines.append(
            f"| {row['label']} | {', '.join(f'{f:.1f}' for f in row['finals'])} | {statistics.mean(row['finals']):.1f} | "
            f"{solved}/{len(row['finals'])} | {', '.join('-' if s is None else f'{s:,}' for s in row['steps_to_solve'])} | "
            f"{row['wall']:.0f} |"
        )
    report = "\n".join(lines) + "\n"
    print(report)
    if args.report:
        Path(args.report).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
