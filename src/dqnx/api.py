"""Python entry points: train, load, evaluate.

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
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dqnx.agents.dqn import make_dqn  # noqa: E402
from dqnx.config import DQNConfig, build_config  # noqa: E402
from dqnx.drivers import jax_loop  # noqa: E402
from dqnx.drivers.trainer import Reporter, train_run  # noqa: E402
from dqnx.envs import JaxEnv, make_env  # noqa: E402
from dqnx.errors import UsageError  # noqa: E402
from dqnx.runs.run_dir import RunDir, default_run_dir  # noqa: E402


@dataclass(frozen=True)
class Run:
    """A finished run: its directory, configuration and summary."""

    path: Path
    env_id: str
    seeds: list[int]
    config: DQNConfig
    summary: dict[str, Any]


def _seed_list(seed: int, seeds: int) -> list[int]:
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds <= 0:
        raise UsageError(f"seeds must be a positive number of seeds, got {seeds!r}; e.g. --seeds 4")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
    return [seed + i for i in range(seeds)]


def train(
    env_id: str | None = None,
    *,
    steps: int | None = None,
    seed: int = 0,
    seeds: int = 1,
    config: DQNConfig | dict[str, Any] | None = None,
    config_file: str | Path | None = None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool | Reporter = False,
    stop_when_solved: bool = False,
) -> Run:
    """Train DQN on `env_id` (or continue the run in `resume`) and return the finished Run.

    `config` is a full DQNConfig, or a dict of overrides applied over the env's preset;
    `config_file` is a TOML file of overrides; `steps` overrides total_steps.
    `seeds` > 1 trains seeds seed, seed+1, ... side by side in one compiled program.
    """
    if resume is not None:
        run = RunDir.open(resume)
        env_id_saved, seed_list, cfg = run.read_config()
        if env_id is not None and env_id != env_id_saved:
            raise UsageError(f"{resume} is a {env_id_saved} run, not {env_id}; drop the env id to resume it")
        if steps is not None:
            if steps < cfg.total_steps:
                raise UsageError(f"--steps {steps} is below the run's total_steps {cfg.total_steps}; resume can only extend a run")
            if steps != cfg.total_steps and cfg.lr_schedule != "constant":
                raise UsageError(f"this run's {cfg.lr_schedule} learning-rate schedule is fixed by its total_steps; resume it without --steps")
            cfg = cfg.replace(total_steps=steps)
        env = make_env(env_id_saved)
    else:
        if env_id is None:
            raise UsageError("name an environment to train on, e.g. dqnx train CartPole-v1")
        env = make_env(env_id)
        seed_list = _seed_list(seed, seeds)
        cfg = _resolve_config(env_id, config, config_file, steps)
        run = RunDir.create(out if out is not None else default_run_dir(env_id), env_id, seed_list, cfg)
    reporter = progress if isinstance(progress, Reporter) else (
        _rich_reporter(env.env_id, seed_list, run.path, resumed=resume is not None) if progress else None
    )
    summary = train_run(run, env, cfg, seed_list, resume=resume is not None, reporter=reporter,
                        stop_when_solved=stop_when_solved)
    return Run(path=run.path, env_id=env.env_id, seeds=seed_list, config=cfg, summary=summary)


def _resolve_config(env_id: str, config: Any, config_file: Any, steps: int | None) -> DQNConfig:
    overrides: dict[str, Any] = {}
    base = None
    if isinstance(config, DQNConfig):
        base = config
    elif isinstance(config, dict):
        overrides.update(config)
    elif config is not None:
        raise UsageError(f"config must be a DQNConfig or a dict of overrides, got {type(config).__name__}")
    if steps is not None:
        overrides["total_steps"] = steps
    return build_config(env_id, config_file=config_file, overrides=overrides, base=base)


def _rich_reporter(env_id: str, seeds: list[int], path: Path, resumed: bool) -> Reporter:
    from dqnx.ui import RichReporter

    label = f"{env_id} seed {seeds[0]}" if len(seeds) == 1 else f"{env_id} seeds {seeds[0]}-{seeds[-1]}"
    verb = "resuming" if resumed else "training"
    return RichReporter(label, header=f"dqnx: {verb} {label} (backend: gymnax, compiled JAX loop) -> {path}")


@dataclass(frozen=True)
class Agent:
    """Trained weights of one run (a leading seed axis on every array) and how to use them."""

    run_dir: Path | None
    env: JaxEnv
    seeds: list[int]
    config: DQNConfig
    params: Any
    weights: str
    weights_info: dict[str, Any]

    @property
    def env_id(self) -> str:
        return self.env.env_id

    def q_values(self, obs: Any, seed_index: int = 0) -> np.ndarray:
        """Q(s, .) for one observation or a batch of them, under one seed's weights."""
        obs = jnp.asarray(obs, jnp.float32)
        single = obs.ndim == len(self.env.obs_shape)
        params = jax.tree.map(lambda x: x[seed_index], self.params)
        q = _q_function(self.config, self.env)(params, obs[None] if single else obs)
        return np.asarray(q[0] if single else q)

    def act(self, obs: Any, seed_index: int = 0) -> np.ndarray:
        """Greedy action(s)."""
        return self.q_values(obs, seed_index).argmax(axis=-1)


def _q_function(config: DQNConfig, env: JaxEnv):
    return jax.jit(make_dqn(config, env.obs_shape, env.num_actions).q_values)


def load(run_dir: str | Path, weights: str = "best") -> Agent:
    """Load a run's `best` (highest periodic greedy evaluation) or `last` weights."""
    if weights not in ("best", "last"):
        raise UsageError(f"weights must be 'best' or 'last', got {weights!r}")
    run = RunDir.open(run_dir)
    env_id, seeds, cfg = run.read_config()
    env = make_env(env_id)
    template = jax_loop.init_states(jax_loop.make_program(cfg, env), seeds).agent.params
    params, info = run.load_weights(weights, template)
    return Agent(run_dir=run.path, env=env, seeds=seeds, config=cfg, params=params, weights=weights, weights_info=info)


def evaluate(agent: Agent | str | Path, episodes: int = 100, seed: int = 0, weights: str = "best") -> dict[str, Any]:
    """Greedy returns over `episodes` fresh episodes per trained seed.

    Returns {'mean_return', 'std_return', 'episodes', 'weights', 'per_seed': [...]}.
    """
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes <= 0:
        raise UsageError(f"episodes must be a positive integer, got {episodes!r}")
    if not isinstance(agent, Agent):
        agent = load(agent, weights=weights)
    program = jax_loop.make_program(agent.config, agent.env)
    compiled = jax_loop.Compiled(program, len(agent.seeds))
    keys = jax_loop.eval_keys([seed] * len(agent.seeds), jax_loop.USER_EVAL_STREAM, 0)
    returns = compiled.evaluate(compiled.place(agent.params), keys, episodes)
    return {
        "env_id": agent.env_id,
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "episodes": int(returns.size),
        "weights": agent.weights,
        "weights_env_steps": agent.weights_info.get("env_steps"),
        "per_seed": [
            {"seed": s, "mean_return": float(r.mean()), "std_return": float(r.std())} for s, r in zip(agent.seeds, returns)
        ],
    }
