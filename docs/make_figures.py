"""Remake the README's pictures from a real CartPole run: the three plots and a report screenshot.

    python docs/make_figures.py                 # trains `dqnx train CartPole-v1 --seeds 3` first
    python docs/make_figures.py --run RUN_DIR   # or uses a run you have

Writes docs/img/{returns,loss,q_vs_return,report}.png, palette-quantized to stay small.
Needs Debian's chromium and chromium-driver for the screenshot, and selenium (in the test extra) to drive them.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

IMG = Path(__file__).resolve().parent / "img"


def dqnx(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "dqnx.cli", *args], check=True, capture_output=True, text=True).stdout


def shrink(source: Path, target: Path, width: int | None = None) -> None:
    with Image.open(source) as image:
        image = image.convert("RGB")
        if width is not None and image.width > width:
            image = image.resize((width, round(image.height * width / image.width)), Image.Resampling.LANCZOS)
        image.quantize(colors=128, method=Image.Quantize.FASTOCTREE).save(target, optimize=True)


def screenshot(html: Path, target: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="dqnx-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1200,1350", "--hide-scrollbars"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(html.resolve().as_uri())
        driver.save_screenshot(str(target))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="an existing CartPole run directory (default: train one)")
    args = parser.parse_args()
    IMG.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = args.run
        if run is None:
            run = tmp / "CartPole-v1"
            dqnx("train", "CartPole-v1", "--seeds", "3", "--quiet", "--out", str(run))
        dqnx("plot", str(run), "--out", str(tmp / "plots"))
        for name in ("returns.png", "loss.png", "q_vs_return.png"):
            shrink(tmp / "plots" / name, IMG / name)
        dqnx("report", str(run), "--out", str(tmp / "report.html"))
        screenshot(tmp / "report.html", tmp / "report.png")
        shrink(tmp / "report.png", IMG / "report.png", width=900)
    for path in sorted(IMG.glob("*.png")):
        print(f"{path.relative_to(IMG.parent.parent)}  {path.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
