"""Action masks end to end: the masked maths against hand-computed values, replay keeping
next-state masks, the envs that give masks, learning without a single illegal action,
and the error paths."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dqnx
from dqnx.agents import Batch
from dqnx.agents.dqn import categorical_target, td_target
from dqnx.agents.dqn import boltzmann
from dqnx.agents.exploration import epsilon_greedy, evaluation_action
from dqnx.config import DQNConfig, TabularConfig
from dqnx.replay import frames as frame_replay
from dqnx.replay import nstep, uniform

TOYS = Path(__file__).parent


@pytest.fixture
def toys_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(TOYS))


def vault_legal(tile: np.ndarray, length: int = 5) -> np.ndarray:
    """Vault's legal actions (left, right, open) on each tile."""
    last = tile == length - 1
    return np.stack([tile > 0, ~last, last], axis=-1)


# --- the masked target never bootstraps from an illegal action --------------------------


def test_masked_dqn_and_double_dqn_targets():
    reward, terminated, gamma = jnp.array([1.0]), jnp.array([False]), 0.5
    next_q_target = jnp.array([[7.0, 4.0, 3.0]])
    legal = jnp.array([[False, True, True]])  # action 0, the largest Q, is illegal at s'
    # DQN: max over legal = 4 -> 1 + 0.5 * 4 (unmasked it would be 1 + 0.5 * 7)
    assert float(td_target(reward, terminated, next_q_target, gamma, next_mask=legal)[0]) == 3.0
    assert float(td_target(reward, terminated, next_q_target, gamma)[0]) == 4.5
    # Double DQN: the online net's argmax over legal actions (2: 1 > 0; illegal 0 has 9), scored by the target net (3)
    next_q_online = jnp.array([[9.0, 0.0, 1.0]])
    assert float(td_target(reward, terminated, next_q_target, gamma, next_q_online, legal)[0]) == 2.5
    assert float(td_target(reward, terminated, next_q_target, gamma, next_q_online)[0]) == 4.5


def test_terminal_without_legal_actions_keeps_the_target_finite():
    target = td_target(jnp.array([2.0]), jnp.array([True]), jnp.array([[5.0, 6.0]]), 0.9,
                       next_mask=jnp.array([[False, False]]))
    assert float(target[0]) == 2.0
    probs = categorical_target(jnp.zeros((1, 2, 3)), jnp.array([0.0]), jnp.array([0.0]), jnp.array([-1.0, 0.0, 1.0]),
                               next_mask=jnp.array([[False, False]]))
    np.testing.assert_allclose(np.asarray(probs), [[0.0, 1.0, 0.0]])  # all mass on r = 0, no NaN


def test_masked_c51_target_uses_the_best_legal_expected_value():
    support = jnp.array([-1.0, 0.0, 1.0])
    # three actions: expected values about -1, 0 and +1; the +1 action is illegal at s'
    logits = jnp.array([[[30.0, 0.0, 0.0], [0.0, 30.0, 0.0], [0.0, 0.0, 30.0]]])
    legal = jnp.array([[True, True, False]])
    masked = categorical_target(logits, jnp.array([0.5]), jnp.array([1.0]), support, next_mask=legal)
    np.testing.assert_allclose(np.asarray(masked), [[0.0, 0.5, 0.5]], atol=1e-6)  # 0.5 + Z(a=1) = 0.5
    unmasked = categorical_target(logits, jnp.array([0.5]), jnp.array([1.0]), support)
    np.testing.assert_allclose(np.asarray(unmasked), [[0.0, 0.0, 1.0]], atol=1e-6)  # would take the illegal one
    # Double C51: the online Q picks among legal actions (its illegal favourite 2 is skipped)
    double = categorical_target(logits, jnp.array([0.5]), jnp.array([1.0]), support,
                                next_q_online=jnp.array([[5.0, -5.0, 9.0]]), next_mask=legal)
    np.testing.assert_allclose(np.asarray(double), [[0.5, 0.5, 0.0]], atol=1e-6)  # 0.5 + Z(a=0) = -0.5


def test_masked_n_step_target_reads_the_last_steps_mask():
    """Two steps of one env: the 2-step return bootstraps from step 1's successor with step 1's mask."""
    replay = uniform.init_replay(8, (1,), episode_ends=True, mask_actions=3)
    masks = [[True, True, True], [False, True, True]]
    for t in range(2):
        replay = uniform.add(replay, Batch(
            obs=jnp.array([[float(t)]]), action=jnp.array([0]), reward=jnp.array([1.0]),
            next_obs=jnp.array([[t + 1.0]]), terminated=jnp.array([False]), episode_end=jnp.array([False]),
            next_mask=jnp.array([masks[t]])))
    ahead = nstep.multi_step(replay, jnp.array([0]), horizon=2, num_envs=1, gamma=0.5)
    assert ahead.next_mask.tolist() == [masks[1]]
    next_q = jnp.array([[10.0, 2.0, 4.0]])  # Q at s_2; action 0 (10) is illegal there
    target = td_target(ahead.reward, ahead.terminated, next_q, ahead.discount, next_mask=ahead.next_mask)
    assert float(target[0]) == 1.0 + 0.5 * 1.0 + 0.25 * 4.0  # r0 + g r1 + g^2 * max_legal


@pytest.mark.parametrize("sarsa", [False, True])
def test_masked_tabular_and_sarsa_bootstrap(sarsa):
    from dqnx.agents.tabular import make_tabular_learner

    env = types.SimpleNamespace(env_id="toy", num_states=2, num_actions=3, obs_shape=(2,))
    # epsilon 1: SARSA's next action is uniform over legal ones, all of which have Q 0
    config = TabularConfig(learning_rate=1.0, gamma=1.0, epsilon_start=1.0, epsilon_end=1.0)
    learner = make_tabular_learner(config, env, sarsa=sarsa)
    state = learner.init(jax.random.PRNGKey(0))
    table = jnp.zeros((2, 3)).at[1, 0].set(100.0)  # the illegal action at s' = 1 has the largest Q
    state = state.replace(params={"q": table})
    eye = jnp.eye(2)
    for key in range(8):  # SARSA draws a'; every draw must be legal
        batch = Batch(obs=eye[:1], action=jnp.array([2]), reward=jnp.array([1.0]), next_obs=eye[1:],
                      terminated=jnp.array([False]), next_mask=jnp.array([[False, True, True]]))
        new, _ = learner.learn(state, batch, jnp.int32(0), jax.random.PRNGKey(key))
        assert float(new.params["q"][0, 2]) == 1.0  # r + Q(s', legal) = 1 + 0, never 1 + 100
    unmasked, _ = learner.learn(state, batch._replace(next_mask=None), jnp.int32(0), jax.random.PRNGKey(0))
    if not sarsa:
        assert float(unmasked.params["q"][0, 2]) == 101.0


# --- acting never picks an illegal action -----------------------------------------------


def test_epsilon_random_action_is_uniform_over_legal_actions():
    draws = 6000
    q = jnp.tile(jnp.array([[0.0, 0.0, 0.0, 0.0, 9.0]]), (draws, 1))  # the illegal action 4 is greedy-best
    legal = jnp.tile(jnp.array([[True, False, True, True, False]]), (draws, 1))
    actions = np.asarray(epsilon_greedy(q, jax.random.PRNGKey(3), 1.0, legal))
    counts = np.bincount(actions, minlength=5)
    assert counts[1] == counts[4] == 0
    # each legal action expects 2000; 5 standard deviations (about 183) either side
    assert all(abs(c - draws / 3) < 5 * np.sqrt(draws * (1 / 3) * (2 / 3)) for c in counts[[0, 2, 3]])
    # greedy (epsilon 0) takes the best legal action, not the illegal best one
    assert set(np.asarray(epsilon_greedy(q, jax.random.PRNGKey(4), 0.0, legal)).tolist()) == {0}


def test_boltzmann_and_evaluation_policies_stay_legal():
    q = jnp.tile(jnp.array([[0.0, 50.0, 1.0]]), (500, 1))
    legal = jnp.tile(jnp.array([[True, False, True]]), (500, 1))
    sampled = np.asarray(boltzmann(q, jax.random.PRNGKey(0), 5.0, legal))
    assert set(sampled.tolist()) == {0, 2}
    learner = types.SimpleNamespace(q_values=lambda params, obs: obs, recurrent_q=None)  # a feed-forward Learner
    for changes in ({}, {"eval_epsilon": 0.5}, {"eval_temperature": 2.0}):
        actions = evaluation_action(DQNConfig(**changes), learner, None, q, jax.random.PRNGKey(1), legal)
        assert not np.isin(np.asarray(actions), [1]).any(), changes


def test_noisy_dqn_acts_only_legally():
    from dqnx.agents.dqn import make_dqn

    dqn = make_dqn(DQNConfig(noisy=True, noisy_sigma0=5.0, hidden_sizes=(8,)), (3,), 4)
    params = dqn.init(jax.random.PRNGKey(0)).params
    obs = jax.random.normal(jax.random.PRNGKey(1), (256, 3))
    legal = jnp.tile(jnp.array([[False, True, False, True]]), (256, 1))
    for eps in (0.0, 0.5):
        actions = np.asarray(dqn.act(params, (), obs, legal, jax.random.PRNGKey(2), eps)[0])
        assert set(actions.tolist()) <= {1, 3}


# --- replay keeps the next masks --------------------------------------------------------


def _mask_of(ids: np.ndarray, actions: int = 4) -> np.ndarray:
    """A distinct mask per transition id: its bits."""
    return ((ids[..., None] >> np.arange(actions)) & 1).astype(bool)


def test_uniform_replay_returns_stored_next_masks_across_wrap_around():
    replay = uniform.init_replay(5, (1,), mask_actions=4)
    for start in range(0, 14, 2):  # 14 transitions, 2 per add, into 5 slots: wraps twice
        ids = np.arange(start, start + 2)
        replay = uniform.add(replay, Batch(
            obs=jnp.asarray(ids[:, None], jnp.float32), action=jnp.zeros(2, jnp.int32), reward=jnp.zeros(2),
            next_obs=jnp.asarray(ids[:, None] + 100, jnp.float32), terminated=jnp.zeros(2, bool),
            next_mask=jnp.asarray(_mask_of(ids))))
    batch = uniform.sample(replay, jax.random.PRNGKey(0), 64)
    ids = np.asarray(batch.obs[:, 0]).astype(int)
    assert set(ids.tolist()) == set(range(9, 14))  # the newest five
    np.testing.assert_array_equal(np.asarray(batch.next_mask), _mask_of(ids))


def test_frame_replay_returns_stored_next_masks_across_wrap_around():
    replay = frame_replay.init_frame_replay(6, 1, (2, 1, 1), mask_actions=4)
    frame = lambda i: jnp.full((1, 2, 1, 1), i, jnp.uint8)  # noqa: E731 - a stack whose newest frame is i
    t = 0
    for episode in range(4):  # episodes of 3 transitions: frames t..t+3, the ring of 7 slots wraps
        for step in range(3):
            replay = frame_replay.add(replay, Batch(
                obs=frame(t), action=jnp.zeros(1, jnp.int32), reward=jnp.zeros(1), next_obs=frame(t + 1),
                terminated=jnp.array([step == 2]), episode_end=jnp.array([step == 2]),
                next_mask=jnp.asarray(_mask_of(np.array([t + 1])))))
            t += 1
        t += 1  # the next episode's first frame is new
    batch = frame_replay.sample(replay, jax.random.PRNGKey(0), 64)
    next_ids = np.asarray(batch.next_obs[:, -1, 0, 0]).astype(int)
    assert next_ids.min() > 6  # only the newest transitions survive the wrap-around
    np.testing.assert_array_equal(np.asarray(batch.next_mask), _mask_of(next_ids))


# --- envs give masks; the loops store the true successor's --------------------------------


def test_vault_final_mask_comes_from_the_step_not_the_reset():
    from dqnx.envs import make_env

    env = make_env("Vault-v0")
    assert env.masked and env.num_actions == 3
    _, state = env.reset(jax.random.PRNGKey(0))
    for action in (1, 1, 1, 1):
        *_, mask, final_mask = env.step_with_masks(jax.random.PRNGKey(0), state, action)
        _, state, *_ = env.step_with_masks(jax.random.PRNGKey(0), state, action)
    assert np.asarray(env.action_mask(state)).tolist() == [True, False, True]
    obs, state, reward, terminated, truncated, final_obs, mask, final_mask = env.step_with_masks(
        jax.random.PRNGKey(0), state, 2)
    assert (float(reward), bool(terminated)) == (10.0, True)
    assert np.asarray(final_mask).tolist() == [True, False, True]  # tile 4's, the true last state
    assert np.asarray(mask).tolist() == [False, True, False]  # the reset tile 0's


@pytest.mark.parametrize("env_id", ["Vault-v0", "gym_toys:Vault"])
def test_loops_store_each_transitions_true_next_mask(env_id, toys_on_path, tiny):
    from dqnx.agents import make_learner
    from dqnx.drivers import make_driver
    from dqnx.envs import make_env

    env = make_env(env_id, {"length": 3})  # a short vault: many episodes end in 600 random steps
    assert env.masked
    config = tiny(total_steps=600, learning_starts=10_000, num_envs=2, train_freq=2, buffer_size=600,
                  epsilon_end=1.0)  # random legal play
    driver = make_driver(config, env, make_learner("dqn", config, env), [0])
    try:
        state = driver.place(driver.init_states([0]))
        state, _ = driver.chunk(state, 300, 0)
    finally:
        driver.close()
    storage = driver.real(state).agent.replay.storage
    tiles = np.asarray(storage.next_obs).argmax(-1)[0]
    ends = np.asarray(storage.terminated)[0]
    assert ends.sum() > 5  # episodes ended (by opening), so autoresets happened
    np.testing.assert_array_equal(np.asarray(storage.next_mask)[0], vault_legal(tiles, length=3))


def test_dict_observation_mask_is_taken_out(toys_on_path):
    from dqnx.envs import make_env

    env = make_env("gym_toys:VaultDict")
    assert (env.masked, env.num_states, env.obs_shape) == (True, 5, (5,))
    obs, info = env.make().reset(seed=0)
    assert obs.tolist() == [1, 0, 0, 0, 0] and info["action_mask"].tolist() == [0, 1, 0]


def test_pgx_2048_gives_its_legal_action_mask():
    pytest.importorskip("pgx")
    from dqnx.envs import make_env

    env = make_env("2048-pgx")
    assert (env.masked, env.num_actions, env.obs_shape) == (True, 4, (4, 4, 31))
    _, state = env.reset(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(np.asarray(env.action_mask(state)), np.asarray(state.game.legal_action_mask))
    action = int(np.flatnonzero(np.asarray(env.action_mask(state)))[0])
    *_, mask, final_mask = env.step_with_masks(jax.random.PRNGKey(1), state, action)
    _, state, *_ = env.step_with_masks(jax.random.PRNGKey(1), state, action)
    np.testing.assert_array_equal(np.asarray(final_mask), np.asarray(state.game.legal_action_mask))


def test_taxi_v4_is_masked():
    from dqnx.envs import make_env

    assert make_env("Taxi-v4").masked
    assert not make_env("CartPole-v1", backend="gymnasium").masked


# --- learning: zero violations, the legal optimum ---------------------------------------


# Every switch of Rainbow: Double, dueling, n-step, prioritized replay, noisy nets, C51 (over
# the legal returns 0..10). Plain DQN learns masked on the host loop below.
RAINBOW = {"double_dqn": True, "dueling": True, "n_step": 3, "prioritized": True, "noisy": True,
           "distributional": True, "num_atoms": 11, "v_min": 0.0, "v_max": 10.0}


def test_rainbow_learns_vault_without_an_illegal_action(tmp_path, tiny, capsys):
    """Vault-v0 pays 100 for any illegal action and ends the episode: a training or evaluation
    return above 10 is a violation. Unmasked, DQN learns to take the jackpot. The full Rainbow
    set acts (epsilon, noise, greedy) and bootstraps (C51's legal expected value, Double's
    legal argmax, the n-step's last mask) only among legal actions."""
    config = tiny(total_steps=3000, eval_every=1000, learning_starts=200, epsilon_decay_steps=1500, **RAINBOW)
    run = dqnx.train("Vault-v0", config=config, out=tmp_path / "vault")
    summary = run.summary
    assert summary["action_masks"] is True
    assert summary["eval_mean_return"] == 10.0  # the legal optimum, every episode
    agent = dqnx.load(tmp_path / "vault")
    assert agent.action_masks
    from dqnx.viz.rollout import greedy_episodes  # the episodes plots and recordings show (masked when trained so)

    assert [float(e.rewards.sum()) for e in greedy_episodes(agent, 3)] == [10.0] * 3
    from dqnx.inspect import show_agent

    show_agent(agent)
    assert "trained with action masks" in capsys.readouterr().out
    metrics = [line.split(",") for line in (tmp_path / "vault" / "metrics.csv").read_text().splitlines()]
    header = metrics[0]
    returns = [float(row[header.index(name)]) for row in metrics[1:] for name in ("train_return", "eval_mean_return")]
    assert max(r for r in returns if np.isfinite(r)) <= 10.0


def test_dqn_on_a_raising_gymnasium_env_never_acts_illegally(tmp_path, toys_on_path, tiny):
    """gym_toys:VaultDict raises IllegalAction on any illegal action, in training and evaluation."""
    config = tiny(total_steps=1500, eval_every=500, learning_starts=100, epsilon_decay_steps=800, final_eval_episodes=10)
    run = dqnx.train("gym_toys:VaultDict", config=config, out=tmp_path / "vault")
    assert run.summary["action_masks"] is True
    assert run.summary["eval_mean_return"] == 10.0
    config_json = json.loads((tmp_path / "vault" / "config.json").read_text())
    assert config_json["config"]["action_mask"] == "auto"


# --- errors -----------------------------------------------------------------------------


def _cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    from dqnx import cli

    monkeypatch.setattr(sys, "argv", ["dqnx", *map(str, args)])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    return stop.value.code, capsys.readouterr().err.strip()


def test_mask_of_the_wrong_length_is_one_line_exit_2_nothing_written(tmp_path, toys_on_path, monkeypatch, capsys):
    out = tmp_path / "run"
    code, err = _cli(monkeypatch, capsys, "train", "gym_toys:WrongMaskLength", "--steps", "100", "--out", out)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "action mask" in err and "shape (5,)" in err and "3 actions" in err
    assert not out.exists()


def test_non_terminal_state_without_legal_action_is_a_clear_error(tmp_path, toys_on_path, monkeypatch, capsys):
    code, err = _cli(monkeypatch, capsys, "train", "gym_toys:DeadEnd", "--agent", "tabular-q", "--steps", "2000",
                     "--quiet", "--set", "eval_episodes=2", "--out", tmp_path / "run")
    assert code == 1, err
    line = err.splitlines()[-1]
    assert "gym_toys:DeadEnd gave no legal action in a non-terminal state at env step" in line


def test_action_mask_setting_is_checked(tiny):
    from dqnx.errors import UsageError

    with pytest.raises(UsageError, match="action_mask must be one of auto, off"):
        tiny(action_mask="on")


# --- every acting path of a trained agent: Agent.act, plots, record, dataset ----------------


def _jackpot_tables(run_dir: Path) -> None:
    """Rewrite a tabular Vault run's best weights so that every illegal action has the largest Q
    (100) and the legal optimum (right, then open) beats the other legal actions: acting
    without the mask takes an illegal action on every tile, with it the legal optimum."""
    from dqnx.runs.run_dir import RunDir

    agent = dqnx.load(run_dir)
    tiles = np.arange(agent.env.num_states)
    legal = vault_legal(tiles, length=len(tiles))
    best = np.zeros_like(legal, np.float32)
    best[tiles, np.where(tiles == tiles[-1], 2, 1)] = 1.0
    table = np.where(legal, best, 100.0).astype(np.float32)
    params = jax.tree.map(lambda x: jnp.broadcast_to(table, x.shape).astype(x.dtype), agent.params)
    RunDir.open(run_dir).save_weights("best", params, agent.weights_info)


@pytest.fixture(scope="module")
def jackpot_runs(tmp_path_factory):
    """Tabular Vault runs trained with masks, their best weights rewritten by _jackpot_tables:
    the Gymnasium toy that raises on an illegal action (host loop; evaluated with eval_epsilon
    0.3, so recordings take random actions too) and the JAX Vault-v0, whose jackpot pays 100."""
    import importlib

    sys.path.insert(0, str(TOYS))
    importlib.import_module("gym_toys")
    root = tmp_path_factory.mktemp("jackpot")
    config = TabularConfig(total_steps=400, eval_every=200, eval_episodes=4, final_eval_episodes=4, eval_epsilon=0.3,
                            epsilon_decay_steps=200)
    runs = {}
    try:
        for env_id in ("gym_toys:Vault", "Vault-v0"):
            out = root / env_id.replace(":", "-")
            run = dqnx.train(env_id, agent="tabular-q", config=config, out=out, tensorboard=False)
            assert run.summary["action_masks"] is True
            _jackpot_tables(out)
            runs[env_id] = out
        yield runs
    finally:
        sys.path.remove(str(TOYS))


def test_agent_act_takes_the_mask(jackpot_runs):
    agent = dqnx.load(jackpot_runs["gym_toys:Vault"])
    tiles = np.arange(5)
    legal = vault_legal(tiles)
    assert agent.act(tiles).tolist() == [0, 2, 2, 2, 1]  # unmasked: an illegal jackpot on every tile
    assert agent.act(tiles, legal).tolist() == [1, 1, 1, 1, 2]  # masked: the legal optimum
    assert int(agent.act(4, legal[4])) == 2 and int(agent.act(0, mask=[0, 1, 0])) == 1
    from dqnx.errors import UsageError

    with pytest.raises(UsageError, match=r"mask must have shape \(3,\) or \(5, 3\)"):
        agent.act(tiles, legal[:2])
    with pytest.raises(UsageError, match="mask allows no action"):
        agent.act(0, [False, False, False])


def test_record_and_plots_on_a_masked_gymnasium_env_never_act_illegally(jackpot_runs, tmp_path):
    """gym_toys:Vault raises IllegalAction on an illegal action: one unmasked step would fail here."""
    from dqnx.viz.plots import add_episodes, read_run
    from dqnx.viz.record import record

    run_dir = jackpot_runs["gym_toys:Vault"]
    recorded = record(run_dir, tmp_path / "vault.gif", episodes=3, seed=0)  # eval_epsilon 0.3: random legal steps too
    assert recorded["returns"] == [10.0] * 3 and max(recorded["lengths"]) > 5
    run = read_run(run_dir)
    add_episodes(run, episodes=2)
    for episode in run.episodes[0]:
        assert episode.actions.tolist() == [1, 1, 1, 1, 2] and episode.total_return == 10.0


@pytest.mark.parametrize("env_id", ["gym_toys:Vault", "Vault-v0"])
def test_dataset_of_a_masked_expert_holds_only_legal_actions(env_id, jackpot_runs, tmp_path):
    """Vault-v0 pays its jackpot (100) for an illegal action; gym_toys:Vault raises."""
    from dqnx.imitation.dataset import make_dataset, read_dataset

    meta = make_dataset(jackpot_runs[env_id], samples=23, out=tmp_path / "vault.csv")
    assert meta["action_masks"] is True
    assert meta["expert"]["mean_return_complete_episodes"] == 10.0 and meta["episodes"] == 5
    data = read_dataset(tmp_path / "vault.csv")
    tiles = data.obs.argmax(axis=-1)
    assert data.actions.tolist() == [1, 1, 1, 1, 2] * 4 + [1, 1, 1]
    assert vault_legal(tiles)[np.arange(len(tiles)), data.actions].all()
