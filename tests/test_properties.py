"""Tier 2: properties of whole runs (determinism, seeds, save/load, resume, files)."""

from __future__ import annotations

import csv
import json
import pickle
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

import dqnx
from dqnx.agents import make_learner
from dqnx.drivers import jax_loop
from dqnx.envs import make_env
from dqnx.runs.run_dir import RunDir

TIMING = ("steps_per_second", "wall_seconds")
STEPS = 2000


def metrics(path):
    """metrics.csv rows without the timing columns."""
    with open(path / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def summary_returns(summary):
    keys = ("seed", "steps_to_solve", "best_step", "best_periodic_eval_return", "eval_mean_return", "eval_std_return")
    return (
        summary["total_steps"],
        summary["eval_mean_return"],
        summary["eval_std_return"],
        [{k: s[k] for k in keys} for s in summary["per_seed"]],
    )


def tensors(path):
    return load_file(str(path))


def assert_same_tensors(a, b):
    ta, tb = tensors(a), tensors(b)
    assert sorted(ta) == sorted(tb)
    for name in ta:
        np.testing.assert_array_equal(ta[name], tb[name], err_msg=name)


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny):
    return tmp_path_factory.mktemp("runs"), tiny(total_steps=STEPS)


@pytest.fixture(scope="module")
def run_a(base):
    root, cfg = base
    return dqnx.train("CartPole-v1", seed=0, config=cfg, out=root / "a")


@pytest.fixture(scope="module")
def run_a_again(base, run_a):
    root, cfg = base
    return dqnx.train("CartPole-v1", seed=0, config=cfg, out=root / "a_again")


@pytest.fixture(scope="module")
def run_b(base, run_a):
    root, cfg = base
    return dqnx.train("CartPole-v1", seed=1, config=cfg, out=root / "b")


@pytest.fixture(scope="module")
def run_resumed(base, run_a):
    """The run of run_a, stopped at half its steps and then resumed to the end."""
    root, cfg = base
    half = dqnx.train("CartPole-v1", seed=0, config=cfg.replace(total_steps=STEPS // 2), out=root / "resumed")
    assert half.summary["total_steps"] == STEPS // 2
    first_half_metrics = metrics(half.path)
    resumed = dqnx.train(resume=half.path, steps=STEPS)
    return resumed, first_half_metrics


@pytest.fixture(scope="module")
def run_two_seeds(base, cartpole_two_seeds):
    """Seeds 0 and 1 of the tiny config in one program (conftest's shared run: the same config as base's)."""
    assert cartpole_two_seeds.config == base[1]
    return cartpole_two_seeds


# --- determinism ------------------------------------------------------------------------


def test_run_writes_one_row_per_chunk(run_a, base):
    _, cfg = base
    rows = metrics(run_a.path)
    assert [int(r["env_steps"]) for r in rows] == list(range(cfg.eval_every, STEPS + 1, cfg.eval_every))
    assert {r["seed"] for r in rows} == {"0"}
    assert run_a.summary["total_steps"] == STEPS
    assert run_a.summary["num_seeds"] == 1 and len(run_a.summary["per_seed"]) == 1
    # Updates counted: one per env step from learning_starts on.
    assert int(rows[-1]["updates"]) == STEPS - cfg.learning_starts + 1


def test_same_seed_same_run(run_a, run_a_again):
    assert metrics(run_a.path) == metrics(run_a_again.path)
    assert summary_returns(run_a.summary) == summary_returns(run_a_again.summary)
    assert_same_tensors(run_a.path / "last.safetensors", run_a_again.path / "last.safetensors")
    assert_same_tensors(run_a.path / "best.safetensors", run_a_again.path / "best.safetensors")


def test_different_seeds_differ(run_a, run_b):
    ma, mb = metrics(run_a.path), metrics(run_b.path)
    assert len(ma) == len(mb)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seed"} for r in rows]  # noqa: E731
    assert strip(ma) != strip(mb)
    la, lb = tensors(run_a.path / "last.safetensors"), tensors(run_b.path / "last.safetensors")
    assert any(not np.array_equal(la[k], lb[k]) for k in la)


def test_evaluate_is_deterministic(run_a):
    first = dqnx.evaluate(run_a.path, episodes=5, seed=3)
    second = dqnx.evaluate(run_a.path, episodes=5, seed=3)
    assert first == second
    assert first["episodes"] == 5
    assert first["weights"] == "best"


# --- save -> load -----------------------------------------------------------------------


def _checkpoint(run):
    """(final train state, best params) from the run's checkpoint, and its metadata."""
    rd = RunDir.open(run.path)
    spec = rd.read_config()
    program = jax_loop.make_program(spec.config, make_env(spec.env_id), make_learner(spec.agent, spec.config, make_env(spec.env_id)))
    state = jax_loop.init_states(program, spec.seeds)
    (state, best), meta = rd.load_checkpoint((state, state.agent.params))
    return program, state, best, meta


def _observations(n=64):
    return np.asarray(jax.random.uniform(jax.random.PRNGKey(7), (n, 4), minval=-0.3, maxval=0.3))


def test_load_last_gives_the_final_q_values(run_a):
    program, state, _, meta = _checkpoint(run_a)
    assert meta["progress"]["env_steps"] == STEPS
    obs = _observations()
    params = jax.tree.map(lambda x: x[0], state.agent.params)
    expected = np.asarray(program.learner.q_values(params, jnp.asarray(obs)))
    agent = dqnx.load(run_a.path, weights="last")
    np.testing.assert_array_equal(agent.q_values(obs), expected)
    # One observation works too (a batch of one: equal up to matmul rounding), and act is the argmax.
    np.testing.assert_allclose(agent.q_values(obs[0]), expected[0], rtol=1e-6)
    np.testing.assert_array_equal(agent.act(obs), expected.argmax(axis=1))


def test_load_best_gives_the_best_q_values(run_a):
    program, _, best, _ = _checkpoint(run_a)
    obs = _observations()
    expected = np.asarray(program.learner.q_values(jax.tree.map(lambda x: x[0], best), jnp.asarray(obs)))
    agent = dqnx.load(run_a.path)  # best by default
    assert agent.weights == "best"
    np.testing.assert_array_equal(agent.q_values(obs), expected)
    np.testing.assert_array_equal(dqnx.load(run_a.path, weights="best").q_values(obs), expected)
    summary = run_a.summary["per_seed"][0]
    assert agent.weights_info["env_steps"] == [summary["best_step"]]


def test_runs_are_safetensors_and_loading_never_unpickles(run_a, monkeypatch):
    files = sorted(p.name for p in run_a.path.iterdir())
    assert files == sorted(
        ["config.json", "best.safetensors", "last.safetensors", "checkpoint.safetensors", "metrics.csv", "summary.json",
         "tensorboard"]
    )
    assert not [p for p in run_a.path.rglob("*") if p.suffix in (".pkl", ".pickle", ".npy", ".npz", ".msgpack")]
    for name in ("best.safetensors", "last.safetensors", "checkpoint.safetensors"):
        raw = (run_a.path / name).read_bytes()
        (header_len,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + header_len])
        assert "dqnx" in header["__metadata__"]
        assert load_file(str(run_a.path / name))  # readable by plain safetensors

    def no_pickle(*args, **kwargs):
        raise AssertionError("pickle used while loading a run")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(pickle, "Unpickler", no_pickle)
    agent = dqnx.load(run_a.path, weights="last")
    assert agent.q_values(_observations(2)).shape == (2, 2)
    _checkpoint(run_a)


# --- resume -----------------------------------------------------------------------------


def test_resume_equals_uninterrupted(run_a, run_resumed):
    resumed, first_half = run_resumed
    assert resumed.path != run_a.path
    full = metrics(run_a.path)
    assert first_half == full[: len(first_half)]  # the first half already agreed
    assert metrics(resumed.path) == full
    assert summary_returns(resumed.summary) == summary_returns(run_a.summary)
    assert_same_tensors(resumed.path / "last.safetensors", run_a.path / "last.safetensors")
    assert_same_tensors(resumed.path / "best.safetensors", run_a.path / "best.safetensors")
    # The run's config now says the extended budget.
    saved = json.loads((resumed.path / "config.json").read_text())
    assert saved["config"]["total_steps"] == STEPS
    assert resumed.config.total_steps == STEPS


def test_resume_of_a_finished_run_changes_nothing(run_a, base):
    # Resuming a run that reached its total_steps trains no further.
    root, cfg = base
    rows_before = metrics(run_a.path)
    last_before = tensors(run_a.path / "last.safetensors")
    again = dqnx.train(resume=run_a.path)
    assert metrics(run_a.path) == rows_before
    after = tensors(run_a.path / "last.safetensors")
    for k in last_before:
        np.testing.assert_array_equal(after[k], last_before[k])
    assert summary_returns(again.summary) == summary_returns(run_a.summary)


# --- several seeds in one process -------------------------------------------------------


def test_two_seeds_in_one_program(run_two_seeds, base):
    _, cfg = base
    summary = run_two_seeds.summary
    assert summary["num_seeds"] == 2
    assert [s["seed"] for s in summary["per_seed"]] == [0, 1]
    rows = metrics(run_two_seeds.path)
    assert len(rows) == 2 * (STEPS // cfg.eval_every)
    by_step = {}
    for row in rows:
        by_step.setdefault(row["env_steps"], []).append(row)
    for step, pair in by_step.items():
        assert [r["seed"] for r in pair] == ["0", "1"], step
        a, b = ({k: v for k, v in r.items() if k != "seed"} for r in pair)
        assert a != b, step
    # Weights carry a leading seed axis, and the seeds' weights differ.
    last = tensors(run_two_seeds.path / "last.safetensors")
    assert all(v.shape[0] == 2 for v in last.values())
    assert any(not np.array_equal(v[0], v[1]) for v in last.values())
    agent = dqnx.load(run_two_seeds.path)
    obs = _observations(8)
    assert not np.array_equal(agent.q_values(obs, seed_index=0), agent.q_values(obs, seed_index=1))
    result = dqnx.evaluate(agent, episodes=4)
    assert result["episodes"] == 4 and result["seeds"] == 2 and len(result["per_seed"]) == 2  # episodes per seed


def test_seeds_in_one_program_train_on_the_configured_cadence(tmp_path, tiny):
    """Every 4 env steps from step 200 on, 2 gradient steps: (2000 - 200) / 4 + 1 = 451 phases."""
    cfg = tiny(train_freq=4, gradient_steps=2)
    run = dqnx.train("CartPole-v1", seeds=2, config=cfg, out=tmp_path / "cadence")
    last = [row for row in metrics(run.path) if row["env_steps"] == "2000"]
    assert [int(row["updates"]) for row in last] == [902, 902]


def test_a_seed_count_the_devices_do_not_divide_runs_padded_and_keeps_its_results(tmp_path, tiny, jax_devices):
    """3 seeds on 2 devices run as 2 + 2 (a copy of the last seed fills the second device);
    every file holds 3 seeds, with the numbers of the same 3 seeds run on one device."""
    cfg = tiny(total_steps=1500, buffer_size=1500)
    jax_devices(2)
    compiled = jax_loop.Compiled(jax_loop.make_program(cfg, make_env("CartPole-v1"), make_learner("dqn", cfg, make_env("CartPole-v1"))), 3)
    assert (compiled.padding, len(compiled.sharding.mesh.devices)) == (1, 2)  # the layout this test is about
    dqnx.train("CartPole-v1", seed=0, seeds=3, config=cfg, out=tmp_path / "padded", tensorboard=False)
    jax_devices(1)
    dqnx.train("CartPole-v1", seed=0, seeds=3, config=cfg, out=tmp_path / "one_device", tensorboard=False)
    padded = tmp_path / "padded"
    summary = json.loads((padded / "summary.json").read_text())
    assert [s["seed"] for s in summary["per_seed"]] == [0, 1, 2]
    for name in ("last.safetensors", "best.safetensors", "checkpoint.safetensors"):
        assert all(v.shape[0] == 3 for v in tensors(padded / name).values()), name
    rows, reference = metrics(padded), metrics(tmp_path / "one_device")
    assert [(r["env_steps"], r["seed"]) for r in rows] == [(r["env_steps"], r["seed"]) for r in reference]
    for row, ref in zip(rows, reference):
        for key in row:
            np.testing.assert_allclose(float(row[key]), float(ref[key]), rtol=1e-4, err_msg=key)
    # The seeds differ, so equality above is not the pad's copy matching itself.
    assert rows[-3]["loss"] != rows[-1]["loss"]
