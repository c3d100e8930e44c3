"""Trained agents: load a run directory's weights, act and evaluate with them.

    agent = load("runs/CartPole-v1-...")        # best weights by default
    agent.q_values(obs); agent.act(obs)
    evaluate(agent, episodes=100)              # {'mean_return': ..., 'std_return': ..., ...}

This module sits below api.py and above runs/ (the run directory) and drivers/ (an
evaluation runs the training loop's greedy evaluation): viz/, search/, imitation/ and
deploy/ use it, and api.py re-exports `load`, `load_weights`, `evaluate` and `Agent` as
dqnx's public names.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dqnx import jax_setup

jax_setup.configure()  # before JAX starts its backend: one host device per core, compile cache

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dqnx.agents import make_learner, uses_masks  # noqa: E402
from dqnx.config import RunConfig  # noqa: E402
from dqnx.drivers import jax_loop, make_driver  # noqa: E402
from dqnx.envs import Env, make_env  # noqa: E402
from dqnx.envs.source import SpacesEnv  # noqa: E402
from dqnx.errors import UsageError  # noqa: E402
from dqnx.runs.run_dir import RunDir, RunSpec, spaces_env  # noqa: E402
from dqnx.runs.trust import require_trust  # noqa: E402


@dataclass(frozen=True)
class Agent:
    """Trained weights of one run (a leading seed axis on every array) and how to use them."""

    run_dir: Path | None
    env: Env
    algorithm: str  # 'dqn', 'tabular-q', 'sarsa' or 'linear-q'
    seeds: list[int]
    config: RunConfig
    params: Any
    weights: str
    weights_info: dict[str, Any]

    @property
    def action_masks(self) -> bool:
        """Whether this agent was trained (and is evaluated) with the env's action masks."""
        return uses_masks(self.config, self.env)

    @property
    def env_id(self) -> str:
        return self.env.env_id

    def q_values(self, obs: Any, seed_index: int = 0) -> np.ndarray:
        """Q(s, .) for one observation or a batch of them, under one seed's weights.

        For a Discrete observation space, a state index (or an array of them) works too.
        Every action's Q, legal or not (as export and serve return them); `act` applies masks.
        """
        # Prepared in numpy, then one jitted call: each eager JAX op here would cost more than the network.
        obs = np.asarray(obs)
        if self.env.num_states is not None and obs.ndim <= 1 and np.issubdtype(obs.dtype, np.integer):
            obs = obs[..., None] == np.arange(self.env.num_states)  # one-hot (all zeros out of range, as jax.nn.one_hot)
        obs = obs if obs.dtype == np.uint8 else obs.astype(np.float32)  # images stay bytes, as in training
        single = obs.ndim == len(self.env.obs_shape)
        q = np.asarray(self._jitted_q(self._seed_params[seed_index], obs[None] if single else obs))
        return q[0] if single else q

    def act(self, obs: Any, mask: Any = None, seed_index: int = 0) -> np.ndarray:
        """Greedy action(s): argmax of Q over the legal actions (the first on ties).

        mask: the legal actions of obs, bool [num_actions] (or [batch, num_actions], or one
        row for the whole batch), True where legal: for an agent trained with masks
        (`action_masks`), pass the env's (Gymnasium: info["action_mask"]); None: all legal.
        """
        q = self.q_values(obs, seed_index)
        if mask is None:
            return q.argmax(axis=-1)
        legal = np.asarray(mask)
        if legal.shape not in (q.shape, q.shape[-1:]):
            raise UsageError(f"mask must have shape {q.shape[-1:]} or {q.shape} (True where the action is legal), "
                             f"got {legal.shape}")
        legal = legal.astype(bool)
        if not legal.any(axis=-1).all():
            raise UsageError("mask allows no action; at least one must be True")
        return np.where(legal, q, -np.inf).argmax(axis=-1)

    @functools.cached_property
    def _seed_params(self) -> list[Any]:
        """Each seed's weights, sliced out of the seed axis once (a slice costs more than the forward pass)."""
        return [jax.tree.map(lambda x, i=i: x[i], self.params) for i in range(len(self.seeds))]

    @functools.cached_property
    def _jitted_q(self) -> Any:
        return _q_function(self.algorithm, self.config, self.env)


@functools.lru_cache(maxsize=16)
def _q_function(agent: str, config: RunConfig, env: Env):
    """The jitted Q-function, built once per (agent, config, env) rather than on every call."""
    return jax.jit(make_learner(agent, config, env).q_values)


def load(run_dir: str | Path, weights: str = "best", env: Any = None, trust_env_code: bool = False) -> Agent:
    """Load a run's `best` (highest periodic greedy evaluation) or `last` weights.

    env: for a run trained on a Gymnasium instance or factory that its recorded id
    cannot rebuild, pass the same kind of environment again; passing it also means
    nothing the run directory names is imported.
    trust_env_code: a run whose environment needs code its files name (module:Class,
    package:EnvId, wrappers) and that this user did not create here is refused unless
    this is True (see dqnx.runs.trust). load_weights needs neither.
    """
    if weights not in ("best", "last"):
        raise UsageError(f"weights must be 'best' or 'last', got {weights!r}")
    run = RunDir.open(run_dir)
    spec = run.read_config()
    if env is not None:
        built = make_env(env, None, spec.backend)
    else:
        require_trust(spec.source, str(run.path), trust_env_code)
        built = make_env(spec.env_id, spec.env_params, spec.backend, spec.wrappers)
    return _load_agent(run, spec, built, weights)


def load_weights(run_dir: str | Path, weights: str = "best", trust_env_code: bool = False) -> Agent:
    """A run's weights on its recorded spaces only (config.json's "spaces"): Q-values and greedy
    actions work, playing the environment does not. Imports nothing the run names, so it needs
    neither the environment's package nor trust in its code (show, export and serve use this).
    A run written before spaces were recorded falls back to load(run_dir, weights, trust_env_code)."""
    if weights not in ("best", "last"):
        raise UsageError(f"weights must be 'best' or 'last', got {weights!r}")
    run = RunDir.open(run_dir)
    spec = run.read_config()
    if spec.spaces is None:
        return load(run_dir, weights=weights, trust_env_code=trust_env_code)
    return _load_agent(run, spec, spaces_env(run.path), weights)


def _load_agent(run: RunDir, spec: RunSpec, built: Any, weights: str) -> Agent:
    learner = make_learner(spec.agent, spec.config, built)
    keys = jnp.stack([jax_loop.seed_key(s) for s in spec.seeds])
    # Shapes only: building the real initial state would allocate the replay buffer.
    template = jax.eval_shape(lambda: jax.vmap(learner.init)(keys).params)
    params, info = run.load_weights(weights, template)
    params = jax.tree.map(jnp.asarray, params)
    return Agent(run_dir=run.path, env=built, algorithm=spec.agent, seeds=spec.seeds, config=spec.config, params=params,
                 weights=weights, weights_info=info)


def evaluate(agent: Agent | str | Path, episodes: int = 100, seed: int = 0, weights: str = "best",
             trust_env_code: bool = False) -> dict[str, Any]:
    """Greedy returns over `episodes` fresh episodes per trained seed (trust_env_code: as for load).

    Returns {'mean_return', 'std_return', 'episodes', 'weights', 'per_seed': [...]}.
    """
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes <= 0:
        raise UsageError(f"episodes must be a positive integer, got {episodes!r}")
    if not isinstance(agent, Agent):
        agent = load(agent, weights=weights, trust_env_code=trust_env_code)
    if isinstance(agent.env, SpacesEnv):
        raise UsageError("this agent was loaded from its recorded spaces only (load_weights); evaluating plays the "
                         "environment: load it with dqnx.load(path) instead")
    driver = make_driver(agent.config, agent.env, make_learner(agent.algorithm, agent.config, agent.env), agent.seeds)
    try:
        keys = jax_loop.eval_keys([seed] * len(agent.seeds), jax_loop.USER_EVAL_STREAM, 0)
        returns = driver.evaluate(driver.place(agent.params), keys, episodes)
    finally:
        driver.close()
    return {
        "env_id": agent.env_id,
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "episodes": episodes,  # per trained seed; the statistics pool all seeds' episodes
        "seeds": len(agent.seeds),
        "weights": agent.weights,
        "weights_env_steps": agent.weights_info.get("env_steps"),
        "per_seed": [
            {"seed": s, "mean_return": float(r.mean()), "std_return": float(r.std())} for s, r in zip(agent.seeds, returns)
        ],
    }
