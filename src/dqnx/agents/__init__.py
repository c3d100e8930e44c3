"""Agents as pure functions. One file per family: dqn.py (DQN), pqn.py (PQN), tabular.py, linear.py,
imitation.py (a classifier policy trained by `dqnx imitate`).

Every agent gives the training loop the same functions, a `Learner` (dqnx.protocols,
re-exported here with `Batch`):

    init(key) -> state                      state has .params and .updates
    act(params, act_state, obs, mask, key, epsilon) -> (action, act_state)
    learn(state, data, env_steps, key) -> (state, {"loss", "q_mean", "td_abs"})
    q_values(params, obs) -> Q(s, .)        the greedy policy is its argmax

A new agent is a new module that builds a Learner, plus an entry in `AGENTS`.
"""

from __future__ import annotations

from typing import Any, Callable

from dqnx.config import RunConfig
from dqnx.protocols import Batch, Learner, Rollout


def _dqn(agent: str, config: RunConfig, env: Any) -> Learner:
    from dqnx.agents.dqn import make_dqn_learner

    return make_dqn_learner(config, env.obs_shape, env.num_actions, obs_dtype=getattr(env, "obs_dtype", "float32"),
                            frame_stack=getattr(env, "frame_stack", 0), image_layout=getattr(env, "image_layout", None),
                            max_episode_steps=getattr(env, "max_episode_steps", None), masked=uses_masks(config, env))


def _pqn(agent: str, config: RunConfig, env: Any) -> Learner:
    from dqnx.agents.pqn import make_pqn_learner

    return make_pqn_learner(config, env.obs_shape, env.num_actions, obs_dtype=getattr(env, "obs_dtype", "float32"),
                            image_layout=getattr(env, "image_layout", None))


def _tabular(agent: str, config: RunConfig, env: Any) -> Learner:
    from dqnx.agents.tabular import make_tabular_learner

    return make_tabular_learner(config, env, sarsa=agent == "sarsa")


def _linear(agent: str, config: RunConfig, env: Any) -> Learner:
    from dqnx.agents.linear import make_linear_learner

    return make_linear_learner(config, env)


def _imitation(agent: str, config: RunConfig, env: Any) -> Learner:
    from dqnx.agents.imitation import make_imitation_learner

    return make_imitation_learner(config, env.obs_shape, env.num_actions)


class AgentKind:
    """What the layers above need to know about an agent name beyond its Learner."""

    def __init__(self, build: Callable[[str, RunConfig, Any], Learner], *, trained_by_rl: bool = True,
                 tabular: bool = False, network: bool = False):
        self.build = build
        self.trained_by_rl = trained_by_rl  # False: `dqnx train` refuses it (imitation policies come from `dqnx imitate`)
        self.tabular = tabular  # a Q-table (dqnx show prints it)
        self.network = network  # a Q-network (DQN family)


# The agent registry: name -> how to build its Learner. Each builder imports its module
# lazily, so naming an agent costs nothing until it is built.
AGENTS: dict[str, AgentKind] = {
    "dqn": AgentKind(_dqn, network=True),
    "rainbow": AgentKind(_dqn, network=True),
    "pqn": AgentKind(_pqn, network=True),
    "tabular-q": AgentKind(_tabular, tabular=True),
    "sarsa": AgentKind(_tabular, tabular=True),
    "linear-q": AgentKind(_linear),
    "imitation": AgentKind(_imitation, trained_by_rl=False),
}


def agent_kind(agent: str) -> AgentKind:
    if agent not in AGENTS:
        raise ValueError(f"unknown agent {agent!r}")
    return AGENTS[agent]


def uses_masks(config: RunConfig, env: Any) -> bool:
    """Whether a run acts and learns with action masks: the env gives them (env.masked) and
    config.action_mask is 'auto' ('off' ignores them)."""
    return bool(getattr(env, "masked", False)) and getattr(config, "action_mask", "auto") == "auto"


def make_learner(agent: str, config: RunConfig, env: Any) -> Learner:
    """The Learner of `agent` (a name in AGENTS: 'dqn', 'rainbow', 'pqn', 'tabular-q', ...) for `env`,
    stamped with what it was built from (Learner.built_from: the compiled loop's programs are reused by key)."""
    return agent_kind(agent).build(agent, config, env)._replace(built_from=(agent, config, env))


__all__ = ["AGENTS", "AgentKind", "Batch", "Learner", "Rollout", "agent_kind", "make_learner", "uses_masks"]
