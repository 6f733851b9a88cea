"""The router for messages: commands, descriptions (a new job, typed or spoken), replies that
edit a script, and a hint for anything else."""

from __future__ import annotations

import logging
import math
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
from shared.costs import format_usd, providers_key
from shared.db import Database
from shared.telegram import MAX_DOWNLOAD_BYTES, fit_text
from shared.texts import format_duration, step_name, t

log = logging.getLogger(__name__)

STATUS_JOB_COUNT = 5
AHEAD_COUNTED = 100
"""Where sql/011_create_job.sql stops counting the line: `ahead` that high reads "100+"."""
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
    spoken = _spoken_file(message)
    if spoken is not None:
        return _on_voice(db, settings, update_id, sender, *spoken)
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
    if command == "stats" and sender.user_id in settings.owner_user_ids:
        return _on_owner_stats(db, update_id, sender)
    return reply_if_new(db, update_id, sender, "unknown_command")


def _on_status(db: Database, update_id: int, sender: Sender) -> Reply:
    with db.transaction():
        if not record_message(db, update_id, sender):
            return NO_REPLY
    jobs = db.run("recent_jobs", user_id=sender.user_id, limit=STATUS_JOB_COUNT)
    if not jobs:
        return send(sender, "status_none")
    lines = [t("status_header", sender.language)]
    spent = {
        row["id"]: row
        for row in db.run("recent_job_costs", user_id=sender.user_id, limit=STATUS_JOB_COUNT)
    }
    lines += [
        _with_spent(_status_line(job, sender.language), spent.get(job["id"]), sender.language)
        for job in jobs
    ]
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


def _create_job(
    db: Database,
    settings: Settings,
    update_id: int,
    sender: Sender,
    description: str,
    voice_file_id: str | None = None,
) -> queue.NewJob:
    """The job for a description, typed or spoken, under every limit the settings name, with
    the time estimate for a typed one (a spoken one's acknowledgement has none)."""
    return queue.create_job_from_update(
        db,
        update_id=update_id,
        chat_id=sender.chat_id,
        user_id=sender.user_id,
        language=sender.language,
        description=description,
        max_attempts=settings.job_max_attempts,
        max_active=settings.max_active_jobs_per_user,
        max_per_day=settings.max_jobs_per_day,
        per_minute=settings.rate_limit_per_minute,
        per_hour=settings.rate_limit_per_hour,
        max_running=settings.max_concurrent_jobs,
        voice_file_id=voice_file_id,
        providers=providers_key(settings) if voice_file_id is None else None,
    )


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
    created = _create_job(db, settings, update_id, sender, description)
    log.info(
        "description update_id=%s chat=%s outcome=%s job=%s",
        update_id,
        sender.chat_id,
        created.outcome,
        created.job_id,
    )
    return _with_estimate(
        created, _created_reply(settings, sender, created, "job_accepted"), sender.language
    )


def _created_reply(
    settings: Settings, sender: Sender, created: queue.NewJob, accepted: str
) -> Reply:
    """The answer to `queue.create_job_from_update`'s outcome; `accepted` is the text key for
    a created job, followed by its place in line when every generation slot is taken."""
    outcome = created.outcome
    if outcome == "duplicate":
        return NO_REPLY
    if outcome == "created":
        if created.ahead is None:
            return send(sender, accepted, job_id=created.job_id)
        ahead = f"{AHEAD_COUNTED}+" if created.ahead >= AHEAD_COUNTED else str(created.ahead)
        line = t("in_line", sender.language, slots=settings.max_concurrent_jobs, ahead=ahead)
        return Reply(
            body={
                "method": "sendMessage",
                "chat_id": sender.chat_id,
                "text": f"{t(accepted, sender.language, job_id=created.job_id)}\n\n{line}",
            }
        )
    if outcome == "too_many_active":
        return send(sender, "too_many_active", limit=settings.max_active_jobs_per_user)
    if outcome == "daily_limit":
        return send(sender, "daily_limit", limit=settings.max_jobs_per_day)
    limit = (
        settings.rate_limit_per_hour
        if outcome == "rate_limit_hour"
        else settings.rate_limit_per_minute
    )
    wait = format_duration(created.retry_after or 1, sender.language)
    return send(sender, outcome, limit=limit, wait=wait)


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
        if job["gate"] == "images" and job["state"] == "waiting":
            return send(sender, "edit_only_script")
        if not script or not gate_is_open(db, job, "script", message_id):
            return send(sender, "edit_not_open")
        queue.add_revision(db, job_id, "script", "edit", script)
    log.info("script edit update_id=%s chat=%s job=%s", update_id, sender.chat_id, job_id)
    return send(sender, "edit_accepted")


# ---- spoken descriptions: a voice message, an audio file or a video note ----------------------

SPOKEN_KINDS = ("voice", "audio", "video_note")
VOICE_PLACEHOLDER = "🎙"
"""A spoken job's description until its step `transcribe` replaces it with what was heard."""


def _spoken_file(message: dict[str, Any]) -> tuple[str, str, int | None] | None:
    """(kind, file_id, file_size) of a voice message, an audio file or a video note."""
    for kind in SPOKEN_KINDS:
        media = dict_of(message, kind)
        file_id = str_of(media, "file_id")
        if file_id:
            return kind, clean(file_id), int_of(media, "file_size")
    return None


def _on_voice(
    db: Database,
    settings: Settings,
    update_id: int,
    sender: Sender,
    kind: str,
    file_id: str,
    file_size: int | None,
) -> Reply:
    """A spoken description becomes a job that starts at `transcribe`; only the file id is
    recorded here (no outbound call). Without a transcription provider, or past getFile's
    download limit, the user is asked to type instead and no job is made."""
    if settings.transcribe_provider == "local":
        log.info(
            "voice refused update_id=%s chat=%s reason=no_transcriber", update_id, sender.chat_id
        )
        return reply_if_new(db, update_id, sender, "voice_disabled")
    if file_size is not None and file_size > MAX_DOWNLOAD_BYTES:
        log.info(
            "voice refused update_id=%s chat=%s reason=too_big bytes=%s",
            update_id,
            sender.chat_id,
            file_size,
        )
        return reply_if_new(
            db,
            update_id,
            sender,
            "voice_too_big",
            size_mb=f"{file_size / 1024 / 1024:.1f}",
            limit_mb=MAX_DOWNLOAD_BYTES // 1024 // 1024,
        )
    created = _create_job(db, settings, update_id, sender, VOICE_PLACEHOLDER, file_id)
    log.info(
        "voice description update_id=%s chat=%s kind=%s outcome=%s job=%s",
        update_id,
        sender.chat_id,
        kind,
        created.outcome,
        created.job_id,
    )
    return _created_reply(settings, sender, created, "voice_accepted")


# ---- time and cost: the acknowledgement's estimate, /status's costs, the owner's /stats -------

DEFAULT_ESTIMATE = "1–2"
"""The estimate, in minutes of work, before any job was done with these providers."""


def _with_estimate(created: queue.NewJob, reply: Reply, language: str) -> Reply:
    """A created job's acknowledgement, followed by how long the work should take: the median
    working time of recent jobs with the same providers (time at gates excluded), which
    `queue.create_job_from_update` read in the same statement."""
    if created.outcome != "created" or reply.body is None:
        return reply
    median = created.work_seconds
    minutes = DEFAULT_ESTIMATE if median is None else str(max(1, math.ceil(median / 60)))
    estimate = t("job_estimate", language, minutes=minutes)
    return Reply(
        body={**reply.body, "text": f"{reply.body['text']}\n\n{estimate}"}, edit=reply.edit
    )


def _with_spent(line: str, spent: dict[str, Any] | None, language: str) -> str:
    """A /status line with the job's working time and cost, once it has any."""
    if spent is None or not (spent["work_seconds"] or spent["usd"]):
        return line
    work = format_duration(spent["work_seconds"], language)
    return t("status_spent", language, line=line, work=work, usd=format_usd(spent["usd"]))


def _on_owner_stats(db: Database, update_id: int, sender: Sender) -> Reply:
    """The owner's /stats (OWNER_USER_IDS; anyone else gets the unknown-command answer)."""
    language = sender.language
    with db.transaction():
        if not record_message(db, update_id, sender):
            return NO_REPLY
        row = db.one("owner_stats")
    assert row is not None, "owner_stats returns one row"
    states = ", ".join(f"{state} {count}" for state, count in sorted(row["jobs_by_state"].items()))
    oldest = t("owner_stats_none", language)
    if row["waiting_id"] is not None:
        oldest = t(
            "owner_stats_waiting",
            language,
            job_id=row["waiting_id"],
            gate=row["waiting_gate"],
            age=format_duration(row["waiting_seconds"], language),
        )
    log.info("owner stats update_id=%s user=%s", update_id, sender.user_id)
    return send(
        sender,
        "owner_stats",
        states=states or t("owner_stats_none", language),
        usd_today=format_usd(row["usd_today"]),
        calls_today=row["calls_today"],
        oldest=oldest,
        size=f"{row['database_bytes'] / 1_048_576:.1f} MB",
    )
