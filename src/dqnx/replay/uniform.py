"""Uniform experience replay: a fixed-size ring buffer of transitions in JAX arrays.

Pure functions on a `ReplayBuffer` pytree, so the buffer lives inside the compiled
training loop (no host round trip per step) and is vmappable over seeds.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from dqnx.protocols import Batch


@flax.struct.dataclass
class ReplayBuffer:
    storage: Batch  # each field has leading axis `capacity`
    position: jax.Array  # next slot to write
    size: jax.Array  # filled slots, <= capacity

    @property
    def capacity(self) -> int:
        return self.storage.reward.shape[0]


def init_replay(capacity: int, obs_shape: tuple[int, ...], obs_dtype=jnp.float32,
                episode_ends: bool = False, mask_actions: int | None = None) -> ReplayBuffer:
    """An empty buffer; image observations keep their uint8 dtype (a quarter of float32's bytes).

    `episode_ends` also stores each transition's terminated | truncated flag, which
    n-step and Monte-Carlo targets (replay/nstep.py) need to find where episodes end.
    `mask_actions` (the action count) also stores each transition's next-state action
    mask, which masked bootstraps read.
    """
    storage = Batch(
        obs=jnp.zeros((capacity, *obs_shape), obs_dtype),
        action=jnp.zeros((capacity,), jnp.int32),
        reward=jnp.zeros((capacity,), jnp.float32),
        next_obs=jnp.zeros((capacity, *obs_shape), obs_dtype),
        terminated=jnp.zeros((capacity,), bool),
        episode_end=jnp.zeros((capacity,), bool) if episode_ends else None,
        next_mask=jnp.zeros((capacity, mask_actions), bool) if mask_actions else None,
    )
    return ReplayBuffer(storage=storage, position=jnp.zeros((), jnp.int32), size=jnp.zeros((), jnp.int32))


def add(buffer: ReplayBuffer, transitions: Batch) -> ReplayBuffer:
    """Write a batch of transitions (leading axis n), overwriting the oldest ones."""
    if buffer.storage.episode_end is None:
        transitions = transitions._replace(episode_end=None)  # kept only for n-step / Monte-Carlo targets
    elif transitions.episode_end is None:
        raise ValueError("this replay keeps episode ends: give transitions an episode_end (terminated | truncated)")
    transitions = transitions._replace(act_state=None)  # a recurrent policy's states: replay/sequences.py keeps them
    if buffer.storage.next_mask is None:
        transitions = transitions._replace(next_mask=None)
    elif transitions.next_mask is None:
        raise ValueError("this replay keeps next-state action masks: give transitions a next_mask")
    n = transitions.reward.shape[0]
    slots = (buffer.position + jnp.arange(n)) % buffer.capacity
    storage = jax.tree.map(lambda store, new: store.at[slots].set(new.astype(store.dtype)), buffer.storage, transitions)
    return ReplayBuffer(
        storage=storage,
        position=(buffer.position + n) % buffer.capacity,
        size=jnp.minimum(buffer.size + n, buffer.capacity),
    )


def sample_index(buffer: ReplayBuffer, key: jax.Array, batch_size: int) -> jax.Array:
    """`batch_size` slots drawn uniformly with replacement from the filled ones."""
    return jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))


def sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int) -> Batch:
    """`batch_size` transitions drawn uniformly with replacement from the filled slots."""
    index = sample_index(buffer, key, batch_size)
    return jax.tree.map(lambda store: store[index], buffer.storage)._replace(episode_end=None)
