"""Seeing what an agent learned: plots, recordings and a report page of a run directory.

    rollout.py   fresh greedy episodes of a trained agent, with Q(s, a) at every step
    plots.py     return vs env steps, loss vs updates, predicted Q vs observed return (PNG)
    record.py    the agent playing, as GIF or MP4, the episode return drawn on the frames
    report.py    one self-contained HTML page: config, summary, evaluation, plots, recording

Everything is written atomically (dqnx.runs.files) into the run directory or --out.
"""

from dqnx.errors import UsageError


def check_count(name: str, value: object) -> None:
    """A positive integer option (--episodes), or a one-line UsageError."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UsageError(f"--{name} must be a positive integer, got {value!r}")


def check_seed(seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise UsageError(f"--seed must be an integer from 0 to {2**31 - 1}, got {seed!r}")
