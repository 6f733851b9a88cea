"""Approval latency: from a decision row in approval_statuses to the job's claim (its next step
starting), for a listening worker against a cron-like poll measured in the same run.

Both run the real worker, `python -m functions.worker`, against embedded PostgreSQL (or
DATABASE_URL) in a throw-away schema, with the local providers and the local Telegram Bot API
server. Jobs wait at the script gate; each decision is the runbook's INSERT, made while the
worker is idle, after a random pause (up to the poll's interval for the baseline, so that it
lands anywhere in the poll's cycle).

- listening: one cron run with WORKER_LISTEN_SECONDS, woken by the trigger's NOTIFY;
- baseline: today's cron (WORKER_LISTEN_SECONDS=0), started every POLL_SECONDS with Render's
  single-run guarantee; on Render the schedule is every 60 s instead of 2.

The claim time is recorded by a bench-only trigger (the moment the job turns from waiting to
running) and the decision time by the INSERT, both on the database server's clock.

    python -m bench.latency

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import json
import logging
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from typing import Callable

from localapi.telegram_server import TelegramServer
from shared import db as dbmod
from shared import queue
from shared.config import REPO_ROOT, load_settings
from shared.migrate import migrate

DECISIONS = 20
POLL_SECONDS = 2.0
DESCRIPTION = "A lighthouse at dawn. Waves crash on the rocks. A ship comes home."

RECORD_CLAIMS = """
CREATE TABLE bench_claims (job_id BIGINT PRIMARY KEY, at TIMESTAMPTZ NOT NULL);
CREATE FUNCTION bench_record_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_claims VALUES (NEW.id, clock_timestamp()) ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;
CREATE TRIGGER bench_claim AFTER UPDATE OF state ON jobs FOR EACH ROW
    WHEN (OLD.state = 'waiting' AND NEW.state = 'running') EXECUTE FUNCTION bench_record_claim();
"""

DECIDE = """
INSERT INTO approval_statuses (job_id, approval_type, status, expires_at)
VALUES (:job_id, 'script', 'approved', now() + interval '1 day')
RETURNING clock_timestamp()
"""
CLAIMED = "SELECT at FROM bench_claims WHERE job_id = :j"


def worker_command() -> list[str]:
    return [sys.executable, "-m", "functions.worker"]


class CronLikePoll:
    """`python -m functions.worker` every `interval` seconds, never two runs at once: a run that
    falls due while one is going starts when that one ends, as Render's cron jobs do."""

    def __init__(self, env: dict[str, str], interval: float) -> None:
        self._env = env
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._schedule, name="cron-like-poll", daemon=True)

    def _schedule(self) -> None:
        slot = time.monotonic()
        while not self._stop.is_set():
            # A failed run is retried at the next slot, as on Render; its error is on stderr.
            subprocess.run(
                worker_command(),
                cwd=REPO_ROOT,
                env=self._env,
                stdout=subprocess.DEVNULL,
                check=False,
            )
            slot = max(slot + self._interval, time.monotonic())
            self._stop.wait(slot - time.monotonic())

    def __enter__(self) -> "CronLikePoll":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class ListeningRun:
    """One cron run that listens for as long as the bench needs it."""

    def __init__(self, env: dict[str, str]) -> None:
        self._env = dict(env, WORKER_LISTEN_SECONDS="600")

    def __enter__(self) -> "ListeningRun":
        self._proc = subprocess.Popen(
            worker_command(), cwd=REPO_ROOT, env=self._env, stdout=subprocess.DEVNULL
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._proc.terminate()  # it holds no lease while it waits
        self._proc.wait(timeout=30)


def wait_for(check: Callable[[], object], what: str, timeout: float = 60.0) -> object:
    """`check()`'s first truthy value, polled every 5 ms."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f} s")
        time.sleep(0.005)
    return value


def waiting_at(database: dbmod.Database, job_ids: list[int], gate: str) -> bool:
    rows = database.execute(
        "SELECT count(*) FROM jobs WHERE id = ANY(:ids) AND state = 'waiting' AND gate = :gate",
        ids=job_ids,
        gate=gate,
    )
    return rows[0][0] == len(job_ids)


def time_decision(database: dbmod.Database, job_id: int) -> float:
    """Seconds from the decision on `job_id` to its claim; returns once the job waits again."""
    [[decided_at]] = database.execute(DECIDE, job_id=str(job_id))
    claimed = wait_for(lambda: database.execute(CLAIMED, j=job_id), f"job {job_id} claimed")
    wait_for(lambda: waiting_at(database, [job_id], "images"), f"job {job_id} parked")
    return (claimed[0][0] - decided_at).total_seconds()


def measure(
    database: dbmod.Database, worker: ListeningRun | CronLikePoll, pause_max: float
) -> list[float]:
    """Seconds from each decision to its job's claim, one decision at a time."""
    with worker:
        job_ids = [
            queue.enqueue(
                database, chat_id=1000 + n, user_id=1000 + n, description=DESCRIPTION, language="en"
            )[0]
            for n in range(DECISIONS)
        ]
        wait_for(lambda: waiting_at(database, job_ids, "script"), "all scripts written")
        latencies = []
        for job_id in job_ids:
            time.sleep(random.uniform(0.0, pause_max))
            latencies.append(time_decision(database, job_id))
    return latencies


def percentiles(latencies: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(latencies, n=20, method="inclusive")
    return statistics.median(latencies), cuts[18]


def main() -> dict[str, object]:
    base = load_settings()
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with TelegramServer() as telegram:
        env = dict(
            os.environ,
            DATABASE_URL=dbmod.database_url(base),
            DATABASE_SCHEMA=schema,
            TELEGRAM_BOT_TOKEN=telegram.token,
            TELEGRAM_API_BASE=telegram.base_url,
            VIDEO_SECONDS="5",
            LOG_LEVEL="WARNING",
            PYTHONPATH=str(REPO_ROOT),
        )
        database = dbmod.connect(load_settings(env), "bench")
        try:
            migrate(database)
            database.execute(RECORD_CLAIMS)
            started = time.perf_counter()
            # A listener has no cycle to land in: a short pause keeps its run short.
            listening = measure(database, ListeningRun(env), 0.2)
            polling = measure(database, CronLikePoll(env, POLL_SECONDS), POLL_SECONDS)
            elapsed = time.perf_counter() - started
        finally:
            database.execute(f"DROP SCHEMA {schema} CASCADE")
            database.close()
    listen_p50, listen_p95 = percentiles(listening)
    poll_p50, poll_p95 = percentiles(polling)
    print(f"decision -> claim, {DECISIONS} decisions each, {elapsed:.0f} s in all")
    print(
        f"listening cron run (WORKER_LISTEN_SECONDS): p50 {listen_p50 * 1000:.1f} ms, "
        f"p95 {listen_p95 * 1000:.1f} ms, max {max(listening) * 1000:.1f} ms"
    )
    print(
        f"cron-like poll every {POLL_SECONDS:g} s (today's cron): p50 {poll_p50:.2f} s, "
        f"p95 {poll_p95:.2f} s, max {max(polling):.2f} s"
    )
    figures: dict[str, object] = {
        "bench": "latency",
        "decisions": DECISIONS,
        "listen_p50_s": round(listen_p50, 4),
        "listen_p95_s": round(listen_p95, 4),
        "listen_max_s": round(max(listening), 4),
        "poll_interval_s": POLL_SECONDS,
        "poll_p50_s": round(poll_p50, 3),
        "poll_p95_s": round(poll_p95, 3),
        "poll_max_s": round(max(polling), 3),
        "ratio_p95": round(poll_p95 / listen_p95, 1),
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
