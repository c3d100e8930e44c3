"""Environment adapters: every backend is turned into one small interface here.

`make_env(env)` is the single entry point the drivers use. It resolves an id to one
of two backends:

- "jax": gymnax's JAX-native environments (gymnax_env.py) and dqnx's toy ones
  (toy.py), trained by the compiled loop (drivers/jax_loop.py);
- "gymnasium": any Gymnasium environment with discrete actions (gymnasium_env.py,
  Atari in atari.py), trained by the host loop (drivers/host_loop.py).

Ids that both know (CartPole-v1, Acrobot-v1, MountainCar-v0) go to the JAX backend
unless `backend="gymnasium"` asks otherwise.
"""

from __future__ import annotations

from typing import Any, Union

from dqnx.envs.gymnax_env import DISCRETE_ENVS, SOLVE_THRESHOLDS, JaxEnv, make_gymnax
from dqnx.errors import UsageError

BACKENDS = ("jax", "gymnasium")

Env = Union[JaxEnv, Any]  # Any: dqnx.envs.gymnasium_env.GymEnv (imported lazily: gymnasium is slow to import)


def is_jax_id(env_id: str) -> bool:
    """Whether gymnax (or dqnx's toy envs) provide `env_id`."""
    from dqnx.envs.gymnax_env import UNSUPPORTED

    if ":" in env_id:  # module:Class and package:EnvId name other packages' code, never gymnax's ids
        return False
    return env_id in UNSUPPORTED or any(env_id in family for family in DISCRETE_ENVS.values()) or env_id.endswith(
        ("-bsuite", "-misc", "-MinAtar")
    )


def resolve_backend(env: Any, backend: str | None = None) -> str:
    """The backend an environment trains on: the one asked for, else "jax" when gymnax has it."""
    if backend is not None and backend not in BACKENDS:
        raise UsageError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if not isinstance(env, str):
        if backend == "jax":
            raise UsageError("the JAX backend takes environment ids; an instance or factory trains on the gymnasium backend")
        return "gymnasium"
    if backend is not None:
        if backend == "jax" and not is_jax_id(env):
            raise UsageError(f"{env} is not a JAX-native environment; drop --backend jax (`dqnx envs` lists them)")
        return backend
    return "jax" if is_jax_id(env) else "gymnasium"


def make_env(env: Any, env_params: dict | None = None, backend: str | None = None, wrappers: Any = ()) -> Env:
    """Build the environment behind `env` (an id, or for Gymnasium an instance or factory), or raise UsageError.

    wrappers: Gymnasium wrappers (dqnx.envs.source.Wrapper or {"target", "kwargs"} dicts), applied in order.
    """
    if resolve_backend(env, backend) == "jax":
        if wrappers:
            raise UsageError(f"--wrapper applies to Gymnasium environments; {env} trains on the JAX backend "
                             "(add --backend gymnasium to wrap its Gymnasium version)")
        return make_gymnax(env, env_params)
    from dqnx.envs.gymnasium_env import make_gymnasium

    return make_gymnasium(env, env_params, wrappers)


__all__ = ["BACKENDS", "DISCRETE_ENVS", "Env", "JaxEnv", "SOLVE_THRESHOLDS", "is_jax_id", "make_env", "resolve_backend"]
