"""Drivers: the training loops. jax_loop.py compiles the whole loop for JAX-native
environments; host_loop.py steps Gymnasium environments in Python around the same
jitted agent; trainer.py is the host side both share (evaluation, files, progress).
"""

from __future__ import annotations

from typing import Any


def make_driver(config: Any, env: Any, learner: Any, seeds: list[int], hypers: dict[str, Any] | None = None) -> Any:
    """The loop for `env`'s backend, with the methods the trainer uses:
    init_states(seeds), place(tree) (to the loop's layout), real(tree) (back to the
    callers' seeds, for files), padding (extra seeds `place` adds), chunk(state,
    iterations, start_step), evaluate(params, keys, episodes), compile_seconds, close().

    learner: the run's dqnx.protocols.Learner (built once, dqnx.agents.make_learner).
    hypers: per-seed values of vmappable hyperparameters (a sweep's members; JAX envs only).
    """
    from dqnx.envs import backend_of

    if backend_of(env).loop == "host":
        if hypers:
            raise ValueError("per-seed hyperparameters need the compiled loop (a JAX environment)")
        from dqnx.drivers.host_loop import HostDriver

        return HostDriver(config, env, learner, seeds)
    from dqnx.drivers import jax_loop

    return jax_loop.Compiled(jax_loop.make_program(config, env, learner), len(seeds), hypers)
