"""Failing loudly (docs/reliability.md): settings that cannot learn, memory that cannot fit,
divergence, and failures while running. Refusals go through the CLI in-process."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from dqnx.cli import main
from dqnx.config import DQNConfig
from dqnx.drivers import jax_loop, preflight, trainer
from dqnx.errors import SettingsWarning, UsageError

TINY = ["--set", "hidden_sizes=32", "--set", "buffer_size=2000", "--set", "eval_episodes=8",
        "--set", "final_eval_episodes=8", "--no-tensorboard", "-q"]


def run_cli(args: list[str], cwd: Path) -> tuple[int, list[str]]:
    """`dqnx ARGS` in this process, from `cwd`: (exit status, stderr lines)."""
    old_cwd, old_argv, err = os.getcwd(), sys.argv, io.StringIO()
    try:
        os.chdir(cwd)
        sys.argv = ["dqnx", *map(str, args)]
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                main()
                code = 0
            except SystemExit as e:
                code = e.code
    finally:
        os.chdir(old_cwd)
        sys.argv = old_argv
    return code, err.getvalue().strip().splitlines()


def refused(args: list[str], tmp_path: Path, *words: str) -> str:
    code, lines = run_cli(args, tmp_path)
    assert code == 2, lines
    assert len(lines) == 1, lines
    for word in words:
        assert word in lines[0], lines[0]
    assert not any(tmp_path.iterdir()), "a refused command wrote files"
    return lines[0]


# --- settings that can never learn ---------------------------------------------------------

CANNOT_LEARN = {
    "learning_starts_past_the_run": (["--steps", "5000", "--set", "learning_starts=5000"], ["learning_starts", "5000", "no gradient step"]),
    "eval_every_past_the_run": (["--steps", "5000", "--set", "eval_every=6000"], ["eval_every", "6000", "total_steps"]),
    "train_freq_past_the_run": (["--steps", "5000", "--set", "learning_starts=100", "--set", "train_freq=6000"], ["train_freq", "no gradient step"]),
    "batch_above_buffer": (["--set", "batch_size=256", "--set", "buffer_size=100"], ["buffer_size", "batch_size"]),
    "slots_past_int32": (["--set", "buffer_size=20000000000"], ["buffer_size", "2^31"]),
    # 8.2 GB of replay against the 1 GB these tests pretend is available (never allocated even if the check broke: see below)
    "replay_past_memory": (["--set", "buffer_size=200000000"], ["16.4 GB", "1.0 GB is available", "41 B per transition",
                                                               "lower buffer_size to at most"]),
    "steps_past_int32": (["--steps", "3000000000"], ["total_steps", "2^31"]),
}


@pytest.fixture
def one_gigabyte(monkeypatch):
    """The machine seems to have 1 GB available: a memory check that failed would not swamp the real one."""
    monkeypatch.setattr(preflight, "available_memory", lambda: ("cpu", 10**9))


@pytest.mark.parametrize("case", list(CANNOT_LEARN))
def test_settings_that_cannot_learn_or_fit_are_refused(case, tmp_path, one_gigabyte):
    extra, words = CANNOT_LEARN[case]
    refused(["train", "CartPole-v1", *extra, "--out", "run"], tmp_path, *words)


def test_sweep_grid_point_that_cannot_learn_is_named(tmp_path):
    line = refused(["sweep", "CartPole-v1", "--grid", "learning_starts=100,5000", "--steps", "5000", "--seeds", "1",
                    "--out", "s"], tmp_path, "grid point", "'learning_starts': 5000", "no gradient step")
    assert "'learning_starts': 100}" not in line


def test_sweep_group_memory_adds_up_over_members(tmp_path, monkeypatch):
    """One group is one program: 4 configs x 2 seeds of a replay that fits alone may not fit together."""
    env = _cartpole()
    config = DQNConfig(buffer_size=20_000)
    one = preflight.memory_budget([config], env, "dqn", members_per_config=1, program_seeds=1)
    monkeypatch.setattr(preflight, "available_memory", lambda: ("cpu", 3 * one.total_bytes))  # 1 fits, 8 do not
    refused(["sweep", "CartPole-v1", "--grid", "lr=1e-4,3e-4,1e-3,3e-3", "--seeds", "2", "--set", "buffer_size=20000",
             "--steps", "1000", "--set", "learning_starts=100", "--set", "eval_every=500", "--out", "s"], tmp_path,
            "grid point", "available", "MB")


def test_tune_space_value_that_cannot_learn_is_named(tmp_path):
    refused(["tune", "CartPole-v1", "--param", "learning_starts=100|5000", "--steps", "5000", "--trials", "2",
             "--out", "t"], tmp_path, "--param learning_starts", "5000", "no gradient step")


def test_wasteful_settings_warn_and_are_recorded(tmp_path):
    import dqnx

    config = {"total_steps": 600, "learning_starts": 500, "buffer_size": 400, "batch_size": 32, "eval_every": 300,
              "eval_episodes": 2, "final_eval_episodes": 2, "hidden_sizes": "16", "epsilon_decay_steps": 5000,
              "target_update_period": 1000}
    with pytest.warns(SettingsWarning) as caught:
        run = dqnx.train("CartPole-v1", config=config, out=tmp_path / "run", tensorboard=False)
    said = [str(w.message) for w in caught if issubclass(w.category, SettingsWarning)]
    assert len(said) == 3
    assert any("learning_starts (500) exceeds buffer_size (400)" in s for s in said)
    assert any("epsilon_decay_steps (5000)" in s and "floor" in s for s in said)
    assert any("target_update_period (1000)" in s and "101 gradient steps" in s for s in said)
    stored = json.loads((run.path / "config.json").read_text())
    assert stored["warnings"] == said
    # The budget is recorded too: the replay of 400 CartPole transitions, 41 bytes each
    # (obs and next obs 2 x 4 float32, action int32, reward float32, terminated bool).
    assert stored["memory"]["replay_bytes"] == 400 * 41 + 8
    assert stored["memory"]["replay_bytes_per_transition"] == round((400 * 41 + 8) / 400, 1)
    assert 0 < stored["memory"]["total_bytes"] < stored["memory"]["available_bytes"]
    # Exactly the updates the check counted (101) ran.
    assert _metrics(run.path)[-1]["updates"] == "101"


@pytest.mark.parametrize("num_envs,train_freq,starts,total", [(1, 1, 1000, 50_000), (4, 4, 100, 1000), (4, 10, 0, 1003),
                                                               (3, 7, 50, 400), (8, 8, 64, 64 + 8)])
def test_gradient_phases_counts_the_cadence(num_envs, train_freq, starts, total):
    """preflight.gradient_phases against the learner's own rule, iteration by iteration."""
    config = DQNConfig(num_envs=num_envs, train_freq=train_freq, learning_starts=starts, total_steps=total,
                       buffer_size=64, batch_size=8)
    iterations = math.ceil(total / num_envs)
    phases = sum(1 for k in range(iterations)
                 if (k + 1) * num_envs >= starts and ((k + 1) * num_envs) // train_freq > (k * num_envs) // train_freq)
    assert preflight.gradient_phases(config) == phases


# --- memory budget ------------------------------------------------------------------------

def _cartpole():
    from dqnx.envs import make_env

    return make_env("CartPole-v1", None, "jax")


def test_frame_deduplicated_replay_is_budgeted_per_frame():
    """Atari-shaped observations: the frame replay stores one 84x84 frame a transition, not two stacks of four."""
    atari = SimpleNamespace(obs_shape=(4, 84, 84), num_actions=4, obs_dtype=np.uint8, frame_stack=4, image_layout="CHW",
                            max_episode_steps=None, backend="gymnasium")
    config = DQNConfig(buffer_size=10_000, batch_size=32, hidden_sizes=(32,), num_envs=1)
    frames = preflight.memory_budget([config], atari, "dqn")
    whole = preflight.memory_budget([config], SimpleNamespace(**{**vars(atari), "frame_stack": 0}), "dqn")
    assert 84 * 84 < frames.replay_bytes_per_transition < 84 * 84 + 64
    assert whole.replay_bytes_per_transition == 2 * 4 * 84 * 84 + 9
    # The host loop stages one iteration per training phase here (train_freq 1): two stacks.
    assert frames.staging_bytes == 2 * 4 * 84 * 84 + 10


def test_budget_counts_every_program_seed_and_the_checkpoint_copy():
    env = _cartpole()
    config = DQNConfig(buffer_size=5000)
    one = preflight.memory_budget([config], env, "dqn", members_per_config=1, program_seeds=1)
    three = preflight.memory_budget([config], env, "dqn", members_per_config=3, program_seeds=4)  # one pad seed
    assert three.replay_bytes == 3 * one.replay_bytes
    assert three.state_bytes == 4 * one.state_bytes and three.checkpoint_bytes == 3 * one.checkpoint_bytes
    assert three.total_bytes == three.state_bytes + three.checkpoint_bytes
    with pytest.raises(UsageError, match="lower buffer_size to at most"):
        preflight.check_memory(preflight.MemoryBudget(**{**one.to_dict(), "available_bytes": one.total_bytes - 1}),
                               config.buffer_size)


# --- divergence -----------------------------------------------------------------------------

def test_chunk_health_flags_are_explicit():
    """A nan loss where no training phase ran is not a divergence; one where it ran is."""
    params = {"w": jnp.ones(3)}
    trained = jnp.array([False, True, True, True])
    loss = jnp.array([jnp.nan, 1.0, jnp.inf, 2.0])
    q = jnp.array([jnp.nan, 5.0, -7.0, jnp.nan])
    health = jax.jit(jax_loop.chunk_health)(trained, loss, q, jnp.array([0.0, 1.0, 3.0, 2.0]), params)
    assert int(health.nonfinite_loss_at) == 2 and int(health.nonfinite_q_at) == 3
    assert bool(health.params_finite) and float(health.q_abs_max) == 7.0 and float(health.reward_abs_max) == 3.0
    quiet = jax_loop.chunk_health(jnp.array([False, False]), jnp.full(2, jnp.nan), jnp.full(2, jnp.nan), jnp.zeros(2),
                                  {"w": jnp.array([1.0, jnp.nan])})
    assert int(quiet.nonfinite_loss_at) == -1 and int(quiet.nonfinite_q_at) == -1 and not bool(quiet.params_finite)


def test_q_scale_warning_is_said_once():
    progress = trainer.Progress.fresh(2)
    progress.env_steps = 3000

    def health(q_abs):
        return jax_loop.ChunkHealth(nonfinite_loss_at=np.array([-1, -1]), nonfinite_q_at=np.array([-1, -1]),
                                    params_finite=np.array([True, True]), q_abs_max=np.array([q_abs, 1.0]),
                                    reward_abs_max=np.array([1.0, 1.0]))

    gammas = np.array([0.9, 0.9])  # rewards of 1 allow |Q| up to 10
    assert trainer._check_health(health(99.0), progress, 2000, 1, 2000, gammas) == [] and not progress.warnings
    with pytest.warns(UserWarning, match=r"\|Q\| reached 101 .*10x the 10 "):
        trainer._check_health(health(101.0), progress, 2000, 1, 2000, gammas)
    trainer._check_health(health(1e9), progress, 2000, 1, 2000, gammas)
    assert len(progress.warnings) == 1


def _metrics(run: Path) -> list[dict[str, str]]:
    import csv

    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _finite(path: Path) -> bool:
    return all(np.isfinite(a).all() for a in load_file(str(path)).values() if a.dtype.kind == "f")


DIVERGING = ["--set", "optimizer=sgd", "--set", "learning_rate=1e3", "--set", "max_grad_norm=0",
             "--set", "learning_starts=1000", "--set", "eval_every=500", "--set", "checkpoint_every=500",
             "--set", "epsilon_decay_steps=1000"]


@pytest.fixture(scope="module")
def diverged_run(tmp_path_factory):
    """A CartPole run whose SGD at learning rate 1e3 goes non-finite soon after its first update at 1000."""
    root = tmp_path_factory.mktemp("diverged")
    code, lines = run_cli(["train", "CartPole-v1", "--steps", "2000", *TINY, *DIVERGING, "--out", "run"], root)
    return root, code, lines


def test_divergence_stops_with_status_3_and_keeps_the_last_finite_files(diverged_run):
    root, code, lines = diverged_run
    run = root / "run"
    assert code == 3, lines
    assert len(lines) == 1
    line = lines[0]
    summary = json.loads((run / "summary.json").read_text())
    where = summary["per_seed"][0]["diverged"]
    assert summary["status"] == "diverged" and summary["diverged_seeds"] == [0]
    assert 1000 < where["env_step"] <= 1500 and where["quantity"] in ("loss", "Q-values", "parameters")
    assert where["checkpoint_step"] == 1000
    for words in (f"env step {where['env_step']}", where["quantity"], "learning_rate 1000", "no gradient clipping",
                  f"--resume {Path('run')} --set learning_rate=0.001"):
        assert words in line, line
    for name in ("best", "last", "checkpoint"):
        assert _finite(run / f"{name}.safetensors"), name
    from safetensors import safe_open

    with safe_open(str(run / "checkpoint.safetensors"), "numpy") as f:
        assert json.loads(f.metadata()["dqnx"])["progress"]["env_steps"] == 1000
    # The metrics show the chunk that diverged (loss or Q not finite), with no evaluation.
    last = _metrics(run)[-1]
    assert last["env_steps"] == "1500" and last["eval_mean_return"] == ""
    # dqnx eval gives the last finite best weights.
    code, lines = run_cli(["eval", "run", "--episodes", "3", "--json"], root)
    assert code == 0, lines


def test_resume_after_divergence_continues_from_the_last_finite_checkpoint(diverged_run):
    root, code, _ = diverged_run
    assert code == 3
    before = _metrics(root / "run")
    code, lines = run_cli(["train", "--resume", "run", "--set", "learning_rate=1e-3", "-q", "--no-tensorboard"], root)
    assert code == 0, lines
    run = root / "run"
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["learning_rate"] == 1e-3
    assert config["resume_changes"][0]["set"] == {"learning_rate": 1e-3}
    assert config["resume_changes"][0]["previous"] == {"learning_rate": 1e3}
    assert config["resume_changes"][0]["from_env_step"] == 1000
    rows = _metrics(run)
    assert rows[:2] == before[:2]  # 500, 1000: kept; 1500 and 2000 trained again from the checkpoint
    assert [r["env_steps"] for r in rows] == ["500", "1000", "1500", "2000"]
    assert all(math.isfinite(float(r["loss"])) for r in rows[2:])  # finite losses now
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["per_seed"][0]["diverged"] is None
    for name in ("best", "last", "checkpoint"):
        assert _finite(run / f"{name}.safetensors"), name


def test_diverged_sweep_member_is_frozen_and_its_trial_pruned(tmp_path):
    """Two configurations in one program: the one at lr 1e3 diverges and is frozen, the other
    trains on to the end; a tune study would prune the diverged trial."""
    from dqnx.envs import make_env
    from dqnx.search.sweep import plan_groups, train_group
    from dqnx.search.tune import _trial_values

    base = DQNConfig(total_steps=2000, eval_every=500, eval_episodes=8, final_eval_episodes=8, hidden_sizes=(32,),
                     buffer_size=2000, learning_starts=1000, checkpoint_every=500, optimizer="sgd", max_grad_norm=0.0)
    configs = [base.replace(learning_rate=1e-3), base.replace(learning_rate=1e3)]
    [group] = plan_groups(configs, [0])
    env = make_env("CartPole-v1", None, "jax")
    result = train_group(env, group, 0, tmp_path / "g0", agent="dqn", env_id=env.env_id, env_params={}, backend="jax")
    calm, wild = result["members"]
    assert calm["diverged"] is None and not calm["stopped"]
    assert wild["diverged"] is not None and wild["stopped"] and wild["diverged"]["checkpoint_step"] == 1000
    assert [s for s, _ in calm["curve"]] == [500, 1000, 1500, 2000]
    assert [s for s, _ in wild["curve"]] == [500, 1000]  # no evaluation of non-finite weights
    summary = json.loads((tmp_path / "g0" / "summary.json").read_text())
    assert summary["status"] == "some seeds diverged" and summary["total_steps"] == 2000
    # Frozen: the wild member's slice of every file is finite; its last weights are those of step 1000.
    for name in ("best", "last", "checkpoint"):
        assert _finite(tmp_path / "g0" / f"{name}.safetensors"), name
    pruned = {number: p for number, _, p in _trial_values([result], [7, 8], "auc")}
    assert pruned == {7: False, 8: True}


# --- failures while running ---------------------------------------------------------------

@pytest.fixture
def toys_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # gym_toys:Name


SMALL_HOST = {"total_steps": 400, "learning_starts": 100, "eval_every": 200, "eval_episodes": 2, "final_eval_episodes": 2,
              "hidden_sizes": "16", "buffer_size": 400, "batch_size": 16, "checkpoint_every": 200,
              "epsilon_decay_steps": 200}


def test_environment_that_raises_shows_the_users_traceback_and_exits_1(tmp_path, toys_on_path):
    sets = [arg for key, value in SMALL_HOST.items() for arg in ("--set", f"{key}={value}")]
    code, lines = run_cli(["train", "gym_toys:Raising", "--env-param", "raise_at=250", "--env-param", "max_episode_steps=20", *sets, "-q", "--no-tensorboard",
                           "--out", "run"], tmp_path)
    assert code == 1, lines
    assert lines[0].startswith("Traceback of your environment's code")
    assert any("gym_toys.py" in line for line in lines) and any("self.explode()" in line for line in lines)
    assert not any("dqnx" in line and "site-packages" in line for line in lines[:-1])
    assert not any("/dqnx/" in line for line in lines[1:-1]), "dqnx's own frames are not the user's to read"
    last = lines[-1]
    assert last.startswith("error: the environment gym_toys:Raising raised RuntimeError in step() at env step")
    assert "the sensor broke" in last and "--resume run" in last and "env step 200" in last
    # The previous checkpoint is whole.
    assert _finite(tmp_path / "run" / "checkpoint.safetensors")


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch, toys_on_path):
    """A simulated ENOSPC while the checkpoint at env step 400 is written: exit 1 with one line,
    the checkpoint of step 200 intact and loadable, and the run resumes from it."""
    import dqnx.runs.files as files

    real_save, calls = files.save_file, []

    def fill_disk(tensors, filename, metadata=None):
        calls.append(filename)
        if len([c for c in calls if Path(c).name.startswith(".checkpoint")]) == 3:  # steps 0 and 200 written; then full
            with open(filename, "wb") as f:
                f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(files, "save_file", fill_disk)
    sets = [arg for key, value in {**SMALL_HOST, "total_steps": 600}.items() for arg in ("--set", f"{key}={value}")]
    code, lines = run_cli(["train", "gym_toys:Corridor", "--env-param", "max_episode_steps=20", *sets, "-q",
                           "--no-tensorboard", "--out", "run"], tmp_path)
    assert code == 1, lines
    assert len(lines) == 1 and "No space left on device" in lines[0] and "env step 200" in lines[0]
    assert "--resume run" in lines[0]
    assert not list((tmp_path / "run").glob(".*.tmp")), "the partial file was left behind"
    from safetensors import safe_open

    with safe_open(str(tmp_path / "run" / "checkpoint.safetensors"), "numpy") as f:
        assert json.loads(f.metadata()["dqnx"])["progress"]["env_steps"] == 200
    assert _finite(tmp_path / "run" / "checkpoint.safetensors")
    monkeypatch.setattr(files, "save_file", real_save)
    code, lines = run_cli(["train", "--resume", "run", "-q", "--no-tensorboard"], tmp_path)
    assert code == 0, lines
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["total_steps"] == 600


KILL_SCRIPT = """
import os, signal, sys
import dqnx.runs.files as files
real, calls = files.save_file, []
def dying(tensors, filename, metadata=None):
    calls.append(filename)
    if len([c for c in calls if os.path.basename(c).startswith(".checkpoint")]) == 3:  # env step 400: half written, then killed
        with open(filename, "wb") as f:
            f.write(b"\\x08\\x00\\x00\\x00\\x00\\x00\\x00\\x00{half")
        os.kill(os.getpid(), signal.SIGKILL)
    return real(tensors, filename, metadata=metadata)
files.save_file = dying
sys.argv = ["dqnx"] + sys.argv[1:]
from dqnx.cli import main
main()
"""


def test_kill_during_a_checkpoint_write_leaves_the_previous_one(tmp_path, toys_on_path, guarded_run):
    sets = [arg for key, value in {**SMALL_HOST, "total_steps": 600}.items() for arg in ("--set", f"{key}={value}")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    result = guarded_run([sys.executable, "-c", KILL_SCRIPT, "train", "gym_toys:Corridor", "--env-param",
                          "max_episode_steps=20", *sets, "-q", "--no-tensorboard", "--out", "run"], 300,
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == -9, result.stderr
    assert list((tmp_path / "run").glob(".checkpoint.safetensors.*.tmp")), "the kill came mid-write"
    code, lines = run_cli(["eval", "run", "--episodes", "2", "--weights", "last"], tmp_path)
    assert code == 0, lines
    code, lines = run_cli(["train", "--resume", "run", "-q", "--no-tensorboard"], tmp_path)
    assert code == 0, lines
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["total_steps"] == 600 and summary["status"] == "finished"
