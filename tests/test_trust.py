"""A run directory received from someone else runs no code (issue 16), and environments from
other packages and wrappers from the command line (issue 15, items 1-2).

The crafted runs name a probe module that writes a sentinel file when it is imported or
called; every command that reads a run must refuse them with one line and exit 2, leave
the sentinel absent, leave `sys.modules` without the probe, and write nothing. The probe's
name is unique to this file, so checking `sys.modules` in this process is exact. Commands
run in-process (dqnx.cli.main) to keep the file fast.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from dqnx.errors import UsageError

TOYS = Path(__file__).parent
PROBE = "dqnx_trust_probe_4f1c"
PROBE_SOURCE = '''
import pathlib
SENTINEL = pathlib.Path(__file__).with_name("SENTINEL")
SENTINEL.write_text("imported")


def wrap(env, **kwargs):
    SENTINEL.write_text("called")
    return env


class Probe:
    def __init__(self, **kwargs):
        SENTINEL.write_text("built")
'''


def run_cli(args: list, monkeypatch, capsys) -> tuple[int, str, str]:
    """`dqnx ARGS` in this process: (exit status, stdout, stderr)."""
    from dqnx import cli

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["dqnx", *map(str, args)])
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("probe")
    (folder / f"{PROBE}.py").write_text(PROBE_SOURCE)
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    assert PROBE not in sys.modules


@pytest.fixture(scope="module", autouse=True)
def toys_on_path():
    sys.path.insert(0, str(TOYS))  # gym_toys, the corridor's module
    yield
    sys.path.remove(str(TOYS))


@pytest.fixture(scope="module")
def corridor_run(tmp_path_factory, tiny):
    """A tiny DQN run on gym_toys:Corridor (an env that names code), created here: trusted."""
    from dqnx import api

    out = tmp_path_factory.mktemp("trusted") / "corridor"
    config = tiny(total_steps=300, learning_starts=50, eval_every=150, eval_episodes=2, final_eval_episodes=2)
    # A time limit: an untrained greedy policy may never reach the corridor's end.
    api.train("gym_toys:Corridor", backend="gymnasium", config=config, env_params={"max_episode_steps": 20}, out=out,
              tensorboard=False)
    return out


def _craft(base: Path, dest: Path, **changes) -> Path:
    shutil.copytree(base, dest)
    config = json.loads((dest / "config.json").read_text())
    for key, value in changes.items():
        if key == "hidden_sizes":
            config["config"]["hidden_sizes"] = value
        else:
            config[key] = value
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def _dataset(folder: Path, name: str, meta: dict) -> Path:
    path = folder / f"{name}.csv"
    path.write_text("obs_0,obs_1,action\n0,1,0\n1,0,1\n")
    (folder / f"{name}.csv.json").write_text(json.dumps({
        "format": "dqnx-dataset/1", "columns": ["obs_0", "obs_1", "action"], "num_actions": 2, "seed": name, **meta}))
    return path


VARIANTS = {
    # the report: a gymnasium "environment" that is subprocess.run with arguments
    "subprocess": lambda sentinel: {"env_id": "subprocess:run", "backend": "gymnasium",
                                    "env_params": {"args": ["touch", str(sentinel)]}},
    "wrapper": lambda sentinel: {"wrappers": [{"target": f"{PROBE}:wrap", "kwargs": {}}]},
    "package-id": lambda sentinel: {"env_id": f"{PROBE}:Probe-v0", "backend": "gymnasium"},
    "module-class": lambda sentinel: {"env_id": f"{PROBE}:Probe", "backend": "gymnasium"},
    "callable-param": lambda sentinel: {"env_id": "CartPole-v1", "backend": "gymnasium",
                                        "env_params": {"render_mode": f"{PROBE}:wrap"}},
}
REFUSAL = {"callable-param": "names code (module:attribute)"}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_crafted_runs_are_refused_by_every_reader_with_nothing_run(variant, corridor_run, probe_dir, tmp_path,
                                                                   monkeypatch, capsys):
    import dqnx

    work = tmp_path / "work"
    work.mkdir()
    sentinel = tmp_path / "pwned.txt"
    run = _craft(corridor_run, work / "run", **VARIANTS[variant](sentinel))
    meta = {k: v for k, v in VARIANTS[variant](sentinel).items() if k != "hidden_sizes"}
    meta.setdefault("env_id", "gym_toys:Corridor")
    meta.setdefault("backend", "gymnasium")
    train_csv, test_csv = _dataset(work, "train", meta), _dataset(work, "test", meta)
    monkeypatch.chdir(work)
    before = snapshot(work)
    commands = {
        "eval": ["eval", run],
        "resume": ["train", "--resume", run, "--steps", 1000],
        "record": ["record", run, "--out", work / "r.gif"],
        "plot": ["plot", run],
        "report": ["report", run],
        "dataset": ["dataset", run, "--samples", 5, "--out", work / "d.csv"],
        "imitate": ["imitate", train_csv, "--test", test_csv, "--out", work / "imitated"],
    }
    expected = REFUSAL.get(variant, "names code that building its environment would import and run")
    for name, args in commands.items():
        code, out, err = run_cli(args, monkeypatch, capsys)
        assert code == 2, (name, err)
        assert err.count("\n") == 1 and expected in err, (name, err)
        if variant != "callable-param":
            assert "--trust-env-code" in err and ("env=" in err or "dqnx.train(env" in err), (name, err)
    with pytest.raises(UsageError, match="names code"):
        dqnx.load(run)
    with pytest.raises(UsageError, match="names code"):
        dqnx.evaluate(run, episodes=1)
    assert not sentinel.exists() and not (probe_dir / "SENTINEL").exists()
    assert PROBE not in sys.modules
    assert snapshot(work) == before  # nothing written, not even an empty plots/ or a run directory


def test_a_trusted_run_passes_and_the_same_run_elsewhere_needs_the_flag_or_env(corridor_run, tmp_path, monkeypatch,
                                                                                capsys):
    import dqnx
    from gym_toys import Corridor

    code, out, err = run_cli(["eval", corridor_run, "--episodes", 2, "--json"], monkeypatch, capsys)
    assert code == 0, err  # created here: the record outside the run directory trusts it
    expected = json.loads(out)["mean_return"]
    # Another user (an empty record): refused, then through the flag or the env given.
    monkeypatch.setenv("DQNX_HOME", str(tmp_path / "elsewhere"))
    code, out, err = run_cli(["eval", corridor_run, "--episodes", 2, "--json"], monkeypatch, capsys)
    assert code == 2 and "gym_toys:Corridor" in err and "--trust-env-code" in err
    code, out, err = run_cli(["eval", corridor_run, "--episodes", 2, "--json", "--trust-env-code"], monkeypatch, capsys)
    assert code == 0, err
    assert json.loads(out)["mean_return"] == expected
    import gymnasium as gym

    given = gym.wrappers.TimeLimit(Corridor(), 20)
    assert dqnx.evaluate(dqnx.load(corridor_run, env=given), episodes=2)["mean_return"] == expected
    assert not (tmp_path / "elsewhere").exists()  # reading never adds to the record


def test_trust_is_keyed_on_the_code_fields_not_the_path(corridor_run, tmp_path, monkeypatch, capsys):
    # A copy with the same code fields is the same code: trusted. Changed arguments are not.
    same = _craft(corridor_run, tmp_path / "same")
    code, _, err = run_cli(["eval", same, "--episodes", 1], monkeypatch, capsys)
    assert code == 0, err
    other = _craft(corridor_run, tmp_path / "other", env_params={"length": 3, "max_episode_steps": 20})
    code, _, err = run_cli(["eval", other, "--episodes", 1], monkeypatch, capsys)
    assert code == 2 and "names code" in err


def test_show_and_load_weights_need_no_environment(corridor_run, probe_dir, tmp_path, monkeypatch, capsys):
    """The recorded spaces are enough for the weights: nothing the run names is imported."""
    import dqnx.api as api
    from dqnx.runs.run_dir import read_spaces

    run = _craft(corridor_run, tmp_path / "run", env_id=f"{PROBE}:Probe", backend="gymnasium")
    spaces = read_spaces(run)
    assert spaces["observation"]["shape"] == [6] and spaces["action"]["num_actions"] == 2
    assert spaces["observation"]["num_states"] == 6
    code, out, err = run_cli(["show", run], monkeypatch, capsys)
    assert code == 0, err
    weights_only = api.load_weights(run)
    trusted = api.load(corridor_run)
    obs = np.eye(6, dtype=np.float32)
    np.testing.assert_array_equal(weights_only.q_values(obs), trusted.q_values(obs))
    with pytest.raises(UsageError, match="recorded spaces only"):
        api.evaluate(weights_only, episodes=1)
    assert PROBE not in sys.modules and not (probe_dir / "SENTINEL").exists()


def test_weights_disagreeing_with_the_config_are_refused_from_the_header(corridor_run, tmp_path, monkeypatch, capsys):
    import dqnx.runs.files as files

    run = _craft(corridor_run, tmp_path / "run", hidden_sizes=[16])
    opened = []
    real_open = files.safe_open

    class Watch:  # counts tensors read: a mismatch must be found before any is
        def __init__(self, *a, **k):
            self.inner = real_open(*a, **k)

        def __enter__(self):
            self.f = self.inner.__enter__()
            return self

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

        def __getattr__(self, name):
            if name == "get_tensor":
                opened.append(name)
            return getattr(self.f, name)

    monkeypatch.setattr(files, "safe_open", Watch)
    code, _, err = run_cli(["eval", run, "--episodes", 1], monkeypatch, capsys)
    assert code == 2 and "the config expects" in err and err.count("\n") == 1
    assert opened == []


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, "nests deeper"),
    ('{"format": "dqnx-run/1", "deep": ' + "[" * 40 + "1" + "]" * 40 + "}", "nests deeper than 32"),
])
def test_deep_json_is_one_line(corridor_run, tmp_path, monkeypatch, capsys, text, message):
    run = _craft(corridor_run, tmp_path / "run")
    (run / "config.json").write_text(text)
    code, _, err = run_cli(["eval", run], monkeypatch, capsys)
    assert code == 2 and message in err and err.count("\n") == 1


@pytest.mark.parametrize("field, value, message", [
    ("env_id", "CartPole-v1; rm -rf /", "is not an environment id"),
    ("env_id", "os:system('x')", "is not an environment id"),
    ("backend", "pwn", "backend 'pwn' is not one of"),
    ("agent", "__import__", "unknown agent"),
    ("env_params", {"__class__": 1}, "parameter names are identifiers"),
    ("wrappers", [{"target": "os.system"}], "is not a wrapper"),
    ("wrappers", [{"target": "a:b", "code": "x"}], "must be {target"),
])
def test_config_fields_are_checked_as_data(corridor_run, tmp_path, monkeypatch, capsys, field, value, message):
    run = _craft(corridor_run, tmp_path / "run", **{field: value})
    code, _, err = run_cli(["eval", run], monkeypatch, capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err


# --- issue 15: package:EnvId and wrappers ------------------------------------------------------


def test_package_ids_never_fall_to_gymnax_by_suffix():
    from dqnx.envs import is_jax_id, resolve_backend

    assert not is_jax_id("popgym:Whatever-MinAtar")
    assert resolve_backend("somepackage:Thing-bsuite") == "gymnasium"


def test_wrappers_from_a_config_file_are_said_and_applied_after_the_flags(tmp_path, capsys):
    from dqnx.envs.source import given_wrappers as _wrappers
    from dqnx.envs.source import Wrapper

    toml = tmp_path / "c.toml"
    toml.write_text('learning_rate = 1e-3\n[[wrappers]]\ntarget = "gymnasium.wrappers:TimeLimit"\n'
                    'kwargs = {max_episode_steps = 50}\n')
    got = _wrappers(["gymnasium.wrappers:FlattenObservation"], toml)
    assert got == (Wrapper("gymnasium.wrappers:FlattenObservation", {}),
                   Wrapper("gymnasium.wrappers:TimeLimit", {"max_episode_steps": 50}))
    assert "names wrappers" in capsys.readouterr().err
    from dqnx.config import build_config

    assert build_config("CartPole-v1", config_file=toml).learning_rate == 1e-3  # wrappers are not hyperparameters


MINIGRID = "minigrid:MiniGrid-Empty-5x5-v0"
FLAT = ["--wrapper", "minigrid.wrappers:ImgObsWrapper", "--wrapper", "gymnasium.wrappers:FlattenObservation"]
TINY = ["--set", "learning_starts=100", "--set", "eval_every=200", "--set", "eval_episodes=2",
        "--set", "final_eval_episodes=2", "--set", "hidden_sizes=32", "--set", "buffer_size=1000", "--no-tensorboard", "-q"]


def test_minigrid_trains_evaluates_and_resumes_from_the_command_line(tmp_path, monkeypatch, capsys):
    pytest.importorskip("minigrid")
    run = tmp_path / "mg"
    code, out, err = run_cli(["train", MINIGRID, *FLAT, "--steps", 200, "--out", run, *TINY], monkeypatch, capsys)
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())
    assert config["env_id"] == MINIGRID and config["backend"] == "gymnasium"
    assert [w["target"] for w in config["wrappers"]] == ["minigrid.wrappers:ImgObsWrapper",
                                                         "gymnasium.wrappers:FlattenObservation"]
    assert config["spaces"]["observation"]["shape"] == [147] and config["spaces"]["action"]["num_actions"] == 7
    code, out, err = run_cli(["eval", run, "--episodes", 2, "--json"], monkeypatch, capsys)
    assert code == 0, err
    assert json.loads(out)["episodes"] == 2
    code, out, err = run_cli(["train", "--resume", run, "--steps", 400, "-q"], monkeypatch, capsys)
    assert code == 0, err
    assert json.loads((run / "summary.json").read_text())["total_steps"] == 400


@pytest.mark.parametrize("args, message", [
    (["minigrid:MiniGrid-Nowhere-v0", *FLAT], "module 'minigrid' has no 'MiniGrid-Nowhere-v0'"),
    (["no_such_package_x:Env-v0"], "cannot import 'no_such_package_x'"),
    ([MINIGRID, "--wrapper", "minigrid.wrappers:NoSuchWrapper"], "wrapper minigrid.wrappers:NoSuchWrapper is missing"),
    ([MINIGRID, "--wrapper", "gymnasium.wrappers:__all__"], "is not callable"),
    ([MINIGRID, "--wrapper", "no_such_package_x:Wrap"], "cannot import 'no_such_package_x' for 'wrapper"),
    ([MINIGRID, "--wrapper", "minigrid.wrappers:ImgObsWrapper={bad"], "not a JSON object"),
    ([MINIGRID, "--wrapper", "minigrid.wrappers:ImgObsWrapper={\"x\": 1}"], "wrapper minigrid.wrappers:ImgObsWrapper"),
    ([MINIGRID], "Dict observations"),
    ([MINIGRID, "--wrapper", "minigrid.wrappers:ImgObsWrapper", "--wrapper", "minigrid.wrappers:ImgObsWrapper"],
     "wrapper minigrid.wrappers:ImgObsWrapper"),
    (["CartPole-v1", "--wrapper", "gymnasium.wrappers:FlattenObservation"], "JAX backend"),
    ([MINIGRID, "--env-param", "render_mode=os:system"], "names code (module:attribute)"),
])
def test_bad_package_ids_and_wrappers_are_one_line_and_write_nothing(args, message, tmp_path, monkeypatch, capsys):
    pytest.importorskip("minigrid")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["train", *args, "--out", tmp_path / "run", "--steps", 100, "-q"], monkeypatch, capsys)
    assert code == 2, err
    assert message in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []
