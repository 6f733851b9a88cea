"""A crowd at once: worker processes with several job slots, two processes on one database.

Real worker processes (`python -m functions.worker --loop`), the embedded or test PostgreSQL, the
local Telegram and Runway stand-ins. What a user would notice: every job's film arrives once,
no clip is paid for twice, and the limits the owner set hold while the crowd is served.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from localapi.runway_server import RunwayServer
from localapi.telegram_server import TelegramServer
from shared import db as dbmod
from shared import queue
from shared.capacity import Capacity, capacity
from shared.config import REPO_ROOT, load_settings
from tests.support import child_env, manage

FIRST_CHAT = 7000
DESCRIPTION = "A lighthouse at dawn. Waves crash on the rocks. A boat comes home."


@pytest.fixture
def crowd_env(worker_env: dict[str, str], runway: RunwayServer) -> dict[str, str]:
    """Gates off, short films with no captions or music (the render is not what is tested
    here), clips from the Runway stand-in, fast polling."""
    return dict(
        worker_env,
        APPROVAL_GATES="",
        VIDEO_SECONDS="5",
        CAPTION_STYLE="off",
        MUSIC="off",
        ANIMATION_PROVIDER="runway",
        RUNWAY_API_KEY=runway.api_key,
        RUNWAY_API_BASE=runway.base_url,
        ANIMATION_POLL_SECONDS="0.2",
        WORKER_POLL_SECONDS="0.5",
    )


class LoopingWorker:
    """`python -m functions.worker --loop`, as a Render background worker runs it."""

    def __init__(self, env: dict[str, str], **extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "functions.worker", "--loop"],
            cwd=REPO_ROOT,
            env=child_env(env, **extra),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if "worker ready" in line:
                self._ready.set()

    def wait_ready(self) -> None:
        assert self._ready.wait(30), f"the worker did not start: {self.lines}"

    def stop(self) -> int:
        """SIGTERM, as a deploy sends it: the worker claims nothing more and exits."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def jobs_run(self) -> int:
        done = [line for line in self.lines if "worker done" in line]
        assert done, f"no closing line: {self.lines[-5:]}"
        return int(done[-1].rsplit("jobs=", 1)[1].split()[0])


class RunningSampler:
    """Counts the running jobs every few milliseconds from a connection of its own."""

    def __init__(self, settings_env: dict[str, str]) -> None:
        self._db = dbmod.connect(load_settings(settings_env), "tests-sampler")
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            [[running]] = self._db.execute("SELECT count(*) FROM jobs WHERE state = 'running'")
            self.most = max(self.most, running)

    def close(self) -> int:
        self._stop.set()
        self._thread.join()
        self._db.close()
        return self.most


def enqueue_crowd(db: dbmod.Database, people: int) -> list[int]:
    """`people` users send a description at the same moment (one commit)."""
    with db.transaction():
        return [
            queue.enqueue(
                db,
                chat_id=FIRST_CHAT + person,
                user_id=FIRST_CHAT + person,
                description=DESCRIPTION,
                language="en",
                max_attempts=3,
            )[0]
            for person in range(people)
        ]


def wait_all_finished(db: dbmod.Database, job_ids: list[int], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        [[unfinished]] = db.execute(
            "SELECT count(*) FROM jobs WHERE id = ANY(:ids) AND state NOT IN ('done', 'failed', "
            "'cancelled')",
            ids=job_ids,
        )
        if unfinished == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"{unfinished} jobs unfinished after {timeout}s")


def assert_each_film_arrived_once(db, telegram: TelegramServer, job_ids: list[int]) -> None:
    states = db.execute("SELECT state, last_error FROM jobs WHERE id = ANY(:ids)", ids=job_ids)
    assert all(state == "done" for state, _ in states), states
    films = [call.params["chat_id"] for call in telegram.calls_to("sendVideo")]
    assert sorted(map(int, films)) == [FIRST_CHAT + n for n in range(len(job_ids))]


def assert_no_job_ran_twice_at_once(db, job_ids: list[int]) -> None:
    """No two runs of a job's steps overlap: one worker at a time held each job."""
    [[overlaps]] = db.execute(
        "SELECT count(*) FROM step_runs a JOIN step_runs b ON a.job_id = b.job_id AND a.id < b.id "
        "WHERE a.job_id = ANY(:ids) AND b.started_at < coalesce(a.finished_at, now())",
        ids=job_ids,
    )
    assert overlaps == 0


def assert_each_clip_paid_once(db, runway: RunwayServer, job_ids: list[int]) -> None:
    [[scenes]] = db.execute(
        "SELECT sum(jsonb_array_length(checkpoints->'script'->'scenes')) FROM jobs "
        "WHERE id = ANY(:ids)",
        ids=job_ids,
    )
    clips = [s for s in runway.submissions if "promptImage" in s]
    assert len(clips) == scenes
    [[rows]] = db.execute(
        "SELECT count(*) FROM remote_tasks WHERE job_id = ANY(:ids) AND kind = 'clip'", ids=job_ids
    )
    assert rows == scenes


def test_two_worker_processes_share_one_queue_and_the_global_cap(db, crowd_env, telegram, runway):
    cap = 3
    env = dict(crowd_env, MAX_CONCURRENT_JOBS=str(cap), WORKER_CONCURRENCY="2")
    workers = [LoopingWorker(env), LoopingWorker(env)]
    for worker in workers:
        worker.wait_ready()
    sampler = RunningSampler(env)
    try:
        job_ids = enqueue_crowd(db, 4)
        wait_all_finished(db, job_ids)
    finally:
        most_running = sampler.close()
        codes = [worker.stop() for worker in workers]
    assert codes == [0, 0]
    assert_each_film_arrived_once(db, telegram, job_ids)
    assert_no_job_ran_twice_at_once(db, job_ids)
    assert_each_clip_paid_once(db, runway, job_ids)
    assert 2 <= most_running <= cap
    assert all(worker.jobs_run() >= 1 for worker in workers), "one process did all the work"
    [[stopped]] = db.execute("SELECT count(*) FROM workers WHERE stopped_at IS NOT NULL")
    assert stopped == 2


def test_one_process_serves_a_crowd_side_by_side_rendering_one_film_at_a_time(
    db, crowd_env, telegram, runway
):
    env = dict(crowd_env, WORKER_CONCURRENCY="4", RENDER_CONCURRENCY="1")
    worker = LoopingWorker(env)
    worker.wait_ready()
    sampler = RunningSampler(env)
    try:
        job_ids = enqueue_crowd(db, 3)
        wait_all_finished(db, job_ids)
    finally:
        most_running = sampler.close()
        assert worker.stop() == 0
    assert_each_film_arrived_once(db, telegram, job_ids)
    assert_each_clip_paid_once(db, runway, job_ids)
    assert most_running >= 2, "the jobs ran one after another"
    [[renders_at_once]] = db.execute(
        "SELECT coalesce(max(n), 0) FROM (SELECT (SELECT count(*) FROM step_runs b "
        "  WHERE b.step = 'render' AND b.outcome <> 'parked' AND b.started_at <= a.started_at "
        "    AND coalesce(b.finished_at, now()) > a.started_at) AS n "
        "  FROM step_runs a WHERE a.step = 'render' AND a.outcome <> 'parked') counts"
    )
    assert renders_at_once == 1, "two films rendered at once past RENDER_CONCURRENCY=1"


def test_manage_stats_shows_each_workers_jobs_in_flight_and_heartbeat(db, crowd_env):
    env = dict(crowd_env, WORKER_CONCURRENCY="3", RENDER_CONCURRENCY="2")
    worker = LoopingWorker(env)
    worker.wait_ready()
    try:
        shown = manage(env, "stats")
    finally:
        worker.stop()
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("workers"))
    row = lines[header + 2].split()
    assert row[1] == str(worker.proc.pid)
    assert row[2:5] == ["3", "2", "0"]
    assert row[5].endswith("s")


@pytest.mark.parametrize(
    ("memory", "cpus", "slots", "renders"),
    [(512, 0.5, 1, 1), (2048, 1, 4, 1), (4096, 2, 8, 2), (24_000, 2, 8, 2), (1024, 4, 7, 1)],
)
def test_the_default_capacity_follows_memory_and_cpus(memory, cpus, slots, renders):
    settings = load_settings({})
    fits = capacity(settings, 450, memory=memory, cpu_count=cpus)
    assert (fits.slots, fits.render_slots) == (slots, renders)
    assert fits.render_slots <= fits.slots


def test_set_capacity_wins_and_renders_never_outnumber_slots():
    settings = load_settings({"WORKER_CONCURRENCY": "3", "RENDER_CONCURRENCY": "5"})
    fits = capacity(settings, 450, memory=512, cpu_count=0.5)
    assert fits == Capacity(slots=3, render_slots=3, memory_mb=512, cpus=0.5, derived=False)


def test_a_deploy_stops_an_idle_looping_worker_at_once_not_at_its_poll(crowd_env):
    worker = LoopingWorker(dict(crowd_env, WORKER_POLL_SECONDS="60", WORKER_CONCURRENCY="2"))
    worker.wait_ready()
    time.sleep(0.5)  # the slots have looked for work and wait
    asked = time.monotonic()
    assert worker.stop() == 0
    assert time.monotonic() - asked < 10, "SIGTERM waited for the 60 s poll"


def test_a_looping_worker_survives_its_connections_being_cut(db, crowd_env, telegram):
    """A database restart or failover drops every connection: the slots open new ones and the
    next description is still served, by the same process."""
    worker = LoopingWorker(dict(crowd_env, WORKER_CONCURRENCY="2", ANIMATION_PROVIDER="none"))
    worker.wait_ready()
    try:
        [[cut]] = db.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'ai_video_bot-worker' AND pid <> pg_backend_pid()"
        )
        assert cut >= 2
        job_ids = enqueue_crowd(db, 1)
        wait_all_finished(db, job_ids)
    finally:
        assert worker.stop() == 0
    assert_each_film_arrived_once(db, telegram, job_ids)
    assert any("lost its connection" in line for line in worker.lines)
