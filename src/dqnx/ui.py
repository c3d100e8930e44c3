"""Terminal output: the live progress bar and the end-of-run table (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dqnx.drivers.trainer import Progress as RunProgress
from dqnx.drivers.trainer import Reporter

console = Console(stderr=True)


def _fmt(value: Any, spec: str = ".1f") -> str:
    return "-" if value is None or value != value else format(value, spec)


def training_reporter(spec: Any, path: Any, resumed: bool, budget: Any = None) -> "RichReporter":
    """The progress of `dqnx train`: a header naming the agent, env, seeds, backend and run
    directory (and the memory budget), then the live bar."""
    from dqnx.envs import BACKENDS

    seeds = spec.seeds
    label = f"{spec.env_id} seed {seeds[0]}" if len(seeds) == 1 else f"{spec.env_id} seeds {seeds[0]}-{seeds[-1]}"
    verb = "resuming" if resumed else "training"
    header = f"dqnx: {verb} {spec.agent} on {label} (backend: {BACKENDS[spec.backend].description}) -> {path}"
    if budget is not None:
        header += f"\n      {budget.describe()}"
    return RichReporter(label, header=header)


class RichReporter(Reporter):
    """Env steps, steps/s, recent training return, greedy eval return and epsilon, live."""

    def __init__(self, description: str, header: str = ""):
        self.description = description
        self.header = header
        self._bar: Progress | None = None
        self._task: Any = None

    def start(self, total_steps: int, done_steps: int) -> None:
        if self.header:
            console.print(self.header, markup=False, highlight=False)
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TextColumn("{task.fields[speed]}/s ret {task.fields[ret]} eval {task.fields[eval]} eps {task.fields[eps]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(self.description, total=total_steps, completed=done_steps,
                                        speed="-", ret="-", eval="-", eps="-")

    def update(self, progress: RunProgress) -> None:
        last = progress.last_chunk
        assert self._bar is not None
        self._bar.update(
            self._task,
            completed=progress.env_steps,
            speed=_fmt(last.get("steps_per_second"), ".0f"),
            ret=_fmt(last.get("train_return")),
            eval=_fmt(last.get("eval_mean_return")),
            eps=_fmt(last.get("epsilon"), ".3f"),
        )

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def print_summary(summary: dict[str, Any], run_dir: str) -> None:
    table = Table(title=f"{summary['env_id']}: {run_dir}", show_header=True)
    for column in ("seed", "steps to solve", "s to solve", "best eval (step)", "final eval (mean ± std)", "solved"):
        table.add_column(column, justify="right")
    for s in summary["per_seed"]:
        table.add_row(
            str(s["seed"]),
            _fmt(s["steps_to_solve"], "d"),
            _fmt(s["seconds_to_solve"]),
            f"{_fmt(s['best_periodic_eval_return'])} ({_fmt(s['best_step'], 'd')})",
            f"{s['eval_mean_return']:.1f} ± {s['eval_std_return']:.1f}",
            {True: "yes", False: "no", None: "-"}[s["solved"]],
        )
    console.print(table)
    console.print(
        f"{summary['total_steps']} env steps in {summary['wall_seconds']:.1f} s "
        f"(compile {summary['compile_seconds']:.1f} s); final greedy evaluation of the best weights over "
        f"{summary['eval_episodes']} fresh episodes: {summary['eval_mean_return']:.1f} ± {summary['eval_std_return']:.1f}"
    )


def print_sweep(result: Any) -> None:
    """Per configuration: mean and min of the final greedy return over seeds, seeds solved."""
    from collections import defaultdict

    keys = list(result.grid)
    by_config: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in result.rows:
        by_config[row["config"]].append(row)
    table = Table(title=f"sweep: {len(result.configs)} configs, {result.wall_seconds:.0f} s", title_justify="left")
    for key in keys:
        table.add_column(key)
    for column in ("final return (mean)", "min", "solved", "steps to solve (median)"):
        table.add_column(column, justify="right")
    for index, override in enumerate(result.configs):
        rows = by_config[index]
        finals = [r["eval_mean_return"] for r in rows]
        solved = [r["solved"] for r in rows if r["solved"] is not None]
        steps = sorted(r["steps_to_solve"] for r in rows if r["steps_to_solve"] is not None)
        table.add_row(*(str(override[k]) for k in keys), _fmt(sum(finals) / len(finals)), _fmt(min(finals)),
                      f"{sum(solved)}/{len(rows)}" if solved or rows[0]["solved"] is not None else "-",
                      str(steps[len(steps) // 2]) if steps else "-")
    console.print(table)


def print_tune(result: Any) -> None:
    """The study's best complete trials: objective and the values they set."""
    names = sorted({k for t in result.top for k in t["params"]})
    table = Table(title=f"study {result.study_name}: {result.trials_finished} finished trials "
                        f"({result.trials_run} run now, {result.wall_seconds:.0f} s)", title_justify="left")
    table.add_column("trial", justify="right")
    table.add_column("objective", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    for trial in result.top:
        table.add_row(str(trial["number"]), _fmt(trial["value"]),
                      *(_fmt(v, ".4g") if isinstance(v, float) else str(v) for v in (trial["params"].get(n, "-") for n in names)))
    console.print(table)
    if result.best_config_path is not None:
        console.print(f"best trial's preset (train it with --config): {result.best_config_path}",
                      markup=False, highlight=False, soft_wrap=True)
