"""One seed's greedy policy, as export and serving see it: a pure Q-function of a batch
of observations, what those observations must be, and a description to ship with it.

The Q-function is the learner's own `q_values` with the seed's weights closed over:
for DQN the mean network (noisy layers without noise), C51's expected Q, dueling's
V + A - mean A, whatever head shape the run trained; for tabular and linear agents
their table or weights. Exported models compute exactly this function.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from dqnx import jax_setup

jax_setup.configure()  # before JAX starts its backend, as api.py does

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dqnx.agents import make_learner  # noqa: E402
from dqnx.errors import UsageError  # noqa: E402

# Bumped when the meaning of a metadata field or of the model's inputs/outputs changes.
METADATA_VERSION = 1


@dataclass(frozen=True)
class Policy:
    """The greedy policy of one trained seed.

    q_function(observations [batch, *obs_shape] of obs_dtype) -> Q [batch, num_actions];
    `agent` is the single-seed dqnx Agent it came from (the reference exports are checked
    against, and what the service answers with).
    """

    agent: Any  # dqnx Agent holding this seed's weights only
    q_function: Callable[[jax.Array], jax.Array]
    params: Any  # this seed's weights, no seed axis
    jitted_q: Callable[[Any, jax.Array], jax.Array]  # jit(learner.q_values)(params, obs): what Agent.q_values calls
    obs_shape: tuple[int, ...]
    obs_dtype: str  # "float32", or "uint8" for images (scaled to [0, 1] inside the network)
    num_actions: int
    num_states: int | None  # a Discrete observation space's size (observations arrive one-hot)
    metadata: dict[str, Any]

    def q_values(self, observations: np.ndarray) -> np.ndarray:
        """Q of a batch of ready inputs ([batch, *obs_shape], obs_dtype), as Agent.q_values computes
        it but without slicing the seed's weights out of every array on each call."""
        return np.asarray(self.jitted_q(self.params, observations))

    def greedy(self, observation: jax.Array, action_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(Q [batch, actions], greedy action [batch] int32 among the actions the mask allows)."""
        q = self.q_function(observation)
        return q, greedy_action(q, action_mask)


def greedy_action(q: jax.Array, action_mask: jax.Array) -> jax.Array:
    """argmax_a Q(s, a) over legal actions (mask True); the first on ties, as numpy's argmax.

    >>> greedy_action(jnp.array([[1.0, 3.0, 2.0]]), jnp.array([[True, False, True]]))
    Array([2], dtype=int32)
    """
    return jnp.where(action_mask, q, -jnp.inf).argmax(axis=-1).astype(jnp.int32)


def policy_of(agent: Any, seed_index: int = 0) -> Policy:
    """The Policy of seed `seed_index` of a loaded Agent (dqnx.load)."""
    seeds = list(agent.seeds)
    if isinstance(seed_index, bool) or not isinstance(seed_index, int) or not 0 <= seed_index < len(seeds):
        raise UsageError(f"--seed-index must be 0..{len(seeds) - 1} (this run trained {len(seeds)} seed"
                         f"{'s' * (len(seeds) > 1)}: {', '.join(map(str, seeds))}), got {seed_index!r}")
    if agent.algorithm == "imitation":
        raise UsageError("an imitation policy is a classifier without Q-values; export or serve the expert run it imitates")
    if getattr(agent.config, "memory", "none") != "none" or getattr(agent.config, "frame_stack", 0) > 1:
        # Its Q-values depend on the episode so far (a hidden state or a window of frames), which an
        # observation-in, Q-out model cannot carry between requests.
        raise UsageError("this run's agent has memory (memory or frame_stack): export and serve take feed-forward "
                         "agents only, whose Q-values depend on the observation alone; evaluate it with dqnx eval")
    env = agent.env
    one_seed = jax.tree.map(lambda x: x[seed_index:seed_index + 1], agent.params)
    single = dataclasses.replace(agent, seeds=[seeds[seed_index]], params=one_seed)
    params = jax.tree.map(lambda x: x[0], one_seed)
    learner_q = make_learner(agent.algorithm, agent.config, env).q_values
    obs_dtype = "uint8" if np.dtype(getattr(env, "obs_dtype", np.float32)) == np.uint8 else "float32"
    steps = agent.weights_info.get("env_steps")
    metadata = {
        "dqnx_metadata_version": METADATA_VERSION,
        "producer": f"dqnx {_version()}",
        "env_id": agent.env_id,
        "algorithm": agent.algorithm,
        "run": str(agent.run_dir) if agent.run_dir is not None else None,
        "weights": agent.weights,
        "weights_env_steps": steps[seed_index] if isinstance(steps, list) else steps,
        "seed": seeds[seed_index],
        "seed_index": seed_index,
        "observation_shape": list(env.obs_shape),
        "observation_dtype": obs_dtype,
        "num_actions": int(env.num_actions),
        "input_contract": input_contract(env, obs_dtype),
        # True: the agent never learned what illegal actions are worth; pass each state's mask.
        "trained_with_action_masks": bool(agent.action_masks),
        "inputs": {
            "observation": f"[batch, {', '.join(map(str, env.obs_shape))}] {obs_dtype}",
            "action_mask": f"[batch, {env.num_actions}] bool: True where the action is legal"
                           + (" (this agent was trained with masks: pass the environment's)" if agent.action_masks else ""),
        },
        "outputs": {
            "q_values": f"[batch, {env.num_actions}] float32: Q(s, a) of the greedy policy (the mask does not change them)",
            "action": "[batch] int32: argmax of Q over the legal actions (the first on ties)",
        },
    }
    return Policy(agent=single, q_function=lambda obs: learner_q(params, obs), params=params, jitted_q=jax.jit(learner_q),
                  obs_shape=tuple(env.obs_shape),
                  obs_dtype=obs_dtype, num_actions=int(env.num_actions), num_states=env.num_states, metadata=metadata)


def input_contract(env: Any, obs_dtype: str) -> str:
    """What one observation must be, in words: the preprocessing the agent trained behind."""
    shape = "x".join(map(str, env.obs_shape))
    if env.num_states is not None:
        return (f"one-hot float32 vector of length {env.num_states} per observation: the environment's Discrete("
                f"{env.num_states}) state i becomes 1.0 at index i and 0.0 elsewhere")
    if getattr(env, "atari", False):
        from dqnx.envs.atari import FRAME_SKIP, NOOP_MAX, SCREEN_SIZE

        return (f"preprocessed Atari frames, not raw screens: uint8 [{shape}], {env.frame_stack} stacked {SCREEN_SIZE}x"
                f"{SCREEN_SIZE} grayscale frames, channels first, oldest first, as gymnasium's AtariPreprocessing("
                f"frame_skip={FRAME_SKIP}, screen_size={SCREEN_SIZE}, grayscale_obs=True, noop_max={NOOP_MAX}) followed "
                f"by FrameStackObservation({env.frame_stack}) returns them; pixels 0-255, scaled inside the model")
    if obs_dtype == "uint8":
        layout = getattr(env, "image_layout", None) or "HWC"
        return f"uint8 image [{shape}] ({layout}) as the environment returns it; pixels 0-255, scaled inside the model"
    if getattr(env, "image_layout", None) is not None:
        return f"float32 board [{shape}] ({env.image_layout}) per observation, its 0/1 cells as 0.0/1.0"
    return f"float32 array [{shape}] per observation, as the environment returns it (no normalisation)"


def sample_observations(policy: Policy, count: int, seed: int = 0) -> np.ndarray:
    """`count` valid inputs for `policy` (one-hot states, random pixels, values within the
    observation bounds where they are finite): the batch exports are checked on."""
    rng = np.random.default_rng(seed)
    shape = (count, *policy.obs_shape)
    if policy.num_states is not None:
        return np.eye(policy.num_states, dtype=np.float32)[rng.integers(0, policy.num_states, count)]
    if policy.obs_dtype == "uint8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    env = policy.agent.env
    low = np.broadcast_to(np.asarray(env.obs_low if env.obs_low is not None else -3.0, np.float64), policy.obs_shape)
    high = np.broadcast_to(np.asarray(env.obs_high if env.obs_high is not None else 3.0, np.float64), policy.obs_shape)
    bounded = np.isfinite(low) & np.isfinite(high) & (high - low < 1e6)
    low, high = np.where(bounded, low, -3.0), np.where(bounded, high, 3.0)
    return rng.uniform(low, high, shape).astype(np.float32)


def sample_masks(count: int, num_actions: int, seed: int = 0) -> np.ndarray:
    """Random action masks with at least one legal action per row; the first half all legal."""
    rng = np.random.default_rng(seed + 1)
    masks = rng.random((count, num_actions)) < 0.5
    masks[np.arange(count), rng.integers(0, num_actions, count)] = True
    masks[: count // 2] = True
    return masks


def _version() -> str:
    import dqnx

    return dqnx.__version__
