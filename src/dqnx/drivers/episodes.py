"""Playing whole episodes with a fixed policy: one implementation per backend.

Periodic and final evaluation (jax_loop.py), the Q-vs-return plot and recordings
(viz/rollout.py, viz/record.py) and expert datasets (imitation/dataset.py) all play
episodes with a trained policy; they differ only in the policy, in where their random
keys or reset seeds come from (each caller keeps its own streams, so the best weights a
run chose and the datasets it wrote stay the same) and in what they keep of each step.

- `play_jax`: episodes of a JAX-native env side by side in one `lax.while_loop`, which
  stops as soon as every episode has ended (evaluating an early, short-lived agent is
  nearly free); optionally every step recorded.
- `play_vector`: episodes of a Gymnasium vector env's copies side by side on the host,
  each copy reset once with its own seed and then auto-reset (periodic and final evaluation
  of the host loop); optionally every step recorded.
- `play_host`: episodes of one Gymnasium env one after another, each reset with its own
  seed, every step recorded, and a callback per step (frames for a recording): the same
  loop, `play_vector`, on that env seen as a vector env of one copy.

Each passes the policy the legal actions of each observation when asked (`masked` in
`play_jax` and `play_host`; `play_vector` hands its policy the vector env's info): a run
trained with action masks is played with them, so no caller shows or records an illegal action.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dqnx.errors import EnvironmentFailure


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
             masked: bool = False, policy_state: Any = None) -> tuple[jax.Array, Steps | None]:
    """(returns [episodes], Steps or None) of episodes reset with `reset_keys` [episodes].

    choose(obs [episodes, ...], t) -> (action, q or None); step_keys(t) -> the env step keys
    [episodes] of step t. Traceable: jit it, or call it inside a jitted function.
    masked: choose(obs, t, mask) also gets the legal actions [episodes, num_actions] (env.action_mask).
    policy_state: a policy with a state between steps (a recurrent learner's memory, its
    initial value given here): choose(..., policy_state=state) -> (action, q or None, state).
    Only each env's first episode counts, so the state never needs a reset.
    """
    episodes = reset_keys.shape[0]
    obs, env_state = jax.vmap(env.reset)(reset_keys)
    horizon = env.max_episode_steps
    stateful = policy_state is not None

    def one_step(obs, env_state, policy_state, t):
        args = (obs, t, jax.vmap(env.action_mask)(env_state)) if masked else (obs, t)
        if stateful:
            action, q, policy_state = choose(*args, policy_state=policy_state)
        else:
            action, q = choose(*args)
        next_obs, env_state, reward, terminated, truncated, final_obs = jax.vmap(env.step)(step_keys(t), env_state, action)
        return next_obs, env_state, policy_state, (obs, q, action, reward, terminated, truncated, final_obs)

    records = None
    if record:  # buffers shaped like one step's outputs, with a leading time axis
        shapes = jax.eval_shape(one_step, obs, env_state, policy_state, jnp.zeros((), jnp.int32))[3]
        records = Steps(*jax.tree.map(lambda s: jnp.zeros((horizon, *s.shape), s.dtype), shapes),
                        alive=jnp.zeros((horizon, episodes), bool))

    def running(carry):
        t, _, _, _, _, alive, _ = carry
        return (t < horizon) & alive.any()

    def step(carry):
        t, obs, env_state, policy_state, returns, alive, records = carry
        obs, env_state, policy_state, outputs = one_step(obs, env_state, policy_state, t)
        reward, terminated, truncated = outputs[3], outputs[4], outputs[5]
        if records is not None:
            records = jax.tree.map(lambda buffer, value: buffer.at[t].set(value), records, Steps(*outputs, alive=alive))
        returns = returns + jnp.where(alive, reward, 0.0)
        return t + 1, obs, env_state, policy_state, returns, alive & ~(terminated | truncated), records

    carry = (jnp.zeros((), jnp.int32), obs, env_state, policy_state, jnp.zeros(episodes, jnp.float32),
             jnp.ones(episodes, bool), records)
    _, _, _, _, returns, _, records = jax.lax.while_loop(running, step, carry)
    return returns, records


class HostEpisode(NamedTuple):
    """One episode of `play_host`: observations o_0..o_T, and per step the action, reward and Q(o_t, .)."""

    observations: list[Any]  # these four lists: empty unless recorded
    actions: list[int]
    rewards: list[float]
    q_values: list[Any]  # also empty when the policy gives none
    terminated: bool
    ended: bool  # False: cut short by `max_steps`
    episode_return: float  # the rewards summed in order, in float64


def play_vector(vec: Any, choose: Callable[[Any, dict, int], tuple[Any, Any]], reset_seeds: list[int],
                episodes: list[int | None], record: bool = False, max_steps: int | None = None) -> list[list[HostEpisode]]:
    """Episodes of the copies of a Gymnasium vector env side by side: per copy, its episodes in order.

    Copy j is reset once with reset_seeds[j]; its later episodes start where the vector env
    auto-resets it, in the step that ends the previous one (same-step autoreset: info["final_obs"]
    holds the true last observation). Copy j keeps its first episodes[j] episodes (None: all);
    all copies step until each has them, or for max_steps steps (the running episodes are then
    kept cut short). choose(obs [copies, ...], info, t) -> (actions [copies], q [copies, actions]
    or None) at step t. record: keep every observation, action, reward and Q-value (else only
    each episode's return).
    """
    obs, info = vec.reset(seed=list(reset_seeds))
    copies = len(reset_seeds)
    played: list[list[HostEpisode]] = [[] for _ in range(copies)]

    def fresh(j: int) -> HostEpisode:
        return HostEpisode([obs[j]] if record else [], [], [], [], False, False, 0.0)

    def keeps(j: int) -> bool:
        return episodes[j] is None or len(played[j]) < episodes[j]

    current = [fresh(j) for j in range(copies)]
    running = np.zeros(copies)  # float64, summed step by step: each running episode's return
    lengths = np.zeros(copies, np.int64)
    t = 0
    while any(keeps(j) for j in range(copies)) and (max_steps is None or t < max_steps):
        actions, q = choose(obs, info, t)
        t += 1
        obs, reward, terminated, truncated, info = vec.step(actions)
        running += np.asarray(reward)
        lengths += 1
        ended = np.asarray(terminated) | np.asarray(truncated)
        for j in range(copies) if record else ():
            if keeps(j):  # a copy past its quota steps with the others, never kept
                episode = current[j]
                episode.observations.append(info["final_obs"][j] if ended[j] else obs[j])
                episode.actions.append(int(actions[j]))
                episode.rewards.append(float(reward[j]))
                if q is not None:
                    episode.q_values.append(q[j])
        for j in np.nonzero(ended)[0]:
            if keeps(j):
                played[j].append(current[j]._replace(terminated=bool(terminated[j]), ended=True,
                                                     episode_return=float(running[j])))
                current[j] = fresh(j)
        running[ended], lengths[ended] = 0.0, 0
    for j in range(copies):  # episodes cut short by max_steps
        if lengths[j] and keeps(j):
            played[j].append(current[j]._replace(episode_return=float(running[j])))
    return played


class _OneAfterAnother:
    """One Gymnasium env seen as a vector env of one copy that, when an episode ends, resets with
    the next of `reset_seeds` (as long as there is one); on_step(env) after every reset and step."""

    def __init__(self, env: Any, reset_seeds: Iterable[int], on_step: Callable[[Any], None] | None):
        self.env, self.seeds, self.on_step = env, iter(reset_seeds), on_step
        self.info: dict = {}  # the env's info of the current observation (a reset's or the last step's)

    def first_seed(self) -> list[int]:
        return [next(self.seeds)]

    def _reset(self, seed: int) -> tuple[Any, dict]:
        obs, self.info = self.env.reset(seed=seed)
        if self.on_step is not None:
            self.on_step(self.env)
        return obs, self.info

    def reset(self, seed: list[int]) -> tuple[list[Any], dict]:
        return [self._reset(seed[0])[0]], {}

    def step(self, actions: Any) -> tuple[list[Any], list[float], list[bool], list[bool], dict]:
        obs, reward, terminated, truncated, self.info = self.env.step(actions[0])
        if self.on_step is not None:
            self.on_step(self.env)
        info = {"final_obs": [obs]}
        if terminated or truncated:
            seed = next(self.seeds, None)
            if seed is not None:
                obs = self._reset(seed)[0]
        return [obs], [reward], [terminated], [truncated], info


def play_host(env: Any, choose: Callable[..., tuple[int, Any]], reset_seeds: Iterable[int],
              max_steps: int | None = None, on_step: Callable[[Any], None] | None = None,
              masked: bool = False) -> list[HostEpisode]:
    """Episodes of a Gymnasium env instance one after another, episode i reset with the i-th of
    `reset_seeds`, every step recorded (played by `play_vector` on one copy).

    choose(obs) -> (action, q or None). max_steps: stop after this many steps in all (the
    last episode then ends early; `reset_seeds` may then be endless); on_step(env) after every
    reset and step (e.g. to render). masked: choose(obs, mask) also gets the legal actions of
    obs, bool [num_actions], from the reset's or the last step's info["action_mask"] (dqnx's
    Gymnasium envs put a Dict observation's mask there too).
    """
    if max_steps is None:
        reset_seeds = list(reset_seeds)  # finite: one episode each
    count = len(reset_seeds) if isinstance(reset_seeds, list) else None
    if count == 0 or max_steps == 0:
        return []
    one = _OneAfterAnother(env, reset_seeds, on_step)

    def choose_one(obs: list[Any], info: dict, t: int) -> tuple[list[int], Any]:
        action, q = choose(obs[0], info_mask(one.info, env.action_space.n)) if masked else choose(obs[0])
        return [action], None if q is None else [q]

    return play_vector(one, choose_one, one.first_seed(), [count], record=True, max_steps=max_steps)[0]


def info_mask(info: dict[str, Any], num_actions: int) -> np.ndarray:
    """A single Gymnasium env's info["action_mask"] as bool [num_actions], or EnvironmentFailure."""
    mask = (info or {}).get("action_mask")
    if mask is None:
        raise EnvironmentFailure("the environment gave no info['action_mask'], though the agent was trained with "
                                 "action masks; give it on every reset and step")
    mask = np.asarray(mask).astype(bool)
    if mask.shape != (num_actions,):
        raise EnvironmentFailure(f"the environment's action mask has shape {mask.shape}, but it has {num_actions} actions")
    return mask


def alive_length(alive: np.ndarray) -> int:
    """Steps inside an episode from its `alive` column (a prefix: an episode never comes back to life)."""
    return int(np.asarray(alive).sum())
