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


class Diverged(Exception):
    """Training produced non-finite values (exit status 3). The run directory keeps the last
    finite weights and checkpoint; summary.json says which seed diverged, where and in what."""

    def __init__(self, message: str, run_dir: str, summary: dict):
        super().__init__(message)
        self.run_dir = run_dir
        self.summary = summary


class RunFailed(Exception):
    """A failure while running that is not the user's input (exit status 1): a disk that
    fills, an environment that raises. The message says what the run directory still holds."""


class EnvFailed(RunFailed):
    """The environment raised while training (exit status 1); `__cause__` is its exception,
    whose traceback the CLI shows (the frames of the user's own code)."""

    def __init__(self, env_id: str, call: str, env_steps: int | None, error: BaseException, run_dir: str | None = None,
                 checkpoint_step: int | None = None):
        where = f"; its last checkpoint (env step {checkpoint_step}) is intact: fix the environment, then continue " \
                f"with dqnx train --resume {run_dir}" if run_dir is not None else ""
        when = f"at env step {env_steps}" if env_steps is not None else "during an evaluation"
        super().__init__(f"the environment {env_id} raised {type(error).__name__} in {call}() {when}: {error}{where}")
        self.env_id, self.call, self.env_steps, self.error, self.run_dir = env_id, call, env_steps, error, run_dir


class DqnxWarning(UserWarning):
    """Something the user should know that does not stop the run (the CLI prints one line each)."""


class SettingsWarning(DqnxWarning):
    """Settings that train but waste much of the run."""


class QValueWarning(DqnxWarning):
    """Q-values far beyond what the rewards seen so far allow: a sign of divergence."""
