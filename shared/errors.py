"""Every error the bot raises on purpose, and what its kind tells whoever catches it.

    BotError                      the root: an error we expected and can explain in one line
    ├── TransientError            may pass by itself: the worker retries the step     exit 2
    │   ├── OutcomeUnknown        sent, no answer: not sent again automatically
    │   └── Unavailable           the database or a remote API cannot be reached
    ├── PermanentError            retrying cannot fix it: the worker fails the job    exit 1
    │   └── OwnerActionNeeded     only the owner can fix it (a key, a quota)          exit 2
    ├── ConfigurationError        a setting is missing or wrong                       exit 2
    └── JobStopped                the worker stops a job without failing it           exit 1

A command line (`manage.py`, the worker, `shared.migrate`) maps an error to its exit code with
`exit_code`, and `run_main` does it for a whole command: 0 done, 1 the request cannot be carried
out, 2 the command cannot run (configuration, or the database or Telegram unreachable). The
database driver's own errors (`DATABASE_ERRORS`) count as unreachable.
"""

from __future__ import annotations

import sys
from typing import Callable

import pg8000.native

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_CANNOT_RUN = 2
UNDEFINED_TABLE = "42P01"

# What the database driver raises when the server is gone or refuses a statement (a socket
# error is an OSError).
DATABASE_ERRORS: tuple[type[Exception], ...] = (
    pg8000.native.InterfaceError,
    pg8000.native.DatabaseError,
    OSError,
)


class BotError(Exception):
    """The root of the errors the bot raises on purpose; its message is safe to show (no secret)."""


class TransientError(BotError):
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


class Unavailable(TransientError):
    """The database or a remote API cannot be reached now; the message names which (never with
    its password)."""


class PermanentError(BotError):
    """A failure that retrying cannot fix (bad credentials, invalid output): fail the job now."""


class OwnerActionNeeded(PermanentError):
    """Only the bot's owner can fix this (a rejected API key, an exhausted quota, a provider that
    says not to retry): fail the job now and tell the user the bot is unavailable, rather than
    ask them to send the description again."""


class ConfigurationError(BotError, ValueError):
    """A setting is missing or has a value we cannot use; the message names it, never its value
    when that is a secret. Also a ValueError, which a bad value is."""


class JobStopped(BotError):
    """The worker stops working on a job, which is no failure of the job: another worker took
    its lease, or a cancel was requested. Neither retried nor failed."""


def exit_code(exc: BaseException) -> int:
    """The exit code of a command that stopped on `exc`: 2 when it cannot run (configuration,
    the database or a remote API unreachable, a key only the owner can fix), else 1."""
    if isinstance(exc, (ConfigurationError, TransientError, OwnerActionNeeded, *DATABASE_ERRORS)):
        return EXIT_CANNOT_RUN
    return EXIT_REFUSED


def describe(exc: BaseException) -> str:
    """One line for the operator: what went wrong, without a traceback."""
    what = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, ConfigurationError):
        return f"configuration error: {what}"
    if isinstance(exc, pg8000.native.DatabaseError):
        return " ".join(f"error: {_database_error(exc)}".split())
    if isinstance(exc, pg8000.native.InterfaceError):
        return f"error: lost the database connection: {what}"
    return f"error: {what}"


def _database_error(exc: pg8000.native.DatabaseError) -> str:
    fields = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    if fields.get("C") == UNDEFINED_TABLE:
        return f"the schema has no tables yet: run `python manage.py migrate` ({fields.get('M')})"
    return f"database error: {fields.get('M', exc)}"


def run_main(main: Callable[[], int], prog: str = "") -> int:
    """Run a command: its own exit code, or for an expected error one line on stderr
    (`prog: error: …`) and `exit_code`. Anything else is a bug and keeps its traceback."""
    try:
        return main()
    except (BotError, *DATABASE_ERRORS) as exc:
        print(f"{prog}: {describe(exc)}" if prog else describe(exc), file=sys.stderr)
        return exit_code(exc)
