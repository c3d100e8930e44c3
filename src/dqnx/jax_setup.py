"""Process-wide JAX settings dqnx applies before JAX starts its backend.

On a CPU, XLA sees one device however many cores there are, and a program of many
small seeds runs on one core. Asking XLA for one host device per core lets
`--seeds K` split its seeds over the cores (see drivers/jax_loop.Compiled); a
single seed is unaffected. Users who set XLA_FLAGS themselves keep their own.
Also turns on the persistent compilation cache (dqnx.compile_cache).
"""

from __future__ import annotations

import os

from dqnx import compile_cache


def configure() -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags and os.environ.get("DQNX_HOST_DEVICES", "") != "1":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        wanted = int(os.environ.get("DQNX_HOST_DEVICES", cores))
        if wanted > 1:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={wanted}".strip()
    compile_cache.enable()
