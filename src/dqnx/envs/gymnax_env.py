"""Adapter that gives a gymnax environment dqnx's small JAX environment interface.

Every JAX environment the compiled driver sees has:

    reset(key) -> (obs, state)
    step(key, state, action) -> (obs, state, reward, terminated, truncated, final_obs)

`step` auto-resets: `obs` is the next episode's first observation when the episode
ended, and `final_obs` is always the true successor of the taken action, which is
what the TD target must bootstrap from after a time-limit truncation.
"""

from __future__ import annotations

import difflib
import importlib
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from dqnx.errors import UsageError

# Greedy mean return over 100 episodes at which an environment counts as solved.
SOLVE_THRESHOLDS: dict[str, float] = {
    "CartPole-v1": 475.0,
    "Acrobot-v1": -100.0,
    "MountainCar-v0": -110.0,
}


# gymnax environments with discrete actions that build offline, by family (`dqnx envs`).
DISCRETE_ENVS: dict[str, list[str]] = {
    "classic control": ["CartPole-v1", "Acrobot-v1", "MountainCar-v0"],
    "MinAtar": ["Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar", "Seaquest-MinAtar", "SpaceInvaders-MinAtar"],
    "bsuite": ["Catch-bsuite", "DeepSea-bsuite", "MemoryChain-bsuite", "UmbrellaChain-bsuite",
               "DiscountingChain-bsuite", "SimpleBandit-bsuite"],
    "misc": ["FourRooms-misc", "MetaMaze-misc", "BernoulliBandit-misc", "GaussianBandit-misc", "Pong-misc", "FrozenLake-misc"],
}
# Registered in gymnax but not trainable here, and why.
UNSUPPORTED = {
    "MNISTBandit-bsuite": "downloads MNIST when it is built, and dqnx runs offline",
}

# gymnax modules of the classic-control environments, imported one by one (see below).
_CLASSIC_CONTROL = {
    "CartPole-v1": ("cartpole", "CartPole"),
    "Acrobot-v1": ("acrobot", "Acrobot"),
    "MountainCar-v0": ("mountain_car", "MountainCar"),
    "Pendulum-v1": ("pendulum", "Pendulum"),
    "MountainCarContinuous-v0": ("continuous_mountain_car", "ContinuousMountainCar"),
}


def _import_gymnax_module(name: str) -> Any:
    """Import a gymnax submodule without running gymnax's package __init__ files.

    Why by hand: `import gymnax` runs gymnax/__init__.py and gymnax/environments/
    __init__.py, which import every environment, and the bsuite and misc ones pull in
    matplotlib.pyplot, seaborn and scipy.stats: about 2 s of a 10 s budget on a small
    CPU. Registering empty package shells with the right __path__ lets a submodule such
    as gymnax.environments.classic_control.cartpole load on its own. If gymnax is
    already imported, or its layout differs, the normal import is used.
    """
    if name in sys.modules or "gymnax" in sys.modules:
        return importlib.import_module(name)
    spec = importlib.util.find_spec("gymnax")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("gymnax is not installed; install dqnx with `pip install dqnx` to get it")
    root = Path(next(iter(spec.submodule_search_locations)))
    shells = {"gymnax": root, "gymnax.environments": root / "environments"}
    if not all(path.is_dir() for path in shells.values()):
        return importlib.import_module(name)
    for shell_name, path in shells.items():
        shell = types.ModuleType(shell_name)
        shell.__path__ = [str(path)]
        sys.modules[shell_name] = shell
    try:
        return importlib.import_module(name)
    except Exception:
        # Unknown layout: drop the shells (and anything loaded under them) and import normally.
        for loaded in [m for m in sys.modules if m == "gymnax" or m.startswith("gymnax.")]:
            sys.modules.pop(loaded, None)
        return importlib.import_module(name)


def _import_gymnax_registration() -> Any:
    # The registry imports every environment; only needed for ids beyond classic control.
    for shell in ("gymnax", "gymnax.environments"):
        if shell in sys.modules and not hasattr(sys.modules[shell], "__file__"):
            for loaded in [m for m in sys.modules if m == "gymnax" or m.startswith("gymnax.")]:
                sys.modules.pop(loaded, None)
            break
    return importlib.import_module("gymnax.registration")


@dataclass(frozen=True, eq=False)
class JaxEnv:
    """A gymnax environment, its default parameters and what the agent needs to know."""

    env_id: str
    env: Any
    params: Any
    obs_shape: tuple[int, ...]
    num_actions: int
    max_episode_steps: int
    solve_threshold: float | None

    def reset(self, key: jax.Array) -> tuple[jax.Array, Any]:
        obs, state = self.env.reset(key, self.params)
        return obs.astype(jnp.float32), state

    def step(self, key: jax.Array, state: Any, action: jax.Array):
        obs, state, reward, terminated, truncated, info = self.env.step(key, state, action, self.params)
        final_obs = info["final_observation"].astype(jnp.float32)
        return (
            obs.astype(jnp.float32),
            state,
            reward.astype(jnp.float32),
            jnp.asarray(terminated, bool),
            jnp.asarray(truncated, bool) & ~jnp.asarray(terminated, bool),
            final_obs,
        )


def _make_raw(env_id: str) -> tuple[Any, Any]:
    if env_id in UNSUPPORTED:
        raise UsageError(f"environment {env_id!r} is not supported: it {UNSUPPORTED[env_id]}; `dqnx envs` lists the supported ones")
    if env_id in _CLASSIC_CONTROL:
        module, cls = _CLASSIC_CONTROL[env_id]
        env = getattr(_import_gymnax_module(f"gymnax.environments.classic_control.{module}"), cls)()
        return env, env.default_params
    registration = _import_gymnax_registration()
    if env_id not in registration.registered_envs:
        known = list(registration.registered_envs)
        close = difflib.get_close_matches(env_id, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(f"unknown environment {env_id!r}; {hint}run `dqnx envs` to list the supported ones")
    try:
        return registration.make(env_id)
    except ImportError as e:
        raise UsageError(f"environment {env_id!r} needs a missing package ({e}); install it and retry") from None


def make_gymnax(env_id: str) -> JaxEnv:
    env, params = _make_raw(env_id)
    action_space = env.action_space(params)
    if not hasattr(action_space, "n"):
        raise UsageError(
            f"environment {env_id!r} has a continuous action space; DQN needs discrete actions "
            "(e.g. CartPole-v1, Acrobot-v1, MountainCar-v0; `dqnx envs` lists them)"
        )
    obs, _ = env.reset(jax.random.PRNGKey(0), params)
    return JaxEnv(
        env_id=env_id,
        env=env,
        params=params,
        obs_shape=tuple(obs.shape),
        num_actions=int(action_space.n),
        max_episode_steps=int(params.max_steps_in_episode),
        solve_threshold=SOLVE_THRESHOLDS.get(env_id),
    )
