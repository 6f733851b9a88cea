"""Error kinds that decide what the worker does next: retry the step later, or give up."""

from __future__ import annotations


class TransientError(Exception):
    """A failure that may pass by itself (timeout, 429, 5xx): retry the step with backoff.

    `retry_after` is the delay in seconds the remote side asked for, when it said.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OutcomeUnknown(TransientError):
    """The request may have reached the server, and no answer came back (the connection broke
    or timed out after the body was sent). Whether it took effect is unknown, so a request that
    must not happen twice is not sent again automatically."""


class PermanentError(Exception):
    """A failure that retrying cannot fix (bad credentials, invalid output): fail the job now."""


class OwnerActionNeeded(PermanentError):
    """Only the bot's owner can fix this (a rejected API key, an exhausted quota, a provider that
    says not to retry): fail the job now and tell the user the bot is unavailable, rather than
    ask them to send the description again."""
