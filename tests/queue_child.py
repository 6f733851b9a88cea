"""A worker process for the crash tests: claims one job and then behaves as told.

    python -m tests.queue_child work SECONDS   claim, sleep SECONDS, checkpoint, complete
    python -m tests.queue_child deliver        claim, record the delivery start, hang

It prints `claimed <id> <token>` as soon as it holds a lease, and exits 3 on LeaseLost.
"""

from __future__ import annotations

import sys
import time

from shared import db, queue
from shared.config import load_settings


def main(argv: list[str]) -> int:
    settings = load_settings()
    database = db.connect(settings, "queue-child")
    jobs = []
    while not jobs:
        jobs = queue.claim(database, 1, settings.worker_lease_seconds)
        time.sleep(0.02)
    job = jobs[0]
    print(f"claimed {job.id} {job.lease_token}", flush=True)
    try:
        if argv[0] == "work":
            time.sleep(float(argv[1]))
            queue.checkpoint(database, job, {"by": str(job.lease_token)}, "done", 60)
            queue.complete(database, job)
        elif argv[0] == "deliver":
            database.run("begin_delivery", id=job.id, token=job.lease_token)
            print("sending", flush=True)
            time.sleep(3600)
    except queue.LeaseLost:
        print("lease lost", flush=True)
        return 3
    print("completed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
