#!/usr/bin/env python
"""How long each tutorial's path takes: every block of the page, as written, at its full budget (issue 22).

The docs tier (tests/test_docs.py) runs the same blocks at small test budgets, to prove they still
run; this script runs them the way a learner does, to measure the path the page promises ("under
15 minutes on a laptop CPU"):

- one fresh directory per page, the page's blocks in order (a later block reads an earlier one's run);
- every block as written: the test markers' budget edits are ignored, `save` blocks are still
  written to their file (a learner saves that file), and blocks the tier cannot run (CANNOT_RUN:
  Atari on a GPU, installs) are listed as skipped, not timed;
- a shell block is one `bash` script, a Python block one `python` process, as a learner pastes them:
  each new process pays JAX's import and its own compilation;
- an empty compilation cache per page (a learner's first run on a fresh install) unless `--warm`.

Reported per block and per page: wall seconds and CPU seconds (user + sys of the block's
processes), the load average before and after. Only a run on an otherwise idle machine measures
the path; the CPU seconds bound what other load added. Results go to docs/tutorial-paths.json,
one entry per page, replaced when the page is measured again.

    python benchmarks/tutorial_paths.py [PAGE ...] [--warm] [--json-out docs/tutorial-paths.json]

PAGE is a path under docs/ (default: every page under docs/tutorials/).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # the checkout's dqnx, as the blocks' `dqnx` runs it

from dqnx.errors import UsageError  # noqa: E402
from dqnx.runs.files import atomic_write_json, read_json  # noqa: E402

DOCS = ROOT / "docs"
BUDGET_S = 15 * 60


def load_docs_tier():
    """tests/test_docs.py holds the block parser and the CANNOT_RUN list: one source for both uses."""
    spec = importlib.util.spec_from_file_location("dqnx_docs_tier", ROOT / "tests" / "test_docs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def children_cpu() -> float:
    times = os.times()
    return times.children_user + times.children_system


def run_page(tier, page: str, warm: bool) -> dict:
    blocks = tier.blocks_of(DOCS / page)
    timed, skipped = [], []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="dqnx-path-") as scratch:
        scratch = Path(scratch)
        bin_dir, work = scratch / "bin", scratch / "work"
        bin_dir.mkdir()
        work.mkdir()
        tier._shim(bin_dir)
        env = tier._environment(bin_dir)
        env.pop("NO_COLOR", None)
        if not warm:
            env["DQNX_CACHE_DIR"] = str(scratch / "compile-cache")
        for number, block in enumerate(blocks):
            if block.marker is None:
                reason = tier.CANNOT_RUN.get((block.page, block.first_line), "no test marker")
                skipped.append({"block": block.name, "first_line": block.first_line, "why": reason})
                continue
            plan = tier.parse_marker(block.marker, block.name)
            if plan.save:
                (work / plan.save).write_text(block.code)
                continue
            if block.language == "python":
                script = scratch / f"block_{number}.py"
                script.write_text(block.code)
                command = [sys.executable, str(script)]
            else:
                command = ["bash", "-euo", "pipefail", "-c", block.code]
            print(f"{block.name}: {block.first_line}", flush=True)
            cpu, start = children_cpu(), time.perf_counter()
            result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
            wall, cpu = time.perf_counter() - start, children_cpu() - cpu
            print(f"  {wall:.0f} s wall, {cpu:.0f} s CPU, exit {result.returncode}", flush=True)
            if result.returncode != 0:
                sys.exit(f"{block.name} failed (exit {result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
            timed.append({"block": block.name, "first_line": block.first_line, "wall_s": round(wall, 1),
                          "cpu_s": round(cpu, 1)})
    wall = sum(b["wall_s"] for b in timed)
    return {
        "page": page,
        "wall_s": round(wall, 1),
        "cpu_s": round(sum(b["cpu_s"] for b in timed), 1),
        "under_15_min": wall <= BUDGET_S,
        "compile_cache": "warm (the user's)" if warm else "empty at the start of the page",
        "blocks": timed,
        "skipped": skipped,
        "measured": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
        "machine": f"{os.cpu_count()} CPUs, load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after",
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                 text=True).stdout.strip(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="*", help="pages under docs/ (default: docs/tutorials/*.md)")
    parser.add_argument("--warm", action="store_true", help="keep the user's compilation cache (default: empty per page)")
    parser.add_argument("--json-out", type=Path, default=DOCS / "tutorial-paths.json")
    args = parser.parse_args()
    pages = args.pages or sorted(str(p.relative_to(DOCS)) for p in (DOCS / "tutorials").glob("*.md"))
    missing = [p for p in pages if not (DOCS / p).is_file()]
    if missing:
        parser.error(f"no such page under docs/: {', '.join(missing)} (give paths like tutorials/dungeon.md)")
    if not args.json_out.parent.is_dir():
        parser.error(f"--json-out: no directory {args.json_out.parent} to write into (create it, or give another path)")
    try:  # checked before the first page runs: a page takes minutes, a bad file would lose them
        results = read_json(args.json_out, "--json-out") if args.json_out.exists() else {}
    except UsageError as error:
        parser.error(f"{error} (move it away, or give another --json-out)")
    if not isinstance(results, dict):
        parser.error(f"--json-out {args.json_out} holds no table of pages (move it away, or give another --json-out)")
    tier = load_docs_tier()
    for page in pages:
        result = run_page(tier, page, args.warm)
        results[page] = result
        atomic_write_json(args.json_out, dict(sorted(results.items())))
        verdict = "under" if result["under_15_min"] else "OVER"
        print(f"== {page}: {result['wall_s'] / 60:.1f} min wall ({verdict} 15), {result['cpu_s'] / 60:.1f} min CPU; "
              f"{result['machine']}", flush=True)


if __name__ == "__main__":
    main()
