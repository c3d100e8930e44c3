"""dqnx: Deep Q-learning on JAX, from one command.

    import dqnx
    run = dqnx.train("CartPole-v1")
    sweep = dqnx.sweep("CartPole-v1", {"lr": [1e-4, 1e-3], "gamma": [0.95, 0.99]}, seeds=3)
    study = dqnx.tune("CartPole-v1", trials=32)
    agent = dqnx.load(run.path)
    print(dqnx.evaluate(agent))
    dqnx.export(run.path, format="onnx", out="policy.onnx")   # pip install "dqnx[export]"
    dqnx.serve(run.path, port=8000)                            # pip install "dqnx[serve]"

The heavy imports (JAX, gymnax) happen on first use, so `dqnx --help` stays quick.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["train", "sweep", "tune", "load", "evaluate", "export", "serve", "DQNConfig", "UsageError", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("train", "sweep", "tune", "load", "evaluate"):
        from dqnx import api

        return getattr(api, name)
    if name == "export":
        from dqnx.deploy.export import export

        return export
    if name == "serve":
        from dqnx.deploy.serve import serve

        return serve
    if name == "DQNConfig":
        from dqnx.config import DQNConfig

        return DQNConfig
    if name == "UsageError":
        from dqnx.errors import UsageError

        return UsageError
    raise AttributeError(f"module 'dqnx' has no attribute {name!r}")
