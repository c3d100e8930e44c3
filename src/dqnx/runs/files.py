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
from safetensors.numpy import save_file

from dqnx.errors import UsageError


# safetensors' dtype names as numpy dtypes (those dqnx writes; any other is a mismatch).
_SAFETENSORS_DTYPES = {name: np.dtype(dt) for name, dt in {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32, "I16": np.int16,
    "I8": np.int8, "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_}.items()}


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


# What dqnx writes stays far below these; a larger or deeper file is not one of ours.
MAX_JSON_BYTES = 16 << 20
MAX_JSON_DEPTH = 32


def parse_json(text: str | bytes, where: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """JSON text parsed with limits: too large, too deeply nested (a RecursionError in the parser
    included) or invalid is a one-line UsageError naming `where`."""
    if len(text) > MAX_JSON_BYTES:
        raise UsageError(f"{where} is {len(text)} bytes, more than the {MAX_JSON_BYTES} a dqnx JSON file may hold; "
                         "it was not written by dqnx")
    try:
        data = json.loads(text)
    except RecursionError:
        raise UsageError(f"{where} nests deeper than Python can parse; it was not written by dqnx") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{where} is corrupted ({e}); restore it or start a new run") from None
    stack = [(data, 0)]
    while stack:  # iteratively: checking depth must not recurse either
        value, depth = stack.pop()
        if depth > max_depth:
            raise UsageError(f"{where} nests deeper than {max_depth} levels; it was not written by dqnx")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return data


def read_json(path: Path, what: str) -> Any:
    path = Path(path)
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise UsageError(f"{what} {path} is {path.stat().st_size} bytes, more than the {MAX_JSON_BYTES} a dqnx "
                             "JSON file may hold; it was not written by dqnx")
        text = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path} is missing; is {path.parent} a dqnx run directory?") from None
    except IsADirectoryError:
        raise UsageError(f"{what} {path} is a directory, not a file; restore it") from None
    return parse_json(text, f"{what} {path}")


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


def read_metadata(path: Path) -> dict[str, Any]:
    """The JSON metadata `save_tree` stored with a file (its header only; no tensor is read)."""
    try:
        with safe_open(str(path), framework="numpy") as f:
            return json.loads((f.metadata() or {}).get("dqnx", "{}"))
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as e:
        raise UsageError(f"{path} is not a readable safetensors file ({e}); it is corrupted") from None


def load_tree(path: Path, template: Any) -> tuple[Any, dict[str, Any]]:
    """Load a pytree saved by `save_tree` into `template`'s structure, with its metadata."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path} is missing; is {path.parent} a dqnx run directory?")
    expected = {jax.tree_util.keystr(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(template)[0]}
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = parse_json((f.metadata() or {}).get("dqnx", "{}"), f"{path} (metadata)")
            # Shapes and dtypes from the header first, against what the config implies: a file
            # whose tensors disagree is refused before any of its data is read.
            stored = set(f.keys())
            for name, leaf in expected.items():
                if name not in stored:
                    raise UsageError(f"{path} lacks tensor {name}; it was written by another configuration or program")
                piece = f.get_slice(name)
                shape, dtype = tuple(piece.get_shape()), _SAFETENSORS_DTYPES.get(piece.get_dtype())
                want_shape = tuple(np.shape(leaf))
                want_dtype = np.dtype(getattr(leaf, "dtype", None) or np.asarray(leaf).dtype)
                if shape != want_shape or dtype != want_dtype:
                    raise UsageError(f"{path}: tensor {name} has shape {shape} {piece.get_dtype()}, the config expects "
                                     f"{want_shape} {want_dtype}; was config.json edited?")
            arrays = {name: f.get_tensor(name) for name in expected}
    except (SafetensorError, OSError, ValueError) as e:
        raise UsageError(f"{path} is not a readable safetensors file ({e}); it is corrupted") from None
    if not isinstance(metadata, dict):
        raise UsageError(f"{path}: its dqnx metadata is not a JSON object; it is corrupted")
    return unflatten(template, arrays, path), metadata
