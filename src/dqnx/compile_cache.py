"""JAX's persistent compilation cache, on by default.

Compiling the training program costs seconds on a small CPU, often more than
training CartPole itself; the cache makes every run after the first reuse the
compiled program. It lives in $DQNX_CACHE_DIR, else $XDG_CACHE_HOME/dqnx/jax, else
~/.cache/dqnx/jax. Set DQNX_COMPILE_CACHE=0 to turn it off.
"""

from __future__ import annotations

import os
from pathlib import Path

_enabled = False


def cache_dir() -> Path:
    if os.environ.get("DQNX_CACHE_DIR"):
        return Path(os.environ["DQNX_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dqnx" / "jax"


def enable() -> None:
    global _enabled
    if _enabled or os.environ.get("DQNX_COMPILE_CACHE", "1") == "0":
        return
    import jax

    try:
        path = cache_dir()
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # an unwritable home only costs compile time
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _enabled = True
