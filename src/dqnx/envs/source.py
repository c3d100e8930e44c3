"""What an environment's description names, checked as data before anything is built.

A run directory, a dataset's sidecar and a config file describe an environment by an
id, its parameters and wrappers. Some of these only look up tables (a gymnax id,
dqnx's own environments, a Gymnasium id already registered); others name Python code
that building the environment imports and calls (`module.path:EnvClass`,
`package:EnvId`, every wrapper). This module reads such a description strictly (a
grammar for ids, JSON data only for parameters) and lists the code it names, so the
callers can refuse a run directory received from someone else before anything of it
runs (dqnx.runs.trust). It imports neither Gymnasium nor gymnax: checking is cheap.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from dqnx.errors import UsageError

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_MODULE = rf"{_NAME}(?:\.{_NAME})*"
# Gymnasium's ids: [namespace/]Name[-vN], e.g. CartPole-v1, ALE/Pong-v5, MiniGrid-Empty-5x5-v0.
_REGISTERED = r"[A-Za-z0-9][A-Za-z0-9_.\-]*(?:/[A-Za-z0-9][A-Za-z0-9_.\-]*)?"
# A qualified name as Python prints it; `<locals>` appears in the ids dqnx records for a
# factory defined inside a function (such a run takes its environment again as env=).
_QUALNAME = r"(?:[A-Za-z_][A-Za-z0-9_]*|<locals>|<lambda>)(?:\.(?:[A-Za-z_][A-Za-z0-9_]*|<locals>|<lambda>))*"
PLAIN_ID = re.compile(_REGISTERED)
CODE_ID = re.compile(rf"(?P<module>{_MODULE}):(?P<attr>{_QUALNAME}|{_REGISTERED})")
CALLABLE_REF = re.compile(rf"(?P<module>{_MODULE}):(?P<attr>{_NAME}(?:\.{_NAME})*)")
PARAM_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*")

MAX_ID_LENGTH = 200
MAX_JSON_DEPTH = 16  # parameters nest a few levels at most; deeper is not data a constructor takes
MAX_WRAPPERS = 32
ID_GRAMMAR = "a gymnax or Gymnasium id (CartPole-v1, ALE/Pong-v5), module.path:EnvClass or package:EnvId"


def check_env_id(env_id: Any, where: str = "env_id") -> str:
    """`env_id` if it follows the grammar of environment ids, else a UsageError naming `where`."""
    if not isinstance(env_id, str) or not env_id:
        raise UsageError(f"{where} must be an environment id string ({ID_GRAMMAR}); got {type(env_id).__name__}")
    if len(env_id) > MAX_ID_LENGTH or not (PLAIN_ID.fullmatch(env_id) or CODE_ID.fullmatch(env_id)):
        shown = env_id if len(env_id) <= 80 else env_id[:77] + "..."
        raise UsageError(f"{where} {shown!r} is not an environment id; give {ID_GRAMMAR}")
    return env_id


def names_code(env_id: str) -> bool:
    """Whether building `env_id` imports a module it names (module:Class or package:EnvId)."""
    return ":" in env_id


def check_json_data(value: Any, where: str, depth: int = 0) -> Any:
    """`value` if it is plain JSON data (None, bool, int, finite float, str, lists, objects with
    identifier keys) and names no code; else a UsageError naming `where`."""
    if depth > MAX_JSON_DEPTH:
        raise UsageError(f"{where} nests deeper than {MAX_JSON_DEPTH} levels; parameters are plain values")
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UsageError(f"{where} is {value}; parameters must be finite numbers")
        return value
    if isinstance(value, str):
        # A constructor that resolves "module:function" strings would run that code; data
        # never needs that form, so it is refused wherever it appears.
        if CALLABLE_REF.fullmatch(value.strip()):
            raise UsageError(f"{where} is {value!r}, which names code (module:attribute); parameters are plain data, "
                             "and code goes in the env id or a --wrapper")
        return value
    if isinstance(value, (list, tuple)):
        return [check_json_data(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {check_param_key(k, where): check_json_data(v, f"{where}.{k}", depth + 1) for k, v in value.items()}
    raise UsageError(f"{where} is a {type(value).__name__}; parameters are JSON values (numbers, strings, "
                     "booleans, lists, objects), never callables or objects")


def check_param_key(key: Any, where: str) -> str:
    if not isinstance(key, str) or not PARAM_KEY.fullmatch(key):
        raise UsageError(f"{where} has the key {key!r}; parameter names are identifiers (letters, digits, _)")
    return key


def check_params(params: Any, where: str = "env_params") -> dict[str, Any]:
    """Environment parameters (or wrapper keyword arguments): an object of JSON data."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise UsageError(f"{where} must be an object of name: value pairs, got {type(params).__name__}")
    return check_json_data(params, where)


@dataclass(frozen=True)
class Wrapper:
    """A Gymnasium wrapper applied to the environment: `target(env, **kwargs)`.

    target is 'module.path:callable' (a wrapper class or function taking the env first);
    kwargs are JSON values. Recorded in config.json as {"target": ..., "kwargs": {...}}.
    """

    target: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "kwargs": dict(self.kwargs)}

    def __str__(self) -> str:
        return self.target + (f" {self.kwargs}" if self.kwargs else "")

    def __hash__(self) -> int:  # kwargs is a dict; a wrapper hashes by its canonical text
        import json

        return hash((self.target, json.dumps(self.kwargs, sort_keys=True)))


def checked_env_params(env_params: Any) -> dict[str, Any] | None:
    """The user's env parameters (or None), held to what config.json may record (JSON data, no code names)."""
    return None if env_params is None else check_params(env_params, "env_params")


def check_wrapper_target(target: Any, where: str) -> str:
    if not isinstance(target, str) or len(target) > MAX_ID_LENGTH or not CALLABLE_REF.fullmatch(target):
        raise UsageError(f"{where} {target!r} is not a wrapper; give module.path:callable, "
                         "e.g. gymnasium.wrappers:FlattenObservation")
    return target


def parse_wrapper(text: str, option: str = "--wrapper") -> Wrapper:
    """A wrapper from the command line: 'module:callable' or 'module:callable={"key": value, ...}'."""
    import json

    target, sep, kwargs_text = text.strip().partition("=")
    target = check_wrapper_target(target.strip(), option)
    kwargs: Any = {}
    if sep:
        try:
            kwargs = json.loads(kwargs_text)
        except (json.JSONDecodeError, RecursionError) as e:
            raise UsageError(f"{option} {target}: its keyword arguments are not a JSON object ({e}); "
                             f"e.g. {option} 'gymnasium.wrappers:TimeLimit={{\"max_episode_steps\": 100}}'") from None
    return Wrapper(target, check_params(kwargs, f"{option} {target} keyword arguments"))


def wrappers_from_data(data: Any, where: str = "wrappers") -> tuple[Wrapper, ...]:
    """Wrappers as recorded in config.json or given in a TOML file: a list of
    {"target": "module:callable", "kwargs": {...}} (a bare "module:callable" string too)."""
    if data is None:
        return ()
    if not isinstance(data, (list, tuple)):
        raise UsageError(f"{where} must be a list of wrappers ({{target = 'module:callable', kwargs = {{...}}}}), "
                         f"got {type(data).__name__}")
    if len(data) > MAX_WRAPPERS:
        raise UsageError(f"{where} lists {len(data)} wrappers; at most {MAX_WRAPPERS}")
    out = []
    for i, entry in enumerate(data):
        label = f"{where}[{i}]"
        if isinstance(entry, Wrapper):
            out.append(Wrapper(check_wrapper_target(entry.target, label), check_params(entry.kwargs, f"{label}.kwargs")))
            continue
        if isinstance(entry, str):
            entry = {"target": entry}
        if not isinstance(entry, dict) or set(entry) - {"target", "kwargs"} or "target" not in entry:
            raise UsageError(f"{label} must be {{target = 'module:callable', kwargs = {{...}}}}; got {entry!r:.80}")
        out.append(Wrapper(check_wrapper_target(entry["target"], f"{label}.target"),
                           check_params(entry.get("kwargs"), f"{label}.kwargs")))
    return tuple(out)


@dataclass(frozen=True)
class EnvSource:
    """Everything that says how to build an environment, as recorded in a run directory."""

    env_id: str
    backend: str
    env_params: dict[str, Any] = field(default_factory=dict)
    wrappers: tuple[Wrapper, ...] = ()

    def code(self) -> list[str]:
        """The code building this environment would import and call, in order (empty when none:
        gymnax ids, dqnx's own environments, Gymnasium ids registered without importing anything)."""
        named = []
        if self.backend != "jax" and names_code(self.env_id):
            named.append(self.env_id)
        named += [w.target for w in self.wrappers]
        return named

    def fields(self) -> dict[str, Any]:
        """The fields that name code and what it is given: what trust is keyed on."""
        return {"env_id": self.env_id, "backend": self.backend, "env_params": self.env_params,
                "wrappers": [w.to_dict() for w in self.wrappers]}


def given_wrappers(wrappers: Any, config_file: Any) -> tuple[Wrapper, ...]:
    """The wrappers given as arguments (strings, dicts or Wrappers), then those of the config
    file's [[wrappers]] tables; what a config file names is said on stderr, since building the
    env imports and runs it."""
    given = wrappers_from_data([parse_wrapper(w) if isinstance(w, str) else w for w in (wrappers or [])])
    from_file: tuple[Wrapper, ...] = ()
    if config_file is not None:
        from pathlib import Path

        from dqnx.config import read_toml_wrappers

        from_file = wrappers_from_data(read_toml_wrappers(Path(config_file)), f"{config_file}: wrappers")
        if from_file:
            import sys

            print(f"dqnx: {config_file} names wrappers, imported and applied in order: "
                  f"{', '.join(str(w) for w in from_file)}", file=sys.stderr)
    return given + from_file


def env_source(env_id: Any, backend: Any, env_params: Any, wrappers: Any, where: str, backends: tuple[str, ...]) -> EnvSource:
    """An EnvSource read strictly from a file's fields (config.json, a dataset's sidecar)."""
    check_env_id(env_id, f"{where}: env_id")
    if backend not in backends:
        raise UsageError(f"{where}: backend {backend!r} is not one of {', '.join(backends)}; restore the file")
    params = check_params(env_params, f"{where}: env_params")
    wrapped = wrappers_from_data(wrappers, f"{where}: wrappers")
    if wrapped and backend == "jax":
        raise UsageError(f"{where}: wrappers apply to Gymnasium environments, not the JAX backend; restore the file")
    return EnvSource(env_id=env_id, backend=backend, env_params=params, wrappers=wrapped)


# --- observation and action spaces, recorded so weights load without the environment -------------

SPACES_FORMAT = "dqnx-spaces/1"
MAX_BOUND_VALUES = 4096  # per-element bounds are recorded up to this many values (tabular agents need them)


def _bound(values: Any) -> Any:
    """Observation bounds as JSON: one number when uniform, else a flat list; infinities as "inf"/"-inf"."""
    if values is None:
        return None
    import numpy as np

    flat = np.asarray(values, np.float64).reshape(-1)

    def number(x: float) -> Any:
        return x if math.isfinite(x) else ("inf" if x > 0 else "-inf" if x < 0 else "nan")

    if flat.size and np.all(flat == flat[0]):
        return number(float(flat[0]))
    if flat.size > MAX_BOUND_VALUES:
        return None
    return [number(float(x)) for x in flat]


def describe_spaces(env: Any) -> dict[str, Any]:
    """The spaces of `env` as agents see them (after dqnx's one-hot of Discrete observations and any
    frame stack), as JSON: what config.json records under "spaces"."""
    import numpy as np

    return {
        "format": SPACES_FORMAT,
        "observation": {
            "shape": [int(d) for d in env.obs_shape],
            "dtype": np.dtype(getattr(env, "obs_dtype", "float32")).name,
            "layout": getattr(env, "image_layout", None),  # 'HWC' or 'CHW' for images, else null
            "frame_stack": int(getattr(env, "frame_stack", 0) or 0),
            "num_states": getattr(env, "num_states", None),  # Discrete observations: one-hot of this many states
            "low": _bound(getattr(env, "obs_low", None)),
            "high": _bound(getattr(env, "obs_high", None)),
        },
        "action": {"type": "discrete", "num_actions": int(env.num_actions),
                   "masked": bool(getattr(env, "masked", False))},  # the env gives legal-action masks
        "max_episode_steps": getattr(env, "max_episode_steps", None),
        "solve_threshold": getattr(env, "solve_threshold", None),
    }


@dataclass(frozen=True, eq=False)
class SpacesEnv:
    """An environment's spaces without the environment: enough to build an agent and load its
    weights (Q-values, greedy actions, export), nothing to play it with."""

    env_id: str
    backend: str
    obs_shape: tuple[int, ...]
    obs_dtype: Any
    num_actions: int
    max_episode_steps: int | None = None
    solve_threshold: float | None = None
    num_states: int | None = None
    obs_low: Any = None
    obs_high: Any = None
    image_layout: str | None = None
    frame_stack: int = 0
    masked: bool = False  # the env gave legal-action masks (whether the run used them: config action_mask)
    playable: bool = field(default=False, init=False)

    @property
    def atari(self) -> bool:
        """Atari's observations are dqnx's preprocessed frames (what export and serve describe)."""
        return self.backend == "gymnasium" and self.env_id.startswith("ALE/")

    @classmethod
    def from_record(cls, record: Any, env_id: str, backend: str, where: str) -> "SpacesEnv":
        import numpy as np

        def bad(what: str) -> UsageError:
            return UsageError(f"{where}: spaces.{what} is missing or wrong; restore the file (or load with the environment)")

        if not isinstance(record, dict) or record.get("format") != SPACES_FORMAT:
            raise UsageError(f"{where} records no observation and action spaces (runs before dqnx 0.1 did not); "
                             "load it with its environment")
        obs, action = record.get("observation"), record.get("action")
        if not isinstance(obs, dict) or not isinstance(action, dict):
            raise bad("observation")
        shape = obs.get("shape")
        if not (isinstance(shape, list) and 0 < len(shape) <= 8
                and all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= 1 << 24 for d in shape)):
            raise bad("observation.shape")
        if obs.get("dtype") not in ("float32", "uint8", "bool"):
            raise bad("observation.dtype")
        n = action.get("num_actions")
        if action.get("type") != "discrete" or not isinstance(n, int) or isinstance(n, bool) or not 0 < n <= 1 << 20:
            raise bad("action.num_actions")
        states = obs.get("num_states")
        if states is not None and (not isinstance(states, int) or isinstance(states, bool) or states <= 0):
            raise bad("observation.num_states")
        layout = obs.get("layout")
        if layout not in (None, "HWC", "CHW"):
            raise bad("observation.layout")
        stack = obs.get("frame_stack", 0)
        if not isinstance(stack, int) or isinstance(stack, bool) or not 0 <= stack <= 64:
            raise bad("observation.frame_stack")
        masked = action.get("masked", False)  # absent in runs recorded before masks
        if not isinstance(masked, bool):
            raise bad("action.masked")
        steps = record.get("max_episode_steps")
        if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0):
            raise bad("max_episode_steps")
        threshold = record.get("solve_threshold")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
            raise bad("solve_threshold")

        def bounds(name: str) -> Any:
            value = obs.get(name)
            if value is None:
                return None
            values = value if isinstance(value, list) else [value]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) or v in ("inf", "-inf", "nan") for v in values):
                raise bad(f"observation.{name}")
            array = np.asarray([float(v) for v in values], np.float64)
            size = math.prod(shape)
            if array.size == 1:
                return np.broadcast_to(array[0], tuple(shape))
            if array.size != size:
                raise bad(f"observation.{name}")
            return array.reshape(shape)

        return cls(env_id=env_id, backend=backend, obs_shape=tuple(shape), obs_dtype=np.dtype(obs["dtype"]),
                   num_actions=n, max_episode_steps=steps, solve_threshold=None if threshold is None else float(threshold),
                   num_states=states, obs_low=bounds("low"), obs_high=bounds("high"), image_layout=layout,
                   frame_stack=stack, masked=masked)
