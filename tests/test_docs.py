"""The documentation site's tier (`python -m pytest -m docs`): the pages never rot.

Every ```sh and ```python block on every page under docs/ runs here, in order, one
temporary directory per page (so a later block reads the run directory an earlier one
made, and nothing is written into the source tree). The HTML comment on the line before a
block says how it runs in tests; the page itself shows the full budget:

    <!-- test: as written -->                      run it unchanged
    <!-- test: train += --steps 2000 -->           append to every `dqnx train` command of the block
    <!-- test: "50_000" -> "2_000" -->             replace text (Python blocks' budgets)
    <!-- test: bash -->                            run the block as one bash script (background jobs, curl)
    <!-- test: save thermostat.py -->              write the block to that file (a module or TOML a later block uses)

Operations are separated by " ; ". `dqnx ...` commands run in this process (dqnx.cli.main,
which saves the seconds every new process pays to import JAX); any other command runs in
bash, with a `dqnx` on PATH that runs `python -m dqnx.cli`. A block with no marker must be
listed in CANNOT_RUN with the reason: a block that is neither fails the tier, and so does a
CANNOT_RUN entry that matches no block, so nothing is skipped silently.

The site's build (`mkdocs build --strict`) and its images in headless Chromium are tested here too.

Checked once (2026-11-30) that the tier fails when a documented flag is renamed: with `dqnx eval`'s
`--episodes` renamed to `--num-episodes` in a scratch clone, `python -m pytest -m docs tests/test_docs.py
-n 0 -k "page_runs and index"` failed with "index.md:26: `dqnx eval runs/first --episodes 20` exited 2:
error: No such option: --episodes (Possible options: --num-episodes)". The block count and the
tier's timings are on the site's home page (docs/index.md, "This site").
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.docs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# (page, the block's first line) -> why it does not run here. Every entry must match a block.
CANNOT_RUN: dict[tuple[str, str], str] = {
    ("index.md", "pip install . && dqnx train CartPole-v1"):
        "installs dqnx; the tier runs the worktree's code (its `dqnx train CartPole-v1` runs below at a small budget)",
    ("howto/export-serve.md", 'pip install "dqnx[export]"     # jax2onnx, onnx, onnxruntime (StableHLO export needs none of it)'):
        "installs packages; the test extra the tier runs with already holds the export and serve extras' packages",
    ("tutorials/pixels.md", "dqnx train ALE/Pong-v5 --steps 2000000 --out runs/pong"):
        "Atari needs a GPU: on this CPU a Nature CNN gradient step costs about 83 ms of CPU (benchmarks/conv.py "
        "--cpu-time), tens of env steps per second, and a few thousand steps teach nothing "
        "(tests/test_gymnasium.py covers the Atari pipeline at a small budget)",
}

_FENCE = re.compile(r"^```(\w+)?\s*$")
_MARKER = re.compile(r"^<!--\s*test:\s*(.*?)\s*-->\s*$")
_RUNNABLE = {"sh", "bash", "python"}
_SHELL_OPERATORS = {"&&", "||", "|", ";", "&", ">", ">>", "<"}


@dataclass
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    marker: str | None

    @property
    def first_line(self) -> str:
        return self.code.strip().splitlines()[0]

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def blocks_of(page: Path) -> list[Block]:
    """The runnable fenced blocks of a page with the test marker just above each (or None)."""
    lines = page.read_text().splitlines()
    found, index = [], 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        language = fence.group(1) or ""
        end = next(i for i in range(index + 1, len(lines)) if lines[i].strip() == "```")
        before = lines[index - 1] if index > 0 else ""
        marker = _MARKER.match(before)
        if language in _RUNNABLE or marker:
            found.append(Block(str(page.relative_to(DOCS)), index + 1, language,
                               "\n".join(lines[index + 1:end]) + "\n", marker.group(1) if marker else None))
        index = end + 1
    return found


def all_blocks() -> list[Block]:
    return [block for page in pages() for block in blocks_of(page)]


def runnable_pages() -> list[str]:
    return sorted({block.page for block in all_blocks() if block.marker is not None})


# --- markers -------------------------------------------------------------------------------------

@dataclass
class Plan:
    appends: dict[str, list[str]]
    replacements: list[tuple[str, str]]
    bash: bool
    save: str | None = None


def parse_marker(marker: str, where: str) -> Plan:
    plan = Plan({}, [], False)
    for operation in (part.strip() for part in marker.split(" ; ")):
        if operation == "as written":
            continue
        if operation == "bash":
            plan.bash = True
        elif operation.startswith("save "):
            plan.save = operation.removeprefix("save ").strip()
        elif "+=" in operation:
            command, args = operation.split("+=", 1)
            plan.appends.setdefault(command.strip(), []).extend(shlex.split(args))
        elif (replace := re.fullmatch(r'"(.*)"\s*->\s*"(.*)"', operation)) is not None:
            plan.replacements.append((replace.group(1), replace.group(2)))
        else:
            raise AssertionError(f"{where}: unknown test marker operation {operation!r}")
    return plan


def apply_plan(block: Block, plan: Plan) -> str:
    code = block.code
    for old, new in plan.replacements:
        assert old in code, f"{block.name}: the marker replaces {old!r}, which the block does not contain"
        code = code.replace(old, new)
    if plan.appends:
        commands = [with_budget(words, {}) for words in shell_commands(code)]
        subcommands = {words[i + 1] for words in commands if (i := dqnx_position(words)) is not None and i + 1 < len(words)}
        for sub in plan.appends:
            assert sub in subcommands, f"{block.name}: no `dqnx {sub}` command to append to"
    return code


def dqnx_position(words: list[str]) -> int | None:
    """Where `dqnx` stands in a command, after any VAR=value assignments (None: not a dqnx command)."""
    for index, word in enumerate(words):
        if word == "dqnx":
            return index
        if not re.fullmatch(r"[A-Za-z_]\w*=.*", word):
            return None
    return None


def with_budget(words: list[str], appends: dict[str, list[str]]) -> list[str]:
    """The command with the marker's arguments for its dqnx subcommand appended (a pipeline is left alone)."""
    index = dqnx_position(words)
    if index is None or index + 1 >= len(words) or _SHELL_OPERATORS.intersection(words):
        return words
    return words + appends.get(words[index + 1], [])


def shell_commands(code: str) -> list[list[str]]:
    """The block's commands: continuation lines joined, comments dropped, one command a line."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [words for line in joined.splitlines() if (words := shlex.split(line, comments=True))]


# --- running -------------------------------------------------------------------------------------

def _shim(bin_dir: Path) -> None:
    script = bin_dir / "dqnx"
    # This checkout's dqnx first, even under a page's own `PYTHONPATH=. dqnx ...`.
    script.write_text(f'#!/bin/sh\nexport PYTHONPATH="{ROOT / "src"}${{PYTHONPATH:+:$PYTHONPATH}}"\n'
                      f'exec "{sys.executable}" -m dqnx.cli "$@"\n')
    script.chmod(0o755)


def _environment(bin_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["NO_COLOR"] = "1"
    return env


def run_dqnx_in_process(args: list[str], capsys) -> tuple[int, str]:
    from dqnx import cli

    saved = sys.argv
    sys.argv = ["dqnx", *args]
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.argv = saved
    out, err = capsys.readouterr()
    return code, out + err


def run_block(block: Block, cwd: Path, bin_dir: Path, capsys) -> None:
    plan = parse_marker(block.marker, block.name)
    code = apply_plan(block, plan)
    env = _environment(bin_dir)
    if plan.save:
        (cwd / plan.save).write_text(code)
        return
    if block.language == "python":
        # In this process, as a script (__main__): a new process would pay JAX's import again.
        path, modules = list(sys.path), set(sys.modules)
        try:
            exec(compile(code, block.name, "exec"), {"__name__": "__main__"})
        except Exception as error:
            out, err = capsys.readouterr()
            raise AssertionError(f"{block.name} failed:\n{code}\n{out}\n{err}") from error
        finally:
            # The page's own modules (saved into its directory) leave with it; dqnx's and the libraries' stay.
            sys.path[:] = path
            for name in set(sys.modules) - modules:
                if str(getattr(sys.modules[name], "__file__", "") or "").startswith(str(cwd)):
                    del sys.modules[name]
        return
    if plan.bash:
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=cwd, env=env, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, f"{block.name} failed:\n{code}\n{result.stdout}\n{result.stderr}"
        return
    for words in shell_commands(code):
        words = with_budget(words, plan.appends)
        if words[0] == "dqnx" and not _SHELL_OPERATORS.intersection(words):
            args = words[1:]
            status, output = run_dqnx_in_process(args, capsys)
            assert status == 0, f"{block.name}: `dqnx {shlex.join(args)}` exited {status}:\n{output}"
        else:
            line = shlex.join(words)
            result = subprocess.run(["bash", "-euo", "pipefail", "-c", line], cwd=cwd, env=env, capture_output=True,
                                    text=True, timeout=600)
            assert result.returncode == 0, f"{block.name}: `{line}` exited {result.returncode}:\n{result.stdout}\n{result.stderr}"


# --- the tests -----------------------------------------------------------------------------------

def test_every_block_runs_or_says_why_not():
    blocks = all_blocks()
    assert blocks, "the pages' code blocks were not found"
    unaccounted = [b.name + ": " + b.first_line for b in blocks if b.marker is None and (b.page, b.first_line) not in CANNOT_RUN]
    assert unaccounted == [], "blocks with no `<!-- test: ... -->` marker and no CANNOT_RUN entry"
    both = [b.name for b in blocks if b.marker is not None and (b.page, b.first_line) in CANNOT_RUN]
    assert both == [], "blocks with a marker that CANNOT_RUN also lists"
    keys = {(b.page, b.first_line) for b in blocks}
    stale = [key for key in CANNOT_RUN if key not in keys]
    assert stale == [], "CANNOT_RUN entries that match no block"
    for block in blocks:
        if block.marker is not None:
            apply_plan(block, parse_marker(block.marker, block.name))


# Pages whose blocks cost minutes (one compiled program per configuration they compare): their
# blocks run in the docs tier's slow half, by hand (`python -m pytest -m "docs and slow"
# tests/test_docs.py`), so CI's docs line (`-m "docs and not slow"`) stays within its budget.
# Measured over the whole tier at load 15-24: classic-to-deep 592 s, pixels 408, q-shapes 407,
# cartpole-parts 384; every other page 20-164 s. Again on 2026-11-30 at load 5-6, one process
# (-n 0): cartpole-parts 124 s, pixels 83 s.
SLOW_PAGES = {"tutorials/classic-to-deep.md", "tutorials/pixels.md", "tutorials/q-shapes.md",
              "tutorials/cartpole-parts.md"}


def _page_params() -> list:
    return [pytest.param(page, marks=pytest.mark.slow) if page in SLOW_PAGES else page
            for page in runnable_pages()]


def test_slow_pages_exist():
    """A renamed or removed page in SLOW_PAGES would otherwise drop out of both halves silently."""
    assert SLOW_PAGES <= set(runnable_pages()), SLOW_PAGES - set(runnable_pages())


@pytest.mark.parametrize("page", _page_params())
def test_page_runs(page, tmp_path, capsys, monkeypatch):
    """Every marked block of the page, in order, in one directory shared by the page's blocks."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _shim(bin_dir)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("NO_COLOR", "1")
    for block in blocks_of(DOCS / page):
        if block.marker is not None:
            start = time.perf_counter()
            run_block(block, work, bin_dir, capsys)
            with capsys.disabled():
                print(f"\n  {block.name}: {time.perf_counter() - start:.1f} s", end="")


# --- the site ------------------------------------------------------------------------------------

def build_site(out: Path) -> subprocess.CompletedProcess:
    """`mkdocs build --strict` from the repository root into `out` (never into the source tree)."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", NO_MKDOCS_2_WARNING="1")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs", reason="the docs tier needs the docs extra: pip install '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    result = build_site(out)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_site_builds_strict_with_every_page(site):
    nav_pages = re.findall(r":\s+([\w/.-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.MULTILINE)
    assert len(nav_pages) >= 10
    for page in nav_pages:
        html = site / (page.removesuffix(".md").removesuffix("index") + "/index.html").lstrip("/").replace("//", "/")
        assert html.exists(), f"{page} was not built ({html})"
    # The API reference comes from the docstrings; the config tables from the dataclasses' field docs.
    api = (site / "reference/api/index.html").read_text()
    assert "dqnx.api.train" in api or "train" in api and "env_id" in api
    config = (site / "reference/config/index.html").read_text()
    assert "target_update_period" in config and "Sync the target network every this many gradient steps" in config
    targets = (site / "reference/targets/index.html").read_text()
    assert "td_target" in targets and "&gt;&gt;&gt;" in targets  # the doctest examples are shown


def _chromium(profile: str, width: int = 1280, height: int = 1600):
    if not (os.path.exists("/usr/bin/chromium") and os.path.exists("/usr/bin/chromedriver")):
        if os.environ.get("CI"):
            pytest.fail("CI must have /usr/bin/chromium and /usr/bin/chromedriver (.ci/run installs them)")
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def test_no_broken_image_on_any_page(site):
    """Every built page opened in headless Chromium: every <img> loaded with a size (a wrong path fails)."""
    import shutil

    from selenium.webdriver.support.ui import WebDriverWait

    pages_html = sorted(p for p in site.rglob("index.html") if "search" not in p.parts)
    assert len(pages_html) >= 10
    profile = tempfile.mkdtemp(prefix="dqnx-chromium-")
    driver = _chromium(profile)
    seen = 0
    try:
        for html in pages_html:
            driver.get(html.as_uri())
            WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
            images = driver.execute_script(
                "return Array.from(document.querySelectorAll('article img')).map(i => ({src: i.getAttribute('src'),"
                " complete: i.complete, width: i.naturalWidth}))")
            broken = [i["src"] for i in images if not (i["complete"] and i["width"] > 0)]
            assert broken == [], f"{html.relative_to(site)}: broken images {broken}"
            seen += len(images)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    assert seen >= 5, "the pages' figures were not found"
