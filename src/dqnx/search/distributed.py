"""Sweeps and tuning on a Ray cluster: each group of configurations (search/sweep.py) is
one Ray task that trains its members in one compiled program, exactly as on one machine.

The driver keeps everything that must be unique: the sweep directory's CSV files and
plot, and the Optuna study (ask and tell). Pruning needs the study while a group trains,
so tune starts a small Ray actor (StudyPruning) on the driver's node, where the study's
SQLite file lives; workers report their periodic evaluations to it. Group run directories
are written by the workers: on a cluster, give --out a path every node shares.

Ray is an optional extra (pip install 'dqnx[ray]'); without --ray nothing here is imported.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

from dqnx.errors import UsageError
from dqnx.search.sweep import Group, train_group

def connect_if_given(address: str | None) -> None:
    """Connect when a search runs on Ray (`address` given): a missing Ray or an unreachable
    cluster then fails here, before the sweep or study writes anything."""
    if address is not None:
        connect(address)


def connect(address: str) -> Any:
    """Start ('local') or join ('auto', HOST:PORT, ray://...) a Ray cluster; reuse one this process already joined."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local instance needs no token file in ~/.ray
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray; install it with pip install 'dqnx[ray]'") from None
    if ray.is_initialized():
        return ray
    # Ray starts its processes with fork + exec, which JAX's fork warning does not distinguish
    # from a bare fork; nothing of this (multithreaded) process runs in the child.
    warnings.filterwarnings("ignore", message="os.fork\\(\\) was called", category=RuntimeWarning)
    try:
        if address == "local":
            ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        else:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise UsageError(f"cannot reach a Ray cluster at {address} ({e}); start one with `ray start --head` or use --ray alone") from None
    return ray


def _group_task(env_id: str, env_params: dict[str, Any], backend: str, agent: str, group: Group, index: int,
                out: str, pruning: Any = None, numbers: list[int] | None = None, num_seeds: int = 1,
                wrappers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Runs in a Ray worker: build the env, train one group, return its members' results."""
    # One task is one process on one core (its members vmapped); Ray runs tasks side by side
    # on the other cores, rather than every task splitting its members over all of them.
    os.environ.setdefault("DQNX_HOST_DEVICES", "1")
    from dqnx import jax_setup

    jax_setup.configure()
    from dqnx.envs import make_env

    on_eval = None
    if pruning is not None:
        import ray

        from dqnx.search.tune import trial_reporter

        on_eval = trial_reporter(group, numbers, num_seeds, lambda step, values: ray.get(pruning.report.remote(step, values)))
    env = make_env(env_id, env_params, backend, wrappers or ())
    return train_group(env, group, index, Path(out), agent=agent, env_id=env_id, env_params=env_params, backend=backend,
                       on_eval=on_eval)


def _gather(ray: Any, futures: list[Any]) -> list[dict[str, Any]]:
    try:
        return ray.get(futures)
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, UsageError):
            raise UsageError(str(cause)) from None
        raise


def train_groups_on_ray(address: str, env_id: str, env_params: dict[str, Any], backend: str, agent: str,
                        groups: list[Group], groups_dir: Path, wrappers: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """A sweep's groups as Ray tasks; results in group order."""
    ray = connect(address)
    task = ray.remote(num_cpus=1)(_group_task)
    futures = [task.remote(env_id, env_params, backend, agent, g, i, str(groups_dir / f"g{i}"), wrappers=wrappers)
               for i, g in enumerate(groups)]
    return _gather(ray, futures)


def tune_groups_on_ray(address: str, env_id: str, env_params: dict[str, Any], backend: str, agent: str,
                       groups: list[Group], batch_dir: Path, numbers: list[int], seeds: list[int], storage: str,
                       study_name: str, warmup_steps: int, wrappers: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """A tuning batch's groups as Ray tasks, pruned through a StudyPruning actor on this node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from dqnx.search.tune import StudyPruning

    ray = connect(address)
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    pruning = ray.remote(num_cpus=0)(StudyPruning).options(scheduling_strategy=here).remote(storage, study_name, warmup_steps)
    task = ray.remote(num_cpus=1)(_group_task)
    futures = [task.remote(env_id, env_params, backend, agent, g, i, str(batch_dir / f"g{i}"), pruning, numbers, len(seeds),
                           wrappers=wrappers) for i, g in enumerate(groups)]
    try:
        return _gather(ray, futures)
    finally:
        ray.kill(pruning)
