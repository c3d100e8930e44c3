"""Environment adapters: every backend is turned into one small interface here.

`make_env(env_id)` is the single entry point the drivers use. Today it resolves ids to
gymnax's JAX-native environments (see gymnax_env.py); a Gymnasium adapter belongs
beside it in its own module.
"""

from dqnx.envs.gymnax_env import DISCRETE_ENVS, SOLVE_THRESHOLDS, JaxEnv, make_gymnax


def make_env(env_id: str) -> JaxEnv:
    """Build the environment behind `env_id`, or raise UsageError naming the problem."""
    return make_gymnax(env_id)


__all__ = ["DISCRETE_ENVS", "JaxEnv", "SOLVE_THRESHOLDS", "make_env"]
