"""Fresh greedy episodes of a trained agent, Q-values included, as `Episode`s.

The episodes are played by the backend's one episode player (dqnx.drivers.episodes:
`play_jax` side by side in one jitted loop, every step recorded and each episode then cut
at its end; `play_host` one by one on the host). This is what the Q-vs-return plot and the
recordings are made from.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

# Episode keys of these rollouts: a stream of their own, apart from training and evaluation.
ROLLOUT_STREAM = 7


@dataclass(frozen=True)
class Episode:
    """One greedy episode: observations o_0..o_T (o_T the final one), and per step t < T
    the action taken, its reward and the agent's Q(o_t, .)."""

    observations: np.ndarray  # (T + 1, *obs_shape)
    actions: np.ndarray  # (T,)
    rewards: np.ndarray  # (T,)
    q_values: np.ndarray  # (T, num_actions)
    terminated: bool  # False: cut by the time limit (the return-to-go is then truncated too)

    @property
    def length(self) -> int:
        return int(self.actions.shape[0])

    @property
    def total_return(self) -> float:
        return float(self.rewards.sum())

    @property
    def q_taken(self) -> np.ndarray:
        """Q(s_t, a_t) of the actions the agent took."""
        return self.q_values[np.arange(self.length), self.actions]

    def returns_to_go(self, gamma: float) -> np.ndarray:
        """Observed discounted return G_t = r_t + gamma r_{t+1} + ... up to the episode's end."""
        out = np.zeros(self.length, np.float64)
        running = 0.0
        for t in range(self.length - 1, -1, -1):
            running = float(self.rewards[t]) + gamma * running
            out[t] = running
        return out


@functools.lru_cache(maxsize=8)
def _rollout_fn(algorithm: str, config: Any, env: Any, episodes: int):
    import jax

    from dqnx.agents import make_learner, uses_masks
    from dqnx.agents.exploration import greedy
    from dqnx.drivers.episodes import play_jax
    from dqnx.drivers.jax_loop import episode_keys

    learner = make_learner(algorithm, config, env)

    def rollout(params, key):
        reset_key, loop_key = episode_keys(key)

        def choose(obs, t, mask=None):  # mask: the legal actions, when the run used masks
            q = learner.q_values(params, obs)
            return greedy(q, mask), q

        return play_jax(env, choose, jax.random.split(reset_key, episodes),
                        lambda t: jax.random.split(jax.random.fold_in(loop_key, t), episodes), record=True,
                        masked=uses_masks(config, env))[1]

    return jax.jit(rollout)


def greedy_episodes(agent: Any, episodes: int, seed: int = 0, seed_index: int = 0) -> list[Episode]:
    """`episodes` fresh greedy episodes of `agent` (a dqnx.trained.Agent) under one trained seed's weights."""
    import jax

    params = jax.tree.map(lambda x: x[seed_index], agent.params)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), ROLLOUT_STREAM)
    fn = _rollout_fn(agent.algorithm, agent.config, agent.env, episodes)
    obs, q, action, reward, terminated, truncated, final_obs, alive = map(np.asarray, jax.device_get(tuple(fn(params, key))))
    out = []
    for e in range(episodes):
        length = int(alive[:, e].sum())  # alive is True from the first step up to the last one
        last = length - 1
        out.append(Episode(
            observations=np.concatenate([obs[:length, e], final_obs[last:length, e]]),
            actions=action[:length, e].astype(np.int64),
            rewards=reward[:length, e].astype(np.float64),
            q_values=q[:length, e].astype(np.float64),
            terminated=bool(terminated[last, e]),
        ))
    return out


def gymnasium_greedy_episodes(env: Any, q_values: Any, episodes: int, seed: int = 0, masked: bool = False) -> list[Episode]:
    """The same for a Gymnasium env, stepped on the host: `q_values(obs) -> (num_actions,)`;
    episode i resets with seed + i. masked: the greedy action ranges over the legal actions of
    each step's info["action_mask"] (a run trained with masks)."""
    from dqnx.drivers.episodes import play_host

    def choose(obs, mask=None):
        q = np.asarray(q_values(obs), np.float64)
        return int((q if mask is None else np.where(mask, q, -np.inf)).argmax()), q

    return [Episode(observations=np.stack([np.asarray(o) for o in e.observations]),
                    actions=np.asarray(e.actions, np.int64), rewards=np.asarray(e.rewards),
                    q_values=np.stack(e.q_values), terminated=e.terminated)
            for e in play_host(env, choose, [seed + index for index in range(episodes)], masked=masked)]
