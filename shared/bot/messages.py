"""The router for messages: commands, descriptions (a new job), replies that edit a script, and
a hint for anything that is not text."""

from __future__ import annotations

import logging
import re
from typing import Any

from shared import queue
from shared.bot.updates import (
    NO_REPLY,
    Reply,
    Sender,
    clean,
    dict_of,
    gate_is_open,
    int_of,
    private_sender,
    record_message,
    record_only,
    reply_if_new,
    send,
    str_of,
)
from shared.config import Settings
from shared.db import Database
from shared.telegram import fit_text
from shared.texts import step_name, t

log = logging.getLogger(__name__)

STATUS_JOB_COUNT = 5
STATUS_DESCRIPTION_CHARS = 40
_COMMAND_RE = re.compile(r"/([A-Za-z0-9_]{1,32})(?:@[A-Za-z0-9_]{1,64})?")


def on_message(db: Database, settings: Settings, update_id: int, message: dict[str, Any]) -> Reply:
    sender = private_sender(dict_of(message, "chat"), dict_of(message, "from"))
    if sender is None:
        log.info("message ignored update_id=%s reason=not_private_human", update_id)
        return record_only(db, update_id, "message")
    if settings.allowed_user_ids and sender.user_id not in settings.allowed_user_ids:
        log.info(
            "message refused update_id=%s chat=%s reason=not_allowed", update_id, sender.chat_id
        )
        return reply_if_new(db, update_id, sender, "not_allowed")
    text = str_of(message, "text")
    if text is None:
        return reply_if_new(db, update_id, sender, "text_expected")
    text = clean(text)
    command = _command(text)
    if command is not None:
        return _on_command(db, settings, update_id, sender, command)
    reply_to = int_of(dict_of(message, "reply_to_message"), "message_id")
    if reply_to is not None:
        job = db.one(
            "job_for_gate_message",
            user_id=sender.user_id,
            chat_id=sender.chat_id,
            message_id=reply_to,
        )
        if job is not None:
            return _on_script_edit(db, update_id, sender, job["id"], reply_to, text)
    return _on_description(db, settings, update_id, sender, text)


def _command(text: str) -> str | None:
    """'start' for '/start', '/start@VideoBot' or '/start payload'; None when not a command."""
    first_word = text.strip().split(maxsplit=1)[0] if text.strip() else ""
    match = _COMMAND_RE.fullmatch(first_word)
    return match.group(1).lower() if match else None


def _on_command(
    db: Database, settings: Settings, update_id: int, sender: Sender, command: str
) -> Reply:
    max_chars = settings.max_description_chars
    if command == "start":
        return reply_if_new(db, update_id, sender, "welcome", max_chars=max_chars)
    if command == "help":
        return reply_if_new(db, update_id, sender, "help", max_chars=max_chars)
    if command == "status":
        return _on_status(db, update_id, sender)
    if command == "cancel":
        return _on_cancel(db, update_id, sender)
    return reply_if_new(db, update_id, sender, "unknown_command")


def _on_status(db: Database, update_id: int, sender: Sender) -> Reply:
    with db.transaction():
        if not record_message(db, update_id, sender):
            return NO_REPLY
    jobs = db.run("recent_jobs", user_id=sender.user_id, limit=STATUS_JOB_COUNT)
    if not jobs:
        return send(sender, "status_none")
    lines = [t("status_header", sender.language)]
    lines += [_status_line(job, sender.language) for job in jobs]
    return Reply(
        body={"method": "sendMessage", "chat_id": sender.chat_id, "text": "\n".join(lines)}
    )


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
        if not record_message(db, update_id, sender):
            return NO_REPLY
        cancelled = queue.cancel_user_jobs(db, sender.user_id, "cancelled by the user")
    log.info("jobs cancelled update_id=%s chat=%s jobs=%s", update_id, sender.chat_id, cancelled)
    if not cancelled:
        return send(sender, "nothing_to_cancel")
    return send(sender, "cancelled_jobs", count=len(cancelled))


def _on_description(
    db: Database, settings: Settings, update_id: int, sender: Sender, text: str
) -> Reply:
    description = text.strip()
    if not description:
        return reply_if_new(db, update_id, sender, "description_empty")
    if len(description) > settings.max_description_chars:
        return reply_if_new(
            db,
            update_id,
            sender,
            "description_too_long",
            length=len(description),
            max_chars=settings.max_description_chars,
        )
    outcome, job_id = queue.create_job_from_update(
        db,
        update_id=update_id,
        chat_id=sender.chat_id,
        user_id=sender.user_id,
        language=sender.language,
        description=description,
        max_attempts=settings.job_max_attempts,
        max_active=settings.max_active_jobs_per_user,
        max_per_day=settings.max_jobs_per_day,
    )
    log.info(
        "description update_id=%s chat=%s outcome=%s job=%s",
        update_id,
        sender.chat_id,
        outcome,
        job_id,
    )
    if outcome == "duplicate":
        return NO_REPLY
    if outcome == "created":
        return send(sender, "job_accepted", job_id=job_id)
    if outcome == "too_many_active":
        return send(sender, "too_many_active", limit=settings.max_active_jobs_per_user)
    return send(sender, "daily_limit", limit=settings.max_jobs_per_day)


def _on_script_edit(
    db: Database, update_id: int, sender: Sender, job_id: int, message_id: int, text: str
) -> Reply:
    """A reply to the script gate message: the user's corrected script, for the worker."""
    script = text.strip()
    with db.transaction():
        if not record_message(db, update_id, sender):
            return NO_REPLY
        job = db.one("lock_job", job_id=job_id)
        if job is None:
            return send(sender, "edit_not_open")
        if job["gate"] == "storyboard" and job["state"] == "waiting":
            return send(sender, "edit_only_script")
        if not script or not gate_is_open(db, job, "script", message_id):
            return send(sender, "edit_not_open")
        queue.add_revision(db, job_id, "script", "edit", script)
    log.info("script edit update_id=%s chat=%s job=%s", update_id, sender.chat_id, job_id)
    return send(sender, "edit_accepted")
