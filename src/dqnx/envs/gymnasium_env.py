"""Adapter for Gymnasium environments: any registered id, a `module.path:EnvClass`, an
instance or a factory; Atari through ale-py with the standard preprocessing.

Gymnasium environments are Python objects stepped on the host, so they train through
the host loop (drivers/host_loop.py), which calls the same jitted agent functions as
the compiled loop. A `GymEnv` describes the environment as the agents see it (shapes,
action count, bounds) and builds wrapped instances and vector environments of it:

    env = make_gymnasium("LunarLander-v3")
    vec = env.make_vector(8, mode="async")       # 8 copies, auto-reset in the same step
    frames_env = env.make(train=False, render_mode="rgb_array")

Observations: a Box of any shape (float32 for the agents; uint8 images stay uint8 so
replay stores a quarter of the bytes) or a Discrete space (one-hot). Actions: one
Discrete space. Anything else is refused with the reason and what would work.

Action masks: an env that puts `info["action_mask"]` (one 0/1 or bool per action) in
its reset and step infos, as Taxi-v4 does, is `masked`; so is one whose observation is
a Dict with an "action_mask" key, which `make` moves into the info first (before any
flattening; the rest of the observation is the one remaining value, or the remaining
Dict flattened).
"""

from __future__ import annotations

import copy
import difflib
import importlib
import tomllib
from dataclasses import dataclass, field
from typing import Any, Callable

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dqnx.envs.source import Wrapper, check_env_id, wrappers_from_data
from dqnx.errors import UsageError

# Evaluation episodes of an environment without a time limit are cut after this many steps.
EVAL_STEP_CAP = 100_000

SUPPORTED = (
    "dqnx takes a Discrete action space and Box (any shape) or Discrete observations, "
    "e.g. CartPole-v1, LunarLander-v3, ALE/Pong-v5"
)


@dataclass(frozen=True, eq=False)
class GymEnv:
    """A Gymnasium environment as dqnx's agents see it, and how to build it.

    `factory(render_mode)` builds the raw environment (before dqnx's wrappers);
    `make` adds them. For Atari, training copies end an episode at a life loss and
    clip rewards to [-1, 1]; evaluation copies (train=False) play whole games and
    report the true score.
    """

    env_id: str
    factory: Callable[[str | None], Any]
    params: dict[str, Any]
    obs_shape: tuple[int, ...]
    obs_dtype: Any
    num_actions: int
    max_episode_steps: int | None
    solve_threshold: float | None
    num_states: int | None = None
    obs_low: Any = None
    obs_high: Any = None
    atari: bool = False
    frame_stack: int = 0  # > 0: observations stack this many frames on axis 0 (replay stores each frame once)
    image_layout: str | None = None  # 'CHW' or 'HWC' for image observations, else None
    wrappers: tuple[Wrapper, ...] = ()  # the user's wrappers, applied inside `factory` in this order
    origin: str | None = None  # how an id that names code was read (module:Class or package:EnvId), for the user
    masked: bool = False  # reset and step infos carry "action_mask" (see the module docstring)
    mask_in_obs: bool = False  # the raw env's Dict observation holds the mask; `make` moves it to the info
    backend: str = field(default="gymnasium", init=False)

    def make(self, *, train: bool = True, render_mode: str | None = None) -> Any:
        """One environment with dqnx's wrappers (Atari preprocessing, one-hot observations)."""
        env = self.factory(render_mode)
        if self.mask_in_obs:
            env = MaskFromObservation(env)
        if not train and self.max_episode_steps is None:
            env = gym.wrappers.TimeLimit(env, EVAL_STEP_CAP)  # evaluation must end even for a perfect agent
        if self.atari:
            from dqnx.envs.atari import atari_wrappers

            return atari_wrappers(env, train)
        if self.num_states is not None:
            env = _one_hot(env, self.num_states)
        return env

    def make_vector(self, num_envs: int, *, mode: str = "sync", train: bool = True) -> Any:
        """`num_envs` copies that auto-reset in the step that ends an episode.

        Same-step autoreset keeps the true last observation in info["final_obs"] for
        bootstrapping, and the returned observation is the next episode's first.
        """
        from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

        makers = [lambda: self.make(train=train) for _ in range(num_envs)]
        if mode == "async":
            return AsyncVectorEnv(makers, autoreset_mode=AutoresetMode.SAME_STEP, context="spawn")
        return SyncVectorEnv(makers, autoreset_mode=AutoresetMode.SAME_STEP)


# Listed by `dqnx envs`; any other registered id with a Discrete action space works too.
GYMNASIUM_EXAMPLES: dict[str, list[str]] = {
    "classic control": ["CartPole-v1", "Acrobot-v1", "MountainCar-v0"],
    "Box2D (extra: dqnx[box2d])": ["LunarLander-v3"],
    "toy text": ["FrozenLake-v1", "FrozenLake8x8-v1", "CliffWalking-v1", "Taxi-v4"],
    "Atari, any ALE/<Game>-v5 (extra: dqnx[atari])": ["ALE/Pong-v5", "ALE/Breakout-v5"],
    "POPGym, partially observable: memory=gru (package popgym)": ["popgym:popgym-RepeatFirstEasy-v0",
                                                                  "popgym:popgym-RepeatPreviousEasy-v0"],
}


# Listed examples that give action masks (info["action_mask"]).
MASKED_EXAMPLES = frozenset({"Taxi-v4"})


def reward_threshold(env_id: str) -> float | None:
    """The registered spec's solve threshold, without building the environment."""
    spec = gym.envs.registry.get(env_id)
    threshold = getattr(spec, "reward_threshold", None)
    return None if threshold is None else float(threshold)


def parse_env_value(value: Any) -> Any:
    """A `--env-param` value from the command line: TOML literal (1, 0.5, true, "x") or plain text."""
    if not isinstance(value, str):
        return value
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def is_atari_id(env_id: str) -> bool:
    return env_id.startswith("ALE/")


def registered(env_id: str) -> bool:
    """Whether `env_id` names a Gymnasium environment (registering Atari's if asked for)."""
    if is_atari_id(env_id):
        register_atari()
    return env_id in gym.envs.registry


def register_atari() -> None:
    try:
        import ale_py
    except ImportError:
        raise UsageError("Atari environments need ale-py; install it with `pip install 'dqnx[atari]'`") from None
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no banner from every process
    gym.register_envs(ale_py)


def make_gymnasium(env: Any, env_params: dict[str, Any] | None = None, wrappers: Any = ()) -> GymEnv:
    """Describe a Gymnasium environment given as an id, 'module.path:EnvClass', 'package:EnvId', an
    instance or a factory, with `wrappers` (Wrapper objects or their dicts) applied in order."""
    params = {k: parse_env_value(v) for k, v in (env_params or {}).items()}
    wrappers = wrappers_from_data(wrappers)
    if isinstance(env, gym.Env):
        instance = env
        # A fresh copy per vector slot and per evaluation, so training never shares state.
        env_id = _instance_id(instance)
        if params:
            raise UsageError("env_params apply to environments dqnx builds; configure the instance you pass instead")
        probe = _wrapped(env_id, lambda render_mode=None: copy.deepcopy(instance), wrappers)
        return _describe(env_id, probe, params, wrappers=wrappers)
    if callable(env) and not isinstance(env, str):
        factory = env
        env_id = f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', repr(factory))}"
        return _describe(env_id, _wrapped(env_id, _kwargs_factory(env_id, factory, params), wrappers), params,
                         wrappers=wrappers)
    if not isinstance(env, str) or not env:
        raise UsageError(f"an environment is an id string, a gymnasium.Env or a factory; got {type(env).__name__}")
    env_id = check_env_id(env, "environment")
    if ":" in env_id and not registered(env_id):
        factory, origin = _code_factory(env_id, params)
        return _describe(env_id, _wrapped(env_id, factory, wrappers), params, wrappers=wrappers, origin=origin)
    if is_atari_id(env_id):
        if not registered(env_id):  # registers ale-py's ids first
            _unknown(env_id)
        if wrappers:
            raise UsageError("Atari environments get dqnx's standard preprocessing; --wrapper applies to other Gymnasium ids")
        from dqnx.envs.atari import describe_atari

        return describe_atari(env_id, params)
    if not registered(env_id):
        _unknown(env_id)

    def factory(render_mode: str | None = None) -> Any:
        return gym.make(env_id, render_mode=render_mode, **params)

    return _describe(env_id, _wrapped(env_id, checked_factory(env_id, factory), wrappers), params, wrappers=wrappers)


def _code_factory(env_id: str, params: dict[str, Any]) -> tuple[Callable[[str | None], Any], str]:
    """Gymnasium's two conventions for an id naming a module, told apart after importing it:
    'module.path:EnvClass' (an attribute that is a class or factory, called with env_params) and
    'package:EnvId' (importing the package registered EnvId, which gymnasium.make builds)."""
    module_name, _, attr = env_id.partition(":")
    module = _import_module(module_name, env_id)
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
    is_factory = target is not None and target is not module and callable(target)
    is_registered = attr in gym.envs.registry
    if is_factory and is_registered:
        raise UsageError(f"{env_id} is ambiguous: {module_name} has an attribute {attr} and registered the Gymnasium id "
                         f"{attr}; register or name them differently")
    if is_factory:
        return _kwargs_factory(env_id, target, params), f"{env_id}: called {module_name}.{attr} (module:Class)"
    if is_registered:

        def factory(render_mode: str | None = None) -> Any:
            # render_mode only when asked for: some packages' envs (popgym's) take no such argument
            return gym.make(attr, **params) if render_mode is None else gym.make(attr, render_mode=render_mode, **params)

        return checked_factory(env_id, factory), f"{env_id}: imported {module_name}, then made its registered id {attr} (package:EnvId)"
    if target is not None:
        raise UsageError(f"{env_id!r} is not a class or factory; give 'module.path:EnvClass' of a gymnasium.Env")
    hint = ("; a run trained on an instance or factory takes it again: dqnx.load(path, env=...) or "
            "dqnx.train(env, resume=path)") if "<" in attr else ""
    ids = [i for i in gym.envs.registry if getattr(gym.envs.registry[i], "entry_point", None)
           and str(gym.envs.registry[i].entry_point).startswith(module_name)]
    close = difflib.get_close_matches(attr, ids, n=1)
    did_you_mean = f"did you mean {module_name}:{close[0]}? " if close else ""
    raise UsageError(f"module {module_name!r} has no {attr!r} (neither an attribute nor a Gymnasium id it registered); "
                     f"{did_you_mean}give 'module.path:EnvClass' or 'package:EnvId'{hint}")


def _import_module(module_name: str, what: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ImportError as e:
        raise UsageError(f"cannot import {module_name!r} for {what!r} ({e}); install the package or put it on PYTHONPATH") from None


def _wrapped(env_id: str, factory: Callable[[str | None], Any], wrappers: tuple[Wrapper, ...]) -> Callable[[str | None], Any]:
    """`factory` with the user's wrappers applied in order, before dqnx checks the spaces; each
    wrapper is imported here, so one that does not import or is not callable fails at once."""
    if not wrappers:
        return factory
    resolved = []
    for wrapper in wrappers:
        module_name, _, attr = wrapper.target.partition(":")
        target: Any = _import_module(module_name, f"wrapper {wrapper.target}")
        for part in attr.split("."):
            target = getattr(target, part, None)
        if target is None or not callable(target):
            raise UsageError(f"wrapper {wrapper.target} is {'missing' if target is None else 'not callable'}; give "
                             "module.path:callable of a Gymnasium wrapper, e.g. gymnasium.wrappers:FlattenObservation")
        resolved.append((wrapper, target))

    def build(render_mode: str | None = None) -> Any:
        env = factory(render_mode)
        if isinstance(env.observation_space, spaces.Dict) and MASK_KEY in env.observation_space.spaces:
            env = MaskFromObservation(env)  # the mask leaves the observation before any user wrapper flattens it
        for wrapper, target in resolved:
            try:
                env = target(env, **wrapper.kwargs)
            except (TypeError, ValueError, KeyError, AttributeError, AssertionError, gym.error.Error) as e:
                raise UsageError(f"wrapper {wrapper} cannot wrap {env_id} ({type(e).__name__}: {e}); "
                                 "check its keyword arguments and order") from None
            if not isinstance(env, gym.Env):
                raise UsageError(f"wrapper {wrapper.target} returned a {type(env).__name__}, not a gymnasium.Env")
        return env

    return build


def _instance_id(instance: Any) -> str:
    """The registered id when gym.make(id) rebuilds this very env; else its class's import path,
    which load/eval can only rebuild if the class needs no arguments (they ask for env= otherwise)."""
    spec = getattr(instance, "spec", None)
    if spec is not None and getattr(spec, "id", None) and not getattr(spec, "additional_wrappers", ()):
        return spec.id
    cls = type(instance)  # the outermost wrapper, or the env itself when unwrapped
    return f"{cls.__module__}:{cls.__qualname__}"


def _kwargs_factory(env_id: str, target: Callable[..., Any], params: dict[str, Any]) -> Callable[[str | None], Any]:
    """A user's class or factory with its parameters; max_episode_steps adds a time limit."""
    kwargs = dict(params)
    limit = kwargs.pop("max_episode_steps", None)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise UsageError(f"max_episode_steps must be a positive integer, got {limit!r}; e.g. --env-param max_episode_steps=500")

    def factory(render_mode: str | None = None) -> Any:
        try:
            env = target(**kwargs, render_mode=render_mode) if render_mode else target(**kwargs)
        except (TypeError, ValueError, KeyError) as e:
            raise UsageError(f"cannot build {env_id} with parameters {kwargs} ({type(e).__name__}: {e}); check --env-param") from None
        if not isinstance(env, gym.Env):
            raise UsageError(f"{env_id} built a {type(env).__name__}, not a gymnasium.Env")
        if limit is not None:
            env = gym.wrappers.TimeLimit(env, int(limit))
        return env

    return factory


def checked_factory(env_id: str, factory: Callable[[str | None], Any]) -> Callable[[str | None], Any]:
    """Turn the errors of building a registered env into one-line UsageErrors."""

    def build(render_mode: str | None = None) -> Any:
        try:
            return factory(render_mode)
        except gym.error.DependencyNotInstalled as e:
            extra = "box2d" if "box2d" in str(e).lower() else None
            how = f"`pip install 'dqnx[{extra}]'`" if extra else "install the package it names"
            raise UsageError(f"{env_id} needs a package that is not installed ({str(e).splitlines()[0]}); {how}") from None
        except (TypeError, ValueError, KeyError) as e:
            # What a constructor raises on a parameter it cannot use (FrozenLake map_name=9x9: KeyError).
            raise UsageError(f"cannot build {env_id} with those parameters ({type(e).__name__}: {e}); check --env-param") from None

    return build


def _unknown(env_id: str) -> None:
    from dqnx.envs.gymnax_env import DISCRETE_ENVS

    known = list(gym.envs.registry) + [e for family in DISCRETE_ENVS.values() for e in family]
    close = difflib.get_close_matches(env_id, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(
        f"unknown environment {env_id!r}; {hint}give a gymnax id (`dqnx envs`), a registered Gymnasium id "
        "or 'module.path:EnvClass'"
    )


def _space_error(env_id: str, what: str) -> UsageError:
    return UsageError(f"{env_id} has {what}; {SUPPORTED}")


def action_count(env_id: str, space: Any) -> int:
    if isinstance(space, spaces.Discrete):
        if int(space.start) != 0:
            raise _space_error(env_id, f"a Discrete action space starting at {space.start}; wrap it so actions start at 0")
        return int(space.n)
    if isinstance(space, spaces.Box):
        raise _space_error(env_id, "continuous (Box) actions, which a Q-function cannot maximize over")
    if isinstance(space, (spaces.MultiDiscrete, spaces.MultiBinary)):
        raise _space_error(env_id, f"{type(space).__name__} actions; flatten them into one Discrete space with a wrapper")
    raise _space_error(env_id, f"{type(space).__name__} actions")


def _describe(env_id: str, factory: Callable[[str | None], Any], params: dict[str, Any], *,
              wrappers: tuple[Wrapper, ...] = (), origin: str | None = None) -> GymEnv:
    env = factory(None)
    if wrappers:  # spaces errors name the wrappers that shaped them
        env_id_as_built = f"{env_id} wrapped in {', '.join(w.target for w in wrappers)}"
    else:
        env_id_as_built = env_id
    try:
        num_actions = action_count(env_id_as_built, env.action_space)
        mask_in_obs = isinstance(env.observation_space, spaces.Dict) and MASK_KEY in env.observation_space.spaces
        if mask_in_obs:
            env = MaskFromObservation(env)
        masked = probe_mask(env_id_as_built, env, num_actions)
        obs_space = env.observation_space
        num_states = low = high = None
        layout = None
        if isinstance(obs_space, spaces.Discrete):
            if int(obs_space.start) != 0:
                raise _space_error(env_id_as_built, f"Discrete observations starting at {obs_space.start}")
            num_states = int(obs_space.n)
            shape, dtype = (num_states,), np.dtype(np.float32)
        elif isinstance(obs_space, spaces.Box):
            shape = tuple(obs_space.shape)
            if not shape:
                shape = (1,)
            image = obs_space.dtype == np.uint8 and len(shape) == 3
            dtype = np.dtype(np.uint8) if image else np.dtype(np.float32)
            layout = ("CHW" if shape[0] <= 4 < shape[-1] else "HWC") if image else None
            low = np.broadcast_to(np.asarray(obs_space.low, np.float64), shape)
            high = np.broadcast_to(np.asarray(obs_space.high, np.float64), shape)
        else:
            hint = " (flatten it with gymnasium.wrappers.FlattenObservation)" if isinstance(
                obs_space, (spaces.Dict, spaces.Tuple, spaces.MultiDiscrete, spaces.MultiBinary)) else ""
            raise _space_error(env_id_as_built, f"{type(obs_space).__name__} observations{hint}")
        spec = getattr(env, "spec", None)
        max_steps = getattr(spec, "max_episode_steps", None) if spec is not None else None
        if max_steps is None and params.get("max_episode_steps") is not None:  # a TimeLimit added by the factory
            max_steps = int(params["max_episode_steps"])
        threshold = getattr(spec, "reward_threshold", None) if spec is not None else None
    finally:
        env.close()
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise _space_error(env_id_as_built, f"observations of shape {shape}")
    return GymEnv(
        env_id=env_id, factory=factory, params=params, obs_shape=shape, obs_dtype=dtype, num_actions=num_actions,
        max_episode_steps=max_steps, solve_threshold=None if threshold is None else float(threshold),
        num_states=num_states, obs_low=low, obs_high=high, image_layout=layout, wrappers=wrappers, origin=origin,
        masked=masked, mask_in_obs=mask_in_obs,
    )


def _one_hot(env: Any, n: int) -> Any:
    space = gym.spaces.Box(0.0, 1.0, (n,), np.float32)
    eye = np.eye(n, dtype=np.float32)
    return gym.wrappers.TransformObservation(env, lambda s: eye[int(s)], space)


# --- action masks ------------------------------------------------------------------------
MASK_KEY = "action_mask"


def check_mask(env_id: str, mask: Any, num_actions: int, where: str) -> np.ndarray:
    """`mask` as a bool array of one entry per action, or a UsageError naming the env."""
    array = np.asarray(mask)
    if array.shape != (num_actions,):
        raise UsageError(f"{env_id}'s action mask ({where}) has shape {array.shape}, but the env has {num_actions} actions; "
                         "give one 0/1 entry per action, or train with --set action_mask=off")
    return array.astype(bool)


def probe_mask(env_id: str, env: Any, num_actions: int) -> bool:
    """Whether `env` gives masks in its reset info (one reset, seed 0), checked for length."""
    try:
        _, info = env.reset(seed=0)
    except Exception as e:  # an env that cannot reset at all fails the same way in training; say so now
        raise UsageError(f"{env_id} failed to reset ({type(e).__name__}: {e})") from None
    if MASK_KEY not in (info or {}):
        return False
    check_mask(env_id, info[MASK_KEY], num_actions, 'info["action_mask"] at reset')
    return True


class MaskFromObservation(gym.Wrapper):
    """Moves a Dict observation's "action_mask" into the info (reset and step), before any
    flattening; the observation becomes the one remaining value, or the rest flattened."""

    def __init__(self, env: Any):
        super().__init__(env)
        rest = {k: v for k, v in env.observation_space.spaces.items() if k != MASK_KEY}
        if not rest:
            raise UsageError("the Dict observation holds only an action_mask; dqnx needs an observation beside it")
        self._rest = spaces.Dict(rest)
        self._single = next(iter(rest)) if len(rest) == 1 else None
        self.observation_space = rest[self._single] if self._single else spaces.flatten_space(self._rest)

    def _split(self, obs: dict, info: dict) -> tuple[Any, dict]:
        info = {**info, MASK_KEY: np.asarray(obs[MASK_KEY])}
        if self._single:
            return obs[self._single], info
        return spaces.flatten(self._rest, {k: obs[k] for k in self._rest.spaces}), info

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return self._split(obs, info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        obs, info = self._split(obs, info)
        return obs, reward, terminated, truncated, info
