#!/usr/bin/env python
"""CartPole-v1 benchmark: dqnx against Stable-Baselines3 DQN (rl-baselines3-zoo tuning).

One invocation measures, on this machine, side by side:

1. dqnx, default CartPole-v1 preset, one process per seed, each
   `python -m dqnx.cli train CartPole-v1 --seed S --until-solved --quiet --out DIR`,
   timed from subprocess start to exit (imports, compilation, training, the final
   100-episode evaluation and file writing all included). A seed is solved when the
   final greedy evaluation of its best weights over 100 fresh episodes is >= 475
   (summary.json per_seed[0].eval_mean_return). One extra first process runs with an
   empty JAX compilation cache (DQNX_CACHE_DIR -> empty temp dir) and is reported
   separately as "cold cache".
2. Stable-Baselines3 DQN with rl-baselines3-zoo's tuned CartPole-v1 hyperparameters,
   one process per seed (this script in worker mode). The 50k-step schedule is run as
   ONE learn(50_000) call; every 5,000 env steps training is paused, the greedy agent
   is evaluated on 100 fresh gymnasium episodes, and training resumes. Evaluation time
   is excluded from the clock (generous to the peer). The clock covers process start,
   imports, model construction and learn() up to the first 5k boundary whose
   evaluation mean is >= 475; the seed stops there (or at 50k steps).
   Why not `model.learn(5000, reset_num_timesteps=False)` per segment: SB3 then sets
   its horizon to num_timesteps + 5000 on every call, so exploration_fraction=0.16
   decays epsilon over the first 800 steps of the first segment instead of the first
   8,000 of the 50k run, and each learn() call overshoots 5000 to a multiple of
   train_freq=256; neither is the zoo's configuration.
3. Ratios peer / dqnx of median wall seconds to a solved agent and of median steps.
4. `--seeds 16` in one dqnx process against 16 sequential single-seed processes
   (full preset, no --until-solved).

Run with the venv where dqnx and the `bench` extra are installed:

    python benchmarks/cartpole.py [--seeds 10] [--peer-seeds 3] [--json-out FILE]

Only the standard library is imported at module level so that the peer worker's
import time (torch, stable-baselines3) is measured inside the worker.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SOLVE_THRESHOLD = 475.0
EVAL_EPISODES = 100
PEER_TOTAL_STEPS = 50_000
PEER_SEGMENT = 5_000

# rl-baselines3-zoo hyperparams/dqn.yml, CartPole-v1.
ZOO_CARTPOLE = dict(
    learning_rate=2.3e-3,
    batch_size=64,
    buffer_size=100_000,
    learning_starts=1_000,
    gamma=0.99,
    target_update_interval=10,
    train_freq=256,
    gradient_steps=128,
    exploration_fraction=0.16,
    exploration_final_eps=0.04,
    policy_kwargs=dict(net_arch=[256, 256]),
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# --------------------------------------------------------------------------- peer worker


def _peer_evaluate(model: Any, episodes: int, seed_base: int) -> float:
    """Mean greedy return over `episodes` fresh CartPole-v1 episodes, run side by side."""
    import gymnasium as gym
    import numpy as np

    envs = [gym.make("CartPole-v1") for _ in range(episodes)]
    obs = np.stack([env.reset(seed=seed_base + i)[0] for i, env in enumerate(envs)])
    returns = np.zeros(episodes)
    active = np.ones(episodes, dtype=bool)
    while active.any():
        idx = np.flatnonzero(active)
        actions, _ = model.predict(obs[idx], deterministic=True)
        for j, a in zip(idx, actions):
            o, r, terminated, truncated, _ = envs[j].step(int(a))
            returns[j] += r
            obs[j] = o
            if terminated or truncated:
                active[j] = False
    for env in envs:
        env.close()
    return float(returns.mean())


def peer_worker(seed: int, spawn_time: float, result_path: Path, torch_threads: int) -> None:
    """Runs in its own process: train SB3 DQN, evaluate every 5k steps untimed, write JSON."""
    t_enter = time.time()
    import torch

    if torch_threads > 0:
        torch.set_num_threads(torch_threads)
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback

    t_imported = time.time()
    model = DQN("MlpPolicy", "CartPole-v1", seed=seed, verbose=0, device="cpu", **ZOO_CARTPOLE)
    t_built = time.time()

    evals: list[dict[str, Any]] = []
    state = {"eval_seconds": 0.0, "solved_at": None, "solved_clock": None}

    class SegmentEval(BaseCallback):
        def _on_step(self) -> bool:
            steps = self.model.num_timesteps
            if steps % PEER_SEGMENT != 0:
                return True
            t0 = time.time()
            clock = t0 - spawn_time - state["eval_seconds"]  # timed seconds so far
            segment = steps // PEER_SEGMENT
            mean = _peer_evaluate(self.model, EVAL_EPISODES, 1_000_000 + seed * 100_000 + segment * EVAL_EPISODES)
            state["eval_seconds"] += time.time() - t0
            evals.append({"env_steps": steps, "eval_mean_return": mean, "timed_seconds": round(clock, 3)})
            if mean >= SOLVE_THRESHOLD:
                state["solved_at"], state["solved_clock"] = steps, clock
                return False
            return steps < PEER_TOTAL_STEPS

    t_learn = time.time()
    model.learn(PEER_TOTAL_STEPS, callback=SegmentEval(), progress_bar=False)
    t_end = time.time()
    result = {
        "seed": seed,
        "solved": state["solved_at"] is not None,
        "steps_to_solve": state["solved_at"],
        "wall_to_solve": None if state["solved_clock"] is None else round(state["solved_clock"], 3),
        "timed_seconds_total": round(t_end - spawn_time - state["eval_seconds"], 3),
        "startup_seconds": round(t_enter - spawn_time, 3),
        "import_seconds": round(t_imported - t_enter, 3),
        "build_seconds": round(t_built - t_imported, 3),
        "learn_seconds_excl_eval": round(t_end - t_learn - state["eval_seconds"], 3),
        "eval_seconds_excluded": round(state["eval_seconds"], 3),
        "env_steps": int(model.num_timesteps),
        "evals": evals,
        "torch_num_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }
    result_path.write_text(json.dumps(result, indent=2))


# --------------------------------------------------------------------------- drivers


def run_timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return time.perf_counter() - t0, proc


def failure(proc: subprocess.CompletedProcess) -> str:
    tail = (proc.stderr or "").strip().splitlines()[-5:]
    return f"exit {proc.returncode}: " + " | ".join(tail)


def dqnx_train_cmd(python: str, out: Path, seed: int, *extra: str) -> list[str]:
    return [python, "-m", "dqnx.cli", "train", "CartPole-v1", "--seed", str(seed), "--quiet", "--out", str(out), *extra]


def run_dqnx_seed(python: str, out: Path, seed: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    wall, proc = run_timed(dqnx_train_cmd(python, out, seed, "--until-solved"), env)
    row: dict[str, Any] = {"seed": seed, "wall_seconds": round(wall, 3)}
    if proc.returncode != 0:
        row["error"] = failure(proc)
        return row
    summary = json.loads((out / "summary.json").read_text())
    s = summary["per_seed"][0]
    row.update(
        solved=s["eval_mean_return"] >= SOLVE_THRESHOLD,
        final_eval_mean_return=s["eval_mean_return"],
        steps_to_solve=s["steps_to_solve"],
        seconds_to_solve=s["seconds_to_solve"],
        compile_seconds=summary["compile_seconds"],
        total_steps=summary["total_steps"],
        run_dir_printed=proc.stdout.strip(),
    )
    return row


def bench_dqnx(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    python = args.python
    cold_dir = tmp / "cold-jax-cache"
    cold_dir.mkdir()
    env = dict(os.environ, DQNX_CACHE_DIR=str(cold_dir))
    log("dqnx: cold-cache process (seed 0, empty DQNX_CACHE_DIR)")
    cold = run_dqnx_seed(python, tmp / "dqnx-cold", 0, env)
    log(f"dqnx: cold cache -> {cold}")

    rows = []
    for seed in range(args.seeds):
        row = run_dqnx_seed(python, tmp / f"dqnx-{seed}", seed)
        log(f"dqnx: seed {seed} -> wall {row['wall_seconds']:.1f}s solved={row.get('solved')} "
            f"steps={row.get('steps_to_solve')} final={row.get('final_eval_mean_return')} {row.get('error', '')}")
        rows.append(row)
    solved = [r for r in rows if r.get("solved")]
    ok = [r for r in rows if "error" not in r]
    return {
        "seeds": args.seeds,
        "seeds_solved": len(solved),
        "errors": len(rows) - len(ok),
        "median_steps_to_solve": median([r["steps_to_solve"] for r in solved if r["steps_to_solve"] is not None]),
        "median_wall_to_solve": median([r["wall_seconds"] for r in solved]),
        "median_compile_seconds": median([r["compile_seconds"] for r in ok]),
        "median_seconds_to_solve_summary": median([r["seconds_to_solve"] for r in solved if r["seconds_to_solve"] is not None]),
        "median_wall_all_seeds": median([r["wall_seconds"] for r in rows]),
        "cold_cache": cold,
        "per_seed": rows,
    }


def bench_peer(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    rows = []
    for seed in range(args.peer_seeds):
        result_path = tmp / f"peer-{seed}.json"
        spawn = time.time()
        wall, proc = run_timed([args.python, os.path.abspath(__file__), "--peer-worker", str(seed),
                                "--spawn-time", repr(spawn), "--result", str(result_path),
                                "--peer-torch-threads", str(args.peer_torch_threads)])
        if proc.returncode != 0:
            row = {"seed": seed, "error": failure(proc), "process_wall_seconds": round(wall, 3)}
        else:
            row = json.loads(result_path.read_text())
            row["process_wall_seconds"] = round(wall, 3)
        log(f"peer: seed {seed} -> solved={row.get('solved')} steps={row.get('steps_to_solve')} "
            f"timed={row.get('wall_to_solve')} process={wall:.1f}s evals="
            f"{[round(e['eval_mean_return'], 1) for e in row.get('evals', [])]} {row.get('error', '')}")
        rows.append(row)
    solved = [r for r in rows if r.get("solved")]
    threads = sorted({r["torch_num_threads"] for r in rows if "torch_num_threads" in r})
    return {
        "seeds": args.peer_seeds,
        "seeds_solved": len(solved),
        "errors": sum("error" in r for r in rows),
        "median_steps_to_solve": median([r["steps_to_solve"] for r in solved]),
        "median_wall_to_solve": median([r["wall_to_solve"] for r in solved]),
        "median_import_seconds": median([r["import_seconds"] for r in rows if "import_seconds" in r]),
        "torch_num_threads": threads,
        "torch_threads_set": args.peer_torch_threads or "torch default",
        "hyperparameters": {"n_timesteps": PEER_TOTAL_STEPS, "policy": "MlpPolicy", **ZOO_CARTPOLE},
        "per_seed": rows,
    }


def bench_multiseed(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    n, python = args.multiseed_count, args.python
    extra = [] if args.steps is None else ["--steps", str(args.steps)]
    log(f"multi-seed: one process --seeds {n}")
    one_wall, proc = run_timed(dqnx_train_cmd(python, tmp / f"multi-{n}", 0, "--seeds", str(n), *extra))
    one: dict[str, Any] = {"wall_seconds": round(one_wall, 3)}
    if proc.returncode != 0:
        one["error"] = failure(proc)
    else:
        summary = json.loads((tmp / f"multi-{n}" / "summary.json").read_text())
        one.update(seeds_solved=summary["seeds_solved"], total_steps=summary["total_steps"],
                   compile_seconds=summary["compile_seconds"], train_wall_seconds=summary["wall_seconds"])
    log(f"multi-seed: one process -> {one}")

    walls, solved, errors = [], 0, []
    for seed in range(n):
        out = tmp / f"single-{seed}"
        wall, proc = run_timed(dqnx_train_cmd(python, out, seed, *extra))
        walls.append(round(wall, 3))
        if proc.returncode != 0:
            errors.append({"seed": seed, "error": failure(proc)})
        else:
            s = json.loads((out / "summary.json").read_text())
            solved += bool(s["per_seed"][0]["solved"])
        log(f"multi-seed: single process seed {seed} -> {wall:.1f}s")
    seq_wall = sum(walls)
    return {
        "count": n,
        "steps": args.steps or "preset",
        "one_process": one,
        "sequential_wall_seconds": round(seq_wall, 3),
        "sequential_seeds_solved": solved,
        "sequential_per_process_wall": walls,
        "sequential_errors": errors,
        "speedup_sequential_over_one": round(seq_wall / one_wall, 3) if one_wall and "error" not in one else None,
    }


# --------------------------------------------------------------------------- report


def fmt(x: Any, spec: str = ".1f") -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


def args_threads(peer: dict[str, Any]) -> int:
    t = peer.get("torch_threads_set")
    return t if isinstance(t, int) else 0


def report(results: dict[str, Any]) -> str:
    lines = []
    add = lines.append
    m = results["machine"]
    add("=" * 78)
    add("CartPole-v1 benchmark: dqnx vs Stable-Baselines3 DQN (rl-baselines3-zoo tuned)")
    add(f"machine: {m['cpus']} CPUs, {m['platform']}, python {m['python']}; "
        f"load avg at start {m['loadavg_start']}, at end {m['loadavg_end']}")
    add(f"total benchmark time {results['benchmark_seconds']:.0f} s")
    c0, c1 = results["code_start"], results["code_end"]
    add(f"dqnx code: git HEAD {c0['git_head']}, src/dqnx sha256 {c0['src_sha256']}")
    if c0 != c1:
        add(f"WARNING: dqnx's code changed during the run (end: git HEAD {c1['git_head']}, "
            f"src sha256 {c1['src_sha256']}); parts measured different code")
    add("=" * 78)

    d = results.get("dqnx")
    if d:
        add("")
        add(f"dqnx (default preset, --until-solved, one process per seed, {d['seeds']} seeds)")
        add("  wall = subprocess start to exit: imports, compile (warm persistent cache), train,")
        add("  final 100-episode greedy eval of the best weights, file writing")
        add(f"  {'seed':>4} {'solved':>6} {'final eval':>10} {'steps':>7} {'wall s':>7} {'compile s':>9} {'summary s':>9}")
        for r in d["per_seed"]:
            if "error" in r:
                add(f"  {r['seed']:>4} ERROR {r['error']}")
                continue
            add(f"  {r['seed']:>4} {('yes' if r['solved'] else 'no'):>6} {r['final_eval_mean_return']:>10.1f} "
                f"{fmt(r['steps_to_solve']):>7} {r['wall_seconds']:>7.1f} {r['compile_seconds']:>9.2f} "
                f"{fmt(r['seconds_to_solve'], '.2f'):>9}")
        c = d["cold_cache"]
        add(f"  cold cache (seed 0, empty DQNX_CACHE_DIR, not in medians): wall {c['wall_seconds']:.1f} s, "
            f"compile {fmt(c.get('compile_seconds'), '.2f')} s, solved={c.get('solved')} {c.get('error', '')}")

    p = results.get("peer")
    if p:
        add("")
        add(f"Stable-Baselines3 DQN, zoo CartPole-v1 hyperparameters, one process per seed, {p['seeds']} seeds")
        how = "torch default" if not args_threads(p) else f"set by --peer-torch-threads {args_threads(p)}"
        add(f"  torch.get_num_threads() = {p['torch_num_threads']} ({how})")
        add("  timed = process start + imports + model build + learn() up to the first 5k-step")
        add("  boundary whose 100-episode greedy eval >= 475; EVALUATION TIME EXCLUDED from the")
        add("  clock (generous to the peer; dqnx's wall includes its evaluations)")
        add(f"  {'seed':>4} {'solved':>6} {'steps':>7} {'timed s':>8} {'import s':>8} {'process s':>9}  evals (mean return per 5k steps)")
        for r in p["per_seed"]:
            if "error" in r:
                add(f"  {r['seed']:>4} ERROR {r['error']}")
                continue
            evals = " ".join(f"{e['eval_mean_return']:.0f}" for e in r["evals"])
            add(f"  {r['seed']:>4} {('yes' if r['solved'] else 'no'):>6} {fmt(r['steps_to_solve']):>7} "
                f"{fmt(r['wall_to_solve']):>8} {r['import_seconds']:>8.1f} {r['process_wall_seconds']:>9.1f}  {evals}")

    add("")
    add("Summary")
    add(f"  {'':36} {'dqnx':>12} {'SB3 DQN':>12} {'SB3/dqnx':>9}")
    r = results.get("ratios", {})
    if d or p:
        dd, pp = d or {}, p or {}
        def solved(x: dict[str, Any]) -> str:
            return f"{x['seeds_solved']}/{x['seeds']}" if x else "n/a"

        add(f"  {'seeds solved':36} {solved(dd):>12} {solved(pp):>12}")
        add(f"  {'median env steps to solve':36} {fmt(dd.get('median_steps_to_solve'), '.0f'):>12} "
            f"{fmt(pp.get('median_steps_to_solve'), '.0f'):>12} {fmt(r.get('steps'), '.2f'):>9}")
        add(f"  {'median wall s to a solved agent':36} {fmt(dd.get('median_wall_to_solve')):>12} "
            f"{fmt(pp.get('median_wall_to_solve')):>12} {fmt(r.get('wall'), '.2f'):>9}")
    if d:
        add(f"  {'dqnx median compile_seconds':36} {fmt(d['median_compile_seconds'], '.2f'):>12}")
        add(f"  {'dqnx median seconds_to_solve (summ.)':36} {fmt(d['median_seconds_to_solve_summary'], '.2f'):>12}")
        add(f"  {'dqnx cold-cache process wall s':36} {fmt(d['cold_cache']['wall_seconds']):>12}")
    if p:
        add(f"  {'SB3 median import s (torch+sb3)':36} {'':>12} {fmt(p['median_import_seconds'], '.2f'):>12}")
    add("  (medians over solved seeds; SB3 wall excludes its evaluations, dqnx wall includes them)")

    ms = results.get("multiseed")
    if ms:
        add("")
        add(f"dqnx --seeds {ms['count']} in one process vs {ms['count']} sequential single-seed processes "
            f"(steps: {ms['steps']}, no --until-solved)")
        one = ms["one_process"]
        add(f"  one process --seeds {ms['count']}: {one['wall_seconds']:.1f} s wall "
            f"(compile {fmt(one.get('compile_seconds'), '.2f')} s, solved {fmt(one.get('seeds_solved'))}/{ms['count']}) "
            f"{one.get('error', '')}")
        add(f"  {ms['count']} sequential processes:  {ms['sequential_wall_seconds']:.1f} s wall "
            f"(solved {ms['sequential_seeds_solved']}/{ms['count']}; per process "
            f"{min(ms['sequential_per_process_wall']):.1f}-{max(ms['sequential_per_process_wall']):.1f} s)")
        add(f"  sequential / one process = {fmt(ms['speedup_sequential_over_one'], '.2f')}x")
        add("  (the --seeds N program has its own shape: its compile is cached separately from the")
        add("  single-seed program, so a first-ever --seeds N run pays a fresh compile)")
    add("")
    add("Timings share a 2-core machine with other work; compare ratios from one run, not")
    add("absolute seconds across runs.")
    return "\n".join(lines)


def code_state() -> dict[str, Any]:
    """git HEAD and a hash of dqnx's installed sources: a run whose code changed midway says so."""
    import hashlib

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip() or None
    except OSError:
        head = None
    digest = hashlib.sha256()
    src = root / "src" / "dqnx"
    for path in sorted(src.rglob("*")) if src.is_dir() else []:
        if path.is_file() and path.suffix in (".py", ".toml"):
            digest.update(str(path.relative_to(src)).encode() + b"\0" + path.read_bytes())
    return {"git_head": head, "src_sha256": digest.hexdigest()[:16] if src.is_dir() else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10, help="dqnx seeds, one process each (default 10)")
    ap.add_argument("--peer-seeds", type=int, default=10, help="SB3 DQN seeds, one process each (default 10)")
    ap.add_argument("--multiseed-count", type=int, default=16, help="seeds for the multi-seed comparison (default 16)")
    ap.add_argument("--steps", type=int, default=None, help="total env steps for the multi-seed part (default: preset)")
    ap.add_argument("--skip-dqnx", action="store_true", help="skip part 1 (dqnx per-seed)")
    ap.add_argument("--skip-peer", action="store_true", help="skip part 2 (SB3 DQN)")
    ap.add_argument("--skip-multiseed", action="store_true", help="skip part 4 (--seeds N vs N processes)")
    ap.add_argument("--peer-torch-threads", type=int, default=1,
                    help="torch.set_num_threads for the peer (default 1: on this 2-core machine 1 thread ran the "
                         "same training about 15x faster than torch's default of 2 under load; 0 = torch default)")
    ap.add_argument("--json-out", type=Path, default=None, help="also write all results as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir of run directories")
    ap.add_argument("--python", default=sys.executable, help="interpreter with dqnx (and the bench extra) installed")
    # Worker mode (internal): one SB3 seed in this process.
    ap.add_argument("--peer-worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--spawn-time", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.peer_worker is not None:
        peer_worker(args.peer_worker, args.spawn_time, args.result, args.peer_torch_threads)
        return
    for name in ("seeds", "peer_seeds", "multiseed_count"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")

    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="dqnx-bench-cartpole-"))
    log(f"run directories under {tmp}")
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        },
        "argv": sys.argv[1:],
        "code_start": code_state(),
    }
    try:
        if not args.skip_dqnx:
            results["dqnx"] = bench_dqnx(args, tmp)
        if not args.skip_peer:
            results["peer"] = bench_peer(args, tmp)
        d, p = results.get("dqnx"), results.get("peer")
        if d and p:
            def ratio(a: Any, b: Any) -> float | None:
                return round(a / b, 3) if a is not None and b else None

            results["ratios"] = {
                "wall": ratio(p["median_wall_to_solve"], d["median_wall_to_solve"]),
                "steps": ratio(p["median_steps_to_solve"], d["median_steps_to_solve"]),
            }
        if not args.skip_multiseed:
            results["multiseed"] = bench_multiseed(args, tmp)
    finally:
        if args.keep:
            log(f"kept run directories in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["benchmark_seconds"] = round(time.perf_counter() - started, 1)
    results["code_end"] = code_state()
    print(report(results), flush=True)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(results, indent=2))
        log(f"results written to {args.json_out}")


if __name__ == "__main__":
    main()
