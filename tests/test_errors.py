"""The exception tree and its one mapping to exit codes, shared by manage.py, the worker and
migrate: every error we raise on purpose has one root and one kind, and each kind one code."""

from __future__ import annotations

import pg8000.native
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.config import ConfigError
from shared.db import DatabaseUrlError
from shared.errors import (
    EXIT_CANNOT_RUN,
    EXIT_REFUSED,
    BotError,
    ConfigurationError,
    JobStopped,
    OutcomeUnknown,
    OwnerActionNeeded,
    PermanentError,
    TransientError,
    Unavailable,
    describe,
    exit_code,
    run_main,
)
from shared.operator.demo import DemoError
from shared.operator.ops import OperatorError
from shared.pipeline.job import CancelRequested
from shared.pipeline.render import RenderInterrupted, RenderRejected, _ffmpeg_failure
from shared.providers.openai import RequestRefused
from shared.queue import LeaseLost
from shared.telegram import ChatBlocked, RateLimited, TelegramError

KINDS = (TransientError, PermanentError, ConfigurationError, JobStopped)
EXPECTED_CODES = {
    ConfigError: EXIT_CANNOT_RUN,
    DatabaseUrlError: EXIT_CANNOT_RUN,
    Unavailable: EXIT_CANNOT_RUN,
    OutcomeUnknown: EXIT_CANNOT_RUN,
    RateLimited: EXIT_CANNOT_RUN,
    RenderInterrupted: EXIT_CANNOT_RUN,
    OwnerActionNeeded: EXIT_CANNOT_RUN,
    OperatorError: EXIT_REFUSED,
    TelegramError: EXIT_REFUSED,
    ChatBlocked: EXIT_REFUSED,
    RequestRefused: EXIT_REFUSED,
    RenderRejected: EXIT_REFUSED,
    DemoError: EXIT_REFUSED,
    LeaseLost: EXIT_REFUSED,
    CancelRequested: EXIT_REFUSED,
}


def every_bot_error() -> list[type[BotError]]:
    seen: list[type[BotError]] = []
    stack: list[type[BotError]] = [BotError]
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(sub for sub in cls.__subclasses__() if sub not in seen)
    return seen


def instance(cls: type[BaseException], message: str = "it went wrong") -> BaseException:
    """An instance whatever the constructor wants: the message set without calling __init__."""
    exc = cls.__new__(cls)
    exc.args = (message,)
    return exc


@pytest.mark.parametrize("cls", list(EXPECTED_CODES), ids=lambda cls: cls.__name__)
def test_every_project_error_has_one_root_and_one_kind(cls: type[Exception]) -> None:
    assert issubclass(cls, BotError)
    assert sum(issubclass(cls, kind) for kind in KINDS) == 1


@pytest.mark.parametrize(
    ("cls", "code"),
    list(EXPECTED_CODES.items()),
    ids=lambda value: getattr(value, "__name__", str(value)),
)
def test_each_kind_maps_to_its_exit_code(cls: type[Exception], code: int) -> None:
    assert exit_code(instance(cls)) == code


def test_every_class_in_the_tree_has_a_documented_code() -> None:
    for cls in every_bot_error():
        assert exit_code(instance(cls)) in (EXIT_REFUSED, EXIT_CANNOT_RUN), cls


def test_jobs_stopped_are_neither_retried_nor_failed() -> None:
    for cls in (LeaseLost, CancelRequested):
        assert not issubclass(cls, (TransientError, PermanentError))


@pytest.mark.parametrize(
    "exc",
    [
        pg8000.native.InterfaceError("gone"),
        ConnectionRefusedError(111, "refused"),
        pg8000.native.DatabaseError({"C": "42P01", "M": "no relation"}),
    ],
)
def test_database_errors_mean_the_command_cannot_run(exc: Exception) -> None:
    assert exit_code(exc) == EXIT_CANNOT_RUN


def test_an_undefined_table_says_to_migrate() -> None:
    exc = pg8000.native.DatabaseError({"C": "42P01", "M": 'relation "jobs" does not exist'})
    assert describe(exc) == (
        "error: the schema has no tables yet: run `python manage.py migrate` "
        '(relation "jobs" does not exist)'
    )


@given(st.sampled_from(every_bot_error()), st.text())
def test_run_main_prints_one_line_and_the_mapped_code(cls: type[BotError], message: str) -> None:
    exc = instance(cls, message)

    def fails() -> int:
        raise exc

    lines: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stderr", _Lines(lines))
        assert run_main(fails, prog="worker") == exit_code(exc)
    printed = "".join(lines)
    assert printed.endswith("\n") and printed.count("\n") == 1 and "\r" not in printed
    assert printed.startswith(
        "worker: configuration error: "
        if isinstance(exc, ConfigurationError)
        else "worker: error: "
    )
    assert "Traceback" not in printed


def test_run_main_passes_the_command_code_through_and_a_bug_up() -> None:
    assert run_main(lambda: 0) == 0

    def bug() -> int:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        run_main(bug)


@pytest.mark.parametrize(
    ("returncode", "log_tail", "kind"),
    [
        (-9, "frame= 100", RenderInterrupted),
        (1, "[libx264] Cannot allocate memory", RenderInterrupted),
        (1, "av_interleaved_write_frame(): No space left on device", RenderInterrupted),
        (1, "scene_1.png: Invalid data found when processing input", RenderRejected),
        (183, "Error opening output file", RenderRejected),
    ],
)
def test_render_failures_are_classified(
    returncode: int, log_tail: str, kind: type[BotError]
) -> None:
    error = _ffmpeg_failure(returncode, 900, log_tail)
    assert type(error) is kind and log_tail in str(error)


class _Lines:
    """A stand-in for sys.stderr that keeps what print writes."""

    def __init__(self, lines: list[str]) -> None:
        self._lines = lines

    def write(self, text: str) -> int:
        self._lines.append(text)
        return len(text)

    def flush(self) -> None:
        pass
