"""Learning tests that cost minutes each on 2 cores: the slow tier, run by hand (CI's slow line runs
tests/test_learning.py only, to keep CI under 15 minutes).

    python -m pytest -m slow tests/test_learning_long.py

Acrobot-v1's preset trains C51 (51 atoms) on a 256x256 network until its greedy evaluation reaches
-100, a return random play (about -500) never comes near: about 3.5 minutes of wall time here
(209 s measured with a quiet machine's load of ~3.5).
"""

from __future__ import annotations

import pytest

import dqnx


@pytest.mark.slow
def test_acrobot_preset_with_c51_solves(tmp_path):
    run = dqnx.train("Acrobot-v1", seed=0, stop_when_solved=True, out=tmp_path / "run", tensorboard=False)
    assert run.config.distributional and run.config.num_atoms == 51  # the preset's C51
    # As test_learning.assert_solved (not importable under --import-mode=importlib): the periodic
    # evaluation reached -100 within the budget and the best weights' 100 fresh episodes are above it.
    assert run.config.total_steps == 100_000 and run.config.final_eval_episodes == 100
    seed = run.summary["per_seed"][0]
    assert seed["steps_to_solve"] is not None and seed["steps_to_solve"] <= 100_000, seed
    assert seed["eval_mean_return"] >= -100, seed
    assert seed["solved"] is True, seed
