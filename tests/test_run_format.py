"""Runs from before keep loading: tests/fixtures/run-format-1-cartpole was written by dqnx
before the round-2 reshaping (commit 1f3b8c1: a 2k-step CartPole-v1 DQN run, MLP 16-16,
replay of 1k); `dqnx eval`, `dqnx.load` and `--resume` must still read it, and a run of a
format this dqnx cannot resume is refused with a one-line error naming the version.
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


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(FIXTURE, target)
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
