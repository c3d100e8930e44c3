"""Python entry points: train, sweep, tune; load and evaluate (from dqnx.trained).

    import dqnx
    run = dqnx.train("CartPole-v1", seed=0)          # trains, writes runs/CartPole-v1-<time>/
    agent = dqnx.load(run.path)                       # best weights by default
    dqnx.evaluate(agent, episodes=100)                # {'mean_return': ..., 'std_return': ..., ...}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dqnx import jax_setup

jax_setup.configure()  # before JAX starts its backend: one host device per core, compile cache

import jax  # noqa: E402

from dqnx.agents import make_learner  # noqa: E402
from dqnx.config import RunConfig, config_class  # noqa: E402
from dqnx.drivers import preflight  # noqa: E402
from dqnx.drivers.prepare import new_run, resumed_run, search_setup  # noqa: E402
from dqnx.drivers.trainer import Reporter, divergence_message, train_run  # noqa: E402
from dqnx.envs import stored_params  # noqa: E402
from dqnx.errors import Diverged, UsageError  # noqa: E402
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
    if resume is not None:
        given = {"agent": agent != "dqn", "backend": backend is not None, "seed": seed != 0, "seeds": seeds != 1,
                 "config (other than a dict of changed hyperparameters)": config is not None and not isinstance(config, dict),
                 "config_file": config_file is not None, "env_params": env_params is not None, "wrappers": bool(wrappers),
                 "out": out is not None}
        if any(given.values()):
            names = ", ".join(name for name, set_ in given.items() if set_)
            raise UsageError(f"resume continues a run with its saved settings; drop {names} (only steps may extend it, "
                             "and changed hyperparameters, e.g. a lower learning_rate after a divergence)")
        prepared = resumed_run(resume, env_id, steps, dict(config or {}), trust_env_code)
    else:
        prepared = new_run(env_id, agent=agent, backend=backend, steps=steps, seed=seed, seeds=seeds, config=config,
                           config_file=config_file, env_params=env_params, wrappers=wrappers, out=out,
                           stop_when_solved=stop_when_solved)
        preflight.warn_settings(prepared.notes)  # once the run exists: a refused one says only its error
    run, spec, cfg, env = prepared.run, prepared.spec, prepared.config, prepared.env
    if progress and getattr(env, "origin", None):
        import sys

        print(f"dqnx: {env.origin}", file=sys.stderr)  # which of module:Class and package:EnvId was read
    if isinstance(progress, Reporter) or not progress:
        reporter = progress or None
    else:
        from dqnx.ui import training_reporter

        reporter = training_reporter(spec, run.path, resumed=resume is not None, budget=prepared.budget)
    summary = train_run(run, env, cfg, spec.seeds, agent=spec.agent, learner=prepared.learner, resume=resume is not None,
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
    from dqnx.search.distributed import connect_if_given

    env, chosen, base, seed_list = search_setup("sweep", env_id, agent, backend, env_params, config, config_file, steps,
                                                 seed, seeds, wrappers)
    parsed = sweeps.normalize_grid(grid, agent)
    clash = set(parsed) & {sweeps.ALIASES.get(k, k) for k in config} if isinstance(config, dict) else set()
    if clash:
        raise UsageError(f"{', '.join(sorted(clash))} is both swept (--grid) and set (--set); drop one")
    # Every grid point, before anything is written: values, settings that can never learn, memory.
    notes = sweeps.check_grid(parsed, base, agent, env, num_seeds=len(seed_list))
    connect_if_given(ray)
    preflight.warn_settings(notes)  # after every refusal: a refused sweep prints only its error
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
                            env_params=stored_params(env, env_params), out=target,
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
    from dqnx.search.distributed import connect_if_given

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
    env, chosen, base, seed_list = search_setup("tune", env_id, agent, backend, env_params, config, config_file, steps,
                                                 seed, seeds, wrappers)
    learner = make_learner(agent, base, env)  # settings the agent cannot use fail before anything is written
    jax.eval_shape(learner.init, jax.random.PRNGKey(0))
    notes = tuning.check_space(space, base, agent, env, members=batch * len(seed_list))
    connect_if_given(ray)
    preflight.warn_settings(notes)  # after every refusal: a refused study prints only its error
    target = Path(out) if out is not None else Path("tune") / env.env_id.replace("/", "-").replace(":", "-")
    reporter = None
    if progress:
        def reporter(index, group, numbers):
            from dqnx.ui import RichReporter

            label = f"trial {numbers[0]}" if len(numbers) == 1 else f"trials {numbers[0]}-{numbers[-1]}"
            header = (f"dqnx tune: {label} of {trials} on {env.env_id}, {len(seed_list)} seed{'s' * (len(seed_list) > 1)} "
                      "each, in one program")
            return RichReporter(label, header=header)
    return tuning.run_tune(env, agent=agent, backend=chosen, env_params=stored_params(env, env_params), base=base,
                           space=space, trials=trials, batch=batch, seeds=seed_list, objective=objective, out=target,
                           storage=storage, study_name=study_name, sampler_seed=seed, ray_address=ray, reporter=reporter)
