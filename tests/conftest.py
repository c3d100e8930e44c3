"""Shared test setup: tiny configurations and the `slow` and `docs` tier switches.

Tests marked `@pytest.mark.slow` are skipped unless the run selects them with
`-m slow` (any marker expression that mentions slow) or DQNX_SLOW=1 is set; tests marked
`@pytest.mark.docs` (the documentation site's pages, tests/test_docs.py) likewise with
`-m docs` or DQNX_DOCS=1.
The JAX compilation cache keeps its default location (shared between runs).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# dqnx records the environment code a user ran (dqnx.runs.trust) under $DQNX_HOME: the tests
# keep their own record, never the user's, and subprocesses inherit it.
os.environ["DQNX_HOME"] = tempfile.mkdtemp(prefix="dqnx-test-home-")

# dqnx gives JAX one host device per core (dqnx.jax_setup): at least two here, so that the tests of
# seeds split over devices (the jax_devices fixture) run in this process on a one-core machine too.
_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
if _cores < 2 and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ.setdefault("DQNX_HOST_DEVICES", "2")


def pytest_configure(config: pytest.Config) -> None:
    # What importing dqnx.api does before JAX starts its backend, whichever test file runs first: one host
    # device per core, and the persistent compilation cache, so that programs the tests jit directly are
    # also compiled once per machine, not once per run.
    from dqnx import jax_setup

    jax_setup.configure()


def _slow_enabled(config: pytest.Config) -> bool:
    return "slow" in (config.getoption("markexpr", "") or "") or os.environ.get("DQNX_SLOW") == "1"


def _docs_enabled(config: pytest.Config) -> bool:
    return "docs" in (config.getoption("markexpr", "") or "") or os.environ.get("DQNX_DOCS") == "1"


# pytest runs on two pytest-xdist workers (addopts in pyproject.toml: `-n 2 --dist loadgroup`). Each worker
# imports, traces and compiles for itself: tests of one file mostly share their programs (and module-scoped
# fixtures, trained runs, built once per worker that uses them), so a file's tests stay together on one worker
# (test_classic.py spread test by test cost 37 s of CPU against 19 s in one process). Only the tiers' tests
# (slow, docs) that use no module-scoped fixture spread one by one: each is minutes of work of its own (a
# preset trained until solved, a page's blocks). Session fixtures are built at most once per worker: conftest's
# trained runs are tiny (cartpole_two_seeds: about 6 s of CPU).
_SHARED_SCOPES = {"module", "class", "package"}


def _uses_a_shared_fixture(item: pytest.Item) -> bool:
    # pytest keeps an item's fixture definitions in _fixtureinfo (what --setup-plan reads); without it (a
    # pytest that renamed it) the item counts as sharing, the safe side.
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return True
    return any(defs and defs[-1].scope in _SHARED_SCOPES for defs in info.name2fixturedefs.values())


def _group_by_file(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        tier = item.get_closest_marker("slow") or item.get_closest_marker("docs")
        if tier is None or _uses_a_shared_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook, which reads the groups into the test ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _group_by_file(items)
    # The docs tier (tests/test_docs.py) needs the docs extra (MkDocs) and is its own CI line.
    tiers = [("slow", _slow_enabled(config), "slow tier: run with -m slow or DQNX_SLOW=1"),
             ("docs", _docs_enabled(config), "docs tier: run with -m docs or DQNX_DOCS=1 (pip install '.[docs]')")]
    for name, enabled, reason in tiers:
        if enabled:
            continue
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            # The marker itself, not item.keywords: keywords hold the names of the parent nodes too,
            # the session's being the checkout's folder name (a clone in a folder named docs).
            if item.get_closest_marker(name) is not None:
                item.add_marker(skip)


def tiny_config(**changes):
    """A small, fast configuration (seconds per run once compiled)."""
    from dqnx.config import DQNConfig

    base = DQNConfig().replace(
        total_steps=2000,
        eval_every=500,
        eval_episodes=8,
        final_eval_episodes=8,
        hidden_sizes=(32,),
        buffer_size=2000,
        learning_starts=200,
    )
    return base.replace(**changes).validate()


def _assert_same_weights(a: Path, b: Path) -> None:
    """Two safetensors files hold the same tensors, bit for bit (a run's weights or checkpoint)."""
    import numpy as np
    from safetensors.numpy import load_file

    ta, tb = load_file(str(a)), load_file(str(b))
    assert sorted(ta) == sorted(tb), (a, b)
    for name in ta:
        np.testing.assert_array_equal(ta[name], tb[name], err_msg=f"{name} in {a.name}")


@pytest.fixture(scope="session")
def assert_same_weights():
    """assert_same_weights(file_a, file_b): the two safetensors files are equal tensor for tensor, bit for bit.
    A fixture because test modules are imported by path (importlib mode) and cannot import a shared helper."""
    return _assert_same_weights


@pytest.fixture(scope="session")
def tiny():
    """The tiny_config factory, as a fixture."""
    return tiny_config


@pytest.fixture(scope="session")
def cartpole_solved(tmp_path_factory):
    """`dqnx train CartPole-v1 --until-solved` with seed 0: the preset as shipped, stopped at its first
    periodic evaluation (100 episodes) at or above 475. tests/test_learning.py checks it learned. Read it only."""
    import dqnx

    return dqnx.train("CartPole-v1", seed=0, stop_when_solved=True, out=tmp_path_factory.mktemp("shared") / "solved")


@pytest.fixture(scope="session")
def cartpole_two_seeds(tmp_path_factory):
    """One tiny two-seed CartPole-v1 run (tiny_config(): 2000 env steps, evaluated every 500, TensorBoard
    on) shared by every test file that reads such a run. Read it only: copy it before writing into it."""
    import dqnx

    return dqnx.train("CartPole-v1", seed=0, seeds=2, config=tiny_config(), out=tmp_path_factory.mktemp("shared") / "cartpole2")


def _assert_solved(run, threshold: float, budget: int, at_least: int | None = None) -> None:
    """Every seed (or at least `at_least` of them) solved: its periodic evaluation reached `threshold`
    within `budget` env steps, and the final evaluation of its best weights (100 fresh episodes) is at
    or above it too."""
    assert run.config.total_steps == budget and run.config.final_eval_episodes == 100
    per_seed = run.summary["per_seed"]
    solved = [seed for seed in per_seed if seed["solved"] is True]
    assert len(solved) >= (len(per_seed) if at_least is None else at_least), per_seed
    for seed in solved:
        assert seed["steps_to_solve"] is not None and seed["steps_to_solve"] <= budget, seed
        assert seed["eval_mean_return"] >= threshold, seed


@pytest.fixture(scope="session")
def assert_solved():
    """The slow tier's check that a run learned: assert_solved(run, threshold, budget). A fixture because
    test modules cannot import each other under --import-mode=importlib (tests/test_learning.py and
    tests/test_learning_long.py both use it)."""
    return _assert_solved


def _cli_env() -> dict[str, str]:
    env = dict(os.environ)
    # What a script piping our stderr sees: no terminal, rich's default width.
    for name in ("COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE"):
        env.pop(name, None)
    env["NO_COLOR"] = "1"
    return env


def _run_guarded(command: list, cpu_seconds: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run(command, **kwargs) for a child that must end by itself, with a hang guard that a loaded
    machine does not trip: the child may use `cpu_seconds` of CPU (user + sys; a busy hang ends there with
    SIGXCPU) and four times as long in wall time (a blocked one). A wall-clock timeout alone failed sound runs
    when other work starved the tests of CPU: load stretches the wall time a run takes, not the CPU it needs."""
    limit = round(cpu_seconds)
    if shutil.which("prlimit"):  # util-linux's; where there is none (macOS), the wall-time limit alone
        command = ["prlimit", f"--cpu={limit}:{limit + 30}", "--", *command]
    result = subprocess.run(command, timeout=4 * limit, **kwargs)
    assert result.returncode != -signal.SIGXCPU, f"used {limit} s of CPU without finishing (a hang?): {command}"
    return result


@pytest.fixture(scope="session")
def guarded_run():
    """Runs a child process with a CPU-time hang guard (see _run_guarded): guarded_run(command, cpu_seconds, **kwargs)."""
    return _run_guarded


def _run_dqnx(args: list, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`timeout`: the CPU seconds the command may use (_run_guarded)."""
    return _run_guarded([sys.executable, "-m", "dqnx.cli", *map(str, args)], timeout, cwd=cwd, env=_cli_env(),
                        capture_output=True, text=True)


@pytest.fixture(scope="session")
def dqnx_cli():
    """Runs `dqnx ARGS` in a subprocess from `cwd`, as a script would (no terminal): dqnx_cli(args, cwd, timeout),
    `timeout` in CPU seconds (_run_guarded)."""
    return _run_dqnx


def _run_dqnx_here(args: list, cwd: Path, timeout: float = 0) -> subprocess.CompletedProcess:
    """`dqnx ARGS` in this process, from `cwd`: what _run_dqnx returns, without a new interpreter (importing
    JAX and the env packages costs seconds per subprocess). An exception dqnx.cli.main lets out, which a
    subprocess would print as a traceback, propagates here and fails the test. Not thread-safe (cwd, argv)."""
    import contextlib
    import io

    from dqnx import cli

    saved_argv, saved_cwd, saved_env = sys.argv, os.getcwd(), dict(os.environ)
    out, err = io.StringIO(), io.StringIO()
    os.environ.clear()
    os.environ.update(_cli_env())
    sys.argv = ["dqnx", *map(str, args)]
    code = 0
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if isinstance(e.code, str):
            err.write(e.code + "\n")  # as the interpreter prints sys.exit("message")
    finally:
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(["dqnx", *map(str, args)], code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def dqnx_cli_here():
    """dqnx_cli's twin for error paths and quick commands: `dqnx ARGS` called in this process from `cwd`
    (exit status, stdout and stderr as a subprocess would give them): dqnx_cli_here(args, cwd)."""
    return _run_dqnx_here


@pytest.fixture
def jax_devices(monkeypatch):
    """Shows this process's JAX only its first `count` CPU devices for the rest of the test, as dqnx's
    seed layout reads them (jax.devices(): drivers/jax_loop.Compiled, preflight), so a test trains on one
    device or on two without a new interpreter (each costs seconds of imports and compiles): jax_devices(count).
    The process has one host device per core (dqnx.jax_setup), at least two (see the top of this file)."""
    import jax

    available = jax.devices()

    def limit(count: int) -> None:
        if len(available) < count:
            pytest.skip(f"needs {count} JAX devices; XLA_FLAGS gave this process {len(available)}")
        monkeypatch.setattr(jax, "devices", lambda *args, **kwargs: available[:count])

    return limit
