#!/usr/bin/env python
"""Taxi-v4 with and without action masks: same preset, same budget, 5 seeds each.

Gymnasium 1.3's Taxi-v4 puts the legal actions in info["action_mask"] (no driving into
walls, no pickup or drop-off where it would pay -10). Two runs of `dqnx train Taxi-v4
--seeds 5` with the Taxi-v4 preset (src/dqnx/presets/Taxi-v4.toml), which differ only
in `action_mask` ("auto": masks used for acting and in the bootstrap; "off": ignored),
each in its own subprocess, both at once (the host loop is mostly single-threaded).

Reported per condition and seed:
- the final greedy return of the best weights over 100 fresh episodes (summary.json);
- env steps to reach 7.0: the first periodic greedy evaluation (every eval_every env
  steps, eval_episodes episodes; read from metrics.csv) whose mean return is >= 7.0.

    python benchmarks/masking.py [--seeds 5] [--steps N] [--out runs/masking] [--doc docs/masking.md]

Writes docs/masking.md (and masking.json beside the runs). Timings depend on the
machine's load; the steps and returns do not (same seeds give the same runs).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ENV_ID = "Taxi-v4"
TARGET = 7.0
CONDITIONS = {"masked": "auto", "unmasked": "off"}


def steps_to_reach(metrics: Path, target: float) -> dict[int, int | None]:
    """Per seed, the first env step whose periodic greedy evaluation mean is >= target."""
    first: dict[int, int | None] = {}
    with open(metrics, newline="") as f:
        for row in csv.DictReader(f):
            seed = int(row["seed"])
            first.setdefault(seed, None)
            if first[seed] is None and float(row["eval_mean_return"]) >= target:
                first[seed] = int(row["env_steps"])
    return first


def launch(name: str, setting: str, args: argparse.Namespace) -> subprocess.Popen:
    out = Path(args.out) / name
    command = [sys.executable, "-m", "dqnx.cli", "train", ENV_ID, "--seeds", str(args.seeds), "--seed", str(args.seed),
               "--set", f"action_mask={setting}", "--quiet", "--out", str(out)]
    if args.steps:
        command += ["--steps", str(args.steps)]
    log = open(Path(args.out) / f"{name}.log", "w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def unfinished_summary(run: Path) -> dict:
    """A stand-in for summary.json of a run stopped early (--collect-only): each seed's
    best periodic evaluation so far, marked as such."""
    best: dict[int, tuple[float, float]] = {}
    steps = 0
    with open(run / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            seed, mean = int(row["seed"]), float(row["eval_mean_return"])
            steps = max(steps, int(row["env_steps"]))
            if seed not in best or mean > best[seed][0]:
                best[seed] = (mean, float(row["eval_std_return"]))
    return {"total_steps": steps, "eval_episodes": None, "wall_seconds": None, "action_masks": None, "unfinished": True,
            "per_seed": [{"seed": s, "eval_mean_return": m, "eval_std_return": sd} for s, (m, sd) in sorted(best.items())]}


def collect(name: str, args: argparse.Namespace) -> dict:
    run = Path(args.out) / name
    finished = (run / "summary.json").exists()
    summary = json.loads((run / "summary.json").read_text()) if finished else unfinished_summary(run)
    config = json.loads((run / "config.json").read_text())["config"]
    reach = steps_to_reach(run / "metrics.csv", TARGET)
    per_seed = [{"seed": s["seed"], "final_return": s["eval_mean_return"], "final_std": s["eval_std_return"],
                 "steps_to_7": reach.get(s["seed"])} for s in summary["per_seed"]]
    reached = [p["steps_to_7"] for p in per_seed if p["steps_to_7"] is not None]
    return {
        "condition": name, "finished": finished, "action_mask": config["action_mask"], "action_masks_used": summary.get("action_masks"),
        "total_steps": summary["total_steps"], "eval_every": config["eval_every"], "eval_episodes": config["eval_episodes"],
        "final_episodes": summary["eval_episodes"], "wall_seconds": summary["wall_seconds"],
        "seeds_at_or_above_7": sum(p["final_return"] >= TARGET for p in per_seed),
        "seeds_reaching_7": len(reached),
        "median_steps_to_7": statistics.median(reached) if len(reached) == len(per_seed) else None,
        "mean_final_return": statistics.mean(p["final_return"] for p in per_seed),
        "per_seed": per_seed,
    }


def markdown(results: list[dict], args: argparse.Namespace) -> str:
    lines = [
        "# Action masks on Taxi-v4",
        "",
        "Written by `python benchmarks/masking.py` "
        f"(--seeds {args.seeds} --seed {args.seed}{f' --steps {args.steps}' if args.steps else ''}) on "
        f"{platform.node() or 'this machine'}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
        "The Taxi-v4 preset (src/dqnx/presets/Taxi-v4.toml: Double DQN, MLP 128-128, host loop), the same seeds "
        "and budget; the two conditions differ only in `action_mask`: `auto` takes the legal actions from "
        "Taxi's info[\"action_mask\"] for acting (greedy, epsilon's random action, evaluation) and for the "
        "bootstrap's max; `off` ignores them.",
        "",
        f"- final return: the best weights' greedy mean over {results[0]['final_episodes'] or '-'} fresh episodes per seed;",
        f"- steps to 7.0: the first periodic greedy evaluation (every {results[0]['eval_every']} env steps, "
        f"{results[0]['eval_episodes']} episodes) with a mean >= 7.0; `-` = never within the budget.",
        "",
        "| condition | seeds with final >= 7.0 | mean final return | seeds reaching 7.0 | median steps to 7.0 | wall seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        median = "-" if r["median_steps_to_7"] is None else f"{r['median_steps_to_7']:,.0f}"
        wall = "-" if r["wall_seconds"] is None else f"{r['wall_seconds']:.0f}"
        lines.append(f"| {r['condition']} (action_mask={r['action_mask']}) | {r['seeds_at_or_above_7']}/{len(r['per_seed'])} "
                     f"| {r['mean_final_return']:.2f} | {r['seeds_reaching_7']}/{len(r['per_seed'])} | {median} | {wall} |")
    unfinished = [r["condition"] for r in results if not r["finished"]]
    if unfinished:
        lines += ["", f"**Unfinished** ({', '.join(unfinished)}: stopped at {results[0]['total_steps']:,} env steps): "
                  "its 'final return' is each seed's best periodic evaluation so far "
                  f"({results[0]['eval_episodes']} episodes), not the 100-episode final evaluation."]
    lines += ["", "Per seed (final return ± std over the final episodes; steps to 7.0):", "",
              "| seed | " + " | ".join(r["condition"] for r in results) + " |",
              "|---|" + "---|" * len(results)]
    for i, seed_row in enumerate(results[0]["per_seed"]):
        cells = []
        for r in results:
            p = r["per_seed"][i]
            steps = "-" if p["steps_to_7"] is None else f"{p['steps_to_7']:,}"
            cells.append(f"{p['final_return']:.2f} ± {p['final_std']:.2f}; {steps}")
        lines.append(f"| {seed_row['seed']} | " + " | ".join(cells) + " |")
    lines += ["", "Wall seconds were measured with both conditions running at once on a shared, loaded 2-core "
              "machine: compare them with each other, not with other figures.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--steps", type=int, default=0, help="env steps per seed (default: the preset's)")
    parser.add_argument("--out", default="runs/masking")
    parser.add_argument("--doc", default="docs/masking.md")
    parser.add_argument("--collect-only", action="store_true",
                        help="write the doc from the runs in --out as they stand (unfinished ones: best periodic evaluation so far)")
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.collect_only:
        results = [collect(name, args) for name in CONDITIONS]
        Path(args.doc).write_text(markdown(results, args))
        print(markdown(results, args))
        return
    procs = {name: launch(name, setting, args) for name, setting in CONDITIONS.items()}
    for name, proc in procs.items():
        if proc.wait() != 0:
            sys.exit(f"{name} run failed; see {Path(args.out) / (name + '.log')}")
    results = [collect(name, args) for name in CONDITIONS]
    (Path(args.out) / "masking.json").write_text(json.dumps(results, indent=2))
    Path(args.doc).write_text(markdown(results, args))
    print(markdown(results, args))


if __name__ == "__main__":
    main()
