"""What every router of the conversation shares: reading untrusted update JSON, the reply the
webhook answers with, and the update's dedup record.

Updates come from the network: every field is checked for presence and type, and anything
unexpected is treated as an update the bot does not handle (recorded, no reply).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from shared import queue
from shared.db import Database
from shared.telegram import TelegramClient
from shared.texts import language_for, t

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_KIND_RE = re.compile(r"[a-z_]{1,40}")


@dataclass(frozen=True)
class MessageEdit:
    """Replace a gate message's text (or a photo's caption) and drop its buttons."""

    chat_id: int
    message_id: int
    text: str
    is_caption: bool


@dataclass(frozen=True)
class Reply:
    """What the webhook answers: `body` is one Bot API call (or None), `edit` a follow-up."""

    body: dict[str, Any] | None = None
    edit: MessageEdit | None = None


NO_REPLY = Reply()


@dataclass(frozen=True)
class Sender:
    """The private chat and user a message or press comes from."""

    chat_id: int
    user_id: int
    language: str


# --- Reading untrusted JSON ---


def int_of(obj: Any, key: str) -> int | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX:
        return value
    return None


def str_of(obj: Any, key: str) -> str | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, str) else None


def dict_of(obj: Any, key: str) -> dict[str, Any] | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, dict) else None


def clean(text: str) -> str:
    """Text PostgreSQL accepts: no NUL characters, no lone surrogates."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


def update_id_of(update: Any) -> int | None:
    """The update's id when `update` is an object with a 64-bit integer update_id."""
    return int_of(update, "update_id")


def update_kind(update: dict[str, Any]) -> str:
    """The update's kind (its first field besides update_id), for telegram_updates.kind."""
    for key in update:
        if key != "update_id":
            return key if _KIND_RE.fullmatch(key) else "unknown"
    return "unknown"


def private_sender(chat: dict[str, Any] | None, user: dict[str, Any] | None) -> Sender | None:
    """The sender of a private-chat update by a human, or None for anything else."""
    chat_id, user_id = int_of(chat, "id"), int_of(user, "id")
    if chat_id is None or user_id is None or user.get("is_bot") is True:
        return None
    if chat.get("type", "private") != "private":
        return None
    return Sender(chat_id, user_id, language_for(user.get("language_code")))


# --- Replies ---


def send(sender: Sender, key: str, **fmt: Any) -> Reply:
    return Reply(
        body={
            "method": "sendMessage",
            "chat_id": sender.chat_id,
            "text": t(key, sender.language, **fmt),
        }
    )


def answer(callback_query_id: str, text: str, edit: MessageEdit | None = None) -> Reply:
    """Answer a button press with a toast (stopping the client's spinner)."""
    body = {"method": "answerCallbackQuery", "callback_query_id": callback_query_id, "text": text}
    return Reply(body=body, edit=edit)


def perform_edit(telegram: TelegramClient, edit: MessageEdit) -> None:
    """Make a decisive press's follow-up edit, after the commit (the webhook and `poll`)."""
    if edit.is_caption:
        telegram.edit_message_caption(edit.chat_id, edit.message_id, edit.text)
    else:
        telegram.edit_message_text(edit.chat_id, edit.message_id, edit.text)


# --- The update's record ---


def record(db: Database, update_id: int, kind: str) -> bool:
    """Record the update; False when it was recorded before (a redelivery)."""
    return bool(db.run("record_update", update_id=update_id, kind=kind))


def record_message(db: Database, update_id: int, sender: Sender) -> bool:
    """Record a message; False for a redelivery. A message from a blocked chat unblocks it:
    the user is talking to the bot again. Run it inside the handler's transaction."""
    if not record(db, update_id, "message"):
        return False
    queue.unblock_chat(db, sender.chat_id)
    return True


def record_only(db: Database, update_id: int, kind: str) -> Reply:
    """Record an update the bot does nothing about, so a redelivery is recognised too."""
    record(db, update_id, kind)
    return NO_REPLY


def reply_if_new(db: Database, update_id: int, sender: Sender, key: str, **fmt: Any) -> Reply:
    """Record a message that needs only a text answer; a redelivery gets none."""
    with db.transaction():
        if not record_message(db, update_id, sender):
            return NO_REPLY
    return send(sender, key, **fmt)


def gate_is_open(db: Database, job: dict[str, Any], gate: str, message_id: int) -> bool:
    """The locked job waits at `gate` on this message, undecided, with no pending revision,
    in time."""
    if not (
        job["state"] == "waiting" and job["gate"] == gate and job["gate_message_id"] == message_id
    ):
        return False
    if job["gate_expired"]:
        return False
    decisions = db.one("gate_decisions", job_id=job["id"], gate=gate)
    return not (decisions["decided"] or decisions["revision_pending"])
