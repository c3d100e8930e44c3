"""The host loop for Gymnasium environments: Python envs, the same jitted agent.

Gymnasium environments step in Python, so the loop runs on the host:

    every iteration:    actions = learner.act(...)   one jitted call, all seeds and envs
                        vector env step              transitions staged in host arrays
    at a training step: learner.learn over the staged iterations, in one jitted scan

The agent code is exactly that of the compiled loop (learner.act, learner.learn with
its replay and cadence). Learning is staged only up to the next iteration at which
the cadence trains (every train_freq env steps), so every action is chosen with the
same weights the compiled loop would use, while the learn call, the expensive
dispatch, happens once per training phase instead of once per env step.

Seeds run side by side: one vector env holds num_envs copies per seed and the agent's
state has a leading seed axis. `HostDriver` offers the trainer the same methods as
`jax_loop.Compiled` (init_states, place, chunk, evaluate, compile_seconds, close), so
runs, checkpoints, metrics and summaries are shared.

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
from dqnx.agents.exploration import epsilon_at, evaluation_action
from dqnx.config import RunConfig
from dqnx.drivers.jax_loop import ChunkOutput, seed_key

# Episodes of one evaluation run side by side, per seed, in one vector env.
EVAL_PARALLEL = 10
TRAIN_ENV_STREAM = 11


@flax.struct.dataclass
class HostTrainState:
    """A seed's state in the host loop; saved whole in checkpoints (env state excepted)."""

    agent: Any
    key: jax.Array  # learning randomness (replay sampling), split per iteration
    act_key: jax.Array  # acting randomness, folded with the env step
    env_steps: jax.Array


def env_seeds(seed: int, stream: int, count: int) -> list[int]:
    """Distinct Gymnasium reset seeds for `count` envs of a run seed, per stream."""
    return [int(x) for x in np.random.SeedSequence([seed, stream]).generate_state(count)]


class HostDriver:
    """Trains `len(seeds)` seeds of `agent` on Gymnasium copies of `env`, host-stepped."""

    def __init__(self, config: RunConfig, env: Any, agent: str, seeds: list[int]):
        self.config, self.env, self.seeds = config, env, list(seeds)
        self.learner = make_learner(agent, config, env)
        self.num_seeds = len(seeds)
        self.n = n = config.num_envs
        self.train_freq = getattr(config, "train_freq", n)  # agents without a cadence learn every iteration
        # Iterations staged before a learn call: one training phase's worth.
        self.block = max(1, self.train_freq // n)
        self.compile_seconds = 0.0
        self._vec = None
        self._obs: np.ndarray | None = None  # [seeds, n, *obs_shape], what the next actions are for
        self._eval_vecs: dict[int, Any] = {}
        self._act = self._learn = self._q = None
        self._episode_return = np.zeros((self.num_seeds, n), np.float64)
        nan = jnp.full((), jnp.nan, jnp.float32)

        def act(params, act_key, obs, env_steps):
            # Only what acting reads: every argument leaf costs dispatch time, once per env step.
            key = jax.random.fold_in(act_key, env_steps)
            return self.learner.act(params, obs, key, epsilon_at(config, env_steps))

        def learn(state: HostTrainState, staged: Batch, valid, start_step):
            """learner.learn over the staged iterations (leading axis), skipping padding."""
            def one(state, item):
                i, transitions, is_valid = item
                env_steps = start_step + i * n

                def run(state):
                    key, learn_key = jax.random.split(state.key)
                    agent, metrics = self.learner.learn(state.agent, transitions, env_steps, learn_key)
                    return state.replace(agent=agent, key=key, env_steps=state.env_steps + n), metrics

                def skip(state):
                    return state, {"loss": nan, "q_mean": nan, "td_abs": nan}

                state, metrics = jax.lax.cond(is_valid, run, skip, state)
                return state, {**metrics, "epsilon": epsilon_at(config, env_steps)}

            steps = jnp.arange(valid.shape[0], dtype=jnp.int32)
            return jax.lax.scan(one, state, (steps, staged, valid))

        self._act_fn = self._batched(act, (0, 0, 0, None), from_state=2)
        # staged arrays arrive [block, seeds, ...]: the seed axis is their second
        self._learn_fn = self._batched(learn, (0, 1, None, None))

    # --- state ------------------------------------------------------------------------
    def init_states(self, seeds: list[int]) -> HostTrainState:
        def init(key):
            agent_key, loop_key, act_key = jax.random.split(key, 3)
            return HostTrainState(agent=self.learner.init(agent_key), key=loop_key, act_key=act_key,
                                  env_steps=jnp.zeros((), jnp.int32))

        return jax.jit(jax.vmap(init))(jnp.stack([seed_key(s) for s in seeds]))

    def place(self, tree: Any) -> Any:
        return jax.tree.map(jnp.asarray, tree)

    def _batched(self, fn, in_axes, from_state: int = 1):
        """The per-seed `fn` for the inner state layout: unbatched for one seed (a real
        `lax.cond`, and no per-call copy of the state to add or drop the seed axis),
        vmapped over seeds otherwise. The first `from_state` arguments come from the state,
        already in that layout; the others carry a seed axis at their `in_axes`."""
        if self.num_seeds == 1:
            def one(*args):
                rest = [_take(a, axis) for a, axis in zip(args[from_state:], in_axes[from_state:])]
                return fn(*args[:from_state], *rest)
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
    def _reset_training_envs(self, start_step: int) -> None:
        if self._vec is None:
            self._vec = self.env.make_vector(self.num_seeds * self.n, mode=self.config.vector_mode, train=True)
        seeds = [s for seed in self.seeds for s in env_seeds(seed, TRAIN_ENV_STREAM + start_step, self.n)]
        obs, _ = self._vec.reset(seed=seeds)
        self._obs = self._shape(obs)
        self._episode_return[:] = 0.0

    def _shape(self, x: Any) -> np.ndarray:
        """[num_seeds * num_envs, ...] -> [num_seeds, num_envs, ...]."""
        return np.asarray(x).reshape(self.num_seeds, self.n, *np.shape(x)[1:])

    def _staging(self) -> dict[str, np.ndarray]:
        S, n, k = self.num_seeds, self.n, self.block
        obs = (k, S, n, *self.env.obs_shape)
        return {
            "obs": np.zeros(obs, self.env.obs_dtype), "action": np.zeros((k, S, n), np.int32),
            "reward": np.zeros((k, S, n), np.float32), "next_obs": np.zeros(obs, self.env.obs_dtype),
            "terminated": np.zeros((k, S, n), bool), "episode_end": np.zeros((k, S, n), bool),
        }

    def chunk(self, state: HostTrainState, iterations: int, start_step: int) -> tuple[HostTrainState, ChunkOutput]:
        """Step every env `iterations` times, learning as the cadence says; records per iteration."""
        state = self._inner(state)
        if self._vec is None:  # a new run, or a resumed one: episodes start afresh
            self._reset_training_envs(start_step)
        S, n = self.num_seeds, self.n
        staged = self._staging()
        finished = np.full((iterations, S, n), np.nan, np.float32)
        records = []
        filled, block_start = 0, start_step
        env_steps = start_step
        for i in range(iterations):
            act_args = (state.agent.params, state.act_key, self._obs, np.int32(env_steps))
            if self._act is None:
                self._act = self._compile(self._act_fn, *act_args)
            actions = np.asarray(self._act(*act_args))
            obs, reward, terminated, truncated, info = self._vec.step(actions.reshape(S * n))
            end = terminated | truncated
            final_obs = obs
            if end.any():
                final_obs = np.array(obs, copy=True)
                for j in np.nonzero(end)[0]:
                    final_obs[j] = info["final_obs"][j]
            row = staged
            row["obs"][filled] = self._obs
            row["action"][filled] = actions
            row["reward"][filled] = self._shape(reward)
            row["next_obs"][filled] = self._shape(final_obs)
            row["terminated"][filled] = self._shape(terminated)
            ended = self._shape(end)
            row["episode_end"][filled] = ended
            self._episode_return += row["reward"][filled]
            if ended.any():
                finished[i][ended] = self._episode_return[ended]
                self._episode_return[ended] = 0.0
            self._obs = self._shape(obs)
            filled += 1
            trains_now = (env_steps + n) // self.train_freq > env_steps // self.train_freq
            env_steps += n
            if trains_now or filled == self.block or i == iterations - 1:
                state, metrics = self._flush(state, staged, filled, block_start)
                records.append((metrics, filled))  # device arrays: fetched once, at the chunk's end
                filled, block_start = 0, env_steps
        fetched = jax.device_get([metrics for metrics, _ in records])
        stacked = {k: np.concatenate([m[k][:filled] for m, (_, filled) in zip(fetched, records)]) for k in fetched[0]}
        # records are [iterations] (one seed) or [iterations, seeds]: the trainer wants seeds first
        stacked = {k: (v[None] if S == 1 else np.moveaxis(v, 0, 1)) for k, v in stacked.items()}
        output = ChunkOutput(
            finished_return=np.moveaxis(finished, 0, 1),
            loss=stacked["loss"], q_mean=stacked["q_mean"], td_abs=stacked["td_abs"], epsilon=stacked["epsilon"],
        )
        return self._outer(state), output

    def _flush(self, state: HostTrainState, staged: dict[str, np.ndarray], filled: int, block_start: int):
        valid = np.arange(self.block) < filled
        args = (state, Batch(**staged), valid, np.int32(block_start))
        if self._learn is None:
            self._learn = self._compile(self._learn_fn, *args, donate=(0,))
        state, metrics = self._learn(*args)
        if self.num_seeds > 1:
            metrics = jax.tree.map(lambda x: jnp.moveaxis(x, 0, 1), metrics)  # vmap put seeds first
        return state, metrics

    # --- evaluation -------------------------------------------------------------------
    def evaluate(self, params: Any, keys: jax.Array, episodes: int) -> np.ndarray:
        """Returns [num_seeds, episodes] of the greedy policy (epsilon-greedy with
        config.eval_epsilon > 0, or Boltzmann with eval_temperature > 0) on evaluation copies of the env (true scores)."""
        if self._q is None:
            def policy(params, obs, key, t):
                return evaluation_action(self.config, self.learner, params, obs, jax.random.fold_in(key, t))

            self._q = jax.jit(jax.vmap(policy, in_axes=(0, 0, 0, None)))
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
        t = 0
        while any(len(returns[s][j]) < quota[j] for s in range(S) for j in range(parallel)):
            obs_s = obs.reshape(S, parallel, *obs.shape[1:])
            actions = np.asarray(self._q(params, obs_s, keys, np.int32(t))).reshape(S * parallel)
            t += 1
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


def _take(arg: Any, axis: int | None) -> Any:
    """Drop the seed axis (of size 1) at `axis`; None: the argument has none."""
    if axis is None:
        return arg
    return jax.tree.map(lambda x: x[(slice(None),) * axis + (0,)] if x is not None else None, arg)
