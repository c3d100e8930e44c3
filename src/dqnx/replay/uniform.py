"""Uniform experience replay: a fixed-size ring buffer of transitions in JAX arrays.

Pure functions on a `ReplayBuffer` pytree, so the buffer lives inside the compiled
training loop (no host round trip per step) and is vmappable over seeds.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from dqnx.agents import Batch


@flax.struct.dataclass
class ReplayBuffer:
    storage: Batch  # each field has leading axis `capacity`
    position: jax.Array  # next slot to write
    size: jax.Array  # filled slots, <= capacity

    @property
    def capacity(self) -> int:
        return self.storage.reward.shape[0]


def init_replay(capacity: int, obs_shape: tuple[int, ...], obs_dtype=jnp.float32) -> ReplayBuffer:
    """An empty buffer; image observations keep their uint8 dtype (a quarter of float32's bytes)."""
    storage = Batch(
        obs=jnp.zeros((capacity, *obs_shape), obs_dtype),
        action=jnp.zeros((capacity,), jnp.int32),
        reward=jnp.zeros((capacity,), jnp.float32),
        next_obs=jnp.zeros((capacity, *obs_shape), obs_dtype),
        terminated=jnp.zeros((capacity,), bool),
    )
    return ReplayBuffer(storage=storage, position=jnp.zeros((), jnp.int32), size=jnp.zeros((), jnp.int32))


def add(buffer: ReplayBuffer, transitions: Batch) -> ReplayBuffer:
    """Write a batch of transitions (leading axis n), overwriting the oldest ones."""
    transitions = transitions._replace(episode_end=None)  # episode boundaries matter only to frame replay
    n = transitions.reward.shape[0]
    slots = (buffer.position + jnp.arange(n)) % buffer.capacity
    storage = jax.tree.map(lambda store, new: store.at[slots].set(new.astype(store.dtype)), buffer.storage, transitions)
    return ReplayBuffer(
        storage=storage,
        position=(buffer.position + n) % buffer.capacity,
        size=jnp.minimum(buffer.size + n, buffer.capacity),
    )


def sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int) -> Batch:
    """`batch_size` transitions drawn uniformly with replacement from the filled slots."""
    index = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
    return jax.tree.map(lambda store: store[index], buffer.storage)
