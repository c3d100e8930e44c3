"""Export (ONNX, StableHLO) and serving of trained agents: the exported models and the
service answer as dqnx does, and bad input is refused.

Every network shape is built from a tiny config without training (untrained weights,
jittered so that no two Q-values tie, check the arithmetic as well as trained ones);
one tiny trained CartPole run is shared by the CLI and service tests.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import numpy as np
import pytest

from dqnx.agents import make_learner
from dqnx.api import Agent
from dqnx.config import DQNConfig, LinearConfig, TabularConfig
from dqnx.deploy.export import CHECK_BATCH, ExportCheckFailed, export_policy, onnx_session
from dqnx.deploy.policy import policy_of, sample_observations
from dqnx.errors import UsageError


@dataclasses.dataclass(frozen=True)
class SpecEnv:
    """What a learner needs to know about an environment, without one."""

    env_id: str
    obs_shape: tuple
    num_actions: int
    obs_dtype: str = "float32"
    num_states: int | None = None
    obs_low: tuple | None = None
    obs_high: tuple | None = None
    image_layout: str | None = None
    frame_stack: int = 0
    atari: bool = False
    max_episode_steps: int = 100
    masked: bool = False  # gives legal-action masks


VECTOR = SpecEnv("Vector-v0", (4,), 3, obs_low=(-1.0, -2.0, -1.0, -2.0), obs_high=(1.0, 2.0, 1.0, 2.0))
DISCRETE = SpecEnv("Discrete-v0", (5,), 2, num_states=5)
ATARI = SpecEnv("ALE/Tiny-v5", (4, 36, 36), 4, obs_dtype="uint8", image_layout="CHW", frame_stack=4, atari=True)
BOARD = SpecEnv("Board-MinAtar", (10, 10, 4), 3, obs_dtype="bool", image_layout="HWC")  # bool in replay, float32 to the agent


def untrained_agent(env: SpecEnv, algorithm: str = "dqn", config=None, seeds: int = 2) -> Agent:
    """An Agent with initial weights (plus noise) for `seeds` seeds, as dqnx.load would return it."""
    config = config if config is not None else DQNConfig().replace(hidden_sizes=(8,), head_sizes=(4,))
    learner = make_learner(algorithm, config, env)
    params = jax.vmap(lambda k: learner.init(k).params)(jax.random.split(jax.random.PRNGKey(0), seeds))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    params = jax.tree.unflatten(tree, [x + 0.3 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])
    return Agent(run_dir=None, env=env, algorithm=algorithm, seeds=list(range(seeds)), config=config, params=params,
                 weights="best", weights_info={"env_steps": [0] * seeds})


def dqn(**changes) -> DQNConfig:
    return DQNConfig().replace(**{"hidden_sizes": (8,), "head_sizes": (4,), **changes})


NETWORKS = {
    "mlp": (VECTOR, "dqn", dqn()),
    "mlp_layernorm_tanh": (VECTOR, "dqn", dqn(activation="tanh", layer_norm=True)),
    "dueling": (VECTOR, "dqn", dqn(dueling=True)),
    "c51": (VECTOR, "dqn", dqn(distributional=True, num_atoms=11)),
    "noisy": (VECTOR, "dqn", dqn(noisy=True)),
    "rainbow_heads": (VECTOR, "dqn", dqn(noisy=True, dueling=True, distributional=True, num_atoms=5)),
    "per_action_heads": (VECTOR, "dqn", dqn(q_head="per_action_heads")),
    "state_action": (VECTOR, "dqn", dqn(q_head="state_action")),
    "one_hot_states": (DISCRETE, "dqn", dqn()),
    "board_mlp": (BOARD, "dqn", dqn(network="mlp")),
    "minatar_small_cnn": (BOARD, "dqn", dqn(network="small_cnn")),
    "nature_cnn": (ATARI, "dqn", dqn(network="cnn")),
    "tabular_discrete": (DISCRETE, "tabular-q", TabularConfig()),
    "tabular_box": (VECTOR, "tabular-q", TabularConfig(bins=(3,))),
    "linear_quadratic": (VECTOR, "linear-q", LinearConfig(features="quadratic")),
}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_export_matches_dqnx(name, tmp_path):
    """Both formats of every network shape: export_policy's own check (Q within 1e-5 x
    max(1, max|Q|), identical greedy actions) passes, and the files reloaded answer as dqnx."""
    import onnx

    env, algorithm, config = NETWORKS[name]
    agent = untrained_agent(env, algorithm, config)
    policy = policy_of(agent, seed_index=1)
    obs = sample_observations(policy, CHECK_BATCH, seed=7)
    expected = agent.q_values(obs, seed_index=1)
    assert not np.allclose(expected, agent.q_values(obs, seed_index=0))  # so the file must hold seed 1's weights
    tolerance = 1e-5 * max(1.0, np.abs(expected).max())
    for format in ("onnx", "stablehlo"):
        out = tmp_path / f"{name}.{format}"
        report = export_policy(policy, format=format, out=out)  # raises ExportCheckFailed otherwise
        assert report["max_abs_error"] <= report["tolerance"] and report["action_mismatches"] == 0
        if format == "onnx":
            meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
            q, action = onnx_session(out).run(None, {"observation": obs})
        else:
            meta = {k: str(v) for k, v in json.loads(Path(f"{out}.json").read_text()).items()}
            exported = jax.export.deserialize(bytearray(out.read_bytes()))
            q, action = exported.call(obs, np.ones((CHECK_BATCH, env.num_actions), bool))
        assert meta["env_id"] == env.env_id and meta["num_actions"] == str(env.num_actions)
        assert meta["trained_with_action_masks"].lower() == "false"  # json.dumps in ONNX, str() read from the sidecar
        assert json.loads(meta["observation_shape"]) == list(env.obs_shape) and meta["observation_dtype"] == ("uint8" if env.obs_dtype == "uint8" else "float32")
        if env.num_states:
            assert "one-hot" in meta["input_contract"]
        if env.atari:
            assert "preprocessed Atari frames" in meta["input_contract"]
        np.testing.assert_allclose(q, expected, rtol=0, atol=tolerance)
        np.testing.assert_array_equal(action, expected.argmax(-1))


def test_metadata_says_whether_the_agent_needs_masks():
    masked = SpecEnv("Masked-v0", (4,), 3, masked=True)
    assert policy_of(untrained_agent(masked)).metadata["trained_with_action_masks"] is True
    off = untrained_agent(masked, config=dqn(action_mask="off"))
    assert policy_of(off).metadata["trained_with_action_masks"] is False


def test_onnx_mask_is_optional_and_respected(tmp_path):
    agent = untrained_agent(VECTOR)
    policy = policy_of(agent)
    out = tmp_path / "masked.onnx"
    export_policy(policy, format="onnx", out=out)
    obs = sample_observations(policy, 6)
    q = agent.q_values(obs)
    mask = np.ones_like(q, bool)
    mask[np.arange(6), q.argmax(-1)] = False  # forbid each row's best action
    _, action = onnx_session(out).run(None, {"observation": obs, "action_mask": mask})
    np.testing.assert_array_equal(action, np.where(mask, q, -np.inf).argmax(-1))
    assert np.all(action != q.argmax(-1))


@pytest.mark.parametrize("format", ["onnx", "stablehlo"])
def test_export_refuses_a_model_that_disagrees(format, tmp_path):
    """The check compares against dqnx's Agent, not the function it exported: a model off
    by twice the tolerance is refused and nothing is left; a third of it passes."""
    agent = untrained_agent(VECTOR)
    policy = policy_of(agent)
    scale = 1e-5 * max(1.0, float(np.abs(agent.q_values(sample_observations(policy, 64), 0)).max()))

    def shifted(by):
        return dataclasses.replace(policy, q_function=lambda obs: policy.q_function(obs) + by)

    out = tmp_path / "off.model"
    with pytest.raises(ExportCheckFailed, match=r"max \|dQ\| .* nothing written"):
        export_policy(shifted(2 * scale), format=format, out=out)
    assert list(tmp_path.iterdir()) == []  # no model, no sidecar, no temporary file
    export_policy(shifted(scale / 3), format=format, out=out)
    assert out.is_file()


def test_export_refuses_a_swapped_greedy_action(tmp_path):
    agent = untrained_agent(VECTOR)
    policy = policy_of(agent)
    flipped = dataclasses.replace(policy, q_function=lambda obs: policy.q_function(obs)[:, ::-1])
    with pytest.raises(ExportCheckFailed, match="greedy action"):
        export_policy(flipped, format="stablehlo", out=tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_bad_export_arguments(tmp_path):
    from dqnx.deploy.export import export

    agent = untrained_agent(VECTOR, seeds=2)
    with pytest.raises(UsageError, match=r"--seed-index must be 0..1"):
        policy_of(agent, seed_index=2)
    with pytest.raises(UsageError, match="--format must be onnx or stablehlo"):
        export(tmp_path, format="tflite", out=tmp_path / "m")
    with pytest.raises(UsageError, match="is a directory"):
        export(tmp_path, format="onnx", out=tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        export(tmp_path, format="onnx", out=tmp_path / "nowhere" / "m.onnx")


# A real run: the CLI, the Python entry point and the service ------------------------------


@pytest.fixture(scope="session")
def cartpole_run(cartpole_two_seeds):
    """A tiny trained CartPole-v1 run with two seeds (conftest's, shared with other files; only read here)."""
    return cartpole_two_seeds.path


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`dqnx ARGS` in this process: (exit status, stdout, stderr)."""
    from dqnx import cli

    monkeypatch.setattr(sys, "argv", ["dqnx", *map(str, args)])
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("format", ["onnx", "stablehlo"])
def test_cli_export_of_a_trained_run(format, cartpole_run, tmp_path, monkeypatch, capsys):
    import dqnx

    out = tmp_path / f"cartpole.{format}"
    code, stdout, stderr = run_cli(monkeypatch, capsys, "export", cartpole_run, "--format", format, "--out", out,
                                   "--weights", "last", "--seed-index", "1")
    assert code == 0, stderr
    assert "max |Q - Q_dqnx| = " in stderr and "greedy actions identical" in stderr
    assert f"wrote {out}" in stdout and "CartPole-v1 dqn, seed 1, last weights" in stdout
    agent = dqnx.load(cartpole_run, weights="last")
    obs = np.random.default_rng(3).uniform(-0.2, 0.2, (16, 4)).astype(np.float32)
    if format == "onnx":
        q, action = onnx_session(out).run(None, {"observation": obs})
    else:
        assert json.loads(Path(f"{out}.json").read_text())["weights"] == "last"
        q, action = jax.export.deserialize(bytearray(out.read_bytes())).call(obs, np.ones((16, 2), bool))
    expected = agent.q_values(obs, seed_index=1)
    np.testing.assert_allclose(q, expected, rtol=0, atol=1e-5 * max(1.0, np.abs(expected).max()))
    np.testing.assert_array_equal(action, agent.act(obs, seed_index=1))


def test_cli_export_that_fails_its_check_exits_1_and_writes_nothing(cartpole_run, tmp_path, monkeypatch, capsys):
    from dqnx.deploy import export as export_module

    real = export_module.policy_of

    def off_by_a_little(agent, seed_index):
        policy = real(agent, seed_index)
        return dataclasses.replace(policy, q_function=lambda obs: policy.q_function(obs) * 1.001 + 0.01)

    monkeypatch.setattr(export_module, "policy_of", off_by_a_little)
    code, stdout, stderr = run_cli(monkeypatch, capsys, "export", cartpole_run, "--format", "stablehlo", "--out",
                                   tmp_path / "m.stablehlo")
    assert code == 1 and stderr.count("\n") == 1 and "disagrees with dqnx" in stderr and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["--format", "onnx", "--seed-index", "2"], "--seed-index must be 0..1"),
    (["--format", "tflite"], "--format must be onnx or stablehlo"),
    (["--format", "onnx", "--weights", "worst"], "weights must be 'best' or 'last'"),
])
def test_cli_export_bad_input(args, message, cartpole_run, tmp_path, monkeypatch, capsys):
    code, _, stderr = run_cli(monkeypatch, capsys, "export", cartpole_run, "--out", tmp_path / "m", *args)
    assert code == 2 and message in stderr and stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_cli_export_of_a_missing_run(tmp_path, monkeypatch, capsys):
    code, _, stderr = run_cli(monkeypatch, capsys, "export", tmp_path / "nope", "--format", "onnx", "--out", tmp_path / "m")
    assert code == 2 and stderr.startswith("error: ") and stderr.count("\n") == 1


@pytest.fixture(scope="module")
def served(cartpole_run):
    """(Starlette app serving seed 1 of the trained run, its dqnx Agent), with a small body limit."""
    import dqnx
    from dqnx.deploy.serve import make_app

    agent = dqnx.load(cartpole_run)
    return make_app(policy_of(agent, seed_index=1), max_body_bytes=4000, max_batch=8), agent


def test_service_answers_as_dqnx_load(served):
    from starlette.testclient import TestClient

    app, agent = served
    client = TestClient(app)
    assert client.get("/health").json() == {"status": "ok"}
    described = client.get("/").json()
    assert described["env_id"] == "CartPole-v1" and described["num_actions"] == 2 and described["seed_index"] == 1
    assert described["observation_shape"] == [4] and "session" in described
    obs = np.random.default_rng(5).uniform(-0.2, 0.2, (5, 4)).astype(np.float32)
    for row in obs:
        answer = client.post("/act", json={"observation": row.tolist()}).json()
        assert answer["q_values"] == agent.q_values(row, seed_index=1).tolist()  # exactly
        assert answer["action"] == int(agent.act(row, seed_index=1))
        forbid_greedy = [a != answer["action"] for a in range(2)]
        masked = client.post("/act", json={"observation": row.tolist(), "action_mask": forbid_greedy}).json()
        assert masked["action"] == 1 - answer["action"] and masked["q_values"] == answer["q_values"]
    batch = client.post("/act/batch", json={"observations": obs.tolist()}).json()  # 5, padded to 8 inside
    np.testing.assert_allclose(batch["q_values"], agent.q_values(obs, seed_index=1), rtol=1e-6, atol=1e-6)
    assert batch["actions"] == agent.act(obs, seed_index=1).tolist()


def test_service_takes_discrete_states_by_index():
    from starlette.testclient import TestClient

    from dqnx.deploy.serve import make_app

    agent = untrained_agent(DISCRETE)
    client = TestClient(make_app(policy_of(agent)))
    for state in range(5):
        by_index = client.post("/act", json={"observation": state}).json()
        one_hot = client.post("/act", json={"observation": np.eye(5)[state].tolist()}).json()
        assert by_index == one_hot and by_index["q_values"] == agent.q_values(state).tolist()
    assert client.post("/act", json={"observation": 5}).status_code == 422
    assert client.post("/act", json={"observation": 1.5}).status_code == 422


BAD_REQUESTS = [  # (body, extra headers, status, words in the one-line error)
    (b"{not json", {}, 400, "malformed JSON"),
    (b"\xff\xfe", {}, 400, "malformed JSON"),
    (b"[1, 2, 3, 4]", {}, 400, "JSON object"),
    (b"{}", {}, 422, 'missing "observation"'),
    (b'{"observation": [1, 2, 3]}', {}, 422, "shape [4]"),
    (b'{"observation": [[1, 2, 3, 4]]}', {}, 422, "shape [4]"),
    (b'{"observation": [1, 2, [3], 4]}', {}, 422, "ragged"),
    (b'{"observation": ["a", 2, 3, 4]}', {}, 422, "numbers"),
    (b'{"observation": [true, 2, 3, 4]}', {}, 422, "numbers"),
    (b'{"observation": null}', {}, 422, "numbers"),
    (b'{"observation": [NaN, 2, 3, 4]}', {}, 400, "NaN"),
    (b'{"observation": [Infinity, 2, 3, 4]}', {}, 400, "Infinity"),
    (b'{"observation": [1e999, 2, 3, 4]}', {}, 422, "non-finite"),
    (b'{"observation": [1, 2, 3, 4], "action_mask": [true]}', {}, 422, "action_mask must have shape [2]"),
    (b'{"observation": [1, 2, 3, 4], "action_mask": [false, false]}', {}, 422, "allows no action"),
    (b'{"observation": [1, 2, 3, 4], "action_mask": ["yes", "no"]}', {}, 422, "true/false"),
    (b'{"observation": [' + b"0.5, " * 2000 + b"1]}", {}, 413, "limit is 4000"),
    (b'{"observation": ' + b"[" * 1900 + b"]" * 1900 + b"}", {}, 400, "malformed JSON"),  # deeper than json can parse
]


def test_every_bad_request_gets_a_4xx_and_the_service_keeps_serving(served):
    from starlette.testclient import TestClient

    app, agent = served
    client = TestClient(app)
    good = {"observation": [0.01, 0.0, -0.02, 0.0]}
    expected = client.post("/act", json=good).json()
    for body, headers, status, words in BAD_REQUESTS:
        response = client.post("/act", content=body, headers={"content-type": "application/json", **headers})
        assert response.status_code == status, (body[:60], response.text)
        error = response.json()["error"]
        assert words in error and "\n" not in error, (body[:60], error)
        assert client.post("/act", json=good).json() == expected
    chunked = client.post("/act", content=iter([b'{"observation": [', b"0.5, " * 1000, b"1]}"]))  # no content-length
    assert chunked.status_code == 413
    for path, body, status in [("/act/batch", {"observations": []}, 422), ("/act/batch", {"observations": [[0] * 4] * 9}, 413),
                               ("/act/batch", {"observations": [[0] * 4], "action_masks": [True, True]}, 422)]:
        response = client.post(path, json=body)
        assert response.status_code == status and "error" in response.json(), response.text
    assert client.get("/act").status_code == 405
    assert client.post("/nothing", json=good).status_code == 404
    assert client.post("/act", json=good).json() == expected


def test_load_on_localhost_answers_every_request(served):
    """20 concurrent clients for 3 seconds against a real uvicorn server on 127.0.0.1: no errors."""
    import httpx
    import uvicorn

    app, agent = served
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.05)
        obs = np.random.default_rng(9).uniform(-0.2, 0.2, (20, 4)).astype(np.float32)
        expected = agent.act(obs, seed_index=1)

        def client(index: int) -> tuple[int, int]:
            answered = errors = 0
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                stop = time.monotonic() + 3.0
                while time.monotonic() < stop:
                    response = http.post("/act", json={"observation": obs[index].tolist()})
                    ok = response.status_code == 200 and response.json()["action"] == expected[index]
                    answered, errors = answered + ok, errors + (not ok)
            return answered, errors

        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(client, range(20)))
        assert sum(e for _, e in results) == 0
        assert all(a > 0 for a, _ in results)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_serve_bad_input(cartpole_run):
    from dqnx.deploy.serve import serve

    with pytest.raises(UsageError, match="--port must be 0..65535"):
        serve(cartpole_run, port=70000)
    with pytest.raises(UsageError, match="--max-batch must be a positive integer"):
        serve(cartpole_run, max_batch=0)


def test_cli_serve_bad_input(cartpole_run, monkeypatch, capsys):
    code, _, stderr = run_cli(monkeypatch, capsys, "serve", cartpole_run, "--port", "70000")
    assert code == 2 and "--port must be 0..65535" in stderr and "Traceback" not in stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
