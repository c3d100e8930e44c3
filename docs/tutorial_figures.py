"""Copy a tutorial's figures into docs/img/ from a directory where the page's commands ran at full budget.

    cd /tmp/cartpole && (run every command of docs/tutorials/cartpole-parts.md as written)
    python docs/tutorial_figures.py tutorials/cartpole-parts.md /tmp/cartpole

The tutorials show what their own commands draw (`dqnx sweep` writes curves.png, `dqnx plot`
returns.png and q_vs_return.png); this script only copies those files under the names the page
shows, palette-quantized to stay small. It runs nothing: the commands are the page's, so the page
says how long they took and on what machine. The README's three plots and report screenshot are
docs/make_figures.py's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS))
from make_figures import IMG, shrink  # noqa: E402  (a script beside this one, not a package)

# page -> (file its commands write, relative to the directory they ran in; image in docs/img/)
FIGURES: dict[str, list[tuple[str, str]]] = {
    "tutorials/cartpole-parts.md": [
        ("sweeps/replay/curves.png", "cartpole-replay.png"),
        ("sweeps/target/curves.png", "cartpole-target.png"),
        ("sweeps/train-freq/curves.png", "cartpole-train-freq.png"),
        ("plots/variants/returns.png", "cartpole-variants.png"),
    ],
    "tutorials/q-shapes.md": [
        ("runs/mc/plots/q_vs_return.png", "mc-q-vs-return.png"),
    ],
    "tutorials/classic-to-deep.md": [
        ("plots/cliff/returns.png", "cliff-returns.png"),
    ],
    "tutorials/pixels.md": [
        ("plots/pqn-vs-dqn/returns.png", "pixels-pqn-vs-dqn.png"),
    ],
    "tutorials/dungeon.md": [
        ("plots/dungeon/returns.png", "dungeon-returns.png"),
        ("plots/dungeon/q_vs_return.png", "dungeon-q-vs-return.png"),
        ("sweeps/dungeon/curves.png", "dungeon-sweep.png"),
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", choices=sorted(FIGURES), help="the page, relative to docs/")
    parser.add_argument("workdir", type=Path, help="the directory the page's commands ran in")
    parser.add_argument("--only", nargs="*", help="copy only these images (names in docs/img/)")
    args = parser.parse_args()
    chosen = [(source, image) for source, image in FIGURES[args.page] if not args.only or image in args.only]
    missing = [source for source, _ in chosen if not (args.workdir / source).is_file()]
    if missing:
        parser.exit(2, f"error: {args.workdir} has no {', '.join(missing)}: run the page's commands there first\n")
    for source, image in chosen:
        shrink(args.workdir / source, IMG / image)
        print(f"{args.workdir / source} -> docs/img/{image}  {(IMG / image).stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
