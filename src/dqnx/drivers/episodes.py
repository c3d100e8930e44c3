"""Playing whole episodes with a fixed policy: one implementation per backend.

Periodic and final evaluation (jax_loop.py), the Q-vs-return plot and recordings
(viz/rollout.py, viz/record.py) and expert datasets (imitation/dataset.py) all play
episodes with a trained policy; they differ only in the policy, in where their random
keys or reset seeds come from (each caller keeps its own streams, so the best weights a
run chose and the datasets it wrote stay the same) and in what they keep of each step.

- `play_jax`: episodes of a JAX-native env side by side in one `lax.while_loop`, which
  stops as soon as every episode has ended (evaluating an early, short-lived agent is
  nearly free); optionally every step recorded.
- `play_host`: episodes of a Gymnasium env one after another on the host, each reset
  with its own seed; every step recorded, and a callback per step (frames for a recording).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Steps(NamedTuple):
    """Every step of `play_jax`'s episodes, leading axes [max_episode_steps, episodes].

    `alive` marks the steps inside each episode (a prefix of the time axis); `final_obs`
    is the true successor of `obs`, also at an episode's end. `q` is None when the policy
    gives no Q-values.
    """

    obs: Any
    q: Any
    action: Any
    reward: Any
    terminated: Any
    truncated: Any
    final_obs: Any
    alive: Any


def play_jax(env: Any, choose: Callable[..., tuple[jax.Array, Any]], reset_keys: jax.Array,
             step_keys: Callable[[jax.Array], jax.Array], record: bool = False,
             masked: bool = False) -> tuple[jax.Array, Steps | None]:
    """(returns [episodes], Steps or None) of episodes reset with `reset_keys` [episodes].

    choose(obs [episodes, ...], t) -> (action, q or None); step_keys(t) -> the env step keys
    [episodes] of step t. Traceable: jit it, or call it inside a jitted function.
    masked: choose(obs, t, mask) also gets the legal actions [episodes, num_actions] (env.action_mask).
    """
    episodes = reset_keys.shape[0]
    obs, env_state = jax.vmap(env.reset)(reset_keys)
    horizon = env.max_episode_steps

    def one_step(obs, env_state, t):
        action, q = choose(obs, t, jax.vmap(env.action_mask)(env_state)) if masked else choose(obs, t)
        next_obs, env_state, reward, terminated, truncated, final_obs = jax.vmap(env.step)(step_keys(t), env_state, action)
        return next_obs, env_state, (obs, q, action, reward, terminated, truncated, final_obs)

    records = None
    if record:  # buffers shaped like one step's outputs, with a leading time axis
        shapes = jax.eval_shape(one_step, obs, env_state, jnp.zeros((), jnp.int32))[2]
        records = Steps(*jax.tree.map(lambda s: jnp.zeros((horizon, *s.shape), s.dtype), shapes),
                        alive=jnp.zeros((horizon, episodes), bool))

    def running(carry):
        t, _, _, _, alive, _ = carry
        return (t < horizon) & alive.any()

    def step(carry):
        t, obs, env_state, returns, alive, records = carry
        obs, env_state, outputs = one_step(obs, env_state, t)
        reward, terminated, truncated = outputs[3], outputs[4], outputs[5]
        if records is not None:
            records = jax.tree.map(lambda buffer, value: buffer.at[t].set(value), records, Steps(*outputs, alive=alive))
        returns = returns + jnp.where(alive, reward, 0.0)
        return t + 1, obs, env_state, returns, alive & ~(terminated | truncated), records

    carry = (jnp.zeros((), jnp.int32), obs, env_state, jnp.zeros(episodes, jnp.float32), jnp.ones(episodes, bool), records)
    _, _, _, returns, _, records = jax.lax.while_loop(running, step, carry)
    return returns, records


class HostEpisode(NamedTuple):
    """One episode of `play_host`: observations o_0..o_T, and per step the action, reward and Q(o_t, .)."""

    observations: list[Any]
    actions: list[int]
    rewards: list[float]
    q_values: list[Any]  # empty when the policy gives none
    terminated: bool
    ended: bool  # False: cut short by `max_steps`


def play_host(env: Any, choose: Callable[[Any], tuple[int, Any]], reset_seeds: Iterable[int],
              max_steps: int | None = None, on_step: Callable[[Any], None] | None = None) -> list[HostEpisode]:
    """Episodes of a Gymnasium env instance, episode i reset with the i-th of `reset_seeds`.

    choose(obs) -> (action, q or None). max_steps: stop after this many steps in all (the
    last episode then ends early); on_step(env) after every reset and step (e.g. to render).
    """
    out: list[HostEpisode] = []
    taken = 0
    for reset_seed in reset_seeds:
        if max_steps is not None and taken >= max_steps:
            break
        obs, _ = env.reset(seed=reset_seed)
        if on_step is not None:
            on_step(env)
        episode = HostEpisode([obs], [], [], [], False, False)
        terminated = truncated = False
        while not (terminated or truncated) and (max_steps is None or taken < max_steps):
            action, q = choose(obs)
            obs, reward, terminated, truncated, _ = env.step(action)
            if on_step is not None:
                on_step(env)
            episode.observations.append(obs)
            episode.actions.append(int(action))
            episode.rewards.append(float(reward))
            if q is not None:
                episode.q_values.append(q)
            taken += 1
        out.append(episode._replace(terminated=bool(terminated), ended=bool(terminated or truncated)))
    return out


def alive_length(alive: np.ndarray) -> int:
    """Steps inside an episode from its `alive` column (a prefix: an episode never comes back to life)."""
    return int(np.asarray(alive).sum())
