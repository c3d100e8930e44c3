"""The data types and protocols the layers share: transitions, rollouts, learners, envs, drivers.

This module sits at the bottom of dqnx with `errors.py` and `config/`: `envs/`,
`replay/`, `agents/` and `drivers/` all import from it, and it imports nothing of dqnx,
so none of them needs another to know what a transition or a learner is.

Acting. A learner acts on a batch of observations:

    act(params, act_state, obs, mask, key, epsilon, hyper=None) -> (action, act_state)

`act_state` is what the policy carries from one step to the next: `()` for
feed-forward agents, a hidden state for recurrent ones (a pytree with a leading
[num_envs] axis, built by `Learner.init_act_state(num_envs)` and reset where an episode
starts). `mask` is a bool array [batch, num_actions] of the legal actions (all-true
when the environment has none); agents choose among legal actions only, both the
greedy and the random choice. `epsilon` is the exploration rate of this step.

Learning. A learner learns from the data its `rollout_length` asks for:

    learn(state, data, env_steps, key, hyper=None) -> (state, {"loss", "q_mean", "td_abs"})

- `rollout_length == 1` (DQN, tabular, linear): `data` is a `Batch` of this
  iteration's transitions, one per env ([num_envs] leading axis); the learner stores
  them (replay) and decides itself when to train.
- `rollout_length == T > 1` (PQN-style on-policy learners): `data` is a `Rollout` of T
  iterations x num_envs ([T, num_envs] leading axes), and `env_steps` counts the steps
  before its first iteration. The driver collects the T iterations and calls `learn`
  once per rollout.

Hyperparameters. `hyper` holds the vmappable hyperparameters (config.VMAPPABLE:
learning rate, gamma, the epsilon schedule, ...) as a dict name -> value. It is an
explicit argument so that one learner, built once per run from its static config,
serves every member of a sweep: the compiled loop passes per-seed arrays (vmapped),
and `hyper=None` means the config's own values (`config.hyperparameters(config)`).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol


class Batch(NamedTuple):
    """Transitions; `next_obs` is the true successor, also after a truncation.

    `episode_end` (terminated | truncated) is given when transitions are stored: replay
    that rebuilds stacked frames needs to know where episodes start. Sampled batches
    leave it None. `next_mask` is the legal-action mask [batch, num_actions] of
    `next_obs` (None when the environment has no masks): targets maximise over legal
    actions only. `act_state` is the policy's state before it acted on `obs` (a
    recurrent learner's hidden state, which its sequence replay keeps at each step);
    None for feed-forward learners.
    """

    obs: Any
    action: Any
    reward: Any
    next_obs: Any
    terminated: Any
    episode_end: Any = None
    next_mask: Any = None
    act_state: Any = None


class Rollout(NamedTuple):
    """T iterations of num_envs envs, every field with leading axes [T, num_envs].

    The fields of a `Batch` (`next_obs` the true successor, also after a truncation)
    plus `episode_end` (terminated | truncated), always given: returns such as Q(lambda)
    must not run across an episode's end. `mask` / `next_mask`: legal actions of `obs`
    and `next_obs`, or None when the environment has no masks.
    """

    obs: Any
    action: Any
    reward: Any
    next_obs: Any
    terminated: Any
    episode_end: Any
    mask: Any = None
    next_mask: Any = None


def _stateless(num_envs: int) -> tuple:
    return ()


def stored_act_state(act_state: Any) -> Any:
    """What a `Batch` carries of the policy's state: the state itself for a recurrent
    policy, None for a feed-forward one (whose act state `()` has no arrays)."""
    import jax

    return act_state if jax.tree.leaves(act_state) else None


def reset_act_state(learner: "Learner", act_state: Any, episode_start: Any) -> Any:
    """`act_state` with the rows of envs whose next observation starts an episode
    (`episode_start` [num_envs] bool) set back to the learner's initial state, so no
    memory crosses from one episode into the next. Feed-forward: `()` unchanged."""
    if stored_act_state(act_state) is None:
        return act_state
    import jax
    import jax.numpy as jnp

    initial = learner.init_act_state(episode_start.shape[0])
    return jax.tree.map(lambda fresh, old: jnp.where(episode_start.reshape((-1,) + (1,) * (old.ndim - 1)), fresh, old),
                        initial, act_state)


def step_q_values(learner: "Learner", params: Any, act_state: Any, obs: Any) -> tuple[Any, Any]:
    """(Q(s, .), next act state) of one step of the greedy policy: a recurrent learner's
    `recurrent_q`, else its `q_values` with the act state passed through."""
    if getattr(learner, "recurrent_q", None) is None:  # stand-in learners may predate the field
        return learner.q_values(params, obs), act_state
    return learner.recurrent_q(params, act_state, obs)


class Learner(NamedTuple):
    """An agent as the training loop sees it (see the module docstring for each call).

    init(key) -> state                 state has .params and .updates
    act(params, act_state, obs, mask, key, epsilon, hyper=None) -> (action, act_state)
    learn(state, data, env_steps, key, hyper=None) -> (state, metrics)
    q_values(params, obs) -> Q(s, .)   the greedy policy is its argmax (over legal actions)
    init_act_state(num_envs) -> act_state   () for feed-forward agents
    rollout_length: 1 learns from each iteration's transitions (a Batch), T > 1 from
        rollouts of T iterations (a Rollout)
    recurrent_q(params, act_state, obs) -> (Q(s, .), act_state): one step of a recurrent
        Q-network (None for feed-forward agents); `q_values` is then Q at an episode's
        first step (the initial act state). Evaluation carries the state through the
        episode (`step_q_values`).
    built_from: (agent name, config, env) when dqnx.agents.make_learner built it, which is
        what determines every function above: the compiled loop then reuses programs it
        compiled for an equal (agent, config, env) earlier in the process
        (drivers/jax_loop.PROGRAMS). None for a learner built any other way (never reused).
    """

    init: Callable[[Any], Any]
    act: Callable[..., tuple[Any, Any]]
    learn: Callable[..., tuple[Any, dict[str, Any]]]
    q_values: Callable[[Any, Any], Any]
    init_act_state: Callable[[int], Any] = _stateless
    rollout_length: int = 1
    recurrent_q: Callable[..., tuple[Any, Any]] | None = None
    built_from: tuple[str, Any, Any] | None = None


class JaxEnvProtocol(Protocol):
    """A JAX-native environment (the "jax" backend, stepped inside the compiled loop).

    reset(key) -> (obs, env_state); step(key, env_state, action) -> (next_obs, env_state,
    reward, terminated, truncated, final_obs): auto-resets, `final_obs` the true successor.
    """

    env_id: str
    backend: str
    obs_shape: tuple[int, ...]
    num_actions: int
    max_episode_steps: int
    solve_threshold: float | None

    def reset(self, key: Any) -> tuple[Any, Any]: ...

    def step(self, key: Any, state: Any, action: Any) -> tuple[Any, Any, Any, Any, Any, Any]: ...


class HostEnvProtocol(Protocol):
    """A Python environment stepped on the host (the "gymnasium" backend).

    make_vector(count, mode, train) -> a Gymnasium vector env of `count` copies
    ("same step" auto-reset, info["final_obs"] the true last observation).
    """

    env_id: str
    backend: str
    obs_shape: tuple[int, ...]
    obs_dtype: Any
    num_actions: int
    solve_threshold: float | None

    def make_vector(self, count: int, mode: str, train: bool) -> Any: ...


Env = Any  # a JaxEnvProtocol or a HostEnvProtocol (dqnx.envs.gymnax_env.JaxEnv, dqnx.envs.gymnasium_env.GymEnv)


class Driver(Protocol):
    """The training loop of one backend, as the trainer (drivers/trainer.py) uses it.

    States are seed-stacked pytrees. `place` lays a tree out for the loop (its devices,
    padded with `padding` copies of a seed), `real` gives the callers' seeds back on the
    host (for files). `chunk` runs `iterations` iterations of every seed from env step
    `start_step`; `evaluate` returns greedy returns [num_seeds, episodes].
    """

    padding: int
    compile_seconds: float

    def init_states(self, seeds: list[int]) -> Any: ...

    def place(self, tree: Any) -> Any: ...

    def real(self, tree: Any) -> Any: ...

    def chunk(self, state: Any, iterations: int, start_step: int) -> tuple[Any, Any]: ...

    def evaluate(self, params: Any, keys: Any, episodes: int) -> Any: ...

    def close(self) -> None: ...
