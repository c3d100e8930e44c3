"""dqnx: Deep Q-learning on JAX, from one command.

    import dqnx
    run = dqnx.train("CartPole-v1")
    agent = dqnx.load(run.path)
    print(dqnx.evaluate(agent))
    result = dqnx.sweep("CartPole-v1", {"lr": [1e-4, 1e-3]}, seeds=3)  # result.path/results.csv

The heavy imports (JAX, gymnax) happen on first use, so `dqnx --help` stays quick.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["train", "sweep", "load", "evaluate", "DQNConfig", "UsageError", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("train", "sweep", "load", "evaluate"):
        from dqnx import api

        return getattr(api, name)
    if name == "DQNConfig":
        from dqnx.config import DQNConfig

        return DQNConfig
    if name == "UsageError":
        from dqnx.errors import UsageError

        return UsageError
    raise AttributeError(f"module 'dqnx' has no attribute {name!r}")
