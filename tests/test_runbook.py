"""The README's emergency SQL, pasted as it stands, does what the README says it does."""

from __future__ import annotations

import re

import pg8000.native
import pytest

from shared import queue
from shared.config import REPO_ROOT

LEASE = 60.0


def runbook_statements() -> dict[str, list[str]]:
    """The runbook's SQL blocks, by the sentence that introduces each one."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Emergency SQL runbook", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"\n([^\n]+)\n\n```sql\n(.*?)```", section, re.DOTALL)
    return {
        intro.strip(): [s.strip() for s in sql.split(";") if s.strip()] for intro, sql in blocks
    }


def paste(db, statement: str, job_id: int) -> list:
    """Run a runbook statement on the test's schema and job, as an operator would in psql."""
    with_job = re.sub(r"\b42\b", str(job_id), statement)
    return db.execute(with_job.replace("ai_video_bot.", f"{db.schema}."))


def statements(starting: str) -> list[str]:
    found = [sql for intro, sql in runbook_statements().items() if intro.startswith(starting)]
    assert found, f"the runbook has no block introduced by {starting!r}"
    return found[0]


def waiting_job(db, gate: str) -> int:
    db.execute("INSERT INTO jobs (chat_id, user_id, description) VALUES (1, 1, 'a cat')")
    [job] = queue.claim(db, 1, LEASE)
    queue.checkpoint(db, job, {}, f"review_{gate}", LEASE)
    queue.open_gate(db, job, gate, message_id=5, ttl_seconds=3600)
    return job.id


def test_see_a_job_its_history_and_what_is_unfinished(db):
    job_id = waiting_job(db, "script")
    one, history, unfinished = statements("See a job")
    [[found_id, state, step, gate, *_]] = paste(db, one, job_id)
    assert (found_id, state, step, gate) == (job_id, "waiting", "review_script", "script")
    [[_at, event, step, attempt, detail]] = paste(db, history, job_id)
    assert (event, step, attempt, detail) == ("gate_opened", "review_script", 1, "script")
    assert [row[0] for row in paste(db, unfinished, job_id)] == [job_id]


def test_approve_resumes_the_job_at_the_next_worker_run(db):
    job_id = waiting_job(db, "script")
    [approve] = statements("Approve job 42")
    paste(db, approve, job_id)
    [woken] = queue.claim(db, 5, LEASE)
    assert (woken.id, woken.gate_decision) == (job_id, "approved")


def test_decide_is_the_insert_with_the_gate_deadline_and_who_decided(db):
    job_id = waiting_job(db, "script")
    [decide] = statements("Or decide it as the CLI does")
    assert paste(db, decide, job_id) == [[True]]
    assert paste(db, decide, job_id) == [[False]]
    [[expires_at_deadline]] = db.execute(
        "SELECT a.expires_at = j.gate_deadline::timestamp FROM approval_statuses a "
        "JOIN jobs j ON a.job_id = j.id::text WHERE j.id = :id",
        id=job_id,
    )
    assert expires_at_deadline
    [woken] = queue.claim(db, 5, LEASE)
    assert (woken.id, woken.gate_decision) == (job_id, "approved")
    events = db.execute(
        "SELECT event, detail FROM job_events WHERE job_id = :id ORDER BY id", id=job_id
    )
    assert events == [["gate_opened", "script"], ["operator_approved", "script"]]


def test_cancel_of_a_waiting_or_queued_job_wakes_the_worker_to_cancel_it(db):
    waiting = waiting_job(db, "storyboard")
    db.execute(
        "INSERT INTO jobs (chat_id, user_id, description, run_at) "
        "VALUES (2, 2, 'in backoff', now() + interval '10 minutes')"
    )
    [[queued]] = db.execute("SELECT id FROM jobs WHERE user_id = 2")
    [cancel] = statements("Cancel job 42")
    assert paste(db, cancel, waiting) == [[True]]
    assert paste(db, cancel, queued) == [[True]]
    assert paste(db, cancel, queued) == [[False]]
    woken = queue.claim(db, 5, LEASE)
    assert sorted(job.id for job in woken) == sorted([waiting, queued])
    assert all(job.cancel_requested for job in woken)
    [[event, detail]] = db.execute(
        "SELECT event, detail FROM job_events WHERE job_id = :id", id=queued
    )
    assert (event, detail) == ("operator_cancelled", "cancelled by the operator")


def test_cancel_of_a_running_job_reaches_its_heartbeat(db):
    db.execute("INSERT INTO jobs (chat_id, user_id, description) VALUES (1, 1, 'a cat')")
    [running] = queue.claim(db, 1, LEASE)
    [cancel] = statements("Cancel job 42")
    paste(db, cancel, running.id)
    assert queue.extend(db, running, LEASE) is True


def test_retry_requeues_a_failed_job_where_it_stopped(db):
    db.execute(
        "INSERT INTO jobs (chat_id, user_id, description, max_attempts) VALUES (1, 1, 'a cat', 1)"
    )
    [job] = queue.claim(db, 1, LEASE)
    queue.checkpoint(db, job, {"title": "t"}, "media", LEASE)
    assert queue.fail(db, job, "voice provider down") == "failed"
    [retry] = statements("Retry failed or cancelled job 42")
    assert paste(db, retry, job.id) == [["media"]]
    [again] = queue.claim(db, 1, LEASE)
    assert (again.id, again.step, again.attempts) == (job.id, "media", 1)
    events = db.execute(
        "SELECT event, detail FROM job_events WHERE job_id = :id ORDER BY id", id=job.id
    )
    assert events == [
        ["failed", "voice provider down"],
        ["requeued", "failed: voice provider down"],
    ]


def test_retry_of_a_cancelled_job_drops_its_cancel_rows(db):
    job_id = waiting_job(db, "script")
    paste(db, statements("Cancel job 42")[0], job_id)
    [claimed] = queue.claim(db, 1, LEASE)
    queue.cancel(db, job_id, "cancel requested", token=claimed.lease_token)
    assert paste(db, statements("Retry failed or cancelled job 42")[0], job_id) == [
        ["review_script"]
    ]
    assert db.execute("SELECT count(*) FROM approval_statuses")[0][0] == 0
    [again] = queue.claim(db, 1, LEASE)
    assert (again.id, again.step, again.cancel_requested) == (job_id, "review_script", False)


def test_retry_refuses_a_job_that_is_not_failed_or_cancelled_and_says_why(db):
    job_id = waiting_job(db, "script")
    [retry] = statements("Retry failed or cancelled job 42")
    with pytest.raises(
        pg8000.native.DatabaseError, match="only failed or cancelled jobs can be retried"
    ):
        paste(db, retry, job_id)
    assert db.one("get_job", id=job_id)["state"] == "waiting"


def test_resend_asks_for_an_unknown_delivery_once(db):
    db.execute("INSERT INTO jobs (chat_id, user_id, description) VALUES (1, 1, 'a cat')")
    [job] = queue.claim(db, 1, LEASE)
    queue.checkpoint(db, job, {}, "deliver", LEASE)
    queue.begin_delivery(db, job)
    queue.end_delivery(db, job, "unknown", "connection reset")
    queue.complete(db, job)
    [resend] = statements("Send job 42's video again")
    assert paste(db, resend, job.id) == [[True]]
    assert paste(db, resend, job.id) == [[False]]
    assert queue.delivery_state(db, job.id)["state"] == "resend"
    [again] = queue.claim(db, 1, LEASE)
    assert (again.id, again.step) == (job.id, "deliver")
