"""The seed's limits: RATE_LIMIT_PER_MINUTE and RATE_LIMIT_PER_HOUR per user, checked in the
webhook's transaction; MAX_ACTIVE_JOBS_PER_USER under concurrent descriptions; and
MAX_CONCURRENT_JOBS, the jobs doing generation work at once across all workers."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from flask.testing import FlaskClient

from shared import db as dbmod
from shared import queue
from shared.config import REPO_ROOT, Settings, load_settings
from shared.webhook import create_app, webhook_of
from tests.support import DatabaseClock, child_env, post, text_message

LEASE = 60.0
USER = 5150
LIMITS = dict(max_attempts=3, max_active=100, max_per_day=100, per_minute=5, per_hour=20)


def describe(db: dbmod.Database, update_id: int, user_id: int = USER, **limits: int) -> Any:
    """A description from `user_id`, straight through the queue, with LIMITS unless overridden."""
    return queue.create_job_from_update(
        db,
        update_id=update_id,
        chat_id=user_id,
        user_id=user_id,
        language="en",
        description=f"a cat, take {update_id}",
        **{**LIMITS, "max_running": 5, **limits},
    )


def test_five_a_minute_pass_and_the_sixth_is_told_when_the_oldest_leaves(
    db: dbmod.Database, clock: DatabaseClock
) -> None:
    assert describe(db, 1).outcome == "created"
    clock.advance(20)
    assert [describe(db, n).outcome for n in range(2, 6)] == ["created"] * 4
    refused = describe(db, 6)
    assert (refused.outcome, refused.job_id) == ("rate_limit_minute", None)
    assert 38 <= refused.retry_after <= 40, "the first job leaves the minute 40 s from now"
    clock.advance(refused.retry_after)
    assert describe(db, 7).outcome == "created", "the first job left the window"
    again = describe(db, 8)
    assert again.outcome == "rate_limit_minute" and again.retry_after <= 20


def test_twenty_an_hour_pass_and_the_twenty_first_waits_for_the_oldest(
    db: dbmod.Database, clock: DatabaseClock
) -> None:
    outcomes = []
    for minute in range(4):
        outcomes += [describe(db, minute * 10 + n).outcome for n in range(5)]
        clock.advance(61)
    assert outcomes == ["created"] * 20
    refused = describe(db, 100)
    assert refused.outcome == "rate_limit_hour"
    first_leaves = 3600 - 4 * 61
    assert first_leaves - 3 <= refused.retry_after <= first_leaves
    clock.advance(refused.retry_after)
    assert [describe(db, n).outcome for n in range(101, 106)] == ["created"] * 5, "5 left"
    assert describe(db, 106).outcome == "rate_limit_hour"


def test_another_user_and_a_redelivery_are_not_counted(db: dbmod.Database) -> None:
    assert [describe(db, n).outcome for n in range(1, 6)] == ["created"] * 5
    assert describe(db, 5).outcome == "duplicate"
    assert describe(db, 6, user_id=USER + 1).outcome == "created"


def webhook(webhook_env: dict[str, str], **env: str) -> Any:
    return create_app(load_settings({**webhook_env, "MAX_ACTIVE_JOBS_PER_USER": "50", **env}))


def reply(client: FlaskClient, update_id: int, language: str = "en") -> str:
    response = post(client, text_message("A cat on a roof.", update_id, language=language))
    assert response.status_code == 200
    return response.get_json()["text"]


def test_the_user_past_a_limit_is_told_how_long_to_wait_in_their_language(
    webhook_env: dict[str, str], clock: DatabaseClock
) -> None:
    app = webhook(webhook_env, MAX_JOBS_PER_DAY="50", RATE_LIMIT_PER_HOUR="6")
    client = app.test_client()
    try:
        assert all("#" in reply(client, n) for n in range(1, 6))
        minute = reply(client, 6)
        assert minute.startswith("⏱ At most 5 videos a minute. Send your description again in ")
        assert minute.endswith(("again in 1 min 00 s.", "again in 59 s."))
        clock.advance(61)
        assert "#" in reply(client, 7)
        hour = reply(client, 8, language="ru")
        assert hour.startswith("⏱ Не больше 6 видео в час. Отправьте описание снова через 58 мин")
    finally:
        webhook_of(app).close()


def test_when_every_slot_is_taken_the_acknowledgement_tells_the_place_in_line(
    webhook_env: dict[str, str], db: dbmod.Database
) -> None:
    app = webhook(webhook_env, MAX_CONCURRENT_JOBS="2")
    client = app.test_client()
    try:
        queued_jobs(db, 1)
        queue.claim(db, 1, LEASE)
        free = reply(client, 1)
        assert free.startswith("👍") and "line" not in free, "a slot is free for it"
        full = reply(client, 2)
        assert "\n\n⏳ All 2 generation slots are busy. Jobs in line ahead of yours: 1." in full
        queue.claim(db, 5, LEASE)
        ru = reply(client, 3, language="ru")
        assert "Перед вашим заданием в очереди: 0." in ru
    finally:
        webhook_of(app).close()


def test_a_long_line_is_counted_up_to_a_hundred(
    webhook_env: dict[str, str], db: dbmod.Database
) -> None:
    """Each description counts at most 100 jobs of the line, however long it is."""
    app = webhook(webhook_env, MAX_CONCURRENT_JOBS="2")
    client = app.test_client()
    try:
        queued_jobs(db, 99)
        assert "Jobs in line ahead of yours: 99." in reply(client, 1)
        assert "Jobs in line ahead of yours: 100+." in reply(client, 2)
        assert "Перед вашим заданием в очереди: 100+." in reply(client, 3, language="ru")
    finally:
        webhook_of(app).close()


def at_once(count: int, settings: Settings, work: Callable[[dbmod.Database, int], Any]) -> list:
    """`work(db, i)` in `count` threads, each with its own connection, released together."""
    connections = [dbmod.connect(settings, "tests") for _ in range(count)]
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        results[i] = work(connections[i], i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for connection in connections:
        connection.close()
    return results


def test_descriptions_at_the_same_instant_cannot_both_pass_a_limit(
    db: dbmod.Database, settings: Settings
) -> None:
    for attempt in range(5):
        active = at_once(
            8,
            settings,
            lambda conn, i, a=attempt: describe(conn, 1000 * (a + 1) + i, USER + a, max_active=1),
        )
        assert sorted(r.outcome for r in active).count("created") == 1, active
    minute = at_once(8, settings, lambda conn, i: describe(conn, 9000 + i, 77, per_minute=3))
    assert [r.outcome for r in minute].count("created") == 3, minute


def queued_jobs(db: dbmod.Database, count: int) -> list[int]:
    return [
        queue.enqueue(db, chat_id=n, user_id=n, description=f"job {n}")[0]
        for n in range(1, count + 1)
    ]


def test_over_the_cap_a_job_stays_in_line_and_a_cancel_is_not_held_up(db: dbmod.Database) -> None:
    first, second, third, fourth = queued_jobs(db, 4)
    running = queue.claim(db, 5, LEASE, max_running=2)
    assert [job.id for job in running] == [first, second]
    assert queue.claim(db, 5, LEASE, max_running=2) == []
    assert db.one("get_job", id=third)["state"] == "queued"
    assert db.one("get_job", id=third)["lease_token"] is None
    queue.request_cancel(db, fourth, "changed my mind")
    [cancelled] = queue.claim(db, 5, LEASE, max_running=2)
    assert cancelled.id == fourth and cancelled.cancel_requested
    queue.open_gate(db, running[0], "script", message_id=1, ttl_seconds=3600)
    [woken] = queue.claim(db, 5, LEASE, max_running=3)
    assert woken.id == third, "a job parked at a gate does no work: its slot is free"


def test_two_claims_at_once_cannot_both_take_the_last_slot(
    db: dbmod.Database, settings: Settings
) -> None:
    queued_jobs(db, 10)
    for running in range(1, 4):
        claims = at_once(6, settings, lambda conn, i, cap=running: queue.claim(conn, 1, LEASE, cap))
        assert sum(len(jobs) for jobs in claims) == 1, claims
        assert queue.claim(db, 1, LEASE, running) == []


PROBE = """
CREATE TABLE {schema}.probe_runs (job_id BIGINT, state TEXT, at TIMESTAMPTZ);
CREATE FUNCTION {schema}.probe_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.probe_runs VALUES (NEW.id, NEW.state, clock_timestamp());
    RETURN NULL;
END
$$;
CREATE TRIGGER probe AFTER UPDATE OF state ON {schema}.jobs FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state AND 'running' IN (OLD.state, NEW.state))
    EXECUTE FUNCTION {schema}.probe_run()
"""


def most_running_at_once(db: dbmod.Database) -> int:
    """The most jobs that were running at the same moment, from the probe's starts and ends."""
    most = now = 0
    for (state,) in db.execute("SELECT state FROM probe_runs ORDER BY at"):
        now += 1 if state == "running" else -1
        most = max(most, now)
    return most


def test_two_looping_workers_run_no_more_than_the_cap_at_once(
    db: dbmod.Database, worker_env: dict[str, str], tmp_path: Path
) -> None:
    db.execute(PROBE.format(schema=db.schema))
    jobs = queued_jobs(db, 3)
    env = child_env(
        worker_env,
        MAX_CONCURRENT_JOBS="1",
        APPROVAL_GATES="",
        VIDEO_SECONDS="5",
        WORKER_POLL_SECONDS="0.2",
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "functions.worker", "--loop"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / f"worker{n}.log").open("w"),
        )
        for n in range(2)
    ]
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            states = {db.one("get_job", id=job_id)["state"] for job_id in jobs}
            if states == {"done"}:
                break
            time.sleep(0.5)
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(timeout=30)
    logs = "\n".join(path.read_text() for path in sorted(tmp_path.glob("worker*.log")))
    assert states == {"done"}, logs
    assert db.execute("SELECT count(*) FROM probe_runs WHERE state = 'running'")[0][0] >= 3
    assert most_running_at_once(db) == 1
