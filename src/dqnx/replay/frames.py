"""Replay for stacked-frame observations that stores every frame once.

An Atari observation is a stack of the last 4 frames, and consecutive observations
share 3 of them; a transition stores two observations. Storing them whole costs
2 x 4 x 84 x 84 bytes = 56 KB a transition (about 56 GB for 1M); storing each frame
once costs 7 KB (about 7 GB). Stacks are rebuilt at sampling time.

Layout: one ring of `slots` per parallel environment (envs write in lockstep, so all
rings fill alike). Slot k of a ring holds a frame, the transition that starts from the
observation ending in that frame (action, reward, terminated), and the absolute index
of its episode's first slot. A transition occupies its slot and leaves its successor's
newest frame in the next slot, which the next transition of the same episode starts
from. When an episode ends, that last frame is kept and the next episode begins one
slot further on, so an episode of T transitions takes T + 1 slots.

Rebuilding obs at absolute slot a takes the frames of slots a-3..a, each clamped to the
episode's first slot: an episode's first observation is its first frame repeated,
which is what gymnasium's FrameStackObservation(padding_type="reset") produces.

Written by hand because no JAX library offers frame-deduplicated replay (Dopamine's
circular buffer is NumPy, host-side, and TF-based).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from dqnx.protocols import Batch

# Sampling redraws slots that hold no complete transition, at most this many rounds.
_MAX_REDRAWS = 32


@flax.struct.dataclass
class FrameReplay:
    frames: jax.Array  # [envs, slots, H, W] uint8
    action: jax.Array  # [envs, slots]
    reward: jax.Array  # [envs, slots]
    terminated: jax.Array  # [envs, slots]
    has_transition: jax.Array  # [envs, slots]: a transition starts at this slot
    episode_start: jax.Array  # [envs, slots]: absolute slot index of the episode's first frame
    slot_index: jax.Array  # [envs, slots]: absolute index of what the slot holds (-1: empty)
    position: jax.Array  # [envs]: absolute slot the next transition starts at
    episode_first: jax.Array  # [envs]: absolute first slot of the running episode
    new_episode: jax.Array  # [envs]: the next transition starts an episode
    mask: jax.Array | None = None  # [envs, slots, actions]: actions legal at the observation ending in the slot's frame
    stack: int = flax.struct.field(pytree_node=False, default=4)

    @property
    def slots(self) -> int:
        return self.frames.shape[1]


def init_frame_replay(capacity: int, num_envs: int, obs_shape: tuple[int, ...], mask_actions: int | None = None) -> FrameReplay:
    """Room for about `capacity` transitions over `num_envs` rings; obs_shape is (stack, H, W).
    `mask_actions` (the action count) also keeps the legal-action mask of each slot's
    observation, stored with the frame: a transition's next mask sits in its successor slot."""
    stack, *frame_shape = obs_shape
    slots = -(-capacity // num_envs) + 1  # +1: the successor frame of the newest transition
    shape = (num_envs, slots)
    return FrameReplay(
        frames=jnp.zeros((*shape, *frame_shape), jnp.uint8),
        action=jnp.zeros(shape, jnp.int32),
        reward=jnp.zeros(shape, jnp.float32),
        terminated=jnp.zeros(shape, bool),
        has_transition=jnp.zeros(shape, bool),
        episode_start=jnp.zeros(shape, jnp.int32),
        slot_index=jnp.full(shape, -1, jnp.int32),
        position=jnp.zeros((num_envs,), jnp.int32),
        episode_first=jnp.zeros((num_envs,), jnp.int32),
        new_episode=jnp.ones((num_envs,), bool),
        mask=jnp.zeros((*shape, mask_actions), bool) if mask_actions else None,
        stack=stack,
    )


def add(buffer: FrameReplay, transitions: Batch) -> FrameReplay:
    """Write one transition per env (leading axis: env). `transitions.episode_end` must be
    terminated | truncated: it tells where the next episode starts."""

    def one_ring(frames, action, reward, terminated, has_transition, episode_start, slot_index,
                 position, episode_first, new_episode, obs, act, rew, term, next_obs, end):
        slots = frames.shape[0]
        here, nxt = position % slots, (position + 1) % slots
        first = jnp.where(new_episode, position, episode_first)
        frames = frames.at[here].set(obs[-1].astype(jnp.uint8)).at[nxt].set(next_obs[-1].astype(jnp.uint8))
        action = action.at[here].set(act.astype(jnp.int32))
        reward = reward.at[here].set(rew.astype(jnp.float32))
        terminated = terminated.at[here].set(term.astype(bool))
        has_transition = has_transition.at[here].set(True).at[nxt].set(False)
        episode_start = episode_start.at[here].set(first).at[nxt].set(first)
        slot_index = slot_index.at[here].set(position).at[nxt].set(position + 1)
        # After an episode's end its last frame stays in `nxt`; the next episode starts after it.
        position = position + jnp.where(end, 2, 1)
        return (frames, action, reward, terminated, has_transition, episode_start, slot_index,
                position, first, end)

    out = jax.vmap(one_ring)(
        buffer.frames, buffer.action, buffer.reward, buffer.terminated, buffer.has_transition,
        buffer.episode_start, buffer.slot_index, buffer.position, buffer.episode_first, buffer.new_episode,
        transitions.obs, transitions.action, transitions.reward, transitions.terminated,
        transitions.next_obs, transitions.episode_end,
    )
    mask = buffer.mask
    if mask is not None:
        if transitions.next_mask is None:
            raise ValueError("this replay keeps next-state action masks: give transitions a next_mask")
        successor = buffer.position % buffer.slots + 1  # the slot `one_ring` wrote next_obs's frame to
        mask = jax.vmap(lambda ring, slot, new: ring.at[slot % buffer.slots].set(new.astype(bool)))(
            mask, successor, transitions.next_mask)
    return buffer.replace(
        frames=out[0], action=out[1], reward=out[2], terminated=out[3], has_transition=out[4],
        episode_start=out[5], slot_index=out[6], position=out[7], episode_first=out[8], new_episode=out[9],
        mask=mask,
    )


def _stack(buffer: FrameReplay, env: jax.Array, newest: jax.Array, first: jax.Array) -> jax.Array:
    """Frames newest-stack+1 .. newest (absolute indices) of ring `env`, clamped to `first`."""
    offsets = jnp.arange(buffer.stack - 1, -1, -1)
    absolute = jnp.maximum(newest[:, None] - offsets[None, :], first[:, None])
    return buffer.frames[env[:, None], absolute % buffer.slots]


def cut_episodes(buffer: FrameReplay) -> FrameReplay:
    """End every ring's running episode here, as a truncation would: the next transition
    added starts a new episode. For environments reset without an episode end (resume)."""
    open_episode = ~buffer.new_episode
    return buffer.replace(position=buffer.position + open_episode.astype(jnp.int32), new_episode=jnp.ones_like(open_episode))


def _newest_written(buffer: FrameReplay) -> jax.Array:
    """Per ring, the absolute index of the newest frame written (-1 when empty)."""
    return buffer.position - 1 + jnp.where(buffer.new_episode, 0, 1)


def valid(buffer: FrameReplay, env: jax.Array, slot: jax.Array) -> jax.Array:
    """Whether (env, slot) starts a stored transition whose frames are all still in the ring."""
    a = buffer.slot_index[env, slot]
    newest_written = _newest_written(buffer)[env]
    oldest_alive = newest_written - buffer.slots + 1
    oldest_needed = jnp.maximum(a - (buffer.stack - 1), buffer.episode_start[env, slot])
    return buffer.has_transition[env, slot] & (a >= 0) & (oldest_needed >= oldest_alive) & (a + 1 <= newest_written)


def sample(buffer: FrameReplay, key: jax.Array, batch_size: int) -> Batch:
    """`batch_size` transitions drawn uniformly with replacement from the stored ones.

    Draws come from the written part of each ring only (rings weighted by how much
    they hold); the few slots there that start no complete transition (an episode's
    last frame, frames about to be overwritten) are drawn again. Call it only once a
    transition is stored (learning_starts > 0 guarantees that).
    """
    newest = _newest_written(buffer)  # [envs]
    oldest = jnp.maximum(newest - buffer.slots + 1, 0)
    count = jnp.maximum(newest - oldest, 0)  # absolute starts oldest .. newest-1 may hold a transition

    def draw(k):
        ek, sk = jax.random.split(k)
        env = jax.random.categorical(ek, jnp.log(count.astype(jnp.float32)), shape=(batch_size,))
        offset = jax.random.randint(sk, (batch_size,), 0, jnp.maximum(count[env], 1))
        return env, (oldest[env] + offset) % buffer.slots

    def redraw(carry):
        i, env, slot = carry
        new_env, new_slot = draw(jax.random.fold_in(key, i))
        keep = valid(buffer, env, slot)
        return i + 1, jnp.where(keep, env, new_env), jnp.where(keep, slot, new_slot)

    def pending(carry):
        i, env, slot = carry
        return (i < _MAX_REDRAWS) & ~valid(buffer, env, slot).all()

    env, slot = draw(jax.random.fold_in(key, 0))
    _, env, slot = jax.lax.while_loop(pending, redraw, (jnp.ones((), jnp.int32), env, slot))
    # Still invalid after every redraw (vanishingly rare): take the ring's newest transition.
    fallback = (newest[env] - 1) % buffer.slots
    slot = jnp.where(valid(buffer, env, slot), slot, fallback)
    a = buffer.slot_index[env, slot]
    first = buffer.episode_start[env, slot]
    return Batch(
        obs=_stack(buffer, env, a, first),
        action=buffer.action[env, slot],
        reward=buffer.reward[env, slot],
        next_obs=_stack(buffer, env, a + 1, first),
        terminated=buffer.terminated[env, slot],
        next_mask=None if buffer.mask is None else buffer.mask[env, (a + 1) % buffer.slots],
    )
