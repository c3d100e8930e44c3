"""TensorBoard event files of a run, written next to metrics.csv from the same rows.

    RUN_DIR/tensorboard/seed_<S>/events.out.tfevents.*     one directory per seed

so `tensorboard --logdir RUN_DIR/tensorboard` draws every seed as its own curve, and
`--logdir runs/` compares runs. The x axis of every scalar is the env step.
tensorboardX writes the files without TensorFlow.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

TENSORBOARD_DIR = "tensorboard"

# metrics.csv column -> TensorBoard tag.
TAGS: dict[str, str] = {
    "train_return": "train/episode_return",
    "train_return_100": "train/episode_return_last_100",
    "loss": "train/loss",
    "epsilon": "train/epsilon",
    "q_mean": "train/q_mean",
    "td_abs": "train/td_error",
    "steps_per_second": "perf/steps_per_second",
    "eval_mean_return": "eval/mean_return",
}
FINAL_EVAL_TAG = "eval/final_mean_return"


def seed_dir(run_path: Path, seed: int) -> Path:
    return Path(run_path) / TENSORBOARD_DIR / f"seed_{seed}"


class TensorBoardLog:
    """One SummaryWriter per seed.

    On resume from a checkpoint at env step `resume_step`, TensorBoard is told to drop
    the events the interrupted run wrote after it (tensorboardX's purge_step drops steps
    >= the one given, and the checkpoint's own step stays valid), as metrics.csv drops
    its rows past the checkpoint.
    """

    def __init__(self, run_path: Path, seeds: list[int], resume_step: int | None = None):
        import time

        from tensorboardX import SummaryWriter

        # tensorboardX names an event file by the second it was opened: a resume within the
        # same second as the interrupted run would overwrite that run's file. A unique suffix
        # keeps one file per writer.
        suffix = f".{time.time_ns()}"
        self._writers = {
            seed: SummaryWriter(str(seed_dir(run_path, seed)), flush_secs=30, filename_suffix=suffix,
                                purge_step=None if resume_step is None else resume_step + 1)
            for seed in seeds
        }

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Rows as appended to metrics.csv (one per seed); NaN (no episode ended, no update yet) is skipped."""
        for row in rows:
            writer = self._writers[row["seed"]]
            step = int(row["env_steps"])
            for column, tag in TAGS.items():
                value = row.get(column)
                if value is not None and math.isfinite(value):
                    writer.add_scalar(tag, float(value), step)

    def write_final(self, summary: dict[str, Any]) -> None:
        for entry in summary.get("per_seed", []):
            writer = self._writers.get(entry["seed"])
            if writer is not None:
                writer.add_scalar(FINAL_EVAL_TAG, float(entry["eval_mean_return"]), int(summary["total_steps"]))

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()  # flushes
