"""The host loop for Gymnasium environments: Python envs, the same jitted agent.

Gymnasium environments step in Python, so the loop runs on the host. Each
iteration steps every env once and makes one call into one compiled function that

    stores the transitions and trains when the cadence says so (learner.learn)
    -> picks the next actions (learner.act)

so the agent code is exactly that of the compiled loop, and one dispatch per
iteration is all the Python-side overhead. Seeds run side by side: one vector env
holds num_envs copies per seed, and the agent's state has a leading seed axis.

`HostDriver` offers the trainer the same methods as `jax_loop.Compiled` (place, chunk,
evaluate, compile_seconds), so runs, checkpoints, metrics and summaries are shared.

Vector envs auto-reset in the step that ends an episode ("same step"): the returned
observation is the next episode's first, and info["final_obs"] holds the true last
one, which is what a truncated transition bootstraps from. Termination and truncation
stay apart: only `terminated` stops bootstrapping.

Resume: a Gymnasium env's internal state cannot be saved without pickle, so a resumed
run restarts its episodes (fresh resets); the agent, replay and RNG continue exactly.
"""

from __future__ import annotations

import time
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from dqnx.agents import Batch, make_learner
from dqnx.agents.exploration import epsilon_at
from dqnx.config import RunConfig
from dqnx.drivers.jax_loop import ChunkOutput, seed_key

# Episodes of one evaluation run side by side, per seed, in one vector env.
EVAL_PARALLEL = 10


@flax.struct.dataclass
class HostTrainState:
    """A seed's state in the host loop; saved whole in checkpoints (env state excepted)."""

    agent: Any
    obs: jax.Array  # [num_envs, *obs_shape], the observations the next actions are for
    action: jax.Array  # [num_envs], the actions chosen for `obs`
    key: jax.Array
    env_steps: jax.Array


def env_seeds(seed: int, stream: int, count: int) -> list[int]:
    """Distinct Gymnasium reset seeds for `count` envs of a run seed, per stream."""
    return [int(x) for x in np.random.SeedSequence([seed, stream]).generate_state(count)]


TRAIN_ENV_STREAM = 11


class HostDriver:
    """Trains `len(seeds)` seeds of `agent` on Gymnasium copies of `env`, host-stepped."""

    def __init__(self, config: RunConfig, env: Any, agent: str, seeds: list[int]):
        self.config, self.env, self.seeds = config, env, list(seeds)
        self.learner = make_learner(agent, config, env)
        self.num_seeds = len(seeds)
        self.n = config.num_envs
        self.compile_seconds = 0.0
        self._vec = None
        self._eval_vecs: dict[int, Any] = {}
        self._advance = None
        self._first_act = None
        self._q = None
        self._episode_return = np.zeros((self.num_seeds, self.n), np.float64)

        def advance(state: HostTrainState, reward, final_obs, terminated, episode_end, next_obs, env_steps):
            """Learn from this iteration's transitions, then choose the actions for `next_obs`."""
            key, learn_key, act_key = jax.random.split(state.key, 3)
            fresh = Batch(obs=state.obs, action=state.action, reward=reward, next_obs=final_obs,
                          terminated=terminated, episode_end=episode_end)
            agent, metrics = self.learner.learn(state.agent, fresh, env_steps, learn_key)
            after = env_steps + self.n
            epsilon = epsilon_at(config, after)
            action = self.learner.act(agent.params, next_obs, act_key, epsilon)
            new = HostTrainState(agent=agent, obs=next_obs, action=action, key=key, env_steps=state.env_steps + self.n)
            return new, {**metrics, "epsilon": epsilon}

        def first_act(state: HostTrainState, obs, env_steps):
            key, act_key = jax.random.split(state.key)
            action = self.learner.act(state.agent.params, obs, act_key, epsilon_at(config, env_steps))
            return state.replace(obs=obs, action=action, key=key)

        self._advance_fn = self._batched(advance, (0, 0, 0, 0, 0, 0, None))
        self._first_act_fn = self._batched(first_act, (0, 0, None))

    # --- state ------------------------------------------------------------------------
    def init_states(self, seeds: list[int]) -> HostTrainState:
        def init(key):
            agent_key, loop_key = jax.random.split(key)
            return HostTrainState(
                agent=self.learner.init(agent_key),
                obs=jnp.zeros((self.n, *self.env.obs_shape), self.env.obs_dtype),
                action=jnp.zeros((self.n,), jnp.int32),
                key=loop_key,
                env_steps=jnp.zeros((), jnp.int32),
            )

        return jax.jit(jax.vmap(init))(jnp.stack([seed_key(s) for s in seeds]))

    def place(self, tree: Any) -> Any:
        return jax.tree.map(jnp.asarray, tree)

    def _batched(self, fn, in_axes):
        """The per-seed `fn` for the inner state layout: unbatched for one seed (a real
        `lax.cond` and no per-step copy of the state to add or drop the seed axis),
        vmapped over seeds otherwise."""
        if self.num_seeds == 1:
            def one(*args):
                return fn(*[a if axis is None or i == 0 else a[0] for i, (a, axis) in enumerate(zip(args, in_axes))])
            return one
        return jax.vmap(fn, in_axes=in_axes)

    def _inner(self, state: Any) -> Any:
        return jax.tree.map(lambda x: x[0], state) if self.num_seeds == 1 else state

    def _outer(self, state: Any) -> Any:
        return jax.tree.map(lambda x: x[None], state) if self.num_seeds == 1 else state

    def _compile(self, fn, *args, donate=()):
        start = time.perf_counter()
        compiled = jax.jit(fn, donate_argnums=donate).lower(*args).compile()
        self.compile_seconds += time.perf_counter() - start
        return compiled

    # --- training ---------------------------------------------------------------------
    def _reset_training_envs(self, state: HostTrainState, env_steps: int) -> HostTrainState:
        if self._vec is None:
            self._vec = self.env.make_vector(self.num_seeds * self.n, mode=self.config.vector_mode, train=True)
        seeds = [s for seed in self.seeds for s in env_seeds(seed, TRAIN_ENV_STREAM + env_steps, self.n)]
        obs, _ = self._vec.reset(seed=seeds)
        obs = jnp.asarray(self._shape(obs))
        steps = jnp.asarray(env_steps, jnp.int32)
        if self._first_act is None:
            self._first_act = self._compile(self._first_act_fn, state, obs, steps, donate=(0,))
        self._episode_return[:] = 0.0
        return self._first_act(state, obs, steps)  # `state` in the inner layout

    def _shape(self, x: np.ndarray) -> np.ndarray:
        """[num_seeds * num_envs, ...] -> [num_seeds, num_envs, ...]."""
        return np.asarray(x).reshape(self.num_seeds, self.n, *np.shape(x)[1:])

    def chunk(self, state: HostTrainState, iterations: int, start_step: int) -> tuple[HostTrainState, ChunkOutput]:
        """Step every env `iterations` times, learning as the cadence says; records per iteration."""
        state = self._inner(state)
        if self._vec is None:  # a new run, or a resumed one: episodes start afresh
            state = self._reset_training_envs(state, start_step)
        S, n = self.num_seeds, self.n
        records = []
        finished = np.full((iterations, S, n), np.nan, np.float32)
        env_steps = start_step
        for i in range(iterations):
            actions = np.asarray(state.action).reshape(S * n)
            obs, reward, terminated, truncated, info = self._vec.step(actions)
            end = terminated | truncated
            final_obs = obs
            if end.any():
                final_obs = np.array(obs, copy=True)
                for j in np.nonzero(end)[0]:
                    final_obs[j] = info["final_obs"][j]
            reward = reward.astype(np.float32)
            self._episode_return += self._shape(reward)
            ended = self._shape(end)
            if ended.any():
                finished[i][ended] = self._episode_return[ended]
                self._episode_return[ended] = 0.0
            args = (state, self._shape(reward), self._shape(final_obs), self._shape(terminated), ended,
                    self._shape(obs), np.int32(env_steps))
            if self._advance is None:
                self._advance = self._compile(self._advance_fn, *args, donate=(0,))
            state, metrics = self._advance(*args)
            records.append(metrics)
            env_steps += n
        stacked = jax.device_get(self._outer(jax.tree.map(lambda *xs: jnp.stack(xs, axis=-1), *records)))
        output = ChunkOutput(
            finished_return=np.moveaxis(finished, 0, 1),
            loss=stacked["loss"], q_mean=stacked["q_mean"], td_abs=stacked["td_abs"], epsilon=stacked["epsilon"],
        )
        return self._outer(state), output

    # --- evaluation -------------------------------------------------------------------
    def evaluate(self, params: Any, keys: jax.Array, episodes: int) -> np.ndarray:
        """Greedy returns [num_seeds, episodes] on evaluation copies of the env (true scores)."""
        if self._q is None:
            self._q = jax.jit(jax.vmap(lambda p, o: self.learner.q_values(p, o).argmax(axis=-1)))
        parallel = min(episodes, EVAL_PARALLEL)
        S = self.num_seeds
        if parallel not in self._eval_vecs:
            self._eval_vecs[parallel] = self.env.make_vector(S * parallel, mode=self.config.vector_mode, train=False)
        vec = self._eval_vecs[parallel]
        stream_seeds = np.asarray(jax.device_get(jax.vmap(lambda k: jax.random.randint(k, (), 0, 2**31 - 1))(keys)))
        quota = np.array([episodes // parallel + (1 if j < episodes % parallel else 0) for j in range(parallel)])
        obs, _ = vec.reset(seed=[s for seed in stream_seeds for s in env_seeds(int(seed), 0, parallel)])
        returns: list[list[list[float]]] = [[[] for _ in range(parallel)] for _ in range(S)]
        running = np.zeros((S, parallel))
        # Each env plays a fixed quota of episodes, so short episodes are not over-counted.
        while any(len(returns[s][j]) < quota[j] for s in range(S) for j in range(parallel)):
            obs_s = obs.reshape(S, parallel, *obs.shape[1:])
            actions = np.asarray(self._q(params, obs_s)).reshape(S * parallel)
            obs, reward, terminated, truncated, _ = vec.step(actions)
            running += reward.reshape(S, parallel)
            done = (terminated | truncated).reshape(S, parallel)
            for s, j in zip(*np.nonzero(done)):
                if len(returns[s][j]) < quota[j]:
                    returns[s][j].append(float(running[s, j]))
            running[done] = 0.0
        return np.array([[r for j in range(parallel) for r in returns[s][j]] for s in range(S)], np.float64)

    def close(self) -> None:
        for vec in [self._vec, *self._eval_vecs.values()]:
            if vec is not None:
                vec.close()
        self._vec = None
        self._eval_vecs.clear()
