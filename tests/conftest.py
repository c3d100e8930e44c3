"""Shared test setup: tiny configurations and the `slow` tier switch.

Tests marked `@pytest.mark.slow` are skipped unless the run selects them with
`-m slow` (any marker expression that mentions slow) or DQNX_SLOW=1 is set.
The JAX compilation cache keeps its default location (shared between runs).
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # The same persistent compilation cache the API turns on, so that programs the
    # tests jit directly are also compiled once per machine, not once per run.
    from dqnx import compile_cache

    compile_cache.enable()


def _slow_enabled(config: pytest.Config) -> bool:
    return "slow" in (config.getoption("markexpr", "") or "") or os.environ.get("DQNX_SLOW") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _slow_enabled(config):
        return
    skip = pytest.mark.skip(reason="slow tier: run with -m slow or DQNX_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
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


@pytest.fixture(scope="session")
def tiny():
    """The tiny_config factory, as a fixture."""
    return tiny_config
