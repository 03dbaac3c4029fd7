"""The launcher's error kinds and exit codes."""

from __future__ import annotations

EXIT_SUCCEEDED = 0
EXIT_ERROR = 1  # the launcher could not do what was asked (API unreachable, no such run)
EXIT_BAD_INPUT = 2  # bad values, flags or environment, found before anything was created
EXIT_RUN_FAILED = 3  # submit --follow: the run ended Failed (or was killed)
EXIT_TIMED_OUT = 4  # submit --follow --timeout: the run had not ended in time


class LauncherError(RuntimeError):
    """Something the launcher could not do; the message is one line."""


class PreflightError(LauncherError):
    """A check before submitting failed (missing CRD, namespace, secret, ...); nothing created."""
