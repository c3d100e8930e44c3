"""Python entry points: train, sweep, tune; load and evaluate (from dqnx.trained).

    import dqnx
    run = dqnx.train("CartPole-v1", seed=0)          # trains, writes runs/CartPole-v1-<time>/
    agent = dqnx.load(run.path)                       # best weights by default
    dqnx.evaluate(agent, episodes=100)                # {'mean_return': ..., 'std_return': ..., ...}
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dqnx import jax_setup

jax_setup.configure()  # before JAX starts its backend: one host device per core, compile cache

import jax  # noqa: E402

from dqnx.agents import agent_kind, make_learner  # noqa: E402
from dqnx.config import RunConfig, build_config, config_class  # noqa: E402
from dqnx.drivers import preflight  # noqa: E402
from dqnx.drivers.trainer import Reporter, divergence_message, train_run  # noqa: E402
from dqnx.envs import BACKENDS, Env, backend_of, make_env, resolve_backend  # noqa: E402
from dqnx.envs.source import check_params, describe_spaces, parse_wrapper, wrappers_from_data  # noqa: E402
from dqnx.errors import Diverged, SettingsWarning, UsageError  # noqa: E402
from dqnx.runs.run_dir import RunDir, RunSpec, default_run_dir  # noqa: E402
from dqnx.runs.trust import require_trust  # noqa: E402
from dqnx.trained import Agent, evaluate, load, load_weights  # noqa: E402,F401  (dqnx's public names)


@dataclass(frozen=True)
class Run:
    """A finished run: its directory, configuration and summary."""

    path: Path
    env_id: str
    agent: str
    seeds: list[int]
    config: RunConfig
    summary: dict[str, Any]


MAX_SEED = 2**31  # PRNGKey takes a 32-bit seed: larger ones would silently repeat smaller ones


def _seed_list(seed: int, seeds: int) -> list[int]:
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds <= 0:
        raise UsageError(f"seeds must be a positive number of seeds, got {seeds!r}; e.g. --seeds 4")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
    if seed + seeds > MAX_SEED:
        raise UsageError(f"seeds must stay below {MAX_SEED} (JAX keys hold 32-bit seeds), got {seed}..{seed + seeds - 1}")
    return [seed + i for i in range(seeds)]


def train(
    env_id: Any = None,
    *,
    agent: str = "dqn",
    backend: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    seeds: int = 1,
    config: RunConfig | dict[str, Any] | None = None,
    config_file: str | Path | None = None,
    env_params: dict[str, Any] | None = None,
    wrappers: list[Any] | None = None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool | Reporter = False,
    stop_when_solved: bool = False,
    tensorboard: bool = True,
    trust_env_code: bool = False,
) -> Run:
    """Train `agent` on `env_id` (or continue the run in `resume`) and return the finished Run.

    env_id: a gymnax id (CartPole-v1, ...), a registered Gymnasium id (LunarLander-v3,
    ALE/Pong-v5, ...), 'module.path:EnvClass', or a gymnasium.Env instance or factory.
    backend: 'jax' or 'gymnasium'; by default gymnax's ids train on JAX, the rest on Gymnasium.
    agent: 'dqn' (default), 'rainbow', 'pqn', 'tabular-q', 'sarsa' or 'linear-q'.
    config: a full config object, or a dict of overrides applied over the env's preset;
    config_file: a TOML file of overrides; steps: overrides total_steps;
    resume: a run directory to continue; a run trained on an instance or factory that its
    recorded id cannot rebuild takes the same kind of environment again as env_id.
    env_params: overrides of the environment's parameters, e.g. {"slip": 0.2}.
    wrappers: Gymnasium wrappers applied in order, each 'module:callable', a dict {"target": ...,
    "kwargs": {...}} or a dqnx.envs.source.Wrapper; a config_file's [[wrappers]] tables come after them.
    trust_env_code: resuming a run whose environment needs code its files name (module:Class,
    package:EnvId, wrappers) that this user did not create here: import and run that code.
    seeds > 1 trains seeds seed, seed+1, ... side by side in one compiled program.
    tensorboard: also write TensorBoard event files under RUN_DIR/tensorboard/seed_<S>/.
    """
    changes: dict[str, Any] = {}
    if resume is not None:
        given = {"agent": agent != "dqn", "backend": backend is not None, "seed": seed != 0, "seeds": seeds != 1,
                 "config (other than a dict of changed hyperparameters)": config is not None and not isinstance(config, dict),
                 "config_file": config_file is not None, "env_params": env_params is not None, "wrappers": bool(wrappers),
                 "out": out is not None}
        if any(given.values()):
            names = ", ".join(name for name, set_ in given.items() if set_)
            raise UsageError(f"resume continues a run with its saved settings; drop {names} (only steps may extend it, "
                             "and changed hyperparameters, e.g. a lower learning_rate after a divergence)")
        changes = dict(config or {})
        run = RunDir.open(resume)
        if (run.path / "members.json").is_file():
            raise UsageError(f"{resume} is a group of a sweep or tune study (several configurations in one program) and "
                             "cannot be resumed by dqnx train; run the sweep again, or the same dqnx tune command")
        spec = run.read_config()
        run.check_resumable(spec)
        given_env = env_id is not None and not isinstance(env_id, str)  # an instance or factory, passed again
        if isinstance(env_id, str) and env_id != spec.env_id:
            raise UsageError(f"{resume} is a {spec.env_id} run, not {env_id}; drop the env id to resume it")
        cfg = spec.config
        if steps is not None:
            if steps < cfg.total_steps:
                raise UsageError(f"--steps {steps} is below the run's total_steps {cfg.total_steps}; resume can only extend a run")
            if steps != cfg.total_steps and getattr(cfg, "lr_schedule", "constant") != "constant":
                # The schedule stays the one the run was trained with (its original span): the
                # past replays exactly, and the added steps train at the schedule's end, lr_end.
                cfg = cfg.replace(lr_schedule_steps=cfg.lr_schedule_steps or cfg.total_steps)
            cfg = cfg.replace(total_steps=steps)
        if given_env:
            env = make_env(env_id, None, spec.backend)
        else:
            require_trust(spec.source, str(run.path), trust_env_code, how="dqnx.train(env, resume=path)")
            env = make_env(spec.env_id, spec.env_params, spec.backend, spec.wrappers)
        if changes:
            cfg = _resume_changes(run, spec, cfg, env, changes)
        else:
            _check_extension_learns(cfg)
    else:
        if env_id is None:
            raise UsageError("name an environment to train on, e.g. dqnx train CartPole-v1")
        config_class(agent)
        if not agent_kind(agent).trained_by_rl:
            raise UsageError("an imitation policy is trained from an expert's data: `dqnx dataset RUN_DIR ...` then `dqnx imitate TRAIN_FILE --test TEST_FILE`")
        chosen = resolve_backend(env_id, backend)
        env = make_env(env_id, _checked_params(env_params), chosen, _wrappers(wrappers, config_file))
        cfg = _resolve_config(_preset_id(env), agent, config, config_file, steps)
        settings = env.settings() if hasattr(env, "settings") else None
        spec = RunSpec(env_id=env.env_id, agent=agent, env_params=_stored_params(env, env_params),
                       seeds=_seed_list(seed, seeds), config=cfg, backend=chosen, env_settings=settings,
                       wrappers=getattr(env, "wrappers", ()), spaces=describe_spaces(env))
    learner = make_learner(spec.agent, cfg, env)  # raises on settings the agent cannot use, before anything is written
    if resume is None:
        jax.eval_shape(learner.init, jax.random.PRNGKey(0))  # and on networks that cannot take the observations
        if stop_when_solved and env.solve_threshold is None:
            raise UsageError(f"{env_id} has no solve threshold, so --until-solved would never stop; drop it")
        notes = preflight.check_settings(cfg)  # settings that can never learn are refused here
        budget = _checked_budget(cfg, env, agent, len(spec.seeds))  # and runs that cannot fit in memory
        run = RunDir.create(out if out is not None else default_run_dir(env.env_id), spec,
                            extra={"memory": budget.to_dict(), "warnings": notes})
        _warn(notes)  # once the run exists: a refused one says only its error
    if resume is not None:
        budget = _checked_budget(cfg, env, spec.agent, len(spec.seeds))  # another machine may hold less
    if progress and getattr(env, "origin", None):
        import sys

        print(f"dqnx: {env.origin}", file=sys.stderr)  # which of module:Class and package:EnvId was read
    reporter = progress if isinstance(progress, Reporter) else (
        _rich_reporter(spec, run.path, resumed=resume is not None, budget=budget) if progress else None
    )
    summary = train_run(run, env, cfg, spec.seeds, agent=spec.agent, learner=learner, resume=resume is not None,
                        reporter=reporter, stop_when_solved=stop_when_solved, tensorboard=tensorboard)
    if summary["status"] != "finished":
        raise Diverged(divergence_message(run.path, summary, cfg), str(run.path), summary)
    return Run(path=run.path, env_id=env.env_id, agent=spec.agent, seeds=spec.seeds, config=cfg, summary=summary)


def sweep(
    env_id: Any,
    grid: dict[str, list[Any]],
    *,
    agent: str = "dqn",
    backend: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    seeds: int = 3,
    config: RunConfig | dict[str, Any] | None = None,
    config_file: str | Path | None = None,
    env_params: dict[str, Any] | None = None,
    wrappers: list[Any] | None = None,
    out: str | Path | None = None,
    ray: str | None = None,
    progress: bool = False,
):
    """Train every configuration of `grid` with `seeds` seeds each; returns a SweepResult.

    grid: {hyperparameter: [values]} (aliases: lr, eps_decay, target_period), e.g.
    {"lr": [1e-4, 3e-4, 1e-3], "gamma": [0.9, 0.95, 0.99]}; configurations that differ only
    in vmappable hyperparameters train together in one compiled program (dqnx.search.sweep).
    The other arguments are train()'s; ray: None (this machine), "local" (a Ray instance
    started here), "auto" or a cluster address: each group becomes a Ray task.
    Writes sweeps/ENV-TIME/ (or `out`): results.csv, curves.csv, curves.png, sweep.json, groups/.
    """
    from dqnx.search import sweep as sweeps

    env, chosen, base, seed_list = _search_setup("sweep", env_id, agent, backend, env_params, config, config_file, steps,
                                                 seed, seeds, wrappers)
    parsed = sweeps.normalize_grid(grid, agent)
    clash = set(parsed) & {sweeps.ALIASES.get(k, k) for k in config} if isinstance(config, dict) else set()
    if clash:
        raise UsageError(f"{', '.join(sorted(clash))} is both swept (--grid) and set (--set); drop one")
    # Every grid point, before anything is written: values, settings that can never learn, memory.
    notes = sweeps.check_grid(parsed, base, agent, env, num_seeds=len(seed_list))
    _connect_ray(ray)
    _warn(notes)  # after every refusal: a refused sweep prints only its error
    target = Path(out) if out is not None else default_run_dir(env.env_id, root="sweeps")
    reporter = None
    if progress:
        def reporter(index, group, count):
            from dqnx.ui import RichReporter

            configs = len(group.config_indices)
            header = (f"dqnx: sweep group {index + 1}/{count} on {env.env_id}: {configs} config{'s' * (configs > 1)} x "
                      f"{len(seed_list)} seeds in one program -> {target / 'groups' / f'g{index}'}")
            return RichReporter(f"group {index + 1}/{count}", header=header)
    return sweeps.run_sweep(env, parsed, seeds=seed_list, agent=agent, backend=chosen, base=base,
                            env_params=_stored_params(env, env_params), out=target,
                            use_ray=ray is not None, ray_address=ray, reporter=reporter)


def tune(
    env_id: Any,
    *,
    trials: int = 32,
    params: list[Any] | None = None,
    batch: int = 8,
    objective: str = "auc",
    agent: str = "dqn",
    backend: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    seeds: int = 1,
    config: RunConfig | dict[str, Any] | None = None,
    config_file: str | Path | None = None,
    env_params: dict[str, Any] | None = None,
    wrappers: list[Any] | None = None,
    out: str | Path | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    ray: str | None = None,
    progress: bool = False,
):
    """Search hyperparameters with Optuna until the study holds `trials` finished trials; returns a TuneResult.

    params: the search space, Param objects or --param strings ('lr=1e-4:1e-2:log',
    'batch_size=32|64|128'); default: learning rate, gamma, tau, epsilon floor and decay
    (dqnx.search.tune.DEFAULT_SPACE). batch: trials asked and trained together (one program
    when their hyperparameters are vmappable), `seeds` seeds each. objective: 'auc' (mean
    periodic greedy return) or 'final' (final greedy return of the best weights).
    out: the study's directory (default tune/ENV): study.db (unless `storage` names another
    database), best.toml, trials.csv, trials/. Calling again with the same out and study
    continues the study. ray: as for sweep().
    """
    from dqnx.search import tune as tuning

    config_class(agent)
    for name, value in (("trials", trials), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise UsageError(f"{name} must be a positive integer, got {value!r}")
    if objective not in ("auc", "final"):
        raise UsageError(f"objective must be 'auc' or 'final', got {objective!r}")
    space = tuning.default_space(agent) if params is None else [
        p if isinstance(p, tuning.Param) else tuning.parse_params([p], agent)[0] for p in params]
    # Each string is parsed alone above, so repeats across entries are caught here (the decay
    # fraction and epsilon_decay_steps both set the same field).
    names = [tuning.field_of(p.name) for p in space]
    if repeated := sorted({n for n in names if names.count(n) > 1}):
        raise UsageError(f"--param sets {repeated[0]} twice; give one range or list of choices per hyperparameter")
    env, chosen, base, seed_list = _search_setup("tune", env_id, agent, backend, env_params, config, config_file, steps,
                                                 seed, seeds, wrappers)
    learner = make_learner(agent, base, env)  # settings the agent cannot use fail before anything is written
    jax.eval_shape(learner.init, jax.random.PRNGKey(0))
    notes = tuning.check_space(space, base, agent, env, members=batch * len(seed_list))
    _connect_ray(ray)
    _warn(notes)  # after every refusal: a refused study prints only its error
    target = Path(out) if out is not None else Path("tune") / env.env_id.replace("/", "-").replace(":", "-")
    reporter = None
    if progress:
        def reporter(index, group, numbers):
            from dqnx.ui import RichReporter

            label = f"trial {numbers[0]}" if len(numbers) == 1 else f"trials {numbers[0]}-{numbers[-1]}"
            header = (f"dqnx tune: {label} of {trials} on {env.env_id}, {len(seed_list)} seed{'s' * (len(seed_list) > 1)} "
                      "each, in one program")
            return RichReporter(label, header=header)
    return tuning.run_tune(env, agent=agent, backend=chosen, env_params=_stored_params(env, env_params), base=base,
                           space=space, trials=trials, batch=batch, seeds=seed_list, objective=objective, out=target,
                           storage=storage, study_name=study_name, sampler_seed=seed, ray_address=ray, reporter=reporter)


def _search_setup(command: str, env_id: Any, agent: str, backend: str | None, env_params: dict[str, Any] | None,
                  config: Any, config_file: Any, steps: int | None, seed: int, seeds: int, wrappers: list[Any] | None = None):
    """What sweep and tune share: the agent checked, the seeds, the env and the base config."""
    config_class(agent)
    if not agent_kind(agent).trained_by_rl:
        raise UsageError(f"imitation policies come from `dqnx imitate`; {command} dqn, rainbow, pqn, tabular-q, sarsa or linear-q")
    seed_list = _seed_list(seed, seeds)
    chosen = resolve_backend(env_id, backend)
    env = make_env(env_id, _checked_params(env_params), chosen, _wrappers(wrappers, config_file))
    return env, chosen, _resolve_config(_preset_id(env), agent, config, config_file, steps), seed_list


def _connect_ray(ray: str | None) -> None:
    """A missing Ray or an unreachable cluster fails here, before a sweep or study writes anything."""
    if ray is not None:
        from dqnx.search.distributed import connect

        connect(ray)


def _stored_params(env: Env, env_params: dict[str, Any] | None) -> dict[str, Any]:
    """The env parameters to record in config.json, as the environment took them."""
    return backend_of(env).stored_params(env, env_params)


def _checked_params(env_params: dict[str, Any] | None) -> dict[str, Any] | None:
    """The user's env parameters, held to what config.json may record (JSON data, no code names)."""
    return None if env_params is None else check_params(env_params, "env_params")


def _wrappers(wrappers: list[Any] | None, config_file: Any) -> tuple:
    """The wrappers given as arguments, then those of the config file's [[wrappers]] tables; what a
    config file names is said on stderr, since building the env imports and runs it."""
    given = wrappers_from_data([parse_wrapper(w) if isinstance(w, str) else w for w in (wrappers or [])])
    from_file: tuple = ()
    if config_file is not None:
        from dqnx.config import read_toml_wrappers

        from_file = wrappers_from_data(read_toml_wrappers(Path(config_file)), f"{config_file}: wrappers")
        if from_file:
            import sys

            print(f"dqnx: {config_file} names wrappers, imported and applied in order: "
                  f"{', '.join(str(w) for w in from_file)}", file=sys.stderr)
    return given + from_file


def _preset_id(env: Env) -> str:
    """Presets are per environment; every Atari game shares presets/atari.toml."""
    return "atari" if getattr(env, "atari", False) else env.env_id


def _resolve_config(env_id: str, agent: str, config: Any, config_file: Any, steps: int | None) -> RunConfig:
    overrides: dict[str, Any] = {}
    base = None
    if isinstance(config, RunConfig):
        if not isinstance(config, config_class(agent)):
            raise UsageError(f"agent {agent!r} takes a {config_class(agent).__name__}, got a {type(config).__name__}")
        base = config
    elif isinstance(config, dict):
        overrides.update(config)
    elif config is not None:
        raise UsageError(f"config must be a config object or a dict of overrides, got {type(config).__name__}")
    if steps is not None:
        overrides["total_steps"] = steps
    return build_config(env_id, config_file=config_file, overrides=overrides, base=base, agent=agent)


def _resume_changes(run: RunDir, spec: RunSpec, cfg: RunConfig, env: Env, changes: dict[str, Any]) -> RunConfig:
    """The run's config with hyperparameters changed on resume (recorded in config.json), or a
    UsageError when a change cannot apply to the saved training state."""
    if "total_steps" in changes:
        raise UsageError("resume extends a run with --steps N, not --set total_steps")
    changed = build_config(spec.env_id, overrides=changes, base=cfg, agent=spec.agent)
    preflight.check_settings(changed)
    before = preflight.state_shapes(cfg, env, spec.agent)
    after = preflight.state_shapes(changed, env, spec.agent)
    if jax.tree.structure(before) != jax.tree.structure(after) or jax.tree.leaves(before) != jax.tree.leaves(after):
        raise UsageError(f"--set {', '.join(changes)} changes the layout of the saved training state (network, optimizer "
                         "or replay), so it cannot change on resume; start a new run with it")
    if not run.has_checkpoint():
        raise UsageError(f"{run.path} has no checkpoint to resume from; it stopped before its first checkpoint")
    _check_extension_learns(changed)
    values = {k: getattr(changed, k) for k in changes}
    run.record_resume_changes({k: list(v) if isinstance(v, tuple) else v for k, v in values.items()},
                              {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, getattr(cfg, k)) for k in changes)})
    return changed


def _check_extension_learns(cfg: RunConfig) -> None:
    """A run extended past its learning-rate schedule's span trains at lr_end: refuse an lr_end of 0."""
    span = getattr(cfg, "lr_schedule_steps", 0)
    if span and cfg.total_steps > span and cfg.lr_end == 0.0:
        raise UsageError(f"this run's {cfg.lr_schedule} learning rate decays to lr_end = 0 at env step {span}, so the steps "
                         f"added after it would not learn; give them a rate, e.g. --set lr_end={cfg.learning_rate / 10:g} "
                         "(or resume without --steps)")


def _checked_budget(cfg: RunConfig, env: Env, agent: str, num_seeds: int) -> preflight.MemoryBudget:
    budget = preflight.memory_budget([cfg], env, agent, members_per_config=num_seeds)
    preflight.check_memory(budget, getattr(cfg, "buffer_size", None))
    return budget


def _warn(notes: list[str]) -> None:
    for note in notes:
        warnings.warn(note, SettingsWarning, stacklevel=3)


def _rich_reporter(spec: RunSpec, path: Path, resumed: bool, budget: preflight.MemoryBudget | None = None) -> Reporter:
    from dqnx.ui import RichReporter

    seeds = spec.seeds
    label = f"{spec.env_id} seed {seeds[0]}" if len(seeds) == 1 else f"{spec.env_id} seeds {seeds[0]}-{seeds[-1]}"
    verb = "resuming" if resumed else "training"
    header = f"dqnx: {verb} {spec.agent} on {label} (backend: {BACKENDS[spec.backend].description}) -> {path}"
    if budget is not None:
        header += f"\n      {budget.describe()}"
    return RichReporter(label, header=header)
