"""dqnx tune: Optuna batches over the vmapped sweep engine, resumable from SQLite; the Ray path.

Tuning runs are tiny (CartPole, 1,000 env steps, 4-episode evaluations): these tests check
the bookkeeping (which trials ran, what was stored, what a resume does), not the search's
quality, which benchmarks/tune.py measures.
"""

from __future__ import annotations

import os
import signal
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import dqnx
from dqnx.config import build_config
from dqnx.errors import UsageError

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

SMALL = {"total_steps": 1000, "eval_every": 500, "eval_episodes": 4, "final_eval_episodes": 4, "hidden_sizes": (32,),
         "learning_starts": 200}


def _study(out: Path, name: str = "CartPole-v1-dqn"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")


def _finished(study) -> list:
    return [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def test_a_resumed_study_runs_only_the_missing_trials(tmp_path):
    out = tmp_path / "study"
    first = dqnx.tune("CartPole-v1", trials=3, batch=3, config=SMALL, out=out)
    assert first.trials_run == 3 and first.trials_finished == 3
    before = {t.number: t.params for t in _finished(_study(out))}
    second = dqnx.tune("CartPole-v1", trials=5, batch=3, config=SMALL, out=out)
    assert second.trials_run == 2 and second.trials_finished == 5
    after = {t.number: t.params for t in _finished(_study(out))}
    assert len(after) == 5
    assert {n: after[n] for n in before} == before  # the first three were kept, not retrained
    # The resumed sampler drew new points: no finished trial repeats another's parameters.
    assert len({tuple(sorted(p.items())) for p in after.values()}) == 5
    # Asking for no more than the study holds runs nothing.
    third = dqnx.tune("CartPole-v1", trials=5, batch=3, config=SMALL, out=out)
    assert third.trials_run == 0


def test_trials_cut_off_by_a_dead_process_are_asked_again(tmp_path):
    """A trial left RUNNING (its process died) is failed and retried with the same parameters."""
    out = tmp_path / "study"
    dqnx.tune("CartPole-v1", trials=2, batch=2, config=SMALL, out=out)
    study = _study(out)
    distributions = _finished(study)[0].distributions
    orphan = study.ask(distributions)  # what a process killed mid-batch leaves behind
    orphan_params = dict(orphan.params)
    result = dqnx.tune("CartPole-v1", trials=3, batch=2, config=SMALL, out=out)
    assert result.trials_run == 1
    trials = _study(out).get_trials(deepcopy=False)
    assert trials[orphan.number].state == TrialState.FAIL
    retried = [t for t in trials if t.user_attrs.get("retry_of") == orphan.number]
    assert len(retried) == 1 and retried[0].params == orphan_params
    assert retried[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert len(_finished(_study(out))) == 3


# `dqnx tune` that kills itself (SIGKILL: no cleanup, like a crash or `kill -9`) right after its first batch's
# trials are told to the study and trials.csv is written: a known point, whatever the machine's speed.
KILLED_AFTER_FIRST_BATCH = """
import os, signal, sys
from dqnx.search import tune
write_trials_csv = tune._write_trials_csv
def write_then_die(*args, **kwargs):
    write_trials_csv(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
tune._write_trials_csv = write_then_die
from dqnx.cli import main
sys.argv = ["dqnx", *sys.argv[1:]]
main()
"""


def test_a_killed_tune_process_resumes_without_repeating_finished_trials(tmp_path, guarded_run, dqnx_cli_here):
    out = tmp_path / "study"
    args = ["tune", "CartPole-v1", "--trials", "4", "--batch", "2", "-q", "--out", str(out)]
    args += [arg for k, v in SMALL.items() for arg in ("--set", f"{k}={_text(v)}")]
    killed = guarded_run([sys.executable, "-c", KILLED_AFTER_FIRST_BATCH, *args], 300, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    done_before = {t.number: t.params for t in _finished(_study(out))}
    assert len(done_before) == 2  # the first batch, told before the process died
    resumed = dqnx_cli_here(args, tmp_path)  # the resume needs no process of its own: the killed one was the point
    assert resumed.returncode == 0, resumed.stderr
    study = _study(out)
    finished = {t.number: t.params for t in _finished(study)}
    assert len(finished) == 4
    assert {n: finished[n] for n in done_before} == done_before
    assert not [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]


def _text(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def test_best_trial_is_written_as_a_preset_train_takes(tmp_path):
    out = tmp_path / "study"
    result = dqnx.tune("CartPole-v1", trials=4, batch=4, config=SMALL, out=out)
    study = _study(out)
    best = study.best_trial
    assert result.best_value == pytest.approx(best.value)
    assert result.best_config_path == out / "best.toml"
    config = build_config("CartPole-v1", config_file=result.best_config_path)
    assert config.learning_rate == pytest.approx(best.params["learning_rate"])
    assert config.gamma == pytest.approx(best.params["gamma"])
    assert config.tau == pytest.approx(best.params["tau"])
    assert config.epsilon_decay_steps == max(1, round(best.params["epsilon_decay_fraction"] * SMALL["total_steps"]))
    assert config.total_steps == SMALL["total_steps"] and config.hidden_sizes == SMALL["hidden_sizes"]
    # Each trial's objective (auc) is the mean of its periodic evaluations, as in its group's metrics.
    trials_csv = (out / "trials.csv").read_text().splitlines()
    assert len(trials_csv) == 5 and trials_csv[0].startswith("number,state,value")


def test_objective_auc_is_the_mean_of_the_periodic_evaluations(tmp_path):
    import csv
    import json

    out = tmp_path / "study"
    dqnx.tune("CartPole-v1", trials=2, batch=2, seeds=2, config=SMALL, out=out)
    group = next((out / "trials").glob("batch-*/g0"))
    members = json.loads((group / "members.json").read_text())["members"]
    rows = list(csv.DictReader(open(group / "metrics.csv")))
    evals = np.array([float(r["eval_mean_return"]) for r in rows]).reshape(-1, len(members))
    for trial in _finished(_study(out)):
        mine = [i for i, m in enumerate(members) if m["config_index"] == trial.number]
        assert len(mine) == 2
        assert trial.value == pytest.approx(evals[:, mine].mean(), rel=1e-6)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--param", "lr=1e-2:1e-4:log"], "need LOW < HIGH"),
        (["--param", "lr=0:1e-2:log"], "LOW > 0 with log"),
        (["--param", "lr"], "--param expects name=LOW:HIGH"),
        (["--param", "nosuchfield=1:2"], "nosuchfield"),
        (["--param", "loss=1:2"], "is not a number"),
        (["--objective", "best"], "objective must be 'auc' or 'final'"),
        (["--trials", "0"], "trials must be a positive integer"),
        (["--storage", "nosuchdb://x"], "cannot open the Optuna storage"),
        (["--param", "gamma=1.5:2"], "--param gamma: the value 1.5 cannot train"),
        (["--param", "lr=1e-4:1e-3", "--param", "lr=1e-3:1e-2"], "--param sets learning_rate twice"),
        (["--param", "batch_size=32|4096", "--set", "buffer_size=2000"], "--param batch_size: the value 4096 cannot train"),
    ],
)
def test_bad_tune_input_is_one_line_and_exit_2(tmp_path, args, message, dqnx_cli_here):
    out = tmp_path / "study"
    result = dqnx_cli_here(["tune", "CartPole-v1", "--out", out, "-q", *args], tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr
    assert not out.exists()  # nothing written: no study.db, not even the empty directory


def test_a_study_started_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "study"
    dqnx.tune("CartPole-v1", trials=1, batch=1, config=SMALL, out=out)
    with pytest.raises(UsageError, match="started with other settings"):
        dqnx.tune("CartPole-v1", trials=2, batch=1, config={**SMALL, "total_steps": 1500}, out=out)


# --- Ray ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Ray starts its processes by fork + exec; JAX warns about any fork (see search/distributed.py).
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_sweep_on_ray_gives_the_local_results(tmp_path, local_ray):
    """Tabular Q-learning has no matmuls, so the per-worker programs give the local bits exactly."""
    grid = {"learning_rate": [0.1, 0.5], "gamma": [0.9, 0.99]}
    config = {"total_steps": 3000, "eval_every": 1000, "eval_episodes": 8, "final_eval_episodes": 8}
    local = dqnx.sweep("Dungeon-v0", grid, agent="tabular-q", seeds=2, config=config, out=tmp_path / "local")
    remote = dqnx.sweep("Dungeon-v0", grid, agent="tabular-q", seeds=2, config=config, out=tmp_path / "ray", ray="auto")
    assert remote.rows == local.rows
    assert (tmp_path / "ray" / "curves.csv").read_text() == (tmp_path / "local" / "curves.csv").read_text()
    assert (tmp_path / "ray" / "curves.png").stat().st_size > 0


def test_tune_on_ray_stores_its_trials_in_the_same_study(tmp_path, local_ray):
    out = tmp_path / "study"
    first = dqnx.tune("CartPole-v1", trials=2, batch=2, config=SMALL, out=out, ray="auto")
    assert first.trials_finished == 2
    second = dqnx.tune("CartPole-v1", trials=4, batch=2, config=SMALL, out=out)  # continued locally
    assert second.trials_run == 2 and len(_finished(_study(out))) == 4
    assert (out / "best.toml").is_file()


def test_ray_missing_is_a_one_line_error(tmp_path, guarded_run):
    """Ray is an optional extra: --ray without it names the install command (import blocked here)."""
    script = ("import sys; sys.modules['ray'] = None; sys.argv = ['dqnx'] + sys.argv[1:]; "
              "from dqnx.cli import main; main()")
    result = guarded_run([sys.executable, "-c", script, "sweep", "CartPole-v1", "--grid", "lr=1e-3,3e-3", "--ray",
                          "--steps", "1000", "--set", "learning_starts=200", "--out", str(tmp_path / "s"), "-q"], 120,
                         capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'dqnx[ray]'" in lines[0]
    assert not (tmp_path / "s").exists()


def test_a_batch_of_asked_trials_spreads_out():
    """tune asks a batch before telling any of it: the sampler must count the pending trials
    (constant liar), or TPE proposes the whole batch from one model and the points cluster."""
    from optuna.distributions import FloatDistribution

    from dqnx.search.tune import _sampler

    space = {"x": FloatDistribution(0, 1), "y": FloatDistribution(0, 1)}

    def batch_spread(make_sampler) -> float:
        spreads = []
        for seed in range(5):
            study = optuna.create_study(direction="maximize", sampler=make_sampler(seed))
            for _ in range(12):
                trial = study.ask(space)
                study.tell(trial, -(trial.params["x"] - 0.3) ** 2 - (trial.params["y"] - 0.7) ** 2)
            points = np.array([[t.params["x"], t.params["y"]] for t in (study.ask(space) for _ in range(8))])
            distance = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1)) + 9 * np.eye(8)
            spreads.append(distance.min(axis=1).mean())
        return float(np.mean(spreads))

    # Optuna 4's default (constant_liar=False) as the baseline; Optuna 5 turned it on by default.
    assert batch_spread(_sampler) > 2 * batch_spread(lambda seed: optuna.samplers.TPESampler(seed=seed, constant_liar=False))
