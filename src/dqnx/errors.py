"""Errors that the command line turns into a one-line message.

A `UsageError` is the user's to fix (bad id, bad value, bad run directory): the
CLI prints it without a traceback and exits with status 2.
"""

from __future__ import annotations


class UsageError(Exception):
    """Bad input from the user; the message names the problem and the fix."""


class EnvironmentFailure(Exception):
    """The environment broke its contract while running (e.g. no legal action in a state
    that is not terminal): the CLI prints the one-line message and exits with status 1."""


class Interrupted(Exception):
    """Training stopped by a signal after writing a checkpoint (exit status 130)."""

    def __init__(self, run_dir: str, env_steps: int, message: str | None = None):
        super().__init__(message or f"interrupted at env step {env_steps}; checkpoint saved. Continue with: dqnx train --resume {run_dir}")
        self.run_dir = run_dir
        self.env_steps = env_steps
