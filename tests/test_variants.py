"""Tier 1: the DQN family (n-step, PER, C51, dueling, noisy, network shapes, Monte-Carlo
targets, Boltzmann, optimizers) against values computed by hand."""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dqnx.agents import Batch, make_learner
from dqnx.agents.dqn import boltzmann, categorical_projection, make_dqn, make_dqn_learner
from dqnx.agents.exploration import evaluation_action
from dqnx.agents.networks import NoisyDense, dueling_combine, make_network
from dqnx.config import DQNConfig
from dqnx.errors import UsageError
from dqnx.replay import nstep, prioritized, uniform

# --- n-step and Monte-Carlo returns ----------------------------------------------------


def _ring(rewards, terminated, truncated, capacity=16, num_envs=1):
    """A replay ring holding transitions with obs = index, next_obs = index + 0.5."""
    buffer = uniform.init_replay(capacity, (1,), episode_ends=True)
    count = len(rewards)
    for start in range(0, count, num_envs):
        idx = np.arange(start, start + num_envs)
        term, trunc = np.asarray(terminated)[idx], np.asarray(truncated)[idx]
        buffer = uniform.add(buffer, Batch(
            obs=jnp.asarray(idx, jnp.float32)[:, None], action=jnp.zeros(num_envs, jnp.int32),
            reward=jnp.asarray(np.asarray(rewards)[idx], jnp.float32),
            next_obs=jnp.asarray(idx + 0.5, jnp.float32)[:, None],
            terminated=jnp.asarray(term), episode_end=jnp.asarray(term | trunc)))
    return buffer


def test_n_step_returns_stop_at_terminal_and_truncation():
    # Transitions 0..5 of one env: 2 is truncated (time limit), 4 terminated, 5 the newest.
    rewards = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    terminated = np.array([0, 0, 0, 0, 1, 0], bool)
    truncated = np.array([0, 0, 1, 0, 0, 0], bool)
    out = nstep.multi_step(_ring(rewards, terminated, truncated), jnp.arange(6), horizon=3, num_envs=1, gamma=0.5)
    # 0: r0 + .5 r1 + .25 r2, then the truncation: bootstrap from 2's true successor with .5^3
    # 1: r1 + .5 r2, truncation after 2 steps;  2: r2 alone, truncated
    # 3: r3 + .5 r4, terminal: no bootstrap;   4: r4, terminal;   5: r5, newest data: bootstrap .5
    np.testing.assert_allclose(out.reward, [2.75, 3.5, 3.0, 6.5, 5.0, 6.0])
    np.testing.assert_array_equal(out.steps, [3, 2, 1, 2, 1, 1])
    np.testing.assert_allclose(out.discount, [0.125, 0.25, 0.5, 0.25, 0.5, 0.5])
    np.testing.assert_array_equal(out.terminated, [False, False, False, True, True, False])
    np.testing.assert_allclose(out.next_obs[:, 0], [2.5, 2.5, 2.5, 4.5, 4.5, 5.5])
    np.testing.assert_array_equal(out.complete, [True, True, True, True, True, False])


def test_n_step_follows_its_own_env_and_wraps_the_ring():
    # Two envs interleaved (slot = 2 * iteration + env) in a ring of 6 that has wrapped:
    # 10 transitions written, so slots hold transitions 6, 7, 8, 9, 4, 5.
    rewards = [float(i) for i in range(10)]
    none = np.zeros(10, bool)
    buffer = _ring(rewards, none, none, capacity=6, num_envs=2)
    assert int(buffer.position) == 4
    # Slot 4 holds transition 4 (env 0): its env continues with 6 (slot 0) and 8 (slot 2).
    out = nstep.multi_step(buffer, jnp.array([4, 5, 2, 3]), horizon=3, num_envs=2, gamma=0.5)
    np.testing.assert_allclose(out.reward, [4 + 0.5 * 6 + 0.25 * 8, 5 + 0.5 * 7 + 0.25 * 9, 8, 9])
    np.testing.assert_array_equal(out.steps, [3, 3, 1, 1])  # 8 and 9 are their env's newest
    np.testing.assert_allclose(out.next_obs[:, 0], [8.5, 9.5, 8.5, 9.5])


def test_monte_carlo_return_is_the_discounted_sum_to_the_episode_end():
    rewards = [1.0, 1.0, 1.0, 2.0, 2.0]
    terminated = np.array([0, 0, 1, 0, 0], bool)
    out = nstep.multi_step(_ring(rewards, terminated, np.zeros(5, bool)), jnp.arange(5), horizon=50,
                           num_envs=1, gamma=0.9)
    np.testing.assert_allclose(out.reward[:3], [1 + 0.9 + 0.81, 1.9, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(out.complete, [True, True, True, False, False])  # 3, 4: episode still running


def test_update_bootstraps_with_the_per_sample_discount():
    """The n-step update's TD error is |Q(s,a) - (R + discount (1 - done) max Q_target(s'))| by hand."""
    cfg = DQNConfig(hidden_sizes=(8,))
    dqn = make_dqn(cfg, obs_shape=(3,), num_actions=2)
    state = dqn.init(jax.random.PRNGKey(0))
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    batch = Batch(obs=jax.random.normal(keys[0], (4, 3)), action=jnp.array([0, 1, 0, 1]),
                  reward=jnp.array([1.0, 2.0, 3.0, 4.0]), next_obs=jax.random.normal(keys[1], (4, 3)),
                  terminated=jnp.array([False, True, False, False]))
    discount = jnp.array([0.9**3, 0.9**2, 0.0, 0.9])
    q = np.asarray(dqn.q_values(state.params, batch.obs))[np.arange(4), [0, 1, 0, 1]]
    next_q = np.asarray(dqn.q_values(state.target_params, batch.next_obs)).max(1)
    target = np.array([1 + 0.729 * next_q[0], 2.0, 3.0, 4 + 0.9 * next_q[3]])
    _, metrics = dqn.update(state, batch, discount=discount)
    np.testing.assert_allclose(metrics["priority"], np.abs(q - target), rtol=1e-5)


# --- prioritized replay ----------------------------------------------------------------


def test_per_stratified_sampling_follows_priorities_exactly():
    priorities = prioritized.Priorities(priority=jnp.array([1.0, 2.0, 3.0, 4.0, 0.0, 0.0]), max_priority=jnp.array(4.0))
    for seed in range(3):
        index, _ = prioritized.sample(priorities, jnp.array(4), jax.random.PRNGKey(seed), 10, alpha=1.0, beta=jnp.array(1.0))
        # P = 0.1, 0.2, 0.3, 0.4: ten strata of the total mass fall 1, 2, 3, 4 times on the slots
        np.testing.assert_array_equal(np.bincount(np.asarray(index), minlength=6), [1, 2, 3, 4, 0, 0])


def test_per_sampling_proportions_with_alpha():
    priorities = prioritized.Priorities(priority=jnp.array([1.0, 4.0, 9.0, 16.0]), max_priority=jnp.array(16.0))
    draws = jax.vmap(lambda k: prioritized.sample(priorities, jnp.array(4), k, 8, 0.5, jnp.array(0.4))[0])(
        jax.random.split(jax.random.PRNGKey(0), 4000))
    freq = np.bincount(np.asarray(draws).ravel(), minlength=4) / draws.size
    np.testing.assert_allclose(freq, np.array([1, 2, 3, 4]) / 10, atol=0.01)  # p^0.5 = 1, 2, 3, 4


def test_per_importance_weights():
    priorities = prioritized.Priorities(priority=jnp.array([1.0, 2.0, 3.0, 4.0]), max_priority=jnp.array(4.0))
    index, weight = prioritized.sample(priorities, jnp.array(4), jax.random.PRNGKey(0), 10, 1.0, jnp.array(1.0))
    # beta = 1: w_i = (N P_i)^-1 / (N P_min)^-1 = P_min / P_i
    np.testing.assert_allclose(weight, 0.1 / (np.asarray(index) + 1) * 10, rtol=1e-6)
    _, half = prioritized.sample(priorities, jnp.array(4), jax.random.PRNGKey(0), 10, 1.0, jnp.array(0.5))
    np.testing.assert_allclose(half, np.sqrt(1.0 / (np.asarray(index) + 1)), rtol=1e-6)


def test_per_priorities_come_from_td_errors_and_new_ones_get_the_max():
    p = prioritized.init_priorities(5)
    p = prioritized.add(p, jnp.array(0), 2)
    np.testing.assert_allclose(p.priority, [1, 1, 0, 0, 0])
    p = prioritized.update(p, jnp.array([0, 1]), jnp.array([-3.0, 0.5]), eps=0.01)
    np.testing.assert_allclose(p.priority, [3.01, 0.51, 0, 0, 0], rtol=1e-6)
    assert float(p.max_priority) == pytest.approx(3.01)
    p = prioritized.add(p, jnp.array(4), 2)  # wraps: slots 4 and 0
    np.testing.assert_allclose(p.priority, [3.01, 0.51, 0, 0, 3.01], rtol=1e-6)
    p = prioritized.update(p, jnp.array([1, 4]), jnp.array([9.0, 9.0]), eps=0.01, keep=jnp.array([True, False]))
    np.testing.assert_allclose(p.priority, [3.01, 9.01, 0, 0, 3.01], rtol=1e-6)


# --- C51 ---------------------------------------------------------------------------------


def test_c51_projection_by_hand():
    support = jnp.array([-1.0, 0.0, 1.0])
    probs = jnp.array([[0.2, 0.5, 0.3], [0.2, 0.5, 0.3], [0.2, 0.5, 0.3]])
    reward = jnp.array([0.5, 5.0, -0.25])
    discount = jnp.array([0.5, 0.5, 0.0])  # the third is terminal
    out = np.asarray(categorical_projection(probs, reward, discount, support))
    # 1: atoms move to 0, 0.5, 1: 0.2 -> 0; 0.5 split 0.25/0.25 between 0 and 1; 0.3 -> 1
    # 2: everything beyond v_max is clipped onto it;  3: all mass at -0.25: 1/4 to -1, 3/4 to 0
    np.testing.assert_allclose(out, [[0.0, 0.45, 0.55], [0.0, 0.0, 1.0], [0.25, 0.75, 0.0]], atol=1e-6)


def test_c51_projection_keeps_mass_and_mean():
    key = jax.random.PRNGKey(0)
    support = jnp.linspace(-10, 10, 51)
    probs = jax.nn.softmax(jax.random.normal(key, (64, 51)))
    reward = jax.random.uniform(key, (64,), minval=-1, maxval=1)
    out = categorical_projection(probs, reward, jnp.full(64, 0.5), support)
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)
    # No clipping happens here (|r + 0.5 z| <= 6), so the projection keeps the mean exactly.
    np.testing.assert_allclose((out * support).sum(-1), reward + 0.5 * (probs * support).sum(-1), atol=1e-4)


# --- networks ---------------------------------------------------------------------------


def test_dueling_aggregation_by_hand():
    np.testing.assert_allclose(dueling_combine(jnp.array([[1.0]]), jnp.array([[1.0, 2.0, 6.0]])), [[-1.0, 0.0, 4.0]])  # mean A = 3
    net = make_network("mlp", 3, (5,), (4,), dueling=True)
    obs = jax.random.normal(jax.random.PRNGKey(1), (7, 4))
    params = net.init(jax.random.PRNGKey(0), obs)["params"]
    hidden = jax.nn.relu(obs @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
    advantage = hidden @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]
    value = hidden @ params["Dense_2"]["kernel"] + params["Dense_2"]["bias"]
    expected = value + advantage - advantage.mean(1, keepdims=True)
    np.testing.assert_allclose(net.apply({"params": params}, obs), expected, rtol=1e-5, atol=1e-6)


SHAPES = ["per_action_output", "state_action", "per_action_heads"]


@pytest.mark.parametrize("q_head", SHAPES)
@pytest.mark.parametrize("extra", [{}, {"distributional": True, "num_atoms": 11}, {"noisy": True}])
def test_every_shape_gives_q_of_the_right_shape(q_head, extra):
    cfg = DQNConfig(hidden_sizes=(8, 8), q_head=q_head, layer_norm=True, activation="tanh", **extra)
    dqn = make_dqn(cfg, obs_shape=(5,), num_actions=3)
    state = dqn.init(jax.random.PRNGKey(0))
    assert dqn.q_values(state.params, jnp.ones((4, 5))).shape == (4, 3)
    assert dqn.act(state.params, (), jnp.ones((4, 5)), None, jax.random.PRNGKey(1), 0.1)[0].shape == (4,)


@pytest.mark.parametrize("q_head", SHAPES)
def test_the_nature_cnn_takes_every_head(q_head):
    cfg = DQNConfig(hidden_sizes=(16,), q_head=q_head)
    dqn = make_dqn(cfg, obs_shape=(4, 36, 36), num_actions=5, obs_dtype=jnp.uint8, image_layout="CHW")
    state = dqn.init(jax.random.PRNGKey(0))
    assert "Conv_0" in state.params["params"]
    assert dqn.q_values(state.params, jnp.zeros((2, 4, 36, 36), jnp.uint8)).shape == (2, 5)


C51 = {"distributional": True, "num_atoms": 51, "v_min": -4.0, "v_max": 4.0}  # rewards are N(0, 1) draws


@pytest.mark.parametrize("q_head, extra", [(shape, {}) for shape in SHAPES] + [
    ("per_action_output", C51), ("per_action_output", {"noisy": True})], ids=SHAPES + ["c51", "noisy"])
def test_every_shape_learns_a_contextual_bandit(q_head, extra):
    """r(s, a) = s_a, one-step episodes: Q must learn to pick the largest coordinate
    (C51's Q the mean of its distribution; a noisy network's greedy Q its mean weights')."""
    cfg = DQNConfig(hidden_sizes=(32,), q_head=q_head, learning_rate=3e-3, max_grad_norm=0, **extra)
    dqn = make_dqn(cfg, obs_shape=(3,), num_actions=3)
    state = dqn.init(jax.random.PRNGKey(0))

    def step(state, key):
        k1, k2, k3 = jax.random.split(key, 3)
        obs = jax.random.normal(k1, (64, 3))
        action = jax.random.randint(k2, (64,), 0, 3)
        batch = Batch(obs=obs, action=action, reward=obs[jnp.arange(64), action], next_obs=obs,
                      terminated=jnp.ones(64, bool))
        state, metrics = dqn.update(state, batch, key=k3)  # the key draws a noisy network's weight noise
        return state, metrics["loss"]

    state, losses = jax.lax.scan(step, state, jax.random.split(jax.random.PRNGKey(1), 1500))
    obs = jax.random.normal(jax.random.PRNGKey(2), (500, 3))
    q = dqn.q_values(state.params, obs)
    assert float(jnp.mean(jnp.abs(q - obs))) < 0.15
    assert float(jnp.mean(q.argmax(1) == obs.argmax(1))) > 0.95


def test_noisy_layer_mean_and_noise_by_hand():
    layer = NoisyDense(2, sigma0=0.5, noise=True)
    x = jnp.array([[1.0, -2.0, 0.5]])
    params = layer.init({"params": jax.random.PRNGKey(0), "noise": jax.random.PRNGKey(1)}, x)["params"]
    np.testing.assert_allclose(params["sigma_kernel"], 0.5 / math.sqrt(3))
    mean = NoisyDense(2, sigma0=0.5, noise=False).apply({"params": params}, x)
    np.testing.assert_allclose(mean, x @ params["mu_kernel"] + params["mu_bias"], rtol=1e-6)
    # The effective weights of one noise draw, read off with a zero row and the unit rows
    # (a forward pass draws one noise sample for its whole batch).
    probe = jnp.concatenate([jnp.zeros((1, 3)), jnp.eye(3)])
    out = np.asarray(layer.apply({"params": params}, probe, rngs={"noise": jax.random.PRNGKey(5)}))
    bias, kernel = out[0], out[1:] - out[0]
    e_out = (bias - np.asarray(params["mu_bias"])) / np.asarray(params["sigma_bias"])
    noise = (kernel - np.asarray(params["mu_kernel"])) / np.asarray(params["sigma_kernel"])
    e_in = noise[:, 0] / e_out[0]
    # factorised: the kernel's noise is f(e_in) f(e_out)^T with the bias's f(e_out)
    np.testing.assert_allclose(noise, np.outer(e_in, e_out), rtol=1e-4, atol=1e-5)
    assert np.all(np.abs(e_out) > 1e-3) and np.all(np.abs(e_in) > 1e-3)
    other = np.asarray(layer.apply({"params": params}, probe, rngs={"noise": jax.random.PRNGKey(6)}))
    assert not np.allclose(other, out)


def test_noisy_agent_greedy_is_the_mean_network_and_acting_explores():
    dqn = make_dqn(DQNConfig(hidden_sizes=(16,), noisy=True, noisy_sigma0=5.0), obs_shape=(4,), num_actions=4)
    state = dqn.init(jax.random.PRNGKey(0))
    obs = jax.random.normal(jax.random.PRNGKey(1), (64, 4))
    # The greedy Q is the network with every noisy layer at its mean weights (mu), computed here by hand;
    # sigma0 = 5 makes any noise in it show.
    layers = state.params["params"]
    assert sorted(layers) == ["NoisyDense_0", "NoisyDense_1"]
    mean = lambda name: (np.asarray(layers[name]["mu_kernel"]), np.asarray(layers[name]["mu_bias"]))  # noqa: E731
    (k0, b0), (k1, b1) = mean("NoisyDense_0"), mean("NoisyDense_1")
    expected = np.maximum(np.asarray(obs) @ k0 + b0, 0.0) @ k1 + b1
    np.testing.assert_allclose(dqn.q_values(state.params, obs), expected, rtol=1e-5, atol=1e-5)
    actions = [np.asarray(dqn.act(state.params, (), obs, None, jax.random.PRNGKey(k), 0.0)[0]) for k in range(2)]
    assert (actions[0] != actions[1]).any()  # epsilon 0: only the weight noise can differ


# --- exploration and evaluation ----------------------------------------------------------


def test_boltzmann_probabilities():
    q = jnp.tile(jnp.array([[0.0, math.log(2.0)]]), (20000, 1))
    picks = boltzmann(q, jax.random.PRNGKey(0), jnp.array(1.0))
    assert float(picks.mean()) == pytest.approx(2 / 3, abs=0.01)  # softmax([0, ln 2]) = (1/3, 2/3)
    hot = boltzmann(q, jax.random.PRNGKey(0), jnp.array(0.5))  # T = 1/2: odds 4 : 1
    assert float(hot.mean()) == pytest.approx(0.8, abs=0.01)
    np.testing.assert_array_equal(boltzmann(q, jax.random.PRNGKey(0), jnp.array(0.0)), 1)


def test_boltzmann_agent_anneals_temperature_with_epsilon():
    dqn = make_dqn(DQNConfig(hidden_sizes=(4,), exploration="boltzmann", temperature=1e6), obs_shape=(2,), num_actions=2)
    state = dqn.init(jax.random.PRNGKey(0))
    obs = jnp.ones((4000, 2))
    greedy = dqn.q_values(state.params, obs).argmax(1)
    assert 0.45 < float(jnp.mean(dqn.act(state.params, (), obs, None, jax.random.PRNGKey(1), 1.0)[0])) < 0.55  # T huge: uniform
    np.testing.assert_array_equal(dqn.act(state.params, (), obs, None, jax.random.PRNGKey(1), 0.0)[0], greedy)


def test_stochastic_evaluation_policy():
    class Fixed:
        q_values = staticmethod(lambda params, obs: jnp.tile(jnp.array([[0.0, math.log(3.0)]]), (obs.shape[0], 1)))
        recurrent_q = None  # a feed-forward Learner (evaluation_action reads it since the memory commit 5be7b62)

    obs = jnp.zeros((20000, 1))
    greedy = evaluation_action(DQNConfig(), Fixed, None, obs, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(greedy, 1)
    soft = evaluation_action(DQNConfig(eval_temperature=1.0), Fixed, None, obs, jax.random.PRNGKey(0))
    assert float(soft.mean()) == pytest.approx(0.75, abs=0.01)
    eps = evaluation_action(DQNConfig(eval_epsilon=0.5), Fixed, None, obs, jax.random.PRNGKey(0))
    assert float(eps.mean()) == pytest.approx(0.75, abs=0.01)  # half random: 1/2 * 1/2 + 1/2


# --- optimizers -----------------------------------------------------------------------------


def test_sgd_step_is_minus_lr_times_gradient():
    cfg = DQNConfig(hidden_sizes=(4,), optimizer="sgd", learning_rate=0.1, max_grad_norm=0, loss="mse")
    dqn = make_dqn(cfg, obs_shape=(2,), num_actions=2)
    state = dqn.init(jax.random.PRNGKey(0))
    batch = Batch(obs=jnp.ones((1, 2)), action=jnp.array([1]), reward=jnp.array([3.0]), next_obs=jnp.ones((1, 2)),
                  terminated=jnp.array([True]))
    q_taken = float(dqn.q_values(state.params, batch.obs)[0, 1])
    new, _ = dqn.update(state, batch)
    # d/db (0.5 (Q - 3)^2) for the output bias of action 1 is Q - 3; action 0's is 0.
    bias_before = np.asarray(state.params["params"]["Dense_1"]["bias"])
    bias_after = np.asarray(new.params["params"]["Dense_1"]["bias"])
    np.testing.assert_allclose(bias_after - bias_before, [0.0, -0.1 * (q_taken - 3.0)], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("options", [{"optimizer": "adam", "adam_b1": 0.5}, {"optimizer": "sgd", "momentum": 0.9, "nesterov": True},
                                     {"optimizer": "rmsprop", "momentum": 0.5, "rmsprop_centered": True}])
def test_every_optimizer_lowers_the_loss(options):
    cfg = DQNConfig(hidden_sizes=(16,), learning_rate=1e-2, **options)
    dqn = make_dqn(cfg, obs_shape=(3,), num_actions=2)
    state = dqn.init(jax.random.PRNGKey(0))
    batch = Batch(obs=jax.random.normal(jax.random.PRNGKey(1), (32, 3)), action=jnp.zeros(32, jnp.int32),
                  reward=jnp.ones(32), next_obs=jnp.zeros((32, 3)), terminated=jnp.ones(32, bool))
    update = jax.jit(dqn.update)
    first = float(update(state, batch)[1]["loss"])
    for _ in range(50):
        state, metrics = update(state, batch)
    assert float(metrics["loss"]) < 0.5 * first



def test_flatten_gives_optax_flattens_state_and_updates_bit_for_bit():
    """dqn.flatten writes the vector leaf by leaf where optax.flatten concatenates: the same
    numbers (checkpoints keep their optimizer state's layout), inside a scan as in training."""
    import optax

    from dqnx.agents.dqn import flatten

    params = {"b": jnp.arange(3.0), "a": {"kernel": jnp.ones((2, 4)), "bias": jnp.zeros(4)}}
    inner = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    grads = jax.tree.map(lambda x: jax.random.normal(jax.random.PRNGKey(x.size), (5, *x.shape)), params)

    def run(transform):
        def step(carry, g):
            params, state = carry
            changes, state = transform.update(g, state, params)
            return (optax.apply_updates(params, changes), state), changes
        return jax.jit(lambda: jax.lax.scan(step, (params, transform.init(params)), grads))()

    ours, theirs = run(flatten(inner)), run(optax.flatten(inner))
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# --- the learner with every switch, and bad combinations -------------------------------------


def test_rainbow_learner_trains_and_keeps_its_priorities():
    cfg = DQNConfig(hidden_sizes=(16,), dueling=True, double_dqn=True, prioritized=True, n_step=3, noisy=True,
                    distributional=True, num_atoms=11, v_min=0, v_max=20, buffer_size=64, batch_size=8,
                    learning_starts=8, num_envs=2, train_freq=2, total_steps=100)
    learner = make_dqn_learner(cfg, (3,), 2, max_episode_steps=20)
    state = learner.init(jax.random.PRNGKey(0))
    learn = jax.jit(learner.learn)
    for i in range(10):
        key = jax.random.PRNGKey(10 + i)
        fresh = Batch(obs=jax.random.normal(key, (2, 3)), action=jnp.array([0, 1]), reward=jnp.ones(2),
                      next_obs=jax.random.normal(key, (2, 3)) + 1, terminated=jnp.array([i == 4, False]),
                      episode_end=jnp.array([i == 4, i == 6]))
        state, metrics = learn(state, fresh, jnp.array(2 * i, jnp.int32), key)
    assert np.isfinite(float(metrics["loss"])) and int(state.updates) == 7  # after = 8, 10, ..., 20
    assert int((state.priorities.priority > 0).sum()) == 20
    assert not np.allclose(state.priorities.priority[:20], 1.0)  # trained slots took their TD errors


@pytest.mark.parametrize("changes, message", [
    ({"dueling": True, "q_head": "state_action"}, "dueling"),
    ({"replay": False, "prioritized": True}, "replay"),
    ({"target": "monte_carlo", "n_step": 3}, "monte_carlo"),
    ({"optimizer": "adamw"}, "optimizer"),
    ({"n_step": 0}, "n_step"),
    ({"eval_epsilon": 0.1, "eval_temperature": 1.0}, "eval_temperature"),
    ({"distributional": True, "v_min": 1.0, "v_max": 1.0}, "C51"),
])
def test_bad_combinations_are_usage_errors(changes, message):
    with pytest.raises(UsageError, match=message):
        DQNConfig(**changes).validate()


def test_frame_replay_refuses_n_step():
    class Env:
        obs_shape, num_actions, obs_dtype, frame_stack, image_layout, max_episode_steps = (4, 36, 36), 3, "uint8", 4, "CHW", 100

    with pytest.raises(UsageError, match="stacked-frame"):
        make_learner("dqn", DQNConfig(n_step=3), Env)


# --- whole runs: both training loops, checkpoints ------------------------------------------


@pytest.fixture
def toys_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


def test_rainbow_run_resumes_bit_for_bit(tmp_path, tiny):
    """Every switch at once, 2 seeds: priorities, the n-step replay (with its episode ends), noisy and C51
    weights, the Double-DQN target and the noise keys are all in the checkpoint."""
    import dqnx

    config = tiny(total_steps=600, checkpoint_every=300, eval_every=300, learning_starts=100, dueling=True,
                  double_dqn=True, prioritized=True, n_step=3, noisy=True, distributional=True, num_atoms=11,
                  v_min=0.0, v_max=50.0, per_beta=1.0)  # beta anneals over total_steps, which the resume extends
    straight = dqnx.train("CartPole-v1", seeds=2, config=config.replace(total_steps=900), out=tmp_path / "a",
                          tensorboard=False)
    dqnx.train("CartPole-v1", seeds=2, config=config, out=tmp_path / "b", tensorboard=False)
    resumed = dqnx.train(resume=tmp_path / "b", steps=900, tensorboard=False)
    a = dqnx.load(straight.path, weights="last").params
    b = dqnx.load(resumed.path, weights="last").params
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(*np.asarray(jax.tree.leaves(a)[0])[:2])  # the two seeds trained apart


def test_host_loop_trains_with_n_step_per_and_monte_carlo(toys_on_path, tmp_path):
    """The Gymnasium host loop feeds the same learner: n-step + PER, and Monte-Carlo targets."""
    import dqnx

    config = {"total_steps": 3000, "learning_starts": 300, "epsilon_decay_steps": 1500, "eval_every": 1000,
              "eval_episodes": 4, "final_eval_episodes": 4, "hidden_sizes": [32], "buffer_size": 3000,
              "gamma": 0.9, "num_envs": 2, "train_freq": 2, "target_update_period": 1, "tau": 0.05}
    for i, extra in enumerate(({"n_step": 3, "prioritized": True}, {"target": "monte_carlo", "eval_temperature": 0.01})):
        run = dqnx.train("gym_toys:Corridor", seeds=1, config={**config, **extra},
                         env_params={"max_episode_steps": 30}, out=tmp_path / f"run{i}", tensorboard=False)
        assert run.summary["per_seed"][0]["eval_mean_return"] == -5.0  # the optimal walk
