"""Presets: the layers a run's configuration is built from, later ones winning.

1. the schema's defaults (schema.py);
2. the environment's preset, a TOML file in ``dqnx/presets/`` (``CartPole-v1.toml``
   for DQN, ``tabular-q/Dungeon-v0.toml`` for another agent; Rainbow adds
   ``rainbow/common.toml`` over DQN's);
3. the user's ``--config FILE.toml`` and then each ``--set key=value``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from dqnx.config.parsing import coerce, read_toml
from dqnx.config.schema import RunConfig, config_class
from dqnx.errors import UsageError


def preset_path(env_id: str, agent: str = "dqn") -> Path | None:
    """presets/ENV.toml for DQN, presets/AGENT/ENV.toml for the other agents."""
    folder = resources.files("dqnx") / "presets"
    path = folder / f"{env_id}.toml" if agent == "dqn" else folder / agent / f"{env_id}.toml"
    return Path(str(path)) if path.is_file() else None


def build_config(
    env_id: str,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    base: RunConfig | None = None,
    agent: str = "dqn",
) -> RunConfig:
    """Defaults (or `base`), then the env's preset for `agent`, then `config_file`, then `overrides`."""
    cls = type(base) if base is not None else config_class(agent)
    values: dict[str, Any] = {}
    if base is None:
        presets = [preset_path(env_id, agent)]
        if agent == "rainbow":
            # Rainbow is DQN's env preset, then the Rainbow switches, then the env's Rainbow tuning.
            common = Path(str(resources.files("dqnx") / "presets" / "rainbow" / "common.toml"))
            presets = [preset_path(env_id, "dqn"), common, *presets]
        for preset in presets:
            if preset is None:
                continue
            for key, value in read_toml(preset).items():
                values[key] = coerce(key, value, f"preset {preset.name}", cls)
    if config_file is not None:
        path = Path(config_file)
        for key, value in read_toml(path).items():
            values[key] = coerce(key, value, str(path), cls)
    for key, value in (overrides or {}).items():
        values[key] = coerce(key, value, "--set", cls)
    return (base or cls()).replace(**values).validate()


def preset_id(env: Any) -> str:
    """The preset name of a built environment: its id; every Atari game shares presets/atari.toml;
    another package's registered id (package:EnvId) the id alone (popgym:popgym-RepeatFirstEasy-v0
    reads presets/popgym-RepeatFirstEasy-v0.toml), since file names keep no colon."""
    if getattr(env, "atari", False):
        return "atari"
    return env.env_id.split(":", 1)[1] if ":" in env.env_id else env.env_id


def resolve_config(env_id: str, agent: str, config: Any, config_file: Any, steps: int | None) -> RunConfig:
    """A run's config from what `dqnx.train` takes: a config object (the base) or a dict of
    overrides, a TOML file, and `steps` (total_steps), over `env_id`'s preset for `agent`."""
    overrides: dict[str, Any] = {}
    base = None
    if isinstance(config, RunConfig):
        if not isinstance(config, config_class(agent)):
            raise UsageError(f"agent {agent!r} takes a {config_class(agent).__name__}, got a {type(config).__name__}")
        base = config
    elif isinstance(config, dict):
        overrides.update(config)
    elif config is not None:
        raise UsageError(f"config must be a config object or a dict of overrides, got {type(config).__name__}")
    if steps is not None:
        overrides["total_steps"] = steps
    return build_config(env_id, config_file=config_file, overrides=overrides, base=base, agent=agent)
