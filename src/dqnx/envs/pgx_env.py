"""pgx's single-player games as gymnax-style environments (so the compiled loop trains them).

pgx (https://github.com/sotetsuk/pgx) writes board games in JAX; its states carry
`legal_action_mask`, which dqnx uses as the action mask. Only single-player games fit
a Q-learner's reward, so today that is 2048 ("2048-pgx"): observations are the board
as 4 x 4 x 31 one-hot planes (2^k per plane), actions slide left/up/right/down, a
slide that moves no tile is illegal, the reward is the merged tiles' sum, and the game
ends when no slide is legal. pgx ends an episode at an illegal action with a penalty;
with masks dqnx never plays one.

The wrapper adds what gymnax's `Environment.step` needs: a time counter (pgx's 2048
has no time limit; `max_steps_in_episode` cuts an episode) and `info["action_mask"]`
for the state stepped to, before the auto-reset.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from dqnx.envs.gymnax_env import _import_gymnax_module
from dqnx.errors import UsageError

environment = _import_gymnax_module("gymnax.environments.environment")
spaces = _import_gymnax_module("gymnax.environments.spaces")


@struct.dataclass
class PgxState(environment.EnvState):
    game: Any  # the pgx State
    time: int


@struct.dataclass
class PgxParams(environment.EnvParams):
    max_steps_in_episode: int = 2_000


class PgxGame(environment.Environment):
    def __init__(self, game: Any):
        super().__init__()
        self.game = game

    @property
    def default_params(self) -> PgxParams:
        return PgxParams()

    def action_mask(self, state: PgxState, params: PgxParams) -> jax.Array:
        return state.game.legal_action_mask

    def step_env(self, key: jax.Array, state: PgxState, action: Any, params: PgxParams):
        game = self.game.step(state.game, action, key)
        state = PgxState(game=game, time=state.time + 1)
        reward = game.rewards[0].astype(jnp.float32)
        return self.get_obs(state), state, reward, game.terminated, {"action_mask": game.legal_action_mask}

    def reset_env(self, key: jax.Array, params: PgxParams):
        state = PgxState(game=self.game.init(key), time=0)
        return self.get_obs(state), state

    def get_obs(self, state: PgxState, params: Any = None, key: Any = None) -> jax.Array:
        return state.game.observation.astype(jnp.float32)

    def is_terminated(self, state: PgxState, params: PgxParams) -> jax.Array:
        return state.game.terminated

    def observation_space(self, params: PgxParams):
        return spaces.Box(0.0, 1.0, self.game.observation_shape, jnp.float32)

    def action_space(self, params: PgxParams | None = None):
        return spaces.Discrete(self.game.num_actions)


def make_pgx(env_id: str, pgx_id: str) -> tuple[PgxGame, PgxParams]:
    try:
        import pgx
    except ImportError:
        raise UsageError(f"{env_id} needs pgx; install it with `pip install 'dqnx[pgx]'`") from None
    game = pgx.make(pgx_id)
    if game.num_players != 1:
        raise UsageError(f"{env_id} is a {game.num_players}-player game; dqnx trains single-player games only")
    env = PgxGame(game)
    return env, env.default_params
