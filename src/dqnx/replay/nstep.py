"""n-step and Monte-Carlo returns, read from a uniform replay ring at sampling time.

The ring stores one-step transitions with their episode-end flags (init_replay with
episode_ends=True). Env e's transitions of consecutive iterations sit `num_envs`
slots apart (each iteration writes num_envs slots in env order), so the transitions
following slot i in its episode are i + k * num_envs for k = 1, 2, ...

For a sampled slot, the return sums gamma^k r_k over k = 0 .. h-1 where h is the
first of: the horizon n; the step after an episode end (terminated or truncated);
the newest transition written so far. Then:

- the episode terminated at step h-1: no bootstrap (terminated = True);
- it was truncated at h-1, or the horizon or the newest data was reached: bootstrap
  from the true successor `next_obs` of step h-1 with discount gamma^h, over the
  actions legal there (`next_mask` of step h-1, when the ring keeps masks).

A Monte-Carlo target is the same sum with the horizon set to the longest episode and
no bootstrap at all; it is `complete` only when an episode end was reached.

Computing at sampling time (instead of keeping an n-step accumulator per env) keeps
the stored data one-step, so the same buffer serves any n and never holds a return
computed for data that has since been overwritten.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from dqnx.replay.uniform import ReplayBuffer


class MultiStep(NamedTuple):
    obs: jax.Array
    action: jax.Array
    reward: jax.Array  # sum_{k < steps} gamma^k r_k
    next_obs: jax.Array  # true successor of the last step summed
    terminated: jax.Array  # the last step summed ended the episode by termination
    discount: jax.Array  # gamma^steps: the bootstrap's weight (times 1 - terminated)
    steps: jax.Array  # how many rewards were summed (1 .. horizon)
    complete: jax.Array  # the last step summed ended its episode (terminated or truncated)
    next_mask: jax.Array | None = None  # actions legal at next_obs (None: the ring keeps no masks)


def multi_step(buffer: ReplayBuffer, index: jax.Array, horizon: int, num_envs: int, gamma: float) -> MultiStep:
    """Returns of up to `horizon` steps from the slots `index` (see the module docstring)."""
    store = buffer.storage
    capacity = buffer.capacity
    k = jnp.arange(horizon)
    slots = (index[:, None] + k[None, :] * num_envs) % capacity  # [batch, horizon]
    newer = (buffer.position - 1 - index) % capacity  # slots written after `index`
    written = k[None, :] * num_envs <= newer[:, None]
    ends = store.episode_end[slots]
    ended_before = (jnp.cumsum(ends, axis=1) - ends) > 0  # an earlier step ended the episode
    included = written & ~ended_before  # a prefix of each row, at least step 0
    steps = included.sum(axis=1)
    discounts = gamma ** k.astype(jnp.float32)
    reward = jnp.sum(jnp.where(included, discounts * store.reward[slots], 0.0), axis=1)
    last = slots[jnp.arange(index.shape[0]), steps - 1]
    return MultiStep(
        obs=store.obs[index],
        action=store.action[index],
        reward=reward,
        next_obs=store.next_obs[last],
        terminated=store.terminated[last],
        discount=gamma ** steps.astype(jnp.float32),
        steps=steps,
        complete=store.episode_end[last],
        next_mask=None if store.next_mask is None else store.next_mask[last],
    )
