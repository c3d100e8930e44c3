"""Tabular Q-learning and SARSA: a table Q[state, action], one TD update per transition.

    Q-learning:  Q[s, a] += lr * (r + gamma * (1 - terminated) * max_a' Q[s', a'] - Q[s, a])
    SARSA:       the same with Q[s', a'] for a' drawn from the epsilon-greedy policy at s'
    With action masks, the max and the draw of a' range over the actions legal at s'.

The table's row of an observation is its state index for a Discrete observation space
(which reaches the agent one-hot encoded), or the index of its cell on a grid of
`bins` equal bins per dimension between `obs_low` and `obs_high` for a Box one.

SARSA's a' is drawn at the true successor s' from the same epsilon-greedy policy the
agent acts with, rather than reusing the action the loop executes next: the two have
the same distribution, and at an episode's end only this one belongs to s' (the next
executed action belongs to the next episode's first state).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from dqnx.agents.exploration import epsilon_at, epsilon_greedy, legal_max
from dqnx.config import TabularConfig, hyperparameters
from dqnx.errors import UsageError
from dqnx.protocols import Batch, Learner

MAX_TABLE_ROWS = 10_000_000


@flax.struct.dataclass
class TabularState:
    params: Any  # {"q": [num_rows, num_actions]}
    updates: jax.Array


def discretize(obs: jax.Array, low: jax.Array, high: jax.Array, bins: jax.Array) -> jax.Array:
    """Row index of each observation on a grid of bins[i] equal bins along dimension i.

    Values below `low` fall in bin 0, values at or above `high` in the last bin; the
    row is the cells' index in row-major order (the last dimension varies fastest).

    >>> int(discretize(jnp.array([[0.5, -3.0]]), jnp.array([0.0, -1.0]), jnp.array([1.0, 1.0]), jnp.array([4, 3]))[0])
    6
    """
    fraction = (obs - low) / (high - low)
    cell = jnp.clip(jnp.floor(fraction * bins).astype(jnp.int32), 0, bins - 1)
    row = cell[..., 0]
    for i in range(1, cell.shape[-1]):  # Horner's scheme rather than cumprod strides: ONNX (opset < 26) has no CumProd
        row = row * bins[i] + cell[..., i]
    return row


def table_layout(config: TabularConfig, env: Any) -> tuple[int, Any]:
    """(rows of the Q-table, obs -> row function) for `env`."""
    if env.num_states is not None:
        return env.num_states, lambda obs: obs.argmax(axis=-1)
    if len(env.obs_shape) != 1:
        raise UsageError(f"tabular agents discretize flat Box observations; {env.env_id}'s have shape {env.obs_shape}")
    dims = env.obs_shape[0]
    low = np.asarray(config.obs_low, np.float64) if config.obs_low else np.asarray(env.obs_low, np.float64)
    high = np.asarray(config.obs_high, np.float64) if config.obs_high else np.asarray(env.obs_high, np.float64)
    if low.shape != (dims,) or high.shape != (dims,):
        raise UsageError(f"{env.env_id} observations have {dims} dimensions; give obs_low and obs_high {dims} values each")
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(np.abs(high - low) < 1e6)):
        raise UsageError(
            f"{env.env_id}'s observation bounds are unbounded or huge ({low} .. {high}); "
            "set obs_low and obs_high, e.g. --set obs_low=-2.4,-3,-0.21,-3 --set obs_high=2.4,3,0.21,3"
        )
    bins = config.bins * dims if len(config.bins) == 1 else config.bins
    if len(bins) != dims:
        raise UsageError(f"bins has {len(config.bins)} values; give one for all dimensions or one per dimension ({dims})")
    rows = int(np.prod(bins))
    if rows > MAX_TABLE_ROWS:
        raise UsageError(f"bins {bins} make {rows} table rows; use fewer bins (at most {MAX_TABLE_ROWS} rows)")
    low_j, high_j = jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32)
    bins_j = jnp.asarray(bins, jnp.int32)
    return rows, lambda obs: discretize(obs, low_j, high_j, bins_j)


def make_tabular_learner(config: TabularConfig, env: Any, sarsa: bool = False) -> Learner:
    rows, row_of = table_layout(config, env)

    def init(key: jax.Array) -> TabularState:
        table = jnp.full((rows, env.num_actions), config.initial_q, jnp.float32)
        return TabularState(params={"q": table}, updates=jnp.zeros((), jnp.int32))

    def q_values(params: Any, obs: jax.Array) -> jax.Array:
        return params["q"][row_of(obs)]

    def act(params: Any, act_state: Any, obs: jax.Array, mask: jax.Array | None, key: jax.Array, epsilon: jax.Array,
            hyper: dict[str, Any] | None = None) -> tuple[jax.Array, Any]:
        return epsilon_greedy(q_values(params, obs), key, epsilon, mask), act_state

    def update_one(values: dict[str, Any], table: jax.Array, transition):
        obs, action, reward, next_obs, terminated, next_mask, key, next_epsilon = transition
        s, s_next = row_of(obs[None])[0], row_of(next_obs[None])[0]
        row_mask = None if next_mask is None else next_mask[None]
        if sarsa:  # a' from the acting policy at s', legal actions only
            next_action = epsilon_greedy(table[s_next][None], key, next_epsilon, row_mask)[0]
            next_value = table[s_next, next_action]
        else:
            next_value = legal_max(table[s_next][None], row_mask)[0]
        target = reward + values["gamma"] * (1.0 - terminated.astype(jnp.float32)) * next_value
        td = target - table[s, action]
        return table.at[s, action].add(values["learning_rate"] * td), (td, table[s, action])

    def learn(state: TabularState, batch: Batch, env_steps: jax.Array, key: jax.Array,
              hyper: dict[str, Any] | None = None):
        """One TD update per transition, applied one after another (envs may share a cell)."""
        values = hyperparameters(config, hyper)
        n = batch.reward.shape[0]
        next_epsilon = jnp.full((n,), epsilon_at(config, env_steps + config.num_envs, hyper))
        transitions = (batch.obs, batch.action, batch.reward, batch.next_obs, batch.terminated, batch.next_mask,
                       jax.random.split(key, n), next_epsilon)
        table, (td, q_taken) = jax.lax.scan(functools.partial(update_one, values), state.params["q"], transitions)
        metrics = {"loss": 0.5 * jnp.mean(td**2), "q_mean": q_taken.mean(), "td_abs": jnp.abs(td).mean()}
        return TabularState(params={"q": table}, updates=state.updates + 1), metrics

    return Learner(init=init, act=act, learn=learn, q_values=q_values)
