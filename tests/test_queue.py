"""The job state machine against real PostgreSQL: claims, leases, crashes, backoff, gates."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from shared import db as dbmod
from shared import queue, sql
from shared.config import REPO_ROOT
from tests.support import child_env

LEASE = 60.0


def make_jobs(db: dbmod.Database, count: int) -> list[int]:
    rows = db.execute(
        "INSERT INTO jobs (chat_id, user_id, description) "
        "SELECT g, g, 'job ' || g FROM generate_series(1, :n) g RETURNING id",
        n=count,
    )
    return [row[0] for row in rows]


def job_row(db: dbmod.Database, job_id: int) -> dict:
    row = db.one("get_job", id=job_id)
    assert row is not None
    return row


def make_due(db: dbmod.Database, job_id: int) -> None:
    """Let time pass for one job: its retry delay or lease is over."""
    db.execute(
        "UPDATE jobs SET run_at = now(), lease_expires_at = now() - interval '1 second' WHERE id = :id",
        id=job_id,
    )


def spawn(schema_env: dict[str, str], *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.queue_child", *args],
        cwd=REPO_ROOT,
        env=child_env(schema_env, **env),
        stdout=subprocess.PIPE,
        text=True,
    )


def test_enqueue_is_idempotent_by_key(db):
    first = queue.enqueue(db, chat_id=1, user_id=1, description="a cat", idempotency_key="u:7")
    again = queue.enqueue(db, chat_id=1, user_id=1, description="a cat", idempotency_key="u:7")
    assert first == (first[0], True)
    assert again == (first[0], False)
    assert db.execute("SELECT count(*) FROM jobs")[0][0] == 1


def test_claim_leases_counts_attempts_and_skips_leased_jobs(db):
    [job_id] = make_jobs(db, 1)
    [job] = queue.claim(db, 5, LEASE)
    assert (job.id, job.attempts, job.prev_state) == (job_id, 1, "queued")
    row = job_row(db, job_id)
    assert row["state"] == "running" and row["lease_token"] == job.lease_token
    assert queue.claim(db, 5, LEASE) == []


@pytest.mark.parametrize("max_running", [None, 1])
def test_claim_finishes_older_jobs_before_it_starts_newer_ones(db, max_running):
    """A job back from a wait (here: due since a moment ago) goes before the jobs that came
    after it, due for longer: a crowd's first films arrive while later jobs wait on providers."""
    older, newer = make_jobs(db, 2)
    db.execute("UPDATE jobs SET run_at = now() - interval '1 second' WHERE id = :id", id=older)
    db.execute("UPDATE jobs SET run_at = now() - interval '1 minute' WHERE id = :id", id=newer)
    [first] = queue.claim(db, 1, LEASE, max_running=max_running)
    assert first.id == older


def test_claim_takes_back_an_expired_lease_and_fences_the_old_owner(db):
    [job_id] = make_jobs(db, 1)
    [old] = queue.claim(db, 1, LEASE)
    make_due(db, job_id)
    [new] = queue.claim(db, 1, LEASE)
    assert new.id == old.id and new.attempts == 2 and new.lease_token != old.lease_token
    for write in (
        lambda: queue.extend(db, old, LEASE),
        lambda: queue.checkpoint(db, old, {"x": 1}, "media", LEASE),
        lambda: queue.save_artifact(db, old, "voice/0.wav", b"old"),
        lambda: queue.complete(db, old),
        lambda: queue.fail(db, old, "old owner"),
    ):
        with pytest.raises(queue.LeaseLost):
            write()
    assert job_row(db, job_id)["state"] == "running"
    assert queue.load_artifacts(db, job_id) == {}
    queue.complete(db, new)
    assert job_row(db, job_id)["state"] == "done"


def test_checkpoint_stores_results_per_step_and_advances(db):
    make_jobs(db, 1)
    [job] = queue.claim(db, 1, LEASE)
    queue.checkpoint(db, job, {"title": "Кот"}, "review_script", LEASE)
    queue.checkpoint(db, job, {"approved": True}, "media", LEASE)
    row = job_row(db, job.id)
    assert row["step"] == "media"
    assert row["checkpoints"] == {"script": {"title": "Кот"}, "review_script": {"approved": True}}


def test_fail_backs_off_exponentially_with_jitter_then_fails(db):
    [job_id] = make_jobs(db, 1)
    db.execute("UPDATE jobs SET max_attempts = 4 WHERE id = :id", id=job_id)
    delays = []
    for attempt in range(1, 5):
        [job] = queue.claim(db, 1, LEASE)
        assert job.attempts == attempt
        state = queue.fail(db, job, f"boom {attempt}", base_delay=10, max_delay=30)
        row = job_row(db, job_id)
        if attempt < 4:
            assert state == "queued"
            delays.append((row["run_at"] - row["updated_at"]).total_seconds())
            make_due(db, job_id)
        else:
            assert state == "failed" and row["finished_at"] is not None
    # base 10 s doubling, capped at 30 s, with equal jitter: each in [half, full] of its cap.
    for delay, full in zip(delays, (10, 20, 30)):
        assert full / 2 - 0.5 <= delay <= full + 0.5
    events = db.execute(
        "SELECT event, attempt, detail FROM job_events WHERE job_id = :id ORDER BY id", id=job_id
    )
    assert [e[0] for e in events] == ["retry_scheduled"] * 3 + ["failed"]
    assert events[-1][2] == "boom 4"
    assert queue.claim(db, 1, LEASE) == []


def test_fail_honours_retry_after_and_permanent(db):
    make_jobs(db, 2)
    first, second = queue.claim(db, 2, LEASE)
    queue.fail(db, first, "429", retry_after=120, base_delay=1, max_delay=2)
    row = job_row(db, first.id)
    assert (row["run_at"] - row["updated_at"]).total_seconds() >= 119.5
    assert queue.fail(db, second, "bad API key", permanent=True) == "failed"


def test_crash_loop_uses_attempts_up(db):
    [job_id] = make_jobs(db, 1)
    for _ in range(5):
        queue.claim(db, 1, LEASE)
        make_due(db, job_id)
    [job] = queue.claim(db, 1, LEASE)
    assert job.attempts == 6 > job.max_attempts


def gate_job(db: dbmod.Database, gate: str = "script", ttl: float = 3600) -> queue.ClaimedJob:
    make_jobs(db, 1)
    [job] = queue.claim(db, 1, LEASE)
    queue.checkpoint(db, job, {"title": "t"}, f"review_{gate}", LEASE)
    queue.open_gate(db, job, gate, message_id=77, ttl_seconds=ttl)
    return job


def operator_insert(db: dbmod.Database, job_id: int, gate: str, status: str) -> None:
    """Exactly the statement the README's runbook tells an operator to paste into psql."""
    db.execute(
        f"INSERT INTO {db.schema}.approval_statuses (job_id, approval_type, status, expires_at) "
        f"VALUES ('{job_id}', '{gate}', '{status}', now() + interval '1 day')"
    )


def test_waiting_job_is_not_claimable_until_decided(db):
    job = gate_job(db)
    row = job_row(db, job.id)
    assert (row["state"], row["gate"], row["lease_token"]) == ("waiting", "script", None)
    assert queue.claim(db, 5, LEASE) == []


def test_plain_sql_approval_resumes_the_job_at_the_next_step(db):
    job = gate_job(db)
    operator_insert(db, job.id, "script", "approved")
    [woken] = queue.claim(db, 5, LEASE)
    assert (woken.prev_state, woken.prev_gate, woken.gate_decision) == (
        "waiting",
        "script",
        "approved",
    )
    assert woken.attempts == 1 and not woken.cancel_requested and not woken.gate_expired
    assert woken.step == "review_script" and woken.gate_message_id == 77


def test_plain_sql_cancel_wakes_the_job_to_be_cancelled(db):
    job = gate_job(db, gate="images")
    operator_insert(db, job.id, "images", "cancelled")
    [woken] = queue.claim(db, 5, LEASE)
    assert woken.gate_decision == "cancelled" and woken.cancel_requested


def test_decision_for_another_gate_does_not_wake_but_a_cancel_of_any_kind_does(db):
    job = gate_job(db, gate="images")
    operator_insert(db, job.id, "script", "approved")
    assert queue.claim(db, 5, LEASE) == []
    operator_insert(db, job.id, "job", "cancelled")
    [woken] = queue.claim(db, 5, LEASE)
    assert woken.gate_decision is None and woken.cancel_requested


def test_gate_without_decision_expires_at_its_deadline(db):
    job = gate_job(db, ttl=0.2)
    assert queue.claim(db, 5, LEASE) == []
    time.sleep(0.3)
    [woken] = queue.claim(db, 5, LEASE)
    assert woken.id == job.id and woken.gate_expired and woken.gate_decision is None


def test_pending_revision_wakes_the_gate(db):
    job = gate_job(db)
    db.execute(
        "INSERT INTO job_revisions (job_id, gate, kind) VALUES (:id, 'script', 'regenerate')",
        id=job.id,
    )
    [woken] = queue.claim(db, 5, LEASE)
    [revision] = db.run("pending_revision", id=job.id, gate="script")
    assert revision["kind"] == "regenerate"
    assert db.run("consume_revision", revision_id=revision["id"], token=woken.lease_token)
    assert db.run("pending_revision", id=job.id, gate="script") == []


def test_cancel_of_a_running_job_fences_its_worker(db):
    make_jobs(db, 1)
    [job] = queue.claim(db, 1, LEASE)
    assert queue.cancel(db, job.id, "user asked")
    with pytest.raises(queue.LeaseLost):
        queue.extend(db, job, LEASE)
    row = job_row(db, job.id)
    assert (row["state"], row["cancel_reason"]) == ("cancelled", "user asked")
    assert not queue.cancel(db, job.id, "twice")


def test_heartbeat_reports_an_operator_cancel(db):
    make_jobs(db, 1)
    [job] = queue.claim(db, 1, LEASE)
    assert queue.extend(db, job, LEASE) is False
    operator_insert(db, job.id, "job", "cancelled")
    assert queue.extend(db, job, LEASE) is True


def test_artifacts_are_fenced_and_deleted_when_the_job_ends(db):
    make_jobs(db, 1)
    [job] = queue.claim(db, 1, LEASE)
    queue.save_artifact(db, job, "voice/0.wav", b"RIFF")
    queue.save_artifact(db, job, "image/0.png", b"\x89PNG")
    assert queue.load_artifacts(db, job.id, "voice/") == {"voice/0.wav": b"RIFF"}
    queue.complete(db, job)
    assert queue.load_artifacts(db, job.id) == {}


def test_delivery_record_is_created_once(db):
    make_jobs(db, 1)
    [job] = queue.claim(db, 1, LEASE)
    assert db.one("begin_delivery", id=job.id, token=job.lease_token) == {"created": True}
    assert db.one("begin_delivery", id=job.id, token=job.lease_token) == {"created": False}


def test_concurrent_claimers_never_claim_the_same_job(db, schema_env):
    total = 3000
    make_jobs(db, total)
    script = (
        "import sys\n"
        "from shared import db, queue\n"
        "from shared.config import load_settings\n"
        "d = db.connect(load_settings())\n"
        "while True:\n"
        "    jobs = queue.claim(d, 10, 60)\n"
        "    if not jobs:\n"
        "        break\n"
        "    for j in jobs:\n"
        "        queue.complete(d, j)\n"
        "        print(j.id)\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=REPO_ROOT,
            env=child_env(schema_env),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    claimed = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        claimed += [int(line) for line in out.split()]
    assert len(claimed) == total
    assert len(set(claimed)) == total
    assert (
        db.execute("SELECT count(*) FROM jobs WHERE state = 'done' AND attempts = 1")[0][0] == total
    )


def test_worker_killed_mid_job_is_taken_over_after_its_lease(db, schema_env):
    [job_id] = make_jobs(db, 1)
    child = spawn(schema_env, "work", "30", WORKER_LEASE_SECONDS="5")
    assert child.stdout.readline().startswith(f"claimed {job_id}")
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert job_row(db, job_id)["state"] == "running"
    assert queue.claim(db, 1, LEASE) == [], "taken before the lease expired"
    deadline = time.monotonic() + 15
    taken = []
    while not taken and time.monotonic() < deadline:
        taken = queue.claim(db, 1, LEASE)
        time.sleep(0.2)
    [job] = taken
    assert job.attempts == 2
    queue.checkpoint(db, job, {"by": str(job.lease_token)}, "done", LEASE)
    queue.complete(db, job)
    row = job_row(db, job_id)
    assert row["state"] == "done"
    assert row["checkpoints"] == {"script": {"by": str(job.lease_token)}}


def test_killed_sender_never_sends_twice(db, schema_env):
    [job_id] = make_jobs(db, 1)
    child = spawn(schema_env, "deliver", WORKER_LEASE_SECONDS="5")
    assert child.stdout.readline().startswith("claimed")
    assert child.stdout.readline().strip() == "sending"
    child.send_signal(signal.SIGKILL)
    child.wait()
    make_due(db, job_id)
    [job] = queue.claim(db, 1, LEASE)
    assert db.one("begin_delivery", id=job.id, token=job.lease_token) == {"created": False}


def test_zombie_worker_cannot_write_over_the_new_owner(db, schema_env):
    [job_id] = make_jobs(db, 1)
    zombie = spawn(schema_env, "work", "3", WORKER_LEASE_SECONDS="5")
    assert zombie.stdout.readline().startswith("claimed")
    os.kill(zombie.pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 15
        taken = []
        while not taken and time.monotonic() < deadline:
            taken = queue.claim(db, 1, LEASE)
            time.sleep(0.2)
        [owner] = taken
    finally:
        os.kill(zombie.pid, signal.SIGCONT)
    out, _ = zombie.communicate(timeout=30)
    assert "lease lost" in out and zombie.returncode == 3
    row = job_row(db, job_id)
    assert row["state"] == "running" and row["lease_token"] == owner.lease_token
    assert row["checkpoints"] == {}
    queue.complete(db, owner)


def test_claim_time_does_not_grow_with_finished_rows(db):
    """The partial index keeps finished rows out of the claim's way (see bench/queue.py)."""
    db.execute(
        "INSERT INTO jobs (chat_id, user_id, description, state, finished_at) "
        "SELECT g, g, 'old', 'done', now() FROM generate_series(1, 20000) g"
    )
    db.execute("ANALYZE jobs")
    for cap in (None, 5):
        plan = "\n".join(
            row[0]
            for row in db.execute(
                "EXPLAIN " + sql.query("claim_jobs"),
                n=10,
                lease_seconds=60,
                max_running=cap,
                worker_id=None,
            )
        )
        assert "Seq Scan on jobs" not in plan, cap


def test_revisions_are_taken_under_the_lease(db):
    [job_id] = make_jobs(db, 1)
    [old] = queue.claim(db, 1, LEASE)
    queue.checkpoint(db, old, {}, "review_script", LEASE)
    queue.open_gate(db, old, "script", message_id=5, ttl_seconds=3600)
    assert queue.add_revision(db, job_id, "script", "edit", "1. A new scene")
    assert not queue.add_revision(db, job_id, "script", "regenerate", None)
    [job] = queue.claim(db, 1, LEASE)
    revision = queue.pending_revision(db, job_id, "script")
    assert (revision["kind"], revision["text"]) == ("edit", "1. A new scene")
    with pytest.raises(queue.LeaseLost):
        queue.consume_revision(db, old, revision["id"])
    queue.consume_revision(db, job, revision["id"])
    assert queue.pending_revision(db, job_id, "script") is None


def test_blocked_chats(db):
    assert not queue.chat_is_blocked(db, 7)
    queue.block_chat(db, 7)
    queue.block_chat(db, 7)
    assert queue.chat_is_blocked(db, 7)
    queue.unblock_chat(db, 7)
    assert not queue.chat_is_blocked(db, 7)


def test_every_change_of_state_is_in_the_history_whoever_makes_it(db):
    [job_id] = make_jobs(db, 1)
    [job] = queue.claim(db, 1, LEASE)
    queue.defer(db, job, 0, "rate limited for 3 s")
    [job] = queue.claim(db, 1, LEASE)
    queue.open_gate(db, job, "script", message_id=5, ttl_seconds=3600)
    db.execute(
        "UPDATE jobs SET state = 'cancelled', cancel_reason = 'by hand', gate = NULL, "
        "gate_deadline = NULL WHERE id = :id",
        id=job_id,
    )
    assert queue.retry(db, job_id) == "script"
    events = db.execute(
        "SELECT event, attempt, detail FROM job_events WHERE job_id = :id ORDER BY id", id=job_id
    )
    assert events == [
        ["deferred", 0, "rate limited for 3 s"],
        ["gate_opened", 1, "script"],
        ["cancelled", 1, "by hand"],
        ["requeued", 0, "cancelled: by hand"],
    ]
    with pytest.raises(queue.Refused, match=f"job {job_id} is queued: only failed or cancelled"):
        queue.retry(db, job_id)
    with pytest.raises(queue.Refused, match="no job 987654"):
        queue.retry(db, 987654)
