"""Recurrent Q-learning (memory = gru | lstm): the sequence loss by hand, a memory task learned, resume.

The hand-built tests check the three rules of R2D2-style sequence learning on one
sequence batch: burn-in steps carry no gradient, padded steps are masked out of the
loss, and the hidden state resets where an episode starts inside a sequence. The
learning test trains on CueRecall-v0 (a cue at step 0, recalled at step 4): the
recurrent agent must solve it and the feed-forward one, with the same budget, must not.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dqnx
from dqnx.agents.dqn import make_dqn
from dqnx.config import DQNConfig
from dqnx.replay.sequences import Sequences

BURN_IN, LENGTH, OBS = 3, 5, 3


def recurrent_dqn(memory: str = "gru", **changes):
    config = DQNConfig(memory=memory, memory_size=8, hidden_sizes=(8,), burn_in=BURN_IN, sequence_length=LENGTH,
                       **changes).validate()
    return make_dqn(config, (OBS,), num_actions=2)


def hand_built(first_at: int | None = None, padded_from: int | None = None) -> Sequences:
    """Two sequences of BURN_IN + LENGTH steps with fixed random observations and rewards."""
    steps = BURN_IN + LENGTH
    rng = np.random.default_rng(0)
    obs = jnp.asarray(rng.normal(size=(2, steps, OBS)), jnp.float32)
    first = np.zeros((2, steps), bool)
    episode_end = np.zeros((2, steps), bool)
    if first_at is not None:
        first[:, first_at] = episode_end[:, first_at - 1] = True
    valid = np.ones((2, steps), bool)
    if padded_from is not None:
        valid[:, padded_from:] = False
    return Sequences(
        obs=obs, action=jnp.asarray(rng.integers(0, 2, (2, steps)), jnp.int32),
        reward=jnp.asarray(rng.normal(size=(2, steps)), jnp.float32),
        next_obs=jnp.asarray(rng.normal(size=(2, steps, OBS)), jnp.float32),
        terminated=jnp.asarray(episode_end), episode_end=jnp.asarray(episode_end), first=jnp.asarray(first),
        valid=jnp.asarray(valid), start_state=jnp.asarray(rng.normal(size=(2, 8)), jnp.float32))


@pytest.fixture(scope="module")
def gru():
    dqn = recurrent_dqn()
    state = dqn.init(jax.random.PRNGKey(1))
    return dqn, state.params, jax.tree.map(lambda p: p + 0.1, state.params)  # a target that differs from the online net


def loss_of(dqn, params, target, seq):
    return _loss(dqn.sequence_loss, params, target, seq)


@functools.partial(jax.jit, static_argnums=0)
def _loss(sequence_loss, params, target, seq):
    return sequence_loss(params, target, seq, jax.random.PRNGKey(0), 0.9, None)[0]


def test_burn_in_steps_carry_no_gradient(gru):
    dqn, params, target = gru
    seq = hand_built()
    grad_obs = jax.jit(jax.grad(lambda obs: loss_of(dqn, params, target, seq._replace(obs=obs))))(seq.obs)
    assert np.all(np.asarray(grad_obs[:, :BURN_IN]) == 0.0)  # the memory after burn-in is stop_gradient'ed
    assert np.all(np.abs(np.asarray(grad_obs[:, BURN_IN:])).sum(-1) > 0)  # every learned step does
    # ... yet the burn-in does warm the memory up: other burn-in observations change the loss
    moved = seq._replace(obs=seq.obs.at[:, 0].add(1.0))
    assert float(loss_of(dqn, params, target, moved)) != float(loss_of(dqn, params, target, seq))


def test_padded_steps_are_masked_out_of_the_loss(gru):
    dqn, params, target = gru
    padded_from = BURN_IN + 3
    seq = hand_built(padded_from=padded_from)
    garbage = seq._replace(obs=seq.obs.at[:, padded_from:].set(50.0), reward=seq.reward.at[:, padded_from:].set(-99.0),
                           next_obs=seq.next_obs.at[:, padded_from:].set(7.0))
    assert float(loss_of(dqn, params, target, garbage)) == pytest.approx(float(loss_of(dqn, params, target, seq)), rel=1e-6)
    gradient = jax.jit(jax.grad(lambda p, s: loss_of(dqn, p, target, s)))
    grads = [gradient(params, s) for s in (seq, garbage)]
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # the same steps unmasked do change the loss
    unmasked = garbage._replace(valid=jnp.ones_like(seq.valid))
    assert float(loss_of(dqn, params, target, unmasked)) != pytest.approx(float(loss_of(dqn, params, target, seq)), rel=1e-3)


@pytest.mark.parametrize("memory", ["gru", "lstm"])
def test_the_hidden_state_resets_where_an_episode_starts_inside_a_sequence(memory):
    dqn = recurrent_dqn(memory)
    params = dqn.init(jax.random.PRNGKey(2)).params
    seq = hand_built(first_at=4)
    start = jax.tree.map(lambda x: x + 0.5, dqn.init_memory(2))  # a memory far from the initial one
    _, q, _ = dqn.unroll(params, start, seq.obs, seq.first)
    # from step 4 on, Q is that of the new episode played from the initial memory
    _, q_new_episode, _ = dqn.unroll(params, dqn.init_memory(2), seq.obs[:, 4:], jnp.zeros_like(seq.first[:, 4:]))
    np.testing.assert_allclose(q[:, 4:], q_new_episode, rtol=1e-5, atol=1e-6)
    # without the episode start, the old memory would still show
    _, q_carried, _ = dqn.unroll(params, start, seq.obs, jnp.zeros_like(seq.first))
    assert not np.allclose(q_carried[:, 4:], q_new_episode, atol=1e-4)


@pytest.mark.parametrize("memory, cell, gate", [("gru", "GRUCell_0", "iz"), ("lstm", "OptimizedLSTMCell_0", "hf")])
def test_memory_gate_bias_moves_only_the_gate_that_keeps_the_memory(memory, cell, gate):
    plain = recurrent_dqn(memory).init(jax.random.PRNGKey(3)).params
    biased = recurrent_dqn(memory, memory_gate_bias=2.0).init(jax.random.PRNGKey(3)).params
    flat = dict(jax.tree_util.tree_flatten_with_path(biased)[0])
    for path, leaf in jax.tree_util.tree_flatten_with_path(plain)[0]:
        names = [getattr(k, "key", None) for k in path]
        shift = 2.0 if names[-3:] == [cell, gate, "bias"] else 0.0
        np.testing.assert_array_equal(flat[path], np.asarray(leaf) + shift, err_msg=str(names))
    assert any(getattr(k, "key", None) == gate for path, _ in flat.items() for k in path)  # the gate was found


def cue_recall_config(**changes) -> DQNConfig:
    """CueRecall-v0 (cue at step 0, recall at step 4): a budget the GRU agent solves in (measured: solved
    by 1,000 steps) and that leaves the feed-forward agent at chance (greedy mean about 0). Chunks of
    502 steps, so that a run stopped after two of them stops inside an episode (5 steps each)."""
    base = DQNConfig(total_steps=4 * 502, eval_every=502, eval_episodes=100, final_eval_episodes=100, hidden_sizes=(32,),
                     memory_size=32, buffer_size=3000, batch_size=32, learning_starts=500, train_freq=4,
                     epsilon_decay_steps=1000, sequence_length=8, burn_in=2, checkpoint_every=502)
    return base.replace(**changes).validate()


def metrics(path: Path) -> list[dict]:
    with open(path / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in ("steps_per_second", "wall_seconds")} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def cue_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("memory")
    recurrent = dqnx.train("CueRecall-v0", config=cue_recall_config(memory="gru"), out=root / "gru", tensorboard=False)
    plain = dqnx.train("CueRecall-v0", config=cue_recall_config(), out=root / "plain", tensorboard=False)
    # stopped in the middle of an episode (1,004 = 200 episodes of 5 steps and 4 steps): the hidden state is live
    half = dqnx.train("CueRecall-v0", config=cue_recall_config(memory="gru", total_steps=2 * 502), out=root / "resumed",
                      tensorboard=False)
    resumed = dqnx.train(resume=half.path, steps=4 * 502)
    return recurrent, plain, resumed


def test_a_recurrent_agent_recalls_the_cue_and_a_feed_forward_one_cannot(cue_runs):
    recurrent, plain, _ = cue_runs
    assert recurrent.summary["eval_mean_return"] >= 0.9, recurrent.summary
    assert plain.summary["eval_mean_return"] <= 0.5, plain.summary  # chance: about 0 (+1 or -1 by a coin)


def test_a_recurrent_run_resumes_bit_for_bit_hidden_state_included(cue_runs, assert_same_weights):
    recurrent, _, resumed = cue_runs
    evaluated = {r["env_steps"]: r for r in metrics(recurrent.path)}
    common = [r for r in metrics(resumed.path) if r["env_steps"] in evaluated]
    assert [r["env_steps"] for r in common] == ["502", "1004", "1506", "2008"]
    for row in common:
        for key in ("updates", "loss", "eval_mean_return", "eval_std_return"):
            assert row[key] == evaluated[row["env_steps"]][key], (row["env_steps"], key)
    for name in ("last.safetensors", "best.safetensors"):
        assert_same_weights(resumed.path / name, recurrent.path / name)
    assert resumed.summary["eval_mean_return"] == recurrent.summary["eval_mean_return"]


def test_the_host_loop_carries_the_memory_through_gymnasium_episodes(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # gym_toys
    # The same task as a Gymnasium env (tests/gym_toys.py), stepped on the host: acting, replay's stored
    # states and the evaluation's memory all go through host_loop.py. Evaluated 20 episodes at the end.
    config = cue_recall_config(memory="gru", total_steps=1500, eval_every=1500, eval_episodes=20, final_eval_episodes=20)
    run = dqnx.train("gym_toys:CueRecall", config=config, env_params={"max_episode_steps": 10}, out=tmp_path / "host",
                     tensorboard=False)
    assert run.summary["eval_mean_return"] >= 0.9, run.summary


def test_frame_stacking_remembers_the_last_k_observations_and_forgets_at_an_episode_start():
    from dqnx.agents.dqn import make_dqn_learner
    from dqnx.protocols import reset_act_state

    config = DQNConfig(frame_stack=3, hidden_sizes=(8,)).validate()
    learner = make_dqn_learner(config, (2,), num_actions=2)
    params = learner.init(jax.random.PRNGKey(0)).params
    state = learner.init_act_state(1)
    assert state.shape == (1, 2, 2) and not state.any()  # K - 1 = 2 frames of zeros before the first
    for t in range(4):
        _, state = learner.act(params, state, jnp.full((1, 2), float(t + 1)), jnp.ones((1, 2), bool),
                               jax.random.PRNGKey(t), 0.0)
    np.testing.assert_array_equal(state[0], [[3.0, 3.0], [4.0, 4.0]])  # the last two, oldest first
    assert not reset_act_state(learner, state, jnp.array([True])).any()
    with pytest.raises(dqnx.UsageError, match="two memories"):
        DQNConfig(frame_stack=3, memory="gru").validate()


@pytest.mark.parametrize("changes, message", [
    ({"memory": "gru", "distributional": True}, "memory=gru does not support distributional"),
    ({"memory": "lstm", "replay": False}, "memory=lstm does not support replay=false"),
    ({"frame_stack": 4, "noisy": True}, "frame_stack=4 does not support noisy"),
    ({"memory": "gru", "n_step": 30}, "n_step (30) is longer than sequence_length (20)"),
    ({"memory": "rnn"}, "memory must be one of none, gru, lstm"),
])
def test_settings_memory_cannot_serve_are_refused_in_one_line(changes, message):
    with pytest.raises(dqnx.UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        DQNConfig(**changes).validate()


def test_export_refuses_an_agent_with_memory(cue_runs, tmp_path):
    recurrent = cue_runs[0]
    with pytest.raises(dqnx.UsageError, match="export and serve take feed-forward agents only"):
        dqnx.export(recurrent.path, format="stablehlo", out=tmp_path / "model")
    assert not list(tmp_path.iterdir())  # nothing written
