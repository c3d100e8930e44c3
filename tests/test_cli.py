"""Tier 4 (bad input) and the happy paths of the `dqnx` command, run as a user would.

Every command runs in its own working directory, with relative paths so that messages
stay short and comparable. Training and evaluation run in a subprocess (`python -m
dqnx.cli ...`), as a script would; the bad-input cases call the same entry point in
this process (a new interpreter costs seconds of imports each), and one of them runs in
a subprocess too, to show a real process exits 2 with its one line.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

TINY_SETS = [
    "--set", "eval_every=1000", "--set", "eval_episodes=8", "--set", "final_eval_episodes=8",
    "--set", "hidden_sizes=32", "--set", "buffer_size=2000", "--set", "learning_starts=200",
    "--set", "lr_schedule=constant",  # the preset's decays to 0: the resume cases extend these runs
]
RUN_FILES = ["config.json", "best.safetensors", "last.safetensors", "checkpoint.safetensors", "metrics.csv", "summary.json"]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and directory under root, with size and modification time."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.stat()
        out[str(path.relative_to(root))] = (st.st_size if path.is_file() else -1, st.st_mtime_ns)
    return out


# --- a run trained through the CLI ---------------------------------------------------------


@pytest.fixture(scope="module")
def cli_root(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def trained(cli_root, dqnx_cli):
    """`dqnx train CartPole-v1 --steps 2000 ... --quiet --out run`, and its result."""
    cwd = cli_root / "train"
    cwd.mkdir()
    result = dqnx_cli(["train", "CartPole-v1", "--steps", "2000", *TINY_SETS, "--quiet", "--out", "run"], cwd)
    return cwd / "run", result


def test_train_writes_a_complete_run(trained):
    run, result = trained
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.strip().splitlines()[-1] == "run"  # the run directory is printed
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    for key in ("env_id", "total_steps", "wall_seconds", "steps_to_solve", "eval_mean_return", "eval_std_return"):
        assert key in summary, key
    assert summary["env_id"] == "CartPole-v1"
    assert summary["total_steps"] == 2000
    assert summary["eval_episodes"] == 8
    config = json.loads((run / "config.json").read_text())
    assert config["env_id"] == "CartPole-v1" and config["seeds"] == [0]
    assert config["config"]["total_steps"] == 2000
    assert config["config"]["hidden_sizes"] == [32]
    assert config["config"]["eval_every"] == 1000
    lines = (run / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("env_steps,seed,")
    assert [line.split(",")[0] for line in lines[1:]] == ["1000", "2000"]


def test_eval_json_prints_one_object(trained, dqnx_cli):
    run, _ = trained
    result = dqnx_cli(["eval", run.name, "--json", "--episodes", "5"], run.parent)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert isinstance(data, dict)
    for key in ("mean_return", "std_return", "episodes"):
        assert key in data, key
    assert data["episodes"] == 5
    assert data["weights"] == "best"
    # The printed figures are the evaluation of the run's best weights: the ones its summary names ...
    summary = json.loads((run / "summary.json").read_text())
    assert data["weights_env_steps"] == [summary["per_seed"][0]["best_step"]]
    # ... whose final evaluation (8 other episodes of the same greedy policy) it agrees with, within the noise ...
    noise = math.hypot(data["std_return"] / math.sqrt(5), summary["eval_std_return"] / math.sqrt(8))
    assert abs(data["mean_return"] - summary["eval_mean_return"]) <= 4 * noise + 0.5, (data, summary)
    # ... and exactly what the API computes for the same episodes.
    import dqnx

    expected = dqnx.evaluate(run, episodes=5, weights="best")
    assert (data["mean_return"], data["std_return"]) == (expected["mean_return"], expected["std_return"])


def test_eval_prints_a_readable_line(trained, dqnx_cli_here):
    run, _ = trained
    result = dqnx_cli_here(["eval", run.name, "--episodes", "3", "--weights", "last"], run.parent)
    assert result.returncode == 0, result.stderr
    assert "CartPole-v1: mean return" in result.stdout
    assert "over 3 episodes" in result.stdout


def test_envs_lists_discrete_envs(tmp_path, dqnx_cli_here):
    result = dqnx_cli_here(["envs"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    for env_id in ("CartPole-v1", "Acrobot-v1", "MountainCar-v0"):
        assert env_id in result.stdout, env_id
    assert "Pendulum-v1" not in result.stdout  # continuous actions: not for DQN
    assert list(tmp_path.iterdir()) == []


def test_help_keeps_square_brackets(tmp_path, dqnx_cli_here):
    # typer renders help through rich markup, where "[ray]" is a style tag and vanishes unless escaped.
    for command, phrase in [("sweep", "pip install 'dqnx[ray]'"), ("sweep", "hidden_sizes=[64,64],[256,256]")]:
        result = dqnx_cli_here([command, "--help"], tmp_path)
        assert result.returncode == 0, result.stderr
        words = " ".join(re.sub("[\u2500-\u257f]", " ", result.stdout).split())  # without the panels' box lines
        assert phrase in words, (command, phrase)


# --- bad input -------------------------------------------------------------------------------


@dataclass
class Case:
    args: list[str]
    expect: list[str]  # substrings the error message must contain
    prepare: Callable[[Path, Path], None] | None = None  # (case dir, trained run) -> None
    extra: dict = field(default_factory=dict)


def _write(name: str, text: str) -> Callable[[Path, Path], None]:
    def prepare(cwd: Path, run: Path) -> None:
        (cwd / name).write_text(text)
    return prepare


def _foreign(cwd: Path, run: Path) -> None:
    (cwd / "foreign").mkdir()
    (cwd / "foreign" / "notes.txt").write_text("not a run\n")


def _copy_run(cwd: Path, run: Path) -> None:
    shutil.copytree(run, cwd / "run")


def _corrupt_best(cwd: Path, run: Path) -> None:
    _copy_run(cwd, run)
    (cwd / "run" / "best.safetensors").write_bytes(bytes(range(256)) * 4)


def _corrupt_config(cwd: Path, run: Path) -> None:
    _copy_run(cwd, run)
    (cwd / "run" / "config.json").write_text('{"format": "dqnx-run/1", "env_id": "CartP')


def _no_checkpoint(cwd: Path, run: Path) -> None:
    _copy_run(cwd, run)
    (cwd / "run" / "checkpoint.safetensors").unlink()


def _corrupt_checkpoint(cwd: Path, run: Path) -> None:
    _copy_run(cwd, run)
    (cwd / "run" / "checkpoint.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")


def _existing(cwd: Path, run: Path) -> None:
    (cwd / "existing").mkdir()
    (cwd / "existing" / "keep.txt").write_text("mine\n")


CASES: dict[str, Case] = {
    "unknown_env": Case(["train", "CartPol-v1", "--out", "out"], ["CartPol-v1", "CartPole-v1"]),
    "continuous_env": Case(["train", "Pendulum-v1", "--out", "out"], ["Pendulum-v1", "continuous"]),
    "no_env": Case(["train"], ["environment"]),
    "unknown_set_key": Case(["train", "CartPole-v1", "--set", "learning_rat=1", "--out", "out"],
                            ["learning_rat", "learning_rate"]),
    "ill_typed_set": Case(["train", "CartPole-v1", "--set", "batch_size=abc"], ["batch_size", "abc", "integer"]),
    "set_out_of_range": Case(["train", "CartPole-v1", "--set", "gamma=2"], ["gamma", "2"]),
    "set_without_equals": Case(["train", "CartPole-v1", "--set", "learning_rate"], ["--set", "key=value", "learning_rate"]),
    "steps_zero": Case(["train", "CartPole-v1", "--steps", "0"], ["--steps", "0"]),
    "steps_negative": Case(["train", "CartPole-v1", "--steps", "-5"], ["--steps", "-5"]),
    "seed_negative": Case(["train", "CartPole-v1", "--seed", "-1"], ["--seed", "-1"]),
    "seeds_zero": Case(["train", "CartPole-v1", "--seeds", "0"], ["--seeds", "0"]),
    "unknown_option": Case(["train", "CartPole-v1", "--stpes", "5"], ["--stpes"]),
    "config_missing": Case(["train", "CartPole-v1", "--config", "missing.toml"], ["missing.toml", "does not exist"]),
    "config_invalid_toml": Case(["train", "CartPole-v1", "--config", "bad.toml"], ["bad.toml", "TOML"],
                                _write("bad.toml", "learning_rate = [1,\n")),
    "config_unknown_key": Case(["train", "CartPole-v1", "--config", "typo.toml"], ["learning_rat", "learning_rate", "typo.toml"],
                               _write("typo.toml", "learning_rat = 0.001\n")),
    "eval_missing_dir": Case(["eval", "nothere"], ["nothere", "does not exist"]),
    "eval_foreign_dir": Case(["eval", "foreign"], ["foreign", "config.json"], _foreign),
    "eval_corrupt_weights": Case(["eval", "run"], ["best.safetensors", "corrupted"], _corrupt_best),
    "eval_corrupt_config": Case(["eval", "run"], ["config.json", "corrupted"], _corrupt_config),
    "eval_bad_weights": Case(["eval", "run", "--weights", "bogus"], ["bogus", "best", "last"], _copy_run),
    "eval_episodes_zero": Case(["eval", "run", "--episodes", "0"], ["--episodes", "0"], _copy_run),
    "resume_missing": Case(["train", "--resume", "nothere"], ["nothere", "does not exist"]),
    "resume_with_set_layout": Case(["train", "--resume", "run", "--set", "hidden_sizes=64"], ["hidden_sizes", "layout", "new run"], _copy_run),
    "resume_fewer_steps": Case(["train", "--resume", "run", "--steps", "100"], ["100", "total_steps"], _copy_run),
    # A failed resume must not touch the run (config.json's total_steps included).
    "resume_no_checkpoint": Case(["train", "--resume", "run", "--steps", "4000"], ["checkpoint"], _no_checkpoint),
    "resume_corrupt_checkpoint": Case(["train", "--resume", "run", "--steps", "4000"],
                                      ["checkpoint.safetensors", "corrupted"], _corrupt_checkpoint),
    "out_not_empty": Case(["train", "CartPole-v1", "--steps", "100", "--set", "learning_starts=10", "--set", "eval_every=100", "--out", "existing"], ["existing", "already exists"],
                          _existing),
}


@pytest.fixture(scope="module")
def bad_results(cli_root, trained, dqnx_cli_here):
    """Run every bad-input case, in this process; {name: (cwd, before, result)}."""
    run, train_result = trained
    assert train_result.returncode == 0, train_result.stderr
    results = {}
    for name, case in CASES.items():
        cwd = cli_root / "bad" / name
        cwd.mkdir(parents=True)
        if case.prepare is not None:
            case.prepare(cwd, run)
        before = snapshot(cwd)
        results[name] = (cwd, before, dqnx_cli_here(case.args, cwd))
    return results


def test_bad_input_in_a_real_process_exits_2_with_one_line(tmp_path, dqnx_cli):
    result = dqnx_cli(CASES["unknown_set_key"].args, tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "learning_rate" in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == []


def test_usage_error_names_the_dqnx_command_however_python_started_it(tmp_path, dqnx_cli):
    """The hint must name the command users type, not how this interpreter was started (`python -m dqnx.cli`)."""
    result = dqnx_cli(["train", "CartPole-v1", "--no-such-flag"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "see dqnx train --help" in result.stderr and "python -m" not in result.stderr, result.stderr


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_naming_the_problem(name, bad_results):
    cwd, before, result = bad_results[name]
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr
    assert "Traceback" not in result.stdout
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    message = " ".join(result.stderr[result.stderr.index("error:"):].split())  # undo any line wrapping
    for text in CASES[name].expect:
        assert text in message, (text, message)
    assert snapshot(cwd) == before, "bad input must leave nothing written"


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_stderr_line(name, bad_results):
    """The whole of stderr is a single line `error: ...` (no banner first, no wrapping)."""
    _, _, result = bad_results[name]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
