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
