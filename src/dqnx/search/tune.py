"""Hyperparameter tuning with Optuna: TPE sampling, pruning on the periodic evaluation,
the study in SQLite (resumable), trials trained in vmapped batches.

    dqnx tune CartPole-v1 --trials 32 --steps 30000      # tune/CartPole-v1/: study.db, best.toml, trials.csv

Optuna runs in ask-and-tell mode: `batch` trials are asked at once (TPE's constant liar
keeps them apart), grouped like a sweep's configurations (search/sweep.py: vmappable
hyperparameters share one compiled program) and trained together with `seeds` seeds each.
After every periodic evaluation each running trial reports the mean greedy return over its
seeds; a trial the pruner stops is frozen (its members keep computing inside the program,
since one vmapped member cannot leave it, but the group ends as soon as all of its trials
are stopped). The objective is `auc` (the mean of the periodic evaluations: high for
configurations that learn early and stay there) or `final` (the final greedy evaluation of
the best weights).

Running the same command again continues the study: finished (complete or pruned) trials
are kept, and trials that were running when the process died are marked failed and asked
again with the same parameters. After each batch the best trial so far is written as a
preset file that `dqnx train ENV --config best.toml` takes.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dqnx.config import RunConfig, coerce, config_class
from dqnx.envs import BACKENDS
from dqnx.errors import UsageError
from dqnx.runs.files import atomic_write_bytes
from dqnx.search.sweep import ALIASES, Group, plan_groups, train_group


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter: a float or int range (log-uniform or uniform) or a list of choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    def distribution(self, kind: type) -> Any:
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.choices is not None:
            return CategoricalDistribution([list(c) if isinstance(c, tuple) else c for c in self.choices])
        if kind is int:
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)


# The default search space: vmappable hyperparameters only, so a whole batch of trials is
# one compiled program. The ranges hold the values published DQN settings use (e.g.
# rl-baselines3-zoo's) and leave out regions where DQN reliably diverges (learning rates
# of 1e-2, tau near 1 with a target sync every step), which would only waste trials.
# epsilon_decay_steps is searched as a fraction of the run (scaled at use).
DEFAULT_SPACE = {
    "dqn": [Param("learning_rate", 1e-4, 3e-3, log=True), Param("gamma", 0.95, 0.999),
            Param("tau", 2e-3, 0.1, log=True), Param("epsilon_end", 0.01, 0.1),
            Param("epsilon_decay_fraction", 0.03, 0.3, log=True)],
    # PQN: around the paper's settings (lr 1e-4 to 5e-4, lambda 0.65 to 0.95), all vmappable.
    "pqn": [Param("learning_rate", 3e-5, 3e-3, log=True), Param("gamma", 0.95, 0.999), Param("q_lambda", 0.5, 0.99),
            Param("epsilon_end", 0.01, 0.2), Param("epsilon_decay_fraction", 0.05, 0.5, log=True)],
    "tabular": [Param("learning_rate", 0.01, 1.0, log=True), Param("gamma", 0.8, 0.999),
                Param("epsilon_decay_fraction", 0.03, 0.5, log=True)],
}
DECAY_FRACTION = "epsilon_decay_fraction"


def field_of(name: str) -> str:
    """The config field a search-space entry sets."""
    return "epsilon_decay_steps" if name == DECAY_FRACTION else name


def default_space(agent: str) -> list[Param]:
    from dqnx.agents import agent_kind

    if agent in DEFAULT_SPACE:
        return DEFAULT_SPACE[agent]
    return DEFAULT_SPACE["dqn" if agent_kind(agent).network else "tabular"]


def parse_params(items: list[str], agent: str = "dqn") -> list[Param]:
    """`--param name=LOW:HIGH[:log]` (a range) or `--param name=A|B|C` (choices; lists in brackets)."""
    cls = config_class(agent)
    params = []
    for item in items:
        name, sep, text = item.partition("=")
        name = ALIASES.get(name.strip(), name.strip())
        if not sep or not name or not text.strip():
            raise UsageError(f"--param expects name=LOW:HIGH[:log] or name=A|B|C, got {item!r}; e.g. --param lr=1e-4:1e-2:log")
        if any(p.name == name for p in params):
            raise UsageError(f"--param names {name} twice")
        if "|" in text:
            choices = tuple(coerce(name, c.strip().strip("[]"), "--param", cls) for c in text.split("|"))
            params.append(Param(name, choices=choices))
            continue
        parts = text.split(":")
        log = len(parts) == 3 and parts[2].strip().lower() == "log"
        if len(parts) not in (2, 3) or (len(parts) == 3 and not log):
            raise UsageError(f"--param {name}: expected LOW:HIGH or LOW:HIGH:log or A|B|C, got {text!r}")
        kind = _kind(name, cls)
        if kind not in (int, float):
            raise UsageError(f"--param {name} is not a number; give its choices as {name}=A|B")
        low, high = (_bound(name, p.strip(), cls) for p in parts[:2])
        if not low < high or (log and low <= 0):
            raise UsageError(f"--param {name}: need LOW < HIGH (and LOW > 0 with log), got {text!r}")
        params.append(Param(name, low, high, log=log))
    return params


def _bound(name: str, text: str, cls: type) -> Any:
    if name == DECAY_FRACTION:  # not a config field: a fraction of total_steps (see DEFAULT_SPACE)
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not 0.0 < value <= 1.0:
            raise UsageError(f"--param {DECAY_FRACTION} takes fractions of the run in (0, 1], got {text!r}")
        return value
    return coerce(name, text, "--param", cls)


def _kind(name: str, cls: type) -> type:
    import typing

    if name == DECAY_FRACTION:
        return float
    hints = typing.get_type_hints(cls)
    if name not in hints:
        coerce(name, None, "--param", cls)  # raises the unknown-key error with suggestions
    return hints[name]


class StudyPruning:
    """Reports intermediate values and asks the pruner, for trials of an existing study.

    Used in-process, and as a Ray actor on a cluster (workers report through it, so the
    pruner sees every trial while the study stays in one storage)."""

    def __init__(self, storage: str, study_name: str, warmup_steps: int):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.load_study(study_name=study_name, storage=storage, pruner=_pruner(warmup_steps))

    def report(self, step: int, values: dict[int, float]) -> set[int]:
        """values: {trial number: intermediate value}; returns the trial numbers to prune."""
        import optuna

        by_number = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        pruned = set()
        for number, value in values.items():
            trial = optuna.trial.Trial(self.study, by_number[number]._trial_id)
            trial.report(value, step)
            if trial.should_prune():
                pruned.add(number)
        return pruned


def _pruner(warmup_steps: int) -> Any:
    import optuna

    # The median rule, once 5 trials have finished, and only after the first quarter of the
    # run (warmup_steps, in env steps): early evaluations of a still-exploring agent are
    # mostly noise, and pruning on them would drop slow starters that end up best.
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup_steps, interval_steps=1, n_min_trials=3)


@dataclass(frozen=True)
class TuneResult:
    path: Path
    storage: str
    study_name: str
    best_value: float | None
    best_params: dict[str, Any]
    best_config_path: Path | None
    trials_run: int
    trials_finished: int
    wall_seconds: float
    top: list[dict[str, Any]]  # the best complete trials, best first: number, value, params (as config fields)


def run_tune(env: Any, *, agent: str, backend: str, env_params: dict[str, Any], base: RunConfig, space: list[Param],
             trials: int, batch: int, seeds: list[int], objective: str, out: Path, storage: str | None,
             study_name: str | None, sampler_seed: int, ray_address: str | None = None, reporter: Any = None) -> TuneResult:
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    created = next((p for p in reversed([out, *out.parents]) if not p.exists()), None)  # the outermost new directory
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{out / 'study.db'}"
    study_name = study_name or f"{env.env_id}-{agent}"
    identity = {"env_id": env.env_id, "agent": agent, "backend": backend, "env_params": env_params,
                "base_config": base.to_dict(), "seeds": seeds, "objective": objective,
                "space": [p.__dict__ | {"choices": list(p.choices) if p.choices else None} for p in space]}
    wrappers = [w.to_dict() for w in getattr(env, "wrappers", ())]
    if wrappers:  # only then, so studies begun before wrappers existed keep their identity
        identity["wrappers"] = wrappers
    try:
        try:
            study = optuna.create_study(storage=storage, study_name=study_name, direction="maximize", load_if_exists=True,
                                        sampler=_sampler(sampler_seed),
                                        pruner=_pruner(base.total_steps // 4))
        except Exception as e:  # bad storage URLs and unreachable databases come from SQLAlchemy in many types
            raise UsageError(f"cannot open the Optuna storage {storage} ({type(e).__name__}: {e}); give --storage sqlite:///FILE.db") from None
        _check_identity(study, identity, study_name, storage)
    except UsageError:
        if created is not None:  # bad input leaves nothing behind: not even the empty study directory (or tune/)
            shutil.rmtree(created, ignore_errors=True)
        raise
    # A trial still RUNNING when this process starts was cut off with its process: fail it and ask its parameters again.
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(stale.number, state=TrialState.FAIL)
        study.enqueue_trial(stale.params, user_attrs={"retry_of": stale.number})
    # A resumed study draws from a fresh stream, or TPE's first (random) samples would repeat the first session's.
    study.sampler = _sampler(sampler_seed + len(study.trials))

    distributions = {p.name: p.distribution(_kind(p.name, type(base))) for p in space}
    started = time.perf_counter()
    run_count = 0
    pruning = StudyPruning(storage, study_name, base.total_steps // 4) if ray_address is None else None
    while (remaining := trials - _finished(study)) > 0:
        asked = [study.ask(distributions) for _ in range(min(batch, remaining))]
        configs = [_trial_config(base, t.params) for t in asked]
        for trial, config in zip(asked, configs):
            if isinstance(config, UsageError):
                study.tell(trial, state=TrialState.FAIL)
        usable = [(t, c) for t, c in zip(asked, configs) if not isinstance(c, UsageError)]
        if not usable:  # a space that yields nothing trainable would otherwise ask forever
            raise UsageError(f"every trial of a batch had settings the agent refuses, e.g. {configs[0]}; narrow the --param ranges")
        groups = plan_groups([c for _, c in usable], seeds, vmapped=BACKENDS[backend].loop == "compiled")
        numbers = [t.number for t, _ in usable]
        batch_dir = out / "trials" / f"batch-{numbers[0]:04d}"
        if ray_address is None:
            results = [_train_local(env, g, i, batch_dir, agent, backend, env_params, numbers, seeds, pruning, reporter)
                       for i, g in enumerate(groups)]
        else:
            from dqnx.search.distributed import tune_groups_on_ray

            results = tune_groups_on_ray(ray_address, env.env_id, env_params, backend, agent, groups, batch_dir, numbers,
                                         seeds, storage, study_name, base.total_steps // 4, wrappers=wrappers)
        for trial_value in _trial_values(results, numbers, objective):
            number, value, pruned = trial_value
            trial = next(t for t, _ in usable if t.number == number)
            if pruned:
                study.tell(trial, state=TrialState.PRUNED)
            else:
                study.tell(trial, value)
        run_count += len(usable)
        best = write_best(study, base, out, env.env_id, agent)
        _write_trials_csv(study, out / "trials.csv")
    best = write_best(study, base, out, env.env_id, agent)
    _write_trials_csv(study, out / "trials.csv")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best_trial = study.best_trial if complete else None
    return TuneResult(path=out, storage=storage, study_name=study_name,
                      best_value=best_trial.value if best_trial else None,
                      best_params=_resolved_params(best_trial.params, base) if best_trial else {},
                      best_config_path=best, trials_run=run_count, trials_finished=_finished(study),
                      wall_seconds=time.perf_counter() - started,
                      top=[{"number": t.number, "value": t.value, "params": _resolved_params(t.params, base)}
                           for t in sorted(complete, key=lambda t: -t.value)[:5]])


def _sampler(seed: int) -> Any:
    import optuna

    # constant_liar: trials asked but not yet told count as bad results, so the trials of
    # one batch spread out; without it TPE proposes the whole batch from the same model
    # and they cluster (a batch of 8 on a 2-D toy space: nearest neighbours 5x closer).
    # Optuna 5 defaults to it; Optuna 4 (which pyproject allows) does not, and flags it
    # experimental with a warning that would break the CLI's quiet output.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def _finished(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _check_identity(study: Any, identity: dict[str, Any], name: str, storage: str) -> None:
    import json

    stored = study.user_attrs.get("dqnx")
    if stored is None:
        if study.trials:
            raise UsageError(f"study {name} in {storage} was not created by dqnx tune; pick another --study-name")
        study.set_user_attr("dqnx", json.loads(json.dumps(identity)))
        return
    current = json.loads(json.dumps(identity))
    changed = sorted(k for k in current if stored.get(k) != current[k])
    if changed:
        raise UsageError(f"study {name} in {storage} was started with other settings ({', '.join(changed)} differ); "
                         "resume it with the same command, or pick another --study-name")


def check_space(space: list[Param], base: RunConfig, agent: str, env: Any, members: int = 1) -> list[str]:
    """Raise UsageError on a range end or choice the agent refuses, or that can never learn, or
    whose batch of trials (`members` = trials x seeds in one program) cannot fit in memory,
    before the study is written; return the settings warnings, each naming its value.

    Otherwise a space that is wholly (or at its static choices) unusable is found only while
    training: trials told failed in study.db, or a learner error with trials left running.
    """
    import jax

    from dqnx.agents import make_learner
    from dqnx.config import VMAPPABLE
    from dqnx.drivers import preflight

    base_notes = preflight.check_settings(base)
    notes = list(base_notes)
    for param in space:
        for value in param.choices if param.choices is not None else (param.low, param.high):
            config = _trial_config(base, {param.name: list(value) if isinstance(value, tuple) else value})
            try:
                if isinstance(config, UsageError):
                    raise config
                notes.extend(f"--param {param.name}={value}: {note}" for note in preflight.check_settings(config)
                             if note not in base_notes)
                if param.name not in VMAPPABLE and param.name != DECAY_FRACTION:
                    jax.eval_shape(make_learner(agent, config, env).init, jax.random.PRNGKey(0))
                    budget = preflight.memory_budget([config], env, agent, members_per_config=members)
                    preflight.check_memory(budget, getattr(config, "buffer_size", None))
            except UsageError as e:
                raise UsageError(f"--param {param.name}: the value {value} cannot train ({e}); narrow the range") from None
    budget = preflight.memory_budget([base], env, agent, members_per_config=members)
    try:
        preflight.check_memory(budget, getattr(base, "buffer_size", None))
    except UsageError as e:
        raise UsageError(f"a batch of trials ({members} runs in one program): {e}; or lower --batch") from None
    return notes


def _resolved_params(params: dict[str, Any], base: RunConfig) -> dict[str, Any]:
    """Trial parameters as config fields (the decay fraction becomes epsilon_decay_steps)."""
    out = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items() if k != DECAY_FRACTION}
    if DECAY_FRACTION in params:
        out["epsilon_decay_steps"] = max(1, round(params[DECAY_FRACTION] * base.total_steps))
    return out


def _trial_config(base: RunConfig, params: dict[str, Any]) -> RunConfig | UsageError:
    from dqnx.drivers import preflight

    try:
        config = base.replace(**_resolved_params(params, base)).validate()
        preflight.check_settings(config)  # a trial that could never learn is failed, not trained
        return config
    except UsageError as e:
        return e


def _train_local(env, group: Group, index: int, batch_dir: Path, agent, backend, env_params, numbers, seeds, pruning, reporter):
    on_eval = trial_reporter(group, numbers, len(seeds), pruning.report)
    return train_group(env, group, index, batch_dir / f"g{index}", agent=agent, env_id=env.env_id, env_params=env_params,
                       backend=backend, on_eval=on_eval, reporter=reporter(index, group, [numbers[i] for i in group.config_indices]) if reporter else None)


def trial_reporter(group: Group, numbers: list[int], num_seeds: int, report):
    """The sweep's on_eval callback for a group of trials: mean over each trial's seeds,
    reported to the pruner; returns the members of pruned trials."""
    pruned: set[int] = set()

    def on_eval(group_index: int, env_steps: int, live: dict[int, float]) -> set[int]:
        values: dict[int, list[float]] = {}
        for member, value in live.items():
            config_index = group.members[member][0]
            values.setdefault(numbers[config_index], []).append(value)
        means = {n: sum(v) / len(v) for n, v in values.items() if len(v) == num_seeds and n not in pruned}
        pruned.update(report(env_steps, means))
        return {m for m, (c, _) in enumerate(group.members) if numbers[c] in pruned}

    return on_eval


def _trial_values(results: list[dict[str, Any]], numbers: list[int], objective: str):
    """(trial number, objective value, pruned) per trial, from the groups' member results."""
    per_trial: dict[int, list[dict[str, Any]]] = {}
    for result in results:
        for member in result["members"]:
            per_trial.setdefault(numbers[member["config_index"]], []).append(member)
    for number, members in per_trial.items():
        pruned = any(m["stopped"] for m in members)
        if objective == "final":
            value = sum(m["eval_mean_return"] for m in members) / len(members)
        else:
            value = sum(sum(v for _, v in m["curve"]) / max(len(m["curve"]), 1) for m in members) / len(members)
        yield number, float(value), pruned


def write_best(study: Any, base: RunConfig, out: Path, env_id: str, agent: str) -> Path | None:
    """The best complete trial as a preset file: the base settings that differ from the env's
    preset, then the tuned values (so `dqnx train ENV --config best.toml` trains that trial)."""
    import tomli_w
    from optuna.trial import TrialState

    from dqnx.config import build_config

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    best = study.best_trial
    preset = build_config(env_id, agent=agent)
    values = {k: v for k, v in base.to_dict().items() if getattr(preset, k) != getattr(base, k)}
    values.update({k: list(v) if isinstance(v, tuple) else v for k, v in _resolved_params(best.params, base).items()})
    header = (f"# dqnx tune: best trial {best.number} of study {study.study_name} on {env_id} (agent {agent}),\n"
              f"# objective {best.value:.2f}; written {time.strftime('%Y-%m-%d %H:%M:%S')}.\n"
              f"# Train it: dqnx train {env_id} --config THIS_FILE" + (f" --agent {agent}" if agent != "dqn" else "") + "\n")
    path = out / "best.toml"
    atomic_write_bytes(path, (header + tomli_w.dumps(values)).encode())
    return path


def _write_trials_csv(study: Any, path: Path) -> None:
    trials = study.get_trials(deepcopy=False)
    names = sorted({k for t in trials for k in t.params})
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["number", "state", "value", *names, "last_step", "seconds"])
    for t in trials:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else ""
        writer.writerow([t.number, t.state.name, "" if t.value is None else t.value, *(t.params.get(n, "") for n in names),
                         t.last_step if t.last_step is not None else "", seconds])
    atomic_write_bytes(path, text.getvalue().encode())
