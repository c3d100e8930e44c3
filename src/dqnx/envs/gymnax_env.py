"""Adapter that gives a gymnax environment dqnx's small JAX environment interface.

Every JAX environment the compiled driver sees has:

    reset(key) -> (obs, state)
    step(key, state, action) -> (obs, state, reward, terminated, truncated, final_obs)

`step` auto-resets: `obs` is the next episode's first observation when the episode
ended, and `final_obs` is always the true successor of the taken action, which is
what the TD target must bootstrap from after a time-limit truncation.

An environment with legal-action masks (`masked`) gives them with `action_mask(state)`
and `step_with_masks`, which adds the masks of `obs` and of `final_obs` to `step`'s
outputs. The gymnax-style convention for such an env: a method
`action_mask(state, params) -> bool[num_actions]`, and `info["action_mask"]` from
`step_env` for the state it stepped to (gymnax's auto-reset replaces the state, so
the final observation's mask must come from the step's info).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dqnx.errors import UsageError

# Greedy mean return over 100 episodes at which an environment counts as solved.
SOLVE_THRESHOLDS: dict[str, float] = {
    "CartPole-v1": 475.0,
    "Acrobot-v1": -100.0,
    "MountainCar-v0": -110.0,
    "Vault-v0": 10.0,  # the legal optimum (an illegal action's jackpot would show as more)
    "CueRecall-v0": 1.0,  # every cue recalled (without memory: about 0)
}


# gymnax environments with discrete actions that build offline, by family (`dqnx envs`).
DISCRETE_ENVS: dict[str, list[str]] = {
    "classic control": ["CartPole-v1", "Acrobot-v1", "MountainCar-v0"],
    "dqnx toy (envs/toy.py)": ["Dungeon-v0", "CliffWalking-v0", "Vault-v0", "CueRecall-v0"],
    "MinAtar": ["Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar", "Seaquest-MinAtar", "SpaceInvaders-MinAtar"],
    "bsuite": ["Catch-bsuite", "DeepSea-bsuite", "MemoryChain-bsuite", "UmbrellaChain-bsuite",
               "DiscountingChain-bsuite", "SimpleBandit-bsuite"],
    "misc": ["FourRooms-misc", "MetaMaze-misc", "BernoulliBandit-misc", "GaussianBandit-misc", "Pong-misc", "FrozenLake-misc"],
    "pgx (extra: dqnx[pgx])": ["2048-pgx"],
}
# pgx games trained as JAX environments (envs/pgx_env.py): dqnx id -> pgx id.
PGX_ENVS: dict[str, str] = {"2048-pgx": "2048"}
# Listed ids whose environments give legal-action masks (`dqnx envs` says so).
MASKED_ENVS = frozenset({"Vault-v0", "2048-pgx"})
# Registered in gymnax but not trainable here, and why.
UNSUPPORTED = {
    "MNISTBandit-bsuite": "downloads MNIST when it is built, and dqnx runs offline",
}

# gymnax modules of the MinAtar games, imported one by one like classic control's.
_MINATAR = {
    "Asterix-MinAtar": ("asterix", "MinAsterix"),
    "Breakout-MinAtar": ("breakout", "MinBreakout"),
    "Freeway-MinAtar": ("freeway", "MinFreeway"),
    "Seaquest-MinAtar": ("seaquest", "MinSeaquest"),
    "SpaceInvaders-MinAtar": ("space_invaders", "MinSpaceInvaders"),
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
    """A gymnax environment, its parameters and what the agent needs to know.

    Observations reach agents as float32 arrays. A Discrete observation (a state
    index, `num_states` of them) arrives one-hot encoded, so a network can read it
    and a Q-table recovers the index with argmax. `obs_low`/`obs_high` are the
    observation space's bounds when it is a Box (possibly infinite).

    `image_layout` ("HWC" or "CHW") marks board or image observations, which
    network=auto gives a convolutional network; `obs_dtype` is the dtype replay may keep
    them in without loss (MinAtar's 0/1 boards: bool, a quarter of float32's bytes).
    """

    env_id: str
    env: Any
    params: Any
    obs_shape: tuple[int, ...]
    num_actions: int
    max_episode_steps: int
    solve_threshold: float | None
    num_states: int | None = None
    obs_low: Any = None
    obs_high: Any = None
    image_layout: str | None = None
    obs_dtype: str = "float32"
    masked: bool = False  # the env gives legal-action masks (see the module docstring)
    backend: str = field(default="jax", init=False)  # its entry in dqnx.envs.BACKENDS

    def settings(self) -> dict[str, Any]:
        """Every scalar env parameter as resolved (defaults and overrides), for config.json."""
        out = {}
        for f in dataclasses.fields(self.params):
            value = getattr(self.params, f.name)
            if isinstance(value, (bool, int, float)):
                out[f.name] = value
            elif np.ndim(value) == 0:
                out[f.name] = np.asarray(value).item()
        return out

    def _observe(self, obs: jax.Array) -> jax.Array:
        if self.num_states is not None:
            return jax.nn.one_hot(obs, self.num_states, dtype=jnp.float32)
        return obs.astype(jnp.float32)

    def reset(self, key: jax.Array) -> tuple[jax.Array, Any]:
        obs, state = self.env.reset(key, self.params)
        return self._observe(obs), state

    def step(self, key: jax.Array, state: Any, action: jax.Array):
        obs, state, reward, terminated, truncated, info = self.env.step(key, state, action, self.params)
        final_obs = self._observe(info["final_observation"])
        return (
            self._observe(obs),
            state,
            reward.astype(jnp.float32),
            jnp.asarray(terminated, bool),
            jnp.asarray(truncated, bool) & ~jnp.asarray(terminated, bool),
            final_obs,
        )

    def action_mask(self, state: Any) -> jax.Array:
        """Actions legal in `state`, [num_actions] bool (all of them for an env without masks)."""
        if not self.masked:
            return jnp.ones((self.num_actions,), bool)
        return jnp.asarray(self.env.action_mask(state, self.params), bool)

    def step_with_masks(self, key: jax.Array, state: Any, action: jax.Array):
        """`step`'s outputs, then the legal actions at `obs` and at `final_obs` (the true successor)."""
        obs, state, reward, terminated, truncated, info = self.env.step(key, state, action, self.params)
        final_mask = jnp.asarray(info["action_mask"], bool) if self.masked else jnp.ones((self.num_actions,), bool)
        return (
            self._observe(obs),
            state,
            reward.astype(jnp.float32),
            jnp.asarray(terminated, bool),
            jnp.asarray(truncated, bool) & ~jnp.asarray(terminated, bool),
            self._observe(info["final_observation"]),
            self.action_mask(state),
            final_mask,
        )


def _make_raw(env_id: str) -> tuple[Any, Any]:
    from dqnx.envs.toy import TOY_ENVS

    if env_id in TOY_ENVS:
        env = TOY_ENVS[env_id]()
        return env, env.default_params
    if env_id in UNSUPPORTED:
        raise UsageError(f"environment {env_id!r} is not supported: it {UNSUPPORTED[env_id]}; `dqnx envs` lists the supported ones")
    if env_id in _CLASSIC_CONTROL:
        module, cls = _CLASSIC_CONTROL[env_id]
        env = getattr(_import_gymnax_module(f"gymnax.environments.classic_control.{module}"), cls)()
        return env, env.default_params
    if env_id in _MINATAR:
        from dqnx.envs.minatar import StickyActions

        module, cls = _MINATAR[env_id]
        env = StickyActions(getattr(_import_gymnax_module(f"gymnax.environments.minatar.{module}"), cls)())
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


def _with_params(env_id: str, params: Any, env_params: dict[str, Any] | None) -> Any:
    """The env's parameters with the user's overrides, each converted strictly to its field's type."""
    if not env_params:
        return params
    from dqnx.config import coerce_scalar

    known = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
    changes = {}
    for name, value in env_params.items():
        if name not in known:
            raise UsageError(f"{env_id} has no parameter {name!r}; its parameters are {', '.join(known)}")
        kind = type(known[name]) if isinstance(known[name], (bool, int, float)) else float
        changes[name] = coerce_scalar(name, value, kind, "--env-param")
    params = params.replace(**changes)
    if params.max_steps_in_episode < 1:
        raise UsageError(f"max_steps_in_episode must be at least 1, got {params.max_steps_in_episode}")
    check = getattr(_env_class(env_id), "check_params", None)
    if check is not None:
        check(params)
    return params


def _env_class(env_id: str) -> Any:
    from dqnx.envs.toy import TOY_ENVS

    if env_id in _MINATAR:
        from dqnx.envs.minatar import StickyActions

        return StickyActions
    return TOY_ENVS.get(env_id)


def make_gymnax(env_id: str, env_params: dict[str, Any] | None = None) -> JaxEnv:
    if env_id in PGX_ENVS:
        from dqnx.envs.pgx_env import make_pgx

        env, params = make_pgx(env_id, PGX_ENVS[env_id])
    else:
        env, params = _make_raw(env_id)
    params = _with_params(env_id, params, env_params)
    action_space = env.action_space(params)
    if not hasattr(action_space, "n"):
        raise UsageError(
            f"environment {env_id!r} has a continuous action space; DQN needs discrete actions "
            "(e.g. CartPole-v1, Acrobot-v1, MountainCar-v0; `dqnx envs` lists them)"
        )
    obs_space = env.observation_space(params)
    num_states = int(obs_space.n) if hasattr(obs_space, "n") else None
    low = high = None
    if num_states is None and hasattr(obs_space, "low"):
        obs, _ = env.reset(jax.random.PRNGKey(0), params)
        low = np.broadcast_to(np.asarray(obs_space.low, np.float64), obs.shape)
        high = np.broadcast_to(np.asarray(obs_space.high, np.float64), obs.shape)
    built = JaxEnv(
        env_id=env_id,
        env=env,
        params=params,
        obs_shape=(),
        num_actions=int(action_space.n),
        max_episode_steps=int(params.max_steps_in_episode),
        solve_threshold=SOLVE_THRESHOLDS.get(env_id),
        num_states=num_states,
        obs_low=low,
        obs_high=high,
        image_layout="HWC" if env_id in _MINATAR or env_id in PGX_ENVS else None,  # boards
        obs_dtype="bool" if env_id in _MINATAR or env_id in PGX_ENVS else "float32",
        masked=callable(getattr(env, "action_mask", None)),
    )
    obs, state = built.reset(jax.random.PRNGKey(0))
    if built.masked:
        mask_shape = tuple(np.shape(env.action_mask(state, params)))
        if mask_shape != (built.num_actions,):
            raise UsageError(f"{env_id}'s action mask has shape {mask_shape}, but it has {built.num_actions} actions; "
                             "its action_mask must give one bool per action")
    return dataclasses.replace(built, obs_shape=tuple(obs.shape))
