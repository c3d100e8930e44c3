"""The three views that tell whether a DQN is learning, as PNG files.

    returns.png      return vs env steps: greedy evaluation (solid) and training
                     episodes (dashed), mean over seeds with the min-max band; several
                     runs on one chart to compare them
    loss.png         TD loss vs gradient updates (log scale), mean over seeds, min-max band
    q_vs_return.png  predicted Q(s_t, a_t) against the observed discounted return G_t on
                     fresh greedy episodes, with the y = x line: points above it are
                     overestimation, points below it underestimation

matplotlib draws with the Agg backend (no display needed).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dqnx.errors import UsageError
from dqnx.runs.files import atomic_write_bytes, read_json
from dqnx.runs.run_dir import METRICS, SUMMARY, RunDir
from dqnx.viz import check_count, check_seed

PLOT_FILES = ("returns.png", "loss.png", "q_vs_return.png")
DPI = 100


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed): draw, then `figure_png`."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


@dataclass
class RunData:
    """What the plots need from one run directory."""

    path: Path
    label: str
    env_id: str
    agent: str
    gamma: float
    solve_threshold: float | None
    metrics: dict[int, dict[str, np.ndarray]]  # seed -> column -> values, in env-step order
    summary: dict[str, Any] | None = None
    episodes: dict[int, list[Any]] = field(default_factory=dict)  # seed -> rollout.Episode list, for the Q plot


def _number(text: str) -> float:
    try:
        return float(text) if text != "" else math.nan
    except ValueError:
        return math.nan


def read_run(path: str | Path, label: str | None = None) -> RunData:
    run = RunDir.open(path)
    spec = run.read_config()
    per_seed: dict[int, dict[str, list[float]]] = {}
    metrics_path = run.path / METRICS
    if not metrics_path.is_file():
        raise UsageError(f"{metrics_path} is missing; is {run.path} a dqnx run directory?")
    with open(metrics_path, newline="") as f:
        for row in csv.DictReader(f):
            if None in row.values():  # a torn last row of a killed run
                continue
            try:
                seed = int(row["seed"])
            except (KeyError, ValueError):
                continue
            columns = per_seed.setdefault(seed, {})
            for name, value in row.items():
                columns.setdefault(name, []).append(_number(value))
    metrics = {}
    for seed, columns in per_seed.items():
        order = np.argsort(columns["env_steps"], kind="stable")
        metrics[seed] = {name: np.asarray(values)[order] for name, values in columns.items()}
    summary = read_json(run.path / SUMMARY, "summary") if (run.path / SUMMARY).is_file() else None
    from dqnx.envs import SOLVE_THRESHOLDS

    return RunData(
        path=run.path,
        label=label or run.path.resolve().name,
        env_id=spec.env_id,
        agent=spec.agent,
        gamma=float(spec.config.gamma),
        solve_threshold=SOLVE_THRESHOLDS.get(spec.env_id),
        metrics=metrics,
        summary=summary,
    )


def _over_seeds(run: RunData, x_column: str, y_column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x, and the mean, min and max of y over seeds at each x (NaN entries left out)."""
    table: dict[float, list[float]] = {}
    for columns in run.metrics.values():
        for x, y in zip(columns[x_column], columns[y_column]):
            if math.isfinite(x) and math.isfinite(y):
                table.setdefault(x, []).append(y)
    xs = np.array(sorted(table))
    ys = [np.asarray(table[x]) for x in xs]
    return (xs, np.array([v.mean() for v in ys]), np.array([v.min() for v in ys]), np.array([v.max() for v in ys]))


def figure_png(fig) -> bytes:
    """A finished matplotlib figure as PNG bytes (closed afterwards, so figures don't pile up)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    pyplot().close(fig)
    return buffer.getvalue()


def _seeds_note(run: RunData) -> str:
    n = len(run.metrics)
    return f"{n} seed" if n == 1 else f"{n} seeds"


def returns_png(runs: list[RunData]) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, run in enumerate(runs):
        color = f"C{i}"
        x, mean, low, high = _over_seeds(run, "env_steps", "eval_mean_return")
        if x.size:
            ax.plot(x, mean, color=color, lw=2, label=f"{run.label}: greedy eval ({_seeds_note(run)})")
            if len(run.metrics) > 1:
                ax.fill_between(x, low, high, color=color, alpha=0.2, lw=0)
        x, mean, low, high = _over_seeds(run, "env_steps", "train_return")
        if x.size:
            ax.plot(x, mean, color=color, lw=1, ls="--", alpha=0.8, label=f"{run.label}: training episodes")
    thresholds = {run.solve_threshold for run in runs if run.solve_threshold is not None}
    for threshold in thresholds:
        ax.axhline(threshold, color="grey", lw=1, ls=":", label=f"solved at {threshold:g}")
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return")
    ax.set_title("Return vs env steps (mean over seeds, band: min-max)" if any(len(r.metrics) > 1 for r in runs)
                 else "Return vs env steps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return figure_png(fig)


def loss_png(runs: list[RunData]) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    drawn = False
    all_positive = True
    for i, run in enumerate(runs):
        x, mean, low, high = _over_seeds(run, "updates", "loss")
        keep = x > 0
        x, mean, low, high = x[keep], mean[keep], low[keep], high[keep]
        if not x.size:
            continue
        drawn = True
        all_positive &= bool((low > 0).all())
        ax.plot(x, mean, color=f"C{i}", lw=1.5, label=f"{run.label} ({_seeds_note(run)})")
        if len(run.metrics) > 1:
            ax.fill_between(x, low, high, color=f"C{i}", alpha=0.2, lw=0)
    if drawn and all_positive:  # losses span decades; a log axis shows early and late alike
        ax.set_yscale("log")
    if not drawn:
        ax.text(0.5, 0.5, "no loss recorded yet (no gradient update)", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("gradient updates")
    ax.set_ylabel("loss (mean over each chunk)")
    ax.set_title("Loss vs updates")
    ax.grid(alpha=0.3, which="both")
    if drawn:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_png(fig)


def _episodes(n: int) -> str:
    return f"{n} episode" if n == 1 else f"{n} episodes"


def q_vs_return_png(runs: list[RunData]) -> bytes:
    """Needs each run's `episodes` filled (see add_episodes). One colour per seed for a
    single run (each seed has its own Q-function), one per run when comparing runs."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 5.2))
    groups = []  # (label, colour, gamma, episodes)
    for i, run in enumerate(runs):
        if len(runs) == 1:
            groups += [(f"seed {seed}", f"C{j}", run.gamma, eps) for j, (seed, eps) in enumerate(run.episodes.items())]
        else:
            groups.append((run.label, f"C{i}", run.gamma, [ep for eps in run.episodes.values() for ep in eps]))
    lows, highs = [], []
    for label, color, gamma, episodes in groups:
        if not episodes:
            continue
        q = np.concatenate([ep.q_taken for ep in episodes])
        g = np.concatenate([ep.returns_to_go(gamma) for ep in episodes])
        # Steps whose return-to-go a time limit cut short: G_t misses the rewards after the cut,
        # while Q (bootstrapping through time limits) rightly counts them, so these sit below y = x.
        cut = np.concatenate([np.full(ep.length, not ep.terminated) for ep in episodes])
        ended = sum(ep.terminated for ep in episodes)
        if (~cut).any():
            ax.scatter(g[~cut], q[~cut], s=6, alpha=0.5, color=color, lw=0,
                       label=f"{label}: {_episodes(ended)} that terminated")
        if cut.any():
            ax.scatter(g[cut], q[cut], s=8, alpha=0.4, color=color, marker="x", lw=0.7,
                       label=f"{label}: {_episodes(len(episodes) - ended)} cut by the time limit")
        lows += [q.min(), g.min()]
        highs += [q.max(), g.max()]
    if lows:
        low, high = min(lows), max(highs)
        pad = 0.05 * (high - low or 1.0)
        ax.plot([low - pad, high + pad], [low - pad, high + pad], color="black", lw=1, label="y = x")
        ax.set_xlim(low - pad, high + pad)
        ax.set_ylim(low - pad, high + pad)
        ax.legend(fontsize=7, loc="best")
    gammas = sorted({run.gamma for run in runs})
    ax.set_xlabel(f"observed discounted return G_t (gamma {', '.join(f'{g:g}' for g in gammas)})")
    ax.set_ylabel("predicted Q(s_t, a_t)")
    ax.set_title("Predicted Q vs observed return (fresh greedy episodes)", fontsize=11)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_png(fig)


def add_episodes(run: RunData, episodes: int, seed: int = 0, trust_env_code: bool = False) -> None:
    """Roll out `episodes` fresh greedy episodes per trained seed, under the best weights:
    inside JAX for JAX envs, stepped on the host for Gymnasium ones."""
    from dqnx import trained
    from dqnx.envs import backend_of
    from dqnx.viz.rollout import greedy_episodes, gymnasium_greedy_episodes

    agent = trained.load(run.path, trust_env_code=trust_env_code)
    if backend_of(agent.env).loop == "host":
        env = agent.env.make(train=False)
        try:
            run.episodes = {
                s: gymnasium_greedy_episodes(env, lambda obs, i=i: agent.q_values(obs, seed_index=i), episodes, seed,
                                             masked=agent.action_masks)
                for i, s in enumerate(agent.seeds)
            }
        finally:
            env.close()
        return
    run.episodes = {s: greedy_episodes(agent, episodes, seed=seed, seed_index=i) for i, s in enumerate(agent.seeds)}


def check_out_dir(out: Path) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; pass a directory for the plots")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create {out} ({e.strerror}); pick another --out") from None
    return out


def make_plots(run_dirs: list[str | Path], out: str | Path | None = None, episodes: int = 5, seed: int = 0,
               trust_env_code: bool = False) -> list[Path]:
    """Write returns.png, loss.png and q_vs_return.png for one or several runs; returns their paths.

    out: where to write them (default: RUN_DIR/plots for one run; required for several).
    episodes: fresh greedy episodes per trained seed for the Q-vs-return plot.
    trust_env_code: as for dqnx.load (the episodes play each run's environment).
    """
    if not run_dirs:
        raise UsageError("name at least one run directory, e.g. dqnx plot runs/CartPole-v1-...")
    check_count("episodes", episodes)
    check_seed(seed)
    runs = [read_run(p) for p in run_dirs]
    from dqnx.runs.trust import require_run_trust

    for run in runs:  # before anything is written
        require_run_trust(run.path, trust_env_code)
    labels = [r.label for r in runs]
    if len(set(labels)) < len(labels):
        for r in runs:
            r.label = str(r.path)
    if out is None:
        if len(runs) > 1:
            raise UsageError("several runs go on one chart: say where to write it with --out DIR")
        out = runs[0].path / "plots"
    out = check_out_dir(Path(out))
    for run in runs:
        add_episodes(run, episodes, seed, trust_env_code)
    images = {"returns.png": returns_png(runs), "loss.png": loss_png(runs), "q_vs_return.png": q_vs_return_png(runs)}
    paths = []
    for name, data in images.items():
        atomic_write_bytes(out / name, data)
        paths.append(out / name)
    return paths
