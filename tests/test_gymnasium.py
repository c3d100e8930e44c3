"""The Gymnasium backend: host loop, spaces, Atari preprocessing, frame-deduplicated replay."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dqnx
from dqnx.agents import Batch, make_learner
from dqnx.agents.dqn import td_target
from dqnx.drivers import make_driver
from dqnx.envs import make_env, resolve_backend
from dqnx.errors import UsageError
from dqnx.replay import frames as frame_replay

TOYS = Path(__file__).parent


@pytest.fixture
def toys_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(TOYS))


# --- backends and spaces ------------------------------------------------------------------


def test_backend_resolution():
    assert resolve_backend("CartPole-v1") == "jax"
    assert resolve_backend("CartPole-v1", "gymnasium") == "gymnasium"
    assert resolve_backend("LunarLander-v3") == "gymnasium"
    assert resolve_backend("Breakout-MinAtar") == "jax"
    with pytest.raises(UsageError, match="not a JAX-native environment"):
        resolve_backend("LunarLander-v3", "jax")
    with pytest.raises(UsageError, match="backend must be one of jax, gymnasium"):
        resolve_backend("CartPole-v1", "torch")


def test_gymnasium_env_description():
    env = make_env("CartPole-v1", backend="gymnasium")
    assert (env.backend, env.obs_shape, env.num_actions, env.max_episode_steps, env.solve_threshold) == (
        "gymnasium", (4,), 2, 500, 475.0)
    lake = make_env("FrozenLake-v1")
    assert lake.num_states == 16 and lake.obs_shape == (16,)
    obs, _ = lake.make().reset(seed=0)
    np.testing.assert_array_equal(obs, np.eye(16, dtype=np.float32)[0])  # Discrete observations arrive one-hot


@pytest.mark.parametrize("env_id, message", [
    ("Pendulum-v1", "has continuous (Box) actions"),
    ("gym_toys:MultiDiscreteActions", "has MultiDiscrete actions; flatten them into one Discrete space"),
    ("gym_toys:DictObservations", "has Dict observations (flatten it with gymnasium.wrappers.FlattenObservation)"),
    ("Blackjack-v1", "has Tuple observations"),
    ("LunarLandr-v3", "did you mean 'LunarLander-v3'?"),
    ("gym_toys:NoSuchEnv", "module 'gym_toys' has no 'NoSuchEnv'"),
])
def test_unsupported_spaces_say_what_is_supported(toys_on_path, env_id, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        make_env(env_id)
    assert "\n" not in str(err.value)
    if message.startswith("has "):
        assert "dqnx takes a Discrete action space and Box (any shape) or Discrete observations" in str(err.value)


@pytest.mark.parametrize("params, message", [
    ({"map_name": "9x9"}, "cannot build FrozenLake-v1 with those parameters (KeyError"),
    ({"no_such": 1}, "cannot build FrozenLake-v1 with those parameters (TypeError"),
])
def test_bad_gymnasium_env_params_are_usage_errors(params, message):
    with pytest.raises(UsageError) as err:
        make_env("FrozenLake-v1", params)
    assert str(err.value).startswith(message)


def test_bad_time_limit_of_a_custom_env(toys_on_path):
    with pytest.raises(UsageError, match="max_episode_steps must be a positive integer, got 'abc'"):
        make_env("gym_toys:Corridor", {"max_episode_steps": "abc"})


def test_small_boards_build_and_a_nature_cnn_request_is_refused(tiny):
    from dqnx.agents import make_learner

    minatar = make_env("Breakout-MinAtar")  # 10x10x4: too small for the Nature CNN (auto: the MinAtar one, test_minatar.py)
    learner = make_learner("dqn", tiny(), minatar)
    jax.eval_shape(learner.init, jax.random.PRNGKey(0))
    with pytest.raises(UsageError, match="network=cnn needs image observations of at least 36x36"):
        make_learner("dqn", tiny(network="cnn"), minatar)


def test_cli_bad_space_exits_2_with_one_line(tmp_path, dqnx_cli_here):
    result = dqnx_cli_here(["train", "Pendulum-v1", "--steps", "100"], cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: Pendulum-v1 has continuous (Box) actions"), result.stderr
    assert not (tmp_path / "runs").exists()


# --- the host loop ------------------------------------------------------------------------


def _stored(driver_state) -> Batch:
    """The transitions in seed 0's uniform replay, oldest first."""
    replay = jax.tree.map(lambda x: np.asarray(x[0]), driver_state.agent.replay)
    n = int(replay.size)
    return jax.tree.map(lambda x: x[:n] if x is not None else None, replay.storage)


@pytest.mark.parametrize("limit, end, terminated_at_end", [(3, 1000, False), (1000, 3, True)])
def test_host_loop_stores_true_successors_and_keeps_truncation_apart(toys_on_path, tiny, limit, end, terminated_at_end):
    """Counter's observation is its step count, so every stored transition is known in advance."""
    env = make_env("gym_toys:Counter", {"limit": limit, "end": end})
    config = tiny(learning_starts=10_000, total_steps=20_000, buffer_size=64)
    driver = make_driver(config, env, make_learner("dqn", config, env), [0])
    try:
        state = driver.place(driver.init_states([0]))
        state, output = driver.chunk(state, 7, 0)
    finally:
        driver.close()
    stored = _stored(state)
    # Hand-built: episodes 0->1->2->3, then again from 0; the third step ends each episode.
    obs = np.array([0, 1, 2, 0, 1, 2, 0], np.float32)[:, None]
    next_obs = np.array([1, 2, 3, 1, 2, 3, 1], np.float32)[:, None]
    terminated = np.array([False, False, terminated_at_end] * 2 + [False])
    np.testing.assert_array_equal(stored.obs, obs)
    np.testing.assert_array_equal(stored.next_obs, next_obs)  # 3, never the reset observation 0
    np.testing.assert_array_equal(stored.terminated, terminated)
    np.testing.assert_array_equal(stored.reward, np.ones(7, np.float32))
    finished = output.finished_return[0, :, 0]
    np.testing.assert_array_equal(np.isnan(finished), [True, True, False, True, True, False, True])
    assert finished[2] == finished[5] == 3.0
    # The TD target bootstraps through the truncation, not through the termination.
    next_q = jnp.full((7, 2), 10.0)
    target = np.asarray(td_target(jnp.asarray(stored.reward), jnp.asarray(stored.terminated), next_q, 0.5))
    assert target[2] == (1.0 if terminated_at_end else 6.0)
    assert target[0] == 6.0


@pytest.mark.parametrize("num_envs, train_freq", [(1, 4), (2, 6)])
def test_staged_learning_equals_learning_after_every_step(tiny, num_envs, train_freq):
    """Staging transitions up to the training step must not change what is learned: the same
    run with a learn call after every iteration ends with bit-identical weights."""
    config = tiny(num_envs=num_envs, train_freq=train_freq, learning_starts=40, total_steps=10_000)
    env = make_env("CartPole-v1", backend="gymnasium")
    finals = []
    for block in (None, 1):
        driver = make_driver(config, env, make_learner("dqn", config, env), [3, 4])
        if block is not None:
            driver.block = block
        try:
            state = driver.place(driver.init_states([3, 4]))
            state, _ = driver.chunk(state, 60, 0)
            state, output = driver.chunk(state, 45, 60 * num_envs)
        finally:
            driver.close()
        finals.append((jax.device_get(state.agent.params), output.loss))
    (staged, staged_loss), (every_step, every_loss) = finals
    assert int(np.sum(np.isfinite(staged_loss))) > 0
    jax.tree.map(np.testing.assert_array_equal, staged, every_step)
    np.testing.assert_array_equal(staged_loss, every_loss)
    # and the two seeds learned different things
    assert not np.array_equal(jax.tree.leaves(staged)[0][0], jax.tree.leaves(staged)[0][1])


def test_host_loop_runs_are_reproducible(tmp_path, tiny):
    config = tiny(total_steps=600, learning_starts=100, eval_every=300, eval_episodes=2, final_eval_episodes=2)
    runs = [dqnx.train("CartPole-v1", backend="gymnasium", seed=s, config=config, out=tmp_path / f"run{i}")
            for i, s in enumerate([5, 5, 6])]
    metrics = [(tmp_path / f"run{i}" / "metrics.csv").read_text().splitlines() for i in range(3)]
    strip = lambda rows: [",".join(r.split(",")[:-2]) for r in rows]  # drop steps/s and wall seconds
    assert strip(metrics[0]) == strip(metrics[1])
    assert strip(metrics[0]) != strip(metrics[2])
    assert runs[0].summary["eval_mean_return"] == runs[1].summary["eval_mean_return"]


def test_host_loop_learns_a_custom_environment_within_a_step_budget(toys_on_path, tmp_path):
    """A Gymnasium class given as 'module:Class', one-hot observations, 2 seeds side by side."""
    config = {"total_steps": 3000, "learning_starts": 300, "epsilon_decay_steps": 1500, "eval_every": 500,
              "eval_episodes": 4, "final_eval_episodes": 4, "hidden_sizes": [32], "buffer_size": 3000,
              "gamma": 0.9, "num_envs": 2, "train_freq": 2, "target_update_period": 1, "tau": 0.05}
    run = dqnx.train("gym_toys:Corridor", seeds=2, config=config, env_params={"max_episode_steps": 30},
                     out=tmp_path / "run")
    summary = run.summary
    assert [s["eval_mean_return"] for s in summary["per_seed"]] == [-5.0, -5.0]  # the optimal walk, both seeds
    spec = json.loads((tmp_path / "run" / "config.json").read_text())
    assert spec["backend"] == "gymnasium" and spec["env_id"] == "gym_toys:Corridor"
    assert spec["env_params"] == {"max_episode_steps": 30}
    agent = dqnx.load(tmp_path / "run")
    assert agent.act(0) == 1  # state index, one-hot inside: step right
    result = dqnx.evaluate(agent, episodes=3)
    assert result["mean_return"] == -5.0

    # Recordings and the Q-vs-return plot work for Gymnasium runs too (frames from env.render()).
    from PIL import Image

    from dqnx.viz.plots import make_plots
    from dqnx.viz.record import record

    info = record(tmp_path / "run", tmp_path / "walk.gif", episodes=2)
    assert info["lengths"] == [5, 5] and info["returns"] == [-5.0, -5.0]
    with Image.open(tmp_path / "walk.gif") as gif:
        assert gif.n_frames == info["frames"] == 2 * (5 + 1)
    written = make_plots([tmp_path / "run"], episodes=2)
    assert {p.name for p in written} >= {"q_vs_return.png", "returns.png", "loss.png"}


def test_gymnasium_run_through_the_cli_prints_its_backend_and_resumes(tmp_path, dqnx_cli_here):
    dqnx_cli = dqnx_cli_here  # the command's entry point in this process (test_cli.py runs it in a real one)
    sets = ["--set", "eval_every=500", "--set", "eval_episodes=2", "--set", "final_eval_episodes=2",
            "--set", "hidden_sizes=16", "--set", "learning_starts=100", "--set", "buffer_size=1000"]
    first = dqnx_cli(["train", "CartPole-v1", "--backend", "gymnasium", "--steps", "500", "--out", "run", *sets],
                     cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "backend: gymnasium, host loop" in first.stderr + first.stdout
    # The preset's learning rate decays to 0 at step 500: the extension trains at a given lr_end.
    resumed = dqnx_cli(["train", "--resume", "run", "--steps", "1000", "--set", "lr_end=1e-4", "-q"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["total_steps"] == 1000
    evaluated = dqnx_cli(["eval", "run", "--episodes", "2", "--json"], cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["episodes"] == 2


def test_instances_and_factories_train_too(tmp_path, tiny):
    config = tiny(total_steps=400, learning_starts=100, eval_every=400, eval_episodes=2, final_eval_episodes=2)
    run = dqnx.train(gym.make("CartPole-v1"), config=config, out=tmp_path / "instance")
    assert run.env_id == "CartPole-v1" and run.summary["total_steps"] == 400
    factory = lambda: gym.make("Acrobot-v1")  # noqa: E731
    run = dqnx.train(factory, config=config, out=tmp_path / "factory")
    assert run.summary["total_steps"] == 400
    # its recorded id (this test module's <lambda>) cannot rebuild it: resume takes the factory again
    with pytest.raises(UsageError, match=r"takes it again: dqnx.load\(path, env=...\) or dqnx.train\(env, resume=path\)"):
        dqnx.train(resume=tmp_path / "factory", steps=800)
    run = dqnx.train(factory, resume=tmp_path / "factory", steps=800)
    assert run.summary["total_steps"] == 800


# --- frame-deduplicated replay -------------------------------------------------------------


def _frame_streams(rng, envs: int, steps: int, stack: int, p_end: float):
    """Per env, transitions as a naive store keeps them: whole stacked observations, with
    gymnasium's reset padding (an episode's first observation repeats its first frame)."""
    counter = iter(range(1, 10**6))
    streams = []
    for _ in range(envs):
        out = []
        obs = np.stack([np.full((2, 3), next(counter) % 251, np.uint8)] * stack)
        for t in range(steps):
            nxt = np.concatenate([obs[1:], np.full((1, 2, 3), next(counter) % 251, np.uint8)])
            end = bool(rng.random() < p_end)
            terminated = end and bool(rng.random() < 0.5)
            out.append(dict(obs=obs, action=int(rng.integers(6)), reward=float(t), next_obs=nxt,
                            terminated=terminated, end=end))
            obs = np.stack([np.full((2, 3), next(counter) % 251, np.uint8)] * stack) if end else nxt
        streams.append(out)
    return streams


@pytest.mark.parametrize("envs, capacity, p_end", [(1, 12, 0.2), (3, 30, 0.1), (2, 40, 0.0), (2, 1000, 0.1)])
def test_frame_replay_rebuilds_exactly_what_a_naive_store_holds(envs, capacity, p_end):
    rng = np.random.default_rng(envs)
    stack, steps = 4, 50
    streams = _frame_streams(rng, envs, steps, stack, p_end)
    buffer = frame_replay.init_frame_replay(capacity, envs, (stack, 2, 3))
    add = jax.jit(frame_replay.add)
    for t in range(steps):
        rows = [streams[e][t] for e in range(envs)]
        buffer = add(buffer, Batch(
            obs=jnp.stack([r["obs"] for r in rows]), action=jnp.array([r["action"] for r in rows]),
            reward=jnp.array([r["reward"] for r in rows]), next_obs=jnp.stack([r["next_obs"] for r in rows]),
            terminated=jnp.array([r["terminated"] for r in rows]), episode_end=jnp.array([r["end"] for r in rows])))
    # Draw far more samples than slots: every stored transition shows up.
    sample = jax.device_get(frame_replay.sample(buffer, jax.random.PRNGKey(0), 4000))
    slots_per_env = buffer.slots
    seen = set()
    for i in range(4000):
        t = int(sample.reward[i])  # the reward is the step index: it names the naive transition
        matches = [e for e in range(envs) if np.array_equal(streams[e][t]["obs"], sample.obs[i])]
        assert len(matches) == 1, "a rebuilt observation must equal exactly one naive one"
        naive = streams[matches[0]][t]
        np.testing.assert_array_equal(sample.next_obs[i], naive["next_obs"])
        assert (sample.action[i], bool(sample.terminated[i])) == (naive["action"], naive["terminated"])
        seen.add((matches[0], t))
    for e in range(envs):
        times = sorted(t for env, t in seen if env == e)
        # The newest transitions are all held, contiguously back to the oldest still complete one.
        assert times == list(range(times[0], steps))
        episode_ends = sum(r["end"] for r in streams[e][times[0]:])
        assert len(times) >= min(steps, slots_per_env - 1 - episode_ends - (stack - 1))


def test_frame_replay_memory_per_transition():
    buffer = jax.eval_shape(lambda: frame_replay.init_frame_replay(1_000_000, 1, (4, 84, 84)))
    total = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(buffer))
    assert total < 7.2e9  # ~7,056 bytes of frame + 18 of bookkeeping per transition, vs 56,448 stored whole


# --- Atari ---------------------------------------------------------------------------------

# Only these tests need ale-py (the `atari` extra): each skips itself, the rest of the module runs without it.


def test_atari_training_wrappers_clip_rewards_and_end_episodes_at_life_loss():
    pytest.importorskip("ale_py")
    env = make_env("ALE/Breakout-v5")
    assert (env.obs_shape, env.obs_dtype, env.frame_stack, env.atari) == ((4, 84, 84), np.uint8, 4, True)
    train = env.make(train=True)
    obs, _ = train.reset(seed=0)
    assert obs.shape == (4, 84, 84) and all(np.array_equal(obs[0], obs[k]) for k in range(4))
    rng = np.random.default_rng(0)
    lives_before = train.unwrapped.ale.lives()
    for _ in range(3000):
        obs, reward, terminated, truncated, _ = train.step(int(rng.integers(env.num_actions)))
        assert reward in (-1.0, 0.0, 1.0)
        if terminated:
            break
    assert terminated and train.unwrapped.ale.lives() == lives_before - 1  # a life lost, the game goes on
    train.reset()
    assert train.unwrapped.ale.lives() == lives_before - 1  # reset continued the same game

    def wrappers(env):
        names = []
        while hasattr(env, "env"):
            names.append(type(env).__name__)
            env = env.env
        return names

    from dqnx.envs.atari import LifeLossEndsEpisode

    assert {"ClipReward", LifeLossEndsEpisode.__name__} <= set(wrappers(train))
    evaluation = wrappers(env.make(train=False))  # true scores: whole games, rewards as the game gives them
    assert "ClipReward" not in evaluation and LifeLossEndsEpisode.__name__ not in evaluation
    assert {"AtariPreprocessing", "FrameStackObservation"} <= set(evaluation)


def test_atari_smoke_run_through_the_host_loop(tmp_path):
    pytest.importorskip("ale_py")
    config = {"total_steps": 300, "learning_starts": 100, "buffer_size": 500, "batch_size": 8, "train_freq": 4,
              "eval_every": 300, "eval_episodes": 1, "final_eval_episodes": 1, "hidden_sizes": [32],
              "epsilon_decay_steps": 200}
    run = dqnx.train("ALE/Pong-v5", config=config, out=tmp_path / "pong")
    summary = run.summary
    assert summary["total_steps"] == 300
    score = summary["eval_mean_return"]
    assert -21 <= score <= 21 and score == int(score)  # a Pong score
    agent = dqnx.load(tmp_path / "pong")
    frame_stack = agent.env.make(train=False).reset(seed=1)[0]
    assert agent.q_values(frame_stack).shape == (6,)


def test_imitation_from_a_gymnasium_expert(toys_on_path, tmp_path):
    """dqnx dataset / imitate work on Gymnasium runs (rollouts and evaluations on the host), on an expert
    whose actions depend on the state: TwoExits heads for the nearer exit, left or right."""
    from dqnx.imitation.dataset import make_dataset, read_dataset
    from dqnx.imitation.train import imitate

    config = {"total_steps": 2000, "learning_starts": 200, "epsilon_decay_steps": 1000, "eval_every": 1000,
              "eval_episodes": 4, "final_eval_episodes": 4, "hidden_sizes": [32], "buffer_size": 2000,
              "gamma": 0.9, "tau": 0.05}
    dqnx.train("gym_toys:TwoExits", config=config, env_params={"max_episode_steps": 30}, out=tmp_path / "expert",
               tensorboard=False)
    make_dataset(tmp_path / "expert", 60, tmp_path / "train.csv", seed=0)
    make_dataset(tmp_path / "expert", 40, tmp_path / "test.csv", seed=1)
    train, test = read_dataset(tmp_path / "train.csv"), read_dataset(tmp_path / "test.csv")
    assert train.meta["backend"] == "gymnasium" and len(train) == 60
    tiles = train.obs.argmax(axis=1)  # one-hot observations
    np.testing.assert_array_equal(train.actions, (tiles > 3).astype(int))  # the expert's walk is the optimal one
    assert set(train.actions.tolist()) == set(test.actions.tolist()) == {0, 1}
    run = imitate(tmp_path / "train.csv", tmp_path / "test.csv", config={
        "epochs": 50, "batch_size": 20, "learning_rate": 3e-3, "eval_every_epochs": 25, "eval_episodes": 4,
        "final_eval_episodes": 4, "hidden_sizes": [16]}, out=tmp_path / "imitated")
    assert run.summary["test_accuracy"] == 1.0  # six tiles, each seen with its one label
    imitated = dqnx.evaluate(tmp_path / "imitated", episodes=20)
    expert = dqnx.evaluate(tmp_path / "expert", episodes=20)
    assert imitated["mean_return"] == expert["mean_return"] >= -3.0  # the same starts; a random walk's is -8.7
