"""A classifier policy as an agent: logits(s) = MLP(s), greedy action = argmax of the logits.

It is trained off-line by `dqnx imitate` (dqnx/imitation/train.py) with cross-entropy
on an expert's (state, action) pairs, not by the RL loop. Its Learner's `q_values`
returns the logits, which are not action values, but their argmax is the policy's
action; that is all greedy evaluation (`dqnx eval`, `dqnx.load`, `dqnx.evaluate`)
needs, so those work on an imitation run unchanged.

    logits = policy.apply({"params": params}, obs)          # [B, num_actions]
    loss = mean(-log softmax(logits)[expert action])         # cross-entropy
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from dqnx.agents.dqn import QNetwork
from dqnx.agents.exploration import epsilon_greedy
from dqnx.config import ImitationConfig
from dqnx.errors import UsageError
from dqnx.protocols import Batch, Learner


@flax.struct.dataclass
class ImitationState:
    params: Any
    updates: jax.Array  # Adam steps taken


def make_policy_network(config: ImitationConfig, num_actions: int) -> QNetwork:
    """The MLP (or, with no hidden layers, one Dense layer) from a state to one logit per action."""
    return QNetwork(num_actions=num_actions, hidden_sizes=tuple(config.hidden_sizes))


def cross_entropy(logits: jax.Array, actions: jax.Array) -> jax.Array:
    """Mean negative log-likelihood of the expert's actions under softmax(logits).

    >>> round(float(cross_entropy(jnp.array([[0.0, 0.0]]), jnp.array([1]))), 4)  # log 2
    0.6931
    """
    return optax.softmax_cross_entropy_with_integer_labels(logits, actions).mean()


def accuracy(logits: jax.Array, actions: jax.Array) -> jax.Array:
    """Fraction of samples whose argmax logit is the expert's action."""
    return jnp.mean(logits.argmax(axis=-1) == actions)


def make_imitation_learner(config: ImitationConfig, obs_shape: tuple[int, ...], num_actions: int) -> Learner:
    network = make_policy_network(config, num_actions)

    def init(key: jax.Array) -> ImitationState:
        params = network.init(key, jnp.zeros((1, *obs_shape), jnp.float32))["params"]
        return ImitationState(params=params, updates=jnp.zeros((), jnp.int32))

    def q_values(params: Any, obs: jax.Array) -> jax.Array:
        return network.apply({"params": params}, obs)

    def act(params: Any, act_state: Any, obs: jax.Array, mask: jax.Array | None, key: jax.Array, epsilon: jax.Array,
            hyper: dict[str, Any] | None = None) -> tuple[jax.Array, Any]:
        return epsilon_greedy(q_values(params, obs), key, epsilon, mask), act_state

    def learn(state: ImitationState, batch: Batch, env_steps: jax.Array, key: jax.Array,
              hyper: dict[str, Any] | None = None):
        # Environment transitions carry no expert labels; `dqnx imitate` trains this policy.
        raise UsageError("an imitation policy learns from an expert's dataset, not from the environment; "
                         "use `dqnx dataset` and `dqnx imitate` instead of `dqnx train --agent imitation`")

    return Learner(init=init, act=act, learn=learn, q_values=q_values)
