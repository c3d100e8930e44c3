"""Sequence replay for recurrent Q-networks (R2D2-style, Kapturowski et al. 2019).

The ring is the uniform one (replay/uniform.py) of one-step transitions with their
episode-end flags, plus, beside every step, the policy's recurrent state before it
acted on that step's observation. Any stored step can start a sequence: sampling a
start slot gives the `length` steps that follow it in the same env (env e's
consecutive iterations sit `num_envs` slots apart, as for n-step returns), and the
recurrent state stored at the start, from which the learner unrolls its network.

- A sequence may run across an episode's end: `first` marks the steps whose
  observation starts an episode (the step before ended one), where the learner resets
  the hidden state. The stored start state is already the reset one.
- Steps not collected yet (the start lies fewer than `length` iterations before the
  newest data) are zero-padded and `valid` is False there: the loss masks them out.

Storing the state at every step (not only at fixed sequence boundaries) costs
memory_size floats per transition (twice that for an LSTM) and lets every step start a
sequence, so sampling, prioritisation (replay/prioritized.py over start slots) and the
ring's overwriting stay those of one-step replay.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp

from dqnx.protocols import Batch
from dqnx.replay import uniform


@flax.struct.dataclass
class SequenceReplay:
    steps: uniform.ReplayBuffer  # one-step transitions, with episode ends (and next-state masks)
    start_state: Any  # the policy's recurrent state before each step: leaves [capacity, ...]

    @property
    def position(self) -> jax.Array:
        return self.steps.position

    @property
    def size(self) -> jax.Array:
        return self.steps.size

    @property
    def capacity(self) -> int:
        return self.steps.capacity


class Sequences(NamedTuple):
    """Sampled sequences: every field [batch, length, ...] but `start_state` ([batch, ...])."""

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    next_obs: jax.Array  # the true successor of each step, also after a truncation
    terminated: jax.Array
    episode_end: jax.Array  # terminated | truncated
    first: jax.Array  # the step's observation starts an episode (never at step 0: start_state is reset already)
    valid: jax.Array  # a collected step (False: zero padding past the newest data)
    start_state: Any  # the recurrent state before step 0
    next_mask: jax.Array | None = None


def init_sequence_replay(capacity: int, obs_shape: tuple[int, ...], obs_dtype: Any, one_state: Any,
                         mask_actions: int | None = None) -> SequenceReplay:
    """An empty ring; `one_state` is one env's recurrent state (its shape and dtype are stored per slot)."""
    steps = uniform.init_replay(capacity, obs_shape, obs_dtype, episode_ends=True, mask_actions=mask_actions)
    start_state = jax.tree.map(lambda x: jnp.zeros((capacity, *x.shape), x.dtype), one_state)
    return SequenceReplay(steps=steps, start_state=start_state)


def add(replay: SequenceReplay, transitions: Batch) -> SequenceReplay:
    """Write a batch of transitions (leading axis n) with `transitions.act_state`, the states they were acted from."""
    if transitions.act_state is None:
        raise ValueError("sequence replay keeps the policy's recurrent states: give transitions an act_state")
    n = transitions.reward.shape[0]
    slots = (replay.steps.position + jnp.arange(n)) % replay.capacity
    start_state = jax.tree.map(lambda store, new: store.at[slots].set(new.astype(store.dtype)),
                               replay.start_state, transitions.act_state)
    return SequenceReplay(steps=uniform.add(replay.steps, transitions), start_state=start_state)


def sample_sequences(replay: SequenceReplay, index: jax.Array, length: int, num_envs: int) -> Sequences:
    """The `length` steps from each start slot in `index` [batch] (see the module docstring).

    >>> replay = init_sequence_replay(8, (1,), jnp.float32, jnp.zeros(2))
    >>> ends = jnp.array([False, True, False])  # one env: an episode ends at step 1
    >>> replay = add(replay, Batch(obs=jnp.arange(3.0)[:, None], action=jnp.zeros(3, int), reward=jnp.ones(3),
    ...              next_obs=jnp.arange(1.0, 4.0)[:, None], terminated=ends, episode_end=ends, act_state=jnp.zeros((3, 2))))
    >>> seq = sample_sequences(replay, jnp.array([0]), length=4, num_envs=1)
    >>> seq.first.tolist(), seq.valid.tolist()
    ([[False, False, True, False]], [[True, True, True, False]])
    """
    store = replay.steps.storage
    k = jnp.arange(length)
    slots = (index[:, None] + k[None, :] * num_envs) % replay.capacity  # [batch, length]
    newer = (replay.position - 1 - index) % replay.capacity  # slots written after each start
    valid = k[None, :] * num_envs <= newer[:, None]

    def take(x: jax.Array) -> jax.Array:
        rows = x[slots]
        return jnp.where(valid.reshape(valid.shape + (1,) * (rows.ndim - 2)), rows, jnp.zeros_like(rows))

    episode_end = take(store.episode_end)
    first = jnp.concatenate([jnp.zeros_like(episode_end[:, :1]), episode_end[:, :-1]], axis=1)
    return Sequences(
        obs=take(store.obs), action=take(store.action), reward=take(store.reward), next_obs=take(store.next_obs),
        terminated=take(store.terminated), episode_end=episode_end, first=first, valid=valid,
        start_state=jax.tree.map(lambda x: x[index], replay.start_state),
        next_mask=None if store.next_mask is None else take(store.next_mask),
    )
