"""PQN: Q(lambda) returns by hand, minibatch epochs, rollouts across chunks, seeds, resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

import dqnx
from dqnx.agents import Batch, make_learner
from dqnx.agents.dqn import q_lambda_returns, td_target
from dqnx.agents.pqn import minibatch_indices, rollout_targets, total_gradient_updates
from dqnx.config import PQNConfig, build_config
from dqnx.drivers import make_driver
from dqnx.envs import make_env
from dqnx.errors import UsageError

TOYS = Path(__file__).parent

# One env, five steps: a terminal at step 1, a truncation at step 3 (its successor's value 40
# is the final observation's; the next row starts a new episode), the rollout ends at step 4.
REWARD = [1.0, 2.0, 3.0, 4.0, 5.0]
TERMINATED = [False, True, False, False, False]
EPISODE_END = [False, True, False, True, False]
NEXT_VALUE = [10.0, 20.0, 30.0, 40.0, 50.0]
GAMMA = 0.5
BY_HAND = {
    # lambda 0: one-step TD, r + gamma * v unless terminal.
    0.0: [1 + 0.5 * 10, 2, 3 + 0.5 * 30, 4 + 0.5 * 40, 5 + 0.5 * 50],
    # lambda 1: rewards to the episode's end, bootstrapped at the truncation and the rollout's end.
    1.0: [1 + 0.5 * 2, 2, 3 + 0.5 * (4 + 0.5 * 40), 4 + 0.5 * 40, 5 + 0.5 * 50],
    # lambda 0.5: G_2 = 3 + 0.5 * (0.5 * 30 + 0.5 * G_3), G_0 = 1 + 0.5 * (0.5 * 10 + 0.5 * G_1).
    0.5: [1 + 0.5 * (5 + 1), 2, 3 + 0.5 * (15 + 12), 24, 30],
}


def column(values, dtype=jnp.float32):
    return jnp.asarray(values, dtype)[:, None]  # [T, 1 env]


@pytest.mark.parametrize("lam", sorted(BY_HAND))
def test_q_lambda_returns_by_hand_across_a_terminal_and_a_truncation(lam):
    returns = q_lambda_returns(column(REWARD), column(TERMINATED, bool), column(EPISODE_END, bool),
                               column(NEXT_VALUE), GAMMA, lam)
    np.testing.assert_allclose(np.asarray(returns)[:, 0], BY_HAND[lam], rtol=1e-6)


def test_lambda_zero_is_the_one_step_td_target():
    key = jax.random.PRNGKey(3)
    reward, next_value = jax.random.normal(key, (2, 7, 4))
    terminated = jax.random.bernoulli(jax.random.fold_in(key, 1), 0.3, (7, 4))
    ends = terminated | jax.random.bernoulli(jax.random.fold_in(key, 2), 0.3, (7, 4))
    returns = q_lambda_returns(reward, terminated, ends, next_value, 0.9, 0.0)
    one_step = td_target(reward, terminated, next_value[..., None], 0.9)  # a single action
    np.testing.assert_allclose(returns, one_step, rtol=1e-6, atol=1e-6)  # fused multiply-adds may differ


def test_lambda_one_is_the_monte_carlo_return_of_a_finished_episode():
    reward = jnp.array([1.0, 2.0, 4.0, 8.0])[:, None]
    done = jnp.array([False, False, False, True])[:, None]
    returns = q_lambda_returns(reward, done, done, jnp.full((4, 1), 100.0), 0.5, 1.0)
    np.testing.assert_allclose(np.asarray(returns)[:, 0], [1 + 1 + 1 + 1, 2 + 2 + 2, 4 + 4, 8])


def test_rollout_targets_bootstrap_from_the_final_observation_never_the_reset_one():
    """Q(s, .) = s (one action): v of each step is its stored successor, so the truncated
    step must see its final observation (7), not the next row's reset observation (0)."""
    obs = jnp.array([5.0, 6.0, 0.0, 1.0])[:, None, None]  # [T, 1 env, 1]: a reset after step 1
    next_obs = jnp.array([6.0, 7.0, 1.0, 2.0])[:, None, None]
    ends = jnp.array([False, True, False, False])[:, None]
    rollout = Batch(obs=obs, action=jnp.zeros((4, 1), jnp.int32), reward=jnp.ones((4, 1)), next_obs=next_obs,
                    terminated=jnp.zeros((4, 1), bool), episode_end=ends)
    targets = rollout_targets(lambda params, x: x, None, rollout, 0.5, 0.0, reward_scale=2.0)
    np.testing.assert_allclose(np.asarray(targets)[:, 0], [2 + 3, 2 + 3.5, 2 + 0.5, 2 + 1])


def test_rollout_targets_bootstrap_over_legal_actions_and_stay_finite_at_a_dead_end():
    """Q(s', .) = [9, 1]: with action 0 illegal the bootstrap is 1, not 9; a terminal step
    with no legal action at all keeps a finite target (its bootstrap weight is 0)."""
    next_obs = jnp.array([[9.0, 1.0], [9.0, 1.0]])[:, None, :]  # [T=2, 1 env, 2]
    rollout = Batch(obs=jnp.zeros((2, 1, 2)), action=jnp.zeros((2, 1), jnp.int32), reward=jnp.ones((2, 1)),
                    next_obs=next_obs, terminated=jnp.array([False, True])[:, None],
                    episode_end=jnp.array([False, True])[:, None],
                    next_mask=jnp.array([[False, True], [False, False]])[:, None, :])
    targets = rollout_targets(lambda params, x: x, None, rollout, 0.5, 0.0)
    np.testing.assert_allclose(np.asarray(targets)[:, 0], [1 + 0.5 * 1, 1])

@pytest.mark.parametrize("samples, minibatches", [(2048, 16), (12, 3), (7, 1)])
def test_minibatches_cover_every_sample_once_per_epoch(samples, minibatches):
    epochs = [np.asarray(minibatch_indices(jax.random.PRNGKey(k), samples, minibatches)) for k in range(3)]
    for index in epochs:
        assert index.shape == (minibatches, samples // minibatches)
        np.testing.assert_array_equal(np.sort(index.ravel()), np.arange(samples))
    if samples > minibatches:
        assert not np.array_equal(epochs[0], epochs[1])  # reshuffled every epoch


def test_bad_pqn_settings_are_one_line_usage_errors():
    with pytest.raises(UsageError, match="num_minibatches .* must divide"):
        build_config("CartPole-v1", overrides={"num_minibatches": "7"}, agent="pqn")
    with pytest.raises(UsageError, match="q_lambda must lie in"):
        build_config("CartPole-v1", overrides={"q_lambda": "1.5"}, agent="pqn")
    with pytest.raises(UsageError, match="below one rollout"):
        build_config("CartPole-v1", overrides={"total_steps": "100"}, agent="pqn")
    with pytest.raises(UsageError, match="did you mean 'q_lambda'"):
        build_config("CartPole-v1", overrides={"qlambda": "0.5"}, agent="pqn")


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", "MountainCar-v0"])
def test_presets_follow_the_paper_and_every_field_is_documented(env_id):
    config = build_config(env_id, agent="pqn")
    assert (config.num_envs, config.rollout_steps, config.num_epochs, config.num_minibatches) == (32, 64, 4, 16)
    assert config.layer_norm and config.optimizer == "radam" and not config.target_network
    for field in PQNConfig.__dataclass_fields__.values():
        assert field.metadata.get("doc"), field.name


# --- whole runs on the compiled loop ------------------------------------------------------

STEPS = 672  # 21 rollouts of 8 steps x 4 envs; 7 chunks of 96 env steps


def tiny_pqn(**changes) -> PQNConfig:
    # eval_every 96 = 24 iterations: every other chunk ends in the middle of a rollout (8 iterations).
    return PQNConfig(total_steps=STEPS, num_envs=4, rollout_steps=8, num_epochs=2, num_minibatches=4,
                     hidden_sizes=(32,), eval_every=96, eval_episodes=4, final_eval_episodes=4,
                     epsilon_decay_steps=300, learning_rate=1e-3, lr_schedule="constant",
                     checkpoint_every=10_000).replace(**changes).validate()


def metrics(path):
    with open(path / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in ("steps_per_second", "wall_seconds")} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Seeds 0 and 1 side by side, seed 0 alone, and seed 0 stopped mid-rollout then resumed."""
    root = tmp_path_factory.mktemp("pqn")
    pair = dqnx.train("CartPole-v1", agent="pqn", seed=0, seeds=2, config=tiny_pqn(), out=root / "pair", tensorboard=False)
    alone = dqnx.train("CartPole-v1", agent="pqn", seed=0, config=tiny_pqn(), out=root / "alone")
    # 336 env steps = 84 iterations = 10.5 rollouts: the checkpoint holds half a rollout, and the
    # resumed run's chunks end at other iterations than the uninterrupted run's.
    half = dqnx.train("CartPole-v1", agent="pqn", seed=0, config=tiny_pqn(total_steps=336), out=root / "resumed",
                      tensorboard=False)
    resumed = dqnx.train(resume=half.path, steps=STEPS)
    return pair, alone, resumed


def test_a_pqn_run_learns_on_its_cadence_and_writes_a_full_run_directory(runs):
    _, alone, _ = runs
    rows = metrics(alone.path)
    assert [int(r["env_steps"]) for r in rows] == list(range(96, STEPS + 1, 96))
    # 2 epochs x 4 minibatches per rollout of 32 env steps, whatever the chunk boundaries.
    assert [int(r["updates"]) for r in rows] == [int(r["env_steps"]) // 32 * 8 for r in rows]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    for name in ("config.json", "summary.json", "best.safetensors", "last.safetensors"):
        assert (alone.path / name).is_file(), name
    assert list((alone.path / "tensorboard").rglob("events.*"))
    assert json.loads((alone.path / "config.json").read_text())["agent"] == "pqn"
    assert alone.summary["agent"] == "pqn"


def test_pqn_seeds_differ_and_a_seed_in_a_batch_equals_it_alone(runs):
    pair, alone, _ = runs
    rows = metrics(pair.path)
    by_seed = {s: [r for r in rows if r["seed"] == s] for s in ("0", "1")}
    assert [r["loss"] for r in by_seed["0"]] != [r["loss"] for r in by_seed["1"]]
    weights = load_file(str(pair.path / "last.safetensors"))
    assert all(not np.array_equal(w[0], w[1]) for w in weights.values() if w[0].size > 1 and np.any(w[0] != w[0].flat[0]))
    # the vmapped program may fuse floating-point operations differently, so seed 0 of the pair
    # is compared with seed 0 alone to a tolerance, per chunk
    alone_rows = metrics(alone.path)
    np.testing.assert_allclose([float(r["loss"]) for r in by_seed["0"]], [float(r["loss"]) for r in alone_rows], rtol=1e-3)


def test_pqn_resume_from_the_middle_of_a_rollout_is_exact(runs, assert_same_weights):
    _, alone, resumed = runs
    # The resumed run's chunks end elsewhere (336, then 432, ...); where both evaluated, they agree.
    evaluated = {r["env_steps"]: r for r in metrics(alone.path)}
    common = [r for r in metrics(resumed.path) if r["env_steps"] in evaluated]
    assert [r["env_steps"] for r in common] == ["96", "192", "288", str(STEPS)]
    for row in common:
        for key in ("updates", "eval_mean_return", "eval_std_return"):
            assert row[key] == evaluated[row["env_steps"]][key], (row["env_steps"], key)
    assert_same_weights(resumed.path / "last.safetensors", alone.path / "last.safetensors")
    assert_same_weights(resumed.path / "best.safetensors", alone.path / "best.safetensors")
    assert resumed.summary["eval_mean_return"] == alone.summary["eval_mean_return"]


def test_a_chunk_that_ends_inside_a_rollout_keeps_its_transitions():
    env = make_env("CartPole-v1")
    config = tiny_pqn()
    driver = make_driver(config, env, make_learner("pqn", config, env), [0])
    state = driver.place(driver.init_states([0]))
    state, _ = driver.chunk(state, 5, 0)  # 5 of a rollout's 8 iterations
    rollout = jax.tree.map(lambda x: np.asarray(x[0]), state.agent.rollout)
    assert int(state.agent.updates[0]) == 0
    assert np.all(rollout.obs[:5] != 0) and np.all(rollout.obs[5:] == 0)
    np.testing.assert_array_equal(rollout.obs[1:5], np.where(rollout.episode_end[:4, :, None], rollout.obs[1:5],
                                                             rollout.next_obs[:4]))
    state, output = driver.chunk(state, 3, 20)
    assert int(state.agent.updates[0]) == 8 and np.isfinite(output.loss[0, -1]) and np.all(np.isnan(output.loss[0, :-1]))


def test_a_sweep_over_pqn_fields_runs_in_one_program(tmp_path):
    # With replay on: the stored rollouts' targets follow each member's own q_lambda and reward_scale.
    result = dqnx.sweep("CartPole-v1", {"q_lambda": [0.0, 0.9], "reward_scale": [0.1, 1.0]}, agent="pqn", seeds=1,
                        config=tiny_pqn(total_steps=192, replay_rollouts=1), out=tmp_path / "sweep")
    groups = json.loads((result.path / "sweep.json").read_text())["groups"]
    assert len(groups) == 1 and groups[0]["members"] == 4  # vmappable: one compiled program
    assert len(result.rows) == 4
    weights = load_file(str(result.path / "groups" / "g0" / "last.safetensors"))
    kernel = next(w for name, w in weights.items() if "kernel" in name)
    assert len({kernel[i].tobytes() for i in range(4)}) == 4  # the same seed learned four different things


# --- the host loop --------------------------------------------------------------------------


@pytest.fixture
def toys_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(TOYS))


def test_host_loop_fills_the_rollout_with_true_successors(toys_on_path):
    env = make_env("gym_toys:Counter", {"limit": 3, "end": 1000})
    config = tiny_pqn(num_envs=1, num_minibatches=2)
    driver = make_driver(config, env, make_learner("pqn", config, env), [0])
    try:
        state = driver.place(driver.init_states([0]))
        state, _ = driver.chunk(state, 7, 0)
    finally:
        driver.close()
    rollout = jax.tree.map(lambda x: np.asarray(x[0, :7, 0]), state.agent.rollout)
    np.testing.assert_array_equal(rollout.obs[:, 0], [0, 1, 2, 0, 1, 2, 0])
    np.testing.assert_array_equal(rollout.next_obs[:, 0], [1, 2, 3, 1, 2, 3, 1])  # 3, never the reset 0
    np.testing.assert_array_equal(rollout.episode_end, [False, False, True] * 2 + [False])
    assert not rollout.terminated.any()
    assert int(state.agent.updates[0]) == 0


@pytest.mark.parametrize("replay_rollouts", [0, 2])
def test_host_loop_learns_from_each_rollout_as_the_compiled_loop_would(replay_rollouts):
    """Staging a rollout before one learn call gives the weights of a learn call per iteration."""
    config = tiny_pqn(total_steps=10_000, replay_rollouts=replay_rollouts)
    env = make_env("CartPole-v1", backend="gymnasium")
    finals = []
    for block in (None, 1):
        driver = make_driver(config, env, make_learner("pqn", config, env), [3, 4])
        if block is not None:
            driver.block = block
        try:
            assert driver.block == (8 if block is None else 1)
            state = driver.place(driver.init_states([3, 4]))
            state, _ = driver.chunk(state, 13, 0)
            state, output = driver.chunk(state, 11, 52)
        finally:
            driver.close()
        finals.append((jax.device_get(state.agent.params), output.loss, int(state.agent.updates[0])))
    (staged, staged_loss, updates), (every_step, every_loss, _) = finals
    assert updates == (3 if replay_rollouts == 0 else 1 + 2 + 3) * 8  # replay: 1, 2, then 3 rollouts per phase
    jax.tree.map(np.testing.assert_array_equal, staged, every_step)
    np.testing.assert_array_equal(staged_loss, every_loss)


def test_pqn_trains_on_gymnasium_and_extends_a_linear_schedule_at_lr_end(tmp_path):
    config = tiny_pqn(total_steps=64, eval_every=64, lr_schedule="linear")
    first = dqnx.train("CartPole-v1", agent="pqn", backend="gymnasium", config=config, out=tmp_path / "run", tensorboard=False)
    assert first.summary["total_steps"] == 64
    saved = (first.path / "config.json").read_text()
    # The schedule reached lr_end = 0 at step 64: more steps would not learn, so the extension is
    # refused with the fix, and nothing is written.
    with pytest.raises(UsageError, match=r"lr_end = 0 at env step 64.*--set lr_end="):
        dqnx.train(resume=first.path, steps=128)
    assert (first.path / "config.json").read_text() == saved
    resumed = dqnx.train(resume=first.path, steps=128, config={"lr_end": 1e-4})
    assert resumed.summary["total_steps"] == 128 and resumed.summary["agent"] == "pqn"
    assert [int(r["updates"]) for r in metrics(resumed.path)] == [16, 32]
    recorded = json.loads((first.path / "config.json").read_text())["config"]
    assert (recorded["total_steps"], recorded["lr_schedule_steps"], recorded["lr_end"]) == (128, 64, 1e-4)
    # The schedule keeps the original 64 steps' span of gradient steps, whatever the new total.
    assert total_gradient_updates(resumed.config) == total_gradient_updates(config) == 16


def test_the_learner_refuses_nothing_the_config_accepts():
    for env_id in ("CartPole-v1", "Acrobot-v1", "MountainCar-v0"):
        env = make_env(env_id)
        learner = make_learner("pqn", build_config(env_id, agent="pqn"), env)
        state = jax.eval_shape(learner.init, jax.random.PRNGKey(0))
        assert state.rollout.obs.shape == (64, 32, *env.obs_shape)


# --- the replay option (replay_rollouts) -----------------------------------------------------


def test_the_replay_ring_holds_the_last_k_rollouts_in_order():
    """K = 3 after K + 2 = 5 phases: slot p mod 3 holds phase p's rollout for p = 2, 3, 4, and the
    phases took (1 + min(p, K)) x num_minibatches steps per epoch: 1 + 2 + 3 + 4 + 4 rollouts' worth."""
    env = make_env("CartPole-v1")
    config = tiny_pqn(replay_rollouts=3)
    driver = make_driver(config, env, make_learner("pqn", config, env), [0])
    state = driver.place(driver.init_states([0]))
    rollouts = []
    for phase in range(5):
        state, output = driver.chunk(state, 8, phase * 32)  # one rollout of 8 iterations x 4 envs
        assert np.isfinite(output.loss[0, -1])
        rollouts.append(jax.tree.map(lambda x: np.asarray(x[0]), state.agent.rollout))
    ring = jax.tree.map(lambda x: np.asarray(x[0]), state.agent.replay)
    assert ring.obs.shape == (3, 8, 4, *env.obs_shape)
    for phase in (2, 3, 4):
        for name in ("obs", "action", "reward", "next_obs", "terminated", "episode_end"):
            np.testing.assert_array_equal(getattr(ring, name)[phase % 3], getattr(rollouts[phase], name), err_msg=name)
    assert int(state.agent.updates[0]) == (1 + 2 + 3 + 4 + 4) * 2 * 4
    assert total_gradient_updates(config.replace(total_steps=5 * 32)) == (1 + 2 + 3 + 4 + 4) * 2 * 4


def test_replayed_rollouts_get_targets_from_the_current_network():
    """One learning phase with a stored rollout A and the fresh rollout B, at learning rate 0 (the
    weights stay theta, so the phase's mean loss is the loss over all of A and B): it equals the
    loss against targets r + gamma * max_a Q_theta(s', a) (lambda = 0) computed here with the current
    weights theta for both, not with the weights A was collected under."""
    env = make_env("CartPole-v1")
    config = PQNConfig(num_envs=2, rollout_steps=3, num_epochs=2, num_minibatches=2, hidden_sizes=(8,),
                       q_lambda=0.0, gamma=0.9, replay_rollouts=1, learning_rate=0.0, lr_schedule="constant")
    learner = make_learner("pqn", config, env)
    key = jax.random.PRNGKey(0)
    state = learner.init(key)
    old_params = learner.init(jax.random.PRNGKey(1)).params  # "the weights A was collected under"

    def rollout(seed):
        k = jax.random.split(jax.random.PRNGKey(seed), 4)
        return Batch(obs=jax.random.normal(k[0], (3, 2, 4)), action=jax.random.bernoulli(k[1], 0.5, (3, 2)).astype(jnp.int32),
                     reward=jax.random.normal(k[2], (3, 2)), next_obs=jax.random.normal(k[3], (3, 2, 4)),
                     terminated=jnp.zeros((3, 2), bool).at[1, 0].set(True), episode_end=jnp.zeros((3, 2), bool).at[1, 0].set(True),
                     next_mask=jnp.ones((3, 2, 2), bool))

    stored, fresh = rollout(10), rollout(11)
    ring = jax.tree.map(lambda x: x[None], stored)
    # Phase 1 (env steps 6 to 11): rows 0 and 1 of the fresh rollout are in place, row 2 comes with this call.
    state = state.replace(replay=ring, rollout=jax.tree.map(lambda x: x.at[2].set(jnp.zeros_like(x[2])), fresh))
    last_row = jax.tree.map(lambda x: x[2], fresh)
    state, metrics = jax.jit(learner.learn)(state, last_row, jnp.int32(6 + 4), key)

    def loss_by_hand(params, batch):
        q = np.asarray(learner.q_values(params, batch.obs.reshape(6, 4))).reshape(3, 2, 2)
        next_q = np.asarray(learner.q_values(params, batch.next_obs.reshape(6, 4))).reshape(3, 2, 2).max(-1)
        target = np.asarray(batch.reward) + 0.9 * (1 - np.asarray(batch.terminated)) * next_q
        taken = np.take_along_axis(q, np.asarray(batch.action)[..., None], -1)[..., 0]
        return 0.5 * (taken - target) ** 2

    current = np.concatenate([loss_by_hand(state.params, stored), loss_by_hand(state.params, fresh)]).mean()
    stale = np.concatenate([loss_by_hand(old_params, stored), loss_by_hand(state.params, fresh)]).mean()
    assert abs(current - stale) > 1e-3 * abs(current)  # the check can tell them apart
    np.testing.assert_allclose(float(metrics["loss"]), current, rtol=1e-5)
    assert int(state.updates) == 2 * 2 * 2  # 2 epochs x (1 + 1 stored) x 2 minibatches
    jax.tree.map(np.testing.assert_array_equal, state.replay, jax.tree.map(lambda x: x[None], fresh))  # B replaced A


@pytest.fixture(scope="module")
def replay_runs(tmp_path_factory):
    """With replay_rollouts = 2, seeds 0 and 1 side by side: the whole run, and the run stopped in the
    middle of a rollout (the ring full and wrapped) then resumed."""
    root = tmp_path_factory.mktemp("pqn-replay")
    config = tiny_pqn(replay_rollouts=2)
    whole = dqnx.train("CartPole-v1", agent="pqn", seed=0, seeds=2, config=config, out=root / "whole", tensorboard=False)
    half = dqnx.train("CartPole-v1", agent="pqn", seed=0, seeds=2, config=config.replace(total_steps=336),
                      out=root / "resumed", tensorboard=False)
    return whole, dqnx.train(resume=half.path, steps=STEPS)


def test_pqn_resume_with_replay_is_exact_and_seeds_differ(replay_runs, assert_same_weights):
    whole, resumed = replay_runs
    evaluated = {(r["env_steps"], r["seed"]): r for r in metrics(whole.path)}
    common = [r for r in metrics(resumed.path) if (r["env_steps"], r["seed"]) in evaluated]
    assert len(common) == 2 * 4
    for row in common:
        # (a row's loss is its chunk's mean, and the resumed run's chunks end elsewhere)
        for key in ("updates", "eval_mean_return", "eval_std_return"):
            assert row[key] == evaluated[row["env_steps"], row["seed"]][key], (row["env_steps"], key)
    # 21 rollouts: 1 + 2 + 3 x 19 rollouts' worth of 2 epochs x 4 minibatches
    assert int(common[-1]["updates"]) == (1 + 2 + 3 * 19) * 8 == total_gradient_updates(whole.config)
    assert_same_weights(resumed.path / "last.safetensors", whole.path / "last.safetensors")
    assert_same_weights(resumed.path / "checkpoint.safetensors", whole.path / "checkpoint.safetensors")
    weights = load_file(str(whole.path / "last.safetensors"))
    assert all(not np.array_equal(w[0], w[1]) for w in weights.values() if np.any(w[0] != w[0].flat[0]))


def test_replay_off_keeps_the_state_and_checkpoint_layout():
    env = make_env("CartPole-v1")
    off = jax.eval_shape(make_learner("pqn", tiny_pqn(), env).init, jax.random.PRNGKey(0))
    on = jax.eval_shape(make_learner("pqn", tiny_pqn(replay_rollouts=2), env).init, jax.random.PRNGKey(0))
    assert off.replay is None and on.replay.obs.shape == (2, 8, 4, 4)
    assert len(jax.tree.leaves(on)) == len(jax.tree.leaves(off)) + len(jax.tree.leaves(on.replay))


def test_a_negative_replay_rollouts_is_a_one_line_usage_error(dqnx_cli_here, tmp_path):
    result = dqnx_cli_here(["train", "CartPole-v1", "--agent", "pqn", "--set", "replay_rollouts=-1", "--out", "run"], tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "replay_rollouts must be >= 0" in result.stderr and "--set replay_rollouts=" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("obs_shape, layout, convolutions", [((10, 10, 4), "HWC", [16]), ((4, 36, 36), "CHW", [32, 64, 64])])
def test_layer_norm_follows_every_convolution_as_in_purejaxql(obs_shape, layout, convolutions):
    """purejaxql's PQN CNNs (MinAtar's one convolution, Atari's three) put a LayerNorm after each
    convolution and each hidden dense layer, before the ReLU; without layer_norm, none."""
    from dqnx.agents.pqn import make_pqn_learner

    def params(layer_norm, conv_layer_norm=True):
        config = PQNConfig(layer_norm=layer_norm, conv_layer_norm=conv_layer_norm, hidden_sizes=(8,))
        learner = make_pqn_learner(config, obs_shape, 3, image_layout=layout)
        return jax.eval_shape(learner.init, jax.random.PRNGKey(0)).params["params"]

    on, off = params(True), params(False)
    # conv_layer_norm false (runs of format dqnx-run/1): the dense layers' LayerNorm alone.
    assert [name for name in params(True, False) if "LayerNorm" in name] == ["LayerNorm_0"]
    assert [on[f"ConvLayerNorm_{i}"]["scale"].shape for i in range(len(convolutions))] == [(c,) for c in convolutions]
    assert [on[f"Conv_{i}"]["kernel"].shape[-1] for i in range(len(convolutions))] == convolutions
    assert on["LayerNorm_0"]["scale"].shape == (8,)  # the dense layer's keeps its name
    assert not any("LayerNorm" in name for name in off)
