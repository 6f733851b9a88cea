"""Burn-down of 10,000 no-op jobs with 1, 2 and 4 worker processes, against the database's own
ceiling for the same writes, and claim latency as finished rows pile up.

    python -m bench.queue           # embedded PostgreSQL, or DATABASE_URL when set

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import time
import uuid

from shared import db as dbmod
from shared import queue
from shared.config import Settings, load_settings
from shared.migrate import migrate

JOBS = 10_000
CLAIM_BATCH = 20
LEASE = 120.0


def fresh_schema(base: Settings) -> Settings:
    env = dict(
        os.environ,
        DATABASE_URL=dbmod.database_url(base),
        DATABASE_SCHEMA=f"bench_{uuid.uuid4().hex[:8]}",
    )
    settings = load_settings(env)
    migrate(dbmod.connect(settings, "bench"))
    return settings


def drop_schema(settings: Settings) -> None:
    database = dbmod.connect(settings, "bench")
    database.execute(f"DROP SCHEMA {settings.database_schema} CASCADE")
    database.close()


def enqueue_noops(database: dbmod.Database, count: int) -> None:
    database.execute(
        "INSERT INTO jobs (chat_id, user_id, description) "
        "SELECT g, g, 'noop' FROM generate_series(1, :n) g",
        n=count,
    )
    database.execute("ANALYZE jobs")


def burn(settings: Settings, done: multiprocessing.Value) -> None:
    database = dbmod.connect(settings, "bench-worker")
    finished = 0
    while jobs := queue.claim(database, CLAIM_BATCH, LEASE):
        for job in jobs:
            queue.complete(database, job)
        finished += len(jobs)
    with done.get_lock():
        done.value += finished


def burn_down(settings: Settings, workers: int) -> float:
    database = dbmod.connect(settings, "bench")
    database.execute("TRUNCATE jobs CASCADE")
    enqueue_noops(database, JOBS)
    done = multiprocessing.Value("i", 0)
    procs = [multiprocessing.Process(target=burn, args=(settings, done)) for _ in range(workers)]
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    elapsed = time.perf_counter() - started
    assert done.value == JOBS, f"{done.value} of {JOBS} jobs done"
    left = database.execute("SELECT count(*) FROM jobs WHERE state <> 'done'")[0][0]
    assert left == 0, f"{left} jobs not done"
    database.close()
    return JOBS / elapsed


def ceiling(settings: Settings) -> tuple[float, float]:
    """A plain prepared pg8000 loop: one INSERT and one UPDATE per job, the same row shape;
    and the UPDATE alone per job, comparable to draining jobs that were enqueued beforehand."""
    database = dbmod.connect(settings, "bench")
    database.execute("TRUNCATE jobs CASCADE")
    insert = database.conn.prepare(
        "INSERT INTO jobs (chat_id, user_id, description) VALUES (:n, :n, 'noop') RETURNING id"
    )
    update = database.conn.prepare(
        "UPDATE jobs SET state = 'done', finished_at = now() WHERE id = :id"
    )
    started = time.perf_counter()
    ids = []
    for n in range(JOBS):
        [[job_id]] = insert.run(n=n)
        update.run(id=job_id)
        ids.append(job_id)
    elapsed = time.perf_counter() - started
    finish_again = database.conn.prepare("UPDATE jobs SET finished_at = now() WHERE id = :id")
    started = time.perf_counter()
    for job_id in ids:
        finish_again.run(id=job_id)
    update_only = time.perf_counter() - started
    database.close()
    return JOBS / elapsed, JOBS / update_only


def claim_ms(settings: Settings, finished_rows: int) -> float:
    """Median time of claim(1) with `finished_rows` done rows and 200 runnable ones in the table."""
    database = dbmod.connect(settings, "bench")
    database.execute("TRUNCATE jobs CASCADE")
    database.execute(
        "INSERT INTO jobs (chat_id, user_id, description, state, finished_at) "
        "SELECT g, g, 'old', 'done', now() FROM generate_series(1, :n) g",
        n=finished_rows,
    )
    enqueue_noops(database, 200)
    database.execute("VACUUM ANALYZE jobs")
    timings = []
    for _ in range(200):
        started = time.perf_counter()
        [job] = queue.claim(database, 1, LEASE)
        timings.append((time.perf_counter() - started) * 1000)
        queue.complete(database, job)
    database.close()
    return statistics.median(timings)


def main() -> None:
    settings = fresh_schema(load_settings())
    try:
        jobs_per_s = {}
        for workers in (1, 2, 4):
            jobs_per_s[str(workers)] = round(burn_down(settings, workers))
            print(f"burn-down {JOBS} jobs, {workers} worker(s): {jobs_per_s[str(workers)]} jobs/s")
        ceiling_per_s, update_only_per_s = (round(rate) for rate in ceiling(settings))
        print(f"ceiling (plain pg8000 INSERT+UPDATE loop, 1 connection): {ceiling_per_s} jobs/s")
        print(f"ceiling (plain pg8000 UPDATE loop, 1 connection): {update_only_per_s} jobs/s")
        claim_10k = claim_ms(settings, 10_000)
        claim_100k = claim_ms(settings, 100_000)
        print(f"claim: {claim_10k:.3f} ms with 10k finished rows, {claim_100k:.3f} ms with 100k")
    finally:
        drop_schema(settings)
    print(
        json.dumps(
            {
                "bench": "queue",
                "jobs_per_s": jobs_per_s,
                "ceiling_per_s": ceiling_per_s,
                "ratio_4w": round(jobs_per_s["4"] / ceiling_per_s, 2),
                "ceiling_update_only_per_s": update_only_per_s,
                "ratio_4w_update_only": round(jobs_per_s["4"] / update_only_per_s, 2),
                "claim_ms_10k_done": round(claim_10k, 3),
                "claim_ms_100k_done": round(claim_100k, 3),
                "claim_ratio_100k_10k": round(claim_100k / claim_10k, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
