"""Parsing configuration values: TOML files and --set strings into the schema's field types.

Every bad value is a one-line UsageError naming the key, where it came from and what it
must be.
"""

from __future__ import annotations

import difflib
import math
import tomllib
import typing
from pathlib import Path
from typing import Any

from dqnx.config.schema import DQNConfig, RunConfig, _fields, _type_name, config_class
from dqnx.errors import UsageError


def _unknown_key(key: str, where: str, cls: type) -> UsageError:
    close = difflib.get_close_matches(key, _fields(cls), n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"see {cls.__name__} in dqnx/config/schema.py"
    return UsageError(f"unknown hyperparameter {key!r} in {where}; {hint}")


def coerce(key: str, value: Any, where: str, cls: type[RunConfig] = DQNConfig) -> Any:
    """Convert a TOML value or a --set string into the field's type, or raise UsageError."""
    if key not in _fields(cls):
        raise _unknown_key(key, where, cls)
    return coerce_scalar(key, value, typing.get_type_hints(cls)[key], where)


def coerce_scalar(key: str, value: Any, kind: Any, where: str) -> Any:
    """`value` (a TOML value or a command-line string) as `kind`: bool, int, finite float, str or tuple."""
    bad = UsageError(f"{key} in {where} must be {_type_name(kind)}, got {value!r}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise bad
    if kind is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                number = float(value.replace("_", ""))
            except ValueError:
                raise bad from None
            if math.isfinite(number) and number.is_integer():
                return int(number)
        raise bad
    if kind is float:
        if isinstance(value, bool):
            raise bad
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise bad from None
        if not math.isfinite(number):
            raise UsageError(f"{key} in {where} must be a finite number, got {value!r}")
        return number
    if kind is str:
        if isinstance(value, str):
            return value
        raise bad
    if typing.get_origin(kind) is tuple:
        item_type = typing.get_args(kind)[0]
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise bad
        try:
            if item_type is int:
                return tuple(int(str(v).strip()) for v in items if str(v).strip())
            numbers = tuple(float(str(v).strip()) for v in items if str(v).strip())
        except ValueError:
            raise bad from None
        if not all(math.isfinite(v) for v in numbers):
            raise UsageError(f"{key} in {where} must be finite numbers, got {value!r}")
        return numbers
    raise AssertionError(f"unhandled config type {kind}")


# Top-level keys of a config file that describe the environment rather than hyperparameters.
ENV_KEYS = ("wrappers",)


def read_toml(path: Path) -> dict[str, Any]:
    """A config file's hyperparameters, flattened (the environment's keys, ENV_KEYS, left out)."""
    data = _load_toml(path)
    # Presets may group values in tables ([dqn], [exploration], ...) for readability.
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in ENV_KEYS:
            continue
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def read_toml_wrappers(path: Path) -> Any:
    """A config file's [[wrappers]] tables (target = "module:callable", kwargs = {...}), unchecked."""
    return _load_toml(path).get("wrappers")


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist; check the path given to --config") from None
    except IsADirectoryError:
        raise UsageError(f"config file {path} is a directory; give --config a TOML file") from None
    except OSError as e:
        raise UsageError(f"config file {path} cannot be read ({e.strerror}); check its permissions") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"config file {path} is not valid TOML ({e}); fix the file") from None
    return data


def parse_set(items: list[str], option: str = "--set") -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{option} expects key=value, got {item!r}; e.g. {option} learning_rate=3e-4")
        out[key.strip()] = value.strip()
    return out


def from_dict(data: dict[str, Any], where: str, agent: str = "dqn") -> RunConfig:
    cls = config_class(agent)
    return cls(**{k: coerce(k, v, where, cls) for k, v in data.items()}).validate()


MAX_SEED = 2**31  # PRNGKey takes a 32-bit seed: larger ones would silently repeat smaller ones


def seed_list(seed: int, seeds: int) -> list[int]:
    """seed, seed+1, ..., `seeds` of them, checked (a UsageError names the problem)."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds <= 0:
        raise UsageError(f"seeds must be a positive number of seeds, got {seeds!r}; e.g. --seeds 4")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
    if seed + seeds > MAX_SEED:
        raise UsageError(f"seeds must stay below {MAX_SEED} (JAX keys hold 32-bit seeds), got {seed}..{seed + seeds - 1}")
    return [seed + i for i in range(seeds)]
