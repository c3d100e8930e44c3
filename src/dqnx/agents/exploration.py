"""Exploration shared by every agent: the epsilon schedule, epsilon-greedy choice, evaluation policies."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dqnx.config import RunConfig, hyperparameters
from dqnx.protocols import step_q_values


def epsilon_at(config: RunConfig, env_step: jax.Array, hyper: dict[str, jax.Array] | None = None) -> jax.Array:
    """Exploration rate after `env_step` env steps.

    linear:      start + (end - start) * min(1, t / decay_steps)
    exponential: start * (end / start) ** (t / decay_steps), floored at end
    Both reach the floor `epsilon_end` at `epsilon_decay_steps`.

    >>> from dqnx.config import DQNConfig
    >>> round(float(epsilon_at(DQNConfig(epsilon_start=1.0, epsilon_end=0.1, epsilon_decay_steps=100), 50)), 6)
    0.55

    `hyper`: the vmappable hyperparameters (config.hyperparameters), if not the config's own.
    """
    values = hyperparameters(config, hyper)
    start, end = values["epsilon_start"], values["epsilon_end"]
    fraction = jnp.asarray(env_step, jnp.float32) / values["epsilon_decay_steps"]
    if config.epsilon_schedule == "linear":
        return start + (end - start) * jnp.minimum(fraction, 1.0)
    # jnp.where rather than an `if`: start may be a traced array in a sweep. start = 0 forces end = 0.
    safe_start = jnp.where(start > 0, start, 1.0)
    return jnp.maximum(jnp.where(start > 0, start * (end / safe_start) ** fraction, 0.0), end).astype(jnp.float32)


def greedy(q_values: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """argmax_a Q(s, a) over the legal actions of each row (`mask` [batch, num_actions], None: all legal).

    >>> greedy(jnp.array([[1.0, 3.0, 2.0]]), jnp.array([[True, False, True]]))
    Array([2], dtype=int32)
    """
    if mask is None:
        return q_values.argmax(axis=-1)
    return jnp.where(mask, q_values, -jnp.inf).argmax(axis=-1)


def legal_max(q_values: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """max_a Q(s, a) over the legal actions of each row: Q at `greedy` (finite also for a row
    without legal actions, so a terminal state's zero-weighted bootstrap stays 0, not NaN).

    >>> legal_max(jnp.array([[1.0, 9.0, 3.0], [4.0, 5.0, 6.0]]), jnp.array([[True, False, True], [False] * 3]))
    Array([3., 4.], dtype=float32)
    """
    best = greedy(q_values, mask)
    return jnp.take_along_axis(q_values, best[..., None], -1)[..., 0]


def uniform_legal(bits: jax.Array, num_actions: int, mask: jax.Array | None = None) -> jax.Array:
    """A uniform random legal action per row from one uint32 word each: the (bits mod
    legal count)-th legal action, which with every action legal is bits mod num_actions.

    >>> uniform_legal(jnp.array([5], jnp.uint32), 3, jnp.array([[True, False, True]]))  # 5 mod 2 = 1: the 2nd legal
    Array([2], dtype=int32)
    """
    if mask is None:
        return (bits % num_actions).astype(jnp.int32)
    legal = jnp.maximum(mask.sum(axis=-1), 1).astype(jnp.uint32)
    rank = (bits % legal).astype(jnp.int32)
    position = jnp.cumsum(mask, axis=-1, dtype=jnp.int32) - 1  # each legal action's rank among the legal ones
    return (mask & (position == rank[..., None])).argmax(axis=-1).astype(jnp.int32)


def epsilon_greedy(q_values: jax.Array, key: jax.Array, epsilon: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """argmax_a Q(s, a) for each row, replaced by a uniform random action with probability epsilon;
    both among the legal actions of `mask` [batch, num_actions] when given.

    One draw of random bits serves both coins: the top 24 bits of the first word give
    a uniform in [0, 1), the second word modulo the action count the random action
    (its bias, below 2**-32 * num_actions, is immaterial). `uniform` plus `randint`
    cost three times as much on a CPU, where acting runs once per env step.
    """
    best = greedy(q_values, mask)
    bits = jax.random.bits(key, (2, *best.shape), jnp.uint32)
    uniform = (bits[0] >> 8).astype(jnp.float32) * (1.0 / (1 << 24))
    random_actions = uniform_legal(bits[1], q_values.shape[-1], mask).astype(best.dtype)
    return jnp.where(uniform < epsilon, random_actions, best)


def evaluation_action(config: RunConfig, learner, params, obs: jax.Array, key: jax.Array,
                      mask: jax.Array | None = None) -> jax.Array:
    """The evaluation policy's actions: greedy; or epsilon-greedy with config.eval_epsilon > 0;
    or sampled from softmax(Q / config.eval_temperature) with eval_temperature > 0.

    Both stochastic policies read only Q(s, .), so they mean the same for every agent
    (and a noisy network is evaluated with its mean weights). A recurrent learner acts
    from its initial memory here; `evaluation_step` carries its memory through an episode.
    """
    return evaluation_step(config, learner, params, (), obs, key, mask)[0]


def evaluation_step(config: RunConfig, learner, params, act_state, obs: jax.Array, key: jax.Array,
                    mask: jax.Array | None = None) -> tuple[jax.Array, object]:
    """(`evaluation_action`'s actions, the next act state): one step of the evaluation policy
    that carries a recurrent learner's memory (`act_state`, from `learner.init_act_state`)."""
    if getattr(learner, "recurrent_q", None) is not None and not jax.tree.leaves(act_state):
        act_state = learner.init_act_state(obs.shape[0])
    q_values, act_state = step_q_values(learner, params, act_state, obs)
    if config.eval_temperature > 0:
        logits = q_values / config.eval_temperature
        return jax.random.categorical(key, logits if mask is None else jnp.where(mask, logits, -jnp.inf), axis=-1), act_state
    if config.eval_epsilon > 0:
        return epsilon_greedy(q_values, key, config.eval_epsilon, mask), act_state
    return greedy(q_values, mask), act_state
