"""The conversation: one Telegram update in, one recorded transaction, one reply out.

`handle_update` records the update's id in `telegram_updates` in the same transaction as every
row it writes, so a redelivered update changes nothing and gets no reply. It returns a `Reply`:
the Bot API call to put in the webhook response body (sendMessage or answerCallbackQuery) and,
for a decisive button press only, the edit that removes the buttons (a gate's, or the "send
again" one), which the webhook makes after the commit.

Updates come from the network: every field is checked for presence and type, and anything
unexpected is treated as an update the bot does not handle (recorded, no reply). The handler is
total over dicts that carry an int `update_id`; only database errors escape it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from shared import queue
from shared.buttons import GatePress, ResendPress, parse_callback_data
from shared.config import Settings
from shared.db import Database
from shared.telegram import MAX_CAPTION_CHARS, MAX_TEXT_CHARS, TelegramClient, fit_text
from shared.texts import language_for, step_name, t

log = logging.getLogger(__name__)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
STATUS_JOB_COUNT = 5
STATUS_DESCRIPTION_CHARS = 40
_COMMAND_RE = re.compile(r"/([A-Za-z0-9_]{1,32})(?:@[A-Za-z0-9_]{1,64})?")
_KIND_RE = re.compile(r"[a-z_]{1,40}")
_DECISION_STATUS = {"approve": "approved", "cancel": "cancelled"}


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


def _int(obj: Any, key: str) -> int | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX:
        return value
    return None


def _str(obj: Any, key: str) -> str | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, str) else None


def _dict(obj: Any, key: str) -> dict[str, Any] | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, dict) else None


def _clean(text: str) -> str:
    """Text PostgreSQL accepts: no NUL characters, no lone surrogates."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


def update_id_of(update: Any) -> int | None:
    """The update's id when `update` is an object with a 64-bit integer update_id."""
    return _int(update, "update_id")


def update_kind(update: dict[str, Any]) -> str:
    """The update's kind (its first field besides update_id), for telegram_updates.kind."""
    for key in update:
        if key != "update_id":
            return key if _KIND_RE.fullmatch(key) else "unknown"
    return "unknown"


def _private_sender(chat: dict[str, Any] | None, user: dict[str, Any] | None) -> Sender | None:
    """The sender of a private-chat update by a human, or None for anything else."""
    chat_id, user_id = _int(chat, "id"), _int(user, "id")
    if chat_id is None or user_id is None or user.get("is_bot") is True:
        return None
    if chat.get("type", "private") != "private":
        return None
    return Sender(chat_id, user_id, language_for(user.get("language_code")))


def _send(sender: Sender, key: str, **fmt: Any) -> Reply:
    return Reply(body={"method": "sendMessage", "chat_id": sender.chat_id, "text": t(key, sender.language, **fmt)})


def _answer(callback_query_id: str, text: str, edit: MessageEdit | None = None) -> Reply:
    """Answer a button press with a toast (stopping the client's spinner)."""
    body = {"method": "answerCallbackQuery", "callback_query_id": callback_query_id, "text": text}
    return Reply(body=body, edit=edit)


def _record(db: Database, update_id: int, kind: str, chat_id: int | None = None) -> bool:
    """Record the update; False when it was recorded before (a redelivery)."""
    return bool(db.run("record_update", update_id=update_id, kind=kind, chat_id=chat_id))


def _record_only(db: Database, update_id: int, kind: str) -> Reply:
    """Record an update the bot does nothing about, so a redelivery is recognised too."""
    _record(db, update_id, kind)
    return NO_REPLY


def _reply_if_new(db: Database, update_id: int, sender: Sender, key: str, **fmt: Any) -> Reply:
    """Record a message that needs only a text answer; a redelivery gets none."""
    if not _record(db, update_id, "message", sender.chat_id):
        return NO_REPLY
    return _send(sender, key, **fmt)


# --- Entry point ---


def handle_update(db: Database, settings: Settings, update: dict[str, Any]) -> Reply:
    """Act on one update (its update_id already validated by `update_id_of`)."""
    update_id = update["update_id"]
    kind = update_kind(update)
    if kind == "message" and _dict(update, "message") is not None:
        return _on_message(db, settings, update_id, update["message"])
    if kind == "callback_query" and _dict(update, "callback_query") is not None:
        return _on_callback(db, settings, update_id, update["callback_query"])
    if kind == "my_chat_member" and _dict(update, "my_chat_member") is not None:
        return _on_chat_member(db, update_id, update["my_chat_member"])
    log.info("update ignored update_id=%s kind=%s", update_id, kind)
    return _record_only(db, update_id, kind)


# --- Messages ---


def _on_message(db: Database, settings: Settings, update_id: int, message: dict[str, Any]) -> Reply:
    sender = _private_sender(_dict(message, "chat"), _dict(message, "from"))
    if sender is None:
        log.info("message ignored update_id=%s reason=not_private_human", update_id)
        return _record_only(db, update_id, "message")
    if settings.allowed_user_ids and sender.user_id not in settings.allowed_user_ids:
        log.info("message refused update_id=%s chat=%s reason=not_allowed", update_id, sender.chat_id)
        return _reply_if_new(db, update_id, sender, "not_allowed")
    text = _str(message, "text")
    if text is None:
        return _reply_if_new(db, update_id, sender, "text_expected")
    text = _clean(text)
    command = _command(text)
    if command is not None:
        return _on_command(db, settings, update_id, sender, command)
    reply_to = _int(_dict(message, "reply_to_message"), "message_id")
    if reply_to is not None:
        job = db.one("job_for_gate_message", user_id=sender.user_id, chat_id=sender.chat_id, message_id=reply_to)
        if job is not None:
            return _on_script_edit(db, update_id, sender, job["id"], reply_to, text)
    return _on_description(db, settings, update_id, sender, text)


def _command(text: str) -> str | None:
    """'start' for '/start', '/start@VideoBot' or '/start payload'; None when not a command."""
    first_word = text.strip().split(maxsplit=1)[0] if text.strip() else ""
    match = _COMMAND_RE.fullmatch(first_word)
    return match.group(1).lower() if match else None


def _on_command(db: Database, settings: Settings, update_id: int, sender: Sender, command: str) -> Reply:
    max_chars = settings.max_description_chars
    if command == "start":
        return _reply_if_new(db, update_id, sender, "welcome", max_chars=max_chars)
    if command == "help":
        return _reply_if_new(db, update_id, sender, "help", max_chars=max_chars)
    if command == "status":
        return _on_status(db, update_id, sender)
    if command == "cancel":
        return _on_cancel(db, update_id, sender)
    return _reply_if_new(db, update_id, sender, "unknown_command")


def _on_status(db: Database, update_id: int, sender: Sender) -> Reply:
    if not _record(db, update_id, "message", sender.chat_id):
        return NO_REPLY
    jobs = db.run("recent_jobs", user_id=sender.user_id, limit=STATUS_JOB_COUNT)
    if not jobs:
        return _send(sender, "status_none")
    lines = [t("status_header", sender.language)]
    lines += [_status_line(job, sender.language) for job in jobs]
    return Reply(body={"method": "sendMessage", "chat_id": sender.chat_id, "text": "\n".join(lines)})


def _status_line(job: dict[str, Any], language: str) -> str:
    """'#12 "Morning in the mountains…" — waiting for you to approve the script'."""
    if job["state"] == "waiting":
        where = t(f"state_waiting_{job['gate']}", language)
    elif job["state"] == "running":
        where = t("state_running", language, step=step_name(job["step"], language))
    else:
        where = t(f"state_{job['state']}", language)
    description = fit_text(" ".join(job["description"].split()), STATUS_DESCRIPTION_CHARS)
    return t("status_line", language, job_id=job["id"], description=description, where=where)


def _on_cancel(db: Database, update_id: int, sender: Sender) -> Reply:
    with db.transaction():
        if not _record(db, update_id, "message", sender.chat_id):
            return NO_REPLY
        cancelled = queue.cancel_user_jobs(db, sender.user_id, "cancelled by the user")
    log.info("jobs cancelled update_id=%s chat=%s jobs=%s", update_id, sender.chat_id, cancelled)
    if not cancelled:
        return _send(sender, "nothing_to_cancel")
    return _send(sender, "cancelled_jobs", count=len(cancelled))


def _on_description(db: Database, settings: Settings, update_id: int, sender: Sender, text: str) -> Reply:
    description = text.strip()
    if not description:
        return _reply_if_new(db, update_id, sender, "description_empty")
    if len(description) > settings.max_description_chars:
        return _reply_if_new(
            db, update_id, sender, "description_too_long",
            length=len(description), max_chars=settings.max_description_chars,
        )
    row = db.one(
        "create_job_from_update",
        update_id=update_id,
        chat_id=sender.chat_id,
        user_id=sender.user_id,
        language=sender.language,
        description=description,
        max_attempts=settings.job_max_attempts,
        max_active=settings.max_active_jobs_per_user,
        max_per_day=settings.max_jobs_per_day,
    )
    outcome = row["outcome"]
    log.info("description update_id=%s chat=%s outcome=%s job=%s", update_id, sender.chat_id, outcome, row["job_id"])
    if outcome == "duplicate":
        return NO_REPLY
    if outcome == "created":
        return _send(sender, "job_accepted", job_id=row["job_id"])
    if outcome == "too_many_active":
        return _send(sender, "too_many_active", limit=settings.max_active_jobs_per_user)
    return _send(sender, "daily_limit", limit=settings.max_jobs_per_day)


def _on_script_edit(db: Database, update_id: int, sender: Sender, job_id: int, message_id: int, text: str) -> Reply:
    """A reply to the script gate message: the user's corrected script, for the worker."""
    script = text.strip()
    with db.transaction():
        if not _record(db, update_id, "message", sender.chat_id):
            return NO_REPLY
        job = db.one("lock_job", job_id=job_id)
        if job is None:
            return _send(sender, "edit_not_open")
        if job["gate"] == "storyboard" and job["state"] == "waiting":
            return _send(sender, "edit_only_script")
        if not script or not _gate_is_open(db, job, "script", message_id):
            return _send(sender, "edit_not_open")
        db.run("insert_revision", job_id=job_id, gate="script", kind="edit", text=script)
    log.info("script edit update_id=%s chat=%s job=%s", update_id, sender.chat_id, job_id)
    return _send(sender, "edit_accepted")


def _gate_is_open(db: Database, job: dict[str, Any], gate: str, message_id: int) -> bool:
    """The job waits at `gate` on this message, undecided, with no pending revision, in time."""
    if not (job["state"] == "waiting" and job["gate"] == gate and job["gate_message_id"] == message_id):
        return False
    if job["gate_expired"]:
        return False
    decisions = db.one("gate_decisions", job_id=job["id"], gate=gate)
    return not (decisions["decided"] or decisions["revision_pending"])


# --- Button presses ---


def _on_callback(db: Database, settings: Settings, update_id: int, callback: dict[str, Any]) -> Reply:
    callback_id = _str(callback, "id")
    message = _dict(callback, "message")
    user = _dict(callback, "from")
    user_id = _int(user, "id")
    chat_id = _int(_dict(message, "chat"), "id")
    message_id = _int(message, "message_id")
    if callback_id is None or user_id is None or chat_id is None or message_id is None:
        log.info("callback ignored update_id=%s reason=no_message", update_id)
        return _record_only(db, update_id, "callback_query")
    language = language_for(user.get("language_code"))
    press = parse_callback_data(callback.get("data"))
    refusal = None
    if settings.allowed_user_ids and user_id not in settings.allowed_user_ids:
        refusal = "not_allowed"
    elif press is None:
        refusal = "press_invalid"
    if refusal is not None:
        if not _record(db, update_id, "callback_query"):
            return NO_REPLY
        log.info("press refused update_id=%s chat=%s reason=%s", update_id, chat_id, refusal)
        return _answer(callback_id, t(refusal, language))
    resend = isinstance(press, ResendPress)
    with db.transaction():
        if not _record(db, update_id, "callback_query"):
            return NO_REPLY
        outcome = _resend(db, press, user_id) if resend else _decide(db, press, user_id, message_id)
    action = "resend" if resend else press.action
    log.info("press update_id=%s chat=%s job=%s gate=%s action=%s outcome=%s",
             update_id, chat_id, press.job_id, "-" if resend else press.gate, action, outcome)
    if outcome != "accepted":
        return _answer(callback_id, t(outcome, language))
    edit = _decision_edit(message, chat_id, message_id, t(f"decided_{action}", language))
    return _answer(callback_id, t(f"pressed_{action}", language), edit)


def _decide(db: Database, press: GatePress, user_id: int, message_id: int) -> str:
    """Write the press's row if the presser owns the job and its gate is open.

    Returns 'accepted', or the text key of the refusal to show.
    """
    job = db.one("lock_job", job_id=press.job_id)
    if job is None:
        return "press_invalid"
    if job["user_id"] != user_id:
        return "press_not_yours"
    if job["state"] in queue.FINAL_STATES:
        return "press_job_closed"
    if not _gate_is_open(db, job, press.gate, message_id):
        decisions = db.one("gate_decisions", job_id=press.job_id, gate=press.gate)
        return "press_already_decided" if decisions["decided"] or decisions["revision_pending"] else "press_expired"
    if press.action == "regenerate":
        written = db.run("insert_revision", job_id=press.job_id, gate=press.gate, kind="regenerate", text=None)
    else:
        written = queue.decide(db, press.job_id, press.gate, _DECISION_STATUS[press.action], "user")
    return "accepted" if written else "press_already_decided"


def _resend(db: Database, press: ResendPress, user_id: int) -> str:
    """Ask the worker to send the video again, if the presser owns the job and its delivery is
    unknown; the worker uploads it, never the webhook. Returns 'accepted', or the text key of
    the refusal to show."""
    job = db.one("lock_job", job_id=press.job_id)
    if job is None:
        return "press_invalid"
    if job["user_id"] != user_id:
        return "press_not_yours"
    if queue.request_resend(db, press.job_id, "user"):
        return "accepted"
    if job["state"] == "cancelled":
        return "press_job_closed"
    delivery = db.one("delivery_state", id=press.job_id)
    if job["state"] == "running" and delivery is not None and delivery["state"] == "unknown":
        return "resend_busy"
    return "resend_not_needed"


def _decision_edit(message: dict[str, Any], chat_id: int, message_id: int, decision: str) -> MessageEdit:
    """The gate message with the decision appended and no buttons (a photo: its caption)."""
    is_caption = "photo" in message or ("caption" in message and "text" not in message)
    original = _str(message, "caption" if is_caption else "text") or ""
    limit = MAX_CAPTION_CHARS if is_caption else MAX_TEXT_CHARS
    budget = limit - len(decision.encode("utf-16-le")) // 2 - 2
    text = f"{fit_text(_clean(original), budget)}\n\n{decision}" if original.strip() else decision
    return MessageEdit(chat_id=chat_id, message_id=message_id, text=text, is_caption=is_caption)


def perform_edit(telegram: TelegramClient, edit: MessageEdit) -> None:
    """Make a decisive press's follow-up edit, after the commit (the webhook and `poll`)."""
    if edit.is_caption:
        telegram.edit_message_caption(edit.chat_id, edit.message_id, edit.text)
    else:
        telegram.edit_message_text(edit.chat_id, edit.message_id, edit.text)


# --- Chat membership ---


def _on_chat_member(db: Database, update_id: int, member_update: dict[str, Any]) -> Reply:
    """The user blocked the bot (kicked: cancel their jobs, block the chat) or came back."""
    sender = _private_sender(_dict(member_update, "chat"), _dict(member_update, "from"))
    status = _str(_dict(member_update, "new_chat_member"), "status")
    if sender is None or status not in ("kicked", "member"):
        return _record_only(db, update_id, "my_chat_member")
    with db.transaction():
        if not _record(db, update_id, "my_chat_member"):
            return NO_REPLY
        if status == "kicked":
            cancelled = queue.cancel_user_jobs(db, sender.user_id, "the user blocked the bot")
            db.run("block_chat", chat_id=sender.chat_id)
            log.info("chat blocked update_id=%s chat=%s cancelled=%s", update_id, sender.chat_id, cancelled)
        else:
            db.run("unblock_chat", chat_id=sender.chat_id)
            log.info("chat unblocked update_id=%s chat=%s", update_id, sender.chat_id)
    return NO_REPLY
