#!/usr/bin/env python
"""Memory tasks: a recurrent DQN (memory=gru) against frame-stacked and plain ones (issue 20).

Tasks (each the same budget and seeds for every agent):
- MemoryChain-bsuite with memory_length 30 (gymnax, compiled loop): a context bit shown at
  the first step, asked for 30 steps later (+1 right, -1 wrong); without memory about 0.
- POPGym RepeatFirstEasy (Gymnasium, host loop, `popgym:popgym-RepeatFirstEasy-v0`): say the
  suit of the deck's first card at every step of a 52-card deck. Only a window as long as the
  episode (K = 52) holds that card to the end, in a slot that moves every step.
- POPGym RepeatPreviousMedium (`popgym:popgym-RepeatPreviousMedium-v0`): say the suit of the
  card observed 31 steps before the current one, over two decks (103 steps). A window of K >= 32
  holds the answer; shorter ones cannot. (RepeatPreviousEasy, its card 3 steps back, falls to a
  stack of 4: not a memory test.)
POPGym's returns lie in [-1, 1]: -0.5 is chance (4 suits), 1.0 perfect.

Agents: `memory=gru` (the task's preset: src/dqnx/presets/), `frame_stack=K` for each K of the
task's list (the same preset, network and budget, a window of K observations instead of the
GRU: the stack's tuning is the choice among those K), and plain DQN (neither).

A cell is (task, agent, K): one `dqnx train ... --seeds N` process, the N seeds side by side.
Each finished cell goes at once to docs/memory-cells.json; a rerun skips the cells found there
with the same seeds and steps, so a benchmark stopped by a deadline is resumed where it stopped.
docs/memory.md's results section (between its `<!-- results -->` markers) is rebuilt from the
JSON alone; the prose around it is written by hand.

Reported per cell and seed: the greedy return of the best weights (chosen by the periodic
evaluation) over 100 fresh episodes (summary.json), the periodic evaluations (metrics.csv), env
steps, the process's wall seconds (compilation included) and the load average before and after
(timings from a loaded machine are not speeds; returns and env steps do not depend on the load).

    python benchmarks/memory.py [--seeds 3] [--scale 1.0] [--only TEXT] [--agents gru,frame_stack,plain]
                                [--stacks K,K] [--set KEY=VALUE ...] [--out runs/memory] [--report-only]

`--scale` multiplies every task's step budget (a cell at another budget than the preset's is kept
beside the full-budget one, not replaced by it); `--only` keeps the tasks whose name contains TEXT;
`--stacks` keeps only those frame stacks' K; `--set KEY=VALUE` (repeatable) runs a variant of the preset
(an experiment: say sequence_length=96), a cell of its own under a key and run directory that name the
settings, beside the preset's cell.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # the checkout's dqnx, as the subprocesses below

CELLS = ROOT / "docs" / "memory-cells.json"
DOC = ROOT / "docs" / "memory.md"
BEGIN, END = "<!-- results -->", "<!-- /results -->"


@dataclass(frozen=True)
class Task:
    env_id: str
    extra: tuple[str, ...]  # further `dqnx train` arguments (env parameters)
    steps: int  # the preset's budget (before --scale)
    stacks: tuple[int, ...]  # the frame stack's K values tried


TASKS = {
    # Each task's K values, run in this order: the window that holds the cue first.
    # K = 31 spans the whole episode (the bit and the question); 16 is a window that cannot.
    "MemoryChain-bsuite (memory_length 30)": Task("MemoryChain-bsuite", ("--env-param", "memory_length=30"),
                                                  20_000, (31, 16)),
    # No K shorter than the 51-step episode holds the first card; 32 and 8 show it.
    "POPGym RepeatFirstEasy": Task("popgym:popgym-RepeatFirstEasy-v0", (), 50_000, (52, 32, 8)),
    # 33 holds the card asked for (31 steps back: 32 would do; 33 was chosen when the span was counted as
    # 32, and the cells were measured with it); 17 is half of it.
    "POPGym RepeatPreviousMedium": Task("popgym:popgym-RepeatPreviousMedium-v0", (), 50_000, (33, 17)),
}
AGENTS = ("gru", "frame_stack", "plain")


def agent_settings(agent: str, stack: int | None) -> list[str]:
    if agent == "gru":
        return ["--set", "memory=gru"]
    if agent == "frame_stack":
        return ["--set", "memory=none", "--set", f"frame_stack={stack}"]
    return ["--set", "memory=none"]


def cell_key(task: str, agent: str, stack: int | None, variant: tuple[str, ...] = ()) -> str:
    return f"{task}|{agent}" + (f"|K={stack}" if stack else "") + "".join(f"|{s}" for s in variant)


def json_key(task: str, agent: str, stack: int | None, steps: int, variant: tuple[str, ...] = ()) -> str:
    """The cell's key in the JSON: a run at another budget than the preset's (--scale), or a variant of
    the preset (--set), is a cell of its own, so that it sits beside the preset's full-budget cell."""
    return cell_key(task, agent, stack, variant) + ("" if steps == TASKS[task].steps else f"|steps={steps}")


def cells_of(tasks: list[str], agents: list[str]) -> list[tuple[str, str, int | None]]:
    """The cells in running order: task by task, the GRU first, then each K, then plain DQN."""
    out = []
    for task in tasks:
        for agent in agents:
            stacks = TASKS[task].stacks if agent == "frame_stack" else (None,)
            out += [(task, agent, k) for k in stacks]
    return out


def run_cell(task: str, agent: str, stack: int | None, seeds: int, steps: int, out: Path,
             variant: tuple[str, ...] = ()) -> dict:
    spec = TASKS[task]
    run = out / cell_key(task, agent, stack, variant).replace(" ", "_").replace("|", "-").replace("(", "").replace(")", "")
    command = ["train", spec.env_id, *spec.extra, "--seeds", str(seeds), "--seed", "0", "--steps", str(steps),
               "--quiet", "--no-tensorboard", "--out", str(run), *agent_settings(agent, stack),
               *[arg for setting in variant for arg in ("--set", setting)], "--set", "final_eval_episodes=100"]
    resumed_from = resumable_steps(run, seeds, steps)
    if resumed_from is None and run.exists():  # stopped before its first checkpoint, or another budget: start again
        shutil.rmtree(run)
    # A cell stopped by a deadline (SIGTERM: the run checkpoints at the end of its chunk) continues from
    # its checkpoint; on the host loop the episodes under way then restart, as for any resumed run.
    invocation = command if resumed_from is None else ["train", "--resume", str(run), "--quiet", "--no-tensorboard"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    load_before = os.getloadavg()[0]
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with open(f"{run}.log", "w" if resumed_from is None else "a") as log:
        status = subprocess.run([sys.executable, "-m", "dqnx.cli", *invocation], stdout=log, stderr=subprocess.STDOUT,
                                env=env, check=False).returncode
    wall = time.perf_counter() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the CPU the train process used (user + system)
    cpu = children.ru_utime - children_before.ru_utime + children.ru_stime - children_before.ru_stime
    cell = {"task": task, "agent": agent, "stack": stack, "seeds": seeds, "steps": steps, "status": status,
            "variant": list(variant), "command": "dqnx " + " ".join(command), "process_seconds": round(wall, 1),
            "cpu_seconds": round(cpu, 1), "resumed_from": resumed_from,
            "load_before": round(load_before, 1), "load_after": round(os.getloadavg()[0], 1),
            "measured": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()), "machine": f"{os.cpu_count()} CPUs"}
    if status != 0 or not (run / "summary.json").is_file():
        return cell
    summary = json.loads((run / "summary.json").read_text())
    with open(run / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("eval_mean_return") not in ("", None)]
    per_seed = summary.get("per_seed") or [summary]
    cell.update({
        "env_steps": summary["total_steps"], "wall_seconds": summary["wall_seconds"],
        "compile_seconds": summary["compile_seconds"],
        "returns": [s["eval_mean_return"] for s in per_seed],
        "periodic": {str(s["seed"]): [[int(r["env_steps"]), round(float(r["eval_mean_return"]), 3)]
                                      for r in rows if int(r["seed"]) == s["seed"]] for s in per_seed},
    })
    return cell


def resumable_steps(run: Path, seeds: int, steps: int) -> int | None:
    """The env steps of the checkpoint a stopped cell left in `run`, if it is the same cell (seeds, budget)."""
    from dqnx.errors import UsageError
    from dqnx.runs.files import read_metadata

    try:
        config = json.loads((run / "config.json").read_text())
        done = int(read_metadata(run / "checkpoint.safetensors")["progress"]["env_steps"])
    except (OSError, KeyError, TypeError, ValueError, UsageError):
        return None
    same = config["config"].get("total_steps") == steps and len(config.get("seeds", [])) == seeds
    return done if same and 0 < done < steps else None


def load_cells() -> dict:
    return json.loads(CELLS.read_text()) if CELLS.is_file() else {}


def save_cell(key: str, cell: dict) -> dict:
    """Add one cell to the JSON as it is on disk now (another benchmark process, say `--only` another
    task, may have added its own meanwhile), atomically; returns all cells."""
    from dqnx.runs.files import atomic_write_json

    cells = load_cells()
    cells[key] = cell
    atomic_write_json(CELLS, cells)
    return cells


def agent_name(cell: dict) -> str:
    name = f"frame stack K={cell['stack']}" if cell["agent"] == "frame_stack" else \
        {"gru": "memory=gru", "plain": "plain DQN"}[cell["agent"]]
    variant = cell.get("variant", [])
    if any(setting.startswith("memory=") for setting in variant):  # say, the GRU's preset run with memory=lstm
        name = ""
    return ", ".join(part for part in [name, *variant] if part)


def periodic_means(cell: dict) -> str:
    """'2k: 0.10, 4k: 1.00, ...': each periodic evaluation's mean over the seeds."""
    curves = list((cell.get("periodic") or {}).values())
    if not curves:
        return "-"
    steps = [step for step, _ in curves[0]]
    means = [statistics.mean(curve[i][1] for curve in curves) for i in range(len(steps))]
    return ", ".join(f"{step / 1000:g}k: {m:.2f}" for step, m in zip(steps, means))


def table(cells: dict) -> str:
    lines = ["| task | agent | greedy return per seed (best weights, 100 fresh episodes) | mean | env steps | "
             "periodic evaluations, mean of the seeds (at k env steps) | wall s (compile) | CPU s | load before/after |",
             "|---|---|---|---|---|---|---|---|---|"]
    order = [cell_key(*c) for c in cells_of(list(TASKS), list(AGENTS))]
    def position(c: dict) -> tuple[int, int, tuple[str, ...]]:
        key = cell_key(c["task"], c["agent"], c["stack"])
        return (order.index(key) if key in order else len(order), c["steps"], tuple(c.get("variant", ())))

    for cell in sorted(cells.values(), key=position):
        returns = cell.get("returns")
        shown = ", ".join(f"{x:.2f}" for x in returns) if returns else f"failed (exit {cell['status']})"
        mean = f"{statistics.mean(returns):.2f}" if returns else "-"
        wall = f"{cell['wall_seconds']:.0f} ({cell['compile_seconds']:.0f})" if returns else f"{cell['process_seconds']:.0f}"
        lines.append(f"| {cell['task']} | {agent_name(cell)} | {shown} | {mean} | {cell.get('env_steps', '-')} | "
                     f"{periodic_means(cell)} | {wall} | {cell.get('cpu_seconds', '-')} | "
                     f"{cell['load_before']}/{cell['load_after']} |")
    return "\n".join(lines)


def results_section(cells: dict) -> str:
    commands = sorted({c["command"] for c in cells.values()})
    return "\n".join([
        BEGIN, "",
        f"Written by `python benchmarks/memory.py` from docs/memory-cells.json ({len(cells)} cells; each cell one "
        "process, its seeds side by side):", "", table(cells), "",
        "<details><summary>The commands of these cells</summary>", "", "```",
        *commands, "```", "", "</details>", "", END])


def write_doc(cells: dict) -> None:
    from dqnx.runs.files import atomic_write_bytes

    text = DOC.read_text() if DOC.is_file() else "# Memory\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
    else:
        head, tail = text.rstrip() + "\n\n", "\n"
    atomic_write_bytes(DOC, (head + results_section(cells) + tail).encode())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--only", default=None, help="run only the tasks whose name contains this")
    parser.add_argument("--agents", default=",".join(AGENTS), help="comma-separated: gru, frame_stack, plain")
    parser.add_argument("--stacks", default=None, help="comma-separated K: run only these frame stacks (default: the task's)")
    parser.add_argument("--set", dest="variant", action="append", default=[], metavar="KEY=VALUE",
                        help="a variant of the preset (repeatable): a cell of its own beside the preset's")
    parser.add_argument("--out", default="runs/memory")
    parser.add_argument("--report-only", action="store_true", help="rewrite docs/memory.md from the JSON, train nothing")
    args = parser.parse_args()
    agents = [a for a in args.agents.split(",") if a]
    unknown = sorted(set(agents) - set(AGENTS))
    if unknown:
        parser.error(f"unknown agents {unknown}: choose among {', '.join(AGENTS)}")
    cells = load_cells()
    if not args.report_only:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        tasks = [t for t in TASKS if not args.only or args.only in t]
        stacks = {int(k) for k in args.stacks.split(",")} if args.stacks else None
        variant = tuple(args.variant)
        for task, agent, stack in cells_of(tasks, agents):
            if stack is not None and stacks is not None and stack not in stacks:
                continue
            steps = int(TASKS[task].steps * args.scale)
            key = json_key(task, agent, stack, steps, variant)
            done = cells.get(key)
            if done and done.get("returns") and done["seeds"] == args.seeds and done["steps"] == steps:
                print(f"kept: {key}", flush=True)
                continue
            cell = run_cell(task, agent, stack, args.seeds, steps, out, variant)
            print(json.dumps({k: v for k, v in cell.items() if k != "periodic"}), flush=True)
            cells = save_cell(key, cell)
            write_doc(cells)
    write_doc(load_cells())
    return 0


if __name__ == "__main__":
    sys.exit(main())
