"""Error kinds that decide what the worker does next: retry the step later, or give up."""

from __future__ import annotations


class TransientError(Exception):
    """A failure that may pass by itself (timeout, 429, 5xx): retry the step with backoff.

    `retry_after` is the delay in seconds the remote side asked for, when it said.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(Exception):
    """A failure that retrying cannot fix (bad credentials, invalid output): fail the job now."""
