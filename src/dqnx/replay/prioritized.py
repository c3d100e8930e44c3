"""Proportional prioritized replay (Schaul et al. 2016) over a uniform replay ring.

Transition i is drawn with probability P(i) = p_i^alpha / sum_j p_j^alpha, where p_i
is |TD error| + eps from the last time it was trained on (new transitions get the
largest priority seen so far, so each is replayed at least about once). Its loss is
weighted by w_i = (N P(i))^-beta / max_j w_j, which corrects the sampling bias as
beta anneals to 1.

Sampling is O(N) per batch: a cumulative sum of the priorities and a binary search
per draw (jnp.cumsum + jnp.searchsorted), instead of a sum tree. A sum tree is
O(log N) per draw and update but is sequential pointer chasing, which JAX compiles
poorly (a while loop per draw); one vectorised cumsum over 50-100k floats is a few
tens of microseconds on a CPU and a single kernel on a GPU, and priority updates are
plain scatters. Draws are stratified: one uniform draw in each of batch_size equal
slices of the total mass, which lowers the variance of the batch's make-up.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class Priorities:
    priority: jax.Array  # [capacity] p_i (before the exponent alpha); 0 for empty slots
    max_priority: jax.Array  # largest p_i ever set: what new transitions get


def init_priorities(capacity: int) -> Priorities:
    return Priorities(priority=jnp.zeros((capacity,), jnp.float32), max_priority=jnp.ones((), jnp.float32))


def add(priorities: Priorities, position: jax.Array, count: int) -> Priorities:
    """New transitions written at slots position .. position+count-1 (mod capacity) get the max priority."""
    slots = (position + jnp.arange(count)) % priorities.priority.shape[0]
    return priorities.replace(priority=priorities.priority.at[slots].set(priorities.max_priority))


def sample(priorities: Priorities, size: jax.Array, key: jax.Array, batch_size: int, alpha: float,
           beta: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(slots, importance weights) of `batch_size` stratified draws from the first `size` slots."""
    capacity = priorities.priority.shape[0]
    filled = jnp.arange(capacity) < size
    mass = jnp.where(filled, priorities.priority ** alpha, 0.0)
    cumulative = jnp.cumsum(mass)
    total = cumulative[-1]
    points = (jnp.arange(batch_size) + jax.random.uniform(key, (batch_size,))) / batch_size * total
    index = jnp.clip(jnp.searchsorted(cumulative, points, side="right"), 0, jnp.maximum(size - 1, 0))
    probability = mass[index] / total
    smallest = jnp.min(jnp.where(filled, mass, jnp.inf)) / total
    weight = (size * probability) ** -beta / (size * smallest) ** -beta
    return index, weight


def update(priorities: Priorities, index: jax.Array, td_error: jax.Array, eps: float,
           keep: jax.Array | None = None) -> Priorities:
    """Set p_i = |TD error| + eps for the slots just trained on (only where `keep`, if given)."""
    new = jnp.abs(td_error) + eps
    if keep is not None:
        new = jnp.where(keep, new, priorities.priority[index])
    return Priorities(priority=priorities.priority.at[index].set(new),
                      max_priority=jnp.maximum(priorities.max_priority, new.max()))
