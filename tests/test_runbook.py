"""The README's emergency SQL, pasted as it stands, does what the README says it does."""

from __future__ import annotations

import re

import pg8000.native
import pytest

from shared import queue
from shared.config import REPO_ROOT
from shared.migrate import migration_files

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
    waiting = waiting_job(db, "images")
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


@pytest.mark.parametrize("gate", ["script", "images", "videos"])
def test_approve_at_each_gate_as_pasted_resumes_the_job(db, gate):
    job_id = waiting_job(db, gate)
    [approve] = statements(f"Approve job 42 at the {gate} gate")
    assert f"'{gate}', 'approved'" in approve
    paste(db, approve, job_id)
    [woken] = queue.claim(db, 5, LEASE)
    assert (woken.id, woken.prev_gate, woken.gate_decision) == (job_id, gate, "approved")


@pytest.mark.parametrize("gate", ["script", "images"])
def test_turn_down_at_each_gate_as_pasted_cancels_the_job(db, gate):
    job_id = waiting_job(db, gate)
    [refuse] = statements(f"Turn down job 42 at the {gate} gate")
    paste(db, refuse, job_id)
    [woken] = queue.claim(db, 5, LEASE)
    assert (woken.id, woken.gate_decision, woken.cancel_requested) == (job_id, "cancelled", True)


def test_a_storyboard_row_from_habit_still_resumes_a_job_at_the_images_gate(db):
    job_id = waiting_job(db, "images")
    [approve] = statements("Approve job 42 at the images gate")
    paste(db, approve.replace("'images'", "'storyboard'"), job_id)
    [woken] = queue.claim(db, 5, LEASE)
    assert (woken.id, woken.prev_gate, woken.gate_decision) == (job_id, "images", "approved")
    assert queue.decide(db, job_id, "images", "approved", "operator") is False, "decided already"


def test_decide_writes_storyboard_as_images(db):
    job_id = waiting_job(db, "images")
    assert queue.decide(db, job_id, "storyboard", "approved", "operator") is True
    assert queue.decide(db, job_id, "images", "cancelled", "user") is False
    rows = db.execute("SELECT approval_type, status FROM approval_statuses")
    assert rows == [["images", "approved"]]
    [woken] = queue.claim(db, 5, LEASE)
    assert woken.gate_decision == "approved"


def test_the_migration_moves_storyboard_jobs_revisions_and_rows_to_images(db):
    """A schema as it stood before 006, with a job in flight at the storyboard gate."""
    schema = f"{db.schema}_old"
    old = db.execute  # the same connection, pointed at a schema of its own
    old(f"CREATE SCHEMA {schema}")
    old(f"SET search_path TO {schema}, pg_catalog, public")
    try:
        old("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, applied_at TIMESTAMPTZ)")
        for path in migration_files():
            if path.name < "006":
                old(path.read_text(encoding="utf-8"))
                old("INSERT INTO schema_migrations (version) VALUES (:v)", v=path.name)
        old(
            "INSERT INTO jobs (chat_id, user_id, description, state, step, gate, gate_deadline,"
            " checkpoints) VALUES (1, 1, 'a cat', 'waiting', 'review_storyboard', 'storyboard',"
            " now() + interval '1 hour', '{\"review_storyboard\": {\"count\": 2}}')"
        )
        old(
            "INSERT INTO job_revisions (job_id, gate, kind) SELECT id, 'storyboard', 'regenerate' FROM jobs"
        )
        old(
            "INSERT INTO approval_statuses (job_id, approval_type, status, expires_at)"
            " SELECT id::text, 'storyboard', 'approved', now() FROM jobs"
        )
        for path in migration_files():
            if path.name >= "006":
                old(path.read_text(encoding="utf-8"))
        [[step, gate, checkpoints]] = old("SELECT step, gate, checkpoints FROM jobs")
        assert (step, gate, checkpoints) == (
            "review_images",
            "images",
            {"review_images": {"count": 2}},
        )
        assert old("SELECT gate FROM job_revisions") == [["images"]]
        assert old("SELECT approval_type FROM approval_statuses") == [["images"]]
        with pytest.raises(pg8000.native.DatabaseError, match="jobs_gate_check"):
            old("UPDATE jobs SET gate = 'storyboard'")
    finally:
        old(f"DROP SCHEMA {schema} CASCADE")
        old(f"SET search_path TO {db.schema}, pg_catalog, public")
