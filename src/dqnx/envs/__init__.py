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

from dataclasses import dataclass
from typing import Any, Callable, Union

from dqnx.envs.gymnax_env import DISCRETE_ENVS, SOLVE_THRESHOLDS, JaxEnv, make_gymnax
from dqnx.errors import UsageError

Env = Union[JaxEnv, Any]  # Any: dqnx.envs.gymnasium_env.GymEnv (imported lazily: gymnasium is slow to import)


def is_jax_id(env_id: str) -> bool:
    """Whether gymnax (or dqnx's toy envs) provide `env_id`."""
    from dqnx.envs.gymnax_env import UNSUPPORTED

    if ":" in env_id:  # module:Class and package:EnvId name other packages' code, never gymnax's ids
        return False
    return env_id in UNSUPPORTED or any(env_id in family for family in DISCRETE_ENVS.values()) or env_id.endswith(
        ("-bsuite", "-misc", "-MinAtar")
    )  # pgx games are listed in DISCRETE_ENVS


def _make_jax(env: Any, env_params: dict | None, wrappers: Any = ()) -> Env:
    if wrappers:
        raise UsageError(f"--wrapper applies to Gymnasium environments; {env} trains on the JAX backend "
                         "(add --backend gymnasium to wrap its Gymnasium version)")
    return make_gymnax(env, env_params)


def _make_gymnasium(env: Any, env_params: dict | None, wrappers: Any = ()) -> Env:
    from dqnx.envs.gymnasium_env import make_gymnasium

    return make_gymnasium(env, env_params, wrappers)


@dataclass(frozen=True)
class Backend:
    """One way of running environments, and what the layers above need to know of it."""

    name: str
    loop: str  # "compiled": stepped inside the jitted training loop (drivers/jax_loop.py); "host": in Python (host_loop.py)
    description: str  # for progress headers
    provides: Callable[[str], bool]  # ids it knows (the default choice for an id is the first backend that knows it)
    make: Callable[..., Env]  # (id or instance, env params, wrappers) -> Env
    stored_params: Callable[[Env, "dict | None"], dict]  # the env parameters config.json records, as the env took them
    takes_instances: bool = False  # also a Gymnasium instance or factory, not only ids


# The backend registry: every env has a `.backend` naming its entry. A new backend (EnvPool,
# say) is one adapter module and one entry here; the drivers choose their loop by `loop`.
BACKENDS: dict[str, Backend] = {
    "jax": Backend(
        name="jax", loop="compiled", description="JAX-native, compiled loop", provides=is_jax_id, make=_make_jax,
        stored_params=lambda env, given: {name: getattr(env.params, name) for name in (given or {})},  # converted values
    ),
    "gymnasium": Backend(
        name="gymnasium", loop="host", description="gymnasium, host loop", provides=lambda env_id: True,
        make=_make_gymnasium, stored_params=lambda env, given: dict(env.params), takes_instances=True,
    ),
}


def backend_of(env: Env) -> Backend:
    """The registry entry of a built environment."""
    return BACKENDS[env.backend]


def stored_params(env: Env, env_params: dict | None) -> dict:
    """The env parameters to record in config.json, as the environment took them."""
    return backend_of(env).stored_params(env, env_params)


def resolved_settings(env: Env) -> dict | None:
    """config.json's env_settings: every parameter as resolved (defaults and overrides), where the
    environment reports them (gymnax's; Gymnasium's do not)."""
    return env.settings() if hasattr(env, "settings") else None


def resolve_backend(env: Any, backend: str | None = None) -> str:
    """The backend an environment trains on: the one asked for, else the first in BACKENDS that knows the id."""
    if backend is not None and backend not in BACKENDS:
        raise UsageError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if not isinstance(env, str):
        if backend is not None and not BACKENDS[backend].takes_instances:
            raise UsageError(f"the {backend} backend takes environment ids; an instance or factory trains on the gymnasium backend")
        return next(b.name for b in BACKENDS.values() if b.takes_instances)
    if backend is not None:
        if not BACKENDS[backend].provides(env):
            raise UsageError(f"{env} is not a JAX-native environment; drop --backend {backend} (`dqnx envs` lists them)")
        return backend
    return next(b.name for b in BACKENDS.values() if b.provides(env))


def make_env(env: Any, env_params: dict | None = None, backend: str | None = None, wrappers: Any = ()) -> Env:
    """Build the environment behind `env` (an id, or for Gymnasium an instance or factory), or raise UsageError.

    wrappers: Gymnasium wrappers (dqnx.envs.source.Wrapper or {"target", "kwargs"} dicts), applied in order.
    """
    return BACKENDS[resolve_backend(env, backend)].make(env, env_params, wrappers)


__all__ = ["BACKENDS", "Backend", "DISCRETE_ENVS", "Env", "JaxEnv", "SOLVE_THRESHOLDS", "backend_of", "is_jax_id",
           "make_env", "resolve_backend", "resolved_settings"]
