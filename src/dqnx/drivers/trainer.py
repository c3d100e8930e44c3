"""The host side of a training run: compiled chunks in, files and progress out.

    for each chunk:  run it (all seeds at once) -> evaluate greedily -> keep the best
                     weights -> append metrics -> checkpoint when due -> draw progress
    at the end:      evaluate the best weights on fresh episodes -> summary.json

Ctrl-C (SIGINT) or SIGTERM during a chunk lets the chunk finish, writes a checkpoint
and raises `Interrupted`; `dqnx train --resume RUN_DIR` continues from there exactly.
"""

from __future__ import annotations

import signal
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from dqnx.agents import make_learner, uses_masks
from dqnx.config import RunConfig
from dqnx.drivers import jax_loop, make_driver
from dqnx.envs import Env
from dqnx.errors import EnvFailed, Interrupted, QValueWarning, RunFailed, UsageError
from dqnx.protocols import Learner
from dqnx.runs.run_dir import BEST, RunDir
from dqnx.runs.tensorboard import TensorBoardLog


@dataclass
class Progress:
    """Host-side bookkeeping of a run, saved in the checkpoint's metadata."""

    env_steps: int
    wall_seconds: float
    compile_seconds: float
    best_return: list[float | None]
    best_step: list[int | None]
    steps_to_solve: list[int | None]
    seconds_to_solve: list[float | None]
    last_chunk: dict[str, Any] = field(default_factory=dict)
    # Per seed, the returns of its last RECENT_EPISODES finished training episodes, oldest
    # first: metrics.csv's train_return_100 is their mean (the MinAtar paper's measure).
    recent_returns: list[list[float]] = field(default_factory=list)
    # Per seed: None, or where it diverged ({"env_step", "quantity", "checkpoint_step"}); a
    # diverged seed is frozen: its files keep its last finite weights and checkpoint.
    diverged: list[dict[str, Any] | None] = field(default_factory=list)
    reward_abs_max: list[float] = field(default_factory=list)  # per seed, the largest |reward| seen
    warnings: list[str] = field(default_factory=list)  # said once each (the |Q| warning), kept for summary.json

    @classmethod
    def fresh(cls, num_seeds: int) -> "Progress":
        none = [None] * num_seeds
        return cls(0, 0.0, 0.0, list(none), list(none), list(none), list(none)).sized(num_seeds)

    def sized(self, num_seeds: int) -> "Progress":
        """Fill the per-seed lists a checkpoint of an older dqnx did not have."""
        if len(self.diverged) != num_seeds:
            self.diverged = [None] * num_seeds
        if len(self.reward_abs_max) != num_seeds:
            self.reward_abs_max = [0.0] * num_seeds
        return self


class Reporter:
    """What the trainer tells the user; the CLI draws it with rich, the API may stay silent."""

    def start(self, total_steps: int, done_steps: int) -> None: ...

    def update(self, progress: Progress) -> None: ...

    def stop(self) -> None: ...


class _SignalFlag:
    """Turns SIGINT/SIGTERM into a flag checked between chunks (main thread only)."""

    def __init__(self):
        self.raised: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not in the main thread: signals stay with their owner
            self._previous.clear()
        return self

    def _handle(self, signum, frame):
        if self.raised is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.raised = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


RECENT_EPISODES = 100


def _remember_returns(recent: list[list[float]], finished_return: np.ndarray) -> list[list[float]]:
    """`recent` with a chunk's finished episodes appended, the last RECENT_EPISODES per seed.

    finished_return: [seeds, iterations, envs], nan where no episode ended; episodes are
    taken in the order they ended (iteration, then env).

    >>> _remember_returns([[1.0]], np.array([[[np.nan, 2.0], [3.0, np.nan]]]))
    [[1.0, 2.0, 3.0]]
    """
    out = []
    for i, seed_returns in enumerate(np.asarray(finished_return).reshape(finished_return.shape[0], -1)):
        ended = seed_returns[np.isfinite(seed_returns)].tolist()
        out.append(((recent[i] if i < len(recent) else []) + ended)[-RECENT_EPISODES:])
    return out


def _median(values: list[Any]) -> Any:
    return statistics.median(values) if values else None


def train_run(
    run: RunDir,
    env: Env,
    config: RunConfig,
    seeds: list[int],
    *,
    agent: str = "dqn",
    learner: Learner | None = None,
    resume: bool = False,
    reporter: Reporter | None = None,
    stop_when_solved: bool = False,
    tensorboard: bool = True,
    hypers: dict[str, Any] | None = None,
    on_eval: Callable[[int, np.ndarray], bool] | None = None,
) -> dict[str, Any]:
    """Train `seeds` side by side in `run`, or continue it; returns the summary.

    learner: the agent's Learner if the caller has built it already (it is built once per run).
    tensorboard: also write the metrics as TensorBoard event files (runs/tensorboard.py).
    hypers: per-seed values of vmappable hyperparameters (dqnx.sweep's members; `seeds` may
    then repeat a seed, one entry per member).
    on_eval(env_steps, eval_means): called after each periodic evaluation with one mean
    per seed; returning True ends the run there (checkpoint, final evaluation, summary),
    which is how a tuner prunes.
    """
    reporter = reporter or Reporter()
    driver = make_driver(config, env, learner if learner is not None else make_learner(agent, config, env), seeds, hypers)
    try:
        return _train(run, env, config, seeds, driver, agent, resume, reporter, stop_when_solved, tensorboard, on_eval)
    finally:
        driver.close()


def _train(run, env, config, seeds, driver, agent, resume, reporter, stop_when_solved, tensorboard, on_eval) -> dict[str, Any]:
    state, best_params, progress = _start(run, driver, config, seeds, resume)
    # From here on state and best_params are laid out for the driver (on its devices, maybe
    # padded with copies of a seed: jax_loop.Compiled); files get driver.real(...) of them.
    loop = _Loop(run, env, config, seeds, driver, progress, *driver.place((state, best_params)))
    reporter.start(config.total_steps, progress.env_steps)
    if not resume:
        loop.checkpoint()  # step 0: a run that dies before its first periodic checkpoint can still be resumed
    board = TensorBoardLog(run.path, seeds, resume_step=progress.env_steps if resume else None) if tensorboard else None
    try:
        with _SignalFlag() as signals:
            while progress.env_steps < config.total_steps:
                iterations = jax_loop.chunk_iterations(config, progress.env_steps)
                chunk_stats = loop.run_chunk(iterations)
                eval_mean, eval_std = loop.evaluate_and_keep_best()
                rows = loop.record(chunk_stats, eval_mean, eval_std, iterations)
                if board is not None:
                    board.write(rows)
                reporter.update(progress)
                solved_all = env.solve_threshold is not None and all(s is not None for s in progress.steps_to_solve)
                stop_requested = on_eval is not None and bool(on_eval(progress.env_steps, eval_mean))
                all_diverged = not loop.live.any()
                finished = (progress.env_steps >= config.total_steps or (stop_when_solved and solved_all) or stop_requested
                            or all_diverged)
                due = signals.raised is not None or finished or progress.env_steps - loop.last_checkpoint >= config.checkpoint_every
                if due and not all_diverged:  # no seed left to save: the last finite checkpoint stays
                    loop.checkpoint()
                if signals.raised is not None and not all_diverged:
                    raise Interrupted(str(run.path), progress.env_steps)
                if finished:
                    break
    except BaseException as e:
        if board is not None:
            board.close()  # an interrupted run keeps the events written so far
        if isinstance(e, EnvFailed) and e.run_dir is None:  # say where the run stands; the cause keeps the env's traceback
            raise EnvFailed(e.env_id, e.call, e.env_steps, e.error, str(run.path), loop.last_checkpoint) from e.error
        raise
    finally:
        reporter.stop()

    try:
        summary = loop.final_summary()
        summary["agent"] = agent
        run.write_summary(summary)
        if board is not None:
            board.write_final(summary)
    finally:
        if board is not None:
            board.close()
    return summary


def _start(run: RunDir, driver: Any, config: RunConfig, seeds: list[int], resume: bool) -> tuple[Any, Any, Progress]:
    """The initial (or, resuming, the checkpointed) state, best weights and progress, on the host."""
    state = driver.init_states(seeds)
    best_params = jax.tree.map(jnp.copy, state.agent.params)  # own buffers: chunks donate `state`
    progress = Progress.fresh(len(seeds))
    if resume:
        (state, best_params), meta = run.load_checkpoint((state, best_params))
        try:
            progress = Progress(**meta["progress"]).sized(len(seeds))
        except (KeyError, TypeError):
            raise UsageError(f"{run.path} has a checkpoint without dqnx progress metadata; it is corrupted") from None
        if all(d is not None for d in progress.diverged):
            # The run stopped on divergence: every seed continues from its last finite checkpoint
            # (a member frozen while others went on stays frozen).
            progress.diverged = [None] * len(seeds)
        run.truncate_metrics(progress.env_steps)
        # resume may extend a run and change hyperparameters: config.json says so only once its checkpoint loaded
        run.record_resume(progress.env_steps, config.total_steps, getattr(config, "lr_schedule_steps", 0))
        run.remove_summary()  # a new one is written at the end; a stale one must not outlive the resume
    return state, best_params, progress


class _Loop:
    """One run's chunk-by-chunk steps: run a chunk, evaluate and keep the best weights, record
    metrics, checkpoint; and at the end the final evaluation. Holds the placed state."""

    def __init__(self, run: RunDir, env: Env, config: RunConfig, seeds: list[int], driver: Any, progress: Progress,
                 state: Any, best_params: Any):
        self.run, self.env, self.config, self.seeds, self.driver = run, env, config, seeds, driver
        self.progress, self.state, self.best_params = progress, state, best_params
        self.last_checkpoint = progress.env_steps
        self.started = time.perf_counter() - progress.wall_seconds
        self.compile_before = driver.compile_seconds
        self.chunk_seconds = 0.0  # the last chunk's training time, its compilation left out (steps_per_second)
        # Diverged seeds' last finite training states (host copies, read from the checkpoint they
        # last wrote): a frozen seed's files never change again while the others go on.
        self.frozen: dict[int, Any] = {}
        if any(d is not None for d in progress.diverged):
            self.frozen.update(_frozen_states(driver.real(state), progress.diverged))
        self.live = np.array([d is None for d in progress.diverged])

    def checkpoint(self) -> None:
        real_state, real_best = self.driver.real((self.state, self.best_params))
        if self.frozen:
            real_state = _substitute(real_state, self.frozen)
        try:
            self.run.save_checkpoint((real_state, real_best), {"progress": asdict(self.progress)})
            self.run.save_weights("last", real_state.agent.params, {"env_steps": self.progress.env_steps})
        except OSError as e:  # a full disk, a lost mount: the previous files stay whole (runs/files.py)
            raise RunFailed(f"writing the checkpoint of {self.run.path} at env step {self.progress.env_steps} failed "
                            f"({e.strerror or e}); the previous checkpoint (env step {self.last_checkpoint}) is intact: "
                            f"free space, then continue with dqnx train --resume {self.run.path}") from e
        self.last_checkpoint = self.progress.env_steps

    def run_chunk(self, iterations: int) -> dict[str, np.ndarray]:
        """`iterations` iterations of every seed; the chunk's per-seed statistics."""
        first_step, progress = self.progress.env_steps, self.progress
        self.was_live = np.array([d is None for d in progress.diverged])
        started, compiled_before = time.perf_counter(), self.driver.compile_seconds
        self.state, output = self.driver.chunk(self.state, iterations, first_step)
        jax_loop.check_legal_actions(self.env.env_id, output.no_legal_action, first_step,
                                     self.config.num_envs, self.seeds)
        chunk_stats = jax_loop.summarize_chunk(output)  # reads the outputs: the chunk has finished
        self.chunk_seconds = time.perf_counter() - started - (self.driver.compile_seconds - compiled_before)
        progress.recent_returns = _remember_returns(progress.recent_returns, jax.device_get(output.finished_return))
        # max: a frozen seed's state may carry an older counter; seeds move in lockstep
        progress.env_steps = int(np.max(jax.device_get(self.state.env_steps)))
        newly = _check_health(jax.device_get(output.health), progress, first_step, self.config.num_envs,
                              self.last_checkpoint, _gammas(self.driver, self.config))
        if newly:
            on_disk = self.run.load_checkpoint(self.driver.real((self.state, self.best_params)))[0][0]
            self.frozen.update(_frozen_states(on_disk, {i: progress.diverged[i] for i in newly}))
        self.live = np.array([d is None for d in progress.diverged])
        return chunk_stats

    def evaluate_and_keep_best(self) -> tuple[np.ndarray, np.ndarray]:
        """The periodic greedy evaluation (mean, std per seed); a better mean keeps those weights as `best`."""
        progress, threshold = self.progress, self.env.solve_threshold
        returns = self.driver.evaluate(
            self.state.agent.params,
            jax_loop.eval_keys(self.seeds, jax_loop.PERIODIC_EVAL_STREAM, progress.env_steps),
            self.config.eval_episodes,
        )
        live = self.live
        # A diverged seed's evaluation means nothing: nan, never its best, never solved.
        eval_mean = np.where(live, returns.mean(axis=1), np.nan)
        eval_std = np.where(live, returns.std(axis=1), np.nan)
        self.wall = time.perf_counter() - self.started
        improved = np.array([bool(ok) and (b is None or m > b) for ok, m, b in zip(live, eval_mean, progress.best_return)])
        if improved.any():
            mask = np.pad(improved, (0, self.driver.padding))  # a pad seed's best_params never reach a file
            self.best_params = jax_loop.select_where(mask, self.state.agent.params, self.best_params)
        for i, mean in enumerate(eval_mean):
            if improved[i]:
                progress.best_return[i], progress.best_step[i] = float(mean), progress.env_steps
            if threshold is not None and live[i] and progress.steps_to_solve[i] is None and mean >= threshold:
                progress.steps_to_solve[i] = progress.env_steps
                progress.seconds_to_solve[i] = round(self.wall, 3)
        if improved.any():
            self.run.save_weights("best", self.driver.real(self.best_params),
                                  {"env_steps": progress.best_step, "eval_mean_return": progress.best_return})
        return eval_mean, eval_std

    def record(self, chunk_stats: dict[str, np.ndarray], eval_mean: np.ndarray, eval_std: np.ndarray,
               iterations: int) -> list[dict[str, Any]]:
        """The chunk's metrics rows (one per seed), appended to metrics.csv; progress brought up to date.
        steps_per_second is each seed's training speed: the chunk's env steps over its time without the
        periodic evaluation and without compilation (wall_seconds has everything)."""
        progress, config = self.progress, self.config
        steps_per_second = iterations * config.num_envs / max(self.chunk_seconds, 1e-9)
        progress.wall_seconds = self.wall
        progress.compile_seconds += self.driver.compile_seconds - self.compile_before
        self.compile_before = self.driver.compile_seconds
        updates = np.asarray(jax.device_get(self.state.agent.updates))
        rows = []
        for i, seed in enumerate(self.seeds):
            if not self.was_live[i]:
                continue  # frozen: nothing new to record
            rows.append({
                "env_steps": progress.env_steps,
                "seed": seed,
                "updates": int(updates[i]),
                "episodes": int(chunk_stats["episodes"][i]),
                **{k: float(chunk_stats[k][i]) for k in ("train_return", "loss", "q_mean", "td_abs", "epsilon")},
                "train_return_100": float(np.mean(progress.recent_returns[i])) if progress.recent_returns[i] else None,
                "eval_mean_return": float(eval_mean[i]),
                "eval_std_return": float(eval_std[i]),
                "steps_per_second": round(steps_per_second, 1),
                "wall_seconds": round(self.wall, 3),
            })
        self.run.append_metrics(rows)
        recent = chunk_stats["train_return"][np.isfinite(chunk_stats["train_return"]) & self.live]
        progress.last_chunk = {
            "train_return": float(recent.mean()) if recent.size else None,
            "eval_mean_return": float(eval_mean[self.live].mean()) if self.live.any() else None,
            "epsilon": float(chunk_stats["epsilon"].mean()),
            "steps_per_second": steps_per_second,
        }
        return rows

    def final_summary(self) -> dict[str, Any]:
        """The best weights evaluated on fresh episodes, summarized."""
        if not self.live.any() and not (self.run.path / BEST).is_file():
            # Diverged before its first evaluation: the initial weights are its last finite ones.
            self.run.save_weights("best", self.driver.real(self.best_params),
                                  {"env_steps": self.progress.best_step, "eval_mean_return": self.progress.best_return})
        final = self.driver.evaluate(
            self.best_params,
            jax_loop.eval_keys(self.seeds, jax_loop.FINAL_EVAL_STREAM, 0),
            self.config.final_eval_episodes,
        )
        return make_summary(self.env, self.config, self.seeds, self.progress, final)


def make_summary(env: Env, config: RunConfig, seeds: list[int], progress: Progress, final: np.ndarray) -> dict[str, Any]:
    threshold = env.solve_threshold
    per_seed = []
    for i, seed in enumerate(seeds):
        mean = float(final[i].mean())
        per_seed.append({
            "seed": seed,
            "steps_to_solve": progress.steps_to_solve[i],
            "seconds_to_solve": progress.seconds_to_solve[i],
            "best_step": progress.best_step[i],
            "best_periodic_eval_return": progress.best_return[i],
            "eval_mean_return": mean,
            "eval_std_return": float(final[i].std()),
            "solved": None if threshold is None else bool(mean >= threshold),
            "diverged": progress.diverged[i],  # None, or {"env_step", "quantity", "checkpoint_step"}
        })
    diverged = sum(d is not None for d in progress.diverged)
    status = "finished" if not diverged else "diverged" if diverged == len(seeds) else "some seeds diverged"
    solve_steps = [s["steps_to_solve"] for s in per_seed]
    all_solved = all(s is not None for s in solve_steps)
    return {
        "env_id": env.env_id,
        "total_steps": progress.env_steps,
        "wall_seconds": round(progress.wall_seconds, 3),
        "compile_seconds": round(progress.compile_seconds, 3),
        # With several seeds: the median over seeds, or null unless every seed reached the threshold.
        "steps_to_solve": _median(solve_steps) if all_solved else None,
        "seconds_to_solve": _median([s["seconds_to_solve"] for s in per_seed]) if all_solved else None,
        "eval_mean_return": float(final.mean()),
        "eval_std_return": float(final.std()),
        "eval_episodes": int(final.shape[1]),
        "eval_weights": "best",
        "solve_threshold": threshold,
        "seeds_solved": sum(bool(s["solved"]) for s in per_seed) if threshold is not None else None,
        "num_seeds": len(seeds),
        "action_masks": uses_masks(config, env),  # acted and learned with the env's legal-action masks
        "status": status,
        "diverged_seeds": [seed for seed, d in zip(seeds, progress.diverged) if d is not None],
        "warnings": list(progress.warnings),
        "per_seed": per_seed,
    }


# What each non-finite quantity is called in messages and summary.json.
LOSS, Q_VALUES, PARAMETERS = "loss", "Q-values", "parameters"


def _check_health(health: Any, progress: Progress, first_step: int, num_envs: int, checkpoint_step: int,
                  gammas: np.ndarray) -> list[int]:
    """Mark seeds whose chunk went non-finite (the first quantity to do so, and its env step);
    raise the |Q| warning once. Returns the seeds newly diverged."""
    newly = []
    for i in range(len(progress.diverged)):
        if progress.diverged[i] is not None:
            continue
        progress.reward_abs_max[i] = max(progress.reward_abs_max[i], float(health.reward_abs_max[i]))
        found = [(int(at), name) for at, name in ((health.nonfinite_loss_at[i], LOSS), (health.nonfinite_q_at[i], Q_VALUES))
                 if at >= 0]
        if found:
            at, quantity = min(found)
            step = first_step + (at + 1) * num_envs
        elif not health.params_finite[i]:
            quantity, step = PARAMETERS, progress.env_steps  # found at the chunk's end
        else:
            _check_q_scale(progress, i, float(health.q_abs_max[i]), float(gammas[i]))
            continue
        progress.diverged[i] = {"env_step": int(step), "quantity": quantity, "checkpoint_step": int(checkpoint_step)}
        newly.append(i)
    return newly


Q_MARGIN = 10.0  # |Q| this many times what the rewards allow is called out


def _check_q_scale(progress: Progress, seed_index: int, q_abs: float, gamma: float) -> None:
    """Warn once per run when |Q| exceeds Q_MARGIN x max|r| / (1 - gamma), the largest discounted
    return the rewards seen so far allow."""
    reward = progress.reward_abs_max[seed_index]
    if progress.warnings or gamma >= 1.0 or reward <= 0.0:
        return
    bound = reward / (1.0 - gamma)
    if q_abs > Q_MARGIN * bound:
        message = (f"|Q| reached {q_abs:.3g} by env step {progress.env_steps} (seed index {seed_index}), over "
                   f"{Q_MARGIN:g}x the {bound:.3g} that the rewards seen so far allow (max |r| {reward:g} / (1 - gamma "
                   f"{gamma:g})): the values are diverging; lower learning_rate or turn on max_grad_norm")
        progress.warnings.append(message)
        warnings.warn(message, QValueWarning, stacklevel=2)


def _gammas(driver: Any, config: RunConfig) -> np.ndarray:
    """Each seed's discount (a sweep's members may differ)."""
    hypers = getattr(driver, "hypers", None)
    if hypers and "gamma" in hypers:
        return np.asarray(driver.real(hypers["gamma"]), np.float64)
    return np.full(driver.num_seeds, config.gamma, np.float64)


def _frozen_states(real_state: Any, diverged: Any) -> dict[int, Any]:
    """Seed index -> that seed's slice of a host training state (numpy copies)."""
    indices = diverged.keys() if isinstance(diverged, dict) else [i for i, d in enumerate(diverged) if d is not None]
    return {i: jax.tree.map(lambda x: np.array(x[i]), real_state) for i in indices}


def _substitute(real_state: Any, frozen: dict[int, Any]) -> Any:
    """A copy of a host training state with the frozen seeds' slices put back."""
    def put(x, *slices):
        out = np.array(x)
        for i, value in zip(frozen, slices):
            out[i] = value
        return out

    return jax.tree.map(put, real_state, *frozen.values())


def divergence_message(run_path: Any, summary: dict[str, Any], config: RunConfig) -> str:
    """One line: which seed diverged in what and where, the likely cause and a fix that works."""
    per_seed = [s for s in summary["per_seed"] if s["diverged"] is not None]
    first = min(per_seed, key=lambda s: s["diverged"]["env_step"])
    where = first["diverged"]
    who = f"seed {first['seed']}" if summary["num_seeds"] == 1 else f"{len(per_seed)} of {summary['num_seeds']} seeds (first seed {first['seed']})"
    clipping = getattr(config, "max_grad_norm", None)
    rate = getattr(config, "learning_rate", None)
    cause = "updates too large"
    if rate is not None:
        cause += f" for learning_rate {rate:g}" + (f" with {config.optimizer}" if hasattr(config, "optimizer") else "")
        cause += " and no gradient clipping" if clipping == 0 else ""
    if rate is not None:
        # A tenth of the rate, and no more than the DQN default: a step that diverged by a factor
        # of a thousand would diverge again at a tenth of it.
        rate = min(rate / 10, 1e-3)
    if summary["status"] == "diverged":
        kept = (f"the run stopped; best, last and checkpoint keep the last finite weights (checkpoint at env step "
                f"{where['checkpoint_step']})")
        fix = f"dqnx train --resume {run_path} --set learning_rate={rate:g}" if rate is not None else "start a new run"
        if clipping == 0:
            fix += " (or a new run with --set max_grad_norm=10)"
    else:
        kept = "they were frozen at their last finite weights and the others finished"
        fix = (f"train again with --set learning_rate={rate:g}" if rate is not None else "train again") + (
            " --set max_grad_norm=10" if clipping == 0 else "")
    return (f"diverged: the {where['quantity']} of {who} became non-finite by env step {where['env_step']} "
            f"(likely {cause}); {kept}; fix: {fix}")
