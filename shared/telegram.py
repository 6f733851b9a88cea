"""A thin Telegram Bot API client: one method per call the bot makes, plus `call` for the rest.

Calls go to `{api_base}/bot{token}/{method}`. Transient failures (429 with
`parameters.retry_after`, 5xx, network errors) are retried by `shared.http`; everything else
that Telegram refuses becomes a final `TelegramError`. The token never reaches a log line or an
exception message.

A 429 is about the bot, not one request: its `retry_after` pauses that method for every client
of the same bot in this process. A call during a pause waits it out when it is short (up to the
retry policy's `max_delay`) and raises `RateLimited` at once when it is longer, so that the
caller can skip it (a progress edit) or reschedule its work (a delivery). Other worker
processes learn of the limit by their own 429.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import threading
import time
from pathlib import Path
from typing import Any, Callable

import requests

from shared.errors import PermanentError, TransientError
from shared.http import HttpClient, RetryPolicy, UploadFile, retry_after_seconds

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 4096
MAX_CAPTION_CHARS = 1024
MAX_CALLBACK_ANSWER_CHARS = 200
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024  # getFile's limit for bots on api.telegram.org
ELLIPSIS = "…"
_BLOCKED_DESCRIPTIONS = ("bot was blocked by the user", "user is deactivated")
_NOT_MODIFIED = "message is not modified"


class TelegramError(PermanentError):
    """Telegram refused a call for good (bad request, unauthorized, not found...)."""

    def __init__(self, method: str, error_code: int, description: str) -> None:
        super().__init__(f"telegram {method} failed: {error_code} {description}")
        self.method = method
        self.error_code = error_code
        self.description = description


class ChatBlocked(TelegramError):
    """The user blocked the bot or deleted their account: stop sending to this chat."""


class RateLimited(TransientError):
    """Telegram asked the bot to wait `retry_after` seconds before this kind of call again.
    The call was not made, or was answered 429: either way, it did not take effect."""


class _Pauses:
    """Until when each method of one bot is paused, shared by the threads of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}

    def pause(self, method: str, seconds: float) -> None:
        with self._lock:
            until = time.monotonic() + seconds
            self._until[method] = max(until, self._until.get(method, 0.0))

    def left(self, method: str | None = None) -> float:
        """Seconds until `method` (None: every method) may be called again; 0 when it may."""
        now = time.monotonic()
        with self._lock:
            ends = [self._until.get(method, 0.0)] if method else list(self._until.values())
        return max([end - now for end in ends] + [0.0])


_PAUSES: dict[str, _Pauses] = {}
_PAUSES_LOCK = threading.Lock()


def _pauses_of(bot_url: str) -> _Pauses:
    with _PAUSES_LOCK:
        return _PAUSES.setdefault(bot_url, _Pauses())


def fit_text(text: str, limit: int) -> str:
    """Cut `text` to at most `limit` UTF-16 code units (how Telegram counts), ending with '…'.

    Counting UTF-16 units is never more lenient than counting characters, and the cut never
    splits a surrogate pair, so the result is always accepted as long as `limit` is.
    """
    if utf16_len(text) <= limit:
        return text
    budget = limit - utf16_len(ELLIPSIS)
    kept: list[str] = []
    used = 0
    for char in text:
        width = utf16_len(char)
        if used + width > budget:
            break
        kept.append(char)
        used += width
    return "".join(kept).rstrip() + ELLIPSIS


def utf16_len(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


class TelegramClient:
    """Calls the Bot API for one bot token."""

    def __init__(
        self,
        token: str,
        api_base: str = "https://api.telegram.org",
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float = 30.0,
        policy: RetryPolicy | None = None,
    ) -> None:
        if not token:
            raise ValueError("a Telegram bot token is required")
        self._base = f"{api_base.rstrip('/')}/bot{token}"
        self._file_base = f"{api_base.rstrip('/')}/file/bot{token}"
        self._sleep = sleep
        self._pauses = _pauses_of(self._base)
        session = session or requests.Session()
        session.hooks["response"].append(self._note_rate_limit)
        self._http = HttpClient(
            service="telegram",
            secrets=(token,),
            session=session,
            sleep=sleep,
            timeout=timeout,
            policy=policy or RetryPolicy(),
        )

    def paused_for(self, method: str | None = None) -> float:
        """Seconds left of the bot's pause of `method` (None: of any method); 0 when none."""
        return self._pauses.left(method)

    def _note_rate_limit(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """Every 429, also one `shared.http` retries by itself, pauses its method at once."""
        if response.status_code == 429:
            method = response.url.rsplit("/", 1)[-1]
            seconds = retry_after_seconds(response) or 1.0
            self._pauses.pause(method, seconds)
            log.warning("telegram rate limited method=%s retry_after=%.1f", method, seconds)

    def call(
        self,
        method: str,
        *,
        files: dict[str, UploadFile] | None = None,
        http_timeout: float | None = None,
        idempotent: bool = True,
        best_effort: bool = False,
        **params: Any,
    ) -> Any:
        """Call `method` with `params` (None values are left out); return Telegram's `result`.

        Without files the parameters go as a JSON body; with files, as multipart form fields
        (objects such as `reply_markup` JSON-encoded, as the Bot API expects). `http_timeout`
        overrides the client's timeout for this call. A call that must not happen twice
        (`idempotent=False`, sending a video) raises `OutcomeUnknown` when no answer comes back
        once it may have arrived. A `best_effort` call (a progress edit) is tried once and never
        waits for a pause. Raises `RateLimited` when Telegram keeps asking the bot to wait
        (429s past the retry policy's attempts) or asks for longer than its `max_delay`, and
        for a `best_effort` call, when it asks to wait at all.
        """
        params = {name: value for name, value in params.items() if value is not None}
        chat = params.get("chat_id", "-")
        self._wait_for_pause(method, chat, patient=not best_effort)
        log.debug("telegram call method=%s chat=%s files=%s", method, chat, sorted(files or ()))
        url = f"{self._base}/{method}"
        policy = RetryPolicy(max_attempts=1) if best_effort else None
        try:
            if files:
                response = self._http.request(
                    "POST",
                    url,
                    label=method,
                    form=_form_fields(params),
                    files=files,
                    timeout=http_timeout,
                    idempotent=idempotent,
                    policy=policy,
                )
            else:
                response = self._http.request(
                    "POST",
                    url,
                    label=method,
                    json_body=params,
                    timeout=http_timeout,
                    idempotent=idempotent,
                    policy=policy,
                )
        except TransientError as exc:
            if exc.retry_after is None:  # 5xx, no connection, OutcomeUnknown: as they are
                raise
            error = exc  # the 429s paused `method` already (_note_rate_limit)
        else:
            return self._result(method, chat, response)
        raise RateLimited(str(error), retry_after=error.retry_after)

    def _wait_for_pause(self, method: str, chat: Any, *, patient: bool) -> None:
        """Sleep out a short pause of `method`; raise `RateLimited` for a long one."""
        left = self._pauses.left(method)
        if left <= 0:
            return
        if not patient or left > self._http.policy.max_delay:
            raise RateLimited(f"telegram {method}: paused for {left:.1f}s", retry_after=left)
        log.info("telegram waits out a pause method=%s chat=%s seconds=%.1f", method, chat, left)
        self._sleep(left)

    def _result(self, method: str, chat: Any, response: requests.Response) -> Any:
        """Telegram's `result` on `ok: true`; otherwise raise the matching `TelegramError`."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {"description": f"non-JSON response with HTTP {response.status_code}"}
        if body.get("ok") is True:
            return body.get("result")
        error_code = int(body.get("error_code") or response.status_code)
        description = self._http.redact(str(body.get("description", "")))
        error_class = ChatBlocked if _is_blocked(error_code, description) else TelegramError
        log.log(
            logging.INFO if _NOT_MODIFIED in description else logging.WARNING,
            "telegram error method=%s chat=%s error_code=%s description=%s",
            method,
            chat,
            error_code,
            description,
        )
        raise error_class(method, error_code, description)

    def get_me(self) -> dict[str, Any]:
        return self.call("getMe")

    def send_message(
        self,
        chat_id: int | str,
        text: str,
        *,
        reply_markup: dict[str, Any] | None = None,
        reply_to_message_id: int | None = None,
        parse_mode: str | None = None,
        best_effort: bool = False,
    ) -> dict[str, Any]:
        return self.call(
            "sendMessage",
            best_effort=best_effort,
            chat_id=chat_id,
            text=fit_text(text, MAX_TEXT_CHARS),
            reply_markup=reply_markup,
            reply_parameters=(
                {"message_id": reply_to_message_id, "allow_sending_without_reply": True}
                if reply_to_message_id is not None
                else None
            ),
            parse_mode=parse_mode,
        )

    def edit_message_text(
        self,
        chat_id: int | str,
        message_id: int,
        text: str,
        *,
        reply_markup: dict[str, Any] | None = None,
        parse_mode: str | None = None,
        best_effort: bool = False,
    ) -> dict[str, Any] | None:
        """Edit a message's text; return the edited message, or None if nothing changed."""
        return self._edit(
            "editMessageText",
            best_effort=best_effort,
            chat_id=chat_id,
            message_id=message_id,
            text=fit_text(text, MAX_TEXT_CHARS),
            reply_markup=reply_markup,
            parse_mode=parse_mode,
        )

    def edit_message_caption(
        self,
        chat_id: int | str,
        message_id: int,
        caption: str,
        *,
        reply_markup: dict[str, Any] | None = None,
        parse_mode: str | None = None,
    ) -> dict[str, Any] | None:
        """Edit a photo/video caption; return the edited message, or None if nothing changed."""
        return self._edit(
            "editMessageCaption",
            chat_id=chat_id,
            message_id=message_id,
            caption=fit_text(caption, MAX_CAPTION_CHARS),
            reply_markup=reply_markup,
            parse_mode=parse_mode,
        )

    def edit_message_reply_markup(
        self,
        chat_id: int | str,
        message_id: int,
        reply_markup: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Replace (or with None, remove) the inline keyboard; None if nothing changed."""
        return self._edit(
            "editMessageReplyMarkup",
            chat_id=chat_id,
            message_id=message_id,
            reply_markup=reply_markup,
        )

    def _edit(self, method: str, **params: Any) -> dict[str, Any] | None:
        """Telegram answers 400 "message is not modified" to a no-op edit: that is success."""
        try:
            return self.call(method, **params)
        except TelegramError as exc:
            if exc.error_code == 400 and _NOT_MODIFIED in exc.description:
                return None
            raise

    def send_photo(
        self,
        chat_id: int | str,
        photo: Path,
        *,
        caption: str | None = None,
        reply_markup: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return self.call(
            "sendPhoto",
            files={"photo": _upload(photo)},
            chat_id=chat_id,
            caption=fit_text(caption, MAX_CAPTION_CHARS) if caption is not None else None,
            reply_markup=reply_markup,
        )

    def send_video(
        self,
        chat_id: int | str,
        video: Path,
        *,
        duration: float,
        width: int,
        height: int,
        thumbnail: Path | None = None,
        caption: str | None = None,
        reply_markup: dict[str, Any] | None = None,
        supports_streaming: bool = True,
    ) -> dict[str, Any]:
        """Upload a video; the thumbnail goes as its own part, referenced by `attach://`.

        Never sent twice by this call: once the upload may have arrived, a lost answer raises
        `OutcomeUnknown` (only 429/5xx answers, which mean "not sent", are retried)."""
        files = {"video": _upload(video)}
        if thumbnail is not None:
            files["thumbnail"] = _upload(thumbnail)
        return self.call(
            "sendVideo",
            files=files,
            idempotent=False,
            chat_id=chat_id,
            duration=max(1, round(duration)),
            width=width,
            height=height,
            thumbnail="attach://thumbnail" if thumbnail is not None else None,
            caption=fit_text(caption, MAX_CAPTION_CHARS) if caption is not None else None,
            reply_markup=reply_markup,
            supports_streaming=supports_streaming,
        )

    def send_chat_action(self, chat_id: int | str, action: str) -> bool:
        """Show "uploading…" and the like; skipped (False) while the method is paused."""
        if self.paused_for("sendChatAction"):
            return False
        return self.call("sendChatAction", chat_id=chat_id, action=action)

    def answer_callback_query(
        self, callback_query_id: str, text: str | None = None, show_alert: bool = False
    ) -> bool:
        return self.call(
            "answerCallbackQuery",
            callback_query_id=callback_query_id,
            text=fit_text(text, MAX_CALLBACK_ANSWER_CHARS) if text is not None else None,
            show_alert=show_alert,
        )

    def get_updates(
        self,
        offset: int | None = None,
        timeout: int = 0,
        allowed_updates: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Long-poll for updates; the HTTP timeout is stretched past the poll `timeout`."""
        return self.call(
            "getUpdates",
            http_timeout=self._http.timeout + timeout,
            offset=offset,
            timeout=timeout,
            allowed_updates=allowed_updates,
        )

    def set_webhook(
        self,
        url: str,
        secret_token: str,
        allowed_updates: list[str],
        drop_pending_updates: bool = False,
    ) -> bool:
        return self.call(
            "setWebhook",
            url=url,
            secret_token=secret_token,
            allowed_updates=allowed_updates,
            drop_pending_updates=drop_pending_updates,
        )

    def delete_webhook(self, drop_pending_updates: bool = False) -> bool:
        return self.call("deleteWebhook", drop_pending_updates=drop_pending_updates)

    def get_webhook_info(self) -> dict[str, Any]:
        return self.call("getWebhookInfo")

    # ---- files a user sent (a spoken description) -------------------------------------------

    def get_file(self, file_id: str) -> dict[str, Any]:
        """The File object (file_id, file_unique_id, file_size, file_path) of a file a user
        sent; Telegram refuses files over MAX_DOWNLOAD_BYTES ("file is too big")."""
        return self.call("getFile", file_id=file_id)

    def download_file(self, file_path: str) -> bytes:
        """The bytes at `file_path` (from `get_file`). The URL holds the token, so only the
        path is ever logged; a 404 (an expired path) is a `TelegramError`."""
        response = self._http.request(
            "GET", f"{self._file_base}/{file_path}", label=f"file {file_path}"
        )
        if not response.ok:
            raise TelegramError(
                "download", response.status_code, self._http.redact(response.reason or "")
            )
        log.info("telegram file downloaded path=%s bytes=%d", file_path, len(response.content))
        return response.content


def _is_blocked(error_code: Any, description: str) -> bool:
    lowered = description.lower()
    return error_code == 403 and any(phrase in lowered for phrase in _BLOCKED_DESCRIPTIONS)


def _form_fields(params: dict[str, Any]) -> dict[str, str]:
    """Multipart form values are strings: objects and lists as JSON, booleans lower-case."""
    fields: dict[str, str] = {}
    for name, value in params.items():
        if isinstance(value, (dict, list)):
            fields[name] = json.dumps(value, ensure_ascii=False)
        elif isinstance(value, bool):
            fields[name] = "true" if value else "false"
        else:
            fields[name] = str(value)
    return fields


def _upload(path: Path) -> UploadFile:
    path = Path(path)
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return UploadFile(filename=path.name, path=path, content_type=content_type)
