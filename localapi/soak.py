"""Soak harness: real jobs through real worker processes that are SIGKILLed at random, against
the local Bot API server answering with 429s, 5xx and dropped uploads. Shared by
tests/test_soak.py (CI-sized) and bench/soak.py (larger, with a no-chaos baseline).

Every job goes through every step (APPROVAL_GATES=""), each in a chat of its own, so a chat
with two videos is a duplicate. A job passes when it is `done` with exactly one video, or,
where its delivery was interrupted (the server dropped the answer to the upload, or a worker
was killed while the job was delivering), `done` with the "send again" button offered and at
most one video.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Mapping

from localapi.telegram_server import TelegramServer
from shared import db as dbmod
from shared import queue
from shared.buttons import resend_callback_data
from shared.config import REPO_ROOT, load_settings

FIRST_CHAT = 10_000
FINAL_STATES = frozenset(queue.FINAL_STATES)
POLL_SECONDS = 0.5

# Cheap renders and fast recovery: a killed worker's lease expires within seconds. Kills here
# are random, not caused by a job, so a job may lose several workers in a row (a render of a
# few seconds meets a kill every 2-6 s): JOB_MAX_ATTEMPTS is high enough that the guard against
# a job that crashes every worker it meets is not what the soak measures.
WORKER_ENV = {
    "APPROVAL_GATES": "",
    "VIDEO_SECONDS": "5",
    "VIDEO_FPS": "6",
    "VIDEO_RESOLUTION": "720",
    "WORKER_LEASE_SECONDS": "5",
    "WORKER_POLL_SECONDS": "0.2",
    "WORKER_CONCURRENCY": "2",
    "RETRY_BASE_SECONDS": "0.5",
    "RETRY_MAX_SECONDS": "5",
    "JOB_MAX_ATTEMPTS": "12",
}


@dataclass(frozen=True)
class SoakPlan:
    """What to run. `chaos=False` is the baseline: the same jobs without faults or kills."""

    jobs: int = 30
    workers: int = 3
    seed: int = 0
    chaos: bool = True
    fault_rate: float = 0.05  # share of all Bot API calls answered 429 / 500 / 502
    drop_uploads: float = 0.1  # share of sendVideo calls let through whose answer is dropped
    kill_every: tuple[float, float] = (2.0, 6.0)  # seconds between SIGKILLs, uniform
    timeout_s: float = 180.0


@dataclass
class JobOutcome:
    """One job at the end of the run, with what the user saw."""

    id: int
    chat_id: int
    state: str
    step: str
    last_error: str | None
    delivery: dict[str, Any] | None
    videos: int
    interrupted: bool  # its upload's answer was dropped, or a worker died while it delivered
    resend_offered: bool

    @property
    def verdict(self) -> str:
        """ok | stuck | duplicated | lost | wrong (anything else a user should not see)."""
        if self.state not in FINAL_STATES:
            return "stuck"
        if self.videos > 1:
            return "duplicated"
        if self.state == "done" and self.videos == 1 and not self.resend_offered:
            return "ok"
        if self.state == "done" and self.interrupted and self.resend_offered:
            return "ok"
        return "lost" if self.videos == 0 else "wrong"


@dataclass
class SoakReport:
    plan: SoakPlan
    elapsed_s: float
    kills: int
    faults: dict[str, int]
    outcomes: list[JobOutcome] = field(default_factory=list)

    def ids(self, verdict: str) -> list[int]:
        return [o.id for o in self.outcomes if o.verdict == verdict]

    @property
    def passed(self) -> bool:
        return all(o.verdict == "ok" for o in self.outcomes)

    @property
    def jobs_per_minute(self) -> float:
        """Jobs done (videos delivered) per minute of the run."""
        return 60 * sum(o.state == "done" for o in self.outcomes) / self.elapsed_s

    def summary(self) -> dict[str, Any]:
        return {
            "jobs": len(self.outcomes),
            "seed": self.plan.seed,
            "kills": self.kills,
            "faults": self.faults,
            "lost": len(self.ids("lost")),
            "duplicated": len(self.ids("duplicated")),
            "stuck": len(self.ids("stuck")),
            "wrong": len(self.ids("wrong")),
            "resend_offered": sum(o.resend_offered for o in self.outcomes),
            "elapsed_s": round(self.elapsed_s, 1),
            "jobs_per_min": round(self.jobs_per_minute, 1),
        }

    def failures(self) -> str:
        """Every job that did not pass, with its row and what its chat got: the text to read
        when the soak fails."""
        return "\n".join(
            f"job {o.id} {o.verdict}: state={o.state} step={o.step} videos={o.videos} "
            f"interrupted={o.interrupted} resend_offered={o.resend_offered} "
            f"last_error={o.last_error!r} delivery={o.delivery}"
            for o in self.outcomes
            if o.verdict != "ok"
        )


def resend_offered(telegram: TelegramServer, chat_id: int, job_id: int) -> bool:
    """Whether the chat shows the job's "send again" button, on a message after its video if
    one arrived (the "the video may not have arrived" notice)."""
    messages = telegram.chat_messages(chat_id)
    last_video = max((m["message_id"] for m in messages if "video" in m), default=0)
    wanted = resend_callback_data(job_id)
    return any(
        button.get("callback_data") == wanted
        for message in messages
        if message["message_id"] > last_video
        for row in message.get("reply_markup", {}).get("inline_keyboard", [])
        for button in row
    )


def description(number: int) -> str:
    return f"Clip {number} starts. A red kite flies high. It lands softly."


class Workers:
    """`count` looping worker processes; `kill_one` SIGKILLs a random one and starts another."""

    def __init__(self, count: int, env: Mapping[str, str], log_file: IO[bytes]) -> None:
        self._env = dict(env)
        self._log_file = log_file
        self.procs = [self._spawn() for _ in range(count)]

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "functions.worker", "--loop"],
            cwd=REPO_ROOT,
            env=self._env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def kill_one(self, rng: random.Random) -> None:
        index = rng.randrange(len(self.procs))
        self.procs[index].send_signal(signal.SIGKILL)
        self.procs[index].wait()
        self.procs[index] = self._spawn()

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def run_soak(db_env: Mapping[str, str], plan: SoakPlan, log_path: Path) -> SoakReport:
    """Run `plan` in the migrated schema that `db_env` (DATABASE_URL, DATABASE_SCHEMA) names;
    the workers' output goes to `log_path`."""
    rng = random.Random(plan.seed)
    settings = load_settings({**db_env, **WORKER_ENV})
    database = dbmod.connect(settings, "soak")
    with TelegramServer() as telegram, log_path.open("ab") as log_file:
        if plan.chaos:
            # Whatever the draws, the first uploads meet a rate limit and a dropped answer.
            telegram.fail_next("sendVideo", 429, retry_after=1)
            telegram.drop_next("sendVideo")
            telegram.random_faults(
                plan.fault_rate,
                statuses=(429, 500, 502),
                retry_after=1,
                drop_uploads=plan.drop_uploads,
                seed=plan.seed,
            )
        job_ids = [
            queue.enqueue(
                database,
                chat_id=FIRST_CHAT + n,
                user_id=FIRST_CHAT + n,
                description=description(n),
                language="en",
                max_attempts=settings.job_max_attempts,
            )[0]
            for n in range(plan.jobs)
        ]
        env = {
            **os.environ,
            **db_env,
            **WORKER_ENV,
            "PYTHONPATH": str(REPO_ROOT),
            "TELEGRAM_BOT_TOKEN": telegram.token,
            "TELEGRAM_API_BASE": telegram.base_url,
        }
        started = time.monotonic()
        workers = Workers(plan.workers, env, log_file)
        kills = 0
        delivering_at_kill: set[int] = set()
        try:
            next_kill = started + rng.uniform(*plan.kill_every)
            while _unfinished(database, job_ids) and time.monotonic() - started < plan.timeout_s:
                if plan.chaos and time.monotonic() >= next_kill:
                    delivering_at_kill |= _delivering(database)
                    workers.kill_one(rng)
                    kills += 1
                    next_kill = time.monotonic() + rng.uniform(*plan.kill_every)
                time.sleep(POLL_SECONDS)
            elapsed = time.monotonic() - started
        finally:
            workers.stop()
        report = SoakReport(plan, elapsed, kills, telegram.fault_counts)
        report.outcomes = _outcomes(database, telegram, job_ids, delivering_at_kill)
    database.close()
    return report


def _unfinished(database: dbmod.Database, job_ids: list[int]) -> int:
    return database.execute(
        "SELECT count(*) FROM jobs WHERE id = ANY(:ids) AND state NOT IN ('done', 'failed', "
        "'cancelled')",
        ids=job_ids,
    )[0][0]


def _delivering(database: dbmod.Database) -> set[int]:
    """Jobs some worker may be uploading right now: a kill may cut one of their uploads."""
    rows = database.execute("SELECT id FROM jobs WHERE state = 'running' AND step = 'deliver'")
    return {row[0] for row in rows}


def _outcomes(
    database: dbmod.Database,
    telegram: TelegramServer,
    job_ids: list[int],
    delivering_at_kill: set[int],
) -> list[JobOutcome]:
    videos = telegram.videos_by_chat()
    dropped = {call.params["chat_id"] for call in telegram.calls_to("sendVideo") if call.dropped}
    rows = database.execute(
        "SELECT j.id, j.chat_id, j.state, j.step, j.last_error, row_to_json(d)::text "
        "FROM jobs j LEFT JOIN deliveries d ON d.job_id = j.id "
        "WHERE j.id = ANY(:ids) ORDER BY j.id",
        ids=job_ids,
    )
    return [
        JobOutcome(
            id=job_id,
            chat_id=chat_id,
            state=state,
            step=step,
            last_error=last_error,
            delivery=json.loads(delivery) if delivery else None,
            videos=videos.get(chat_id, 0),
            interrupted=chat_id in dropped or job_id in delivering_at_kill,
            resend_offered=resend_offered(telegram, chat_id, job_id),
        )
        for job_id, chat_id, state, step, last_error, delivery in rows
    ]
