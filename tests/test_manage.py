"""manage.py as an operator runs it: a subprocess against real PostgreSQL and a local Bot API."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from localapi.telegram_server import TelegramServer
from shared import db as dbmod
from shared import queue
from shared.migrate import migration_files
from shared.operator import ops
from tests.support import manage

LEASE = 60.0
WEBHOOK_SECRET = "operator-test-secret_42"


def make_job(db: dbmod.Database, *, chat_id: int = 100, **columns: Any) -> int:
    """Insert a job with the given columns; SQL expressions go in as `raw_<column>`."""
    raw = {
        name.removeprefix("raw_"): value
        for name, value in columns.items()
        if name.startswith("raw_")
    }
    params = {"chat_id": chat_id, "user_id": chat_id, "description": "a cat on a skateboard"}
    params.update({name: value for name, value in columns.items() if not name.startswith("raw_")})
    names = list(params) + list(raw)
    values = [f":{name}" for name in params] + list(raw.values())
    sql = f"INSERT INTO jobs ({', '.join(names)}) VALUES ({', '.join(values)}) RETURNING id"
    return db.execute(sql, **params)[0][0]


def make_waiting(
    db: dbmod.Database, gate: str = "script", deadline: str = "now() + interval '1 hour'"
) -> int:
    return make_job(
        db,
        state="waiting",
        step=f"review_{gate}",
        gate=gate,
        raw_gate_deadline=deadline,
        checkpoints='{"script": {"text": "..."}}',
    )


def job_row(db: dbmod.Database, job_id: int) -> dict[str, Any]:
    row = db.one("get_job", id=job_id)
    assert row is not None
    return row


def approvals(db: dbmod.Database, job_id: int) -> list[tuple[str, str]]:
    rows = db.execute(
        "SELECT approval_type, status FROM approval_statuses WHERE job_id = :id ORDER BY id",
        id=str(job_id),
    )
    return [(row[0], row[1]) for row in rows]


# ---- approve / cancel / retry ------------------------------------------------------------------


def test_approve_wakes_the_job_waiting_at_its_gate(schema_env, db):
    job_id = make_waiting(db, "script")

    result = manage(schema_env, "approve", str(job_id))

    assert result.returncode == 0, result.stderr
    assert f"job {job_id}: script approved" in result.stdout
    row = db.execute(
        "SELECT a.status, a.expires_at = j.gate_deadline::timestamp FROM approval_statuses a "
        "JOIN jobs j ON a.job_id = j.id::text WHERE j.id = :id AND a.approval_type = 'script'",
        id=job_id,
    )
    assert row == [["approved", True]], "the row expires with the gate, as the bot's own does"
    [claimed] = queue.claim(db, 5, LEASE)
    assert (claimed.id, claimed.prev_gate, claimed.gate_decision) == (job_id, "script", "approved")
    assert not claimed.cancel_requested


def test_approve_takes_the_old_gate_name_as_the_images_gate(schema_env, db):
    job_id = make_waiting(db, "images")

    result = manage(schema_env, "approve", str(job_id), "storyboard")

    assert result.returncode == 0, result.stderr
    assert f"job {job_id}: images approved" in result.stdout
    assert approvals(db, job_id) == [("images", "approved")]


def test_approve_needs_a_gate_when_the_job_is_not_waiting(schema_env, db):
    job_id = make_job(db, state="queued", step="media")

    refused = manage(schema_env, "approve", str(job_id))
    ahead = manage(schema_env, "approve", str(job_id), "images")
    twice = manage(schema_env, "approve", str(job_id), "images")

    assert refused.returncode == 1
    assert f"job {job_id} is queued, not waiting at a gate; name the gate" in refused.stderr
    assert ahead.returncode == 0, ahead.stderr
    assert approvals(db, job_id) == [("images", "approved")]
    expires_in = db.execute(
        "SELECT expires_at - now()::timestamp FROM approval_statuses WHERE job_id = :id",
        id=str(job_id),
    )[0][0]
    assert timedelta(hours=23) < expires_in <= timedelta(days=1)
    assert twice.returncode == 1
    assert "already has a decision at the images gate: approved" in twice.stderr


@pytest.mark.parametrize("state", ["queued", "running"])
def test_cancel_of_an_active_job_goes_through_the_worker(schema_env, db, state):
    job_id = make_job(db, state="queued")
    if state == "running":
        [running] = queue.claim(db, 5, LEASE)
    else:  # waiting out a retry's backoff: a cancel request makes it due at once
        db.execute(
            "UPDATE jobs SET run_at = now() + interval '10 minutes' WHERE id = :id", id=job_id
        )

    result = manage(schema_env, "cancel", str(job_id))

    assert result.returncode == 0, result.stderr
    assert "cancel requested; the next worker run cancels it and tells the user" in result.stdout
    assert approvals(db, job_id) == [("operator", "cancelled")]
    if state == "running":
        assert queue.extend(db, running, LEASE) is True
    else:
        [claimed] = queue.claim(db, 5, LEASE)
        assert claimed.id == job_id and claimed.cancel_requested
    again = manage(schema_env, "cancel", str(job_id))
    assert again.returncode == 1 and "already has a cancel request" in again.stderr


def test_cancel_of_a_waiting_job_goes_through_the_worker(schema_env, db):
    job_id = make_waiting(db, "images")

    result = manage(schema_env, "cancel", str(job_id))

    assert result.returncode == 0, result.stderr
    assert job_row(db, job_id)["state"] == "waiting"
    assert approvals(db, job_id) == [("operator", "cancelled")]
    [claimed] = queue.claim(db, 5, LEASE)
    assert (claimed.gate_decision, claimed.cancel_requested) == (None, True)


def test_cancel_of_a_finished_job_is_refused(schema_env, db):
    job_id = make_job(db, state="done", raw_finished_at="now()")

    result = manage(schema_env, "cancel", str(job_id))

    assert result.returncode == 1
    assert f"job {job_id} is already done" in result.stderr
    assert approvals(db, job_id) == []


def test_retry_requeues_a_failed_job_where_it_stopped(schema_env, db):
    job_id = make_job(
        db,
        state="failed",
        step="media",
        attempts=3,
        max_attempts=3,
        last_error="openai images: 500 after 3 attempts",
        raw_finished_at="now()",
        checkpoints='{"script": {}, "review_script": {"approved": true}}',
    )

    result = manage(schema_env, "retry", str(job_id))

    assert result.returncode == 0, result.stderr
    assert f"job {job_id}: queued again at step media" in result.stdout
    job = job_row(db, job_id)
    assert (job["state"], job["step"], job["attempts"], job["finished_at"]) == (
        "queued",
        "media",
        0,
        None,
    )
    [claimed] = queue.claim(db, 5, LEASE)
    assert (claimed.id, claimed.step, claimed.attempts) == (job_id, "media", 1)
    assert "review_script" in claimed.checkpoints


def test_retry_of_a_cancelled_job_removes_its_cancel_decision(schema_env, db):
    job_id = make_waiting(db, "script")
    assert manage(schema_env, "cancel", str(job_id)).returncode == 0
    [claimed] = queue.claim(db, 5, LEASE)
    queue.cancel(db, job_id, "cancelled at the script gate", token=claimed.lease_token)

    result = manage(schema_env, "retry", str(job_id))

    assert result.returncode == 0, result.stderr
    assert approvals(db, job_id) == []
    [again] = queue.claim(db, 5, LEASE)
    assert (again.step, again.cancel_requested) == ("review_script", False)


def test_retry_of_a_done_or_active_job_is_refused(schema_env, db):
    done = make_job(db, state="done", step="done", raw_finished_at="now()")
    queued = make_job(db, state="queued")

    refused_done = manage(schema_env, "retry", str(done))
    refused_queued = manage(schema_env, "retry", str(queued))

    assert refused_done.returncode == 1
    assert f"job {done} is done: a delivered job cannot be retried" in refused_done.stderr
    assert refused_queued.returncode == 1
    assert "only failed or cancelled jobs can be retried" in refused_queued.stderr
    assert job_row(db, done)["state"] == "done"


@pytest.mark.parametrize("command", ["show", "approve", "cancel", "retry"])
def test_an_unknown_job_is_a_clear_error(schema_env, command):
    result = manage(schema_env, command, "987654")

    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == "error: no job 987654"
    assert "Traceback" not in result.stderr


# ---- reading ------------------------------------------------------------------------------------


def test_show_tells_the_whole_story_of_a_job(schema_env, db):
    job_id = make_job(
        db,
        state="done",
        step="done",
        attempts=1,
        raw_finished_at="now()",
        checkpoints='{"script": {}, "review_script": {"approved": true}}',
    )
    db.execute(
        "INSERT INTO approval_statuses (job_id, approval_type, status, expires_at) "
        "VALUES (:id, 'script', 'approved', now() + interval '1 day')",
        id=str(job_id),
    )
    db.execute(
        "INSERT INTO job_events (job_id, event, step, attempt, detail) VALUES "
        "(:id, 'gate_opened', 'review_script', 1, 'script'), (:id, 'done', 'deliver', 1, NULL)",
        id=job_id,
    )
    db.execute(
        "INSERT INTO deliveries (job_id, state, telegram_message_id, sent_at) "
        "VALUES (:id, 'sent', 77, now())",
        id=job_id,
    )

    result = manage(schema_env, "show", str(job_id))

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"job {job_id}: done at step done" in out
    assert "steps done: script, review_script" in out
    assert "description: a cat on a skateboard" in out
    assert "script      approved" in out
    assert "delivery: sent  message 77" in out
    assert "revisions: -" in out
    assert out.index("gate_opened") < out.index("  done ")


def test_jobs_lists_and_filters(schema_env, db):
    recent = make_job(
        db,
        chat_id=1,
        state="running",
        step="media",
        attempts=2,
        raw_lease_token="gen_random_uuid()",
        raw_lease_expires_at="now()",
    )
    old_failed = make_job(
        db,
        chat_id=2,
        state="failed",
        step="render",
        attempts=5,
        last_error="ffmpeg exited with status 1\nwhile rendering",
        raw_created_at="now() - interval '2 days'",
        raw_finished_at="now()",
    )

    everything = manage(schema_env, "jobs")
    by_chat = manage(schema_env, "jobs", "--chat", "2")
    old = manage(schema_env, "jobs", "--older-than-hours", "24")
    running = manage(schema_env, "jobs", "--state", "running", "--newer-than-hours", "1")
    none = manage(schema_env, "jobs", "--state", "waiting")

    lines = everything.stdout.splitlines()
    assert lines[0].split() == [
        "ID",
        "STATE",
        "STEP",
        "GATE",
        "ATTEMPTS",
        "CHAT",
        "AGE",
        "LAST",
        "ERROR",
    ]
    assert lines[1].split()[:6] == [str(old_failed), "failed", "render", "-", "5/5", "2"]
    assert lines[1].split()[6] == "2d00h"
    assert lines[1].endswith("ffmpeg exited with status 1 while rendering")
    assert lines[2].split()[:6] == [str(recent), "running", "media", "-", "2/5", "1"]
    assert [line.split()[0] for line in by_chat.stdout.splitlines()[1:]] == [str(old_failed)]
    assert [line.split()[0] for line in old.stdout.splitlines()[1:]] == [str(old_failed)]
    assert [line.split()[0] for line in running.stdout.splitlines()[1:]] == [str(recent)]
    assert none.stdout.strip() == "no jobs match"


def test_stats_reports_queue_health(schema_env, db):
    make_job(db, state="queued", raw_run_at="now() - interval '10 minutes'")
    make_job(db, state="queued", raw_run_at="now() + interval '1 hour'")
    make_job(
        db,
        state="running",
        raw_lease_token="gen_random_uuid()",
        raw_lease_expires_at="now() - interval '1 minute'",
    )
    make_waiting(db, "script", deadline="now() - interval '1 minute'")
    make_waiting(db, "images")
    make_job(db, state="done", raw_finished_at="now()")

    result = manage(schema_env, "stats")

    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    counts = {line[0]: line[1] for line in lines if len(line) == 2 and line[1].isdigit()}
    assert counts == {
        "queued": "2",
        "running": "1",
        "waiting": "2",
        "done": "1",
        "failed": "0",
        "cancelled": "0",
    }
    assert "oldest runnable job: 10m" in result.stdout
    assert "expired leases: 1" in result.stdout
    assert "waiting at a gate: 2 (1 past the deadline)" in result.stdout
    sizes = {line[0]: line[1:] for line in lines if len(line) == 3 and line[2] in ("kB", "MB")}
    assert {"jobs", "approval_statuses", "telegram_updates", "job_events"} <= set(sizes)
    assert any(line.startswith("database size: ") for line in result.stdout.splitlines())


def test_prune_deletes_old_finished_jobs_and_counts_them(schema_env, db):
    old_done = make_job(db, state="done", raw_finished_at="now() - interval '40 days'")
    old_failed = make_job(db, state="failed", raw_finished_at="now() - interval '31 days'")
    recent_cancelled = make_job(db, state="cancelled", raw_finished_at="now() - interval '5 days'")
    old_but_active = make_job(db, state="queued", raw_created_at="now() - interval '60 days'")
    for job_id in (old_done, old_failed, recent_cancelled):
        db.execute("INSERT INTO job_events (job_id, event) VALUES (:id, 'done')", id=job_id)
    db.execute(
        "INSERT INTO approval_statuses (job_id, approval_type, status, expires_at) VALUES "
        "(:a, 'script', 'approved', now()), (:b, 'script', 'approved', now())",
        a=str(old_done),
        b=str(recent_cancelled),
    )
    db.execute("INSERT INTO deliveries (job_id, state) VALUES (:id, 'sent')", id=old_done)
    db.execute(
        "INSERT INTO telegram_updates (update_id, kind, received_at) VALUES "
        "(1, 'message', now() - interval '45 days'), (2, 'message', now())"
    )

    dry = manage(schema_env, "prune", "--older-than", "30", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.strip() == (
        "would delete: 2 jobs (2 events), 1 approval rows, 1 telegram updates"
    )
    assert db.execute("SELECT count(*) FROM jobs")[0][0] == 4

    result = manage(schema_env, "prune", "--older-than", "30")

    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.strip() == "deleted: 2 jobs (2 events), 1 approval rows, 1 telegram updates"
    )
    remaining = {row[0] for row in db.execute("SELECT id FROM jobs")}
    assert remaining == {recent_cancelled, old_but_active}
    assert db.execute("SELECT count(*) FROM deliveries")[0][0] == 0
    assert db.execute("SELECT job_id FROM approval_statuses") == [[str(recent_cancelled)]]
    assert db.execute("SELECT update_id FROM telegram_updates") == [[2]]


def test_migrate_applies_then_reports_up_to_date(schema_env, db):
    fresh = dict(schema_env, DATABASE_SCHEMA=f"t_{uuid.uuid4().hex[:12]}")
    try:
        first = manage(fresh, "migrate")
        second = manage(fresh, "migrate")
    finally:
        db.execute(f"DROP SCHEMA IF EXISTS {fresh['DATABASE_SCHEMA']} CASCADE")

    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert first.stdout.strip() == "applied: " + ", ".join(path.name for path in migration_files())
    assert first.stdout.startswith("applied: 001_schema.sql, 002_")
    assert second.stdout.strip() == "schema is up to date"


def test_an_unreachable_database_exits_2_without_its_password(schema_env):
    password = "pw-" + uuid.uuid4().hex
    env = dict(schema_env, DATABASE_URL=f"postgres://ops:{password}@127.0.0.1:1/videobot")

    result = manage(env, "stats")

    assert result.returncode == 2
    assert "cannot connect to the database (postgres=127.0.0.1:1/videobot" in result.stderr
    assert password not in result.stderr + result.stdout


# ---- Telegram webhook ---------------------------------------------------------------------------


def telegram_env(server: TelegramServer, **extra: str) -> dict[str, str]:
    return {
        "TELEGRAM_BOT_TOKEN": server.token,
        "TELEGRAM_API_BASE": server.base_url,
        "TELEGRAM_WEBHOOK_SECRET": WEBHOOK_SECRET,
        **extra,
    }


def test_set_webhook_registers_url_secret_and_update_types(telegram):
    url = "https://127.0.0.1/telegram"

    result = manage({}, "set-webhook", url, "--drop-pending", **telegram_env(telegram))

    assert result.returncode == 0, result.stderr
    assert f"webhook set to {url}" in result.stdout
    [call] = telegram.calls_to("setWebhook")
    assert call.params == {
        "url": url,
        "secret_token": WEBHOOK_SECRET,
        "drop_pending_updates": True,
        "allowed_updates": ["message", "callback_query", "my_chat_member"],
    }
    output = result.stdout + result.stderr
    assert WEBHOOK_SECRET not in output and telegram.token not in output


def test_webhook_info_shows_the_last_delivery_error(telegram):
    env = telegram_env(telegram)
    assert manage({}, "set-webhook", "https://127.0.0.1/telegram", **env).returncode == 0
    telegram.push_message(100, "a cat")  # nothing listens on 127.0.0.1:443: delivery fails
    error_date = datetime.now(UTC).strftime("%Y-%m-%d %H:")

    result = manage({}, "webhook-info", **env)

    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert lines["url"] == "https://127.0.0.1/telegram"
    assert lines["pending_update_count"] == "1"
    assert lines["last_error_date"].startswith(error_date) and lines["last_error_date"].endswith(
        " UTC"
    )
    assert lines["last_error_message"].startswith("Connection failed")


def test_delete_webhook(telegram):
    env = telegram_env(telegram)
    assert manage({}, "set-webhook", "https://127.0.0.1/telegram", **env).returncode == 0

    result = manage({}, "delete-webhook", **env)

    assert result.returncode == 0, result.stderr
    assert telegram.calls_to("deleteWebhook")
    assert "url: -" in manage({}, "webhook-info", **env).stdout


@pytest.mark.parametrize(
    ("url", "missing", "code", "message"),
    [
        (
            "https://bot.example.com/",
            "TELEGRAM_WEBHOOK_SECRET",
            2,
            "TELEGRAM_WEBHOOK_SECRET is not set",
        ),
        ("https://bot.example.com/", "TELEGRAM_BOT_TOKEN", 2, "TELEGRAM_BOT_TOKEN is not set"),
        ("http://bot.example.com/", None, 1, "the webhook URL must be https://"),
    ],
)
def test_set_webhook_refuses_before_calling_telegram(telegram, url, missing, code, message):
    env = telegram_env(telegram)
    if missing:
        env[missing] = ""

    result = manage({}, "set-webhook", url, **env)

    assert result.returncode == code
    assert message in result.stderr
    assert telegram.calls == []


def test_a_usage_mistake_exits_1_with_argparse_help():
    result = manage({}, "approve", "twelve")

    assert result.returncode == 1
    assert "a job id is a number, not 'twelve'" in result.stderr


# ---- formatting ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "-"),
        (-3, "0s"),
        (45, "45s"),
        (600, "10m"),
        (3 * 3600 + 300, "3h05m"),
        (2 * 86400 + 4 * 3600, "2d04h"),
    ],
)
def test_format_age(seconds, shown):
    assert ops.format_age(seconds) == shown
