"""`dqnx show`: print what an agent learned, as a table when it is small."""

from __future__ import annotations

import jax
import numpy as np
from rich.console import Console
from rich.table import Table

from dqnx.agents import agent_kind
from dqnx.errors import UsageError


def show_agent(agent, seed_index: int = 0, max_rows: int = 40) -> None:
    console = Console()
    if not 0 <= seed_index < len(agent.seeds):
        raise UsageError(f"--seed-index must lie in [0, {len(agent.seeds) - 1}] for this {len(agent.seeds)}-seed run")
    params = jax.tree.map(lambda x: np.asarray(x[seed_index]), agent.params)
    info = f"{agent.algorithm} on {agent.env_id}, seed {agent.seeds[seed_index]}, {agent.weights} weights"
    if agent.action_masks:
        info += ", trained with action masks"
    if agent_kind(agent.algorithm).tabular:
        _show_table(console, params["q"], agent.config.initial_q, info, max_rows)
        return
    table = Table(title=f"Parameters: {info}")
    for column in ("name", "shape", "mean", "std", "min", "max"):
        table.add_column(column)
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    for path, leaf in leaves:
        table.add_row(jax.tree_util.keystr(path), str(leaf.shape), *(f"{f(leaf):.4g}" for f in (np.mean, np.std, np.min, np.max)))
    console.print(table)
    console.print(f"{sum(leaf.size for _, leaf in leaves)} parameters")


def _show_table(console: Console, q: np.ndarray, initial_q: float, info: str, max_rows: int) -> None:
    rows, actions = q.shape
    greedy = q.argmax(axis=1)
    if rows <= max_rows:
        table = Table(title=f"Q-table: {info}")
        table.add_column("state", justify="right")
        for a in range(actions):
            table.add_column(f"Q(s, {a})", justify="right")
        table.add_column("greedy", justify="right")
        for s in range(rows):
            cells = [f"[bold]{v:.3f}[/bold]" if a == greedy[s] else f"{v:.3f}" for a, v in enumerate(q[s])]
            table.add_row(str(s), *cells, str(greedy[s]))
        console.print(table)
        return
    initial = np.all(q == np.float32(initial_q), axis=1)  # rows no update has touched
    visited = int((~initial).sum())
    console.print(f"Q-table: {info}")
    console.print(f"  {rows} states x {actions} actions; {visited} states ever updated ({visited / rows:.1%})")
    console.print(f"  values: min {q.min():.4g}, mean {q.mean():.4g}, max {q.max():.4g}")
    counts = np.bincount(greedy[~initial], minlength=actions) if visited else np.zeros(actions, int)
    console.print("  greedy action among updated states: " + ", ".join(f"{a}: {c}" for a, c in enumerate(counts)))
    console.print(f"  (the whole table has more than {max_rows} rows; raise --max-rows to print it)")
