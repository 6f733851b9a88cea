"""What the operator's CLI (manage.py) does, kept apart from argument parsing so it can be tested.

Every transition goes through shared/queue.py to the SQL functions the emergency runbook calls
(decide, cancel_job, retry_job, resend_video), so the CLI and a person at psql do the same thing;
a decision lands in the same table the emergency INSERT uses (approval_statuses), so the worker
treats it exactly like a user's button press. Errors the operator can fix raise `OperatorError`
with a message meant to be printed as it is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Sequence
from urllib.parse import urlsplit

from shared import queue
from shared.bot import (
    WEBHOOK_UPDATES as WEBHOOK_UPDATES,
)  # read as ops.WEBHOOK_UPDATES by manage.py, demo
from shared.config import GATE_ALIASES, GATES
from shared.db import Database
from shared.errors import PermanentError
from shared.plan import shorten

log = logging.getLogger(__name__)

OPERATOR_CANCEL_REASON = "cancelled by the operator"
ERROR_PREVIEW_CHARS = 60


class OperatorError(PermanentError):
    """A request the operator can correct (unknown job, wrong state, bad argument)."""


@dataclass(frozen=True)
class JobDetail:
    """Everything `show` prints about one job."""

    job: dict[str, Any]
    approvals: list[dict[str, Any]]
    revisions: list[dict[str, Any]]
    remote_tasks: list[dict[str, Any]]
    """Each submission of a scene's animation to Runway or fal (sql/009_remote_tasks.sql)."""
    delivery: dict[str, Any] | None
    events: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    """Per step: runs, working seconds, provider calls and their estimated cost."""
    times: dict[str, float]
    """total_seconds, deciding_seconds, work_seconds and usd (`queue.job_times`)."""


@dataclass(frozen=True)
class Stats:
    jobs_by_state: dict[str, int]
    oldest_runnable_seconds: float | None
    expired_leases: int
    waiting_gates: int
    gates_past_deadline: int
    workers: list[dict[str, Any]]
    table_bytes: dict[str, int]
    database_bytes: int
    costs: dict[str, Any]
    """usd_today, calls_today, usd_total, calls_total (estimated; the day is UTC)."""


@dataclass(frozen=True)
class PruneCounts:
    jobs: int
    job_events: int
    approval_statuses: int
    telegram_updates: int


def get_job(db: Database, job_id: int) -> dict[str, Any]:
    job = db.one("ops_get_job", id=job_id)
    if job is None:
        raise OperatorError(f"no job {job_id}")
    return job


def list_jobs(
    db: Database,
    *,
    state: str | None = None,
    chat_id: int | None = None,
    older_than_hours: float | None = None,
    newer_than_hours: float | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    return db.run(
        "ops_list_jobs",
        state=state,
        chat_id=chat_id,
        older_than_hours=older_than_hours,
        newer_than_hours=newer_than_hours,
        limit=limit,
    )


def job_detail(db: Database, job_id: int) -> JobDetail:
    return JobDetail(
        job=get_job(db, job_id),
        approvals=db.run("ops_job_approvals", id=job_id),
        revisions=db.run("ops_job_revisions", id=job_id),
        remote_tasks=db.run("ops_job_remote_tasks", id=job_id),
        delivery=db.one("ops_job_delivery", id=job_id),
        events=db.run("ops_job_events", id=job_id),
        steps=db.run("ops_job_steps", id=job_id),
        times=queue.job_times(db, job_id),
    )


def approve(db: Database, job_id: int, gate: str | None = None) -> str:
    """Approve `gate` (default: the gate the job waits at); return the gate approved.

    A gate ahead of a job that is not waiting yet may be approved in advance, as the emergency
    SQL allows: when the job parks there, the next claim finds the decision and resumes it.
    """
    job = get_job(db, job_id)
    if job["state"] in queue.FINAL_STATES:
        raise OperatorError(f"job {job_id} is {job['state']}: there is nothing to approve")
    if gate is None:
        if job["state"] != "waiting":
            raise OperatorError(
                f"job {job_id} is {job['state']}, not waiting at a gate; name the gate "
                f"({' or '.join(GATES)}) to approve it in advance"
            )
        gate = job["gate"]
    gate = GATE_ALIASES.get(gate, gate)
    if gate not in GATES:
        raise OperatorError(f"unknown gate {gate!r}: use {' or '.join(GATES)}")
    if not queue.decide(db, job_id, gate, "approved", "operator"):
        existing = _decision(db, job_id, gate)
        raise OperatorError(f"job {job_id} already has a decision at the {gate} gate: {existing}")
    log.info("operator approved job=%s gate=%s", job_id, gate)
    return gate


def cancel(db: Database, job_id: int, reason: str = OPERATOR_CANCEL_REASON) -> None:
    """Ask to cancel the job, as the runbook's `cancel_job` does (the operator's 'cancelled'
    decision row).

    Whatever the job is doing, the next worker run acts on it and tells the user: a waiting or
    queued job is claimed at once, and a running job's heartbeat notices within a third of its
    lease. A second cancel is refused.
    """
    try:
        requested = queue.request_cancel(db, job_id, reason)
    except queue.Refused as exc:
        raise OperatorError(str(exc)) from None
    if not requested:
        raise OperatorError(
            f"job {job_id} already has a cancel request; the next worker run acts on it"
        )
    log.info("operator cancel requested job=%s", job_id)


def retry(db: Database, job_id: int) -> str:
    """Queue a failed or cancelled job again at the step where it stopped, as the runbook's
    `retry_job` does; return that step."""
    try:
        step = queue.retry(db, job_id)
    except queue.Refused as exc:
        raise OperatorError(str(exc)) from None
    log.info("operator requeued job=%s step=%s", job_id, step)
    return step


def resend(db: Database, job_id: int) -> None:
    """Send a video whose delivery is unknown once more, exactly as the user's "send again"
    button does: the next worker run uploads it. Refused for any other delivery state."""
    job = get_job(db, job_id)
    if queue.request_resend(db, job_id, "operator"):
        log.info("operator asked for a resend job=%s", job_id)
        return
    delivery = db.one("ops_job_delivery", id=job_id)
    if delivery is None or delivery["state"] != "unknown":
        state = delivery["state"] if delivery else "not started"
        raise OperatorError(
            f"job {job_id}: its delivery is {state}; only a video whose delivery is unknown is "
            "sent again (a failed job: use retry)"
        )
    if job["state"] == "running":
        raise OperatorError(f"job {job_id} is running: resend it once the worker has finished it")
    raise OperatorError(f"job {job_id} is {job['state']}: its video is gone (use retry)")


def _decision(db: Database, job_id: int, gate: str) -> str:
    return next(
        (
            row["status"]
            for row in db.run("ops_job_approvals", id=job_id)
            if row["approval_type"] == gate
        ),
        "unknown",
    )


def stats(db: Database) -> Stats:
    health = db.run("ops_queue_health")[0]
    return Stats(
        jobs_by_state={row["state"]: row["jobs"] for row in db.run("ops_jobs_by_state")},
        oldest_runnable_seconds=health["oldest_runnable_seconds"],
        expired_leases=health["expired_leases"],
        waiting_gates=health["waiting_gates"],
        gates_past_deadline=health["gates_past_deadline"],
        workers=db.run("ops_workers"),
        table_bytes={row["table_name"]: row["bytes"] for row in db.run("ops_table_sizes")},
        database_bytes=db.run("database_size")[0]["bytes"],
        costs=db.run("ops_costs")[0],
    )


def prune(db: Database, older_than_days: int, dry_run: bool = False) -> PruneCounts:
    """Delete finished jobs and update records older than the given days; a dry run counts
    what the same statement deletes, then rolls it back."""
    if older_than_days < 1:
        raise OperatorError("--older-than must be at least 1 day")
    with db.transaction(dry_run=dry_run):
        counts = PruneCounts(**queue.prune_finished(db, older_than_days))
    log.info("prune days=%s dry_run=%s %s", older_than_days, dry_run, _key_values(counts))
    return counts


def _key_values(counts: PruneCounts) -> str:
    return " ".join(f"{name}={value}" for name, value in vars(counts).items())


def render_webhook_url(public_url: str) -> str:
    """The webhook URL from the service's public address (Render's RENDER_EXTERNAL_URL)."""
    if not public_url:
        raise OperatorError(
            "give the webhook URL (https://<service>.onrender.com/), or run this in the web "
            "service's Shell on Render, where RENDER_EXTERNAL_URL names it"
        )
    return public_url.rstrip("/") + "/"


def check_webhook_url(url: str) -> None:
    """Telegram only calls HTTPS webhooks; refuse anything else before asking it."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise OperatorError(f"the webhook URL must be https://host/...; got {url!r}")


# ---- formatting ---------------------------------------------------------------------------------


def format_age(seconds: float | None) -> str:
    """A short human age: 45s, 12m, 3h05m, 2d04h."""
    if seconds is None:
        return "-"
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def format_bytes(size: int) -> str:
    """1536 -> '1.5 kB'."""
    units = ("B", "kB", "MB", "GB", "TB")
    value, unit = float(size), 0
    while value >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    return f"{size} B" if unit == 0 else f"{value:.1f} {units[unit]}"


def format_time(value: datetime | int | None) -> str:
    """UTC ISO time for a timestamp or a Unix time; '-' for none."""
    if value is None:
        return "-"
    if isinstance(value, int):
        value = datetime.fromtimestamp(value, UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def short(text: str | None, limit: int = ERROR_PREVIEW_CHARS) -> str:
    """One line of at most `limit` characters."""
    if not text:
        return "-"
    return shorten(" ".join(text.split()), limit)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    cells = [list(headers)] + [
        ["-" if value is None else str(value) for value in row] for row in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [value.ljust(width) for value, width in zip(row[:-1], widths)] + [row[-1]]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def jobs_table(jobs: list[dict[str, Any]]) -> str:
    headers = ("ID", "STATE", "STEP", "GATE", "ATTEMPTS", "CHAT", "AGE", "LAST ERROR")
    rows = [
        (
            job["id"],
            job["state"],
            job["step"],
            job["gate"] or "-",
            f"{job['attempts']}/{job['max_attempts']}",
            job["chat_id"],
            format_age(job["age_seconds"]),
            short(job["last_error"]),
        )
        for job in jobs
    ]
    return format_table(headers, rows)
