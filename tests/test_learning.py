"""Tier 3: the agent must really learn CartPole-v1 with its preset."""

from __future__ import annotations

import pytest

import dqnx


def test_cartpole_preset_solves(tmp_path):
    run = dqnx.train("CartPole-v1", seed=0, stop_when_solved=True, out=tmp_path / "run")
    summary = run.summary
    assert run.config.total_steps == 50_000  # the real preset, not a test config
    assert summary["steps_to_solve"] is not None, summary
    assert summary["steps_to_solve"] <= 50_000
    assert summary["total_steps"] == summary["steps_to_solve"]  # stopped once solved
    # Final greedy evaluation of the best weights on 100 fresh episodes.
    assert summary["eval_episodes"] == 100
    assert summary["eval_mean_return"] >= 475, summary
    assert summary["per_seed"][0]["solved"] is True


@pytest.mark.slow
def test_cartpole_preset_solves_three_seeds(tmp_path):
    run = dqnx.train("CartPole-v1", seed=0, seeds=3, stop_when_solved=True, out=tmp_path / "run")
    summary = run.summary
    assert summary["num_seeds"] == 3 and len(summary["per_seed"]) == 3
    for seed in summary["per_seed"]:
        assert seed["steps_to_solve"] is not None and seed["steps_to_solve"] <= 50_000, seed
        assert seed["eval_mean_return"] >= 475, seed
        assert seed["solved"] is True, seed
    assert summary["seeds_solved"] == 3
    assert summary["steps_to_solve"] is not None
