"""A training run prepared before its loop starts, from what `dqnx.train` (and sweep, tune) take.

    new_run(...)        the env, the config (preset, --config, --set), the learner built once and
                        checked against the observations, the settings and memory checks, and
                        then the run directory: a refused run writes nothing
    resumed_run(...)    the saved run reopened: its env rebuilt (trusted), its config (extended
                        by --steps, changed by allowed --set), its learner and memory budget
    env_and_config(...) what a sweep or study shares with a new run: the env and base config

api.py calls these and hands the result to `trainer.train_run`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax

from dqnx.agents import agent_kind, make_learner
from dqnx.config import RunConfig, build_config, config_class, preset_id, resolve_config, seed_list
from dqnx.drivers import preflight
from dqnx.envs import Env, make_env, resolve_backend, resolved_settings, stored_params
from dqnx.envs.source import checked_env_params, describe_spaces, given_wrappers
from dqnx.errors import UsageError
from dqnx.protocols import Learner
from dqnx.runs.run_dir import RunDir, RunSpec, default_run_dir
from dqnx.runs.trust import require_trust


@dataclass(frozen=True)
class PreparedRun:
    """Everything a training run needs before its loop."""

    run: RunDir
    spec: RunSpec
    config: RunConfig
    env: Env
    learner: Learner
    budget: preflight.MemoryBudget
    notes: list[str] = field(default_factory=list)  # settings warnings, said once the run exists


def env_and_config(env_id: Any, agent: str, backend: str | None, env_params: dict[str, Any] | None, config: Any,
                   config_file: Any, steps: int | None, wrappers: list[Any] | None) -> tuple[Env, str, RunConfig]:
    """(env, backend name, config) of a new run or search: the backend chosen for `env_id`, the
    env built with its parameters and wrappers, the config layered over the env's preset."""
    chosen = resolve_backend(env_id, backend)
    env = make_env(env_id, checked_env_params(env_params), chosen, given_wrappers(wrappers, config_file))
    return env, chosen, resolve_config(preset_id(env), agent, config, config_file, steps)


def check_trained_by_rl(agent: str, command: str) -> None:
    """Refuse the agents that `command` cannot train (imitation policies come from data)."""
    config_class(agent)
    if agent_kind(agent).trained_by_rl:
        return
    if command == "train":
        raise UsageError("an imitation policy is trained from an expert's data: `dqnx dataset RUN_DIR ...` then "
                         "`dqnx imitate TRAIN_FILE --test TEST_FILE`")
    raise UsageError(f"imitation policies come from `dqnx imitate`; {command} dqn, rainbow, pqn, tabular-q, sarsa or linear-q")


def new_run(env_id: Any, *, agent: str, backend: str | None, steps: int | None, seed: int, seeds: int, config: Any,
            config_file: Any, env_params: dict[str, Any] | None, wrappers: list[Any] | None, out: Any,
            stop_when_solved: bool) -> PreparedRun:
    """A new run, checked, with its directory created (config.json) last."""
    if env_id is None:
        raise UsageError("name an environment to train on, e.g. dqnx train CartPole-v1")
    check_trained_by_rl(agent, "train")
    env, chosen, cfg = env_and_config(env_id, agent, backend, env_params, config, config_file, steps, wrappers)
    spec = RunSpec(env_id=env.env_id, agent=agent, env_params=stored_params(env, env_params),
                   seeds=seed_list(seed, seeds), config=cfg, backend=chosen, env_settings=resolved_settings(env),
                   wrappers=getattr(env, "wrappers", ()), spaces=describe_spaces(env))
    learner = make_learner(spec.agent, cfg, env)  # raises on settings the agent cannot use, before anything is written
    jax.eval_shape(learner.init, jax.random.PRNGKey(0))  # and on networks that cannot take the observations
    if stop_when_solved and env.solve_threshold is None:
        raise UsageError(f"{env_id} has no solve threshold, so --until-solved would never stop; drop it")
    notes = preflight.check_settings(cfg)  # settings that can never learn are refused here
    budget = preflight.checked_budget(cfg, env, agent, len(spec.seeds))  # and runs that cannot fit in memory
    run = RunDir.create(out if out is not None else default_run_dir(env.env_id), spec,
                        extra={"memory": budget.to_dict(), "warnings": notes})
    return PreparedRun(run, spec, cfg, env, learner, budget, notes)


def resumed_run(resume: Any, env_id: Any, steps: int | None, changes: dict[str, Any], trust_env_code: bool) -> PreparedRun:
    """The run in `resume` reopened to continue: extended to `steps`, with `changes` of hyperparameters.

    env_id: None (rebuilt from the run's record), its recorded id, or an instance or factory
    when the recorded id cannot rebuild the environment.
    """
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
        cfg = resume_changes(run, spec, cfg, env, changes)
    else:
        check_extension_learns(cfg)
    learner = make_learner(spec.agent, cfg, env)
    budget = preflight.checked_budget(cfg, env, spec.agent, len(spec.seeds))  # another machine may hold less
    return PreparedRun(run, spec, cfg, env, learner, budget)


def resume_changes(run: RunDir, spec: RunSpec, cfg: RunConfig, env: Env, changes: dict[str, Any]) -> RunConfig:
    """The run's config with hyperparameters changed on resume (staged on `run`, recorded in
    config.json once the checkpoint loads), or a UsageError when a change cannot apply to the
    saved training state."""
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
    check_extension_learns(changed)
    values = {k: getattr(changed, k) for k in changes}
    # Recorded in config.json by the trainer once the checkpoint has loaded (RunDir.record_resume).
    run.resume_changes = ({k: list(v) if isinstance(v, tuple) else v for k, v in values.items()},
                          {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, getattr(cfg, k)) for k in changes)})
    return changed


def check_extension_learns(cfg: RunConfig) -> None:
    """A run extended past its learning-rate schedule's span trains at lr_end: refuse an lr_end of 0."""
    span = getattr(cfg, "lr_schedule_steps", 0)
    if span and cfg.total_steps > span and cfg.lr_end == 0.0:
        raise UsageError(f"this run's {cfg.lr_schedule} learning rate decays to lr_end = 0 at env step {span}, so the steps "
                         f"added after it would not learn; give them a rate, e.g. --set lr_end={cfg.learning_rate / 10:g} "
                         "(or resume without --steps)")


def search_setup(command: str, env_id: Any, agent: str, backend: str | None, env_params: dict[str, Any] | None,
                 config: Any, config_file: Any, steps: int | None, seed: int, seeds: int,
                 wrappers: list[Any] | None = None) -> tuple[Env, str, RunConfig, list[int]]:
    """What sweep and tune share: the agent checked, the seeds, the env and the base config."""
    check_trained_by_rl(agent, command)
    seeds_ = seed_list(seed, seeds)
    return (*env_and_config(env_id, agent, backend, env_params, config, config_file, steps, wrappers), seeds_)

