"""The README's emergency SQL, pasted as it stands, does what the README says it does."""

from __future__ import annotations

import re

from shared import queue
from tests.conftest import REPO_ROOT

LEASE = 60.0


def runbook_statements() -> dict[str, list[str]]:
    """The runbook's SQL blocks, by the sentence that introduces each one."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Emergency SQL runbook", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"\n([^\n]+)\n\n```sql\n(.*?)```", section, re.DOTALL)
    return {intro.strip(): [s.strip() for s in sql.split(";") if s.strip()] for intro, sql in blocks}


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


def test_see_a_job_and_what_is_unfinished(db):
    job_id = waiting_job(db, "script")
    one, unfinished = statements("See a job")
    [[found_id, state, step, gate, *_]] = paste(db, one, job_id)
    assert (found_id, state, step, gate) == (job_id, "waiting", "review_script", "script")
    assert [row[0] for row in paste(db, unfinished, job_id)] == [job_id]


def test_approve_resumes_the_job_at_the_next_worker_run(db):
    job_id = waiting_job(db, "script")
    [approve] = statements("Approve job 42")
    paste(db, approve, job_id)
    [woken] = queue.claim(db, 5, LEASE)
    assert (woken.id, woken.gate_decision) == (job_id, "approved")


def test_cancel_of_a_waiting_or_queued_job_wakes_the_worker_to_cancel_it(db):
    waiting = waiting_job(db, "storyboard")
    db.execute("INSERT INTO jobs (chat_id, user_id, description, run_at) "
               "VALUES (2, 2, 'in backoff', now() + interval '10 minutes')")
    [[queued]] = db.execute("SELECT id FROM jobs WHERE user_id = 2")
    [cancel] = statements("Cancel job 42")
    paste(db, cancel, waiting)
    paste(db, cancel, queued)
    woken = queue.claim(db, 5, LEASE)
    assert sorted(job.id for job in woken) == sorted([waiting, queued])
    assert all(job.cancel_requested for job in woken)


def test_cancel_of_a_running_job_reaches_its_heartbeat(db):
    db.execute("INSERT INTO jobs (chat_id, user_id, description) VALUES (1, 1, 'a cat')")
    [running] = queue.claim(db, 1, LEASE)
    [cancel] = statements("Cancel job 42")
    paste(db, cancel, running.id)
    assert queue.extend(db, running, LEASE) is True


def test_retry_requeues_a_failed_job_where_it_stopped(db):
    db.execute("INSERT INTO jobs (chat_id, user_id, description, max_attempts) VALUES (1, 1, 'a cat', 1)")
    [job] = queue.claim(db, 1, LEASE)
    queue.checkpoint(db, job, {"title": "t"}, "media", LEASE)
    assert queue.fail(db, job, "voice provider down") == "failed"
    [retry] = statements("Retry failed job 42")
    paste(db, retry, job.id)
    [again] = queue.claim(db, 1, LEASE)
    assert (again.id, again.step, again.attempts) == (job.id, "media", 1)
