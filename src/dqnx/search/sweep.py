"""Hyperparameter sweeps: a grid of configurations times seeds, trained together.

    dqnx sweep CartPole-v1 --grid lr=1e-4,3e-4,1e-3 --grid gamma=0.9,0.95,0.99 --seeds 3

Every (configuration, seed) pair is a *member*. Configurations that differ only in
vmappable hyperparameters (config.VMAPPABLE: learning rate, gamma, the epsilon schedule,
tau, the target period, ...) form one *group*, trained as one compiled program: the
training loop takes those hyperparameters as arrays (drivers/jax_loop.Compiled), so the
group's members are one more vmapped axis, exactly like seeds. Configurations that differ
in anything else (network widths, batch size, double_dqn, ...) compile a program each.
Gymnasium environments run on the host loop, which takes no per-member hyperparameters:
there every configuration is its own group.

Each group is an ordinary run directory (its seed axis holds the members, in
members.json's order) that `dqnx eval` and `dqnx.load` read; the sweep directory adds

    sweep.json     the grid, seeds, base config, groups and timings
    results.csv    one row per (configuration, seed): the grid's values, final greedy
                   return of the best weights, best periodic return, steps_to_solve
    curves.csv     one row per (configuration, seed, evaluation): the periodic greedy return
    curves.png     the learning curves, one panel per configuration (a grid for two keys)
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dqnx.config import VMAPPABLE, RunConfig, coerce, config_class
from dqnx.errors import Interrupted, UsageError
from dqnx.runs.files import atomic_write_bytes, atomic_write_json

# Short names accepted in --grid (and tune's search space) for the fields people sweep most.
ALIASES = {"lr": "learning_rate", "eps_decay": "epsilon_decay_steps", "target_period": "target_update_period"}


def parse_grid(items: list[str], agent: str = "dqn") -> dict[str, list[Any]]:
    """`--grid key=v1,v2,...` items as {field: [values]}; list fields take brackets: hidden_sizes=[64,64],[256,256]."""
    cls = config_class(agent)
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = ALIASES.get(key.strip(), key.strip())
        if not sep or not key or not text.strip():
            raise UsageError(f"--grid expects key=v1,v2,..., got {item!r}; e.g. --grid lr=1e-4,3e-4,1e-3")
        if key in grid:
            raise UsageError(f"--grid names {key} twice; give all its values in one --grid {key}=v1,v2")
        if key in ("total_steps", "num_envs", "eval_every", "eval_episodes", "final_eval_episodes", "checkpoint_every"):
            raise UsageError(f"{key} is shared by a sweep's members (they run in lockstep); set it with --set {key}=... instead of --grid")
        values = [coerce(key, value, "--grid", cls) for value in _split_values(text)]
        if len(set(map(_hashable, values))) != len(values):
            raise UsageError(f"--grid {key} repeats a value: {text}")
        grid[key] = values
    return grid


def normalize_grid(grid: dict[str, Any], agent: str = "dqn") -> dict[str, list[Any]]:
    """A Python grid {field or alias: [values]} checked and coerced like --grid's."""
    if not isinstance(grid, dict) or not grid:
        raise UsageError("grid must be a non-empty dict of {hyperparameter: [values]}, e.g. {'learning_rate': [1e-4, 1e-3]}")
    items = []
    for key, values in grid.items():
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise UsageError(f"grid values of {key} must be a list, got {values!r}")
        text = ",".join("[" + ",".join(map(str, v)) + "]" if isinstance(v, (list, tuple)) else str(v) for v in values)
        items.append(f"{key}={text}")
    return parse_grid(items, agent)


def _split_values(text: str) -> list[str]:
    """Split on commas outside brackets: '[64,64],[256]' -> ['64,64', '256'] (brackets dropped)."""
    values, depth, current = [], 0, ""
    for char in text:
        if char == "[":
            depth += 1
            if depth == 1:
                continue
        elif char == "]":
            depth -= 1
            if depth == 0:
                continue
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    values.append(current.strip())
    if depth != 0 or any(v == "" for v in values):
        raise UsageError(f"--grid values {text!r} have an empty value or unbalanced brackets")
    return values


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def expand_grid(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The grid's configurations, the first key varying slowest."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


@dataclass(frozen=True)
class Group:
    """Configurations compiled into one program; members are config-major: (config, seed) for each."""

    config: RunConfig  # the program's static config (the first configuration's)
    config_indices: list[int]
    hypers: dict[str, np.ndarray] | None  # per member, or None: the group's one config for every member
    members: list[tuple[int, int]]  # (config index, seed)


def plan_groups(configs: list[RunConfig], seeds: list[int], vmapped: bool = True) -> list[Group]:
    """Group configurations by their static fields (all but VMAPPABLE); with vmapped=False
    (the Gymnasium host loop) every configuration is its own group."""
    from dqnx.drivers.jax_loop import hyper_arrays

    by_static: dict[Any, list[int]] = {}
    for index, config in enumerate(configs):
        key = _static_part(config) if vmapped else index
        by_static.setdefault(key, []).append(index)
    groups = []
    for indices in by_static.values():
        members = [(i, seed) for i in indices for seed in seeds]
        hypers = None
        if vmapped:
            per_config = {i: hyper_arrays(configs[i]) for i in indices}
            hypers = {name: np.stack([per_config[i][name] for i, _ in members]) for name in per_config[indices[0]]}
        groups.append(Group(config=configs[indices[0]], config_indices=indices, hypers=hypers, members=members))
    return groups


def _static_part(config: RunConfig) -> RunConfig:
    defaults = type(config)()
    return config.replace(**{name: getattr(defaults, name) for name in VMAPPABLE if hasattr(config, name)})


# on_eval(group index, env_steps, {member index: eval mean}) -> member indices to stop (a
# group ends when all its members are stopped; tune's pruning).
EvalCallback = Callable[[int, int, dict[int, float]], set[int]]


def train_group(env: Any, group: Group, group_index: int, out: Path, *, agent: str, env_id: str, env_params: dict[str, Any],
                backend: str, on_eval: EvalCallback | None = None, reporter: Any = None) -> dict[str, Any]:
    """Train one group as one run directory under `out`; returns its members' results."""
    from dqnx.drivers.trainer import train_run
    from dqnx.runs.run_dir import RunDir, RunSpec

    # An odd member count still fills every core or GPU: jax_loop.Compiled pads it.
    seeds, hypers = [seed for _, seed in group.members], group.hypers
    real = len(group.members)
    from dqnx.envs import resolved_settings
    from dqnx.envs.source import describe_spaces

    spec = RunSpec(env_id=env_id, agent=agent, env_params=env_params, seeds=seeds, config=group.config, backend=backend,
                   wrappers=getattr(env, "wrappers", ()), spaces=describe_spaces(env),
                   env_settings=resolved_settings(env))  # as `dqnx train` records them
    run = RunDir.create(out, spec)
    atomic_write_json(run.path / "members.json", {
        "members": [{"config_index": c, "seed": s} for c, s in group.members],
        "hyperparameters": {k: np.asarray(v).tolist() for k, v in (hypers or {}).items()},
    })
    curves: list[list[tuple[int, float]]] = [[] for _ in range(real)]
    stopped: set[int] = set()

    def record(env_steps: int, eval_means: np.ndarray) -> bool:
        live = {}
        for member in range(real):
            if member not in stopped and not np.isfinite(eval_means[member]):
                stopped.add(member)  # diverged: frozen by the trainer, pruned by a tuner
            if member not in stopped:
                curves[member].append((env_steps, float(eval_means[member])))
                live[member] = float(eval_means[member])
        if on_eval is not None:
            stopped.update(on_eval(group_index, env_steps, live))
        return len(stopped) == real

    started = time.perf_counter()
    try:
        summary = train_run(run, env, group.config, seeds, agent=agent, reporter=reporter, tensorboard=False,
                            hypers=hypers, on_eval=record)
    except Interrupted as e:
        # A group's checkpoint holds its members' states but its config.json only the first
        # configuration: `dqnx train --resume` would continue every member with that one.
        raise Interrupted(e.run_dir, e.env_steps, f"interrupted at env step {e.env_steps} of {run.path}; a sweep does not "
                          "resume: run it again (dqnx tune continues its study when run again)") from None
    return {
        "path": str(run.path),
        "wall_seconds": time.perf_counter() - started,
        "compile_seconds": summary["compile_seconds"],
        "members": [
            {"config_index": c, "seed": s, "curve": curves[m], "stopped": m in stopped, **_member_summary(summary["per_seed"][m])}
            for m, (c, s) in enumerate(group.members)
        ],
    }


def _member_summary(per_seed: dict[str, Any]) -> dict[str, Any]:
    keys = ("eval_mean_return", "eval_std_return", "best_periodic_eval_return", "best_step", "steps_to_solve", "diverged")
    return {k: per_seed[k] for k in keys}


@dataclass(frozen=True)
class SweepResult:
    path: Path
    grid: dict[str, list[Any]]
    configs: list[dict[str, Any]]  # the grid's overrides per configuration
    rows: list[dict[str, Any]]  # one per (configuration, seed), as in results.csv
    wall_seconds: float


def _wrapper_dicts(env: Any) -> list[dict[str, Any]]:
    """The env's wrappers as config.json records them (what a Ray worker rebuilds the env with)."""
    return [w.to_dict() for w in getattr(env, "wrappers", ())]


def run_sweep(env: Any, grid: dict[str, list[Any]], *, seeds: list[int], agent: str, backend: str,
              base: RunConfig, env_params: dict[str, Any], out: Path, ray_address: str | None = None,
              use_ray: bool = False, reporter: Callable[[int, Group, int], Any] | None = None) -> SweepResult:
    """Train every configuration of `grid` (over `base`) with every seed on `env` (built for
    `backend`; `env_params` as config.json records them); write the sweep directory `out`.

    reporter(group index, group, group count) gives each group's progress Reporter (or None).
    """
    chosen = backend
    overrides = expand_grid(grid)
    configs = [_checked(base.replace(**o), o) for o in overrides]
    from dqnx.envs import BACKENDS

    groups = plan_groups(configs, seeds, vmapped=BACKENDS[chosen].loop == "compiled")
    out = _create_sweep_dir(out)
    stored_params = env_params
    meta = {
        "env_id": env.env_id, "agent": agent, "backend": chosen, "env_params": stored_params,
        "wrappers": _wrapper_dicts(env), "seeds": seeds,
        "grid": {k: [_json(v) for v in vs] for k, vs in grid.items()}, "base_config": base.to_dict(),
        "groups": [{"path": f"groups/g{i}", "config_indices": g.config_indices, "members": len(g.members)}
                   for i, g in enumerate(groups)],
        "ray": use_ray, "status": "running",
    }
    atomic_write_json(out / "sweep.json", meta)
    started = time.perf_counter()
    if use_ray:
        from dqnx.search.distributed import train_groups_on_ray

        results = train_groups_on_ray(ray_address, env.env_id, stored_params, chosen, agent, groups, out / "groups",
                                      wrappers=_wrapper_dicts(env))
    else:
        results = []
        for i, group in enumerate(groups):
            results.append(train_group(env, group, i, out / "groups" / f"g{i}", agent=agent, env_id=env.env_id,
                                       env_params=stored_params, backend=chosen,
                                       reporter=reporter(i, group, len(groups)) if reporter else None))
    wall = time.perf_counter() - started
    rows, curve_rows = _result_rows(overrides, results, env.solve_threshold)
    keys = list(grid)
    _write_csv(out / "results.csv", ["config", *keys, "seed", "eval_mean_return", "eval_std_return",
                                     "best_periodic_eval_return", "steps_to_solve", "solved", "group", "diverged_at"], rows)
    _write_csv(out / "curves.csv", ["config", *keys, "seed", "env_steps", "eval_mean_return"], curve_rows)
    atomic_write_bytes(out / "curves.png", curves_png(grid, overrides, curve_rows, env.env_id, env.solve_threshold))
    meta.update(status="finished", wall_seconds=round(wall, 3),
                group_seconds=[round(r["wall_seconds"], 3) for r in results],
                compile_seconds=[r["compile_seconds"] for r in results])
    atomic_write_json(out / "sweep.json", meta)
    return SweepResult(path=out, grid=grid, configs=overrides, rows=rows, wall_seconds=wall)


def check_grid(grid: dict[str, list[Any]], base: RunConfig, agent: str, env: Any, num_seeds: int = 1) -> list[str]:
    """Raise UsageError, naming the grid point, on the first configuration that cannot train
    (values, settings that can never learn, a group whose memory cannot fit); return the
    settings warnings of the grid's points, each naming its point.

    Checking only the first point is not enough: a later group (another network width,
    another bins layout) would fail after the earlier groups had trained and written files.
    Learners are built once per static configuration: the vmappable fields do not change
    what make_learner accepts, and validate() has already checked their values.
    """
    import jax

    from dqnx.agents import make_learner
    from dqnx.drivers import preflight

    notes = []
    configs = []
    for override in expand_grid(grid):  # values first: a bad value is named before a point that cannot learn
        configs.append(_checked(base.replace(**override), override))
    vmapped = getattr(env, "backend", "jax") == "jax"
    overrides = expand_grid(grid)
    groups = plan_groups(configs, [0] * num_seeds, vmapped)
    for group in groups:  # then what the learner accepts (a later group's refusal included)
        try:
            learner = make_learner(agent, group.config, env)
            jax.eval_shape(learner.init, jax.random.PRNGKey(0))  # and networks that cannot take the observations
        except UsageError as e:
            raise UsageError(f"grid point {overrides[group.config_indices[0]]}: {e}") from None
    for config, override in zip(configs, overrides):  # then settings that could never learn
        notes.extend(f"grid point {override}: {note}" for note in _learnable(config, override))
    for group in groups:  # one group's members are one program: their memory adds up (groups run one after another)
        try:
            budget = preflight.memory_budget([group.config], env, agent, members_per_config=len(group.members))
            preflight.check_memory(budget, getattr(group.config, "buffer_size", None))
        except UsageError as e:
            raise UsageError(f"grid point {overrides[group.config_indices[0]]}: {e}") from None
    return notes


def _checked(config: RunConfig, override: dict[str, Any]) -> RunConfig:
    try:
        return config.validate()
    except UsageError as e:
        raise UsageError(f"grid point {override}: {e}") from None


def _learnable(config: RunConfig, override: dict[str, Any]) -> list[str]:
    from dqnx.drivers import preflight

    try:
        return preflight.check_settings(config)
    except UsageError as e:
        raise UsageError(f"grid point {override}: {e}") from None


def _create_sweep_dir(out: Path) -> Path:
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} already exists and is not empty; pick another --out")
    try:
        (out / "groups").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create sweep directory {out} ({e.strerror}); pick another --out") from None
    return out


def _json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _result_rows(overrides: list[dict[str, Any]], results: list[dict[str, Any]], threshold: float | None):
    by_member = {}
    for g, result in enumerate(results):
        for member in result["members"]:
            by_member[(member["config_index"], member["seed"])] = (g, member)
    rows, curve_rows = [], []
    for (config_index, seed), (g, member) in sorted(by_member.items()):
        values = {k: _cell(v) for k, v in overrides[config_index].items()}
        rows.append({"config": config_index, **values, "seed": seed, "eval_mean_return": member["eval_mean_return"],
                     "eval_std_return": member["eval_std_return"],
                     "best_periodic_eval_return": member["best_periodic_eval_return"],
                     "steps_to_solve": member["steps_to_solve"],
                     "solved": None if threshold is None else member["eval_mean_return"] >= threshold, "group": g,
                     # the env step at which the member diverged (and was frozen), else empty
                     "diverged_at": (member.get("diverged") or {}).get("env_step")})
        for step, value in member["curve"]:
            curve_rows.append({"config": config_index, **values, "seed": seed, "env_steps": step, "eval_mean_return": value})
    return rows, curve_rows


def _cell(value: Any) -> Any:
    return "[" + ",".join(map(str, value)) + "]" if isinstance(value, (list, tuple)) else value


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if row.get(k) is None else row.get(k) for k in columns} for row in rows)
    atomic_write_bytes(path, text.getvalue().encode())


def curves_png(grid: dict[str, list[Any]], overrides: list[dict[str, Any]], curve_rows: list[dict[str, Any]],
               env_id: str, threshold: float | None) -> bytes:
    """One panel per configuration: each seed's periodic greedy return (thin) and their mean (thick).
    Two grid keys make a rows x columns table (first key down, second across); otherwise one row per
    configuration in a near-square layout."""
    from dqnx.viz.plots import figure_png, pyplot

    plt = pyplot()
    keys = list(grid)
    if len(keys) == 2:
        rows_n, cols_n = len(grid[keys[0]]), len(grid[keys[1]])
    else:
        cols_n = math.ceil(math.sqrt(len(overrides)))
        rows_n = math.ceil(len(overrides) / cols_n)
    fig, axes = plt.subplots(rows_n, cols_n, figsize=(3.2 * cols_n, 2.4 * rows_n), sharex=True, sharey=True, squeeze=False)
    for index, override in enumerate(overrides):
        ax = axes.flat[index]
        mine = [r for r in curve_rows if r["config"] == index]
        seeds = sorted({r["seed"] for r in mine})
        curves = []
        for seed in seeds:
            points = sorted((r["env_steps"], r["eval_mean_return"]) for r in mine if r["seed"] == seed)
            steps, values = zip(*points) if points else ((), ())
            ax.plot(steps, values, color="tab:blue", alpha=0.35, linewidth=0.8)
            curves.append(dict(points))
        common = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        if common:
            ax.plot(common, [np.mean([c[s] for c in curves]) for s in common], color="tab:blue", linewidth=2)
        if threshold is not None:
            ax.axhline(threshold, color="gray", linestyle=":", linewidth=1)
        ax.set_title(", ".join(f"{k}={_cell(v)}" for k, v in override.items()), fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(overrides):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("env steps", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("greedy return", fontsize=8)
    fig.suptitle(f"{env_id}: periodic greedy return per configuration (thin: seeds, thick: mean)", fontsize=10)
    fig.tight_layout()
    return figure_png(fig)
