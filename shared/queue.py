"""The job queue: the one door to job state, a thin layer over sql/queries/queue.sql.

Every write to a job, its decisions, revisions, delivery record, or a blocked chat goes through
here; the bot, the operator's CLI and the pipeline ask this module and run no such statement
themselves. The operator's transitions are SQL functions (sql/005_state_functions.sql) that a
person at psql calls too; their refusals come back as `Refused`.

A claimed job carries its lease token. Every write after the claim passes the token back and
raises `LeaseLost` when the database says the lease is gone (expired and taken over, or the job
was cancelled): the worker must then stop and write nothing more.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import pg8000.native

from shared.db import Database
from shared.errors import BotError, JobStopped

log = logging.getLogger(__name__)

ACTIVE_STATES = ("queued", "running", "waiting")
FINAL_STATES = ("done", "failed", "cancelled")


class LeaseLost(JobStopped):
    """This worker no longer owns the job; another worker or a cancellation took it."""


class Refused(BotError):
    """A transition the database refused, with its reason (no such job, the wrong state)."""


# What the state functions raise on a refusal: RAISE EXCEPTION's default, and no_data_found.
_REFUSAL_CODES = ("P0001", "P0002")


@dataclass
class ClaimedJob:
    """A job this worker holds the lease on, with what the claim learnt about its gate."""

    id: int
    chat_id: int
    user_id: int
    language: str
    description: str
    step: str
    attempts: int
    max_attempts: int
    lease_token: UUID
    checkpoints: dict[str, Any]
    gate_message_id: int | None
    status_message_id: int | None
    status_text: str | None
    created_at: datetime
    prev_state: str
    prev_gate: str | None
    gate_expired: bool | None
    gate_decision: str | None
    cancel_requested: bool

    @property
    def woke_from_gate(self) -> bool:
        return self.prev_state == "waiting"


def enqueue(
    db: Database,
    *,
    chat_id: int,
    user_id: int,
    description: str,
    language: str = "ru",
    max_attempts: int = 5,
    idempotency_key: str | None = None,
) -> tuple[int, bool]:
    """Insert a job; return (job id, created). The same key twice yields the first job."""
    params = dict(
        idempotency_key=idempotency_key,
        chat_id=chat_id,
        user_id=user_id,
        language=language,
        description=description,
        max_attempts=max_attempts,
    )
    # A concurrent insert of the same key commits after our snapshot: the second try sees it.
    row = db.one("enqueue_job", **params) or db.one("enqueue_job", **params)
    assert row is not None, f"enqueue of key {idempotency_key!r} returned no row twice"
    return row["id"], row["created"]


@dataclass(frozen=True)
class NewJob:
    """What became of a description: `outcome` is created, duplicate (a redelivered update),
    too_many_active, daily_limit, rate_limit_hour or rate_limit_minute. `retry_after`: for a
    rate limit, the seconds until the user may send another. `ahead`: for a created job that
    cannot start at once because every generation slot is taken, the jobs in line before it,
    counted up to 100 (which means 100 or more). `work_seconds`: for a created job whose
    estimate was asked for, the median working time of the last jobs done with the same
    providers; None when none was done with them."""

    outcome: str
    job_id: int | None
    retry_after: int | None
    ahead: int | None
    work_seconds: float | None


def create_job_from_update(
    db: Database,
    *,
    update_id: int,
    chat_id: int,
    user_id: int,
    language: str,
    description: str,
    max_attempts: int,
    max_active: int,
    max_per_day: int,
    per_minute: int,
    per_hour: int,
    max_running: int,
    voice_file_id: str | None = None,
    providers: str | None = None,
) -> NewJob:
    """The bot's job for a description, with the update's record and the user's limits
    (`max_active` unfinished, `max_per_day`, `per_minute` and `per_hour` new jobs): one
    statement, the SQL function create_job, so one round trip and its own transaction. In it,
    the user's advisory lock makes two descriptions sent at the same instant take turns, so
    they cannot both pass a limit. A spoken description passes `voice_file_id` (its text is
    filled in by the job's first step, `transcribe`). `providers` (shared.costs.providers_key)
    asks for the time estimate in the same statement: `NewJob.work_seconds`."""
    row = db.one(
        "create_job_from_update",
        update_id=update_id,
        chat_id=chat_id,
        user_id=user_id,
        language=language,
        description=description,
        max_attempts=max_attempts,
        max_active=max_active,
        max_per_day=max_per_day,
        per_minute=per_minute,
        per_hour=per_hour,
        max_running=max_running,
        voice_file_id=voice_file_id,
        providers=providers,
    )
    assert row is not None, "create_job_from_update returns one row"
    return NewJob(**row)


def claim(
    db: Database,
    n: int,
    lease_seconds: float,
    max_running: int | None = None,
    worker_id: UUID | None = None,
) -> list[ClaimedJob]:
    """Lease up to `n` runnable jobs in one statement, then commit at once. With `max_running`
    (MAX_CONCURRENT_JOBS), no job starts work while that many run, in all workers: claims take
    turns under an advisory lock, and a job over the cap stays in line, holding no lease.
    `worker_id` names the worker process that takes them (manage.py stats)."""
    params = dict(n=n, lease_seconds=lease_seconds, max_running=max_running, worker_id=worker_id)
    if max_running is None:
        rows = db.run("claim_jobs", **params)
    else:
        with db.transaction():
            db.run("lock_claims")
            rows = db.run("claim_jobs", **params)
    return [ClaimedJob(**row) for row in rows]


def register_worker(
    db: Database, worker_id: UUID, host: str, pid: int, slots: int, render_slots: int
) -> None:
    """Record a worker process, or renew its heartbeat."""
    db.run(
        "register_worker",
        worker_id=worker_id,
        host=host,
        pid=pid,
        slots=slots,
        render_slots=render_slots,
    )


def stop_worker(db: Database, worker_id: UUID) -> None:
    db.run("stop_worker", worker_id=worker_id)


def _fenced(rows: list[dict[str, Any]], job: ClaimedJob, action: str) -> dict[str, Any]:
    if not rows:
        log.warning("lease lost job=%s step=%s action=%s", job.id, job.step, action)
        raise LeaseLost(f"job {job.id}: lease lost during {action}")
    return rows[0]


def extend(db: Database, job: ClaimedJob, lease_seconds: float) -> bool:
    """Heartbeat: push the lease expiry out. Returns True when a cancel was requested."""
    row = _fenced(
        db.run("extend_lease", id=job.id, token=job.lease_token, lease_seconds=lease_seconds),
        job,
        "heartbeat",
    )
    return row["cancel_requested"]


def checkpoint(
    db: Database, job: ClaimedJob, result: Any, next_step: str, lease_seconds: float
) -> None:
    """Record `job.step`'s result and advance to `next_step` (also extends the lease)."""
    row = _fenced(
        db.run(
            "checkpoint_step",
            id=job.id,
            token=job.lease_token,
            step=job.step,
            result=json.dumps(result, ensure_ascii=False),
            next_step=next_step,
            lease_seconds=lease_seconds,
        ),
        job,
        f"checkpoint {job.step}",
    )
    job.checkpoints = row["checkpoints"]
    job.step = next_step
    job.attempts = 1


def set_status_message(db: Database, job: ClaimedJob, message_id: int, text: str) -> None:
    """Record the job's progress message and the text it now shows."""
    _fenced(
        db.run(
            "set_status_message", id=job.id, token=job.lease_token, message_id=message_id, text=text
        ),
        job,
        "set status message",
    )
    job.status_message_id = message_id
    job.status_text = text


def open_gate(
    db: Database, job: ClaimedJob, gate: str, message_id: int | None, ttl_seconds: float
) -> None:
    """Park the job at `gate` until a decision row, a revision, or the deadline."""
    _fenced(
        db.run(
            "open_gate",
            id=job.id,
            token=job.lease_token,
            gate=gate,
            message_id=message_id,
            ttl_seconds=ttl_seconds,
        ),
        job,
        f"open gate {gate}",
    )


def complete(db: Database, job: ClaimedJob) -> None:
    _fenced(db.run("complete_job", id=job.id, token=job.lease_token), job, "complete")


def defer(db: Database, job: ClaimedJob, delay: float, reason: str) -> None:
    """Run the job again in `delay` seconds without counting this attempt (a rate limit)."""
    _fenced(
        db.run("defer_job", id=job.id, token=job.lease_token, delay=delay, reason=reason[:2000]),
        job,
        "defer",
    )


def fail(
    db: Database,
    job: ClaimedJob,
    error: str,
    *,
    permanent: bool = False,
    retry_after: float = 0.0,
    base_delay: float = 5.0,
    max_delay: float = 600.0,
) -> str:
    """Schedule a retry with backoff, or fail for good; return the job's new state."""
    row = _fenced(
        db.run(
            "fail_job",
            id=job.id,
            token=job.lease_token,
            error=error[:2000],
            permanent=permanent,
            retry_after=retry_after,
            base_delay=base_delay,
            max_delay=max_delay,
        ),
        job,
        "fail",
    )
    return row["state"]


def cancel(db: Database, job_id: int, reason: str, token: UUID | None = None) -> bool:
    """Cancel an unfinished job; with `token`, only while that lease is held."""
    return bool(db.run("cancel_jobs", id=job_id, user_id=None, reason=reason, token=token))


def cancel_user_jobs(db: Database, user_id: int, reason: str) -> list[int]:
    rows = db.run("cancel_jobs", id=None, user_id=user_id, reason=reason, token=None)
    return [row["id"] for row in rows]


def _function(db: Database, query_name: str, **params: Any) -> dict[str, Any]:
    """Run a named query that calls a state function; its refusal becomes `Refused`."""
    try:
        row = db.one(query_name, **params)
    except pg8000.native.DatabaseError as exc:
        fields = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        if fields.get("C") in _REFUSAL_CODES:
            raise Refused(fields.get("M", str(exc))) from None
        raise
    assert row is not None, f"{query_name} returns one row"
    return row


def decide(db: Database, job_id: int, approval_type: str, status: str, decided_by: str) -> bool:
    """Write the decision row an operator's SQL would; False when one is there already.
    Raises `Refused` for an unknown or finished job."""
    return _function(
        db,
        "decide",
        job_id=job_id,
        approval_type=approval_type,
        status=status,
        decided_by=decided_by,
    )["written"]


def request_cancel(db: Database, job_id: int, reason: str) -> bool:
    """The operator's cancel request, which the next worker run acts on; False when one was
    made already. Raises `Refused` for an unknown or finished job."""
    return _function(db, "request_cancel", job_id=job_id, reason=reason)["written"]


def retry(db: Database, job_id: int) -> str:
    """Queue a failed or cancelled job again at the step where it stopped; return that step.
    Raises `Refused` for an unknown job or one in another state."""
    return _function(db, "retry_job", job_id=job_id)["step"]


def add_revision(db: Database, job_id: int, gate: str, kind: str, text: str | None) -> bool:
    """Regenerate (`kind` 'regenerate') or an edited script ('edit', `text`) at an open gate;
    False when one is pending there already."""
    return bool(db.run("insert_revision", job_id=job_id, gate=gate, kind=kind, text=text))


def pending_revision(db: Database, job_id: int, gate: str) -> dict[str, Any] | None:
    """The revision waiting at `gate` (keys id, kind, text), if any."""
    return db.one("pending_revision", id=job_id, gate=gate)


def consume_revision(db: Database, job: ClaimedJob, revision_id: int) -> None:
    """Take the revision under the lease, so that only the run that acts on it takes it."""
    _fenced(
        db.run("consume_revision", revision_id=revision_id, token=job.lease_token),
        job,
        f"take revision {revision_id}",
    )


def block_chat(db: Database, chat_id: int) -> None:
    """The user blocked the bot: send nothing more to the chat until they write again."""
    db.run("block_chat", chat_id=chat_id)


def unblock_chat(db: Database, chat_id: int) -> None:
    db.run("unblock_chat", chat_id=chat_id)


def chat_is_blocked(db: Database, chat_id: int) -> bool:
    row = db.one("chat_is_blocked", chat_id=chat_id)
    return bool(row and row["blocked"])


def save_artifact(db: Database, job: ClaimedJob, name: str, content: bytes) -> None:
    _fenced(
        db.run("save_artifact", id=job.id, token=job.lease_token, name=name, content=content),
        job,
        f"save artifact {name}",
    )


def load_artifacts(db: Database, job_id: int, prefix: str = "") -> dict[str, bytes]:
    return {
        row["name"]: bytes(row["content"])
        for row in db.run("load_artifacts", id=job_id, prefix=prefix)
    }


def artifact_names(db: Database, job_id: int, prefix: str = "") -> set[str]:
    """The names of the job's artifacts that start with `prefix`, without their content."""
    return {row["name"] for row in db.run("artifact_names", id=job_id, prefix=prefix)}


def begin_delivery(db: Database, job: ClaimedJob) -> None:
    """Record that the upload begins (a new record, or one 'failed' or 'resend'). The caller
    read the record under this lease, so a record in any other state means another run has
    taken the job over: stop, as after a lost lease."""
    row = _fenced(db.run("begin_delivery", id=job.id, token=job.lease_token), job, "begin delivery")
    if not row["created"]:
        raise LeaseLost(f"job {job.id}: another run holds the delivery record")


def finish_delivery(db: Database, job: ClaimedJob, message_id: int) -> None:
    """Record the message Telegram answered with: the video is sent."""
    _fenced(
        db.run("finish_delivery", id=job.id, token=job.lease_token, message_id=message_id),
        job,
        "finish delivery",
    )


def end_delivery(db: Database, job: ClaimedJob, outcome: str, error: str) -> None:
    """Record an upload that did not end in a message: 'failed' (not sent) or 'unknown'."""
    _fenced(
        db.run(
            "end_delivery", id=job.id, token=job.lease_token, outcome=outcome, error=error[:2000]
        ),
        job,
        f"delivery {outcome}",
    )


def delivery_state(db: Database, job_id: int) -> dict[str, Any] | None:
    """The job's delivery record (keys state, telegram_message_id), if an upload began."""
    return db.one("delivery_state", id=job_id)


def request_resend(db: Database, job_id: int, requested_by: str) -> bool:
    """Ask for a video whose delivery is unknown once more (the user's button, the operator's
    CLI); the worker sends it. False when there is nothing to resend."""
    return _function(db, "request_resend", job_id=job_id, requested_by=requested_by)["requested"]


def prune_finished(db: Database, older_than_days: int) -> dict[str, int]:
    """Delete jobs finished more than `older_than_days` ago (with their history, files and
    decision rows) and old update-dedup records; return how many of each went."""
    return db.run("prune_finished", days=older_than_days)[0]


def voice_file_id(db: Database, job_id: int) -> str | None:
    """The Telegram file of a spoken description (None for a typed one)."""
    row = db.one("get_job", id=job_id)
    return row["voice_file_id"] if row else None


def set_description(db: Database, job: ClaimedJob, description: str) -> None:
    """Store what the user said as the job's description."""
    _fenced(
        db.run("set_description", id=job.id, token=job.lease_token, description=description),
        job,
        "set description",
    )
    job.description = description


# ---- time and cost (sql/008_costs.sql) ----------------------------------------------------------


def begin_step_run(db: Database, job: ClaimedJob, providers: str) -> int:
    """Record that `job.step` starts now, run with `providers`; return the run's id."""
    row = _fenced(
        db.run(
            "begin_step_run",
            id=job.id,
            token=job.lease_token,
            step=job.step,
            attempt=job.attempts,
            providers=providers,
        ),
        job,
        f"begin step {job.step}",
    )
    return row["id"]


def end_step_run(db: Database, run_id: int, outcome: str) -> None:
    """Record that step run `run_id` ended now with `outcome` (see the statement)."""
    db.run("end_step_run", run_id=run_id, outcome=outcome)


def record_provider_call(
    db: Database,
    job: ClaimedJob,
    kind: str,
    provider: str,
    model: str,
    units: dict[str, float],
    usd: float,
) -> None:
    """Record what a provider call of `job.step` consumed and its estimated price."""
    _fenced(
        db.run(
            "record_provider_call",
            id=job.id,
            token=job.lease_token,
            step=job.step,
            kind=kind,
            provider=provider,
            model=model,
            units=json.dumps(units),
            usd=f"{usd:.6f}",
        ),
        job,
        f"record {kind} call",
    )


def job_cost(db: Database, job_id: int) -> float:
    """The estimated USD the job's provider calls cost so far."""
    return db.one("job_cost", id=job_id)["usd"]


def cost_today(db: Database) -> float:
    """The estimated USD the bot's provider calls cost on the current UTC day."""
    return db.one("cost_today")["usd"]


def job_times(db: Database, job_id: int) -> dict[str, float]:
    """The job's total_seconds, deciding_seconds (parked at gates), work_seconds and usd."""
    row = db.one("job_times", id=job_id)
    assert row is not None, f"job_times of job {job_id} returns one row"
    return row


# ---- remote tasks: clips and stills (sql/009_remote_tasks.sql, sql/010_remote_stills.sql) -------


@dataclass(frozen=True)
class RemoteTaskKey:
    """Which pictures a job's tasks make: their provider and model, the stills and videos
    variants they belong to, and their kind ('clip' or 'still'; a still's videos_variant is 0)."""

    provider: str
    model: str
    stills_variant: int
    videos_variant: int
    kind: str = "clip"


def begin_remote_task(
    db: Database,
    job: ClaimedJob,
    key: RemoteTaskKey,
    scene: int,
    attempt: int,
    *,
    slots: int,
    timeout_seconds: float,
) -> int | None:
    """Record the intent to submit `scene`'s task (state 'submitting') and return its id, or
    None when `key.provider` already has `slots` tasks of `key.kind` in flight across all jobs
    (one not started yet, or started less than `timeout_seconds` ago)."""
    row = db.one(
        "begin_remote_task",
        job_id=job.id,
        token=job.lease_token,
        kind=key.kind,
        scene=scene,
        provider=key.provider,
        model=key.model,
        stills_variant=key.stills_variant,
        videos_variant=key.videos_variant,
        attempt=attempt,
        slots=slots,
        timeout_seconds=timeout_seconds,
    )
    assert row is not None, "begin_remote_task returns one row"
    if not row["held"]:
        raise LeaseLost(f"job {job.id}: lease lost before submitting scene {scene}")
    return row["task_id"]


def remote_task_submitted(
    db: Database,
    job: ClaimedJob,
    task_id: int,
    handle: dict[str, Any],
    seconds: float | None,
    usd: float,
) -> None:
    """The provider took task `task_id`: record its handle (state 'running') and its price;
    `seconds` of video billed (None for a still)."""
    _fenced(
        db.run(
            "remote_task_submitted",
            task_id=task_id,
            token=job.lease_token,
            handle=json.dumps(handle),
            seconds_billed=None if seconds is None else f"{seconds:.2f}",
            usd=f"{usd:.6f}",
        ),
        job,
        f"record remote task {task_id}",
    )


def remote_task_started(db: Database, job: ClaimedJob, task_id: int) -> None:
    """Polling saw the provider run task `task_id`: its timeout counts from now (set once)."""
    _fenced(
        db.run("remote_task_started", task_id=task_id, token=job.lease_token),
        job,
        f"record remote task {task_id} started",
    )


def remote_task_answered(
    db: Database, job: ClaimedJob, task_id: int, handle: dict[str, Any], usd: float
) -> None:
    """A synchronous call (`task_id`, still 'submitting') answered and its result is saved:
    record it succeeded, with its price."""
    _fenced(
        db.run(
            "remote_task_answered",
            task_id=task_id,
            token=job.lease_token,
            handle=json.dumps(handle),
            usd=f"{usd:.6f}",
        ),
        job,
        f"record remote call {task_id} answered",
    )


def end_remote_task(
    db: Database,
    job: ClaimedJob,
    task_id: int,
    state: str,
    error: str | None = None,
    output_url: str | None = None,
) -> None:
    """End task `task_id` in `state` (see the statement for which moves are allowed)."""
    _fenced(
        db.run(
            "end_remote_task",
            task_id=task_id,
            token=job.lease_token,
            state=state,
            error=error[:2000] if error else None,
            output_url=output_url,
        ),
        job,
        f"end remote task {task_id} as {state}",
    )


def settle_stale_submissions(db: Database, job: ClaimedJob) -> list[tuple[str, int]]:
    """Turn the job's tasks left 'submitting' by an earlier run into 'uncertain'; return their
    (kind, scene). Run before this run submits anything."""
    rows = db.run("settle_stale_submissions", job_id=job.id, token=job.lease_token)
    return [(row["kind"], row["scene"]) for row in rows]


def remote_tasks(db: Database, job_id: int, key: RemoteTaskKey) -> dict[int, dict[str, Any]]:
    """The latest task of each scene for `key`'s kind and variants, by scene (keys id, scene,
    attempt, state, handle, output_url, error, started, age_seconds since the provider started
    running it (None while it waits in line), unsent attempts)."""
    rows = db.run(
        "remote_tasks",
        job_id=job_id,
        kind=key.kind,
        stills_variant=key.stills_variant,
        videos_variant=key.videos_variant,
    )
    return {row["scene"]: row for row in rows}


def others_due(db: Database, job_id: int) -> bool:
    """True when a job other than `job_id` is queued and due."""
    row = db.one("others_due", job_id=job_id)
    return bool(row and row["due"])
