"""Tier 1: the DQN pieces against values computed by hand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dqnx.agents.dqn import Batch, epsilon_at, make_dqn, td_loss, td_target
from dqnx.config import DQNConfig
from dqnx.agents import make_learner
from dqnx.drivers import jax_loop
from dqnx.envs import make_env
from dqnx.replay import uniform

# --- TD targets -----------------------------------------------------------------------


def test_td_target_terminal_does_not_bootstrap():
    next_q = jnp.array([[2.0, 3.0]])
    target = td_target(jnp.array([1.0]), jnp.array([True]), next_q, gamma=0.9)
    assert float(target[0]) == pytest.approx(1.0)


def test_td_target_non_terminal_bootstraps_from_max():
    next_q = jnp.array([[2.0, 3.0]])
    target = td_target(jnp.array([1.0]), jnp.array([False]), next_q, gamma=0.9)
    assert float(target[0]) == pytest.approx(1.0 + 0.9 * 3.0)


def test_td_target_truncated_transition_bootstraps():
    # A time-limit truncation reaches td_target as terminated=False with the true
    # successor's Q-values, so it bootstraps exactly like a mid-episode step.
    reward = jnp.array([1.0, 1.0, 1.0])
    terminated = jnp.array([False, True, False])  # mid-episode, terminal, truncated
    next_q = jnp.array([[4.0, -1.0], [4.0, -1.0], [0.5, 2.0]])
    target = np.asarray(td_target(reward, terminated, next_q, gamma=0.5))
    np.testing.assert_allclose(target, [1.0 + 0.5 * 4.0, 1.0, 1.0 + 0.5 * 2.0])


def test_td_target_gamma_zero_and_one():
    next_q = jnp.array([[2.0, 3.0]])
    assert float(td_target(jnp.array([1.5]), jnp.array([False]), next_q, gamma=0.0)[0]) == pytest.approx(1.5)
    assert float(td_target(jnp.array([1.5]), jnp.array([False]), next_q, gamma=1.0)[0]) == pytest.approx(4.5)


def test_double_dqn_target_online_picks_target_scores():
    reward = jnp.array([0.0, 1.0])
    terminated = jnp.array([False, False])
    next_q_target = jnp.array([[1.0, 5.0], [2.0, 0.0]])
    next_q_online = jnp.array([[3.0, 0.0], [0.0, 9.0]])  # argmax 0 and 1
    dqn = np.asarray(td_target(reward, terminated, next_q_target, gamma=1.0))
    double = np.asarray(td_target(reward, terminated, next_q_target, gamma=1.0, next_q_online=next_q_online))
    np.testing.assert_allclose(dqn, [5.0, 3.0])  # max of the target network
    np.testing.assert_allclose(double, [1.0, 1.0])  # target's value of the online argmax
    terminal = td_target(reward, jnp.array([True, True]), next_q_target, 1.0, next_q_online)
    np.testing.assert_allclose(np.asarray(terminal), [0.0, 1.0])


# --- losses ---------------------------------------------------------------------------


def test_td_loss_huber():
    q = jnp.array([0.0, 0.0, 1.0, 2.0])
    target = jnp.array([0.5, 3.0, -1.0, 2.0])  # errors -0.5, -3, 2, 0
    # huber(d=1): 0.5 e^2 if |e| <= 1 else |e| - 0.5  ->  0.125, 2.5, 1.5, 0
    assert float(td_loss(q, target, "huber")) == pytest.approx((0.125 + 2.5 + 1.5 + 0.0) / 4)


def test_td_loss_mse():
    q = jnp.array([0.0, 0.0, 1.0, 2.0])
    target = jnp.array([0.5, 3.0, -1.0, 2.0])
    # half squared error: 0.125, 4.5, 2, 0
    assert float(td_loss(q, target, "mse")) == pytest.approx((0.125 + 4.5 + 2.0 + 0.0) / 4)


# --- epsilon schedules ----------------------------------------------------------------


def test_epsilon_linear():
    cfg = DQNConfig(epsilon_start=1.0, epsilon_end=0.1, epsilon_decay_steps=100, epsilon_schedule="linear")
    assert float(epsilon_at(cfg, 0)) == pytest.approx(1.0)
    assert float(epsilon_at(cfg, 25)) == pytest.approx(0.775)
    assert float(epsilon_at(cfg, 50)) == pytest.approx(0.55)
    assert float(epsilon_at(cfg, 100)) == pytest.approx(0.1)
    assert float(epsilon_at(cfg, 101)) == pytest.approx(0.1)
    assert float(epsilon_at(cfg, 10_000)) == pytest.approx(0.1)


def test_epsilon_exponential():
    cfg = DQNConfig(epsilon_start=1.0, epsilon_end=0.01, epsilon_decay_steps=100, epsilon_schedule="exponential")
    assert float(epsilon_at(cfg, 0)) == pytest.approx(1.0)
    assert float(epsilon_at(cfg, 50)) == pytest.approx(0.1, rel=1e-5)  # geometric midpoint
    assert float(epsilon_at(cfg, 25)) == pytest.approx(0.01**0.25, rel=1e-5)
    assert float(epsilon_at(cfg, 100)) == pytest.approx(0.01, rel=1e-5)
    assert float(epsilon_at(cfg, 200)) == pytest.approx(0.01, rel=1e-6)  # stays at the floor
    assert float(epsilon_at(cfg, 10_000)) == pytest.approx(0.01, rel=1e-6)
    assert float(epsilon_at(cfg, 10_000)) >= 0.01 - 1e-9


def test_epsilon_monotone_non_increasing():
    for schedule in ("linear", "exponential"):
        cfg = DQNConfig(epsilon_start=1.0, epsilon_end=0.05, epsilon_decay_steps=1000, epsilon_schedule=schedule)
        values = np.asarray(jax.vmap(lambda t: epsilon_at(cfg, t))(jnp.arange(0, 3000, 7)))
        assert np.all(np.diff(values) <= 1e-7), schedule
        assert values[-1] == pytest.approx(0.05, rel=1e-5)


# --- replay ---------------------------------------------------------------------------


def _transitions(rewards, obs_dim=2):
    r = jnp.asarray(rewards, jnp.float32)
    n = r.shape[0]
    obs = jnp.repeat(r[:, None], obs_dim, axis=1)
    return Batch(obs=obs, action=jnp.arange(n, dtype=jnp.int32), reward=r, next_obs=obs + 0.5,
                 terminated=jnp.zeros(n, bool))


def test_replay_add_wraps_around_one_at_a_time():
    buffer = uniform.init_replay(4, (2,))
    assert buffer.capacity == 4
    for i in range(6):
        buffer = uniform.add(buffer, _transitions([float(i)]))
    assert int(buffer.position) == 2
    assert int(buffer.size) == 4
    # Slots 0 and 1 held transitions 0 and 1; 4 and 5 overwrote them.
    np.testing.assert_array_equal(np.asarray(buffer.storage.reward), [4.0, 5.0, 2.0, 3.0])
    np.testing.assert_array_equal(np.asarray(buffer.storage.obs[:, 0]), [4.0, 5.0, 2.0, 3.0])
    np.testing.assert_array_equal(np.asarray(buffer.storage.next_obs[:, 0]), [4.5, 5.5, 2.5, 3.5])


def test_replay_add_batches_wrap_around():
    buffer = uniform.init_replay(4, (2,))
    buffer = uniform.add(buffer, _transitions([0.0, 1.0, 2.0]))
    assert int(buffer.position) == 3 and int(buffer.size) == 3
    buffer = uniform.add(buffer, _transitions([3.0, 4.0, 5.0]))
    assert int(buffer.position) == 2 and int(buffer.size) == 4
    np.testing.assert_array_equal(np.asarray(buffer.storage.reward), [4.0, 5.0, 2.0, 3.0])


def test_replay_sample_only_filled_slots():
    buffer = uniform.init_replay(8, (2,))
    buffer = uniform.add(buffer, _transitions([1.0, 2.0, 3.0]))
    batch = uniform.sample(buffer, jax.random.PRNGKey(0), 2000)
    rewards = np.asarray(batch.reward)
    assert rewards.shape == (2000,)
    assert set(np.unique(rewards).tolist()) == {1.0, 2.0, 3.0}  # never an empty (zero) slot
    # Fields of a sampled row stay together.
    np.testing.assert_array_equal(np.asarray(batch.obs[:, 0]), rewards)
    np.testing.assert_array_equal(np.asarray(batch.action), rewards.astype(int) - 1)
    # Roughly uniform.
    counts = np.array([(rewards == v).sum() for v in (1.0, 2.0, 3.0)])
    assert counts.min() > 2000 / 3 * 0.8


# --- the update and the target network --------------------------------------------------


def _random_batch(key, n=32, obs_dim=4, num_actions=2):
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    return Batch(
        obs=jax.random.normal(k1, (n, obs_dim)),
        action=jax.random.randint(k2, (n,), 0, num_actions),
        reward=jax.random.normal(k3, (n,)),
        next_obs=jax.random.normal(k4, (n, obs_dim)),
        terminated=jax.random.bernoulli(k5, 0.2, (n,)),
    )


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _assert_trees_equal(a, b):
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def _assert_trees_differ(a, b):
    assert any(not np.array_equal(x, y) for x, y in zip(_leaves(a), _leaves(b), strict=True))


def test_hard_target_sync_every_third_update():
    cfg = DQNConfig(hidden_sizes=(16,), tau=1.0, target_update_period=3, learning_rate=1e-2)
    dqn = make_dqn(cfg, obs_shape=(4,), num_actions=2)
    state = dqn.init(jax.random.PRNGKey(0))
    initial = state.params
    _assert_trees_equal(state.target_params, initial)
    update = jax.jit(dqn.update)
    keys = jax.random.split(jax.random.PRNGKey(1), 7)

    for i in (1, 2):
        state, metrics = update(state, _random_batch(keys[i]))
        assert int(state.updates) == i
        assert np.isfinite(float(metrics["loss"]))
        _assert_trees_differ(state.params, initial)  # the online network learns...
        _assert_trees_equal(state.target_params, initial)  # ...the target stays frozen
    state, _ = update(state, _random_batch(keys[3]))
    assert int(state.updates) == 3
    _assert_trees_equal(state.target_params, state.params)  # hard copy on the 3rd update
    synced = state.params
    for i in (4, 5):
        state, _ = update(state, _random_batch(keys[i]))
        _assert_trees_equal(state.target_params, synced)
        _assert_trees_differ(state.params, synced)
    state, _ = update(state, _random_batch(keys[6]))
    _assert_trees_equal(state.target_params, state.params)


def test_polyak_half_is_the_exact_average():
    cfg = DQNConfig(hidden_sizes=(16,), tau=0.5, target_update_period=1, learning_rate=1e-2)
    dqn = make_dqn(cfg, obs_shape=(4,), num_actions=2)
    state = dqn.init(jax.random.PRNGKey(0))
    initial = _leaves(state.params)
    state, _ = jax.jit(dqn.update)(state, _random_batch(jax.random.PRNGKey(1)))
    for online, target, old in zip(_leaves(state.params), _leaves(state.target_params), initial, strict=True):
        assert not np.array_equal(online, old)
        np.testing.assert_allclose(target, 0.5 * online + 0.5 * old, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("double", [False, True])
def test_update_uses_the_right_bootstrap_network(double):
    """td_abs of an update equals |Q(s,a) - target| computed by hand from both networks."""
    cfg = DQNConfig(hidden_sizes=(16,), double_dqn=double, gamma=0.9, learning_rate=1e-3)
    dqn = make_dqn(cfg, obs_shape=(4,), num_actions=3)
    state = dqn.init(jax.random.PRNGKey(0))
    other = dqn.init(jax.random.PRNGKey(42)).params  # a target network unlike the online one
    state = state.replace(target_params=other)
    batch = _random_batch(jax.random.PRNGKey(3), n=256, num_actions=3)

    q = np.asarray(dqn.q_values(state.params, batch.obs))
    q_taken = q[np.arange(256), np.asarray(batch.action)]
    next_online = np.asarray(dqn.q_values(state.params, batch.next_obs))
    next_target = np.asarray(dqn.q_values(other, batch.next_obs))
    not_done = 1.0 - np.asarray(batch.terminated, np.float32)
    plain = np.asarray(batch.reward) + 0.9 * not_done * next_target.max(axis=1)
    dbl = np.asarray(batch.reward) + 0.9 * not_done * next_target[np.arange(256), next_online.argmax(axis=1)]
    assert not np.allclose(plain, dbl)  # the case separates DQN from Double DQN

    _, metrics = jax.jit(dqn.update)(state, batch)
    expected = dbl if double else plain
    assert float(metrics["td_abs"]) == pytest.approx(np.abs(q_taken - expected).mean(), rel=1e-4)
    assert float(metrics["q_mean"]) == pytest.approx(q_taken.mean(), rel=1e-4, abs=1e-6)


# --- the compiled loop ----------------------------------------------------------------


def test_loop_stores_true_successor_not_reset_obs(tiny):
    """Ended episodes store final_obs (out of CartPole's bounds), not the next reset obs."""
    cfg = tiny(buffer_size=3000, learning_starts=100, num_envs=2, train_freq=2)
    env = make_env("CartPole-v1")
    program = jax_loop.make_program(cfg, env, make_learner("dqn", cfg, env))
    state = jax.jit(program.init)(jax.random.PRNGKey(0))
    chunk = jax.jit(program.chunk, static_argnums=1)
    state, output = chunk(state, 1000)  # 2000 transitions, all kept (capacity 3000)
    replay = state.agent.replay
    assert int(replay.size) == 2000
    assert int(state.env_steps) == 2000

    stored = jax.device_get(replay.storage)
    terminated = np.asarray(stored.terminated[:2000])
    next_obs = np.asarray(stored.next_obs[:2000])
    obs = np.asarray(stored.obs[:2000])
    assert terminated.sum() >= 20  # mostly random play: many short episodes ended
    ended = next_obs[terminated]
    out_of_bounds = (np.abs(ended[:, 0]) > 2.4) | (np.abs(ended[:, 2]) > 0.2095)
    assert out_of_bounds.all(), ended[~out_of_bounds]
    # A reset observation lies in [-0.05, 0.05]^4; no terminal successor looks like one.
    assert not np.any(np.all(np.abs(ended) <= 0.05, axis=1))
    # Non-terminal successors are within bounds (CartPole only ends by leaving them).
    inside = next_obs[~terminated]
    assert np.all(np.abs(inside[:, 0]) <= 2.4) and np.all(np.abs(inside[:, 2]) <= 0.2095)
    # The next stored obs of the same env after a termination is a fresh reset obs.
    n = cfg.num_envs
    for t in np.flatnonzero(terminated):
        if t + n < 2000:
            assert np.all(np.abs(obs[t + n]) <= 0.05)
    # Every ended episode was reported with its return.
    finished = np.asarray(output.finished_return)
    assert np.sum(~np.isnan(finished)) == terminated.sum()


def test_steps_per_second_leaves_out_the_periodic_evaluation(tmp_path, monkeypatch, tiny):
    # metrics.csv's steps_per_second is the training speed: the chunk's env steps over its own time.
    # Here every evaluation takes 1,000 s on the trainer's clock; wall_seconds must show them, the speed not.
    import csv
    import time
    from types import SimpleNamespace

    import dqnx
    from dqnx.drivers import trainer

    clock = {"offset": 0.0}
    monkeypatch.setattr(trainer, "time", SimpleNamespace(perf_counter=lambda: time.perf_counter() + clock["offset"]))
    evaluate = trainer._Loop.evaluate_and_keep_best

    def slow_evaluate(self):
        clock["offset"] += 1000.0
        return evaluate(self)

    monkeypatch.setattr(trainer._Loop, "evaluate_and_keep_best", slow_evaluate)
    run = dqnx.train("CartPole-v1", config=tiny(), out=tmp_path / "run", tensorboard=False)
    with open(run.path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4  # 2,000 steps, an evaluation every 500
    assert all(float(r["steps_per_second"]) > 500 / 100 for r in rows), [r["steps_per_second"] for r in rows]
    assert float(rows[-1]["wall_seconds"]) >= 4 * 1000
