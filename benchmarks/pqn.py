#!/usr/bin/env python
"""CartPole-v1: PQN against dqnx's DQN and Stable-Baselines3's DQN, one invocation, same machine.

Systems, each with its own defaults and one process per seed:
  pqn   `python -m dqnx.cli train CartPole-v1 --agent pqn` (presets/pqn/CartPole-v1.toml)
  dqn   `python -m dqnx.cli train CartPole-v1` (the default agent, presets/CartPole-v1.toml)
  sb3   Stable-Baselines3 DQN with rl-baselines3-zoo's CartPole-v1 hyperparameters
        (benchmarks/cartpole.py's ZOO_CARTPOLE), this script in worker mode

Per seed and system:
  to solve    dqnx: a `--until-solved` process, timed from spawn to exit (imports,
              compilation, training, evaluations, the final evaluation and files all
              included); its steps to solve are the full run's too (a run is a pure
              function of its seed, so the shorter run is the longer one's prefix).
              sb3: the full run's clock (spawn, imports, model build and learn(), its
              evaluations excluded: generous to the peer) at its first evaluation >= 475.
  stability   a full-budget run, and one of twice the budget: the best weights and the
              last weights are each evaluated greedily on 100 fresh episodes; a seed is
              solved by a weights file when that mean is >= 475. (dqnx: summary.json's final
              evaluation of the best weights, and `dqnx eval --weights last`; sb3: the
              policy saved at its best 5k-step evaluation, and the policy at the end.)
Medians over seeds count an unsolved seed as taking the whole budget (steps, and the wall
of a run that went to its end), for every system; solved counts stand beside them.
One extra `--until-solved` process per dqnx system runs with an empty JAX compilation
cache (DQNX_CACHE_DIR -> an empty directory): the cold figure, not in the medians; then
an untimed one fills the ordinary cache, so the timed runs start warm.
Last, PQN's compiled loop alone: env steps per second (all seeds, evaluation excluded,
after a warm-up chunk that compiles) with 1 and with 16 seeds in one program.

    python benchmarks/pqn.py                            # the full benchmark (needs the bench extra)
    python benchmarks/pqn.py --seeds 2 --steps 20480 --skip sb3 --throughput-seeds 1 2   # a quick check

The sb3 side needs `pip install -e '.[bench]'` (torch, stable-baselines3). Only the
standard library is imported at module level: each worker's imports are timed inside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # cartpole.py, beside this script
from cartpole import EVAL_EPISODES, SOLVE_THRESHOLD, ZOO_CARTPOLE, code_state, failure, log, run_timed  # noqa: E402

DQNX_SYSTEMS = {"pqn": ["--agent", "pqn"], "dqn": []}
SB3_BUDGET = 50_000  # rl-baselines3-zoo's n_timesteps for CartPole-v1
SB3_SEGMENT = 5_000  # its evaluation period here
THROUGHPUT_SEEDS = (1, 16)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# --------------------------------------------------------------------------- dqnx side


def dqnx_cmd(python: str, system: str, seed: int, out: Path, *extra: str) -> list[str]:
    return [python, "-m", "dqnx.cli", "train", "CartPole-v1", *DQNX_SYSTEMS[system], "--seed", str(seed), "--quiet",
            "--no-tensorboard", "--out", str(out), *extra]


def dqnx_until_solved(python: str, system: str, seed: int, out: Path, steps: int | None,
                      env: dict[str, str] | None = None) -> dict[str, Any]:
    extra = [] if steps is None else ["--steps", str(steps)]
    wall, proc = run_timed(dqnx_cmd(python, system, seed, out, "--until-solved", *extra), env)
    row: dict[str, Any] = {"wall_seconds": round(wall, 3)}
    if proc.returncode != 0:
        return {**row, "error": failure(proc)}
    summary = json.loads((out / "summary.json").read_text())
    s = summary["per_seed"][0]
    return {**row, "solved": s["steps_to_solve"] is not None, "steps_to_solve": s["steps_to_solve"],
            "env_steps": summary["total_steps"], "compile_seconds": summary["compile_seconds"]}


def dqnx_stability(python: str, system: str, seed: int, out: Path, steps: int | None) -> dict[str, Any]:
    """A full run (or `steps` long): best and last weights, each on 100 fresh greedy episodes."""
    extra = [] if steps is None else ["--steps", str(steps)]
    wall, proc = run_timed(dqnx_cmd(python, system, seed, out, *extra))
    row: dict[str, Any] = {"wall_seconds": round(wall, 3)}
    if proc.returncode != 0:
        return {**row, "error": failure(proc)}
    summary = json.loads((out / "summary.json").read_text())
    _, last = run_timed([python, "-m", "dqnx.cli", "eval", str(out), "--weights", "last", "--episodes",
                         str(EVAL_EPISODES), "--json"])
    if last.returncode != 0:
        return {**row, "error": failure(last)}
    best_mean = summary["per_seed"][0]["eval_mean_return"]
    last_mean = json.loads(last.stdout)["mean_return"]
    return {**row, "budget": summary["total_steps"], "best": round(best_mean, 2), "last": round(last_mean, 2),
            "best_solved": best_mean >= SOLVE_THRESHOLD, "last_solved": last_mean >= SOLVE_THRESHOLD,
            "steps_to_solve": summary["per_seed"][0]["steps_to_solve"]}


def dqnx_cold_and_warm_up(system: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Seed 0 once with an empty JAX compilation cache (the cold figure), then once untimed
    with the ordinary cache, so that the timed runs after it start warm."""
    cold_cache = tmp / f"cold-cache-{system}"
    cold_cache.mkdir()
    cold = dqnx_until_solved(args.python, system, 0, tmp / f"{system}-cold", args.steps,
                             dict(os.environ, DQNX_CACHE_DIR=str(cold_cache)))
    log(f"{system}: cold compile cache, seed 0 -> {cold}")
    dqnx_until_solved(args.python, system, 0, tmp / f"{system}-warm-up", args.steps)
    return cold


def dqnx_seed(system: str, seed: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"seed": seed}
    row["to_solve"] = dqnx_until_solved(args.python, system, seed, tmp / f"{system}-{seed}-solve", args.steps)
    row["full"] = dqnx_stability(args.python, system, seed, tmp / f"{system}-{seed}-full", args.steps)
    return row


def dqnx_double(system: str, row: dict[str, Any], args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    if "budget" not in row["full"]:
        return {"error": "the full-budget run failed"}
    seed = row["seed"]
    return dqnx_stability(args.python, system, seed, tmp / f"{system}-{seed}-double", 2 * row["full"]["budget"])


# --------------------------------------------------------------------------- sb3 side


def sb3_worker(seed: int, spawn_time: float, budget: int, result_path: Path, torch_threads: int) -> None:
    """One SB3 seed in this process: learn(budget) with an untimed 100-episode greedy
    evaluation every SB3_SEGMENT steps; the best-evaluated policy is kept; at the end the
    best and the last policies are each evaluated on 100 fresh episodes."""
    import copy

    import torch

    if torch_threads > 0:
        torch.set_num_threads(torch_threads)
    from cartpole import _peer_evaluate
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback

    model = DQN("MlpPolicy", "CartPole-v1", seed=seed, verbose=0, device="cpu", **ZOO_CARTPOLE)
    state: dict[str, Any] = {"eval_seconds": 0.0, "solved_at": None, "solved_clock": None, "best": None, "best_policy": None}
    evals = []

    class SegmentEval(BaseCallback):
        def _on_step(self) -> bool:
            steps = self.model.num_timesteps
            if steps % SB3_SEGMENT:
                return True
            started = time.time()
            clock = started - spawn_time - state["eval_seconds"]
            mean = _peer_evaluate(self.model, EVAL_EPISODES, 1_000_000 + seed * 100_000 + steps // SB3_SEGMENT * EVAL_EPISODES)
            if state["best"] is None or mean > state["best"]:
                state["best"], state["best_policy"] = mean, copy.deepcopy(self.model.policy.state_dict())
            if mean >= SOLVE_THRESHOLD and state["solved_at"] is None:
                state["solved_at"], state["solved_clock"] = steps, round(clock, 3)
            evals.append({"env_steps": steps, "eval_mean_return": mean})
            state["eval_seconds"] += time.time() - started
            return True

    model.learn(budget, callback=SegmentEval(), progress_bar=False)
    timed_total = time.time() - spawn_time - state["eval_seconds"]
    fresh = 7_000_000 + seed * 1_000  # episodes no periodic evaluation played
    last = _peer_evaluate(model, EVAL_EPISODES, fresh)
    if state["best_policy"] is not None:
        model.policy.load_state_dict(state["best_policy"])
    best = _peer_evaluate(model, EVAL_EPISODES, fresh + 500)
    result_path.write_text(json.dumps({
        "budget": budget, "steps_to_solve": state["solved_at"], "wall_to_solve": state["solved_clock"],
        "timed_seconds_total": round(timed_total, 3), "best": round(best, 2), "last": round(last, 2),
        "best_solved": best >= SOLVE_THRESHOLD, "last_solved": last >= SOLVE_THRESHOLD, "evals": evals,
        "torch_num_threads": torch.get_num_threads(),
    }))


def sb3_run(args: argparse.Namespace, seed: int, budget: int, tmp: Path) -> dict[str, Any]:
    result = tmp / f"sb3-{seed}-{budget}.json"
    spawn = time.time()
    wall, proc = run_timed([args.python, os.path.abspath(__file__), "--sb3-worker", str(seed), "--spawn-time", repr(spawn),
                            "--budget", str(budget), "--result", str(result), "--torch-threads", str(args.torch_threads)])
    if proc.returncode != 0:
        return {"error": failure(proc), "process_seconds": round(wall, 3)}
    return {**json.loads(result.read_text()), "process_seconds": round(wall, 3)}


def sb3_seed(seed: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    budget = args.steps or SB3_BUDGET
    full = sb3_run(args, seed, budget, tmp)
    # One run gives both: the clock stops at its first solving evaluation, unsolved runs count whole.
    solved = full.get("wall_to_solve") is not None
    row: dict[str, Any] = {"seed": seed, "full": full, "to_solve": {
        "solved": solved, "steps_to_solve": full.get("steps_to_solve"), "env_steps": full.get("budget"),
        "wall_seconds": full["wall_to_solve"] if solved else full.get("timed_seconds_total"),
        **({"error": full["error"]} if "error" in full else {})}}
    return row


# --------------------------------------------------------------------------- figures


def summarize(seeds: list[dict[str, Any]], wall_key: str) -> dict[str, Any]:
    """Solved counts and medians over seeds, an unsolved seed counting as its whole budget."""
    solve = [s["to_solve"] for s in seeds if "error" not in s["to_solve"]]
    if not seeds:
        return {"seeds": 0, "errors": 0, "solved_during_run": 0, "median_steps_to_solve": None, "median_wall_to_solve": None}
    out: dict[str, Any] = {
        "seeds": len(seeds),
        "errors": sum("error" in s["to_solve"] or "error" in s.get("full", {}) for s in seeds),
        "solved_during_run": sum(bool(r["solved"]) for r in solve),
        # unsolved: steps_to_solve is None -> the run's whole budget (env_steps), its wall is a whole run's
        "median_steps_to_solve": median([r["steps_to_solve"] if r["solved"] else r["env_steps"] for r in solve]),
        "median_wall_to_solve": median([r[wall_key] for r in solve]),
    }
    for budget in ("full", "double"):
        runs = [s[budget] for s in seeds if budget in s and "error" not in s[budget]]
        if runs:
            out[budget] = {"budget": runs[0]["budget"], "best_solved": sum(r["best_solved"] for r in runs),
                           "last_solved": sum(r["last_solved"] for r in runs), "runs": len(runs)}
    return out


def throughput_worker(seeds: int, chunks: int) -> None:
    """PQN's compiled loop alone: env steps/s over `chunks` chunks after a compiling warm-up one."""
    import jax

    from dqnx import api  # noqa: F401  (configures JAX: one device per core, compile cache)
    from dqnx.agents import make_learner
    from dqnx.config import build_config
    from dqnx.drivers import make_driver
    from dqnx.envs import make_env

    config = build_config("CartPole-v1", agent="pqn")
    env = make_env("CartPole-v1")
    driver = make_driver(config, env, make_learner("pqn", config, env), list(range(seeds)))
    iterations = config.eval_every // config.num_envs
    state = driver.place(driver.init_states(list(range(seeds))))
    state, _ = driver.chunk(state, iterations, 0)
    jax.block_until_ready(state)
    started = time.perf_counter()
    for k in range(chunks):
        state, _ = driver.chunk(state, iterations, (k + 1) * iterations * config.num_envs)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - started
    print(json.dumps({"seeds": seeds, "env_steps": seeds * chunks * iterations * config.num_envs, "seconds": round(seconds, 3),
                      "env_steps_per_second": round(seeds * chunks * iterations * config.num_envs / seconds, 1),
                      "compile_seconds": round(driver.compile_seconds, 3)}))


def bench_throughput(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for seeds in args.throughput_seeds:
        _, proc = run_timed([args.python, os.path.abspath(__file__), "--throughput-worker", str(seeds),
                             "--chunks", str(args.throughput_chunks)])
        rows.append(json.loads(proc.stdout) if proc.returncode == 0 else {"seeds": seeds, "error": failure(proc)})
        log(f"throughput: {rows[-1]}")
    return rows


def fmt(x: Any, spec: str = ".1f") -> str:
    return "n/a" if x is None else format(x, spec) if isinstance(x, float) else str(x)


def report(results: dict[str, Any]) -> str:
    """The table, from the results so far: medians and counts over the seeds each system finished."""
    machine = results["machine"]
    state = "finished" if results.get("finished") else "NOT finished (stopped early: the seeds each system finished)"
    lines = [
        "=" * 100,
        "CartPole-v1: PQN vs dqnx DQN vs Stable-Baselines3 DQN (zoo), one process per seed",
        f"machine: {machine['cpus']} CPUs, {machine['platform']}; load average (1, 5, 15 min) at start "
        f"{machine['loadavg_start']}, at the last save {machine.get('loadavg_end')}",
        f"dqnx code: {results['code']}; benchmark {state}, {results.get('benchmark_seconds', 0):.0f} s",
        "=" * 100,
        f"{'system':7} {'seeds':>5} {'budget':>8} {'solved best/last':>17} {'2x budget best/last':>20} "
        f"{'solved':>6} {'median steps':>12} {'median wall s':>13} {'cold wall s':>11}",
    ]
    summaries = {name: summarize(results[name]["per_seed"], wall_key="wall_seconds")
                 for name in ("pqn", "dqn", "sb3") if name in results}
    for name, r in summaries.items():
        full, double = r.get("full", {}), r.get("double")
        solved = f"{full['best_solved']}/{full['last_solved']}" if full else "-"
        twice = f"{double['best_solved']}/{double['last_solved']} of {double['runs']}" if double else "-"
        cold = results[name].get("cold", {}).get("wall_seconds")
        lines.append(
            f"{name:7} {r['seeds']:>5} {fmt(full.get('budget')):>8} {solved:>17} {twice:>20} {r['solved_during_run']:>6} "
            f"{fmt(r['median_steps_to_solve'], '.0f'):>12} {fmt(r['median_wall_to_solve'], '.2f'):>13} {fmt(cold, '.2f'):>11}"
            + (f"  ({r['errors']} failed)" if r["errors"] else ""))
    walls = {name: r["median_wall_to_solve"] for name, r in summaries.items() if r["median_wall_to_solve"]}
    for slow, fast in (("sb3", "pqn"), ("dqn", "pqn"), ("sb3", "dqn")):
        if slow in walls and fast in walls:
            lines.append(f"median wall to a solved agent, {slow} / {fast}: {walls[slow] / walls[fast]:.1f}x")
    for row in results.get("throughput", []):
        lines.append(f"PQN compiled loop, {row['seeds']} seed(s) in one program: "
                     f"{fmt(row.get('env_steps_per_second'), '.0f')} env steps/s {row.get('error', '')}")
    lines += [
        "solved best/last: seeds whose best / last weights average >= 475 over 100 fresh greedy episodes",
        "(full budget; then twice the budget). solved: seeds whose periodic evaluation reached 475 in the run.",
        "median steps / wall: to the first evaluation >= 475, an unsolved seed counting as its whole budget;",
        "dqnx wall = a --until-solved process from spawn to exit; sb3 wall = spawn to its first solving",
        "evaluation, its evaluations excluded. Cold: an empty JAX compilation cache (seed 0, not in the medians).",
        "Timings share the machine with whatever else runs (see the load averages): compare ratios from one invocation.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10, help="seeds per system, one process each (default 10)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["pqn", "dqn", "sb3", "throughput"], help="parts to leave out")
    ap.add_argument("--no-double-budget", dest="double_budget", action="store_false",
                    help="leave out the runs of twice the budget")
    ap.add_argument("--steps", type=int, help="budget of every dqnx run and sb3's (default: each system's own, sb3 50k)")
    ap.add_argument("--throughput-chunks", type=int, default=5, help="timed chunks of the throughput part (default 5)")
    ap.add_argument("--throughput-seeds", type=int, nargs="+", default=list(THROUGHPUT_SEEDS),
                    help="seed counts of the throughput part (default 1 16)")
    ap.add_argument("--torch-threads", type=int, default=1, help="torch threads of the sb3 workers (cartpole.py's default)")
    ap.add_argument("--json-out", type=Path, help="also write every figure as JSON here, rewritten after every seed")
    ap.add_argument("--keep", action="store_true", help="keep the run directories")
    ap.add_argument("--python", default=sys.executable, help="interpreter with dqnx (and the bench extra) installed")
    ap.add_argument("--report-from", type=Path, help="print the table of a results file (--json-out), finished or not")
    ap.add_argument("--double-only", action="store_true",
                    help="run only the runs of twice the budget (seeds 0..--seeds-1), into --json-out, keeping the "
                         "seeds already there: their figures are counts, so they may run beside other work")
    ap.add_argument("--double-from", type=Path, help="with --report-from: the twice-the-budget runs of a --double-only file")
    ap.add_argument("--throughput-from", type=Path,
                    help="with --report-from: the throughput rows of another results file (e.g. a quiet --skip pqn dqn sb3 run)")
    ap.add_argument("--sb3-worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--spawn-time", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--throughput-worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--chunks", type=int, default=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.sb3_worker is not None:
        return sb3_worker(args.sb3_worker, args.spawn_time, args.budget, args.result, args.torch_threads)
    if args.throughput_worker is not None:
        return throughput_worker(args.throughput_worker, args.chunks)
    if args.seeds < 1:
        ap.error("--seeds must be at least 1")

    for given in (args.report_from, args.double_from, args.throughput_from):
        if given is not None and not given.is_file():
            ap.error(f"no results file {given}; give the --json-out path of an earlier run")
    if args.report_from is not None:
        results = json.loads(args.report_from.read_text())
        if args.double_from is not None:
            merge_double(results, json.loads(args.double_from.read_text()))
        if args.throughput_from is not None:
            results["throughput"] = json.loads(args.throughput_from.read_text())["throughput"]
        print(report(results))
        return
    if args.double_only:
        if args.json_out is None:
            ap.error("--double-only needs --json-out (the file it keeps its finished seeds in)")
        return run_double_only(args)
    run_benchmark(args)


def dqnx_budget(system: str) -> int:
    """The system's own budget: its preset's total_steps (this parent is not timed, so it may import dqnx)."""
    from dqnx.config import build_config

    return build_config("CartPole-v1", agent="pqn" if system == "pqn" else "dqn").total_steps


def run_double_only(args: argparse.Namespace) -> None:
    """The runs of twice the budget on their own, seed by seed, resumable: a stability figure is a
    count (solved or not, per weights file) and a run is a pure function of its seed, so these
    runs need not share a quiet machine with the timed ones; their wall seconds are not reported."""
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="dqnx-bench-pqn-double-"))
    systems = [name for name in ("pqn", "sb3", "dqn") if name not in args.skip and name != "throughput"]
    results = json.loads(args.json_out.read_text()) if args.json_out.is_file() else {
        "argv": sys.argv[1:], "code": code_state(), "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                                                  "loadavg_start": loadavg()}}
    earlier_seconds = results.get("benchmark_seconds", 0)  # of the invocations this one resumes
    try:
        for seed in range(args.seeds):
            for name in systems:
                done = results.setdefault(name, {})
                if str(seed) in done:
                    continue
                budget = 2 * (args.steps or (SB3_BUDGET if name == "sb3" else dqnx_budget(name)))
                if name == "sb3":
                    row = sb3_run(args, seed, budget, tmp)
                else:
                    row = dqnx_stability(args.python, name, seed, tmp / f"{name}-{seed}-double", budget)
                row["loadavg_after"] = loadavg()
                log(f"{name}: seed {seed}, twice the budget -> {row}")
                done[str(seed)] = row
                results["machine"]["loadavg_end"] = loadavg()
                results["benchmark_seconds"] = round(earlier_seconds + time.perf_counter() - started, 1)
                save(results, args.json_out)
    finally:
        if args.keep:
            log(f"kept the run directories in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def merge_double(results: dict[str, Any], double: dict[str, Any]) -> None:
    """Put a --double-only file's runs into the main results' per-seed rows (by system and seed)."""
    for name in ("pqn", "dqn", "sb3"):
        for row in results.get(name, {}).get("per_seed", []):
            found = double.get(name, {}).get(str(row["seed"]))
            if found is not None:
                row["double"] = found


def save(results: dict[str, Any], path: Path | None) -> None:
    """Write the results so far (atomically: a killed benchmark leaves its last whole file)."""
    if path is None:
        return
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(results, indent=2))
    os.replace(partial, path)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_benchmark(args: argparse.Namespace) -> None:
    """Seed by seed, every system on that seed before the next seed, and the runs of twice the
    budget after all seeds: a benchmark stopped early still compares the systems on the same
    seeds, and each finished seed is saved at once."""
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="dqnx-bench-pqn-"))
    log(f"run directories under {tmp}")
    # PQN and its peer first: a benchmark stopped early has their comparison on the most seeds.
    systems = [name for name in ("pqn", "sb3", "dqn") if name not in args.skip]
    results: dict[str, Any] = {"argv": sys.argv[1:], "code": code_state(), "finished": False, "machine": {
        "cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_start": loadavg()}}
    for name in systems:
        results[name] = {"per_seed": []}

    def checkpoint() -> None:
        results["machine"]["loadavg_end"] = loadavg()
        results["benchmark_seconds"] = round(time.perf_counter() - started, 1)
        save(results, args.json_out)

    try:
        for name in systems:
            if name in DQNX_SYSTEMS:
                results[name]["cold"] = dqnx_cold_and_warm_up(name, args, tmp)
        if "throughput" not in args.skip:
            results["throughput"] = bench_throughput(args)
        checkpoint()
        for seed in range(args.seeds):
            for name in systems:
                row = sb3_seed(seed, args, tmp) if name == "sb3" else dqnx_seed(name, seed, args, tmp)
                row["loadavg_after"] = loadavg()
                log(f"{name}: seed {seed} -> {row}")
                results[name]["per_seed"].append(row)
                checkpoint()
        # Twice the budget last: stopped early, the benchmark has the main table for every seed it reached.
        for seed in range(args.seeds if args.double_budget else 0):
            for name in systems:
                row = results[name]["per_seed"][seed]
                budget = args.steps or SB3_BUDGET
                row["double"] = sb3_run(args, seed, 2 * budget, tmp) if name == "sb3" else dqnx_double(name, row, args, tmp)
                row["double"]["loadavg_after"] = loadavg()
                log(f"{name}: seed {seed}, twice the budget -> {row['double']}")
                checkpoint()
        results["finished"] = True
        checkpoint()
    finally:
        if args.keep:
            log(f"kept the run directories in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(report(results), flush=True)
    if args.json_out:
        log(f"results written to {args.json_out}")


if __name__ == "__main__":
    main()
