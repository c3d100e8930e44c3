"""DQN, top to bottom: Q-network, TD target, loss, update, target sync, replay cadence.

Everything here is a pure function of its arguments, so the drivers can jit it,
scan it and vmap it over seeds. The agent's state is an `AgentState` pytree; its
configuration is a frozen `DQNConfig`, closed over (static) by `make_dqn`.

    dqn = make_dqn(config, obs_shape=(4,), num_actions=2)
    state = dqn.init(key)
    action = dqn.act(state.params, obs_batch, key, epsilon)
    state, metrics = dqn.update(state, batch)

`make_dqn_learner` wraps these for the training loop: it owns the replay buffer and
decides when to train (after `learning_starts`, every `train_freq` env steps,
`gradient_steps` gradient steps each).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from dqnx.agents import Batch, Learner
from dqnx.agents.exploration import epsilon_at, epsilon_greedy
from dqnx.agents.networks import QNetwork, make_network
from dqnx.config import DQNConfig

__all__ = ["QNetwork", "Batch", "AgentState", "DQN", "make_dqn", "make_dqn_learner", "td_target", "td_loss", "epsilon_at"]


@flax.struct.dataclass
class AgentState:
    params: Any
    target_params: Any
    opt_state: Any
    updates: jax.Array  # gradient steps taken so far


def td_target(
    reward: jax.Array,
    terminated: jax.Array,
    next_q_target: jax.Array,
    gamma: float,
    next_q_online: jax.Array | None = None,
) -> jax.Array:
    """One-step TD target  r + gamma * (1 - terminated) * Q_target(s', a*).

    a* = argmax_a Q_target(s', a) for DQN, argmax_a Q_online(s', a) for Double DQN
    (pass `next_q_online`). A truncated (time-limit) transition is *not* terminated:
    it bootstraps from its true next state like any other.

    >>> td_target(jnp.array([1.0, 1.0]), jnp.array([False, True]),
    ...           jnp.array([[2.0, 3.0], [2.0, 3.0]]), gamma=0.5)
    Array([2.5, 1. ], dtype=float32)
    """
    if next_q_online is None:
        next_value = next_q_target.max(axis=-1)
    else:
        best = next_q_online.argmax(axis=-1)
        next_value = jnp.take_along_axis(next_q_target, best[..., None], axis=-1)[..., 0]
    not_done = 1.0 - terminated.astype(jnp.float32)
    return reward + gamma * not_done * next_value


def td_loss(q_taken: jax.Array, target: jax.Array, kind: str) -> jax.Array:
    """Mean TD loss. 'huber': smooth L1 with delta 1; 'mse': half squared error.

    >>> td_loss(jnp.array([0.0, 0.0]), jnp.array([0.5, 3.0]), "huber")  # (0.125 + 2.5) / 2
    Array(1.3125, dtype=float32)
    """
    error = q_taken - target
    if kind == "huber":
        return optax.huber_loss(error, delta=1.0).mean()
    return (0.5 * error**2).mean()


def make_optimizer(config: DQNConfig, total_updates: int) -> optax.GradientTransformation:
    """Adam (with the learning-rate schedule and gradient clipping) on the flattened parameters.

    optax.flatten runs the optimizer on one vector instead of one array per layer: the
    same arithmetic in a few fused operations, which on a CPU cut a small network's
    update time by about a quarter (measured: 165 -> 124 us for an MLP 64-64).
    """
    return optax.flatten(_optimizer(config, total_updates))


def _optimizer(config: DQNConfig, total_updates: int) -> optax.GradientTransformation:
    if config.lr_schedule == "linear":
        lr: Any = optax.linear_schedule(config.learning_rate, 0.0, max(total_updates, 1))
    elif config.lr_schedule == "cosine":
        lr = optax.cosine_decay_schedule(config.learning_rate, max(total_updates, 1))
    else:
        lr = config.learning_rate
    adam = optax.adam(lr, eps=config.adam_eps)
    if config.max_grad_norm > 0:
        return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), adam)
    return adam


def total_gradient_updates(config: DQNConfig) -> int:
    """Gradient steps a full run takes (sizes the learning-rate schedule)."""
    phases = max(config.total_steps - config.learning_starts, 0) // config.train_freq
    return phases * config.gradient_steps


class DQN(NamedTuple):
    """The pure functions of one configured DQN agent."""

    config: DQNConfig
    network: nn.Module
    init: Callable[[jax.Array], AgentState]
    q_values: Callable[[Any, jax.Array], jax.Array]
    act: Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]
    update: Callable[[AgentState, Batch], tuple[AgentState, dict[str, jax.Array]]]


def make_dqn(config: DQNConfig, obs_shape: tuple[int, ...], num_actions: int, obs_dtype: Any = jnp.float32,
             image_layout: str | None = None) -> DQN:
    network = make_network(config.network, num_actions, tuple(config.hidden_sizes), obs_shape, image_layout)
    optimizer = make_optimizer(config, total_gradient_updates(config))

    def init(key: jax.Array) -> AgentState:
        params = network.init(key, jnp.zeros((1, *obs_shape), obs_dtype))
        return AgentState(
            params=params,
            target_params=params,
            opt_state=optimizer.init(params),
            updates=jnp.zeros((), jnp.int32),
        )

    def q_values(params: Any, obs: jax.Array) -> jax.Array:
        return network.apply(params, obs)

    def act(params: Any, obs: jax.Array, key: jax.Array, epsilon: jax.Array) -> jax.Array:
        """Epsilon-greedy actions for a batch of observations."""
        return epsilon_greedy(q_values(params, obs), key, epsilon)

    def loss_fn(params: Any, target_params: Any, batch: Batch):
        q = q_values(params, batch.obs)
        q_taken = jnp.take_along_axis(q, batch.action[:, None].astype(jnp.int32), axis=-1)[:, 0]
        next_q_target = q_values(target_params, batch.next_obs)
        next_q_online = q_values(params, batch.next_obs) if config.double_dqn else None
        target = jax.lax.stop_gradient(
            td_target(batch.reward, batch.terminated, next_q_target, config.gamma, next_q_online)
        )
        loss = td_loss(q_taken, target, config.loss)
        return loss, {"q_mean": q_taken.mean(), "td_abs": jnp.abs(q_taken - target).mean()}

    def update(state: AgentState, batch: Batch) -> tuple[AgentState, dict[str, jax.Array]]:
        """One gradient step on `batch`, then the target sync when its period comes."""
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, state.target_params, batch)
        changes, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, changes)
        updates = state.updates + 1
        sync = updates % config.target_update_period == 0
        target_params = jax.tree.map(
            lambda online, target: jnp.where(sync, config.tau * online + (1.0 - config.tau) * target, target),
            params,
            state.target_params,
        )
        new_state = AgentState(params=params, target_params=target_params, opt_state=opt_state, updates=updates)
        return new_state, {"loss": loss, **aux}

    return DQN(config=config, network=network, init=init, q_values=q_values, act=act, update=update)


@flax.struct.dataclass
class DQNLearnerState:
    agent: AgentState
    replay: Any  # dqnx.replay.uniform.ReplayBuffer

    @property
    def params(self) -> Any:
        return self.agent.params

    @property
    def updates(self) -> jax.Array:
        return self.agent.updates


def make_dqn_learner(config: DQNConfig, obs_shape: tuple[int, ...], num_actions: int, obs_dtype: Any = "float32",
                     frame_stack: int = 0, image_layout: str | None = None):
    """DQN as a `dqnx.agents.Learner`: replay storage and the training cadence around `update`.

    Stacked-frame observations (Atari, `frame_stack` > 0) use replay that stores each
    frame once (replay/frames.py); others a uniform ring of whole transitions.
    """
    from dqnx.replay import frames, uniform

    obs_dtype = jnp.dtype(obs_dtype)
    dqn = make_dqn(config, obs_shape, num_actions, obs_dtype, image_layout)
    n = config.num_envs
    capacity = config.buffer_size if config.replay else n
    replay_module = frames if (frame_stack and config.replay) else uniform

    def init(key: jax.Array) -> DQNLearnerState:
        if replay_module is frames:
            replay = frames.init_frame_replay(capacity, n, obs_shape)
        else:
            replay = uniform.init_replay(capacity, obs_shape, obs_dtype)
        return DQNLearnerState(agent=dqn.init(key), replay=replay)

    def train_phase(agent: AgentState, replay: Any, fresh: Batch, key: jax.Array):
        def one_step(agent, step_key):
            batch = replay_module.sample(replay, step_key, config.batch_size) if config.replay else fresh
            return dqn.update(agent, batch)

        agent, metrics = jax.lax.scan(one_step, agent, jax.random.split(key, config.gradient_steps))
        return agent, jax.tree.map(jnp.mean, metrics)

    def skip_phase(agent, replay, fresh, key):
        nan = jnp.full((), jnp.nan, jnp.float32)
        return agent, {"loss": nan, "q_mean": nan, "td_abs": nan}

    def learn(state: DQNLearnerState, fresh: Batch, env_steps: jax.Array, key: jax.Array):
        """Store this iteration's transitions; train when the cadence says so (nan metrics otherwise)."""
        replay = replay_module.add(state.replay, fresh)
        after = env_steps + n
        do_train = (after >= config.learning_starts) & (after // config.train_freq > env_steps // config.train_freq)
        agent, metrics = jax.lax.cond(do_train, train_phase, skip_phase, state.agent, replay, fresh, key)
        return DQNLearnerState(agent=agent, replay=replay), metrics

    return Learner(init=init, act=dqn.act, learn=learn, q_values=dqn.q_values)
