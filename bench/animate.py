"""Remote animation runs side by side: the wall time from the images gate's approval to the videos
gate's message, for a film of SCENES (6) scenes whose remote tasks each take T seconds.

One cron run of the real worker, `python -m functions.worker`, against embedded PostgreSQL (or
DATABASE_URL) in a throw-away schema, with the local providers, the local Telegram Bot API and
the Runway stand-in (localapi/runway_server.py) whose tasks each take T seconds. The approval
is the runbook's INSERT; the end is the moment the stand-in Telegram records the gate's
sendVideo. Held against T: clips made one after another would take SCENES x T; the target is
T + 15 s (submission, ANIMATION_POLL_SECONDS, downloads, the preview).

    python -m bench.animate [--task-seconds 20]

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
import uuid

from localapi.runway_server import RunwayServer
from localapi.telegram_server import TelegramServer
from shared import db as dbmod
from shared import queue
from shared.config import REPO_ROOT, load_settings
from shared.migrate import migrate

DESCRIPTION = (
    "A lighthouse stands on a cliff at dawn. Waves crash against the dark rocks below. "
    "A fishing boat fights the rising storm. The keeper lights the great lamp. "
    "The beam sweeps across the water. The boat comes home safely at last."
)
"""Six sentences: six scenes from the local script provider at VIDEO_SECONDS=30."""
SCENES = 6
MARGIN_SECONDS = 15.0
DECIDE = """
INSERT INTO approval_statuses (job_id, approval_type, status, expires_at)
VALUES (:job_id, :gate, 'approved', now() + interval '1 day')
"""


def run_worker(env: dict[str, str]) -> None:
    """One cron run of the worker, as Render starts it."""
    subprocess.run(
        [sys.executable, "-m", "functions.worker"],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=600,
    )


def gate_of(database: dbmod.Database, job_id: int) -> str | None:
    return database.one("get_job", id=job_id)["gate"]


def most_in_flight(server: RunwayServer) -> int:
    """The most tasks the stand-in had running at one moment."""
    spans = [
        (task["created"], task["created"] + server.task_seconds) for task in server.tasks.values()
    ]
    return max(sum(start <= at < end for start, end in spans) for at, _ in spans)


def phases(database: dbmod.Database, job_id: int) -> tuple[float, float]:
    """From the remote_tasks rows: the seconds from the first intent to the last task taken,
    and from the first task taken to the last clip saved."""
    [row] = database.execute(
        "SELECT extract(epoch FROM max(submitted_at) - min(created_at))::float8,"
        " extract(epoch FROM max(finished_at) - min(submitted_at))::float8"
        " FROM remote_tasks WHERE job_id = :j",
        j=job_id,
    )
    return row[0], row[1]


def main(task_seconds: float) -> dict[str, object]:
    scenes = SCENES
    base = load_settings()
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with TelegramServer() as telegram, RunwayServer(task_seconds=task_seconds) as runway:
        env = dict(
            os.environ,
            DATABASE_URL=dbmod.database_url(base),
            DATABASE_SCHEMA=schema,
            TELEGRAM_BOT_TOKEN=telegram.token,
            TELEGRAM_API_BASE=telegram.base_url,
            VIDEO_SECONDS="30",
            ANIMATION_PROVIDER="runway",
            ANIMATION_CONCURRENCY=str(scenes),
            RUNWAY_API_KEY=runway.api_key,
            RUNWAY_API_BASE=runway.base_url,
            LOG_LEVEL="WARNING",
            PYTHONPATH=str(REPO_ROOT),
        )
        database = dbmod.connect(load_settings(env), "bench")
        try:
            migrate(database)
            job_id, _ = queue.enqueue(
                database, chat_id=4242, user_id=4242, description=DESCRIPTION, language="en"
            )
            run_worker(env)
            assert gate_of(database, job_id) == "script", "the job did not reach the script gate"
            database.execute(DECIDE, job_id=str(job_id), gate="script")
            run_worker(env)
            assert gate_of(database, job_id) == "images", "the job did not reach the images gate"
            made = len(database.one("get_job", id=job_id)["checkpoints"]["script"]["scenes"])
            assert made == scenes, f"the script has {made} scenes, not {scenes}"

            approved_at = time.time()
            database.execute(DECIDE, job_id=str(job_id), gate="images")
            run_worker(env)
            gate = telegram.wait_for(
                "sendVideo", lambda call: "reply_markup" in call.params, timeout=5
            )
            elapsed = gate.at - approved_at
            assert gate_of(database, job_id) == "videos", "the job did not reach the videos gate"
            submissions = len(runway.submissions)
            in_flight = most_in_flight(runway)
            submitting, running = phases(database, job_id)
        finally:
            database.execute(f"DROP SCHEMA {schema} CASCADE")
            database.close()
    target = task_seconds + MARGIN_SECONDS
    ratio = elapsed / task_seconds
    print(f"{scenes} scenes, remote tasks of T = {task_seconds:g} s each (Runway stand-in)")
    print(f"images approved -> videos gate message: {elapsed:.1f} s ({ratio:.2f} x T)")
    print(
        f"target: <= T + {MARGIN_SECONDS:g} s = {target:g} s; one after another: {scenes * task_seconds:g} s"
    )
    print(f"submissions: {submissions}; most tasks running at once: {in_flight}")
    print(
        f"submitting all: {submitting:.1f} s; first task taken -> last clip saved: "
        f"{running:.1f} s (T + poll + downloads)"
    )
    figures: dict[str, object] = {
        "bench": "animate",
        "scenes": scenes,
        "task_seconds": task_seconds,
        "approval_to_videos_gate_s": round(elapsed, 2),
        "ratio_to_task_seconds": round(ratio, 2),
        "target_s": target,
        "within_target": elapsed <= target,
        "submissions": submissions,
        "most_in_flight": in_flight,
        "submitting_s": round(submitting, 2),
        "taken_to_last_clip_s": round(running, 2),
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(
        prog="python -m bench.animate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--task-seconds", type=float, default=20.0, help="T, each task's seconds")
    main(parser.parse_args().task_seconds)
