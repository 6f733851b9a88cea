"""A local Telegram Bot API server for tests and the demo.

It answers `/bot<token>/<method>` like api.telegram.org does: GET query, urlencoded, JSON and
multipart requests; `{"ok": true, "result": ...}` or `{"ok": false, "error_code": ...,
"description": ...}` with Telegram's own error texts for the limits the bot must respect. It
records every call, keeps uploaded files, can queue updates for `getUpdates` or deliver them to
a webhook, and injects faults: error answers (`fail_next`, `block_chat`), answers lost after the
call took effect (`drop_next`), and both at random for soak runs (`random_faults`).
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import logging
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict, deque
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Callable
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError

from localapi import BadBody, LocalServer, Reply, Request, UploadedFile, parse_form

log = logging.getLogger(__name__)

DEFAULT_TOKEN = "123456:LOCAL-test-token"
MAX_TEXT_UNITS = 4096
MAX_CAPTION_UNITS = 1024
MAX_CALLBACK_DATA_BYTES = 64
MAX_CALLBACK_ANSWER_CHARS = 200
UPLOAD_LIMIT_BYTES = 50 * 1024 * 1024
DOWNLOAD_LIMIT_BYTES = 20 * 1024 * 1024  # getFile: "bots can download files of up to 20MB"
# Where Telegram keeps a user's file of each kind (the folder of its file_path), and the
# extension it gives it.
FILE_FOLDERS = {
    "voice": ("voice", "oga"),
    "audio": ("music", "mp3"),
    "video_note": ("video_notes", "mp4"),
    "video": ("videos", "mp4"),
    "photo": ("photos", "jpg"),
}
WEBHOOK_TIMEOUT_SECONDS = 10.0
CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
PARSE_MODES = frozenset({"HTML", "Markdown", "MarkdownV2"})
_PATH_RE = re.compile(r"^/bot(?P<token>[^/]+)/(?P<method>[A-Za-z]+)$")
_FILE_PATH_RE = re.compile(r"^/file/bot(?P<token>[^/]+)/(?P<path>.+)$")
_SECRET_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_INT_FIELDS = (
    "chat_id",
    "message_id",
    "duration",
    "width",
    "height",
    "offset",
    "limit",
    "timeout",
    "reply_to_message_id",
    "max_connections",
)
_BOOL_FIELDS = ("supports_streaming", "show_alert", "drop_pending_updates")
_JSON_FIELDS = ("reply_markup", "allowed_updates", "reply_parameters")
_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)


class ApiError(Exception):
    """An error answer: HTTP status = `error_code`, Telegram's `description`."""

    def __init__(self, status: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.status,
            "description": self.description,
        }
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


@dataclass(frozen=True)
class RecordedCall:
    """One API call as the server saw it: normalized params, uploaded files and the answer."""

    method: str
    params: dict[str, Any]
    files: dict[str, UploadedFile]
    status: int
    response: dict[str, Any]
    at: float
    dropped: bool = False  # the call took effect but its answer never left the server


@dataclass(frozen=True)
class _Fault:
    status: int
    description: str
    retry_after: int | None


@dataclass(frozen=True)
class _RandomFaults:
    rate: float
    statuses: tuple[int, ...]
    retry_after: int
    methods: frozenset[str] | None
    drop_uploads: float
    rng: random.Random


@dataclass
class _Webhook:
    url: str
    secret_token: str
    allowed_updates: list[str]
    max_connections: int
    last_error_date: int | None = None
    last_error_message: str | None = None


def _bot_id(token: str) -> int:
    """A bot's user id is the number before the colon of its token."""
    prefix = token.split(":", 1)[0]
    return int(prefix) if prefix.isdigit() else 1


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _default_description(status: int, retry_after: int | None) -> str:
    if status == 429:
        return f"Too Many Requests: retry after {retry_after}"
    if status == 403:
        return "Forbidden: bot was blocked by the user"
    return HTTPStatus(status).phrase


class TelegramServer(LocalServer):
    """A Bot API server for one bot `token`; see the module docstring."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        upload_limit_bytes: int = UPLOAD_LIMIT_BYTES,
        first_update_id: int = 1,
    ) -> None:
        super().__init__(host, port)
        self.token = token
        self.upload_limit_bytes = upload_limit_bytes
        self.bot_user = {
            "id": _bot_id(token),
            "is_bot": True,
            "first_name": "Local Video Bot",
            "username": "local_video_bot",
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self._lock = threading.Condition()
        self._calls: list[RecordedCall] = []
        self._faults: dict[str, deque[_Fault]] = defaultdict(deque)
        self._drops: dict[str, int] = defaultdict(int)
        self._random_faults: _RandomFaults | None = None
        self._fault_counts: dict[str, int] = defaultdict(int)
        self._blocked_chats: set[int] = set()
        self._messages: dict[tuple[int, int], dict[str, Any]] = {}
        self._last_message_id: dict[int, int] = defaultdict(int)
        self._files: dict[str, UploadedFile] = {}
        self._file_kinds: dict[str, str] = {}
        self._file_paths: dict[str, str] = {}
        self._file_numbers = itertools.count(1)
        self._updates: list[dict[str, Any]] = []
        self._next_update_id = first_update_id
        self._webhook: _Webhook | None = None
        self._observers: list[Callable[[RecordedCall], None]] = []
        self._methods: dict[str, tuple[str, Callable[..., Any]]] = {
            name.lower(): (name, handler)
            for name, handler in {
                "getMe": self._get_me,
                "sendMessage": self._send_message,
                "editMessageText": self._edit_message_text,
                "editMessageCaption": self._edit_message_caption,
                "editMessageReplyMarkup": self._edit_message_reply_markup,
                "sendPhoto": self._send_photo,
                "sendVideo": self._send_video,
                "sendChatAction": self._send_chat_action,
                "answerCallbackQuery": self._answer_callback_query,
                "getUpdates": self._get_updates,
                "setWebhook": self._set_webhook,
                "deleteWebhook": self._delete_webhook,
                "getWebhookInfo": self._get_webhook_info,
                "getFile": self._get_file,
            }.items()
        }

    # ---- test and demo controls -------------------------------------------------------------

    @property
    def calls(self) -> list[RecordedCall]:
        """A snapshot of every call so far, oldest first."""
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str) -> list[RecordedCall]:
        return [call for call in self.calls if call.method == method]

    def wait_for(
        self,
        method: str,
        predicate: Callable[[RecordedCall], bool] | None = None,
        timeout: float = 5.0,
    ) -> RecordedCall:
        """The first recorded call to `method` matching `predicate`, waiting up to `timeout`."""

        def first_match() -> RecordedCall | None:
            return next(
                (
                    call
                    for call in self._calls
                    if call.method == method and (predicate is None or predicate(call))
                ),
                None,
            )

        with self._lock:
            found = self._lock.wait_for(first_match, timeout=timeout)
            if found is None:
                seen = [call.method for call in self._calls]
                raise TimeoutError(f"no matching {method} call within {timeout}s; calls: {seen}")
            return found

    def fail_next(
        self,
        method: str,
        status: int = 500,
        *,
        retry_after: int | None = None,
        description: str | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next `times` calls to `method` with an error (429 carries retry_after)."""
        if status == 429 and retry_after is None:
            retry_after = 1
        fault = _Fault(
            status,
            description or _default_description(status, retry_after),
            retry_after if status == 429 else None,
        )
        with self._lock:
            self._faults[method.lower()].extend([fault] * times)

    def drop_next(self, method: str, times: int = 1) -> None:
        """Carry out the next `times` calls to `method` (a sendVideo IS recorded as sent, with its
        message_id), then close the connection without answering: the client gets a
        `requests.ConnectionError` and cannot tell whether the call took effect."""
        with self._lock:
            self._drops[method.lower()] += times

    def random_faults(
        self,
        rate: float,
        *,
        statuses: tuple[int, ...] = (429, 502),
        retry_after: int = 1,
        methods: tuple[str, ...] | None = None,
        drop_uploads: float = 0.0,
        seed: int | None = None,
    ) -> None:
        """From now on, answer a `rate` fraction of calls (to `methods`, default every method)
        with an error drawn from `statuses` (429 carries `retry_after`), and drop the answer to
        a `drop_uploads` fraction of the sendVideo calls that get through, as `drop_next` does.
        `random_faults(0)` turns them off. Requests arrive on concurrent threads, so `seed` fixes
        the draws, not which call gets which one."""
        with self._lock:
            self._random_faults = _RandomFaults(
                rate=rate,
                statuses=tuple(statuses),
                retry_after=retry_after,
                methods=frozenset(m.lower() for m in methods) if methods is not None else None,
                drop_uploads=drop_uploads,
                rng=random.Random(seed),
            )

    @property
    def fault_counts(self) -> dict[str, int]:
        """Faults injected so far by kind: the HTTP status as a string ("429", "502", ...) for
        error answers, "dropped" for answers never sent (blocked chats are not counted)."""
        with self._lock:
            return dict(self._fault_counts)

    def videos_by_chat(self) -> dict[int, int]:
        """How many videos each chat received: sendVideo calls that succeeded, including those
        whose answer was dropped (the user has the video even though the bot never heard)."""
        counts: dict[int, int] = defaultdict(int)
        for call in self.calls_to("sendVideo"):
            if call.status == 200:
                counts[call.params["chat_id"]] += 1
        return dict(counts)

    def chat_messages(self, chat_id: int) -> list[dict[str, Any]]:
        """The current state of every message the bot has in `chat_id`, oldest first."""
        with self._lock:
            return [
                copy.deepcopy(message)
                for (chat, _), message in sorted(self._messages.items())
                if chat == chat_id and message["from"]["id"] == self.bot_user["id"]
            ]

    def block_chat(self, chat_id: int) -> None:
        """From now on, every call aimed at `chat_id` answers 403 "bot was blocked by the user"."""
        with self._lock:
            self._blocked_chats.add(int(chat_id))

    def on_call(self, callback: Callable[[RecordedCall], None]) -> None:
        """Call `callback(call)` after every API call (from the server's request thread)."""
        with self._lock:
            self._observers.append(callback)

    def file_content(self, file_id: str) -> bytes:
        """The bytes of an uploaded photo, video or thumbnail, by its `file_id`."""
        with self._lock:
            return self._files[file_id].content

    def message(self, chat_id: int, message_id: int) -> dict[str, Any]:
        """The current state of a message the bot sent or a user wrote."""
        with self._lock:
            return copy.deepcopy(self._messages[(chat_id, message_id)])

    def push_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue an update (an `update_id` is assigned if missing) and return it.

        With a webhook set, the update is delivered at once from the calling thread; if the
        webhook does not answer 2xx it stays pending (see `deliver_pending`).
        """
        with self._lock:
            update = dict(update)
            if "update_id" not in update:
                update["update_id"] = self._next_update_id
            self._next_update_id = max(self._next_update_id, update["update_id"] + 1)
            self._updates.append(update)
            self._lock.notify_all()
            webhook = self._webhook
        if webhook is not None:
            self.deliver_pending()
        return update

    def push_message(
        self,
        chat_id: int,
        text: str,
        *,
        user_id: int | None = None,
        first_name: str = "Tester",
        language_code: str = "en",
    ) -> dict[str, Any]:
        """Queue a user's text message in a private chat (a /command gets its entity)."""
        user = {
            "id": user_id or chat_id,
            "is_bot": False,
            "first_name": first_name,
            "language_code": language_code,
        }
        with self._lock:
            message = self._new_message(chat_id, {"from": user, "text": text})
        if text.startswith("/"):
            command = text.split(maxsplit=1)[0]
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        return self.push_update({"message": message})

    def push_callback_query(
        self,
        chat_id: int,
        message_id: int,
        data: str,
        *,
        user_id: int | None = None,
        language_code: str = "en",
    ) -> dict[str, Any]:
        """Queue a press of an inline button with `data` under the bot's message."""
        with self._lock:
            message = copy.deepcopy(self._messages[(chat_id, message_id)])
            query_id = f"cbq-{next(self._file_numbers)}"
        user = {
            "id": user_id or chat_id,
            "is_bot": False,
            "first_name": "Tester",
            "language_code": language_code,
        }
        return self.push_update(
            {
                "callback_query": {
                    "id": query_id,
                    "from": user,
                    "message": message,
                    "chat_instance": str(chat_id),
                    "data": data,
                }
            }
        )

    def deliver_pending(self) -> int:
        """POST pending updates to the webhook in order; return how many were accepted."""
        delivered = 0
        while True:
            with self._lock:
                webhook = self._webhook
                if webhook is None or not self._updates:
                    return delivered
                update = self._updates[0]
            if not self._post_to_webhook(webhook, update):
                return delivered
            with self._lock:
                if self._updates and self._updates[0] is update:
                    self._updates.pop(0)
            delivered += 1

    # ---- files users send (spoken descriptions) ----------------------------------------------

    def add_file(self, content: bytes, kind: str = "voice", filename: str | None = None) -> str:
        """Keep a file a user sent (a voice message, an audio file, a video note); return its
        file_id, for `push_voice` and `getFile`."""
        folder, extension = FILE_FOLDERS[kind]
        with self._lock:
            number = next(self._file_numbers)
            file_id = f"local-{kind}-{number}"
            self._files[file_id] = UploadedFile(filename or f"{kind}.{extension}", content)
            self._file_kinds[file_id] = kind
        return file_id

    def push_voice(
        self,
        chat_id: int,
        file_id: str,
        duration: int,
        *,
        kind: str = "voice",
        file_size: int | None = None,
        user_id: int | None = None,
        language_code: str = "en",
    ) -> dict[str, Any]:
        """Queue a user's voice message (or `kind` "audio" or "video_note") carrying the file
        `add_file` returned; `file_size` overrides the real size (Telegram may leave it out:
        pass 0 to omit it)."""
        with self._lock:
            upload = self._files[file_id]
            size = len(upload.content) if file_size is None else file_size
            media: dict[str, Any] = {
                "file_id": file_id,
                "file_unique_id": f"u{file_id}",
                "duration": duration,
            }
            if kind == "voice":
                media["mime_type"] = "audio/ogg"
            elif kind == "audio":
                media.update(mime_type="audio/mpeg", file_name=upload.filename)
            else:
                media["length"] = 240
            if size:
                media["file_size"] = size
            user = {
                "id": user_id or chat_id,
                "is_bot": False,
                "first_name": "Tester",
                "language_code": language_code,
            }
            message = self._new_message(chat_id, {"from": user, kind: media})
        return self.push_update({"message": message})

    def _get_file(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> dict[str, Any]:
        """The File object; the file_path stays valid for the server's life (an hour or more
        on Telegram)."""
        file_id = str(_required(params, "file_id"))
        upload = self._files.get(file_id)
        if upload is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        if len(upload.content) > DOWNLOAD_LIMIT_BYTES:
            raise ApiError(400, "Bad Request: file is too big")
        if file_id not in self._file_paths.values():
            folder, extension = FILE_FOLDERS[self._file_kinds.get(file_id, "photo")]
            self._file_paths[f"{folder}/file_{next(self._file_numbers)}.{extension}"] = file_id
        path = next(path for path, known in self._file_paths.items() if known == file_id)
        return {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "file_size": len(upload.content),
            "file_path": path,
        }

    def _download(self, token: str, path: str) -> Reply:
        """GET /file/bot<token>/<file_path>: the bytes, or Telegram's 404 for anything else."""
        params = {"file_path": path}
        try:
            self._raise_injected_fault("downloadFile", params)
        except ApiError as error:
            return self._record("downloadFile", params, {}, error.status, error.payload())
        with self._lock:
            file_id = self._file_paths.get(path) if token == self.token else None
            content = self._files[file_id].content if file_id is not None else None
        if content is None:
            return self._record(
                "downloadFile", params, {}, 404, ApiError(404, "Not Found").payload()
            )
        self._record("downloadFile", params, {}, 200, {"ok": True, "bytes": len(content)})
        return Reply(200, content, "application/octet-stream")

    # ---- HTTP entry point ---------------------------------------------------------------------

    def handle(self, request: Request) -> Reply:
        download = _FILE_PATH_RE.match(request.path)
        if download is not None and request.method == "GET":
            return self._download(download["token"], download["path"])
        match = _PATH_RE.match(request.path)
        if match is None:
            return Reply.json(404, ApiError(404, "Not Found").payload())
        if match["token"] != self.token:
            return Reply.json(401, ApiError(401, "Unauthorized").payload())
        known = self._methods.get(match["method"].lower())
        if known is None:
            return Reply.json(404, ApiError(404, "Not Found").payload())
        method, handler = known
        try:
            params, files = parse_form(request)
            params = _normalize(params)
        except (BadBody, ApiError) as exc:
            error = exc if isinstance(exc, ApiError) else ApiError(400, f"Bad Request: {exc}")
            return self._record(method, {}, {}, error.status, error.payload())
        return self._dispatch(method, handler, params, files)

    def _dispatch(
        self,
        method: str,
        handler: Callable[[dict[str, Any], dict[str, UploadedFile]], Any],
        params: dict[str, Any],
        files: dict[str, UploadedFile],
    ) -> Reply:
        try:
            self._raise_injected_fault(method, params)
        except ApiError as error:
            return self._record(method, params, files, error.status, error.payload())
        drop = self._take_drop(method)
        try:
            with self._lock:
                result = copy.deepcopy(handler(params, files))
        except ApiError as error:
            return self._record(method, params, files, error.status, error.payload(), drop)
        return self._record(method, params, files, 200, {"ok": True, "result": result}, drop)

    def _record(
        self,
        method: str,
        params: dict[str, Any],
        files: dict[str, UploadedFile],
        status: int,
        payload: dict[str, Any],
        dropped: bool = False,
    ) -> Reply:
        call = RecordedCall(method, params, files, status, payload, time.time(), dropped)
        with self._lock:
            self._calls.append(call)
            self._lock.notify_all()
            observers = list(self._observers)
        for observer in observers:
            observer(call)
        return Reply.no_answer() if dropped else Reply.json(status, payload)

    def _raise_injected_fault(self, method: str, params: dict[str, Any]) -> None:
        with self._lock:
            queue = self._faults.get(method.lower())
            fault = queue.popleft() if queue else self._random_fault(method)
            if fault is not None:
                self._fault_counts[str(fault.status)] += 1
                raise ApiError(fault.status, fault.description, fault.retry_after)
            if params.get("chat_id") in self._blocked_chats:
                raise ApiError(403, "Forbidden: bot was blocked by the user")

    def _random_fault(self, method: str) -> _Fault | None:
        chance = self._random_faults
        if chance is None or (chance.methods is not None and method.lower() not in chance.methods):
            return None
        if chance.rng.random() >= chance.rate:
            return None
        status = chance.rng.choice(chance.statuses)
        retry_after = chance.retry_after if status == 429 else None
        return _Fault(status, _default_description(status, retry_after), retry_after)

    def _take_drop(self, method: str) -> bool:
        """Whether the answer to this call is to be dropped (counted as a fault when it is)."""
        with self._lock:
            key = method.lower()
            chance = self._random_faults
            if self._drops[key] > 0:
                self._drops[key] -= 1
            elif not (
                key == "sendvideo"
                and chance is not None
                and chance.rng.random() < chance.drop_uploads
            ):
                return False
            self._fault_counts["dropped"] += 1
            return True

    # ---- messages -----------------------------------------------------------------------------

    def _new_message(self, chat_id: int, content: dict[str, Any]) -> dict[str, Any]:
        """Store a new message in `chat_id` with the next message_id of that chat."""
        self._last_message_id[chat_id] += 1
        message_id = self._last_message_id[chat_id]
        message = {
            "message_id": message_id,
            "from": self.bot_user,
            "chat": _chat(chat_id),
            "date": int(time.time()),
            **content,
        }
        self._messages[(chat_id, message_id)] = message
        return message

    def _stored_message(self, params: dict[str, Any]) -> dict[str, Any]:
        key = (_required(params, "chat_id"), _required(params, "message_id"))
        message = self._messages.get(key)
        if message is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        return message

    def _get_me(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> dict[str, Any]:
        return self.bot_user

    def _send_message(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> dict[str, Any]:
        chat_id = _required(params, "chat_id")
        text = _checked_text(params.get("text"))
        content: dict[str, Any] = {"text": text}
        content.update(_markup_content(params))
        _check_parse_mode(params)
        reply_to = _reply_to_id(params)
        if reply_to is not None and (chat_id, reply_to) in self._messages:
            content["reply_to_message"] = self._messages[(chat_id, reply_to)]
        return self._new_message(chat_id, content)

    def _edit_message_text(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> dict[str, Any]:
        message = self._stored_message(params)
        if "text" not in message:
            raise ApiError(400, "Bad Request: there is no text in the message to edit")
        text = _checked_text(params.get("text"))
        _check_parse_mode(params)
        return self._apply_edit(message, {"text": text, **_markup_content(params)})

    def _edit_message_caption(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> dict[str, Any]:
        message = self._stored_message(params)
        if "text" in message:
            raise ApiError(400, "Bad Request: there is no caption in the message to edit")
        caption = _checked_caption(params.get("caption"))
        return self._apply_edit(message, {"caption": caption, **_markup_content(params)})

    def _edit_message_reply_markup(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> dict[str, Any]:
        return self._apply_edit(self._stored_message(params), _markup_content(params))

    def _apply_edit(self, message: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        """Apply an edit; a missing reply_markup removes the keyboard, as on Telegram."""
        changes.setdefault("reply_markup", None)
        if all(message.get(name) == value for name, value in changes.items()):
            raise ApiError(400, _NOT_MODIFIED)
        for name, value in changes.items():
            if value is None:
                message.pop(name, None)
            else:
                message[name] = value
        message["edit_date"] = int(time.time())
        return message

    # ---- media --------------------------------------------------------------------------------

    def _send_photo(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> dict[str, Any]:
        chat_id = _required(params, "chat_id")
        upload = self._input_file(params, files, "photo")
        content = {"photo": self._photo_sizes(upload), **_caption_content(params)}
        return self._new_message(chat_id, content)

    def _send_video(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> dict[str, Any]:
        chat_id = _required(params, "chat_id")
        upload = self._input_file(params, files, "video")
        if len(upload.content) > self.upload_limit_bytes:
            raise ApiError(413, "Request Entity Too Large")
        video: dict[str, Any] = {
            "duration": int(params.get("duration") or 0),
            "width": int(params.get("width") or 0),
            "height": int(params.get("height") or 0),
            "file_name": upload.filename,
            "mime_type": "video/mp4",
            **self._store_file("video", upload),
        }
        if "thumbnail" in params or "thumbnail" in files:
            video["thumbnail"] = self._photo_sizes(self._input_file(params, files, "thumbnail"))[-1]
        content = {"video": video, **_caption_content(params)}
        return self._new_message(chat_id, content)

    def _input_file(
        self, params: dict[str, Any], files: dict[str, UploadedFile], name: str
    ) -> UploadedFile:
        """The file for field `name`: its own part, an `attach://<part>` or a known file_id."""
        if name in files:
            return files[name]
        value = params.get(name)
        if not isinstance(value, str) or not value:
            raise ApiError(400, f"Bad Request: there is no {name} in the request")
        if value.startswith("attach://"):
            part = value.removeprefix("attach://")
            if part not in files:
                raise ApiError(400, f"Bad Request: file {value} is not attached")
            return files[part]
        if value in self._files:
            return self._files[value]
        raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")

    def _store_file(self, kind: str, upload: UploadedFile) -> dict[str, Any]:
        number = next(self._file_numbers)
        file_id = f"local-{kind}-{number}"
        self._files[file_id] = upload
        return {
            "file_id": file_id,
            "file_unique_id": f"u{kind}{number}",
            "file_size": len(upload.content),
        }

    def _photo_sizes(self, upload: UploadedFile) -> list[dict[str, Any]]:
        """PhotoSize objects, smallest first, for an uploaded image (Telegram decodes it too)."""
        try:
            with Image.open(io.BytesIO(upload.content)) as image:
                width, height = image.size
        except (UnidentifiedImageError, OSError):
            raise ApiError(400, "Bad Request: IMAGE_PROCESS_FAILED") from None
        scale = min(1.0, 90 / max(width, height))
        small = {"width": max(1, round(width * scale)), "height": max(1, round(height * scale))}
        return [
            {**self._store_file("photo", upload), **small},
            {**self._store_file("photo", upload), "width": width, "height": height},
        ]

    # ---- other methods ------------------------------------------------------------------------

    def _send_chat_action(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> bool:
        _required(params, "chat_id")
        if params.get("action") not in CHAT_ACTIONS:
            raise ApiError(400, "Bad Request: wrong parameter action in request")
        return True

    def _answer_callback_query(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> bool:
        if not params.get("callback_query_id"):
            raise ApiError(400, 'Bad Request: parameter "callback_query_id" is required')
        if len(str(params.get("text") or "")) > MAX_CALLBACK_ANSWER_CHARS:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        return True

    def _get_updates(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> list[dict[str, Any]]:
        """Confirm updates below `offset`, then long-poll up to `timeout` seconds for more."""
        offset = params.get("offset")
        limit = min(100, max(1, int(params.get("limit") or 100)))
        deadline = time.monotonic() + max(0, int(params.get("timeout") or 0))
        with self._lock:
            if self._webhook is not None:
                raise ApiError(
                    409,
                    "Conflict: can't use getUpdates method while webhook is "
                    "active; use deleteWebhook to delete the webhook first",
                )
            if isinstance(offset, int) and offset > 0:
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
            while not self._updates and self._lock.wait(max(0.0, deadline - time.monotonic())):
                pass
            updates = self._updates
            if isinstance(offset, int) and offset < 0:
                updates = updates[offset:]
            allowed = params.get("allowed_updates") or []
            return [u for u in updates if not allowed or _update_type(u) in allowed][:limit]

    def _set_webhook(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> bool:
        url = str(params.get("url") or "")
        if not url:
            return self._delete_webhook(params, files)
        _check_webhook_url(url)
        secret_token = str(params.get("secret_token") or "")
        if secret_token and not _SECRET_TOKEN_RE.match(secret_token):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        if params.get("drop_pending_updates"):
            self._updates.clear()
        self._webhook = _Webhook(
            url=url,
            secret_token=secret_token,
            allowed_updates=list(params.get("allowed_updates") or []),
            max_connections=int(params.get("max_connections") or 40),
        )
        return True

    def _delete_webhook(self, params: dict[str, Any], files: dict[str, UploadedFile]) -> bool:
        if params.get("drop_pending_updates"):
            self._updates.clear()
        self._webhook = None
        return True

    def _get_webhook_info(
        self, params: dict[str, Any], files: dict[str, UploadedFile]
    ) -> dict[str, Any]:
        webhook = self._webhook
        info: dict[str, Any] = {
            "url": webhook.url if webhook else "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if webhook is not None:
            info["max_connections"] = webhook.max_connections
            if webhook.allowed_updates:
                info["allowed_updates"] = webhook.allowed_updates
            if webhook.last_error_date is not None:
                info["last_error_date"] = webhook.last_error_date
                info["last_error_message"] = webhook.last_error_message
        return info

    # ---- webhook delivery ---------------------------------------------------------------------

    def _post_to_webhook(self, webhook: _Webhook, update: dict[str, Any]) -> bool:
        """POST one update; True on 2xx. A JSON reply with "method" is executed as a call."""
        if webhook.allowed_updates and _update_type(update) not in webhook.allowed_updates:
            return True
        request = urllib.request.Request(
            webhook.url,
            data=json.dumps(update, ensure_ascii=False).encode(),
            headers={
                "Content-Type": "application/json",
                "X-Telegram-Bot-Api-Secret-Token": webhook.secret_token,
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            self._webhook_failed(
                webhook, f"Wrong response from the webhook: {exc.code} {exc.reason}"
            )
            return False
        except (urllib.error.URLError, OSError) as exc:
            self._webhook_failed(webhook, f"Connection failed: {exc}")
            return False
        self._run_webhook_reply(body)
        return True

    def _webhook_failed(self, webhook: _Webhook, message: str) -> None:
        log.warning("telegram webhook delivery failed error=%s", message)
        with self._lock:
            webhook.last_error_date = int(time.time())
            webhook.last_error_message = message

    def _run_webhook_reply(self, body: bytes) -> None:
        """Telegram executes a webhook reply like {"method": "sendMessage", ...} as a call."""
        try:
            reply = json.loads(body) if body.strip() else None
        except ValueError:
            return
        if not isinstance(reply, dict) or "method" not in reply:
            return
        params = dict(reply)
        known = self._methods.get(str(params.pop("method")).lower())
        if known is not None:
            self._dispatch(known[0], known[1], _normalize(params), {})


def _normalize(params: dict[str, Any]) -> dict[str, Any]:
    """Give form-encoded values the types a JSON body would have."""
    params = dict(params)
    for name in _INT_FIELDS:
        value = params.get(name)
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            params[name] = int(value)
    for name in _BOOL_FIELDS:
        if isinstance(params.get(name), str):
            params[name] = params[name].strip().lower() in ("true", "1")
    for name in _JSON_FIELDS:
        if isinstance(params.get(name), str) and params[name]:
            try:
                params[name] = json.loads(params[name])
            except ValueError:
                raise ApiError(400, f"Bad Request: can't parse {name} JSON object") from None
    return params


def _required(params: dict[str, Any], name: str) -> Any:
    value = params.get(name)
    if value is None or value == "":
        raise ApiError(
            400,
            f"Bad Request: {name} is empty" if name != "chat_id" else "Bad Request: chat not found",
        )
    return value


def _checked_text(text: Any) -> str:
    text = "" if text is None else str(text)
    if not text.strip():
        raise ApiError(400, "Bad Request: message text is empty")
    if _utf16_len(text) > MAX_TEXT_UNITS:
        raise ApiError(400, "Bad Request: message is too long")
    return text


def _checked_caption(caption: Any) -> str:
    caption = "" if caption is None else str(caption)
    if _utf16_len(caption) > MAX_CAPTION_UNITS:
        raise ApiError(400, "Bad Request: message caption is too long")
    return caption


def _check_parse_mode(params: dict[str, Any]) -> None:
    mode = params.get("parse_mode")
    if mode and mode not in PARSE_MODES:
        raise ApiError(400, f"Bad Request: unsupported parse_mode {mode}")


def _caption_content(params: dict[str, Any]) -> dict[str, Any]:
    content = _markup_content(params)
    caption = _checked_caption(params.get("caption"))
    if caption:
        content["caption"] = caption
    return content


def _markup_content(params: dict[str, Any]) -> dict[str, Any]:
    """The `reply_markup` a message will show, validated like Telegram validates it."""
    markup = params.get("reply_markup")
    if not markup:
        return {}
    if not isinstance(markup, dict):
        raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
    keyboard = markup.get("inline_keyboard")
    if keyboard is None:
        return {}
    if not isinstance(keyboard, list) or not all(isinstance(row, list) for row in keyboard):
        raise ApiError(
            400,
            'Bad Request: field "inline_keyboard" of the InlineKeyboardMarkup '
            "must be an Array of Arrays",
        )
    for button in itertools.chain.from_iterable(keyboard):
        if not isinstance(button, dict) or not button.get("text"):
            raise ApiError(400, "Bad Request: text buttons are unallowed in the inline keyboard")
        data = button.get("callback_data")
        if data is not None and not 1 <= len(str(data).encode()) <= MAX_CALLBACK_DATA_BYTES:
            raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
    return {"reply_markup": {"inline_keyboard": keyboard}}


def _reply_to_id(params: dict[str, Any]) -> int | None:
    reply_parameters = params.get("reply_parameters")
    if isinstance(reply_parameters, dict) and "message_id" in reply_parameters:
        return int(reply_parameters["message_id"])
    return params.get("reply_to_message_id")


def _chat(chat_id: int) -> dict[str, Any]:
    if isinstance(chat_id, int) and chat_id > 0:
        return {"id": chat_id, "type": "private", "first_name": "Tester"}
    return {"id": chat_id, "type": "group", "title": f"Group {chat_id}"}


def _update_type(update: dict[str, Any]) -> str:
    return next((key for key in update if key != "update_id"), "")


def _check_webhook_url(url: str) -> None:
    """Telegram wants HTTPS on 443/80/88/8443; plain HTTP to loopback is allowed for local use."""
    parts = urlsplit(url)
    loopback = parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")
    if loopback:
        return
    if parts.scheme != "https" or not parts.hostname:
        raise ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
    if (parts.port or 443) not in (443, 80, 88, 8443):
        raise ApiError(
            400, "Bad Request: bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443"
        )
