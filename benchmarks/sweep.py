#!/usr/bin/env python
"""A hyperparameter sweep as one program against the same runs one after another (issue 7).

The figure: a 3 x 3 grid of learning rate x gamma on CartPole-v1 (the CartPole preset
otherwise), 3 seeds per configuration, so 27 runs.

1. `dqnx sweep CartPole-v1 --grid lr=... --grid gamma=... --seeds 3 -q --out DIR` in one
   process: every configuration differs only in vmappable hyperparameters, so the 27
   members train as one compiled program. Timed from process start to exit.
2. The 27 runs as a user would start them without `sweep`: one
   `dqnx train CartPole-v1 --set learning_rate=LR --set gamma=G --seed S -q --no-tensorboard`
   process after another; the total wall clock of the 27 processes.
3. With --in-process, also `dqnx.sweep(...)` against 27 `dqnx.train(...)` calls inside
   this one process (no interpreter start or imports per run; each still writes its run
   directory).

Both sides read the persistent JAX compilation cache as it stands (the sweep's program
and the single-seed program are different programs, so each pays its own compilation
once on a cold cache). Printed: a markdown table of wall seconds and ratios, and the mean
final greedy return (best weights, final_eval_episodes fresh episodes) per configuration
on both sides, to show that they learned the same thing. The sweep's members and the
single runs use the same seeds and hyperparameters, but a DQN's vmapped matmuls round
differently from unbatched ones (tests/test_sweep.py), so individual runs can diverge
late in training and the per-configuration means agree only statistically.

    python benchmarks/sweep.py                 # the full figure: 27 runs of 50k steps each side
    python benchmarks/sweep.py --quick         # smoke check: 5k steps
    python benchmarks/sweep.py --quick --lrs 1e-3,3e-3 --gammas 0.99 --seeds 2 --set eval_episodes=10
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUICK_STEPS = 5_000  # --quick: enough for the first updates and evaluations, not to learn CartPole


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lrs", default="3e-4,1e-3,3e-3", help="learning rates of the grid (comma-separated)")
    parser.add_argument("--gammas", default="0.95,0.98,0.99", help="discount factors of the grid (comma-separated)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per configuration (0, 1, ...)")
    parser.add_argument("--steps", type=int, default=None, help="env steps per run (default: the preset's total_steps, 50k)")
    parser.add_argument("--quick", action="store_true", help=f"smoke check: {QUICK_STEPS} steps unless --steps is given")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="extra hyperparameter for every run, e.g. --set eval_episodes=10 (repeatable)")
    parser.add_argument("--in-process", action="store_true",
                        help="also time dqnx.sweep against dqnx.train calls in this process")
    parser.add_argument("--workdir", type=Path, default=None, help="where the runs are written (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.quick and args.steps is None:
        args.steps = QUICK_STEPS
    args.lrs = [float(v) for v in args.lrs.split(",")]
    args.gammas = [float(v) for v in args.gammas.split(",")]
    return args


def cli(args: list[str]) -> float:
    """Run `dqnx ARGS` to completion; its wall seconds (a failure stops the benchmark)."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "dqnx.cli", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"dqnx {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return seconds


def set_args(sets: list[str]) -> list[str]:
    return [part for item in sets for part in ("--set", item)]


def steps_args(steps: int | None) -> list[str]:
    return ["--steps", str(steps)] if steps is not None else []


def configs(args: argparse.Namespace) -> list[tuple[float, float]]:
    """(learning rate, gamma) in the sweep's order: the first grid key varies slowest."""
    return [(lr, gamma) for lr in args.lrs for gamma in args.gammas]


def sweep_returns(sweep_dir: Path) -> dict[tuple[float, float], list[float]]:
    """Final greedy return of every seed, per (learning rate, gamma), from results.csv."""
    out: dict[tuple[float, float], list[float]] = {}
    with open(sweep_dir / "results.csv", newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault((float(row["learning_rate"]), float(row["gamma"])), []).append(float(row["eval_mean_return"]))
    return out


def run_return(run_dir: Path) -> float:
    return json.loads((run_dir / "summary.json").read_text())["eval_mean_return"]


def one_by_one_processes(args: argparse.Namespace, root: Path) -> tuple[float, dict[tuple[float, float], list[float]]]:
    total, returns = 0.0, {}
    for lr, gamma in configs(args):
        for seed in range(args.seeds):
            out = root / f"lr{lr:g}-g{gamma:g}-s{seed}"
            total += cli(["train", "CartPole-v1", "--set", f"learning_rate={lr!r}", "--set", f"gamma={gamma!r}",
                          *set_args(args.sets), *steps_args(args.steps), "--seed", str(seed), "-q", "--no-tensorboard",
                          "--out", str(out)])
            returns.setdefault((lr, gamma), []).append(run_return(out))
    return total, returns


def in_process(args: argparse.Namespace, root: Path) -> dict[str, tuple[float, dict]]:
    import dqnx
    from dqnx.config import parse_set

    overrides = parse_set(args.sets)
    started = time.perf_counter()
    result = dqnx.sweep("CartPole-v1", {"learning_rate": args.lrs, "gamma": args.gammas}, seeds=args.seeds,
                        steps=args.steps, config=overrides or None, out=root / "sweep")
    sweep_seconds = time.perf_counter() - started
    started = time.perf_counter()
    returns: dict[tuple[float, float], list[float]] = {}
    for lr, gamma in configs(args):
        for seed in range(args.seeds):
            run = dqnx.train("CartPole-v1", seed=seed, steps=args.steps, tensorboard=False,
                             config={**overrides, "learning_rate": lr, "gamma": gamma}, out=root / f"lr{lr:g}-g{gamma:g}-s{seed}")
            returns.setdefault((lr, gamma), []).append(run.summary["eval_mean_return"])
    return {"sweep": (sweep_seconds, sweep_returns(result.path)), "one_by_one": (time.perf_counter() - started, returns)}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    runs = len(configs(args)) * args.seeds
    root = args.workdir or Path(tempfile.mkdtemp(prefix="dqnx-sweep-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    grid_args = ["--grid", "lr=" + ",".join(map(repr, args.lrs)), "--grid", "gamma=" + ",".join(map(repr, args.gammas))]

    sweep_seconds = cli(["sweep", "CartPole-v1", *grid_args, "--seeds", str(args.seeds), *set_args(args.sets),
                         *steps_args(args.steps), "-q", "--out", str(root / "cli-sweep")])
    swept = sweep_returns(root / "cli-sweep")
    single_seconds, singles = one_by_one_processes(args, root / "cli-runs")
    timings = [(f"`dqnx sweep`: {runs} runs in one process, one program", sweep_seconds, sweep_seconds),
               (f"{runs} `dqnx train` processes, one after another", single_seconds, sweep_seconds)]
    if args.in_process:
        measured = in_process(args, root / "api")
        api_sweep = measured["sweep"][0]
        timings += [("in this process: `dqnx.sweep(...)`", api_sweep, api_sweep),
                     (f"in this process: {runs} `dqnx.train(...)` calls", measured["one_by_one"][0], api_sweep)]

    steps = args.steps if args.steps is not None else "preset (50000)"
    label = "QUICK smoke check, not the figure: " if args.quick else ""
    print(f"{label}CartPole-v1, {len(args.lrs)} x {len(args.gammas)} grid (lr x gamma) x {args.seeds} seeds = {runs} runs, "
          f"{steps} env steps each, extra settings: {' '.join(args.sets) or 'none'}; runs under {root}\n")
    print("| how | wall seconds | / one program |")
    print("|---|---:|---:|")
    for name, seconds, reference in timings:
        print(f"| {name} | {seconds:.1f} | {seconds / reference:.2f} |")
    print("\nMean final greedy return (best weights) per configuration, mean over seeds:\n")
    columns = ["`dqnx sweep`", "`dqnx train` one by one"] + (["`dqnx.sweep`", "`dqnx.train` one by one"] if args.in_process else [])
    print("| lr | gamma | " + " | ".join(columns) + " |")
    print("|---:|---:|" + "---:|" * len(columns))
    for key in configs(args):
        cells = [swept[key], singles[key]]
        if args.in_process:
            cells += [measured["sweep"][1][key], measured["one_by_one"][1][key]]
        print(f"| {key[0]:g} | {key[1]:g} | " + " | ".join(f"{statistics.mean(c):.1f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
