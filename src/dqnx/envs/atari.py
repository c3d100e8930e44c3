"""Atari through ale-py (its ROMs ship with the package), with the standard preprocessing
of Mnih et al. (2015): no-op starts, frame skip 4 with max-pooling of the last two frames,
84x84 grayscale, a stack of 4 frames; for training only, a lost life ends the episode
and rewards are clipped to [-1, 1], so evaluation reports the true game score.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import AtariPreprocessing, ClipReward, FrameStackObservation

from dqnx.envs.gymnasium_env import GymEnv, action_count, checked_factory, register_atari
from dqnx.errors import UsageError

FRAME_STACK = 4
FRAME_SKIP = 4
SCREEN_SIZE = 84
NOOP_MAX = 30


def describe_atari(env_id: str, params: dict[str, Any]) -> GymEnv:
    if params.get("frameskip", 1) != 1:
        raise UsageError("Atari preprocessing skips 4 frames itself; drop --env-param frameskip")
    kwargs = {**params, "frameskip": 1}  # AtariPreprocessing skips frames itself, max-pooling the last two

    def factory(render_mode: str | None = None) -> Any:
        register_atari()  # again here: async vector envs build their copies in fresh processes
        return gym.make(env_id, render_mode=render_mode, **kwargs)

    factory = checked_factory(env_id, factory)
    probe = factory(None)
    try:
        num_actions = action_count(env_id, probe.action_space)
    finally:
        probe.close()
    shape = (FRAME_STACK, SCREEN_SIZE, SCREEN_SIZE)
    return GymEnv(
        env_id=env_id, factory=factory, params=params, obs_shape=shape, obs_dtype=np.dtype(np.uint8),
        num_actions=num_actions, max_episode_steps=27_000, solve_threshold=None, atari=True,  # ALE v5 truncates at 108k frames
        frame_stack=FRAME_STACK, image_layout="CHW", obs_low=np.zeros(shape), obs_high=np.full(shape, 255.0),
    )


def atari_wrappers(env: Any, train: bool) -> Any:
    env = AtariPreprocessing(
        env, noop_max=NOOP_MAX, frame_skip=FRAME_SKIP, screen_size=SCREEN_SIZE,
        terminal_on_life_loss=False, grayscale_obs=True, scale_obs=False,
    )
    if train:
        env = ClipReward(LifeLossEndsEpisode(env), -1.0, 1.0)
    # padding_type="reset": an episode's first observation is its first frame four
    # times, which is exactly what replay/frames.py rebuilds from single frames.
    return FrameStackObservation(env, FRAME_STACK, padding_type="reset")


class LifeLossEndsEpisode(gym.Wrapper):
    """Training only: a lost life ends the agent's episode but not the game.

    Written here because gymnasium's AtariPreprocessing(terminal_on_life_loss=True)
    resets the whole game at the next reset(), so the agent would rarely see a game's
    later stages; here reset() after a life loss continues the same game with a no-op.
    """

    def __init__(self, env: Any):
        super().__init__(env)
        self.lives = 0
        self.game_over = True

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = bool(terminated or truncated)
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs):
        if self.game_over:
            obs, info = self.env.reset(**kwargs)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self.game_over = False
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info
