"""Tier 3: the agents must really learn, with their presets, on the classic-control environments.

The slow tier (`python -m pytest -m slow`, which CI runs after the default suite) trains each
preset until its greedy evaluation (100 episodes) reaches the environment's solve threshold, a
return no random policy comes near: CartPole-v1 475 (random play: about 22), Acrobot-v1 -100
(random: about -500), MountainCar-v0 -110 (random: -200, the flag is never reached). Each run
stops at its first solving evaluation, so a seed costs what it takes to learn, at most the
preset's budget. Besides the presets' own switches, these runs cover on real environments
what the unit tests check by hand: n-step returns (MountainCar-v0's preset), prioritized
replay and C51 (CartPole-v1 with prioritized = true, with distributional = true). Acrobot-v1's
C51 preset is not here: it took 209 s (100-episode evaluations every 2k steps), and still 164 s
of CPU with 20-episode periodic evaluations (seed 0 solved at 22k steps: the 256x256 C51
network's updates dominate), over the tier's budget of about 3 minutes; C51 on CartPole-v1
took about 46 s.
"""

from __future__ import annotations

import pytest

import dqnx


def test_cartpole_preset_solves(cartpole_solved):
    run = cartpole_solved  # conftest's: the preset, seed 0, stopped when solved
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
def test_cartpole_preset_solves_most_seeds(tmp_path, assert_solved):
    """The preset solves about 9 seeds in 10 within its 50k steps, not every seed: 18 of seeds 0-9 and 20-29
    on an AMD EPYC (seeds 2 and 24 plateaued at 234 and 359), 10 of seeds 20-29 on the machine it was tuned
    on. Which seeds miss depends on the processor: float sums in another order take a run elsewhere, so a
    test of three fixed seeds passed on one machine and failed on the other. Ten seeds (one compiled
    program, about as long as three) with at least 7 solved: a preset that solves 9 in 10 passes with
    probability 0.99, one that solves half of them with 0.17."""
    run = dqnx.train("CartPole-v1", seed=0, seeds=10, stop_when_solved=True, out=tmp_path / "run", tensorboard=False)
    summary = run.summary
    assert summary["num_seeds"] == 10 and len(summary["per_seed"]) == 10
    assert_solved(run, 475, 50_000, at_least=7)
    assert summary["seeds_solved"] == sum(seed["solved"] is True for seed in summary["per_seed"])


@pytest.mark.slow
def test_mountaincar_preset_with_n_step_returns_solves(tmp_path, assert_solved):
    run = dqnx.train("MountainCar-v0", seed=0, stop_when_solved=True, out=tmp_path / "run", tensorboard=False)
    assert run.config.n_step == 3 and not run.config.distributional  # the preset's 3-step returns
    assert_solved(run, -110, 120_000)


@pytest.mark.slow
def test_prioritized_replay_solves_cartpole(tmp_path, assert_solved):
    run = dqnx.train("CartPole-v1", seed=0, config={"prioritized": True}, stop_when_solved=True,
                     out=tmp_path / "run", tensorboard=False)
    assert run.config.prioritized and run.config.n_step == 1
    assert_solved(run, 475, 50_000)


@pytest.mark.slow
def test_c51_solves_cartpole(tmp_path, assert_solved):
    """The categorical (C51) loss and projection learning a real environment: 51 atoms over [0, 100], the
    range of CartPole-v1's discounted returns (+1 per step, gamma 0.99); the preset otherwise, but with the
    constant learning rate and Polyak rate 0.01 the test was validated on (the preset before its retune for
    stable last weights: with that retune seed 0's best weights, picked at 18k steps, scored 457 over 100
    episodes). Its subject is the C51 loss, so it does not follow later preset changes."""
    c51 = {"distributional": True, "num_atoms": 51, "v_min": 0.0, "v_max": 100.0,
           "lr_schedule": "constant", "tau": 0.01}
    run = dqnx.train("CartPole-v1", seed=0, config=c51,
                     stop_when_solved=True, out=tmp_path / "run", tensorboard=False)
    assert run.config.distributional and run.config.num_atoms == 51
    assert run.config.n_step == 1 and not run.config.prioritized and not run.config.noisy  # C51 alone
    assert_solved(run, 475, 50_000)
