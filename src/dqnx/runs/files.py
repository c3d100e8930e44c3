"""Atomic files and safetensors pytrees: how a run directory is written and read.

Every file but metrics.csv is written to a temporary name in the same directory and
renamed into place, so a killed process leaves either the old complete file or the
new one. metrics.csv is appended row by row; a resume drops a torn last row.
Weights and full training states are safetensors (loading never runs code); the
rest is JSON or CSV.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jax
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from dqnx.errors import UsageError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by the owner only; run files get the usual mode.
_FILE_MODE = 0o666 & ~_current_umask()


@contextmanager
def _atomic_target(path: Path) -> Iterator[str]:
    """A temporary file beside `path`; on a clean exit it is synced and renamed onto `path`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with _atomic_target(Path(path)) as tmp:
        Path(tmp).write_bytes(data)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"{path} is missing; is {Path(path).parent} a dqnx run directory?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{what} {path} is corrupted ({e}); restore it or start a new run") from None


def flatten(tree: Any) -> dict[str, np.ndarray]:
    """A pytree as {path string: numpy array}, the layout stored in safetensors."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def unflatten(template: Any, arrays: dict[str, np.ndarray], source: Path) -> Any:
    """Arrays put back into the structure of `template` (arrays or jax.ShapeDtypeStruct); names, shapes and dtypes must match."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, leaf in paths:
        name = jax.tree_util.keystr(path)
        if name not in arrays:
            raise UsageError(f"{source} lacks tensor {name}; it was written by another configuration or program")
        array = arrays[name]
        shape, dtype = tuple(np.shape(leaf)), np.dtype(getattr(leaf, "dtype", None) or np.asarray(leaf).dtype)
        if array.shape != shape or array.dtype != dtype:
            raise UsageError(
                f"{source}: tensor {name} has shape {array.shape} {array.dtype}, the config expects "
                f"{shape} {dtype}; was config.json edited?"
            )
        leaves.append(array)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def save_tree(path: Path, tree: Any, metadata: dict[str, Any] | None = None) -> None:
    """Atomically save a pytree (plus JSON metadata) as one safetensors file."""
    meta = {"dqnx": json.dumps(metadata or {})}
    with _atomic_target(Path(path)) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in flatten(tree).items()}, tmp, metadata=meta)


def load_tree(path: Path, template: Any) -> tuple[Any, dict[str, Any]]:
    """Load a pytree saved by `save_tree` into `template`'s structure, with its metadata."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path} is missing; is {path.parent} a dqnx run directory?")
    try:
        arrays = load_file(str(path))

        with safe_open(str(path), framework="numpy") as f:
            metadata = json.loads((f.metadata() or {}).get("dqnx", "{}"))
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as e:
        raise UsageError(f"{path} is not a readable safetensors file ({e}); it is corrupted") from None
    return unflatten(template, arrays, path), metadata
