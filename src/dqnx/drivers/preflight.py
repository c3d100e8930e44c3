"""Checks before a run writes anything: settings that can never learn, and memory that cannot fit.

    check_settings(config)                 refuses (UsageError) settings under which no
                                           learning can happen; returns warnings for
                                           settings that waste much of the run
    memory_budget(config, env, agent, n)   the bytes a run will hold: its training states
                                           (replay included) on the device, the host copy
                                           a checkpoint makes, the host loop's staging
    check_memory(budget)                   refuses a budget above the machine's available
                                           memory, naming both figures

The budget is exact for the training state: it is the size of `learner.init`'s output,
traced with `jax.eval_shape` (nothing is allocated), so every replay layout (uniform,
n-step, prioritized, frame-deduplicated Atari replay) is counted as it is stored.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dqnx.config import RunConfig
from dqnx.errors import SettingsWarning, UsageError

# Replay slots, env steps and update counters are int32 in the compiled program.
INDEX_LIMIT = 2**31 - 1


def check_settings(config: RunConfig) -> list[str]:
    """Raise UsageError (one line: the setting and the fix) when the run could never learn;
    return warnings (one line each) for settings that waste a large part of it."""
    total = config.total_steps
    if total > INDEX_LIMIT:
        raise UsageError(f"total_steps ({total}) is past 2^31 - 1, the range of the int32 env-step counter; "
                         "train in several runs or lower --steps")
    if config.eval_every > total:
        raise UsageError(f"eval_every ({config.eval_every}) is above total_steps ({total}): the run would be evaluated "
                         "only at its end, so best weights are never chosen along the way; set "
                         f"--set eval_every={max(1, total // 10)} or train longer")
    warnings: list[str] = []
    if getattr(config, "learning_starts", None) is not None:
        starts, freq = config.learning_starts, config.train_freq
        if starts >= total:
            raise UsageError(f"learning_starts ({starts}) is not below total_steps ({total}): no gradient step would "
                             f"ever run; set --set learning_starts={max(0, total // 10)} or train longer with --steps")
        phases = gradient_phases(config)
        if phases == 0:
            raise UsageError(f"train_freq ({freq}) leaves no training phase between learning_starts ({starts}) and "
                             f"total_steps ({total}): no gradient step would ever run; lower train_freq or train longer")
        updates = phases * config.gradient_steps
        if config.replay and starts > config.buffer_size:
            warnings.append(f"learning_starts ({starts}) exceeds buffer_size ({config.buffer_size}): the first "
                            f"{starts - config.buffer_size} warm-up transitions are overwritten before the first "
                            "gradient step; lower learning_starts or raise buffer_size")
        if config.target_update_period > updates:
            warnings.append(f"target_update_period ({config.target_update_period}) is beyond the {updates} gradient steps "
                            "this run takes: the target network never syncs and the TD targets stay those of the "
                            f"initial weights; set --set target_update_period={max(1, updates // 10)} or lower")
    if config.epsilon_decay_steps > total and config.epsilon_start > config.epsilon_end:
        warnings.append(f"epsilon_decay_steps ({config.epsilon_decay_steps}) is beyond total_steps ({total}): "
                        f"exploration never reaches its floor epsilon_end ({config.epsilon_end}) in this run; "
                        f"set --set epsilon_decay_steps={max(1, total // 2)} or lower")
    return warnings


def gradient_phases(config: RunConfig) -> int:
    """Training phases the run takes: iterations (env step t = k * num_envs, k = 1, 2, ...) at
    which t >= learning_starts and a multiple of train_freq falls in (t - num_envs, t]
    (the cadence of agents.dqn.make_dqn_learner)."""
    n, freq = config.num_envs, config.train_freq
    last = math.ceil(config.total_steps / n) * n  # the loop runs whole iterations
    first = max(config.learning_starts, n)
    # Each multiple M of train_freq (>= num_envs) falls into the iteration ending at ceil(M / n) * n.
    # Those iterations lie in [first, last] exactly when M lies in (first - n, last].
    return max(0, last // freq - (first - n) // freq)


@dataclass(frozen=True)
class MemoryBudget:
    """Bytes a run holds at once; `available` is what the machine (or GPU) offers."""

    state_bytes: int  # training states on the device, every program seed (padding included)
    replay_bytes: int  # of which replay storage (and priorities)
    checkpoint_bytes: int  # the host copy a checkpoint makes of the real seeds' states
    staging_bytes: int  # the host loop's staged transitions
    total_bytes: int
    available_bytes: int | None
    device: str  # 'cpu' (states and host copies share the machine's memory) or 'gpu'
    replay_bytes_per_transition: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for the progress header: needed, replay, available."""
        text = f"memory {human_bytes(self.total_bytes)} (replay {human_bytes(self.replay_bytes)})"
        if self.available_bytes is not None:
            text += f" of {human_bytes(self.available_bytes)} available"
        return text


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError


def _tree_bytes(tree: Any) -> int:
    import jax

    return int(sum(math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(tree)))


def _replay_part(state: Any) -> Any:
    """The replay storage of a learner state (and PER's priorities), or () for agents without."""
    return tuple(getattr(state, name) for name in ("replay", "priorities") if getattr(state, name, None) is not None)


def state_shapes(config: RunConfig, env: Any, agent: str) -> Any:
    """One seed's learner state as shapes (jax.ShapeDtypeStruct), nothing allocated."""
    import jax

    from dqnx.agents import make_learner

    return jax.eval_shape(make_learner(agent, config, env).init, jax.random.PRNGKey(0))


def memory_budget(configs: list[RunConfig], env: Any, agent: str, members_per_config: int = 1,
                  program_seeds: int | None = None) -> MemoryBudget:
    """The budget of one program training `members_per_config` seeds of each config side by side
    (a run: one config; a sweep group: its configs). `program_seeds` counts the seeds the
    program holds with jax_loop's padding (default: the device layout's)."""
    import jax

    from dqnx.drivers.jax_loop import seed_layout

    for config in configs:
        _check_index_range(config)
    host_loop = getattr(env, "backend", "jax") == "gymnasium"
    real = members_per_config * len(configs)
    if program_seeds is None:
        program_seeds = real if host_loop else real + seed_layout(real, len(jax.devices()))[1]
    state = replay = 0
    for config in configs:
        shapes = state_shapes(config, env, agent)
        state += _tree_bytes(shapes) * members_per_config
        replay += _tree_bytes(_replay_part(shapes)) * members_per_config
    per_seed_state = state / real
    state_on_device = int(per_seed_state * program_seeds)
    checkpoint = state  # compiled.real(...) then safetensors' serialisation: one host copy of the real seeds
    staging = 0
    if host_loop:
        config = configs[0]
        block = max(1, getattr(config, "train_freq", config.num_envs) // config.num_envs)
        obs = math.prod(env.obs_shape) * np.dtype(env.obs_dtype).itemsize
        staging = block * real * config.num_envs * (2 * obs + 4 + 4 + 1 + 1)
    device, available = available_memory()
    # On a GPU the states live in device memory; the host copies in the machine's.
    total = state_on_device + checkpoint + staging if device == "cpu" else state_on_device
    capacity = sum(getattr(c, "buffer_size", 0) if getattr(c, "replay", False) else 0 for c in configs) * members_per_config
    return MemoryBudget(state_bytes=state_on_device, replay_bytes=replay, checkpoint_bytes=checkpoint, staging_bytes=staging,
                        total_bytes=total, available_bytes=available, device=device,
                        replay_bytes_per_transition=round(replay / capacity, 1) if capacity else None)


def _check_index_range(config: RunConfig) -> None:
    if getattr(config, "replay", False) and config.buffer_size > INDEX_LIMIT:
        raise UsageError(f"buffer_size ({config.buffer_size}) is past 2^31 - 1 slots, the range of the replay's int32 "
                         "indices; lower buffer_size")


def available_memory() -> tuple[str, int | None]:
    """('gpu', free device bytes) when JAX runs on a GPU, else ('cpu', the machine's available
    bytes: MemAvailable, bounded by a cgroup memory limit). None when unknown."""
    import jax

    device = jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            return "gpu", int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
        return "gpu", None
    available = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            pass
    try:  # a container's limit (cgroup v2) can be far below the machine's
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        used = int(open("/sys/fs/cgroup/memory.current").read().strip())
        if limit != "max":
            free = int(limit) - used
            available = free if available is None else min(available, free)
    except (OSError, ValueError):
        pass
    return "cpu", available


def check_memory(budget: MemoryBudget, buffer_size: int | None = None) -> None:
    """Refuse a run whose budget exceeds the available memory (one line with both figures)."""
    if budget.available_bytes is None or budget.total_bytes <= budget.available_bytes:
        return
    where = "GPU memory" if budget.device == "gpu" else "memory"
    fix = "lower buffer_size or train fewer seeds at once"
    growing = _replay_total(budget)  # the part that scales with buffer_size
    if buffer_size and growing > 0:
        fits = int(buffer_size * (1 - (budget.total_bytes - budget.available_bytes) / growing))
        if fits > 0:
            fix = f"lower buffer_size to at most {fits} (or train fewer seeds at once)"
    per = f" at {budget.replay_bytes_per_transition:g} B per transition" if budget.replay_bytes_per_transition else ""
    raise UsageError(f"this run needs {human_bytes(budget.total_bytes)} of {where} (replay {human_bytes(budget.replay_bytes)}"
                     f"{per}, held on the device and copied to the host at each checkpoint) but "
                     f"{human_bytes(budget.available_bytes)} is available; {fix}")


def _replay_total(budget: MemoryBudget) -> float:
    """The part of the total that grows with buffer_size: the replay on the device (padding
    included) and its host copy (CPU only)."""
    padded = budget.state_bytes / max(budget.checkpoint_bytes, 1)  # program seeds / real seeds
    return budget.replay_bytes * (padded + (1 if budget.device == "cpu" else 0))


def checked_budget(config: RunConfig, env: Any, agent: str, num_seeds: int) -> MemoryBudget:
    """A run's memory budget, refused (UsageError) when it cannot fit in this machine's memory."""
    budget = memory_budget([config], env, agent, members_per_config=num_seeds)
    check_memory(budget, getattr(config, "buffer_size", None))
    return budget


def warn_settings(notes: list[str]) -> None:
    """check_settings' warnings as SettingsWarning, pointing at the code that called the entry point calling this."""
    for note in notes:
        warnings.warn(note, SettingsWarning, stacklevel=3)
