"""Linear Q-learning: Q(s, a) = phi(s) . w[:, a] + b[a], one semi-gradient step per env step.

    delta = r + gamma * (1 - terminated) * max_a' Q(s', a') - Q(s, a)
    w[:, a] += lr * delta * phi(s);   b[a] += lr * delta

The target is held fixed while differentiating (semi-gradient), as in Sutton & Barto
chapter 10. Features phi(s): the raw observation, the observation divided by
`obs_scale`, or that plus every pairwise product ('quadratic').
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from dqnx.agents.exploration import epsilon_greedy, legal_max
from dqnx.config import LinearConfig, hyperparameters
from dqnx.errors import UsageError
from dqnx.protocols import Batch, Learner


@flax.struct.dataclass
class LinearState:
    params: Any  # {"w": [num_features, num_actions], "b": [num_actions]}
    updates: jax.Array


def make_features(config: LinearConfig, obs_dim: int):
    """(number of features, obs [B, obs_dim] -> phi [B, F])."""
    if config.obs_scale and len(config.obs_scale) != obs_dim:
        raise UsageError(f"obs_scale has {len(config.obs_scale)} values; the observation has {obs_dim} dimensions")
    scale = jnp.asarray(config.obs_scale or (1.0,) * obs_dim, jnp.float32)
    if config.features == "raw":
        return obs_dim, lambda obs: obs
    if config.features == "normalized":
        return obs_dim, lambda obs: obs / scale
    upper = np.triu_indices(obs_dim)

    def quadratic(obs: jax.Array) -> jax.Array:
        x = obs / scale
        products = (x[:, :, None] * x[:, None, :])[:, upper[0], upper[1]]
        return jnp.concatenate([x, products], axis=-1)

    return obs_dim + len(upper[0]), quadratic


def make_linear_learner(config: LinearConfig, env: Any) -> Learner:
    obs_dim = int(np.prod(env.obs_shape))
    num_features, phi = make_features(config, obs_dim)

    def features(obs: jax.Array) -> jax.Array:
        return phi(obs.reshape(obs.shape[0], -1))

    def init(key: jax.Array) -> LinearState:
        params = {"w": jnp.zeros((num_features, env.num_actions), jnp.float32), "b": jnp.zeros((env.num_actions,), jnp.float32)}
        return LinearState(params=params, updates=jnp.zeros((), jnp.int32))

    def q_values(params: Any, obs: jax.Array) -> jax.Array:
        return features(obs) @ params["w"] + params["b"]

    def act(params: Any, act_state: Any, obs: jax.Array, mask: jax.Array | None, key: jax.Array, epsilon: jax.Array,
            hyper: dict[str, Any] | None = None) -> tuple[jax.Array, Any]:
        return epsilon_greedy(q_values(params, obs), key, epsilon, mask), act_state

    def learn(state: LinearState, batch: Batch, env_steps: jax.Array, key: jax.Array,
              hyper: dict[str, Any] | None = None):
        values = hyperparameters(config, hyper)
        next_value = legal_max(q_values(state.params, batch.next_obs), batch.next_mask)
        target = batch.reward + values["gamma"] * (1.0 - batch.terminated.astype(jnp.float32)) * next_value

        def half_squared_td(params):
            q = jnp.take_along_axis(q_values(params, batch.obs), batch.action[:, None], axis=-1)[:, 0]
            return 0.5 * jnp.mean((jax.lax.stop_gradient(target) - q) ** 2), q  # mean: the step size is per transition

        (loss, q_taken), grads = jax.value_and_grad(half_squared_td, has_aux=True)(state.params)
        params = jax.tree.map(lambda p, g: p - values["learning_rate"] * g, state.params, grads)
        td = target - q_taken
        metrics = {"loss": loss, "q_mean": q_taken.mean(), "td_abs": jnp.abs(td).mean()}
        return LinearState(params=params, updates=state.updates + 1), metrics

    return Learner(init=init, act=act, learn=learn, q_values=q_values)
