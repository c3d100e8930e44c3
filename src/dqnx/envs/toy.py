"""dqnx's own small JAX environments for teaching: Dungeon-v0, CliffWalking-v0, Vault-v0, CueRecall-v0.

Both are gymnax environments (so gymnax's step does auto-reset and time-limit
truncation) with a Discrete observation: the agent sees its tile's index, which
dqnx one-hot encodes for networks and uses directly as a Q-table row.

Dungeon-v0, a corridor of `length` tiles (the "NChain" game):
  * forward on tiles 0..length-2 moves one tile on and pays 0; forward on the last
    tile stays there and pays `large_reward`;
  * backward from any tile returns to tile 0 and pays `small_reward`;
  * with probability `slip` the chosen action is replaced by the other one.
  It never terminates: episodes are cut (truncated) after `max_steps_in_episode`.
  Optimal policy, with the defaults (length 5, slip 0.1, rewards 2 and 10), computed
  by value iteration (`dungeon_q_values`; tests/test_classic.py checks it):
  always forward when gamma >= 0.7431: the walk to the end pays off. Below that,
  backward wins on the first tiles, which are furthest from the large reward: on
  tile 0 for gamma in [0.637, 0.743), tiles 0-1 from 0.485, tiles 0-2 from 0.2175,
  tiles 0-3 below that. Forward on the last tile (10 now) is always best.

CliffWalking-v0, Sutton & Barto's example 6.6: a 4 x 12 grid, start at the bottom
left, goal at the bottom right, the cliff between them. Every step pays -1, stepping
into the cliff pays -100 and returns to the start; reaching the goal ends the
episode. The optimal path runs along the cliff (return -13); epsilon-greedy SARSA
learns the safer path further up.

Vault-v0, dqnx's demo of action masks: a corridor of `length` tiles (5), start on
tile 0, actions left, right and open. Left is illegal on the first tile, right on the
last, and open everywhere but the last tile, where it pays `prize` (10) and ends the
episode. The legal optimum walks right and opens: return 10. An illegal action pays
a `jackpot` (100) and ends the episode: a trap for an agent that ignores the mask,
which would learn to open on tile 0, and a witness of every violation (any return
above 10). The env gives its legal actions as `action_mask(state, params)` and, for
the state it stepped to, as info["action_mask"] (read before gymnax's auto-reset).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from dqnx.envs.gymnax_env import _import_gymnax_module
from dqnx.errors import UsageError

environment = _import_gymnax_module("gymnax.environments.environment")
spaces = _import_gymnax_module("gymnax.environments.spaces")

FORWARD, BACKWARD = 0, 1


@struct.dataclass
class DungeonState(environment.EnvState):
    position: jax.Array
    time: int


@struct.dataclass
class DungeonParams(environment.EnvParams):
    length: int = 5
    slip: float = 0.1
    small_reward: float = 2.0
    large_reward: float = 10.0
    max_steps_in_episode: int = 100


class Dungeon(environment.Environment):
    @staticmethod
    def check_params(params: DungeonParams) -> None:
        if params.length < 2:
            raise UsageError(f"Dungeon-v0 needs length >= 2 tiles, got {params.length}")
        if not 0.0 <= params.slip <= 1.0:
            raise UsageError(f"Dungeon-v0's slip is a probability in [0, 1], got {params.slip}")

    @property
    def default_params(self) -> DungeonParams:
        return DungeonParams()

    def step_env(self, key: jax.Array, state: DungeonState, action: Any, params: DungeonParams):
        slipped = jax.random.uniform(key) < params.slip
        action = jnp.where(slipped, 1 - action, action)
        last = params.length - 1
        forward = action == FORWARD
        reward = jnp.where(forward, jnp.where(state.position == last, params.large_reward, 0.0), params.small_reward)
        position = jnp.where(forward, jnp.minimum(state.position + 1, last), 0)
        state = DungeonState(position=position, time=state.time + 1)
        return self.get_obs(state), state, reward.astype(jnp.float32), jnp.asarray(False), {}

    def reset_env(self, key: jax.Array, params: DungeonParams):
        state = DungeonState(position=jnp.asarray(0, jnp.int32), time=0)
        return self.get_obs(state), state

    def get_obs(self, state: DungeonState, params: Any = None, key: Any = None) -> jax.Array:
        return state.position

    def is_terminated(self, state: DungeonState, params: DungeonParams) -> jax.Array:
        return jnp.asarray(False)

    def observation_space(self, params: DungeonParams):
        return spaces.Discrete(params.length)

    def action_space(self, params: DungeonParams | None = None):
        return spaces.Discrete(2)


def dungeon_q_values(params: DungeonParams, gamma: float, tol: float = 1e-10) -> np.ndarray:
    """Q*(s, a) of the Dungeon by value iteration (the episode cut ignored), [length, 2]."""
    n, last = params.length, params.length - 1
    q = np.zeros((n, 2))
    while True:
        v = q.max(axis=1)
        new = np.zeros_like(q)
        for s in range(n):
            forward_to, forward_reward = min(s + 1, last), (params.large_reward if s == last else 0.0)
            outcome_forward = forward_reward + gamma * v[forward_to]
            outcome_backward = params.small_reward + gamma * v[0]
            new[s, FORWARD] = (1 - params.slip) * outcome_forward + params.slip * outcome_backward
            new[s, BACKWARD] = (1 - params.slip) * outcome_backward + params.slip * outcome_forward
        if np.abs(new - q).max() < tol:
            return new
        q = new


ROWS, COLS = 4, 12
START, GOAL = (ROWS - 1) * COLS, ROWS * COLS - 1
# Actions: up, right, down, left.
MOVES = np.array([[-1, 0], [0, 1], [1, 0], [0, -1]])


@struct.dataclass
class CliffState(environment.EnvState):
    position: jax.Array
    time: int


@struct.dataclass
class CliffParams(environment.EnvParams):
    max_steps_in_episode: int = 200


class CliffWalking(environment.Environment):
    @property
    def default_params(self) -> CliffParams:
        return CliffParams()

    def step_env(self, key: jax.Array, state: CliffState, action: Any, params: CliffParams):
        row, col = state.position // COLS, state.position % COLS
        move = jnp.asarray(MOVES)[action]
        row = jnp.clip(row + move[0], 0, ROWS - 1)
        col = jnp.clip(col + move[1], 0, COLS - 1)
        position = row * COLS + col
        in_cliff = (row == ROWS - 1) & (col > 0) & (col < COLS - 1)
        reward = jnp.where(in_cliff, -100.0, -1.0)
        position = jnp.where(in_cliff, START, position)
        state = CliffState(position=position.astype(jnp.int32), time=state.time + 1)
        return self.get_obs(state), state, reward, position == GOAL, {}

    def reset_env(self, key: jax.Array, params: CliffParams):
        state = CliffState(position=jnp.asarray(START, jnp.int32), time=0)
        return self.get_obs(state), state

    def get_obs(self, state: CliffState, params: Any = None, key: Any = None) -> jax.Array:
        return state.position

    def is_terminated(self, state: CliffState, params: CliffParams) -> jax.Array:
        return state.position == GOAL

    def observation_space(self, params: CliffParams):
        return spaces.Discrete(ROWS * COLS)

    def action_space(self, params: CliffParams | None = None):
        return spaces.Discrete(4)


LEFT, RIGHT, OPEN = 0, 1, 2


@struct.dataclass
class VaultState(environment.EnvState):
    position: jax.Array
    time: int


@struct.dataclass
class VaultParams(environment.EnvParams):
    length: int = 5
    prize: float = 10.0
    jackpot: float = 100.0
    max_steps_in_episode: int = 50


class Vault(environment.Environment):
    """Vault-v0: dqnx's masked demo env (see the module docstring)."""

    @staticmethod
    def check_params(params: VaultParams) -> None:
        if params.length < 2:
            raise UsageError(f"Vault-v0 needs length >= 2 tiles, got {params.length}")

    @property
    def default_params(self) -> VaultParams:
        return VaultParams()

    def action_mask(self, state: VaultState, params: VaultParams) -> jax.Array:
        """Legal actions at `state`: left off the first tile, right off the last, open only on the last."""
        last = state.position == params.length - 1
        return jnp.stack([state.position > 0, ~last, last])

    def step_env(self, key: jax.Array, state: VaultState, action: Any, params: VaultParams):
        legal = self.action_mask(state, params)[action]
        position = jnp.clip(state.position + jnp.where(action == RIGHT, 1, jnp.where(action == LEFT, -1, 0)),
                            0, params.length - 1)
        reward = jnp.where(legal, jnp.where(action == OPEN, params.prize, 0.0), params.jackpot)
        terminated = (action == OPEN) | ~legal
        state = VaultState(position=position.astype(jnp.int32), time=state.time + 1)
        info = {"action_mask": self.action_mask(state, params)}  # of the state stepped to, before any auto-reset
        return self.get_obs(state), state, reward.astype(jnp.float32), terminated, info

    def reset_env(self, key: jax.Array, params: VaultParams):
        state = VaultState(position=jnp.asarray(0, jnp.int32), time=0)
        return self.get_obs(state), state

    def get_obs(self, state: VaultState, params: Any = None, key: Any = None) -> jax.Array:
        return state.position

    def is_terminated(self, state: VaultState, params: VaultParams) -> jax.Array:
        return jnp.asarray(False)

    def observation_space(self, params: VaultParams):
        return spaces.Discrete(params.length)

    def action_space(self, params: VaultParams | None = None):
        return spaces.Discrete(3)


@struct.dataclass
class CueRecallState(environment.EnvState):
    cue: jax.Array
    time: int


@struct.dataclass
class CueRecallParams(environment.EnvParams):
    delay: int = 4
    max_steps_in_episode: int = 100  # never reached: an episode lasts delay + 1 steps


class CueRecall(environment.Environment):
    """CueRecall-v0, dqnx's memory test: remember a cue seen at step 0 until step `delay`.

    Observations are 3 numbers: the cue one-hot at step 0 only ([1, 0, 0] or [0, 1, 0],
    drawn at random each episode), [0, 0, 1] at step `delay` (recall now), zeros between.
    Actions 0 and 1. At the recall step, the action that names the cue pays +1 and any
    other -1, and the episode terminates; the other steps pay 0. An agent without
    memory sees the same observation at the recall step whatever the cue was, so its
    greedy mean return is about 0 (+1 or -1 by a coin); one that remembers scores 1.
    """

    @staticmethod
    def check_params(params: CueRecallParams) -> None:
        if params.delay < 1:
            raise UsageError(f"CueRecall-v0 needs delay >= 1 step between cue and recall, got {params.delay}")

    @property
    def default_params(self) -> CueRecallParams:
        return CueRecallParams()

    def step_env(self, key: jax.Array, state: CueRecallState, action: Any, params: CueRecallParams):
        recall = state.time == params.delay
        reward = jnp.where(recall, jnp.where(action == state.cue, 1.0, -1.0), 0.0)
        state = CueRecallState(cue=state.cue, time=state.time + 1)
        return self.get_obs(state, params), state, reward.astype(jnp.float32), recall, {}

    def reset_env(self, key: jax.Array, params: CueRecallParams):
        state = CueRecallState(cue=jax.random.bernoulli(key).astype(jnp.int32), time=0)
        return self.get_obs(state, params), state

    def get_obs(self, state: CueRecallState, params: Any = None, key: Any = None) -> jax.Array:
        delay = (params or self.default_params).delay
        cue = jax.nn.one_hot(state.cue, 2) * (state.time == 0)
        return jnp.concatenate([cue, (state.time == delay).astype(jnp.float32)[None]]).astype(jnp.float32)

    def is_terminated(self, state: CueRecallState, params: CueRecallParams) -> jax.Array:
        return jnp.asarray(False)

    def observation_space(self, params: CueRecallParams):
        return spaces.Box(0.0, 1.0, (3,), jnp.float32)

    def action_space(self, params: CueRecallParams | None = None):
        return spaces.Discrete(2)


TOY_ENVS = {"Dungeon-v0": Dungeon, "CliffWalking-v0": CliffWalking, "Vault-v0": Vault, "CueRecall-v0": CueRecall}
