"""The router for button presses: a gate's ✅ / 🔁 / ❌ and the 📤 "send again" under a video
whose delivery is unknown. A press writes only through the queue (a decision row, a revision,
a resend request), after checking that the presser owns the job and the button still counts."""

from __future__ import annotations

import logging
from typing import Any

from shared import queue
from shared.bot.updates import (
    NO_REPLY,
    MessageEdit,
    Reply,
    answer,
    clean,
    dict_of,
    gate_is_open,
    int_of,
    record,
    record_only,
    str_of,
)
from shared.buttons import GatePress, ResendPress, parse_callback_data
from shared.config import Settings
from shared.db import Database
from shared.telegram import MAX_CAPTION_CHARS, MAX_TEXT_CHARS, fit_text, utf16_len
from shared.texts import language_for, t

log = logging.getLogger(__name__)

_DECISION_STATUS = {"approve": "approved", "cancel": "cancelled"}


def on_callback(
    db: Database, settings: Settings, update_id: int, callback: dict[str, Any]
) -> Reply:
    callback_id = str_of(callback, "id")
    message = dict_of(callback, "message")
    user = dict_of(callback, "from")
    user_id = int_of(user, "id")
    chat_id = int_of(dict_of(message, "chat"), "id")
    message_id = int_of(message, "message_id")
    if callback_id is None or user_id is None or chat_id is None or message_id is None:
        log.info("callback ignored update_id=%s reason=no_message", update_id)
        return record_only(db, update_id, "callback_query")
    language = language_for(user.get("language_code"))
    press = parse_callback_data(callback.get("data"))
    refusal = None
    if settings.allowed_user_ids and user_id not in settings.allowed_user_ids:
        refusal = "not_allowed"
    elif press is None:
        refusal = "press_invalid"
    if refusal is not None:
        if not record(db, update_id, "callback_query"):
            return NO_REPLY
        log.info("press refused update_id=%s chat=%s reason=%s", update_id, chat_id, refusal)
        return answer(callback_id, t(refusal, language))
    resend = isinstance(press, ResendPress)
    with db.transaction():
        if not record(db, update_id, "callback_query"):
            return NO_REPLY
        outcome = _resend(db, press, user_id) if resend else _decide(db, press, user_id, message_id)
    action = "resend" if resend else press.action
    log.info(
        "press update_id=%s chat=%s job=%s gate=%s action=%s outcome=%s",
        update_id,
        chat_id,
        press.job_id,
        "-" if resend else press.gate,
        action,
        outcome,
    )
    if outcome != "accepted":
        return answer(callback_id, t(outcome, language))
    edit = _decision_edit(message, chat_id, message_id, t(f"decided_{action}", language))
    return answer(callback_id, t(f"pressed_{action}", language), edit)


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
    if not gate_is_open(db, job, press.gate, message_id):
        decisions = db.one("gate_decisions", job_id=press.job_id, gate=press.gate)
        return (
            "press_already_decided"
            if decisions["decided"] or decisions["revision_pending"]
            else "press_expired"
        )
    if press.action == "regenerate":
        written = queue.add_revision(db, press.job_id, press.gate, "regenerate", None)
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
    delivery = queue.delivery_state(db, press.job_id)
    if job["state"] == "running" and delivery is not None and delivery["state"] == "unknown":
        return "resend_busy"
    return "resend_not_needed"


def _decision_edit(
    message: dict[str, Any], chat_id: int, message_id: int, decision: str
) -> MessageEdit:
    """The gate message with the decision appended and no buttons (a photo: its caption)."""
    is_caption = "photo" in message or ("caption" in message and "text" not in message)
    original = str_of(message, "caption" if is_caption else "text") or ""
    limit = MAX_CAPTION_CHARS if is_caption else MAX_TEXT_CHARS
    budget = limit - utf16_len(decision) - 2
    text = f"{fit_text(clean(original), budget)}\n\n{decision}" if original.strip() else decision
    return MessageEdit(chat_id=chat_id, message_id=message_id, text=text, is_caption=is_caption)
