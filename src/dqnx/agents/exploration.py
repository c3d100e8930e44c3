"""Exploration shared by every agent: the epsilon schedule, epsilon-greedy choice, evaluation policies."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dqnx.config import RunConfig


def epsilon_at(config: RunConfig, env_step: jax.Array) -> jax.Array:
    """Exploration rate after `env_step` env steps.

    linear:      start + (end - start) * min(1, t / decay_steps)
    exponential: start * (end / start) ** (t / decay_steps), floored at end
    Both reach the floor `epsilon_end` at `epsilon_decay_steps`.

    >>> from dqnx.config import DQNConfig
    >>> round(float(epsilon_at(DQNConfig(epsilon_start=1.0, epsilon_end=0.1, epsilon_decay_steps=100), 50)), 6)
    0.55
    """
    start, end = config.epsilon_start, config.epsilon_end
    fraction = jnp.asarray(env_step, jnp.float32) / config.epsilon_decay_steps
    if config.epsilon_schedule == "linear":
        return start + (end - start) * jnp.minimum(fraction, 1.0)
    # jnp.where rather than an `if`: start may be a traced array in a sweep. start = 0 forces end = 0.
    safe_start = jnp.where(start > 0, start, 1.0)
    return jnp.maximum(jnp.where(start > 0, start * (end / safe_start) ** fraction, 0.0), end).astype(jnp.float32)


def epsilon_greedy(q_values: jax.Array, key: jax.Array, epsilon: jax.Array) -> jax.Array:
    """argmax_a Q(s, a) for each row, replaced by a uniform random action with probability epsilon.

    One draw of random bits serves both coins: the top 24 bits of the first word give
    a uniform in [0, 1), the second word modulo the action count the random action
    (its bias, below 2**-32 * num_actions, is immaterial). `uniform` plus `randint`
    cost three times as much on a CPU, where acting runs once per env step.
    """
    greedy = q_values.argmax(axis=-1)
    bits = jax.random.bits(key, (2, *greedy.shape), jnp.uint32)
    uniform = (bits[0] >> 8).astype(jnp.float32) * (1.0 / (1 << 24))
    random_actions = (bits[1] % q_values.shape[-1]).astype(greedy.dtype)
    return jnp.where(uniform < epsilon, random_actions, greedy)


def evaluation_action(config: RunConfig, learner, params, obs: jax.Array, key: jax.Array) -> jax.Array:
    """The evaluation policy's actions: greedy; or epsilon-greedy with config.eval_epsilon > 0;
    or sampled from softmax(Q / config.eval_temperature) with eval_temperature > 0.

    Both stochastic policies read only Q(s, .), so they mean the same for every agent
    (and a noisy network is evaluated with its mean weights).
    """
    q_values = learner.q_values(params, obs)
    if config.eval_temperature > 0:
        return jax.random.categorical(key, q_values / config.eval_temperature, axis=-1)
    if config.eval_epsilon > 0:
        return epsilon_greedy(q_values, key, config.eval_epsilon)
    return q_values.argmax(axis=-1)
