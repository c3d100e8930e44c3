"""The compiled training loop for JAX-native environments.

A run is a sequence of chunks. One chunk is a `lax.scan` over env iterations
(act -> env step -> store -> maybe train), compiled once and vmapped over seeds.
Between chunks the host evaluates, keeps the best weights, writes metrics and
checkpoints and draws the progress bar. Everything inside a chunk is a pure function
of the `TrainState`, so a run is a pure function of (config, seed), and a resumed run
continues bit for bit.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
import time
import warnings
from collections import OrderedDict
from typing import Any, Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dqnx.agents import uses_masks
from dqnx.agents.exploration import epsilon_at, evaluation_step
from dqnx.config import VMAPPABLE, RunConfig
from dqnx.drivers.episodes import play_jax
from dqnx.envs import JaxEnv
from dqnx.protocols import Batch, Learner, reset_act_state, stored_act_state

# Stream identifiers folded into a seed's key so that evaluation never draws from
# (and so never perturbs) the training stream.
PERIODIC_EVAL_STREAM = 1
FINAL_EVAL_STREAM = 2
USER_EVAL_STREAM = 3


@flax.struct.dataclass
class TrainState:
    """Everything a seed's run needs to continue exactly; saved whole in checkpoints."""

    agent: Any  # the learner's state (DQN: networks, optimizer, replay); has .params and .updates
    env_state: Any
    obs: jax.Array  # [num_envs, *obs_shape]
    key: jax.Array
    env_steps: jax.Array
    episode_return: jax.Array  # [num_envs], running return of the current episodes
    act_state: Any = ()  # the policy's state between steps (Learner.init_act_state): () for feed-forward agents


class ChunkHealth(NamedTuple):
    """Whether a chunk stayed finite, from values the loop has anyway (one per chunk and seed).

    Explicit flags, because a nan loss alone also means "no training phase ran here".
    """

    nonfinite_loss_at: jax.Array  # iteration of the chunk's first training phase with a non-finite loss, -1: none
    nonfinite_q_at: jax.Array  # the same for the mean Q-value of the sampled batch
    params_finite: jax.Array  # every online parameter finite at the chunk's end (one reduction per chunk)
    q_abs_max: jax.Array  # largest |mean Q| of the chunk's finite training phases (0: none)
    reward_abs_max: jax.Array  # largest |reward| the chunk's env steps gave


class ChunkOutput(NamedTuple):
    """Per-iteration records of a chunk (leading axis: iteration), and its health (per chunk)."""

    finished_return: jax.Array  # [num_envs], return of episodes that ended here, else nan
    loss: jax.Array  # nan when no training phase ran
    q_mean: jax.Array
    td_abs: jax.Array
    epsilon: jax.Array
    trained: jax.Array  # a training phase ran (the update counter moved)
    reward_abs: jax.Array  # max |reward| over the iteration's envs
    # [num_envs]: a step ended in a non-terminal state with no legal action (masked envs; else None)
    no_legal_action: jax.Array | None = None
    health: ChunkHealth | None = None  # set once per chunk, after the scan


def chunk_health(trained: jax.Array, loss: jax.Array, q_mean: jax.Array, reward_abs: jax.Array, params: Any) -> ChunkHealth:
    """The chunk's ChunkHealth from its per-iteration records (leading axis: iteration) and the
    parameters at its end. Runs inside the compiled chunk (and once per chunk in the host loop)."""
    def first(bad: jax.Array) -> jax.Array:
        return jnp.where(bad.any(), jnp.argmax(bad), -1).astype(jnp.int32)

    finite_q = trained & jnp.isfinite(q_mean)
    params_finite = jnp.stack([jnp.isfinite(leaf).all() for leaf in jax.tree.leaves(params)]).all()
    return ChunkHealth(
        nonfinite_loss_at=first(trained & ~jnp.isfinite(loss)),
        nonfinite_q_at=first(trained & ~jnp.isfinite(q_mean)),
        params_finite=params_finite,
        q_abs_max=jnp.max(jnp.where(finite_q, jnp.abs(q_mean), 0.0)),
        reward_abs_max=jnp.max(reward_abs),
    )


class Program(NamedTuple):
    """The pure, unbatched functions of one (agent, config, env)."""

    config: RunConfig
    env: JaxEnv
    learner: Learner
    init: Callable[[jax.Array], TrainState]
    chunk: Callable[..., tuple[TrainState, ChunkOutput]]
    evaluate: Callable[[Any, jax.Array, int], jax.Array]


def hyper_arrays(config: RunConfig) -> dict[str, np.ndarray]:
    """The config's vmappable hyperparameters (config.VMAPPABLE) as numpy scalars: int32 or float32."""
    values = {}
    for name in VMAPPABLE:
        if hasattr(config, name):
            value = getattr(config, name)
            values[name] = np.asarray(value, np.int32 if isinstance(value, int) and not isinstance(value, bool) else np.float32)
    return values


def seed_key(seed: int) -> jax.Array:
    return jax.random.PRNGKey(seed)


def episode_keys(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(reset key, step key) of a batch of greedy episodes: the evaluation's streams, which the
    Q-vs-return plot and recordings share (reset keys split(reset key, episodes), step t's keys
    split(fold_in(step key, t), episodes))."""
    reset_key, loop_key = jax.random.split(key)
    return reset_key, loop_key


def all_legal(num_envs: int, num_actions: int) -> jax.Array:
    """The action mask of an environment without one: every action legal."""
    return jnp.ones((num_envs, num_actions), bool)


def make_program(config: RunConfig, env: JaxEnv, learner: Learner) -> Program:
    """The loop's pure functions around `learner` (built once per run, dqnx.agents.make_learner)."""
    n = config.num_envs
    masked = uses_masks(config, env)

    def legal(env_state: Any, count: int) -> jax.Array:
        """The legal actions of each env's current observation (all of them when the run ignores masks)."""
        return jax.vmap(env.action_mask)(env_state) if masked else all_legal(count, env.num_actions)

    def init(key: jax.Array) -> TrainState:
        agent_key, env_key, loop_key = jax.random.split(key, 3)
        obs, env_state = jax.vmap(env.reset)(jax.random.split(env_key, n))
        return TrainState(
            agent=learner.init(agent_key),
            env_state=env_state,
            obs=obs,
            key=loop_key,
            env_steps=jnp.zeros((), jnp.int32),
            episode_return=jnp.zeros((n,), jnp.float32),
            act_state=learner.init_act_state(n),
        )

    def iteration(hyper: dict[str, jax.Array] | None, state: TrainState, env_steps: jax.Array):
        """One env step of every env, then learning. `env_steps` (steps before this one) is
        the same for every seed, so under vmap the learner's "train now?" branch stays a
        real branch instead of computing both sides for all seeds."""
        key, act_key, env_key, learn_key = jax.random.split(state.key, 4)
        epsilon = epsilon_at(config, env_steps, hyper)
        action, act_state = learner.act(state.agent.params, state.act_state, state.obs, legal(state.env_state, n),
                                        act_key, epsilon, hyper)
        next_obs, env_state, reward, terminated, truncated, final_obs, _, final_mask = jax.vmap(env.step_with_masks)(
            jax.random.split(env_key, n), state.env_state, action
        )
        # final_obs is the true successor (also after a truncation); next_obs may be a reset.
        # final_mask is its legal actions, from the step's info (the auto-reset's mask belongs to next_obs).
        fresh = Batch(obs=state.obs, action=action, reward=reward, next_obs=final_obs, terminated=terminated,
                      episode_end=terminated | truncated, next_mask=final_mask if masked else None,
                      act_state=stored_act_state(state.act_state))
        agent, metrics = learner.learn(state.agent, fresh, env_steps, learn_key, hyper)

        episode_return = state.episode_return + reward
        done = terminated | truncated
        output = ChunkOutput(
            finished_return=jnp.where(done, episode_return, jnp.nan),
            loss=metrics["loss"],
            q_mean=metrics["q_mean"],
            td_abs=metrics["td_abs"],
            epsilon=epsilon,
            trained=agent.updates != state.agent.updates,
            reward_abs=jnp.abs(reward).max(),
            no_legal_action=~terminated & ~final_mask.any(axis=-1) if masked else None,
        )
        new_state = TrainState(
            agent=agent,
            env_state=env_state,
            obs=next_obs,
            key=key,
            env_steps=state.env_steps + n,
            episode_return=jnp.where(done, 0.0, episode_return),
            act_state=reset_act_state(learner, act_state, done),  # an episode that starts remembers nothing
        )
        return new_state, output

    def chunk(state: TrainState, iterations: int, start_step: jax.Array | None = None,
              hyper: dict[str, jax.Array] | None = None) -> tuple[TrainState, ChunkOutput]:
        """`iterations` iterations from env step `start_step` (default: the state's own counter).

        `hyper` overrides the config's vmappable hyperparameters (see `hyper_arrays`) with
        arrays, so one compiled chunk serves every value: vmapped, a sweep's configurations.
        """
        start = state.env_steps if start_step is None else start_step
        state, output = jax.lax.scan(functools.partial(iteration, hyper or None), state,
                                     start + n * jnp.arange(iterations, dtype=jnp.int32))
        health = chunk_health(output.trained, output.loss, output.q_mean, output.reward_abs, state.agent.params)
        return state, output._replace(health=health)

    def evaluate(params: Any, key: jax.Array, episodes: int) -> jax.Array:
        """Returns of `episodes` episodes of the evaluation policy run side by side (the first
        episode of each), played by episodes.play_jax (it stops once every episode has ended)."""
        reset_key, loop_key = episode_keys(key)
        act_key = jax.random.fold_in(key, 7)  # only used by a stochastic evaluation policy

        def choose(obs, t, mask=None, policy_state=()):
            action, policy_state = evaluation_step(config, learner, params, policy_state, obs, jax.random.fold_in(act_key, t),
                                                   all_legal(episodes, env.num_actions) if mask is None else mask)
            return action, None, policy_state

        return play_jax(env, choose, jax.random.split(reset_key, episodes),
                        lambda t: jax.random.split(jax.random.fold_in(loop_key, t), episodes), masked=masked,
                        policy_state=learner.init_act_state(episodes))[0]

    return Program(config=config, env=env, learner=learner, init=init, chunk=chunk, evaluate=evaluate)


def init_states(program: Program, seeds: list[int]) -> TrainState:
    """Train states of several seeds, stacked on a leading axis."""
    return jax.jit(jax.vmap(program.init))(jnp.stack([seed_key(s) for s in seeds]))


def eval_keys(seeds: list[int], stream: int, step: int) -> jax.Array:
    return jnp.stack([jax.random.fold_in(jax.random.fold_in(seed_key(s), stream), step) for s in seeds])


def seed_layout(num_seeds: int, num_devices: int) -> tuple[int, int]:
    """(devices in use, copies of the last seed to add) for the fewest seeds per device:
    5 seeds on 2 devices (2, 1): 3 + 3; 5 on 8 (5, 0); 6 on 4 (3, 0): 2 + 2 + 2.

    >>> [seed_layout(n, d) for n, d in [(5, 2), (5, 8), (6, 4), (7, 4), (1, 2), (4, 1)]]
    [(2, 1), (5, 0), (3, 0), (4, 1), (1, 0), (1, 0)]
    """
    per_device = math.ceil(num_seeds / num_devices)
    share = math.ceil(num_seeds / per_device)
    return share, share * per_device - num_seeds


# Programs shared by the runs of one process (a test session, a user's sweep in a notebook).
#
# Why: every run builds its own Program (new closures around a new learner and env), and jax.jit's
# own caches go by function identity, so each `dqnx.train` traced, lowered and compiled its chunk
# and evaluation again, even for a configuration this process had just run. Tracing and lowering
# are most of that cost (seconds of CPU per run, tests/test_memory.py's four runs ~30 s); the
# persistent compilation cache (dqnx.compile_cache) only saves the XLA compile after them.
#
# What: the compiled executables, kept under a key made of everything they were built from,
# compared by value (`value_key`): the loop's config and env, the learner's (agent, config, env)
# as make_learner recorded it (`Learner.built_from`) and its functions' code, what is compiled
# (chunk of N iterations, evaluation of E episodes, initial states), the seed layout (seeds,
# padding, devices) and the arguments' shapes, dtypes and shardings. A learner not built by
# make_learner, or an env holding something without a value (a function, a module), gets no
# key and is compiled for its run only, as before.
#
# Not kept: the Program, learner or env of an earlier run. An executable holds no Python closure;
# a reusing run calls it with its own arrays (state, hyperparameters, keys) and keeps its own
# learner and env for everything else. Values a program bakes in (env parameters, config fields)
# are in the key, so an equal key means an equal program, and the results are the bits a fresh
# compile gives (tests/test_program_cache.py). Least recently used entries go beyond
# PROGRAM_CACHE_SIZE. Code changed inside a running process (importlib.reload, a monkeypatched
# function that a learner calls) is not noticed: PROGRAMS.clear() drops everything.
PROGRAM_CACHE_SIZE = 32


class _NoValue(Exception):
    """Raised by value_key for an object that has no value to compare (a function, a module)."""


def value_key(obj: Any, depth: int = 0) -> Any:
    """A hashable stand-in for `obj` that is equal for objects of equal value: scalars and strings
    themselves, arrays by dtype, shape and bytes, containers, dataclasses and plain objects by type
    name and contents. Raises _NoValue for anything else (functions, modules, deep nesting).

    >>> value_key({"a": (1, 2.0)}) == value_key({"a": (1, 2.0)}), value_key(np.arange(3)) == value_key(np.arange(4))
    (True, False)
    """
    if depth > 8:
        raise _NoValue("too deep")
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        return type(obj), obj
    if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
        host = np.asarray(obj)
        return "array", host.dtype.str, host.shape, host.tobytes()
    if isinstance(obj, (tuple, list)):
        return type(obj), tuple(value_key(x, depth + 1) for x in obj)
    if isinstance(obj, dict):
        return dict, tuple(sorted((repr(k), value_key(v, depth + 1)) for k, v in obj.items()))
    cls = type(obj)
    # By name, not identity: some classes are made per env (envs/minatar.sticky_params).
    name = (cls.__module__, cls.__qualname__)
    if dataclasses.is_dataclass(obj):
        return name, tuple((f.name, value_key(getattr(obj, f.name), depth + 1)) for f in dataclasses.fields(obj))
    if isinstance(getattr(obj, "__dict__", None), dict) and not callable(obj) and not isinstance(obj, type):
        return name, value_key(vars(obj), depth + 1)
    raise _NoValue(f"{name} has no value to compare")


def program_key(program: Program) -> Any:
    """What the programs compiled for `program` were built from, as a value (see above), or None:
    not shareable with another run."""
    learner = program.learner
    built_from = getattr(learner, "built_from", None)
    functions = [f for f in learner if callable(f)]
    # A learner changed after make_learner (a function swapped in) must not pass for the one it was built as.
    if built_from is None or not all(hasattr(f, "__code__") for f in functions):
        return None
    try:
        return (value_key((program.config, program.env, built_from)), tuple(f.__code__ for f in functions),
                jax.dtypes.canonicalize_dtype(np.float64).str)  # 64-bit JAX (jax_enable_x64) or not
    except _NoValue:
        return None


class ProgramCache:
    """Compiled executables by key, the PROGRAM_CACHE_SIZE most recently used (see above).
    `compiled` and `reused` count what the process compiled and what it took from here."""

    def __init__(self, size: int):
        self.size = size
        self.compiled = 0
        self.reused = 0
        self._entries: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()  # runs may train in threads (a tuner's trials)

    def get(self, key: Any, build: Callable[[], Any]) -> Any:
        """The executable under `key`, else build() kept there (key None: built, not kept)."""
        if key is not None:
            with self._lock:
                if key in self._entries:
                    self._entries.move_to_end(key)
                    self.reused += 1
                    return self._entries[key]
        executable = build()
        with self._lock:
            self.compiled += 1
            if key is not None:
                self._entries[key] = executable
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
        return executable

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


PROGRAMS = ProgramCache(PROGRAM_CACHE_SIZE)


def _signature(args: Any) -> Any:
    """The arguments' tree, shapes, dtypes and placement: what a compiled executable accepts."""
    leaves, tree = jax.tree.flatten(args)
    return tree, tuple((np.shape(x), np.dtype(x.dtype if hasattr(x, "dtype") else np.result_type(x)).str,
                        getattr(x, "weak_type", False), getattr(x, "sharding", None)) for x in leaves)


class Compiled:
    """The program's functions compiled for a batch of seeds, with compile times kept.

    A single seed runs unbatched (one real `lax.cond` instead of vmap's select of
    both branches); several seeds run vmapped in one program, their seed axis split
    over the available devices (the CPU's cores, see dqnx.jax_setup, or GPUs): seeds
    never exchange data, so each device simply runs its share. When the devices in
    use don't divide the seed count, copies of the last seed fill the last device
    (5 seeds on 2 cores run as 3 + 3 rather than 5 on one core): `place` pads a
    seed-stacked tree once, the program keeps it padded, and `real` gives the host
    the callers' seeds back (checkpoints, weights, metrics never see a copy).
    """

    def __init__(self, program: Program, num_seeds: int, hypers: dict[str, Any] | None = None):
        """`hypers`: per-seed values of vmappable hyperparameters (name -> [num_seeds] array),
        a sweep's configurations; by default every seed takes the program's config. Either way
        they enter the program as arrays, so a sweep and the same configs run one by one
        execute the same operations. Not always the same bits: XLA compiles a vmapped and an
        unbatched program into different kernels, which on a CPU with FMA may fuse different
        multiply-adds (last-bit differences; bit for bit with XLA_FLAGS=--xla_cpu_max_isa=AVX,
        see tests/test_sweep.py), and a long run can amplify one bit into another argmax."""
        self.program = program
        self.num_seeds = num_seeds
        if hypers is None:
            hypers = {k: np.repeat(v, num_seeds) for k, v in hyper_arrays(program.config).items()}
        self.compile_seconds = 0.0
        self._chunks: dict[int, Any] = {}
        self._evals: dict[int, Any] = {}
        devices = jax.devices()
        share, self.padding = seed_layout(num_seeds, len(devices))
        self.sharding = (
            NamedSharding(Mesh(np.array(devices[:share]), ("seeds",)), PartitionSpec("seeds")) if share > 1 else None
        )
        pad = lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], self.padding, axis=0)])  # noqa: E731
        self._pad = jax.jit(lambda tree: jax.tree.map(pad, tree))
        self.hypers = self.place({k: np.asarray(v) for k, v in hypers.items()})
        self._program_key = program_key(program)

    def init_states(self, seeds: list[int]) -> TrainState:
        keys = jnp.stack([seed_key(s) for s in seeds])
        return self._compile(("init",), jax.vmap(self.program.init), keys)(keys)

    def close(self) -> None:
        """Nothing to release: the environments live inside the program."""

    def place(self, tree: Any) -> Any:
        """Put a seed-stacked pytree where the compiled program expects it: padded (see
        the class) and split over the devices."""
        if self.sharding is None:
            return jax.tree.map(jnp.asarray, tree)
        return jax.device_put(self._pad(tree) if self.padding else tree, self.sharding)

    def real(self, tree: Any) -> Any:
        """A placed tree's callers' seeds, on the host (numpy), for files and metrics."""
        return jax.tree.map(lambda x: np.asarray(x)[:self.num_seeds], tree)

    def _batched(self, fn: Callable) -> Callable:
        if self.num_seeds == 1:
            return lambda *args: jax.tree.map(lambda x: x[None], fn(*jax.tree.map(lambda x: x[0], args)))
        return jax.vmap(fn)

    def _compile(self, what: tuple, fn: Callable, *args: Any, donate: tuple[int, ...] = ()) -> Any:
        """`fn` compiled for `args`, or the executable an earlier run compiled for the same key (PROGRAMS)."""
        start = time.perf_counter()
        key = None if self._program_key is None else (
            self._program_key, what, self.num_seeds, self.padding, self.sharding, donate, _signature(args))
        compiled = PROGRAMS.get(key, lambda: jax.jit(fn, donate_argnums=donate).lower(*args).compile())
        self.compile_seconds += time.perf_counter() - start
        return compiled

    def chunk(self, state: TrainState, iterations: int, start_step: int) -> tuple[TrainState, ChunkOutput]:
        """Run a chunk of every seed; all seeds stand at env step `start_step` (they move in lockstep)."""
        start = jnp.asarray(start_step, jnp.int32)
        if iterations not in self._chunks:
            def one_seed(s, step, hyper):
                return self.program.chunk(s, iterations, step, hyper)

            if self.num_seeds == 1:
                def fn(s, step, hyper):
                    first, first_hyper = jax.tree.map(lambda x: x[0], (s, hyper))
                    out = one_seed(first, step, first_hyper)
                    return jax.tree.map(lambda x: x[None], out)
            else:
                fn = jax.vmap(one_seed, in_axes=(0, None, 0))
            self._chunks[iterations] = self._compile(("chunk", iterations), fn, state, start, self.hypers, donate=(0,))
        state, output = self._chunks[iterations](state, start, self.hypers)
        return state, self.real(output) if self.padding else output

    def evaluate(self, params: Any, keys: jax.Array, episodes: int) -> np.ndarray:
        """Returns of placed `params` [num_seeds, episodes]; `keys` one per real seed."""
        keys = self.place(keys)
        if episodes not in self._evals:
            fn = self._batched(lambda p, k: self.program.evaluate(p, k, episodes))
            self._evals[episodes] = self._compile(("evaluate", episodes), fn, params, keys)
        return np.asarray(self._evals[episodes](params, keys))[:self.num_seeds]


@jax.jit
def select_where(mask: jax.Array, new: Any, old: Any) -> Any:
    """Per seed, `new` where mask else `old` (mask has one entry per seed)."""
    return jax.tree.map(lambda a, b: jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), new, old)


def chunk_iterations(config: RunConfig, done_steps: int) -> int:
    """Iterations of the next chunk: up to the next eval boundary or the end of the run."""
    per_chunk = max(1, config.eval_every // config.num_envs)
    remaining = config.total_steps - done_steps
    return min(per_chunk, math.ceil(remaining / config.num_envs))


def check_legal_actions(env_id: str, no_legal_action: Any, start_step: int, num_envs: int, seeds: list[int]) -> None:
    """Raise EnvironmentFailure naming the env, step and seed of the first step (of a
    chunk's records [seeds, iterations, num_envs]) that left a non-terminal state with no legal action."""
    if no_legal_action is None:
        return
    flags = np.asarray(jax.device_get(no_legal_action))
    if not flags.any():
        return
    from dqnx.errors import EnvironmentFailure

    seed_index, iteration, env_index = (int(i[0]) for i in np.nonzero(flags))
    step = start_step + (iteration + 1) * num_envs
    raise EnvironmentFailure(
        f"{env_id} gave no legal action in a non-terminal state at env step {step} (seed {seeds[seed_index]}, env "
        f"{env_index}); its action mask must allow an action until the episode ends (or run with --set action_mask=off)")


def summarize_chunk(output: ChunkOutput) -> dict[str, np.ndarray]:
    """Per-seed means of a chunk's records (host side)."""
    out = jax.device_get(output)
    finished = out.finished_return.reshape(out.finished_return.shape[0], -1)
    counts = np.sum(~np.isnan(finished), axis=1)
    with warnings.catch_warnings():  # nanmean of a chunk without updates or episodes is nan, by design
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            "episodes": counts,
            "train_return": np.nanmean(finished, axis=1),
            "loss": np.nanmean(out.loss, axis=1),
            "q_mean": np.nanmean(out.q_mean, axis=1),
            "td_abs": np.nanmean(out.td_abs, axis=1),
            "epsilon": out.epsilon[:, -1],
        }
