"""A small retrying HTTP helper shared by the Telegram and OpenAI clients.

It retries what may pass by itself (timeouts, connection errors, 429, 5xx) with capped
exponential backoff and jitter, honouring the delay the server asked for. Everything it logs or
raises goes through `redact`, because the Telegram token is part of every URL and requests puts
URLs into its exception messages.
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

from shared.errors import PermanentError, TransientError

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


def is_retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


@dataclass
class HttpClient:
    """Sends one logical request, retrying transient failures; never leaks `secrets`.

    `service` names the remote side in logs and errors ("telegram", "openai"); callers pass a
    `label` per request (a method name or path, never a full URL).
    """

    service: str
    secrets: tuple[str, ...] = ()
    session: requests.Session = field(default_factory=requests.Session)
    sleep: Callable[[float], None] = time.sleep
    timeout: float = 30.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    rand: Callable[[], float] = random.random

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
    ) -> requests.Response:
        """Send the request; return the first response that is not 429/5xx.

        Raises `TransientError` when attempts run out (carrying the server's `retry_after`), and
        `PermanentError` when the request cannot be sent at all (e.g. a malformed URL).
        """
        attempt = 0
        while True:
            attempt += 1
            failure: requests.RequestException | None = None
            try:
                response = self._send_once(
                    method, url, json_body, form, files, headers, timeout or self.timeout
                )
            except requests.RequestException as exc:
                failure = exc
            # Raise only outside the `except` block: the requests exception (with the secret in
            # its URL) must not even ride along as __context__.
            if isinstance(failure, (requests.Timeout, requests.ConnectionError)):
                reason = f"{type(failure).__name__}: {self.redact(str(failure))}"
                self._retry_or_raise(label, attempt, reason, retry_after=None)
                continue
            if failure is not None:
                raise PermanentError(
                    f"{self.service} {label}: request failed: "
                    f"{type(failure).__name__}: {self.redact(str(failure))}"
                )
            if not is_retryable_status(response.status_code):
                return response
            reason = f"status={response.status_code} body={self._snippet(response)}"
            self._retry_or_raise(label, attempt, reason, retry_after_seconds(response))

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
                    name: (upload.filename, stack.enter_context(upload.path.open("rb")),
                           upload.content_type)
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
        self, label: str, attempt: int, reason: str, retry_after: float | None
    ) -> None:
        """Sleep before the next attempt, or raise `TransientError` if we should stop now."""
        attempts = self.policy.max_attempts
        gives_up = attempt >= attempts or (
            retry_after is not None and retry_after > self.policy.max_delay
        )
        if gives_up:
            log.warning(
                "http giving up service=%s label=%s attempt=%d/%d retry_after=%s reason=%s",
                self.service, label, attempt, attempts, retry_after, reason,
            )
            raise TransientError(
                f"{self.service} {label}: failed after {attempt} attempt(s): {reason}",
                retry_after=retry_after,
            )
        delay = retry_after if retry_after is not None else self.policy.backoff(attempt, self.rand)
        log.warning(
            "http retry service=%s label=%s attempt=%d/%d delay=%.2f reason=%s",
            self.service, label, attempt, attempts, delay, reason,
        )
        self.sleep(delay)

    def _snippet(self, response: requests.Response, limit: int = 200) -> str:
        """A short, redacted, single-line piece of the body for logs and error messages."""
        try:
            text = json.dumps(response.json(), ensure_ascii=False)
        except ValueError:
            text = response.text
        return self.redact(" ".join(text.split()))[:limit]
