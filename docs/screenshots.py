"""Screenshots of two pages of the documentation site, taken in headless Chromium.

    python docs/screenshots.py              # builds the site into a temporary directory first
    python docs/screenshots.py --site DIR   # or uses a site `mkdocs build` wrote to DIR

Writes docs/img/site-tutorial.png (the Dungeon tutorial, scrolled to its figures) and
docs/img/site-reference.png (the targets-and-losses reference, generated from the docstrings), palette-
quantized to stay small. Needs the docs extra (MkDocs), Debian's chromium and chromium-driver,
and selenium (in the test extra) to drive them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
IMG = DOCS / "img"

# page of the built site, the element to scroll to (CSS selector, or None for the top), file to write
SHOTS = [
    ("tutorials/dungeon/index.html", "#replacing-the-table-with-a-network", "site-tutorial.png"),
    ("reference/targets/index.html", "#dqnx.agents.dqn.td_target", "site-reference.png"),
]


def build(out: Path) -> None:
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(out)],
                   check=True, cwd=ROOT, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})


def shoot(site: Path, width: int = 1280, height: int = 1400) -> list[Path]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    profile = tempfile.mkdtemp(prefix="dqnx-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", f"--window-size={width},{height}", "--hide-scrollbars"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    written = []
    try:
        for page, anchor, name in SHOTS:
            driver.get((site / page).as_uri())
            WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
            if anchor:
                driver.execute_script("document.getElementById(arguments[0]).scrollIntoView()", anchor.lstrip("#"))
            with tempfile.TemporaryDirectory() as tmp:
                raw = Path(tmp) / name
                driver.save_screenshot(str(raw))
                with Image.open(raw) as image:
                    image.convert("RGB").quantize(colors=128, method=Image.Quantize.FASTOCTREE).save(IMG / name, optimize=True)
            written.append(IMG / name)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, help="a site built by `mkdocs build` (default: build one now)")
    args = parser.parse_args()
    if args.site:
        paths = shoot(args.site)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            build(Path(tmp) / "site")
            paths = shoot(Path(tmp) / "site")
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
