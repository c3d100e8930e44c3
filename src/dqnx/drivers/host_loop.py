"""The host loop for Gymnasium environments: Python envs, the same jitted agent.

Gymnasium environments step in Python, so the loop runs on the host:

    every iteration:    actions = learner.act(...)   one jitted call, all seeds and envs
                        vector env step              transitions staged in host arrays
    at a training step: learner.learn over the staged iterations (a lax.scan), then
                        learner.act for the next observations: one jitted call

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

Action masks (env.masked, config.action_mask = "auto"): the legal actions of each
observation come from info["action_mask"] at reset and step; for an episode that ended,
the mask of its true last observation comes from info["final_info"], since the step's
own info describes the next episode's first observation. Replay stores them as the
transitions' next_mask.

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

from dqnx.agents import uses_masks
from dqnx.agents.exploration import epsilon_at, evaluation_step
from dqnx.agents.pqn import PQNState, cut_rollout
from dqnx.config import RunConfig
from dqnx.drivers.episodes import play_vector
from dqnx.drivers.jax_loop import ChunkOutput, all_legal, chunk_health, seed_key
from dqnx.errors import EnvFailed, EnvironmentFailure, UsageError
from dqnx.protocols import Batch, Learner, reset_act_state
from dqnx.replay import frames as frame_replay

# Per-iteration records of a training phase, in the order the learn call packs them.
METRIC_NAMES = ("loss", "q_mean", "td_abs", "epsilon", "trained")
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
    act_state: Any = ()  # the policy's state between steps, per env (a recurrent learner's memory; () feed-forward)


def env_seeds(seed: int, stream: int, count: int) -> list[int]:
    """Distinct Gymnasium reset seeds for `count` envs of a run seed, per stream."""
    return [int(x) for x in np.random.SeedSequence([seed, stream]).generate_state(count)]


class HostDriver:
    """Trains `len(seeds)` seeds of `agent` on Gymnasium copies of `env`, host-stepped."""

    def __init__(self, config: RunConfig, env: Any, learner: Learner, seeds: list[int]):
        self.config, self.env, self.seeds = config, env, list(seeds)
        self.learner = learner
        self.num_seeds = len(seeds)
        self.n = n = config.num_envs
        self.train_freq = getattr(config, "train_freq", n)  # agents without a cadence learn every iteration
        # Iterations staged before a learn call: one training phase's worth.
        self.block = max(1, self.train_freq // n)
        self.compile_seconds = 0.0
        self._vec = None
        self._obs: np.ndarray | None = None  # [seeds, n, *obs_shape], what the next actions are for
        self._eval_vecs: dict[int, Any] = {}
        self._act = self._learn = self._q = self._health = None
        self._episode_return = np.zeros((self.num_seeds, n), np.float64)
        self._pending = None  # actions already chosen for self._obs, if any
        self.masked = uses_masks(config, env)
        self._mask: np.ndarray | None = None  # [seeds, n, num_actions] legal actions at self._obs (masked runs)
        # Recurrent learners: which envs' current observation starts an episode ([seeds, n], where
        # the memory resets), and the memory each pending action was chosen from (staged for replay).
        self.recurrent = getattr(learner, "recurrent_q", None) is not None
        self._start: np.ndarray | None = None
        self._acted_from: Any = None
        nan = jnp.full((), jnp.nan, jnp.float32)

        def act(params, act_key, act_state, obs, mask, start, env_steps):
            """(actions, the act state they were chosen from, the next act state). Only what acting
            reads: every argument leaf costs dispatch time, once per env step. A recurrent memory
            first resets where an episode starts (`start`; None for feed-forward learners)."""
            key = jax.random.fold_in(act_key, env_steps)
            if start is not None:
                act_state = reset_act_state(learner, act_state, start)
            action, next_state = learner.act(params, act_state, obs,
                                             all_legal(n, env.num_actions) if mask is None else mask, key,
                                             epsilon_at(config, env_steps))
            return action, act_state, next_state

        def learn_then_act(state: HostTrainState, staged: Batch, valid, start_step, next_obs, next_mask, next_start,
                           env_steps):
            """learner.learn over the staged iterations (leading axis), skipping padding; then
            the actions for `next_obs` with the updated weights (what `act` would return)."""
            def one(state, item):
                i, transitions, is_valid = item
                env_steps = start_step + i * n

                def run(state):
                    key, learn_key = jax.random.split(state.key)
                    agent, metrics = learner.learn(state.agent, transitions, env_steps, learn_key)
                    trained = (agent.updates != state.agent.updates).astype(jnp.float32)
                    return state.replace(agent=agent, key=key, env_steps=state.env_steps + n), {**metrics, "trained": trained}

                def skip(state):
                    return state, {"loss": nan, "q_mean": nan, "td_abs": nan, "trained": jnp.zeros((), jnp.float32)}

                state, metrics = jax.lax.cond(is_valid, run, skip, state)
                return state, {**metrics, "epsilon": epsilon_at(config, env_steps)}

            steps = jnp.arange(valid.shape[0], dtype=jnp.int32)
            state, metrics = jax.lax.scan(one, state, (steps, staged, valid))
            # One array [5, block] per call: fetching many small arrays from the device is what costs.
            packed = jnp.stack([metrics[name] for name in METRIC_NAMES])
            action, acted_from, act_state = act(state.agent.params, state.act_key, state.act_state, next_obs, next_mask,
                                                next_start, env_steps)
            return state.replace(act_state=act_state), packed, (action, acted_from)

        # Seeds are vmapped, one seed too: the cadence predicates (valid, env_steps) are
        # shared by all seeds, so under vmap the learner's branches stay real branches.
        self._act_fn = jax.vmap(act, in_axes=(0, 0, 0, 0, 0, 0, None))
        # staged arrays arrive [block, seeds, ...]: the seed axis is their second
        self._learn_fn = jax.vmap(learn_then_act, in_axes=(0, 1, None, None, 0, 0, 0, None))

    # --- state ------------------------------------------------------------------------
    def init_states(self, seeds: list[int]) -> HostTrainState:
        def init(key):
            agent_key, loop_key, act_key = jax.random.split(key, 3)
            return HostTrainState(agent=self.learner.init(agent_key), key=loop_key, act_key=act_key,
                                  env_steps=jnp.zeros((), jnp.int32), act_state=self.learner.init_act_state(self.n))

        return jax.jit(jax.vmap(init))(jnp.stack([seed_key(s) for s in seeds]))

    padding = 0  # the host loop never pads its seeds (see jax_loop.Compiled)

    def place(self, tree: Any) -> Any:
        return jax.tree.map(jnp.asarray, tree)

    def real(self, tree: Any) -> Any:
        return tree

    def _compile(self, fn, *args, donate=()):
        start = time.perf_counter()
        compiled = jax.jit(fn, donate_argnums=donate).lower(*args).compile()
        self.compile_seconds += time.perf_counter() - start
        return compiled

    # --- training ---------------------------------------------------------------------
    def _reset_training_envs(self, state: HostTrainState, start_step: int) -> HostTrainState:
        if self._vec is None:
            self._vec = self.env.make_vector(self.num_seeds * self.n, mode=self.config.vector_mode, train=True)
        seeds = [s for seed in self.seeds for s in env_seeds(seed, TRAIN_ENV_STREAM + start_step, self.n)]
        try:
            obs, info = self._vec.reset(seed=seeds)
        except Exception as e:  # the user's environment code: its traceback is theirs to read
            raise EnvFailed(self.env.env_id, "reset", start_step, e) from e
        self._obs = self._shape(obs)
        self._mask = self._shape(self._info_masks(info, "at reset")) if self.masked else None
        self._pending = None
        self._start = np.ones((self.num_seeds, self.n), bool) if self.recurrent else None  # every episode starts here
        self._episode_return[:] = 0.0
        replay = getattr(state.agent, "replay", None)
        if isinstance(replay, frame_replay.FrameReplay):
            # A resumed run's episodes restart here: frame stacks must not reach across the cut.
            state = state.replace(agent=state.agent.replace(replay=jax.jit(jax.vmap(frame_replay.cut_episodes))(replay)))
        if isinstance(state.agent, PQNState):
            # Likewise a partly filled PQN rollout: its Q(lambda) returns must not run across the cut.
            cut = jax.jit(jax.vmap(cut_rollout, in_axes=(0, None, None, None)), static_argnums=(2, 3))
            state = state.replace(agent=cut(state.agent, np.int32(start_step), self.n, self.config.rollout_steps))
        return state

    def _shape(self, x: Any) -> np.ndarray:
        """[num_seeds * num_envs, ...] -> [num_seeds, num_envs, ...]."""
        return np.asarray(x).reshape(self.num_seeds, self.n, *np.shape(x)[1:])

    def _info_masks(self, info: dict, where: str, rows: np.ndarray | None = None) -> np.ndarray:
        """The vector env's info["action_mask"] as bool [envs, num_actions], checked (present
        for the envs `rows` selects, default all)."""
        from dqnx.envs.gymnasium_env import MASK_KEY

        mask = info.get(MASK_KEY)
        present = np.asarray(info.get("_" + MASK_KEY, True))
        if mask is None or not np.all(present if rows is None else present[rows]):
            raise EnvironmentFailure(f"{self.env.env_id} gave no info['action_mask'] {where}, though it gave one at "
                                     "its first reset; give it on every reset and step, or run with --set action_mask=off")
        mask = np.asarray(mask)
        if mask.ndim != 2 or mask.shape[1] != self.env.num_actions:
            raise UsageError(f"{self.env.env_id}'s action mask {where} has shape {mask.shape[1:]}, but the env has "
                             f"{self.env.num_actions} actions; give one 0/1 entry per action, or train with --set action_mask=off")
        return mask.astype(bool)

    def _next_masks(self, info: dict, end: np.ndarray, terminated: np.ndarray, env_step: int) -> np.ndarray:
        """The legal actions of a step's next states [seeds, n, actions] (an ended episode's from
        its final info), checked; the masks of the observations acted on next go to self._mask."""
        mask = self._info_masks(info, f"at env step {env_step}")
        next_mask = mask.copy()
        if end.any():  # an ended episode's true last observation: its mask is in the final info
            final = self._info_masks(info["final_info"], f"at the end of an episode (env step {env_step})", end)
            next_mask[end] = final[end]
        stuck = ~terminated & ~next_mask.any(axis=1)
        if stuck.any():
            j = int(np.nonzero(stuck)[0][0])
            raise EnvironmentFailure(
                f"{self.env.env_id} gave no legal action in a non-terminal state at env step {env_step} "
                f"(seed {self.seeds[j // self.n]}, env {j % self.n}); its action mask must allow an action until the "
                "episode ends (or run with --set action_mask=off)")
        self._mask = mask.reshape(self.num_seeds, self.n, -1)
        return next_mask.reshape(self.num_seeds, self.n, -1)

    def _staging(self) -> dict[str, np.ndarray]:
        S, n, k = self.num_seeds, self.n, self.block
        obs = (k, S, n, *self.env.obs_shape)
        staged = {
            "obs": np.zeros(obs, self.env.obs_dtype), "action": np.zeros((k, S, n), np.int32),
            "reward": np.zeros((k, S, n), np.float32), "next_obs": np.zeros(obs, self.env.obs_dtype),
            "terminated": np.zeros((k, S, n), bool), "episode_end": np.zeros((k, S, n), bool),
        }
        if self.masked:
            staged["next_mask"] = np.zeros((k, S, n, self.env.num_actions), bool)
        if self.recurrent:  # the memory each staged action was chosen from: sequence replay keeps it
            one = jax.tree.map(lambda x: x[0], self.learner.init_act_state(1))
            staged["act_state"] = jax.tree.map(lambda x: np.zeros((k, S, n, *x.shape), x.dtype), one)
        return staged

    def chunk(self, state: HostTrainState, iterations: int, start_step: int) -> tuple[HostTrainState, ChunkOutput]:
        """Step every env `iterations` times, learning as the cadence says; records per iteration."""
        if self._vec is None:  # a new run, or a resumed one: episodes start afresh
            state = self._reset_training_envs(state, start_step)
        S, n = self.num_seeds, self.n
        flat, obs_shape = (S, n), (S, n, *self.env.obs_shape)
        staged = self._staging()
        st_obs, st_action, st_reward = staged["obs"], staged["action"], staged["reward"]
        st_next, st_terminated, st_end = staged["next_obs"], staged["terminated"], staged["episode_end"]
        finished = np.full((iterations, S, n), np.nan, np.float32)
        reward_abs = np.zeros((iterations, S), np.float32)
        records = []
        filled, block_start = 0, start_step
        env_steps = start_step
        actions = self._pending
        step = self._vec.step
        for i in range(iterations):
            if actions is None:
                act_args = (state.agent.params, state.act_key, state.act_state, self._obs, self._mask, self._start,
                            np.int32(env_steps))
                if self._act is None:
                    self._act = self._compile(self._act_fn, *act_args)
                actions, self._acted_from, act_state = self._act(*act_args)
                state = state.replace(act_state=act_state)
            actions = np.asarray(actions)
            if self.recurrent:
                jax.tree.map(lambda store, x: store.__setitem__(filled, np.asarray(x)), staged["act_state"], self._acted_from)
            try:
                obs, reward, terminated, truncated, info = step(actions.reshape(S * n))
            except Exception as e:  # the user's environment code: its traceback is theirs to read
                raise EnvFailed(self.env.env_id, "step", env_steps, e) from e
            end = terminated | truncated
            st_obs[filled] = self._obs
            st_action[filled] = actions.reshape(flat)
            st_reward[filled] = reward.reshape(flat)
            st_terminated[filled] = terminated.reshape(flat)
            st_end[filled] = end.reshape(flat)
            next_obs = st_next[filled]
            next_obs[...] = obs.reshape(obs_shape)
            self._episode_return += st_reward[filled]
            reward_abs[i] = np.abs(st_reward[filled]).max(axis=1)
            if end.any():
                ended = end.reshape(flat)
                for j in np.nonzero(end)[0]:  # the true last observation, not the next episode's first
                    next_obs[j // n, j % n] = info["final_obs"][j]
                finished[i][ended] = self._episode_return[ended]
                self._episode_return[ended] = 0.0
            if self.masked:
                staged["next_mask"][filled] = self._next_masks(info, end, terminated, env_steps + n)
            self._obs = obs.reshape(obs_shape)
            if self.recurrent:
                self._start = end.reshape(flat)  # the next observation of an env whose episode ended is a first one
            filled += 1
            trains_now = (env_steps + n) // self.train_freq > env_steps // self.train_freq
            env_steps += n
            actions = None
            if trains_now or filled == self.block or i == iterations - 1:
                state, metrics, (actions, self._acted_from) = self._flush(state, staged, filled, block_start, env_steps)
                metrics.copy_to_host_async()  # fetched at the chunk's end; the copy overlaps the loop
                records.append((metrics, filled))
                filled, block_start = 0, env_steps
        self._pending = actions  # the learn call also chose the actions for the next observations
        # each record is [seeds, 5, block]: join the blocks
        joined = np.concatenate([np.asarray(m)[..., :used] for m, used in records], axis=-1)
        stacked = {name: joined[:, k] for k, name in enumerate(METRIC_NAMES)}
        trained = stacked["trained"] > 0
        reward_abs = np.moveaxis(reward_abs, 0, 1)
        if self._health is None:
            self._health = jax.jit(jax.vmap(chunk_health))  # once per chunk: one reduction over the parameters
        health = jax.device_get(self._health(trained, stacked["loss"], stacked["q_mean"], reward_abs, state.agent.params))
        output = ChunkOutput(
            finished_return=np.moveaxis(finished, 0, 1),
            loss=stacked["loss"], q_mean=stacked["q_mean"], td_abs=stacked["td_abs"], epsilon=stacked["epsilon"],
            trained=trained, reward_abs=reward_abs, health=health,
        )
        return state, output

    def _flush(self, state: HostTrainState, staged: dict[str, np.ndarray], filled: int, block_start: int,
               env_steps: int):
        """Learn from the staged iterations, then act on the current observations: one dispatch."""
        valid = np.arange(self.block) < filled
        args = (state, Batch(**staged), valid, np.int32(block_start), self._obs, self._mask, self._start,
                np.int32(env_steps))
        if self._learn is None:
            self._learn = self._compile(self._learn_fn, *args, donate=(0,))
        return self._learn(*args)

    # --- evaluation -------------------------------------------------------------------
    def evaluate(self, params: Any, keys: jax.Array, episodes: int) -> np.ndarray:
        """Returns [num_seeds, episodes] of the greedy policy (epsilon-greedy with
        config.eval_epsilon > 0, or Boltzmann with eval_temperature > 0) on evaluation copies of the env (true scores)."""
        if self._q is None:
            def policy(params, act_state, obs, mask, key, t, start):
                """(actions, next act state); a recurrent memory resets where an episode starts."""
                if start is not None:
                    act_state = reset_act_state(self.learner, act_state, start)
                return evaluation_step(self.config, self.learner, params, act_state, obs, jax.random.fold_in(key, t),
                                       all_legal(obs.shape[0], self.env.num_actions) if mask is None else mask)

            self._q = jax.jit(jax.vmap(policy, in_axes=(0, 0, 0, 0, 0, None, 0)))
        parallel = min(episodes, EVAL_PARALLEL)
        S = self.num_seeds
        if parallel not in self._eval_vecs:
            self._eval_vecs[parallel] = self.env.make_vector(S * parallel, mode=self.config.vector_mode, train=False)
        stream_seeds = np.asarray(jax.device_get(jax.vmap(lambda k: jax.random.randint(k, (), 0, 2**31 - 1))(keys)))
        # Each env plays a fixed quota of episodes, so short episodes are not over-counted.
        quota = [episodes // parallel + (1 if j < episodes % parallel else 0) for j in range(parallel)]

        vec = _Guarded(self._eval_vecs[parallel], self.env.env_id)
        # A recurrent learner's memory per copy, reset where the copy's episode starts (its first step,
        # and the step after the vector env auto-reset it).
        memory = {"act_state": jax.vmap(lambda _: self.learner.init_act_state(parallel))(jnp.arange(S))}

        def starts() -> np.ndarray | None:
            if not self.recurrent:
                return None
            return np.ones((S, parallel), bool) if vec.ended is None else vec.ended.reshape(S, parallel)

        def choose(obs, info, t):
            mask = self._info_masks(info, "in evaluation").reshape(S, parallel, -1) if self.masked else None
            actions, memory["act_state"] = self._q(params, memory["act_state"], obs.reshape(S, parallel, *obs.shape[1:]),
                                                   mask, keys, np.int32(t), starts())
            return np.asarray(actions).reshape(S * parallel), None

        played = play_vector(vec, choose, [s for seed in stream_seeds for s in env_seeds(int(seed), 0, parallel)], quota * S)
        return np.array([[e.episode_return for episodes_of_copy in played[s * parallel:(s + 1) * parallel]
                          for e in episodes_of_copy] for s in range(S)], np.float64)

    def close(self) -> None:
        for vec in [self._vec, *self._eval_vecs.values()]:
            if vec is not None:
                vec.close()
        self._vec = None
        self._eval_vecs.clear()



class _Guarded:
    """A vector env whose failures (the user's environment code) raise EnvFailed, keeping its traceback."""

    def __init__(self, vec: Any, env_id: str):
        self.vec, self.env_id = vec, env_id
        self.ended: np.ndarray | None = None  # the last step's terminated | truncated (None before the first step)

    def reset(self, seed: list[int]) -> Any:
        self.ended = None
        try:
            return self.vec.reset(seed=seed)
        except Exception as e:
            raise EnvFailed(self.env_id, "reset", None, e) from e

    def step(self, actions: np.ndarray) -> Any:
        try:
            out = self.vec.step(actions)
        except Exception as e:
            raise EnvFailed(self.env_id, "step", None, e) from e
        self.ended = np.asarray(out[2]) | np.asarray(out[3])
        return out
