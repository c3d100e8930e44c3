"""Tiny Gymnasium environments for the host-loop tests (importable as gym_toys:Name)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class Corridor(gym.Env):
    """Walk right from tile 0 to tile `length`: -1 a step, the episode terminates at the end.

    The optimal return is -length; Discrete observations (the tile index).
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, length: int = 5, render_mode: str | None = None):
        self.length = length
        self.render_mode = render_mode
        self.observation_space = spaces.Discrete(length + 1)
        self.action_space = spaces.Discrete(2)
        self.position = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = 0
        return self.position, {}

    def step(self, action):
        self.position = max(0, self.position + (1 if int(action) == 1 else -1))
        terminated = self.position == self.length
        return self.position, -1.0, terminated, False, {}

    def render(self):
        frame = np.zeros((8, 8 * (self.length + 1), 3), np.uint8)
        frame[:, 8 * self.position: 8 * self.position + 8] = 255
        return frame


class TwoExits(Corridor):
    """Tiles 0..length + 1 with an exit at each end: -1 a step, the episode terminates at either exit.

    Episodes start on a random inner tile (1..length); the optimal walk heads for the nearer exit, so
    an expert's actions are left on the first half and right on the second (an even `length` has no
    ties). The optimal return averages -(length + 2) / 4 over starts (-2 for length 6); a random walk's
    -(length + 1)(length + 2) / 6 (-9.3; -8.7 cut at 30 steps).
    """

    def __init__(self, length: int = 6, render_mode: str | None = None):
        super().__init__(length + 1, render_mode)
        self.observation_space = spaces.Discrete(length + 2)

    def reset(self, *, seed=None, options=None):
        gym.Env.reset(self, seed=seed)
        self.position = int(self.np_random.integers(1, self.length))
        return self.position, {}

    def step(self, action):
        self.position += 1 if int(action) == 1 else -1
        terminated = self.position in (0, self.length)
        return self.position, -1.0, terminated, False, {}


class Counter(gym.Env):
    """Observation = steps taken (as a float Box); reward 1 a step; terminates at `end`,
    truncates at `limit` (set one or both). Makes every transition predictable."""

    def __init__(self, end: int = 1000, limit: int = 1000):
        self.end, self.limit = end, limit
        self.observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([float(self.t)], np.float32), 1.0, self.t >= self.end, self.t >= self.limit, {}


class DictObservations(Corridor):
    def __init__(self):
        super().__init__()
        self.observation_space = spaces.Dict({"position": spaces.Discrete(6)})


class MultiDiscreteActions(Corridor):
    def __init__(self):
        super().__init__()
        self.action_space = spaces.MultiDiscrete([2, 2])


class IllegalAction(AssertionError):
    """An agent took an action its mask forbade (the masked envs below raise it)."""


class Vault(gym.Env):
    """Vault-v0 (dqnx.envs.toy) in Gymnasium: walk right over `length` tiles, open on the last.

    Legal: left off tile 0, right off the last tile, open only on the last (prize 10,
    terminates). Masks come in info["action_mask"]. An illegal action would pay a jackpot
    of 100, and here it raises IllegalAction instead, so a test fails on any violation.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, length: int = 5, render_mode: str | None = None):
        self.length = length
        self.render_mode = render_mode
        self.observation_space = spaces.Discrete(length)
        self.action_space = spaces.Discrete(3)
        self.position = 0

    def legal(self) -> np.ndarray:
        last = self.position == self.length - 1
        return np.array([self.position > 0, not last, last], np.int8)

    def _out(self):
        return self.position, {"action_mask": self.legal()}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = 0
        return self._out()

    def step(self, action):
        action = int(action)
        if not self.legal()[action]:
            raise IllegalAction(f"illegal action {action} on tile {self.position}")
        if action == 2:
            return (*self._out()[:1], 10.0, True, False, self._out()[1])
        self.position += 1 if action == 1 else -1
        obs, info = self._out()
        return obs, 0.0, False, False, info

    def render(self):
        frame = np.zeros((8, 8 * self.length, 3), np.uint8)
        frame[:, 8 * self.position: 8 * self.position + 8] = 255
        return frame


class VaultDict(Vault):
    """Vault with the mask inside a Dict observation {"tile", "action_mask"} and no info."""

    def __init__(self, length: int = 5, render_mode: str | None = None):
        super().__init__(length, render_mode)
        self.observation_space = spaces.Dict({
            "tile": spaces.Discrete(length), "action_mask": spaces.MultiBinary(3)})

    def _out(self):
        return {"tile": self.position, "action_mask": self.legal()}, {}


class WrongMaskLength(Vault):
    def _out(self):
        return self.position, {"action_mask": np.ones(5, np.int8)}


class DeadEnd(Vault):
    """Vault whose mask forbids everything on tile 2, which is not terminal."""

    def legal(self) -> np.ndarray:
        return np.zeros(3, np.int8) if self.position == 2 else super().legal()


class Raising(Corridor):
    """A corridor whose step raises at step `raise_at` (counted over its lifetime): a bug in the user's env."""

    def __init__(self, raise_at: int = 100, render_mode: str | None = None):
        super().__init__(render_mode=render_mode)
        self.raise_at, self.steps = raise_at, 0

    def step(self, action):
        self.steps += 1
        if self.steps >= self.raise_at:
            self.explode()
        return super().step(action)

    def explode(self):
        raise RuntimeError("the sensor broke")


class CueRecall(gym.Env):
    """The Gymnasium twin of dqnx's CueRecall-v0: a cue (0 or 1) shown at step 0 only, recalled at
    step `delay` (observation [0, 0, 1]): the action naming it pays +1, any other -1, and the episode ends."""

    def __init__(self, delay: int = 4):
        self.delay = delay
        self.observation_space = spaces.Box(0.0, 1.0, (3,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.cue, self.time = 0, 0

    def _obs(self):
        obs = np.zeros(3, np.float32)
        if self.time == 0:
            obs[self.cue] = 1.0
        if self.time == self.delay:
            obs[2] = 1.0
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.cue, self.time = int(self.np_random.integers(2)), 0
        return self._obs(), {}

    def step(self, action):
        recall = self.time == self.delay
        reward = (1.0 if int(action) == self.cue else -1.0) if recall else 0.0
        self.time += 1
        return self._obs(), reward, recall, False, {}
