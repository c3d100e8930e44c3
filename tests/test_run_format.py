"""Runs from before keep loading: tests/fixtures/run-format-1-cartpole was written by dqnx
before the round-2 reshaping (commit 1f3b8c1: a 2k-step CartPole-v1 DQN run, MLP 16-16,
replay of 1k); `dqnx eval`, `dqnx.load` and `--resume` must still read it, and a run of a
format this dqnx cannot resume is refused with a one-line error naming the version.

tests/fixtures/run-format-1-pqn-minatar is a format-1 run with a CNN and layer_norm, which
format 2 changed (a LayerNorm after the convolution): written by commit 7760f2e (1105abf~1,
the last before that LayerNorm) with
    dqnx train Breakout-MinAtar --agent pqn --steps 512 --seed 0 --set hidden_sizes=8
      --set num_envs=4 --set rollout_steps=8 --set num_minibatches=2 --set num_epochs=1
      --set eval_every=256 --set eval_episodes=4 --set final_eval_episodes=4
      --set checkpoint_every=512 --set epsilon_decay_steps=256 --no-tensorboard
(the MinAtar network, 16 channels, then a dense layer of 8 with LayerNorm; 290 KB). The same
code printed the Q-values and the `dqnx eval` figures below.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import dqnx
from dqnx.errors import UsageError
from dqnx.runs.files import flatten

FIXTURE = Path(__file__).parent / "fixtures" / "run-format-1-cartpole"
# `dqnx eval FIXTURE --episodes 5 --seed 0 --json` printed this mean with the code that wrote the fixture.
EXPECTED_EVAL_MEAN_RETURN, EXPECTED_EVAL_STD_RETURN = 58.0, 2.280350923538208


CNN_FIXTURE = Path(__file__).parent / "fixtures" / "run-format-1-pqn-minatar"
# Q-values of three boards, np.random.default_rng(0).integers(0, 2, (3, 10, 10, 4)), under the
# fixture's best and last weights, as the code that wrote it computed them (nn.Conv; now PatchConv).
CNN_EXPECTED_Q = {
    "best": [[0.36445683240890503, -0.5757014155387878, -0.16857296228408813],
             [0.9006678462028503, -0.4581121802330017, 0.009987949393689632],
             [0.7302137017250061, -0.31819725036621094, 0.07634802907705307]],
    "last": [[0.3567468225955963, -0.5648561716079712, -0.16789335012435913],
             [0.893811821937561, -0.453286737203598, 0.005996372550725937],
             [0.7230348587036133, -0.3111680746078491, 0.07689699530601501]],
}
# `dqnx eval CNN_FIXTURE --episodes 5 --seed 0 --json` with the code that wrote it.
CNN_EXPECTED_EVAL_MEAN_RETURN, CNN_EXPECTED_EVAL_STD_RETURN = 0.2, 0.4


def _copy(tmp_path: Path, fixture: Path = FIXTURE) -> Path:
    target = tmp_path / "run"
    shutil.copytree(fixture, target)
    return target


def test_load_reads_the_old_weights():
    agent = dqnx.load(FIXTURE)
    stored = load_file(str(FIXTURE / "best.safetensors"))
    loaded = flatten(agent.params)
    assert loaded.keys() == stored.keys()
    for name in stored:
        np.testing.assert_array_equal(loaded[name], stored[name])
    q = agent.q_values(np.zeros(4, np.float32))
    assert q.shape == (2,) and np.all(np.isfinite(q))


def test_eval_reads_the_old_run_as_before(monkeypatch, capsys):
    from dqnx import cli

    monkeypatch.setattr("sys.argv", ["dqnx", "eval", str(FIXTURE), "--episodes", "5", "--seed", "0", "--json"])
    cli.main()  # in-process: exits only on an error
    out = json.loads(capsys.readouterr().out)
    assert out["episodes"] == 5 and out["weights"] == "best"
    assert out["mean_return"] == pytest.approx(EXPECTED_EVAL_MEAN_RETURN)
    assert out["std_return"] == pytest.approx(EXPECTED_EVAL_STD_RETURN, rel=1e-5)


def test_resume_continues_the_old_run(tmp_path):
    run = _copy(tmp_path)
    dqnx.train(resume=run, steps=2500, tensorboard=False)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["env_steps"]) for r in rows] == [1000, 2000, 2500]
    old_rows = list(csv.DictReader(open(FIXTURE / "metrics.csv")))
    assert [{k: r[k] for k in old_rows[0]} for r in rows[:2]] == old_rows  # kept as they were (new columns aside)
    # The agent's state came back from the old checkpoint: its update counter goes on from there.
    assert int(rows[2]["updates"]) == int(old_rows[1]["updates"]) + 500


def test_resume_refuses_a_format_it_cannot_resume(tmp_path):
    run = _copy(tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["format"] = "dqnx-run/0"
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(UsageError, match="format dqnx-run/0") as caught:
        dqnx.train(resume=run, steps=2500, tensorboard=False)
    assert "\n" not in str(caught.value)
    assert dqnx.load(run).params is not None  # loading the weights still works


def test_a_newer_format_is_refused_naming_it(tmp_path):
    run = _copy(tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["format"] = "dqnx-run/99"
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(UsageError, match="dqnx-run/99"):
        dqnx.load(run)


@pytest.mark.parametrize("weights", ["best", "last"])
def test_an_old_cnn_layer_norm_run_loads_with_its_q_values(weights):
    # Format 1 had no LayerNorm after the convolutions: the run is rebuilt without one.
    agent = dqnx.load(CNN_FIXTURE, weights=weights)
    assert agent.config.layer_norm and not agent.config.conv_layer_norm
    stored = load_file(str(CNN_FIXTURE / f"{weights}.safetensors"))
    loaded = flatten(agent.params)
    assert loaded.keys() == stored.keys()
    for name in stored:
        np.testing.assert_array_equal(loaded[name], stored[name])
    boards = np.random.default_rng(0).integers(0, 2, (3, 10, 10, 4)).astype(np.float32)
    np.testing.assert_allclose(agent.q_values(boards), CNN_EXPECTED_Q[weights], rtol=1e-5, atol=1e-6)


def test_eval_reads_the_old_cnn_run_as_before(monkeypatch, capsys):
    from dqnx import cli

    monkeypatch.setattr("sys.argv", ["dqnx", "eval", str(CNN_FIXTURE), "--episodes", "5", "--seed", "0", "--json"])
    cli.main()
    out = json.loads(capsys.readouterr().out)
    assert out["episodes"] == 5 and out["weights"] == "best"
    assert out["mean_return"] == pytest.approx(CNN_EXPECTED_EVAL_MEAN_RETURN)
    assert out["std_return"] == pytest.approx(CNN_EXPECTED_EVAL_STD_RETURN, rel=1e-5)


def test_the_old_cnn_checkpoint_fits_the_resumed_learner(tmp_path):
    # What `--resume` restores, checked without training: the checkpoint's every tensor
    # (optimizer state and stored rollout included) against the state the resumed run builds.
    import jax

    from dqnx.drivers import jax_loop
    from dqnx.drivers.prepare import resumed_run

    prepared = resumed_run(_copy(tmp_path, CNN_FIXTURE), None, None, {}, trust_env_code=False)
    program = jax_loop.make_program(prepared.config, prepared.env, prepared.learner)
    state = jax.eval_shape(lambda: jax_loop.init_states(program, prepared.spec.seeds))
    (restored, _), meta = prepared.run.load_checkpoint((state, state.agent.params))
    assert meta["progress"]["env_steps"] == 512
    assert "ConvLayerNorm_0" not in restored.agent.params["params"]


def test_new_runs_are_format_2_with_the_conv_layer_norm(tmp_path):
    from dqnx.config import PQNConfig
    from dqnx.runs.run_dir import FORMAT, RunDir, RunSpec

    assert FORMAT == "dqnx-run/2"
    old = RunDir.open(CNN_FIXTURE).read_config()
    spec = RunSpec(env_id=old.env_id, agent="pqn", env_params={}, seeds=[0], config=PQNConfig(), spaces=old.spaces)
    new = RunDir.create(tmp_path / "new", spec).read_config()
    assert json.loads((tmp_path / "new" / "config.json").read_text())["format"] == "dqnx-run/2"
    assert (old.format_version, old.config.conv_layer_norm) == (1, False)
    assert (new.format_version, new.config.conv_layer_norm) == (2, True)


def test_a_resume_whose_checkpoint_fails_to_load_leaves_config_json_as_it_was(tmp_path):
    # --set changes and --steps reach config.json only once the checkpoint has loaded.
    run = _copy(tmp_path)
    (run / "checkpoint.safetensors").write_bytes(b"not a safetensors file")
    before = (run / "config.json").read_bytes()
    with pytest.raises(UsageError, match="checkpoint.safetensors"):
        dqnx.train(resume=run, steps=2500, config={"learning_rate": 1e-4}, tensorboard=False)
    assert (run / "config.json").read_bytes() == before
