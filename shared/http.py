"""A small retrying HTTP helper shared by the Telegram and OpenAI clients.

It retries what may pass by itself (timeouts, connection errors, 429, 5xx) with capped
exponential backoff and jitter, honouring the delay the server asked for and its
`x-should-retry` header. An optional time budget bounds a whole request, retries and sleeps
included. Everything it logs or raises goes through `redact`, because the Telegram token is part
of every URL and requests puts URLs into its exception messages.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple
from urllib.parse import quote

import requests
import urllib3

from shared.errors import OutcomeUnknown, PermanentError, TransientError

log = logging.getLogger(__name__)

REDACTED = "***"


def redact(text: str, secrets: Iterable[str]) -> str:
    """Return `text` with every non-empty secret (also in its URL-quoted form) replaced."""
    for secret in secrets:
        if not secret:
            continue
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            text = text.replace(form, REDACTED)
    return text


class _RedactingFilter(logging.Filter):
    """Redacts registered secrets from records of a third-party logger.

    urllib3 logs every request line, URL path included, at DEBUG level; with the Telegram token
    in the path that would leak the token whenever debug logging is on.
    """

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_URLLIB3_FILTER = _RedactingFilter()
logging.getLogger("urllib3.connectionpool").addFilter(_URLLIB3_FILTER)


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to try a request and how long to wait in between.

    A server-requested delay longer than `max_delay` is not slept through: the helper raises
    `TransientError(retry_after=...)` at once so the caller can reschedule the work instead.
    """

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0

    def backoff(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Delay before attempt `attempt + 1`: capped exponential with "equal jitter"."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return ceiling / 2 + rand() * ceiling / 2


class UploadFile(NamedTuple):
    """A file to send as one multipart part; it is reopened on every attempt."""

    filename: str
    path: Path
    content_type: str


def retry_after_seconds(response: requests.Response) -> float | None:
    """The delay the server asked for: `Retry-After` header, or a JSON body's `retry_after`.

    Telegram puts it at `parameters.retry_after`; some APIs put it at the top level.
    """
    header = response.headers.get("Retry-After")
    if header:
        seconds = _parse_retry_after_header(header)
        if seconds is not None:
            return seconds
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    parameters = body.get("parameters")
    candidates = [parameters.get("retry_after")] if isinstance(parameters, dict) else []
    candidates.append(body.get("retry_after"))
    for value in candidates:
        if isinstance(value, (int, float)) and value >= 0:
            return float(value)
    return None


def _parse_retry_after_header(value: str) -> float | None:
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _never_sent(failure: requests.RequestException) -> bool:
    """True when the request failed before a connection was made, so it cannot have arrived."""
    if isinstance(failure, requests.ConnectTimeout):
        return True
    cause = failure.args[0] if failure.args else None
    cause = getattr(cause, "reason", cause)  # urllib3's MaxRetryError wraps the real error
    return isinstance(cause, urllib3.exceptions.NewConnectionError)


def is_retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


def should_retry(response: requests.Response) -> bool:
    """Whether to send the request again after `response`.

    The server's `x-should-retry: true|false` decides when present (OpenAI sends it; its SDK obeys
    it both ways); otherwise 429 and 5xx are retried.
    """
    header = response.headers.get("x-should-retry", "").strip().lower()
    if header in ("true", "false"):
        return header == "true"
    return is_retryable_status(response.status_code)


@dataclass
class HttpClient:
    """Sends one logical request, retrying transient failures; never leaks `secrets`.

    `service` names the remote side in logs and errors ("telegram", "openai"); callers pass a
    `label` per request (a method name or path, never a full URL). `timeout` bounds one attempt;
    `total_timeout`, when set, bounds the whole request: each attempt gets at most the time left,
    no backoff sleep runs past it, and `TransientError` is raised once it is spent. `retryable`
    decides which responses are sent again (a client may refuse to retry e.g. an exhausted quota).
    """

    service: str
    secrets: tuple[str, ...] = ()
    session: requests.Session = field(default_factory=requests.Session)
    sleep: Callable[[float], None] = time.sleep
    timeout: float = 30.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    rand: Callable[[], float] = random.random
    total_timeout: float | None = None
    retryable: Callable[[requests.Response], bool] = should_retry

    def __post_init__(self) -> None:
        _URLLIB3_FILTER.secrets.update(secret for secret in self.secrets if secret)

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)

    def request(
        self,
        method: str,
        url: str,
        *,
        label: str,
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
        files: Mapping[str, UploadFile] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        idempotent: bool = True,
        policy: RetryPolicy | None = None,
    ) -> requests.Response:
        """Send the request; return the first response that should not be retried.

        Raises `TransientError` when attempts or the time budget run out (carrying the server's
        `retry_after`), and `PermanentError` when the request cannot be sent at all (e.g. a
        malformed URL). A request that is not `idempotent` is never repeated once it may have
        reached the server: a broken connection or a read timeout after connecting raises
        `OutcomeUnknown` at once. `policy` overrides the client's retry policy for this request.
        """
        policy = policy or self.policy
        deadline = None if self.total_timeout is None else time.monotonic() + self.total_timeout
        attempt = 0
        while True:
            attempt += 1
            attempt_timeout = timeout or self.timeout
            if deadline is not None:
                attempt_timeout = min(attempt_timeout, deadline - time.monotonic())
                if attempt_timeout <= 0:
                    raise TransientError(
                        f"{self.service} {label}: time budget of {self.total_timeout:g}s spent "
                        f"before attempt {attempt}"
                    )
            failure: requests.RequestException | None = None
            try:
                response = self._send_once(
                    method, url, json_body, form, files, headers, attempt_timeout
                )
            except requests.RequestException as exc:
                failure = exc
            # Raise only outside the `except` block: the requests exception (with the secret in
            # its URL) must not even ride along as __context__.
            if isinstance(failure, (requests.Timeout, requests.ConnectionError)):
                reason = f"{type(failure).__name__}: {self.redact(str(failure))}"
                if not idempotent and not _never_sent(failure):
                    log.warning(
                        "http outcome unknown service=%s label=%s reason=%s",
                        self.service,
                        label,
                        reason,
                    )
                    raise OutcomeUnknown(f"{self.service} {label}: no answer: {reason}")
                self._retry_or_raise(label, attempt, reason, None, policy, deadline)
                continue
            if failure is not None:
                raise PermanentError(
                    f"{self.service} {label}: request failed: "
                    f"{type(failure).__name__}: {self.redact(str(failure))}"
                )
            if not self.retryable(response):
                return response
            reason = f"status={response.status_code} body={self._snippet(response)}"
            self._retry_or_raise(
                label, attempt, reason, retry_after_seconds(response), policy, deadline
            )

    def _send_once(
        self,
        method: str,
        url: str,
        json_body: Any,
        form: Mapping[str, str] | None,
        files: Mapping[str, UploadFile] | None,
        headers: Mapping[str, str] | None,
        timeout: float,
    ) -> requests.Response:
        with contextlib.ExitStack() as stack:
            parts = None
            if files:
                parts = {
                    name: (
                        upload.filename,
                        stack.enter_context(upload.path.open("rb")),
                        upload.content_type,
                    )
                    for name, upload in files.items()
                }
            return self.session.request(
                method,
                url,
                json=json_body,
                data=form,
                files=parts,
                headers=dict(headers or {}),
                timeout=timeout,
            )

    def _retry_or_raise(
        self,
        label: str,
        attempt: int,
        reason: str,
        retry_after: float | None,
        policy: RetryPolicy,
        deadline: float | None,
    ) -> None:
        """Sleep before the next attempt, or raise `TransientError` if we should stop now."""
        attempts = policy.max_attempts
        delay = retry_after if retry_after is not None else policy.backoff(attempt, self.rand)
        out_of_time = deadline is not None and time.monotonic() + delay >= deadline
        gives_up = (
            out_of_time
            or attempt >= attempts
            or (retry_after is not None and retry_after > policy.max_delay)
        )
        if gives_up:
            log.warning(
                "http giving up service=%s label=%s attempt=%d/%d retry_after=%s "
                "out_of_time=%s reason=%s",
                self.service,
                label,
                attempt,
                attempts,
                retry_after,
                out_of_time,
                reason,
            )
            budget = f" (time budget of {self.total_timeout:g}s spent)" if out_of_time else ""
            raise TransientError(
                f"{self.service} {label}: failed after {attempt} attempt(s){budget}: {reason}",
                retry_after=retry_after,
            )
        log.warning(
            "http retry service=%s label=%s attempt=%d/%d delay=%.2f reason=%s",
            self.service,
            label,
            attempt,
            attempts,
            delay,
            reason,
        )
        self.sleep(delay)

    def _snippet(self, response: requests.Response, limit: int = 200) -> str:
        """A short, redacted, single-line piece of the body for logs and error messages."""
        try:
            text = json.dumps(response.json(), ensure_ascii=False)
        except ValueError:
            text = response.text
        return self.redact(" ".join(text.split()))[:limit]
