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
def test_acrobot_preset_with_c51_solves(tmp_path, assert_solved):
    run = dqnx.train("Acrobot-v1", seed=0, stop_when_solved=True, out=tmp_path / "run", tensorboard=False)
    assert run.config.distributional and run.config.num_atoms == 51  # the preset's C51
    assert_solved(run, -100, 100_000)
