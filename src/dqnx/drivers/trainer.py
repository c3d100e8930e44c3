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
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from dqnx.agents import make_learner, uses_masks
from dqnx.config import RunConfig
from dqnx.drivers import jax_loop, make_driver
from dqnx.envs import Env
from dqnx.errors import Interrupted, UsageError
from dqnx.protocols import Learner
from dqnx.runs.run_dir import RunDir
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

    @classmethod
    def fresh(cls, num_seeds: int) -> "Progress":
        none = [None] * num_seeds
        return cls(0, 0.0, 0.0, list(none), list(none), list(none), list(none))


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
                chunk_start = time.perf_counter()
                iterations = jax_loop.chunk_iterations(config, progress.env_steps)
                chunk_stats = loop.run_chunk(iterations)
                eval_mean, eval_std = loop.evaluate_and_keep_best()
                rows = loop.record(chunk_stats, eval_mean, eval_std, iterations, chunk_start)
                if board is not None:
                    board.write(rows)
                reporter.update(progress)
                solved_all = env.solve_threshold is not None and all(s is not None for s in progress.steps_to_solve)
                stop_requested = on_eval is not None and bool(on_eval(progress.env_steps, eval_mean))
                finished = progress.env_steps >= config.total_steps or (stop_when_solved and solved_all) or stop_requested
                if signals.raised is not None or finished or progress.env_steps - loop.last_checkpoint >= config.checkpoint_every:
                    loop.checkpoint()
                if signals.raised is not None:
                    raise Interrupted(str(run.path), progress.env_steps)
                if finished:
                    break
    except BaseException:
        if board is not None:
            board.close()  # an interrupted run keeps the events written so far
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
            progress = Progress(**meta["progress"])
        except (KeyError, TypeError):
            raise UsageError(f"{run.path} has a checkpoint without dqnx progress metadata; it is corrupted") from None
        run.truncate_metrics(progress.env_steps)
        run.set_total_steps(config.total_steps)  # resume may extend a run; only after its checkpoint loaded
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

    def checkpoint(self) -> None:
        real_state, real_best = self.driver.real((self.state, self.best_params))
        self.run.save_checkpoint((real_state, real_best), {"progress": asdict(self.progress)})
        self.run.save_weights("last", real_state.agent.params, {"env_steps": self.progress.env_steps})
        self.last_checkpoint = self.progress.env_steps

    def run_chunk(self, iterations: int) -> dict[str, np.ndarray]:
        """`iterations` iterations of every seed; the chunk's per-seed statistics."""
        self.state, output = self.driver.chunk(self.state, iterations, self.progress.env_steps)
        jax_loop.check_legal_actions(self.env.env_id, output.no_legal_action, self.progress.env_steps,
                                     self.config.num_envs, self.seeds)
        chunk_stats = jax_loop.summarize_chunk(output)
        self.progress.recent_returns = _remember_returns(self.progress.recent_returns, jax.device_get(output.finished_return))
        self.progress.env_steps = int(jax.device_get(self.state.env_steps[0]))
        return chunk_stats

    def evaluate_and_keep_best(self) -> tuple[np.ndarray, np.ndarray]:
        """The periodic greedy evaluation (mean, std per seed); a better mean keeps those weights as `best`."""
        progress, threshold = self.progress, self.env.solve_threshold
        returns = self.driver.evaluate(
            self.state.agent.params,
            jax_loop.eval_keys(self.seeds, jax_loop.PERIODIC_EVAL_STREAM, progress.env_steps),
            self.config.eval_episodes,
        )
        eval_mean, eval_std = returns.mean(axis=1), returns.std(axis=1)
        self.wall = time.perf_counter() - self.started
        improved = np.array([b is None or m > b for m, b in zip(eval_mean, progress.best_return)])
        if improved.any():
            mask = np.pad(improved, (0, self.driver.padding))  # a pad seed's best_params never reach a file
            self.best_params = jax_loop.select_where(mask, self.state.agent.params, self.best_params)
        for i, mean in enumerate(eval_mean):
            if improved[i]:
                progress.best_return[i], progress.best_step[i] = float(mean), progress.env_steps
            if threshold is not None and progress.steps_to_solve[i] is None and mean >= threshold:
                progress.steps_to_solve[i] = progress.env_steps
                progress.seconds_to_solve[i] = round(self.wall, 3)
        if improved.any():
            self.run.save_weights("best", self.driver.real(self.best_params),
                                  {"env_steps": progress.best_step, "eval_mean_return": progress.best_return})
        return eval_mean, eval_std

    def record(self, chunk_stats: dict[str, np.ndarray], eval_mean: np.ndarray, eval_std: np.ndarray, iterations: int,
               chunk_start: float) -> list[dict[str, Any]]:
        """The chunk's metrics rows (one per seed), appended to metrics.csv; progress brought up to date."""
        progress, config = self.progress, self.config
        seconds = time.perf_counter() - chunk_start
        steps_per_second = iterations * config.num_envs / max(seconds, 1e-9)
        progress.wall_seconds = self.wall
        progress.compile_seconds += self.driver.compile_seconds - self.compile_before
        self.compile_before = self.driver.compile_seconds
        updates = np.asarray(jax.device_get(self.state.agent.updates))
        rows = []
        for i, seed in enumerate(self.seeds):
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
        recent = chunk_stats["train_return"][np.isfinite(chunk_stats["train_return"])]
        progress.last_chunk = {
            "train_return": float(recent.mean()) if recent.size else None,
            "eval_mean_return": float(eval_mean.mean()),
            "epsilon": float(chunk_stats["epsilon"].mean()),
            "steps_per_second": steps_per_second,
        }
        return rows

    def final_summary(self) -> dict[str, Any]:
        """The best weights evaluated on fresh episodes, summarized."""
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
        })
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
        "per_seed": per_seed,
    }
