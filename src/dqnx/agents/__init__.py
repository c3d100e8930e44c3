"""Agents as pure functions. One file per family: dqn.py (DQN), tabular.py, linear.py,
imitation.py (a classifier policy trained by `dqnx imitate`).

Every agent gives the training loop the same four functions, a `Learner`:

    init(key) -> state                      state has .params and .updates
    act(params, obs, key, epsilon) -> action   epsilon-greedy on a batch of observations
    learn(state, transitions, env_steps, key) -> (state, {"loss", "q_mean", "td_abs"})
    q_values(params, obs) -> Q(s, .)        the greedy policy is its argmax

A new agent is a new module that builds a Learner, plus a line in `make_learner`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from dqnx.config import RunConfig


class Batch(NamedTuple):
    """Transitions; `next_obs` is the true successor, also after a truncation.

    `episode_end` (terminated | truncated) is given when transitions are stored: replay
    that rebuilds stacked frames needs to know where episodes start. Sampled batches
    leave it None.
    """

    obs: Any
    action: Any
    reward: Any
    next_obs: Any
    terminated: Any
    episode_end: Any = None


class Learner(NamedTuple):
    init: Callable[[Any], Any]
    act: Callable[[Any, Any, Any, Any], Any]
    learn: Callable[[Any, Any, Any, Any], tuple[Any, dict[str, Any]]]
    q_values: Callable[[Any, Any], Any]


def make_learner(agent: str, config: RunConfig, env: Any) -> Learner:
    """The Learner of `agent` ('dqn', 'rainbow', 'tabular-q', 'sarsa', 'linear-q', 'imitation') for `env`."""
    if agent in ("dqn", "rainbow"):
        from dqnx.agents.dqn import make_dqn_learner

        return make_dqn_learner(config, env.obs_shape, env.num_actions, obs_dtype=getattr(env, "obs_dtype", "float32"),
                                frame_stack=getattr(env, "frame_stack", 0), image_layout=getattr(env, "image_layout", None),
                                max_episode_steps=getattr(env, "max_episode_steps", None))
    if agent in ("tabular-q", "sarsa"):
        from dqnx.agents.tabular import make_tabular_learner

        return make_tabular_learner(config, env, sarsa=agent == "sarsa")
    if agent == "linear-q":
        from dqnx.agents.linear import make_linear_learner

        return make_linear_learner(config, env)
    if agent == "imitation":
        from dqnx.agents.imitation import make_imitation_learner

        return make_imitation_learner(config, env.obs_shape, env.num_actions)
    raise ValueError(f"unknown agent {agent!r}")
