"""DQN, top to bottom: the network, the TD target, the loss, the update, the learner.

Everything here is a pure function of its arguments, so the drivers can jit it,
scan it and vmap it over seeds. The agent's state is an `AgentState` pytree; its
configuration is a frozen `DQNConfig`, closed over (static) by `make_dqn`.

    dqn = make_dqn(config, obs_shape=(4,), num_actions=2)
    state = dqn.init(key)
    action, _ = dqn.act(state.params, (), obs_batch, mask, key, epsilon)
    state, metrics = dqn.update(state, batch)

`make_dqn_learner` wraps these for the training loop (a `dqnx.protocols.Learner`): it
owns the replay buffer and decides when to train (after `learning_starts`, every
`train_freq` env steps, `gradient_steps` gradient steps each).

The vmappable hyperparameters (learning rate, gamma, tau, ...; config.VMAPPABLE) are
read from an explicit `hyper` dict when one is given (a sweep's per-seed arrays), else
from the config: the functions are built once per run and serve every sweep member.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from dqnx.agents.exploration import epsilon_at, epsilon_greedy, greedy
from dqnx.agents.networks import (QNetwork, RecurrentQNetwork, StackedQNetwork, initial_memory, make_network,
                                  with_memory_gate_bias)
from dqnx.config import DQNConfig, hyperparameters
from dqnx.protocols import Batch, Learner

__all__ = ["QNetwork", "Batch", "AgentState", "DQN", "make_dqn", "make_dqn_learner", "td_target", "q_lambda_returns",
           "td_loss", "epsilon_at", "sequence_returns",
           "categorical_projection", "categorical_target", "boltzmann"]


# --- 1. The network: Q(s, .) (agents/networks.py builds it), and acting on it -----------

@flax.struct.dataclass
class AgentState:
    params: Any
    target_params: Any
    opt_state: Any
    updates: jax.Array  # gradient steps taken so far


def boltzmann(q_values: jax.Array, key: jax.Array, temperature: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Sample a ~ softmax(Q(s, .) / temperature) per row (legal actions only); temperature 0 is greedy."""
    if mask is not None:
        q_values = jnp.where(mask, q_values, -jnp.inf)
    safe = jnp.maximum(temperature, 1e-6)
    sampled = jax.random.categorical(key, q_values / safe, axis=-1)
    return jnp.where(temperature > 0, sampled, q_values.argmax(axis=-1))


# --- 2. The target: what Q(s, a) is moved towards --------------------------------------

def bootstrap_discount(discount: float | jax.Array, terminated: jax.Array) -> jax.Array:
    """The weight of the next state's value: discount, or 0 after a terminal transition."""
    return discount * (1.0 - terminated.astype(jnp.float32))


def td_target(
    reward: jax.Array,
    terminated: jax.Array,
    next_q_target: jax.Array,
    gamma: float | jax.Array,
    next_q_online: jax.Array | None = None,
    next_mask: jax.Array | None = None,
) -> jax.Array:
    """TD target  r + gamma * (1 - terminated) * Q_target(s', a*).

    a* = argmax_a Q_target(s', a) for DQN, argmax_a Q_online(s', a) for Double DQN
    (pass `next_q_online`), over the actions legal at s' when `next_mask` is given
    (a terminal s' without legal actions still gives a finite target: r). A truncated (time-limit) transition is *not* terminated:
    it bootstraps from its true next state like any other. For an n-step return,
    `reward` is the discounted sum and `gamma` the per-transition gamma^n.

    >>> td_target(jnp.array([1.0, 1.0]), jnp.array([False, True]),
    ...           jnp.array([[2.0, 3.0], [2.0, 3.0]]), gamma=0.5)
    Array([2.5, 1. ], dtype=float32)

    Masked: action 1 (Q 3) is illegal at s', so the bootstrap takes action 0 (Q 2);
    the terminal row has no legal action at all and stays finite:

    >>> td_target(jnp.array([1.0, 1.0]), jnp.array([False, True]), jnp.array([[2.0, 3.0], [2.0, 3.0]]), gamma=0.5,
    ...           next_mask=jnp.array([[True, False], [False, False]]))
    Array([2., 1.], dtype=float32)
    """
    best = greedy_next_action(next_q_target, next_q_online, next_mask)
    next_value = jnp.take_along_axis(next_q_target, best[..., None], -1)[..., 0]
    return reward + bootstrap_discount(gamma, terminated) * next_value


def q_lambda_returns(
    reward: jax.Array,
    terminated: jax.Array,
    episode_end: jax.Array,
    next_value: jax.Array,
    gamma: float | jax.Array,
    lambda_: float | jax.Array,
) -> jax.Array:
    """Q(lambda) targets of a rollout, computed backward over its leading (time) axis.

        G_t = r_t + gamma * (1 - terminated_t) * ((1 - lambda) * v_t + lambda * G_{t+1})

    where `v_t = max_a Q(s'_t, a)` is the value of step t's true successor (`next_value`;
    after a truncation, the final observation, never the next episode's first). Where the
    rollout ends, or step t ends its episode (terminated or truncated), there is no
    `G_{t+1}` of the same episode: the return bootstraps from v_t alone. So a terminal
    stops the return, and a truncation bootstraps from its final observation. lambda = 0
    gives one-step TD targets (`td_target`), lambda = 1 the discounted rewards to the
    episode's or rollout's end plus the bootstrap there.

    Three steps, the last terminal (gamma = lambda = 0.5, every v = 2):
    G_2 = 1; G_1 = 1 + 0.5 * (0.5 * 2 + 0.5 * 1) = 1.75; G_0 = 1 + 0.5 * (1 + 0.875).

    >>> q_lambda_returns(jnp.ones(3), jnp.array([False, False, True]), jnp.array([False, False, True]),
    ...                  jnp.full(3, 2.0), gamma=0.5, lambda_=0.5)
    Array([1.9375, 1.75  , 1.    ], dtype=float32)
    """
    def backward(next_return, step):
        r, term, end, v = step
        continuation = jnp.where(end, v, (1.0 - lambda_) * v + lambda_ * next_return)
        g = r + gamma * (1.0 - term.astype(jnp.float32)) * continuation
        return g, g

    # Seeding the recursion with the last v makes the last step's continuation v itself.
    steps = (reward.astype(jnp.float32), terminated, episode_end, next_value.astype(jnp.float32))
    return jax.lax.scan(backward, next_value[-1].astype(jnp.float32), steps, reverse=True)[1]


def greedy_next_action(next_q_target: jax.Array, next_q_online: jax.Array | None,
                       next_mask: jax.Array | None = None) -> jax.Array:
    """a* of the bootstrap: the target network's argmax, or the online one's (Double DQN),
    over the legal actions of `next_mask` when given."""
    return greedy(next_q_target if next_q_online is None else next_q_online, next_mask)


def sequence_returns(reward: jax.Array, episode_end: jax.Array, valid: jax.Array, n: int,
                     gamma: float | jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """n-step returns inside replayed sequences [batch, T]: (reward sum, last step summed, gamma^steps).

    Step t sums gamma^k r_{t+k} for k = 0 .. h-1, where h stops at the first of: n steps;
    the step after an episode's end; the sequence's end; a padded (not `valid`) step. The
    target bootstraps from the successor of the last step summed (`last`), with weight
    gamma^h, or not at all when that step terminated. Padded steps themselves give
    (0, t, gamma): the loss masks them out.

    Three steps, an episode ends at step 1 (n = 2, gamma = 0.5, every reward 1): step 0 sums
    two rewards, step 1 stops at the end, step 2 at the sequence's end.

    >>> sequence_returns(jnp.ones((1, 3)), jnp.array([[False, True, False]]), jnp.ones((1, 3), bool), 2, 0.5)
    (Array([[1.5, 1. , 1. ]], dtype=float32), Array([[1, 1, 2]], dtype=int32), Array([[0.25, 0.5 , 0.5 ]], dtype=float32))
    """
    length = reward.shape[1]
    k = jnp.arange(n)
    ahead = jnp.arange(length)[:, None] + k[None, :]  # [T, n]: the steps each step's return may sum
    inside = jnp.minimum(ahead, length - 1)
    ends = episode_end[:, inside]  # [batch, T, n]
    ended_before = (jnp.cumsum(ends, axis=-1) - ends) > 0
    included = (ahead < length)[None] & valid[:, inside] & ~ended_before  # a prefix of each row
    steps = jnp.maximum(included.sum(axis=-1), 1)
    summed = jnp.sum(jnp.where(included, gamma ** k.astype(jnp.float32) * reward[:, inside], 0.0), axis=-1)
    last = (jnp.arange(length)[None, :] + steps - 1).astype(jnp.int32)
    return summed.astype(jnp.float32), last, (gamma ** steps.astype(jnp.float32)).astype(jnp.float32)


def categorical_projection(next_probs: jax.Array, reward: jax.Array, discount: jax.Array,
                           support: jax.Array) -> jax.Array:
    """C51's target: the distribution of r + discount * Z(s', a*) projected onto `support`.

    Each atom z_j moves to Tz_j = clip(r + discount * z_j, v_min, v_max) and its mass
    is split between the two support atoms around Tz_j in proportion to closeness
    (Bellemare et al. 2017, Algorithm 1). `discount` is gamma^n * (1 - terminated).

    >>> categorical_projection(jnp.array([[0.0, 1.0, 0.0]]), jnp.array([0.5]), jnp.array([1.0]),
    ...                        jnp.array([-1.0, 0.0, 1.0]))  # atom 0 -> 0.5: half on 0, half on 1
    Array([[0. , 0.5, 0.5]], dtype=float32)
    """
    v_min, v_max = support[0], support[-1]
    delta = (v_max - v_min) / (support.shape[0] - 1)
    moved = jnp.clip(reward[:, None] + discount[:, None] * support[None, :], v_min, v_max)
    position = (moved - v_min) / delta  # fractional index of each moved atom
    lower = jnp.floor(position)
    upper_weight = position - lower  # an exact hit (position integral) keeps all mass on `lower`
    lower_index = lower.astype(jnp.int32)
    upper_index = jnp.minimum(lower_index + 1, support.shape[0] - 1)
    atoms = jnp.arange(support.shape[0])
    to_lower = (lower_index[..., None] == atoms) * (next_probs * (1.0 - upper_weight))[..., None]
    to_upper = (upper_index[..., None] == atoms) * (next_probs * upper_weight)[..., None]
    return (to_lower + to_upper).sum(axis=1)


def categorical_target(next_logits: jax.Array, reward: jax.Array, discount: jax.Array, support: jax.Array,
                       next_q_online: jax.Array | None = None, next_mask: jax.Array | None = None) -> jax.Array:
    """C51's target distribution from the target network's next-state logits [batch, actions, atoms]:
    a* maximises the expected value sum_j p_j z_j (or Q_online for Double DQN) over the actions
    legal at s', and Z(s', a*) is projected (`categorical_projection`; `discount` is
    gamma^n * (1 - terminated)).

    Action 1's mass sits on the top atom (value 1) but it is illegal at s', so the
    target takes action 0's distribution (all on atom 0, value -1):

    >>> logits = jnp.array([[[30.0, 0.0, 0.0], [0.0, 0.0, 30.0]]])
    >>> categorical_target(logits, jnp.array([0.0]), jnp.array([1.0]), jnp.array([-1.0, 0.0, 1.0]),
    ...                    next_mask=jnp.array([[True, False]])).round(3)
    Array([[1., 0., 0.]], dtype=float32)
    """
    next_probs = jax.nn.softmax(next_logits, axis=-1)
    best = greedy_next_action((next_probs * support).sum(-1), next_q_online, next_mask)
    rows = jnp.arange(next_probs.shape[0])
    return categorical_projection(next_probs[rows, best], reward, discount, support)


# --- 3. The loss: how far Q(s, a) is from its target -----------------------------------

def elementwise_loss(error: jax.Array, kind: str) -> jax.Array:
    if kind == "huber":
        return optax.huber_loss(error, delta=1.0)
    return 0.5 * error**2


def td_loss(q_taken: jax.Array, target: jax.Array, kind: str) -> jax.Array:
    """Mean TD loss. 'huber': smooth L1 with delta 1; 'mse': half squared error.

    >>> td_loss(jnp.array([0.0, 0.0]), jnp.array([0.5, 3.0]), "huber")  # (0.125 + 2.5) / 2
    Array(1.3125, dtype=float32)
    """
    return elementwise_loss(q_taken - target, kind).mean()


def weighted_mean(per_sample: jax.Array, abs_error: jax.Array, weight: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """(loss, mean |TD error|) over the batch; `weight` scales each sample (PER's importance
    weights and/or a 0/1 mask of usable samples: means over the usable ones)."""
    if weight is None:
        return per_sample.mean(), abs_error.mean()
    used = jnp.maximum((weight > 0).sum(), 1)
    return (weight * per_sample).sum() / used, jnp.where(weight > 0, abs_error, 0.0).sum() / used


# --- 4. The update: one gradient step, then the target network's sync ------------------

def make_optimizer(config: DQNConfig, total_updates: int, hyper: dict[str, Any] | None = None) -> optax.GradientTransformation:
    """The chosen optimizer (with the learning-rate schedule and gradient clipping) on the flattened parameters.

    `flatten` (optax.flatten's, faster in a loop) runs the optimizer on one vector instead
    of one array per layer: the same arithmetic in a few fused operations, which on a CPU
    cut a small network's update time by about a quarter (measured: 165 -> 124 us for an
    MLP 64-64).
    `hyper`: the learning rate and the optimizer's constants, if not the config's.
    """
    return flatten(_optimizer(config, total_updates, hyperparameters(config, hyper)))


def flatten(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """optax.flatten(inner), the same state and the same bits, with the vector written leaf by leaf.

    Hand-written because optax.flatten joins the leaves with one `jnp.concatenate`, which
    XLA's CPU backend fuses with the gradient's producers into a kernel that, inside the
    compiled training loop, cost more than the rest of the optimizer: for the MinAtar
    network (132k parameters) about a third of a DQN iteration's time (jax.profiler, on the
    DQN Breakout-MinAtar preset). Writing each leaf into its slice of a zero vector
    (dynamic_update_slice) moves the same numbers in a few microseconds.
    """
    inner = optax.with_extra_args_support(inner)

    def to_vector(tree: Any) -> jax.Array:
        leaves = jax.tree.leaves(tree)
        vector = jnp.zeros(sum(leaf.size for leaf in leaves), jnp.result_type(*leaves))
        offset = 0
        for leaf in leaves:
            vector = jax.lax.dynamic_update_slice(vector, leaf.reshape(-1).astype(vector.dtype), (offset,))
            offset += leaf.size
        return vector

    def to_tree(like: Any, vector: jax.Array) -> Any:
        leaves, treedef = jax.tree.flatten(like)
        offsets = [0]
        for leaf in leaves:
            offsets.append(offsets[-1] + leaf.size)
        return jax.tree.unflatten(treedef, [vector[start:end].reshape(leaf.shape)
                                            for leaf, start, end in zip(leaves, offsets, offsets[1:])])

    def init(params: Any) -> Any:
        return inner.init(to_vector(params))

    def update(updates: Any, state: Any, params: Any = None, **extra_args: Any) -> tuple[Any, Any]:
        changes, state = inner.update(to_vector(updates), state, None if params is None else to_vector(params),
                                      **extra_args)
        return to_tree(updates, changes), state

    return optax.GradientTransformationExtraArgs(init, update)


def learning_rate_schedule(config: DQNConfig, total_updates: int, values: dict[str, Any]) -> Any:
    """The learning rate, a number or a function of the gradient-step count: a linear or
    cosine decay from learning_rate to lr_end over `total_updates` steps, then lr_end.

    >>> schedule = learning_rate_schedule(DQNConfig(lr_schedule="linear", lr_end=1e-4), 10, {"learning_rate": 1e-3})
    >>> [round(float(schedule(k)), 5) for k in (0, 5, 10, 20)]
    [0.001, 0.00055, 0.0001, 0.0001]
    """
    if config.lr_schedule == "linear":
        return optax.linear_schedule(values["learning_rate"], config.lr_end, max(total_updates, 1))
    if config.lr_schedule == "cosine":
        return optax.cosine_decay_schedule(values["learning_rate"], max(total_updates, 1),
                                           alpha=config.lr_end / values["learning_rate"])
    return values["learning_rate"]


def _optimizer(config: DQNConfig, total_updates: int, values: dict[str, Any]) -> optax.GradientTransformation:
    lr = learning_rate_schedule(config, total_updates, values)
    momentum = config.momentum or None
    if config.optimizer == "sgd":
        base = optax.sgd(lr, momentum=momentum, nesterov=config.nesterov)
    elif config.optimizer == "rmsprop":
        base = optax.rmsprop(lr, decay=values["rmsprop_decay"], eps=values["adam_eps"], centered=config.rmsprop_centered,
                             momentum=momentum, nesterov=config.nesterov)
    else:
        base = optax.adam(lr, b1=values["adam_b1"], b2=values["adam_b2"], eps=values["adam_eps"])
    if config.max_grad_norm > 0:
        return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), base)
    return base


def total_gradient_updates(config: DQNConfig) -> int:
    """Gradient steps the learning-rate schedule spans: a full run's, or those of its first
    lr_schedule_steps env steps (a run extended on resume keeps its original schedule)."""
    phases = max((config.lr_schedule_steps or config.total_steps) - config.learning_starts, 0) // config.train_freq
    return phases * config.gradient_steps


def sync_target(params: Any, target_params: Any, updates: jax.Array, values: dict[str, Any]) -> Any:
    """Every `target_update_period` gradient steps: target <- tau * online + (1 - tau) * target
    (tau = 1: a hard copy)."""
    sync = updates % values["target_update_period"] == 0
    tau = values["tau"]
    return jax.tree.map(lambda online, target: jnp.where(sync, tau * online + (1.0 - tau) * target, target),
                        params, target_params)


class DQN(NamedTuple):
    """The pure functions of one configured DQN agent."""

    config: DQNConfig
    network: nn.Module
    init: Callable[[jax.Array], AgentState]
    q_values: Callable[[Any, jax.Array], jax.Array]
    act: Callable[..., tuple[jax.Array, Any]]
    update: Callable[..., tuple[AgentState, dict[str, jax.Array]]]
    init_memory: Callable[[int], Any] | None = None  # recurrent: the memory of `batch` episodes' starts
    recurrent_q: Callable[..., tuple[jax.Array, Any]] | None = None  # recurrent: (params, memory, obs) -> (Q, memory)
    unroll: Callable[..., tuple[Any, jax.Array, Any]] | None = None  # recurrent: Q over sequences (see make_dqn)
    sequence_loss: Callable[..., tuple[jax.Array, dict]] | None = None  # recurrent: the loss of replayed sequences
    sequence_steps: int = 0  # recurrent: steps of each replayed sequence (burn-in included)


def make_dqn(config: DQNConfig, obs_shape: tuple[int, ...], num_actions: int, obs_dtype: Any = jnp.float32,
             image_layout: str | None = None) -> DQN:
    """The network, acting, the loss and the update of one configured DQN, as pure functions.

    With `config.memory` 'gru' or 'lstm' the network is recurrent (RecurrentQNetwork): acting
    carries its memory in the act state, and the update learns from replayed sequences
    (`recurrent_loss_fn`: burn-in, resets at episode starts, padding masked).
    """
    atoms = config.num_atoms if config.distributional else 1
    stacking = config.frame_stack > 1  # frame stacking: a memory of the last K-1 observations (StackedQNetwork)
    recurrent = config.memory != "none" or stacking
    # A stack's memory is exact, not a stale hidden state: no burn-in; sequences just long enough for n-step returns.
    burn_in, sequence_length = (0, config.n_step) if stacking else (config.burn_in, config.sequence_length)
    if stacking:
        network: nn.Module = StackedQNetwork(
            num_actions=num_actions, hidden_sizes=tuple(config.hidden_sizes), activation=config.activation,
            layer_norm=config.layer_norm, dueling=config.dueling)
    elif recurrent:
        network = RecurrentQNetwork(
            num_actions=num_actions, hidden_sizes=tuple(config.hidden_sizes), memory=config.memory,
            memory_size=config.memory_size, activation=config.activation, layer_norm=config.layer_norm,
            dueling=config.dueling)
    else:
        network = make_network(
            config.network, num_actions, tuple(config.hidden_sizes), obs_shape, image_layout,
            activation=config.activation, layer_norm=config.layer_norm, conv_layer_norm=config.conv_layer_norm,
            q_head=config.q_head,
            head_sizes=tuple(config.head_sizes), dueling=config.dueling, noisy=config.noisy,
            noisy_sigma0=config.noisy_sigma0, num_atoms=atoms,
        )
    support = jnp.linspace(config.v_min, config.v_max, atoms)  # C51's atoms (unused otherwise)
    total_updates = total_gradient_updates(config)

    def init_memory(batch: int) -> Any:
        """The recurrent state of `batch` episodes at their start (the act state of a recurrent DQN)."""
        if stacking:
            return initial_memory("stack", batch, config.frame_stack, obs_shape)
        return initial_memory(config.memory, batch, config.memory_size)

    def init(key: jax.Array) -> AgentState:
        dummy = jnp.zeros((1, *obs_shape), obs_dtype)
        params = network.init(key, init_memory(1), dummy) if recurrent else network.init(key, dummy)
        if config.memory != "none":
            params = with_memory_gate_bias(params, config.memory, config.memory_gate_bias)
        return AgentState(
            params=params,
            target_params=params,
            opt_state=make_optimizer(config, total_updates).init(params),
            updates=jnp.zeros((), jnp.int32),
        )

    # 1. the network
    def outputs(params: Any, obs: jax.Array, noise_key: jax.Array | None = None) -> jax.Array:
        """Q(s, .), or C51 logits [batch, actions, atoms]; noisy layers draw noise only given a key."""
        if noise_key is None:
            return network.apply(params, obs)
        return network.apply(params, obs, noise=True, rngs={"noise": noise_key})

    def expected(out: jax.Array) -> jax.Array:
        return (jax.nn.softmax(out, axis=-1) * support).sum(-1) if config.distributional else out

    def recurrent_q(params: Any, memory: Any, obs: jax.Array) -> tuple[jax.Array, Any]:
        """(Q(s, .), memory after s): one step of the recurrent network from `memory`."""
        memory, q = network.apply(params, memory, obs)
        return q, memory

    def q_values(params: Any, obs: jax.Array) -> jax.Array:
        """Q(s, .) of the mean network (noise off): what the greedy policy maximises.
        Recurrent: Q at an episode's first step (from the initial memory)."""
        if recurrent:
            return recurrent_q(params, init_memory(obs.shape[0]), obs)[0]
        return expected(outputs(params, obs))

    def act(params: Any, act_state: Any, obs: jax.Array, mask: jax.Array | None, key: jax.Array, epsilon: jax.Array,
            hyper: dict[str, Any] | None = None) -> tuple[jax.Array, Any]:
        """Exploring actions for a batch of observations: epsilon-greedy, or Boltzmann with
        temperature * epsilon; a noisy network acts on a fresh noise sample. Feed-forward:
        `act_state` passes through unchanged; recurrent: it is the memory, stepped on `obs`."""
        if recurrent:
            q, act_state = recurrent_q(params, act_state, obs)
        elif config.noisy:
            q = expected(outputs(params, obs, jax.random.fold_in(key, 1)))
        else:
            q = q_values(params, obs)
        if config.exploration == "boltzmann":
            return boltzmann(q, key, hyperparameters(config, hyper)["temperature"] * epsilon, mask), act_state
        return epsilon_greedy(q, key, epsilon, mask), act_state

    # 2.-3. the target and the loss
    def loss_fn(params: Any, target_params: Any, batch: Batch, key: jax.Array, discount: jax.Array,
                weight: jax.Array | None):
        keys = jax.random.split(key, 3) if config.noisy else (None, None, None)
        rows = jnp.arange(batch.action.shape[0])
        action = batch.action.astype(jnp.int32)
        out = outputs(params, batch.obs, keys[0])[rows, action]  # Q(s, a), or its logits [batch, atoms]
        next_target = outputs(target_params, batch.next_obs, keys[1])
        next_online = expected(outputs(params, batch.next_obs, keys[2])) if config.double_dqn else None
        if config.distributional:
            target_probs = jax.lax.stop_gradient(categorical_target(
                next_target, batch.reward, bootstrap_discount(discount, batch.terminated), support, next_online,
                batch.next_mask))
            per_sample = -(target_probs * jax.nn.log_softmax(out, axis=-1)).sum(-1)  # cross-entropy
            q_taken, target = expected(out), (target_probs * support).sum(-1)
            priority = per_sample  # Rainbow's priority: the distributional loss
        else:
            q_taken = out
            target = jax.lax.stop_gradient(td_target(batch.reward, batch.terminated, next_target, discount, next_online,
                                                     batch.next_mask))
            per_sample = elementwise_loss(q_taken - target, config.loss)
            priority = jnp.abs(q_taken - target)
        loss, td_abs = weighted_mean(per_sample, jnp.abs(q_taken - target), weight)
        return loss, {"q_mean": q_taken.mean(), "td_abs": td_abs, "priority": priority}

    # 2.-3. for a recurrent network: the target and the loss over replayed sequences
    def unroll(params: Any, memory: Any, obs: jax.Array, first: jax.Array) -> tuple[Any, jax.Array, Any]:
        """Run the network over sequences obs [batch, T, ...] from `memory`, resetting it to the
        initial memory at `first` steps: (final memory, Q [batch, T, actions], memory after each step [T, batch, ...])."""
        def step(memory, inputs):
            obs_t, first_t = inputs
            memory = jax.tree.map(lambda m, zero: jnp.where(first_t.reshape((-1,) + (1,) * (m.ndim - 1)), zero, m),
                                  memory, init_memory(first_t.shape[0]))
            memory, q = network.apply(params, memory, obs_t)
            return memory, (q, memory)

        memory, (q, after) = jax.lax.scan(step, memory, (jnp.swapaxes(obs, 0, 1), jnp.swapaxes(first, 0, 1)))
        return memory, jnp.swapaxes(q, 0, 1), after

    def unroll_with_next(params: Any, memory: Any, seq: Any) -> tuple[jax.Array, jax.Array]:
        """(Q(s_t, .), Q(s'_t, .)) [batch, T, actions]: Q of each step's true successor s'_t (also after
        a truncation) is one more step from the memory after step t, before any reset."""
        _, q, after = unroll(params, memory, seq.obs, seq.first)
        steps, batch = seq.obs.shape[1], seq.obs.shape[0]
        flat = lambda x: x.reshape(steps * batch, *x.shape[2:])  # noqa: E731  [T, batch, ...] -> [T * batch, ...]
        _, next_q = network.apply(params, jax.tree.map(flat, after), flat(jnp.swapaxes(seq.next_obs, 0, 1)))
        return q, jnp.swapaxes(next_q.reshape(steps, batch, -1), 0, 1)

    def recurrent_loss_fn(params: Any, target_params: Any, seq: Any, key: jax.Array, gamma: jax.Array,
                          weight: jax.Array | None):
        """The TD loss of replayed sequences (replay/sequences.py), R2D2's way: both networks
        unroll from the stored start state; the first `burn_in` steps only warm the memory up
        (no loss, and stop_gradient: no gradient flows through them); n-step targets stay
        inside each sequence and episode (`sequence_returns`); padded steps are masked out.
        Priority per sequence: 0.9 max + 0.1 mean |TD error| (R2D2's eta = 0.9)."""
        burn = burn_in
        memory = target_memory = seq.start_state
        if burn:
            memory = jax.lax.stop_gradient(unroll(params, memory, seq.obs[:, :burn], seq.first[:, :burn])[0])
            target_memory = unroll(target_params, target_memory, seq.obs[:, :burn], seq.first[:, :burn])[0]
        train = seq._replace(start_state=None)
        train = jax.tree.map(lambda x: x[:, burn:], train)
        q, next_online = unroll_with_next(params, memory, train)
        _, next_target = unroll_with_next(target_params, target_memory, train)
        reward, last, discount = sequence_returns(train.reward, train.episode_end, train.valid, config.n_step, gamma)
        rows = jnp.arange(last.shape[0])[:, None]
        at_last = lambda x: None if x is None else x[rows, last]  # noqa: E731
        target = jax.lax.stop_gradient(td_target(
            reward, at_last(train.terminated), at_last(next_target), discount,
            at_last(next_online) if config.double_dqn else None, at_last(train.next_mask)))
        q_taken = jnp.take_along_axis(q, train.action.astype(jnp.int32)[..., None], -1)[..., 0]
        error = q_taken - target
        valid = train.valid.astype(jnp.float32)
        scale = valid if weight is None else valid * weight[:, None]
        loss, td_abs = weighted_mean(elementwise_loss(error, config.loss).ravel(), jnp.abs(error).ravel(), scale.ravel())
        abs_error = jnp.where(train.valid, jnp.abs(error), 0.0)
        priority = 0.9 * abs_error.max(axis=1) + 0.1 * abs_error.sum(axis=1) / jnp.maximum(valid.sum(axis=1), 1.0)
        q_mean = (q_taken * valid).sum() / jnp.maximum(valid.sum(), 1.0)
        return loss, {"q_mean": q_mean, "td_abs": td_abs, "priority": priority}

    # 4. the update
    def update(state: AgentState, batch: Batch, key: jax.Array | None = None, discount: jax.Array | None = None,
               weight: jax.Array | None = None, hyper: dict[str, Any] | None = None
               ) -> tuple[AgentState, dict[str, jax.Array]]:
        """One gradient step on `batch`, then the target sync when its period comes.

        `discount` is each sample's bootstrap weight (gamma^n for n-step returns, 0 for
        Monte-Carlo targets; default gamma); `weight` scales each sample's loss (PER's
        importance weights, 0 for unusable samples; default 1); `key` feeds noisy layers.
        metrics["priority"] is per sample: |TD error| (C51: the cross-entropy).
        """
        values = hyperparameters(config, hyper)
        if discount is None and not recurrent:
            discount = jnp.full(batch.reward.shape, values["gamma"], jnp.float32)
        if key is None:
            key = jax.random.PRNGKey(0)
        if recurrent:  # `batch` holds sequences; n-step discounts are computed inside them
            (loss, aux), grads = jax.value_and_grad(recurrent_loss_fn, has_aux=True)(
                state.params, state.target_params, batch, key, values["gamma"], weight)
        else:
            (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                state.params, state.target_params, batch, key, discount, weight)
        changes, opt_state = make_optimizer(config, total_updates, values).update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, changes)
        updates = state.updates + 1
        target_params = sync_target(params, state.target_params, updates, values)
        new_state = AgentState(params=params, target_params=target_params, opt_state=opt_state, updates=updates)
        return new_state, {"loss": loss, **aux}

    return DQN(config=config, network=network, init=init, q_values=q_values, act=act, update=update,
               init_memory=init_memory if recurrent else None, recurrent_q=recurrent_q if recurrent else None,
               unroll=unroll if recurrent else None, sequence_loss=recurrent_loss_fn if recurrent else None,
               sequence_steps=burn_in + sequence_length if recurrent else 0)


# --- 5. The learner: replay and the training cadence around `update` -------------------

@flax.struct.dataclass
class DQNLearnerState:
    agent: AgentState
    replay: Any  # dqnx.replay.uniform.ReplayBuffer (or frames.FrameReplay)
    priorities: Any = None  # dqnx.replay.prioritized.Priorities with prioritized replay

    @property
    def params(self) -> Any:
        return self.agent.params

    @property
    def updates(self) -> jax.Array:
        return self.agent.updates


def make_dqn_learner(config: DQNConfig, obs_shape: tuple[int, ...], num_actions: int, obs_dtype: Any = "float32",
                     frame_stack: int = 0, image_layout: str | None = None, max_episode_steps: int | None = None,
                     masked: bool = False):
    """DQN as a `dqnx.agents.Learner`: replay storage and the training cadence around `update`.

    `masked`: transitions carry the next state's legal-action mask, which replay stores
    and the bootstrap maximises over.

    Stacked-frame observations (Atari, `frame_stack` > 0) use replay that stores each
    frame once (replay/frames.py); others a uniform ring of whole transitions, which
    n-step and Monte-Carlo targets read ahead in (replay/nstep.py) and prioritized
    replay samples by priority (replay/prioritized.py).
    """
    from dqnx.errors import UsageError
    from dqnx.replay import frames, nstep, prioritized, sequences, uniform

    obs_dtype = jnp.dtype(obs_dtype)
    dqn = make_dqn(config, obs_shape, num_actions, obs_dtype, image_layout)
    n = config.num_envs
    capacity = config.buffer_size if config.replay else n
    recurrent = dqn.recurrent_q is not None  # memory = gru | lstm, or frame_stack > 1
    replay_module = sequences if recurrent else frames if (frame_stack and config.replay) else uniform
    if recurrent and frame_stack:
        raise UsageError("these observations are stacked frames already (Atari's 4); leave memory=none and frame_stack=0")
    monte_carlo = config.target == "monte_carlo"
    multi_step = config.n_step > 1 or monte_carlo
    if replay_module is frames and (multi_step or config.prioritized):
        raise UsageError("stacked-frame replay supports neither n_step > 1, prioritized nor target=monte_carlo; leave them at their defaults")
    if monte_carlo and not max_episode_steps:
        raise UsageError("target=monte_carlo needs an environment with a time limit (max_episode_steps)")
    horizon = max_episode_steps if monte_carlo else config.n_step

    def init(key: jax.Array) -> DQNLearnerState:
        if replay_module is frames:
            replay = frames.init_frame_replay(capacity, n, obs_shape, mask_actions=num_actions if masked else None)
        elif recurrent:
            one_state = jax.tree.map(lambda x: x[0], dqn.init_memory(1))
            replay = sequences.init_sequence_replay(capacity, obs_shape, obs_dtype, one_state,
                                                    mask_actions=num_actions if masked else None)
        else:
            replay = uniform.init_replay(capacity, obs_shape, obs_dtype, episode_ends=multi_step,
                                         mask_actions=num_actions if masked else None)
        priorities = prioritized.init_priorities(capacity) if config.prioritized else None
        return DQNLearnerState(agent=dqn.init(key), replay=replay, priorities=priorities)

    def replay_batch(values: dict[str, Any], replay: Any, priorities: Any, key: jax.Array, beta: jax.Array):
        """(batch, slots, discount, weight) of one gradient step's sample."""
        if replay_module is frames:
            return frames.sample(replay, key, config.batch_size), None, None, None
        if config.prioritized:
            index, weight = prioritized.sample(priorities, replay.size, key, config.batch_size, values["per_alpha"], beta)
        else:
            index, weight = uniform.sample_index(replay, key, config.batch_size), None
        if recurrent:  # sequences of burn_in + sequence_length steps from the sampled start slots
            return sequences.sample_sequences(replay, index, dqn.sequence_steps, n), index, None, weight
        if not multi_step:
            return jax.tree.map(lambda store: store[index], replay.storage)._replace(episode_end=None), index, None, weight
        ahead = nstep.multi_step(replay, index, horizon, n, values["gamma"])
        batch = Batch(obs=ahead.obs, action=ahead.action, reward=ahead.reward, next_obs=ahead.next_obs,
                      terminated=ahead.terminated, next_mask=ahead.next_mask)
        if monte_carlo:  # the observed return alone, and only of episodes that have ended
            usable = ahead.complete.astype(jnp.float32)
            return batch, index, jnp.zeros_like(ahead.discount), usable if weight is None else weight * usable
        return batch, index, ahead.discount, weight

    def train_phase(values: dict[str, Any], agent: AgentState, replay: Any, priorities: Any, fresh: Batch, key: jax.Array,
                    beta: jax.Array):
        def one_step(carry, step_key):
            agent, priorities = carry
            if config.replay:
                batch, index, discount, weight = replay_batch(values, replay, priorities, step_key, beta)
            else:
                batch, index, discount, weight = fresh._replace(episode_end=None), None, None, None
            agent, metrics = dqn.update(agent, batch, jax.random.fold_in(step_key, 1), discount, weight, values)
            priority = metrics.pop("priority")
            if config.prioritized:
                keep = weight > 0 if monte_carlo else None  # unfinished episodes keep their priority
                priorities = prioritized.update(priorities, index, priority, values["per_eps"], keep)
            return (agent, priorities), metrics

        (agent, priorities), metrics = jax.lax.scan(
            one_step, (agent, priorities), jax.random.split(key, config.gradient_steps))
        return agent, priorities, jax.tree.map(jnp.mean, metrics)

    def skip_phase(agent, replay, priorities, fresh, key, beta):
        nan = jnp.full((), jnp.nan, jnp.float32)
        return agent, priorities, {"loss": nan, "q_mean": nan, "td_abs": nan}

    def learn(state: DQNLearnerState, fresh: Batch, env_steps: jax.Array, key: jax.Array,
              hyper: dict[str, Any] | None = None):
        """Store this iteration's transitions; train when the cadence says so (nan metrics otherwise)."""
        values = hyperparameters(config, hyper)
        priorities = state.priorities
        if config.prioritized:
            priorities = prioritized.add(priorities, state.replay.position, n)
        replay = replay_module.add(state.replay, fresh)
        after = env_steps + n
        # PER's importance-sampling exponent, annealed linearly from per_beta to 1 over the run.
        # (Without PER a constant: total_steps then stays out of the program, so runs of other lengths share its compilation.)
        beta = (values["per_beta"] + (1.0 - values["per_beta"]) * jnp.minimum(after / config.total_steps, 1.0)
                if config.prioritized else jnp.ones((), jnp.float32))
        do_train = (after >= config.learning_starts) & (after // config.train_freq > env_steps // config.train_freq)
        # The hyperparameters are bound, not passed as operands: plain numbers stay compile-time constants.
        agent, priorities, metrics = jax.lax.cond(
            do_train, functools.partial(train_phase, values), skip_phase, state.agent, replay, priorities, fresh, key, beta)
        return DQNLearnerState(agent=agent, replay=replay, priorities=priorities), metrics

    if recurrent:
        return Learner(init=init, act=dqn.act, learn=learn, q_values=dqn.q_values, init_act_state=dqn.init_memory,
                       recurrent_q=dqn.recurrent_q)
    return Learner(init=init, act=dqn.act, learn=learn, q_values=dqn.q_values)
