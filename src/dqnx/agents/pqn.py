"""PQN, top to bottom: rollout storage, Q(lambda) targets, minibatch epochs.

PQN (Gallici et al., "Simplifying Deep Temporal Difference Learning", ICLR 2025) learns
from the transitions it has just collected instead of a replay sample:

    every iteration:   the loop steps num_envs envs once; learn() stores their
                       transitions at row t of the rollout, t = iteration mod T
    after T of them:   Q(lambda) targets over the whole T x num_envs rollout (one forward
                       pass over its successors), then num_epochs passes over it in
                       num_minibatches shuffled minibatches, one gradient step each

There is no replay buffer and no target network: LayerNorm in the Q-network keeps the
bootstrapped targets stable (the paper's point); each can be switched on. With
`replay_rollouts = K` the learner also keeps the K rollouts before the current one (a
ring, `PQNState.replay`): each learning phase recomputes the Q(lambda) targets of all
K + 1 with the current network (stored targets would be stale) and takes its epochs over
all their samples in minibatches of the usual size, so the phase takes K + 1 times the
gradient steps (see `learning_phase`).
The rollout lives in the learner's state, so a chunk of the compiled loop, or a
checkpoint, may end in the middle of one and the next continues it exactly.

Where a rollout's row is written, and when it is full, are read from `env_steps`, which
is the same for every seed: vmapped over seeds, the "learn now?" test stays a real branch.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from dqnx.agents.dqn import elementwise_loss, flatten, q_lambda_returns
from dqnx.agents.exploration import epsilon_greedy, legal_max
from dqnx.agents.networks import make_network
from dqnx.config import PQNConfig, hyperparameters
from dqnx.protocols import Batch, Learner


@flax.struct.dataclass
class PQNState:
    params: Any
    opt_state: Any
    updates: jax.Array  # gradient steps taken so far
    rollout: Batch  # [rollout_steps, num_envs, ...]: the current rollout, filled up to the iteration's row
    target_params: Any = None  # only with config.target_network
    # Only with config.replay_rollouts = K > 0: the K rollouts before the current one
    # [K, rollout_steps, num_envs, ...]; the rollout of learning phase p (counted from 0) is in
    # slot p mod K. Which slots are filled, and where the next goes, follow from env_steps.
    replay: Batch | None = None


def minibatch_indices(key: jax.Array, num_samples: int, num_minibatches: int, valid: jax.Array | None = None) -> jax.Array:
    """A shuffled split of range(num_samples) into [num_minibatches, num_samples // num_minibatches]:
    every sample falls in exactly one minibatch of an epoch.

    >>> sorted(minibatch_indices(jax.random.PRNGKey(0), 6, 3).ravel().tolist())
    [0, 1, 2, 3, 4, 5]

    With `valid` [num_samples], the valid samples, shuffled, fill the first minibatches, the
    invalid ones (replay slots not filled yet) the last; the caller skips those. The number of
    valid samples must then be a multiple of the minibatch size.

    >>> index = minibatch_indices(jax.random.PRNGKey(0), 4, 2, jnp.array([True, False, True, False]))
    >>> sorted(index[0].tolist()), sorted(index[1].tolist())
    ([0, 2], [1, 3])
    """
    order = jax.random.permutation(key, num_samples)
    if valid is not None:
        # A stable sort on "invalid" keeps the shuffled order within the valid and the invalid samples.
        order = order[jnp.argsort(~valid[order], stable=True)]
    return order.reshape(num_minibatches, -1)


def rollout_targets(q_values: Any, params: Any, rollout: Batch, gamma: float | jax.Array, q_lambda: float | jax.Array,
                    reward_scale: float | jax.Array = 1.0) -> jax.Array:
    """Q(lambda) targets [T, n] of a full rollout [T, n, ...]: one forward pass over every
    step's true successor (`next_obs`: the final observation after a truncation, not the
    reset one) gives v = max_a Q(s', a), over the legal actions of `next_mask` when given;
    `q_lambda_returns` does the rest."""
    T, n = rollout.reward.shape
    next_obs = rollout.next_obs.reshape(T * n, *rollout.next_obs.shape[2:])
    next_q = q_values(params, next_obs).reshape(T, n, -1)
    # legal_max stays finite where no action is legal (a terminal state), so its zero-weighted
    # bootstrap is 0, not -inf * 0 = NaN.
    return q_lambda_returns(reward_scale * rollout.reward, rollout.terminated, rollout.episode_end,
                            legal_max(next_q, rollout.next_mask), gamma, q_lambda)


def store_row(rollout: Batch, fresh: Batch, row: jax.Array) -> Batch:
    """`rollout` [T, n, ...] with one iteration's transitions `fresh` [n, ...] written at `row`
    (next_mask all-true when the environment has no masks)."""
    next_mask = jnp.ones_like(rollout.next_mask[0]) if fresh.next_mask is None else fresh.next_mask
    stored = Batch(obs=fresh.obs, action=fresh.action, reward=fresh.reward, next_obs=fresh.next_obs,
                   terminated=fresh.terminated, episode_end=fresh.episode_end, next_mask=next_mask)
    return jax.tree.map(lambda buffer, x: jax.lax.dynamic_update_index_in_dim(buffer, x.astype(buffer.dtype), row, 0),
                        rollout, stored)


def total_gradient_updates(config: PQNConfig) -> int:
    """Gradient steps the learning-rate schedule spans: a full run's, or those of its first
    lr_schedule_steps env steps (a run extended on resume keeps its original schedule).
    With replay_rollouts = K, phase p (from 0) learns from min(p, K) + 1 rollouts."""
    span = config.lr_schedule_steps or config.total_steps
    phases = span // config.rollout_env_steps
    rollouts = sum(min(p, config.replay_rollouts) + 1 for p in range(phases))
    return rollouts * config.num_epochs * config.num_minibatches


def make_optimizer(config: PQNConfig, hyper: dict[str, Any] | None = None) -> optax.GradientTransformation:
    """Global-norm clipping, then RAdam (or Adam) with a constant or linearly decaying step size.

    Flattened, as DQN's (agents/dqn.py: make_optimizer): one vector instead of one array per
    layer. `hyper`: the learning rate and (R)Adam's constants, if not the config's.
    """
    values = hyperparameters(config, hyper)
    lr: Any = values["learning_rate"]
    if config.lr_schedule == "linear":
        lr = optax.linear_schedule(values["learning_rate"], config.lr_end, max(total_gradient_updates(config), 1))
    adam = optax.radam if config.optimizer == "radam" else optax.adam
    base = adam(lr, b1=values["adam_b1"], b2=values["adam_b2"], eps=values["adam_eps"])
    if config.max_grad_norm > 0:
        base = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), base)
    return flatten(base)


def make_pqn_learner(config: PQNConfig, obs_shape: tuple[int, ...], num_actions: int, obs_dtype: Any = "float32",
                     image_layout: str | None = None) -> Learner:
    """PQN as a `dqnx.agents.Learner` (init, act, learn, q_values)."""
    obs_dtype = jnp.dtype(obs_dtype)
    network = make_network(config.network, num_actions, tuple(config.hidden_sizes), obs_shape, image_layout,
                           activation=config.activation, layer_norm=config.layer_norm,
                           conv_layer_norm=config.conv_layer_norm)
    T, n = config.rollout_steps, config.num_envs
    samples = T * n
    replay_rollouts = config.replay_rollouts

    def q_values(params: Any, obs: jax.Array) -> jax.Array:
        return network.apply(params, obs)

    def act(params: Any, act_state: Any, obs: jax.Array, mask: jax.Array | None, key: jax.Array, epsilon: jax.Array,
            hyper: dict[str, Any] | None = None) -> tuple[jax.Array, Any]:
        """Epsilon-greedy among the legal actions; feed-forward, so `act_state` passes through."""
        return epsilon_greedy(q_values(params, obs), key, epsilon, mask), act_state

    def empty_rollout() -> Batch:
        obs = jnp.zeros((T, n, *obs_shape), obs_dtype)
        flags = jnp.zeros((T, n), bool)
        return Batch(obs=obs, action=jnp.zeros((T, n), jnp.int32), reward=jnp.zeros((T, n), jnp.float32),
                     next_obs=obs, terminated=flags, episode_end=flags, next_mask=jnp.ones((T, n, num_actions), bool))

    def init(key: jax.Array) -> PQNState:
        params = network.init(key, jnp.zeros((1, *obs_shape), obs_dtype))
        replay = None
        if replay_rollouts:
            replay = jax.tree.map(lambda x: jnp.repeat(x[None], replay_rollouts, axis=0), empty_rollout())
        return PQNState(params=params, opt_state=make_optimizer(config).init(params), updates=jnp.zeros((), jnp.int32),
                        rollout=empty_rollout(), target_params=params if config.target_network else None, replay=replay)

    def loss_fn(params: Any, obs: jax.Array, action: jax.Array, target: jax.Array):
        q_taken = jnp.take_along_axis(q_values(params, obs), action[:, None], -1)[:, 0]
        error = q_taken - target
        return elementwise_loss(error, config.loss).mean(), {"q_mean": q_taken.mean(), "td_abs": jnp.abs(error).mean()}

    def gradient_step(optimizer: optax.GradientTransformation, obs: jax.Array, action: jax.Array, target: jax.Array,
                      carry: tuple[Any, Any], index: jax.Array):
        params, opt_state = carry
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, obs[index], action[index], target[index])
        changes, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, changes), opt_state), {"loss": loss, **aux}

    def synced_target(values: dict[str, Any], state: PQNState, params: Any, phases: jax.Array) -> Any:
        """The target network after `phases` learning phases: synced when they are a multiple of the period."""
        if not config.target_network:
            return state.target_params
        sync = phases % values["target_update_period"] == 0
        tau = values["tau"]
        return jax.tree.map(lambda online, old: jnp.where(sync, tau * online + (1.0 - tau) * old, old),
                            params, state.target_params)

    def targets_of(values: dict[str, Any], state: PQNState, rollout: Batch) -> jax.Array:
        bootstrap_params = state.target_params if config.target_network else state.params
        return jax.lax.stop_gradient(rollout_targets(q_values, bootstrap_params, rollout, values["gamma"],
                                                     values["q_lambda"], values["reward_scale"]))

    def learning_phase(values: dict[str, Any], phase: jax.Array, state: PQNState, rollout: Batch, key: jax.Array):
        """The fresh rollout and the (up to) K = replay_rollouts stored before it, their Q(lambda)
        targets all computed with the current bootstrap network (target or online); num_epochs
        passes over all their samples in minibatches of the usual size (rollout_steps x num_envs /
        num_minibatches), so (stored + 1) x num_minibatches gradient steps per pass; then the target
        sync and, with K > 0, the fresh rollout replaces the oldest stored one. With K = 0 (the
        paper's PQN) this is num_epochs passes of num_minibatches steps over the fresh rollout.

        Why with replay the count of minibatches grows, not their size: replay is there to reuse
        samples, that is to take more gradient steps per env step (DQN's replay ratio); larger
        minibatches would keep the number of steps and only average more samples into each. The
        size stays the paper's, so a step costs the same with or without replay. `phase` (this
        learning phase's number, from 0) comes from env_steps, the same for every seed: skipping the
        minibatches of slots not yet filled stays a real branch under vmap.
        """
        optimizer = make_optimizer(config, values)
        if replay_rollouts:
            data = jax.tree.map(lambda ring, fresh: jnp.concatenate([ring, fresh[None]]), state.replay, rollout)
            target = jax.vmap(lambda one: targets_of(values, state, one))(data)  # [K + 1, T, n]
        else:
            data = jax.tree.map(lambda fresh: fresh[None], rollout)
            target = targets_of(values, state, rollout)[None]
        stored = jnp.minimum(phase, replay_rollouts)  # filled slots: 0 .. stored - 1
        total = (replay_rollouts + 1) * samples
        obs = data.obs.reshape(total, *obs_shape)
        action = data.action.reshape(total).astype(jnp.int32)
        target = target.reshape(total)
        valid = jnp.repeat(jnp.append(jnp.arange(replay_rollouts) < stored, True), samples)
        minibatches = (replay_rollouts + 1) * config.num_minibatches
        live = (stored + 1) * config.num_minibatches  # the first `live` minibatches of a pass hold valid samples
        step = functools.partial(gradient_step, optimizer, obs, action, target)

        def skipped(carry, index):
            zero = jnp.zeros((), jnp.float32)
            return carry, {"loss": zero, "q_mean": zero, "td_abs": zero}

        def maybe_step(carry, numbered):
            number, index = numbered
            if not replay_rollouts:  # every minibatch is live: no branch
                return step(carry, index)
            return jax.lax.cond(number < live, step, skipped, carry, index)

        def epoch(carry, epoch_key):
            indices = minibatch_indices(epoch_key, total, minibatches, valid)
            return jax.lax.scan(maybe_step, carry, (jnp.arange(minibatches), indices))

        (params, opt_state), metrics = jax.lax.scan(
            epoch, (state.params, state.opt_state), jax.random.split(key, config.num_epochs))
        stepped = jnp.arange(minibatches) < live
        # A mean over the steps taken (a NaN loss stays NaN: divergence is still seen).
        means = jax.tree.map(lambda m: jnp.where(stepped, m, 0.0).sum() / (config.num_epochs * live), metrics)
        replay = state.replay
        if replay_rollouts:
            replay = jax.tree.map(lambda ring, fresh: jax.lax.dynamic_update_index_in_dim(ring, fresh, phase % replay_rollouts, 0),
                                  state.replay, rollout)
        new_state = PQNState(params=params, opt_state=opt_state, rollout=rollout,
                             updates=state.updates + config.num_epochs * live,
                             target_params=synced_target(values, state, params, phase + 1), replay=replay)
        return new_state, means

    def collecting(values: dict[str, Any], state: PQNState, rollout: Batch, key: jax.Array):
        nan = jnp.full((), jnp.nan, jnp.float32)
        return state.replace(rollout=rollout), {"loss": nan, "q_mean": nan, "td_abs": nan}

    def learn(state: PQNState, fresh: Batch, env_steps: jax.Array, key: jax.Array, hyper: dict[str, Any] | None = None):
        """Store this iteration's transitions at their rollout row; learn when the row is the last one."""
        row = (env_steps // n) % T
        rollout = store_row(state.rollout, fresh, row)
        # The hyperparameters are bound, not passed as operands: plain numbers stay compile-time constants.
        values = hyperparameters(config, hyper)
        learning = functools.partial(learning_phase, values, env_steps // samples)
        return jax.lax.cond(row == T - 1, learning, functools.partial(collecting, values), state, rollout, key)

    return Learner(init=init, act=act, learn=learn, q_values=q_values)


def cut_rollout(state: PQNState, env_steps: jax.Array, num_envs: int, rollout_steps: int) -> PQNState:
    """Mark the last stored transitions of a partly filled rollout as episode ends.

    The host loop restarts its episodes when a run resumes (a Gymnasium env's state is not
    saved): the next row then starts new episodes, so Q(lambda) must not chain the rows
    across the cut. The cut transitions keep their true successors and bootstrap from them.
    """
    row = (env_steps // num_envs) % rollout_steps  # the row the next transitions go to
    last = (row - 1) % rollout_steps
    ends = state.rollout.episode_end
    cut = ends.at[last].set(jnp.where(row > 0, True, ends[last]))
    return state.replace(rollout=state.rollout._replace(episode_end=cut))
