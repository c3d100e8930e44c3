"""Per-game tuning of the MinAtar DQN and PQN presets (issue 19): docs/minatar-tuning.md.

For each game and agent, one learning-rate sweep in one compiled program,

    dqnx sweep GAME --agent AGENT --grid learning_rate=A,B,C --seeds 2 --seed 100 --steps STEPS ...

on two tuning seeds (100 and 101, apart from the seeds 0-2 that benchmarks/minatar.py reports),
under the settings of the game's best published figure (the one its target compares with),
every other value the preset's. The budget is shortened so that the five sweeps of an agent fit
in about an hour on 2 cores; a short run favours the faster learner, so a lower rate that already
leads there is no accident of the budget.
- DQN: 1e-3, 3e-4, 1e-4 for 1.5M env steps (Freeway 1M: its DQN plateaus by then).
- PQN: 1e-3, 5e-4 (the PQN paper's MinAtar value) and 2.5e-4, for a fifth of the preset's budget
  but at least 1M steps. PQN's schedules are fractions of its run (the learning rate decays
  linearly to 0 over the run, epsilon over its first tenth), so the sweep shortens epsilon's
  decay in proportion and keeps their shape.

Each member's final weights are evaluated greedily over 100 fresh episodes (`dqnx eval
--weights last`, the measure docs/minatar.md compares), and its training return over the last
100 episodes is read from metrics.csv. The rule a preset follows (`chosen`): the learning rate
with the highest mean final greedy return over the tuning seeds; rates within 5% of that mean
count as tied, and the highest mean training return among them decides (the training return
averages the latest policies' episodes and shows which run is still ahead).

A finished sweep is kept under --sweeps (default runs/minatar-tune/GAME, PQN's under
runs/minatar-tune/pqn/GAME) and its evaluation in docs/minatar-tuning.json (PQN's in
docs/minatar-tuning-pqn.json), so a rerun only trains what is missing; a sweep directory that is
unfinished or was made with other settings is reported, never overwritten.

    python benchmarks/minatar_tune.py [--agent dqn|pqn] [--games Asterix-MinAtar,...] [--sweeps DIR] [--report-only]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # the checkout's dqnx, as the subprocesses below

from dqnx.config import build_config  # noqa: E402
from dqnx.envs import make_env  # noqa: E402
from dqnx.envs.minatar import GAMES, SETTINGS  # noqa: E402
from dqnx.errors import UsageError  # noqa: E402
from dqnx.runs.files import atomic_write_bytes, atomic_write_json, read_json  # noqa: E402

AGENTS = ("dqn", "pqn")
RESULTS = {"dqn": ROOT / "docs" / "minatar-tuning.json", "pqn": ROOT / "docs" / "minatar-tuning-pqn.json"}
DOC = ROOT / "docs" / "minatar-tuning.md"
LEARNING_RATES = {"dqn": (1e-3, 3e-4, 1e-4), "pqn": (1e-3, 5e-4, 2.5e-4)}
TUNING_SEEDS = (100, 101)
DQN_STEPS = {game: 1_500_000 for game in GAMES} | {"Freeway-MinAtar": 1_000_000}
DQN_EVAL_EVERY = {game: 250_000 for game in GAMES} | {"Seaquest-MinAtar": 500_000}  # Seaquest's long episodes
PQN_FRACTION, PQN_MIN_STEPS = 5, 1_000_000  # a fifth of the preset's budget, at least 1M steps
TIE = 0.05  # final greedy returns within 5% of the best count as tied

# benchmarks/minatar.py's helpers (the target's reference, the dqnx subprocess, the processor's name),
# loaded by path: "minatar" is also the MinAtar package's import name.
_spec = importlib.util.spec_from_file_location("minatar_benchmark", ROOT / "benchmarks" / "minatar.py")
benchmark = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(benchmark)


def sweep_overrides(game: str, agent: str) -> dict:
    """The values a tuning sweep changes from the preset: its budget and what scales with it."""
    if agent == "dqn":
        steps = DQN_STEPS[game]
        return {"total_steps": steps, "eval_every": DQN_EVAL_EVERY[game], "eval_episodes": 20,
                "final_eval_episodes": 100, "checkpoint_every": steps}
    preset = build_config(game, agent="pqn")
    steps = max(preset.total_steps // PQN_FRACTION, PQN_MIN_STEPS)
    # One evaluation of 10 episodes at the end: `dqnx eval` below gives the figure that is compared.
    return {"total_steps": steps, "epsilon_decay_steps": preset.epsilon_decay_steps * steps // preset.total_steps,
            "eval_every": steps, "eval_episodes": 10, "final_eval_episodes": 10, "checkpoint_every": steps}


def spec(game: str, agent: str) -> dict:
    """What a game's sweep must have been made with: its grid, seeds, env parameters and every other value."""
    config = build_config(game, agent=agent, overrides=sweep_overrides(game, agent)).to_dict()
    config.pop("learning_rate")  # the grid's key: the preset's own value is one of the candidates
    settings = benchmark.best_reference(game).settings
    return {"grid": {"learning_rate": list(LEARNING_RATES[agent])}, "seeds": list(TUNING_SEEDS), "settings": settings,
            "env_params": SETTINGS[settings].params(game), "config": config}


def sweep_matches(game: str, agent: str, meta: dict, want: dict) -> bool:
    base = {k: v for k, v in meta.get("base_config", {}).items() if k != "learning_rate"}
    grid = {k: [float(x) for x in v] for k, v in meta.get("grid", {}).items()}
    # The env parameters as resolved: a sweep given none ran gymnax's defaults, the same as given them.
    resolved = make_env(game, meta.get("env_params") or None).settings()
    return (meta.get("agent", "dqn") == agent and grid == want["grid"] and meta.get("seeds") == want["seeds"]
            and base == want["config"]
            and all(resolved.get(k) == v for k, v in want["env_params"].items()))


def run_sweep(game: str, agent: str, want: dict, directory: Path) -> dict:
    """The finished sweep in `directory`, training it first when the directory does not exist."""
    if not directory.exists():
        overrides = sweep_overrides(game, agent)
        args = ["sweep", game, "--agent", agent,
                "--grid", "learning_rate=" + ",".join(f"{lr:g}" for lr in LEARNING_RATES[agent]),
                "--seeds", str(len(TUNING_SEEDS)), "--seed", str(TUNING_SEEDS[0]),
                "--steps", str(overrides.pop("total_steps")), "--out", str(directory), "-q"]
        for name, value in overrides.items():
            args += ["--set", f"{name}={value}"]
        for name, value in want["env_params"].items():
            args += ["--env-param", f"{name}={value}"]
        print(f"{game}: dqnx {' '.join(args)}", flush=True)
        done = benchmark._dqnx(args)
        if done.returncode != 0:
            raise SystemExit(f"{game}: dqnx sweep failed:\n{done.stderr[-2000:]}")
    meta = read_json(directory / "sweep.json", "sweep.json")
    if meta.get("status") != "finished":
        raise UsageError(f"{directory} holds an unfinished sweep; move it away to train it again")
    if not sweep_matches(game, agent, meta, want):
        raise UsageError(f"{directory} holds a sweep made with other settings than this script's; move it away")
    return meta


def evaluate(game: str, agent: str, want: dict, directory: Path, meta: dict) -> dict:
    """Per learning rate: each tuning seed's final greedy return (100 episodes) and training return."""
    rates = LEARNING_RATES[agent]
    rows = {lr: {"final": {}, "train_100": {}} for lr in rates}
    for group in meta["groups"]:
        path = directory / group["path"]
        members = read_json(path / "members.json", "members.json")["members"]
        evaluated = benchmark._dqnx(["eval", str(path), "--weights", "last", "--episodes", "100", "--json"])
        if evaluated.returncode != 0:
            raise SystemExit(f"{game}: dqnx eval {path} failed:\n{evaluated.stderr[-2000:]}")
        per_member = json.loads(evaluated.stdout)["per_seed"]
        with open(path / "metrics.csv", newline="") as f:
            metrics = list(csv.DictReader(f))
        last_step = metrics[-1]["env_steps"]
        last_rows = [r for r in metrics if r["env_steps"] == last_step]  # one row per member, members.json's order
        for member, final, row in zip(members, per_member, last_rows, strict=True):
            lr = rates[member["config_index"]]
            rows[lr]["final"][member["seed"]] = final["mean_return"]
            rows[lr]["train_100"][member["seed"]] = float(row["train_return_100"])
    return {"game": game, **want, "env_steps": want["config"]["total_steps"], "wall_seconds": meta["wall_seconds"],
            "results": [{"learning_rate": lr, **rows[lr]} for lr in rates],
            "measured": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime((directory / "sweep.json").stat().st_mtime)),
            "machine": f"{os.cpu_count()} CPUs{benchmark.cpu_model()}, load average {os.getloadavg()[0]:.1f} when evaluated"}


def chosen(record: dict) -> float:
    """The rule in the module docstring."""
    mean = lambda values: statistics.mean(values.values())  # noqa: E731
    best = max(mean(r["final"]) for r in record["results"])
    tied = [r for r in record["results"] if mean(r["final"]) >= (1 - TIE) * best]
    return max(tied, key=lambda r: mean(r["train_100"]))["learning_rate"]


def table(records: dict, agent: str) -> list[str]:
    lines = [
        "| game | settings | env steps | learning rate | final greedy per seed | mean | train (last 100) per seed | mean | chosen | the preset's now |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    edge = []  # games whose best rate may lie beyond the grid
    for game in GAMES:
        record = records.get(game)
        if record is None:
            lines.append(f"| {game} | | | (not swept yet) | | | | | | |")
            continue
        pick = chosen(record)
        if pick in (max(LEARNING_RATES[agent]), min(LEARNING_RATES[agent])):
            edge.append(game)
        preset_lr = build_config(game, agent=agent).learning_rate
        for r in record["results"]:
            finals, trains = list(r["final"].values()), list(r["train_100"].values())
            lines.append(
                f"| {game} | {record['settings']} | {record['env_steps']:,} | {r['learning_rate']:g} "
                f"| {', '.join(f'{v:.1f}' for v in finals)} | {statistics.mean(finals):.1f} "
                f"| {', '.join(f'{v:.1f}' for v in trains)} | {statistics.mean(trains):.1f} "
                f"| {'**yes**' if r['learning_rate'] == pick else ''} "
                f"| {'yes' if abs(r['learning_rate'] - preset_lr) < 1e-12 else ''} |")
    if edge:  # say so rather than call the preset's rate an optimum
        lines += ["", f"Chosen at the edge of the grid, so a rate beyond it was not tried: {', '.join(edge)}."]
    lines += ["", "Sweeps finished (UTC; a sweep's wall seconds train its 6 members in one program):", ""]
    lines += [f"- {r['game']}: {r['measured']}, {r['wall_seconds']:.0f} s; {r['machine']}" for r in records.values()]
    return lines


def rates(agent: str) -> str:
    return ", ".join(f"{lr:g}" for lr in LEARNING_RATES[agent])


def markdown(records: dict[str, dict]) -> str:
    """The page: one section per agent, `records` being each agent's results file."""
    lines = [
        "# MinAtar: tuning the presets per game",
        "",
        "Written by `python benchmarks/minatar_tune.py` (issue 19) from docs/minatar-tuning.json (DQN)",
        "and docs/minatar-tuning-pqn.json (PQN). For each game and agent, a learning-rate sweep on the",
        f"tuning seeds {' and '.join(map(str, TUNING_SEEDS))} (docs/minatar.md reports seeds 0-2), under the settings of the",
        "game's best published figure, every other value the preset's, for a shortened budget. Each",
        "member's final weights are evaluated greedily over 100 fresh episodes; the training return is",
        "the mean of its last 100 episodes. The preset takes the learning rate with the highest mean",
        f"final greedy return; rates within {TIE:.0%} of it count as tied and the higher training return",
        "decides. A short budget favours the faster learner, which is why a lower rate that leads",
        "there is a real lead.",
        "",
        "## DQN",
        "",
        f"Learning rates {rates('dqn')}, for 1.5M env steps (Freeway 1M). The values the DQN presets",
        "share, and where they come from, are in Breakout's preset comment",
        "(src/dqnx/presets/Breakout-MinAtar.toml); each other preset gives its own sweep.",
        "",
        *table(records["dqn"], "dqn"),
        "",
        "## PQN",
        "",
        f"Learning rates {rates('pqn')} (5e-4 is the PQN paper's MinAtar value, which its authors did not",
        f"tune per game), for a {'fifth' if PQN_FRACTION == 5 else f'1/{PQN_FRACTION}'} of the preset's budget but at least"
        f" {PQN_MIN_STEPS / 1e6:g}M steps. The learning",
        "rate decays linearly to 0 over the sweep's run, as over the preset's; epsilon's decay is",
        "shortened in the same proportion. The values the PQN presets share are in",
        "src/dqnx/presets/pqn/Breakout-MinAtar.toml.",
        "",
        *table(records["pqn"], "pqn"),
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agent", choices=AGENTS, default="dqn", help="whose presets to tune (default: dqn)")
    parser.add_argument("--games", default=",".join(GAMES))
    parser.add_argument("--sweeps", type=Path, default=None,
                        help="where the sweep directories go, one per game, kept between invocations "
                             "(default: runs/minatar-tune, PQN's runs/minatar-tune/pqn)")
    parser.add_argument("--report-only", action="store_true", help="rebuild docs/minatar-tuning.md from the JSON files")
    args = parser.parse_args()
    sweeps = args.sweeps or ROOT / "runs" / "minatar-tune" / ("pqn" if args.agent == "pqn" else "")
    try:
        games = benchmark._names(args.games, list(GAMES), "game")
    except ValueError as error:
        parser.error(str(error))  # a usage error: one line, exit status 2
    records = {}
    for agent, path in RESULTS.items():  # checked before any sweep: a sweep takes minutes, a damaged file would lose them
        try:
            records[agent] = read_json(path, "the tuning file") if path.exists() else {}
        except UsageError as error:
            parser.error(f"{error} (git checkout {path.relative_to(ROOT)} restores the committed one)")
    mine = records[args.agent]
    if not args.report_only:
        for game in games:
            want = spec(game, args.agent)
            kept = mine.get(game)
            if kept and {k: kept.get(k) for k in want} == want:
                print(f"{game}: kept", flush=True)
                continue
            try:
                directory = sweeps / game
                mine[game] = evaluate(game, args.agent, want, directory, run_sweep(game, args.agent, want, directory))
            except UsageError as error:
                parser.error(str(error))
            atomic_write_json(RESULTS[args.agent], dict(sorted(mine.items())))
            print(f"{game}: learning rate {chosen(mine[game]):g} chosen", flush=True)
    atomic_write_bytes(DOC, markdown(records).encode())
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
