"""Environment adapters: every backend is turned into one small interface here.

`make_env(env_id)` is the single entry point the drivers use. Today it resolves ids to
gymnax's JAX-native environments (gymnax_env.py) and dqnx's own toy ones (toy.py);
a Gymnasium adapter belongs beside them in its own module.
"""

from dqnx.envs.gymnax_env import DISCRETE_ENVS, SOLVE_THRESHOLDS, JaxEnv, make_gymnax


def make_env(env_id: str, env_params: dict | None = None) -> JaxEnv:
    """Build the environment behind `env_id` (with parameter overrides), or raise UsageError."""
    return make_gymnax(env_id, env_params)


__all__ = ["DISCRETE_ENVS", "JaxEnv", "SOLVE_THRESHOLDS", "make_env"]
