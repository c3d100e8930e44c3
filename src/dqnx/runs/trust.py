"""Which environment code this user has chosen to run: the trust record.

A run directory is data anyone can hand over (a tarball, a shared drive, a hub). When
its environment needs code the files name (`module.path:EnvClass`, `package:EnvId`, a
wrapper), reading it must not import that code unless the user says so. Three ways on:

- the run was created on this machine by this user: dqnx wrote down a fingerprint of
  the fields that name code (env id, backend, env params, wrappers) when it created
  the run, in a record OUTSIDE any run directory (`trusted.json` under $DQNX_HOME, else
  $XDG_DATA_HOME/dqnx, else ~/.local/share/dqnx). Keyed on those fields, not on the
  path: a tarball unpacked over an old run inherits nothing unless it names exactly the
  code (with exactly the arguments) this user already ran;
- `--trust-env-code` / `trust_env_code=True`, like Hugging Face's `trust_remote_code`;
- passing the environment yourself: `dqnx.load(path, env=...)`.

Why a record rather than a prompt on the terminal: scripts, notebooks and `dqnx report`
in CI have no terminal, and a prompt trains people to press "y". Why not a marker file
in the run directory: whoever sends the directory controls its files.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from dqnx.envs.source import EnvSource
from dqnx.errors import UsageError

TRUST_FILE = "trusted.json"
TRUST_FORMAT = "dqnx-trusted/1"
TRUST_FLAG = "--trust-env-code"


def home() -> Path:
    """dqnx's per-user data directory: $DQNX_HOME, else $XDG_DATA_HOME/dqnx, else ~/.local/share/dqnx."""
    if os.environ.get("DQNX_HOME"):
        return Path(os.environ["DQNX_HOME"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "dqnx"


def fingerprint(source: EnvSource) -> str:
    """sha256 of the canonical JSON of the fields that name code and what they are given."""
    text = json.dumps(source.fields(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _read_record(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > 16 << 20:
            return {}
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return {}  # a missing or damaged record trusts nothing: the flag still works
    if not isinstance(data, dict) or data.get("format") != TRUST_FORMAT or not isinstance(data.get("trusted"), dict):
        return {}
    return data


def is_trusted(source: EnvSource) -> bool:
    return fingerprint(source) in _read_record(home() / TRUST_FILE).get("trusted", {})


def remember(source: EnvSource) -> None:
    """Record that this user ran `source`'s code (a run created here). Best effort: a
    read-only home only means the trust flag is needed later."""
    if not source.code():
        return
    from dqnx.runs.files import atomic_write_json

    folder = home()
    key = fingerprint(source)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _locked(folder / (TRUST_FILE + ".lock")):
            data = _read_record(folder / TRUST_FILE) or {"format": TRUST_FORMAT, "trusted": {}}
            if key in data["trusted"]:
                return
            data["trusted"][key] = {"code": source.code(), "env_id": source.env_id,
                                    "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            atomic_write_json(folder / TRUST_FILE, data)
    except OSError:
        pass


class _locked:
    """An exclusive lock on a file beside the record, so parallel runs (sweeps, Ray workers
    on one machine) do not lose each other's entries; a no-op where fcntl is missing."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> None:
        self.file = open(self.path, "a")
        try:
            import fcntl

            fcntl.flock(self.file, fcntl.LOCK_EX)
        except ImportError:
            pass

    def __exit__(self, *exc: Any) -> None:
        self.file.close()  # closing releases the lock


def require_trust(source: EnvSource, where: str, trust_env_code: bool = False, how: str = "dqnx.load(path, env=...)") -> None:
    """Raise a one-line UsageError unless building `source` runs no code it names, or the
    user trusts that code (the flag, or a run this user created with the same fields)."""
    code = source.code()
    if not code or trust_env_code or is_trusted(source):
        return
    named = ", ".join(code)
    raise UsageError(
        f"{where} names code that building its environment would import and run ({named}); dqnx runs no code named "
        f"in files it did not create here. If you trust it, pass {TRUST_FLAG} (trust_env_code=True), or build the "
        f"environment yourself and pass it: {how}"
    )


def require_run_trust(run_dir: Any, trust_env_code: bool = False) -> None:
    """require_trust for the environment a run directory records (read as data), so a command
    can refuse before it writes anything."""
    from dqnx.runs.run_dir import RunDir

    run = RunDir.open(run_dir)
    require_trust(run.read_config().source, str(run.path), trust_env_code)
