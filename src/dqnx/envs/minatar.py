"""MinAtar (Young & Tian 2019) on gymnax: sticky actions, the settings of each published
reference, and the published figures themselves.

gymnax 1.0.1's MinAtar games differ from the MinAtar paper's in two settings:

- sticky actions: MinAtar repeats the previous action with probability 0.1 (as
  Machado et al. 2018 for the ALE); gymnax has none. `StickyActions` adds them as the
  env parameter `sticky_action_prob` (default 0, gymnax's behaviour);
- the episode cut: gymnax truncates every episode at `max_steps_in_episode` (1,000
  steps; Freeway 2,500); MinAtar has no cut, except Freeway's own end after 2,500
  steps (a terminal state there, a truncation in gymnax).

`SETTINGS` names the settings of each reference; `settings_params(game, name)` gives
the `--env-param` values that reproduce them, and every run records its resolved env
parameters in config.json ("env_settings").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

GAMES = ("Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar", "Seaquest-MinAtar", "SpaceInvaders-MinAtar")

# "No cut" as a number: gymnax needs a limit, and so does the greedy evaluation (a while
# loop that ends when every episode has). 100x gymnax's cut; an episode that reaches it
# is counted as truncated there.
NO_CUT_STEPS = 100_000
# Freeway ends after 2,500 steps in MinAtar itself (its terminate timer), so it keeps that.
GAME_OWN_END = {"Freeway-MinAtar": 2_500}

# Folded into the step key for the sticky draw, so the wrapped game gets the very key
# the plain game would: with p = 0 the two play identical episodes.
_STICKY_STREAM = 0x5717C7


@dataclass(frozen=True)
class Settings:
    """Env settings a published figure was measured under."""

    name: str
    sticky_action_prob: float
    cut: str  # what max_steps_in_episode is: "gymnax" (its default per game) or "none"
    description: str

    def params(self, game: str) -> dict[str, Any]:
        """The env parameters (`--env-param` / `env_params`) that give these settings on `game`."""
        out: dict[str, Any] = {"sticky_action_prob": self.sticky_action_prob}
        if self.cut == "none":
            out["max_steps_in_episode"] = GAME_OWN_END.get(game, NO_CUT_STEPS)
        return out


SETTINGS = {
    "gymnax": Settings("gymnax", 0.0, "gymnax",
                       "gymnax 1.0.1's defaults: no sticky actions, episodes cut at 1,000 steps (Freeway 2,500)"),
    "minatar": Settings("minatar", 0.1, "none",
                        f"the MinAtar paper's: sticky actions 0.1, no cut (a {NO_CUT_STEPS:,}-step safety limit; "
                        "Freeway's own end at 2,500)"),
}


@dataclass(frozen=True)
class Reference:
    """A published figure: a game's final return under named settings."""

    source: str
    agent: str
    steps: int
    settings: str  # a key of SETTINGS
    measure: str
    returns: dict[str, float | None]  # game -> return (None: not published)
    approximate: bool = False


REFERENCES = (
    Reference(
        source="Young & Tian 2019 (MinAtar paper), read from its learning curves (about +-10%)",
        agent="DQN (replay + target network)", steps=5_000_000, settings="minatar",
        measure="training return, averaged over the last 100 episodes",
        returns={"Asterix-MinAtar": 17, "Breakout-MinAtar": 10, "Freeway-MinAtar": 50, "Seaquest-MinAtar": 20,
                 "SpaceInvaders-MinAtar": 43},
        approximate=True,
    ),
    Reference(
        source="gymnax-blines (gymnax's README), PPO with an MLP",
        agent="PPO", steps=10_000_000, settings="gymnax", measure="test return of the final policy",
        returns={"Asterix-MinAtar": 15, "Breakout-MinAtar": 28, "Freeway-MinAtar": 58, "Seaquest-MinAtar": None,
                 "SpaceInvaders-MinAtar": 131},
    ),
)


def reference_text(game: str) -> str:
    """One line per published figure of `game`, with its settings, for `dqnx envs`."""
    lines = []
    for ref in REFERENCES:
        value = ref.returns.get(game)
        if value is None:
            continue
        approx = "~" if ref.approximate else ""
        lines.append(f"{ref.agent.split(' ')[0]} {approx}{value:g} ({ref.steps / 1e6:g}M steps, {ref.settings} settings)")
    return "; ".join(lines) or "-"


def is_minatar(env_id: str) -> bool:
    return env_id.endswith("-MinAtar")


@struct.dataclass
class StickyState:
    """The game's state and the action it executed last (-1 before its first step)."""

    env_state: Any
    last_action: jax.Array


def sticky_params(params: Any) -> Any:
    """`params` (a gymnax EnvParams) with one more field, `sticky_action_prob` (default 0).

    A subclass of the game's own parameter class, so the game reads its fields unchanged
    and `--env-param` sets the new one like any other.
    """
    base = type(params)

    @struct.dataclass
    class StickyParams(base):
        sticky_action_prob: float = 0.0

    StickyParams.__name__ = StickyParams.__qualname__ = f"Sticky{base.__name__}"
    return StickyParams(**{f.name: getattr(params, f.name) for f in dataclasses.fields(params)})


class StickyActions:
    """A gymnax environment whose actions stick: with probability `sticky_action_prob`
    the game executes the previous action instead of the one chosen (MinAtar's rule).

    The executed action is kept in the state, also across the automatic reset, so like
    MinAtar's Environment the last action of an episode may repeat into the next one.
    Before a fresh game's first step there is no previous action and the chosen one is
    taken (MinAtar starts from action 0, no-op; with p = 0.1 this differs in one draw).
    Written here because gymnax 1.0.1 has no sticky-action wrapper.
    """

    def __init__(self, env: Any):
        self.env = env

    def __getattr__(self, name: str) -> Any:  # spaces, name, num_actions: the game's own
        return getattr(self.env, name)

    @property
    def default_params(self) -> Any:
        return sticky_params(self.env.default_params)

    def reset(self, key: jax.Array, params: Any) -> tuple[jax.Array, StickyState]:
        obs, state = self.env.reset(key, params)
        return obs, StickyState(env_state=state, last_action=jnp.asarray(-1, jnp.int32))

    def step(self, key: jax.Array, state: StickyState, action: jax.Array, params: Any):
        draw = jax.random.uniform(jax.random.fold_in(key, _STICKY_STREAM))
        repeat = (state.last_action >= 0) & (draw < params.sticky_action_prob)
        executed = jnp.where(repeat, state.last_action, jnp.asarray(action, jnp.int32))
        obs, env_state, reward, terminated, truncated, info = self.env.step(key, state.env_state, executed, params)
        return obs, StickyState(env_state=env_state, last_action=executed), reward, terminated, truncated, info

    @staticmethod
    def check_params(params: Any) -> None:
        from dqnx.errors import UsageError

        if not 0.0 <= params.sticky_action_prob <= 1.0:
            raise UsageError(f"sticky_action_prob must lie in [0, 1], got {params.sticky_action_prob}")
