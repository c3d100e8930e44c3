"""The DQN family side by side: DQN, Double, Dueling, PER, n-step, Noisy, C51, Rainbow and
the three Q-network shapes, on CartPole-v1, Acrobot-v1 and MountainCar-v0.

Each variant is the env's DQN preset (src/dqnx/presets/ENV.toml, with its total_steps)
as plain DQN plus one switch (Rainbow: `--agent rainbow`, every switch, presets/rainbow/);
the last row is the preset itself, as `dqnx train ENV` runs it. Each
(env, variant) trains `--seeds` seeds side by side in one compiled program
(`dqnx.train(env, seeds=N, config=...)`), then reads from the run's summary, per seed:
the final evaluation (100 fresh greedy episodes of that seed's best periodic weights)
and steps_to_solve (the first periodic evaluation at or above the env's threshold).

Results go to one JSON file per env (docs/variants-ENV.json) as each case finishes (a
rerun skips finished cases whose resolved config is unchanged; envs may run in separate
processes), and the markdown
table and plot are rebuilt from all of them:

    python benchmarks/variants.py [--envs CartPole-v1,...] [--variants dqn,per,...] [--seeds 5]
    python benchmarks/variants.py --report-only     # table and plot from the JSON alone
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from seed_stats import interquartile_mean  # benchmarks/seed_stats.py, beside this script

ENVS = ["CartPole-v1", "Acrobot-v1", "MountainCar-v0"]

# C51's support must cover the env's discounted returns (see presets/rainbow/ENV.toml).
SUPPORT = {"CartPole-v1": (0.0, 100.0), "Acrobot-v1": (-100.0, 0.0), "MountainCar-v0": (-50.0, 0.0)}

# variant -> (agent, overrides of the env's preset). The env presets differ in double_dqn
# (CartPole's is on), so plain DQN turns it off explicitly.
VARIANTS: dict[str, tuple[str, dict]] = {
    "DQN": ("dqn", {"double_dqn": False}),
    "Double": ("dqn", {"double_dqn": True}),
    "Dueling": ("dqn", {"double_dqn": False, "dueling": True}),
    "PER": ("dqn", {"double_dqn": False, "prioritized": True}),
    "n-step (3)": ("dqn", {"double_dqn": False, "n_step": 3}),
    "Noisy": ("dqn", {"double_dqn": False, "noisy": True}),
    "C51": ("dqn", {"double_dqn": False, "distributional": True}),
    "Rainbow": ("rainbow", {}),
    "shape: state_action": ("dqn", {"double_dqn": False, "q_head": "state_action"}),
    "shape: per_action_heads": ("dqn", {"double_dqn": False, "q_head": "per_action_heads"}),
    # Not in the default set: run them with --variants monte_carlo,boltzmann,c51+heads,n-step+c51
    "Monte-Carlo targets": ("dqn", {"double_dqn": False, "target": "monte_carlo"}),
    "Boltzmann": ("dqn", {"double_dqn": False, "exploration": "boltzmann", "temperature": 1.0}),
    # Pairs of the best single switches, candidates for a preset.
    "C51 + per_action_heads": ("dqn", {"double_dqn": False, "distributional": True, "q_head": "per_action_heads"}),
    "n-step (3) + C51": ("dqn", {"double_dqn": False, "n_step": 3, "distributional": True}),
    # `dqnx train ENV` as a user runs it: the preset the rows above chose, on today's code.
    "Preset (as shipped)": ("dqn", {}),
}
KEYS = {name.split(":")[-1].strip().split(" ")[0].lower().replace("monte-carlo", "monte_carlo"): name
        for name in VARIANTS if "+" not in name}  # dqn, double, ..., per_action_heads, preset, monte_carlo, boltzmann
KEYS.update({"c51+heads": "C51 + per_action_heads", "n-step+c51": "n-step (3) + C51"})
OPTIONAL = ("monte_carlo", "boltzmann", "c51+heads", "n-step+c51")
DEFAULT_KEYS = [k for k in KEYS if k not in OPTIONAL]


# The DQN variants start from the env preset with one output per action, 1-step targets and
# one expected value per action, whatever the preset chose after this table (Acrobot-v1 C51,
# MountainCar-v0 n_step 3), so each row stays "plain DQN plus one switch".
DQN_BASE = {"q_head": "per_action_output", "n_step": 1, "distributional": False}
PRESET = "Preset (as shipped)"


def case_config(env_id: str, variant: str) -> tuple[str, dict, dict]:
    """(agent, overrides of the env preset, the whole resolved config as JSON values)."""
    from dqnx.config import build_config

    agent, overrides = VARIANTS[variant]
    overrides = {**(DQN_BASE if agent == "dqn" and variant != PRESET else {}), **overrides}
    if overrides.get("distributional"):
        overrides["v_min"], overrides["v_max"] = SUPPORT[env_id]
    resolved = json.loads(json.dumps(build_config(env_id, overrides=overrides, agent=agent).to_dict()))
    return agent, overrides, resolved


def run_case(env_id: str, variant: str, seeds: int, workdir: Path, case: tuple[str, dict, dict]) -> dict:
    """Train `case` (case_config's result for this env and variant) and return its row."""
    import dqnx

    agent, overrides, resolved = case
    start = time.perf_counter()
    run = dqnx.train(env_id, agent=agent, seeds=seeds, config=overrides, tensorboard=False,
                     out=workdir / f"{env_id}-{variant.replace(' ', '_').replace(':', '')}")
    per_seed = run.summary["per_seed"]
    finals = [s["eval_mean_return"] for s in per_seed]
    return {
        "env_id": env_id,
        "variant": variant,
        "agent": agent,
        "overrides": overrides,
        "config": resolved,  # a rerun repeats the case when its preset has changed since
        "total_steps": run.summary["total_steps"],
        "seeds": len(per_seed),
        "finals": finals,
        "steps_to_solve": [s["steps_to_solve"] for s in per_seed],
        "solve_threshold": run.summary.get("solve_threshold"),
        "wall_seconds": time.perf_counter() - start,
        "compile_seconds": run.summary.get("compile_seconds"),
    }


def _fmt_steps(values: list) -> str:
    solved = [v for v in values if v is not None]
    if not solved:
        return f"- (0/{len(values)})"
    return f"{statistics.median(solved):,.0f} ({len(solved)}/{len(values)})"


def markdown(results: list[dict], note: str) -> str:
    lines = [
        "# The DQN family on classic control",
        "",
        "Generated by `python benchmarks/variants.py`; every number below comes from the JSON",
        "files next to this page (`docs/variants-ENV.json`), written as each case finished.",
        "",
        note,
        "",
        "Final return: per seed, the mean of 100 fresh greedy episodes with that seed's best",
        "periodic weights; then mean, std and interquartile mean (IQM) over seeds.",
        "steps_to_solve: median over the seeds that solved (first periodic evaluation at or",
        "above the threshold) and how many seeds solved. Wall time is on a shared 2-core CPU",
        "(noisy, and includes compilation).",
        "",
    ]
    for env_id in ENVS:
        rows = [r for r in results if r["env_id"] == env_id]
        if not rows:
            lines += [f"## {env_id}", "", "Not run (see the note above).", ""]
            continue
        threshold = rows[0]["solve_threshold"]
        lines += [f"## {env_id} (threshold {threshold}, {rows[0]['total_steps']:,} env steps per seed)", "",
                  "| variant | seeds | mean | std | IQM | steps_to_solve (solved) | wall s |",
                  "|---|---|---|---|---|---|---|"]
        for variant in VARIANTS:
            r = next((r for r in rows if r["variant"] == variant), None)
            if r is None and variant in {KEYS[k] for k in OPTIONAL}:
                continue  # optional rows
            if r is None:
                lines.append(f"| {variant} | not run | | | | | |")
                continue
            f = r["finals"]
            lines.append(f"| {variant} | {r['seeds']} | {np.mean(f):.1f} | {np.std(f):.1f} | {interquartile_mean(f):.1f} "
                         f"| {_fmt_steps(r['steps_to_solve'])} | {r['wall_seconds']:.0f} |")
        lines.append("")
    lines += ["![final returns per variant](img/variants.png)", ""]
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = [e for e in ENVS if any(r["env_id"] == e for r in results)]
    fig, axes = plt.subplots(1, max(len(envs), 1), figsize=(5.5 * max(len(envs), 1), 4.5), squeeze=False)
    for ax, env_id in zip(axes[0], envs):
        names = [v for v in VARIANTS if any(r["env_id"] == env_id and r["variant"] == v for r in results)]
        for i, name in enumerate(names):
            r = next(r for r in results if r["env_id"] == env_id and r["variant"] == name)
            ax.scatter(np.full(len(r["finals"]), i), r["finals"], s=14, alpha=0.6, color="tab:blue")
            ax.plot([i - 0.3, i + 0.3], [interquartile_mean(r["finals"])] * 2, color="tab:red")
        ax.set_xticks(range(len(names)), [n.replace("shape: ", "") for n in names], rotation=60, ha="right", fontsize=8)
        threshold = next(r["solve_threshold"] for r in results if r["env_id"] == env_id)
        if threshold is not None:
            ax.axhline(threshold, color="gray", linestyle="--", linewidth=0.8)
        ax.set_title(env_id)
        ax.set_ylabel("final greedy return (dots: seeds, red: IQM)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default=",".join(ENVS))
    parser.add_argument("--variants", default=",".join(DEFAULT_KEYS), help=f"comma-separated: {', '.join(KEYS)}")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--results", default="docs", help="folder of the per-env JSON files")
    parser.add_argument("--out", default="docs/variants.md")
    parser.add_argument("--note", default="All cases with the presets' full budgets and 5 seeds.")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()

    folder = Path(args.results)
    if not args.report_only:
        unknown = [k for k in args.variants.split(",") if k not in KEYS]
        if unknown:
            print(f"unknown variants {unknown}; choose from {', '.join(KEYS)}", file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory(prefix="dqnx-variants-") as tmp:
            for env_id in args.envs.split(","):
                path = folder / f"variants-{env_id}.json"
                results = json.loads(path.read_text()) if path.exists() else []
                for key in args.variants.split(","):
                    variant = KEYS[key]
                    done = [r for r in results if r["variant"] == variant and r["seeds"] == args.seeds]
                    case = case_config(env_id, variant)
                    if done and done[0].get("config", case[2]) == case[2]:  # rows without a config count as done
                        continue
                    result = run_case(env_id, variant, args.seeds, Path(tmp), case)
                    results = [r for r in results if r["variant"] != variant] + [result]
                    folder.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps(results, indent=1))
                    f = result["finals"]
                    print(f"{env_id:15s} {variant:25s} mean {np.mean(f):8.1f} iqm {interquartile_mean(f):8.1f} "
                          f"solve {_fmt_steps(result['steps_to_solve'])}  {result['wall_seconds']:.0f}s", flush=True)
    results = [r for env_id in ENVS if (folder / f"variants-{env_id}.json").exists()
               for r in json.loads((folder / f"variants-{env_id}.json").read_text())]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(markdown(results, args.note))
    plot(results, Path(args.out).parent / "img" / "variants.png")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
