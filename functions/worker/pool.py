"""A worker process's job slots: WORKER_CONCURRENCY threads, each running one claimed job at a time.

Each slot has its own database connection and providers (a pg8000 connection and the providers'
per-call state are not thread-safe), and shares the process's Telegram rate-limit pauses and its
render slots (shared.capacity). Threads suffice: a slot spends its time in ffmpeg, espeak-ng and
HTTP calls, which release the GIL (`python -m bench.crowd` measures 1, 2 and 4 slots and two
processes).

A slot claims one job, runs it until it finishes, parks or fails, and claims again. When nothing
is runnable it waits for a wake-up (a NOTIFY that the process's control connection hears, or
WORKER_POLL_SECONDS) and tries again. A cron run ends when no slot has work and the listen window
is over; `--loop` runs until SIGTERM, after which no slot claims a new job and the process exits
once the jobs in hand are done.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable
from uuid import UUID

from shared import db as dbmod
from shared import queue
from shared.capacity import Capacity
from shared.config import Settings
from shared.pipeline.job import JobContext
from shared.pipeline.runner import run_job
from shared.providers import Providers
from shared.telegram import TelegramClient

log = logging.getLogger("worker")


@dataclass
class Slot:
    """What one slot runs jobs with, all its own."""

    database: dbmod.Database
    telegram: TelegramClient
    providers: Providers


class Wake:
    """A wake-up call for idle slots. A slot notes `generation` before it looks for work and
    waits `since` it: a `notify` that came while it looked ends the wait at once, so no wake-up
    (a NOTIFY, SIGTERM) falls between a claim that found nothing and the wait that follows."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._generation = 0

    @property
    def generation(self) -> int:
        with self._changed:
            return self._generation

    def notify(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def wait_since(self, seen: int, timeout: float) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._generation != seen, max(0.0, timeout))


@dataclass(frozen=True)
class Window:
    """When a process's slots claim: until `claim_until` (time.monotonic()), and they stay for
    wake-ups until `stay_until`; `loop` ignores both (a background worker)."""

    claim_until: float
    stay_until: float
    loop: bool


class Pool:
    def __init__(
        self,
        settings: Settings,
        capacity: Capacity,
        worker_id: UUID,
        open_slot: Callable[[], Slot],
    ) -> None:
        self.settings = settings
        self.capacity = capacity
        self.worker_id = worker_id
        self.wake = Wake()
        self.stopping = threading.Event()
        self.render_slots = threading.BoundedSemaphore(capacity.render_slots)
        self._open_slot = open_slot
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._ran = 0
        self._threads: list[threading.Thread] = []

    @property
    def ran(self) -> int:
        """Jobs run (claimed and run until they stopped) by all slots so far."""
        return self._ran

    def start(self, window: Window) -> None:
        """Open every slot, then start its thread: a slot that cannot connect fails here, before
        any job is claimed."""
        slots = [self._open_slot() for _ in range(self.capacity.slots)]
        for index, slot in enumerate(slots):
            thread = threading.Thread(
                target=self._run_slot, args=(slot, window), name=f"slot-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def join(self, timeout: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def stop(self) -> None:
        """Claim nothing new; the jobs in hand run on."""
        self.stopping.set()
        self.wake.notify()

    def _run_slot(self, slot: Slot | None, window: Window) -> None:
        """Claim and run jobs until the run is over or the process stops. A database error
        outside a job (the server restarted, the network dropped) costs the slot its
        connection, not its life: it waits a poll and opens a new one."""
        while not self.stopping.is_set():
            try:
                slot = slot or self._open_slot()
                if not self._next(slot, window):
                    break
            except Exception:
                log.exception("worker slot lost its connection worker=%s", self.worker_id)
                if slot is not None:
                    slot.database.close()
                slot = None
                self.wake.wait_since(self.wake.generation, self.settings.worker_poll_seconds)
        if slot is not None:
            slot.database.close()

    def _next(self, slot: Slot, window: Window) -> bool:
        """Run the next runnable job, or wait for one; False when this cron run is over."""
        seen = self.wake.generation
        now = time.monotonic()
        job = self._claim(slot) if window.loop or now < window.claim_until else None
        if job is not None:
            self._run(slot, job, window)
            return True
        if not window.loop and self._idle_run_over(window):
            return False
        self.wake.wait_since(seen, self._idle_wait(window))
        return True

    def _idle_wait(self, window: Window) -> float:
        """WORKER_POLL_SECONDS, or less when a cron run's listen window ends sooner."""
        poll = self.settings.worker_poll_seconds
        left = window.stay_until - time.monotonic()
        return poll if window.loop or left <= 0 else min(poll, left + 0.01)

    def _idle_run_over(self, window: Window) -> bool:
        """A cron run ends for an idle slot once claiming is over, or once no slot runs a job and
        the listen window is past (a job another slot parks may come due soon: stay for it)."""
        now = time.monotonic()
        if now >= max(window.claim_until, window.stay_until):
            return True
        with self._busy_lock:
            return self._busy == 0 and now >= window.stay_until

    def _claim(self, slot: Slot) -> queue.ClaimedJob | None:
        jobs = queue.claim(
            slot.database,
            1,
            self.settings.worker_lease_seconds,
            self.settings.max_concurrent_jobs,
            self.worker_id,
        )
        if not jobs:
            return None
        with self._busy_lock:
            self._busy += 1
        return jobs[0]

    def _run(self, slot: Slot, job: queue.ClaimedJob, window: Window) -> None:
        deadline = (
            time.monotonic() + self.settings.worker_max_seconds
            if window.loop
            else window.claim_until
        )
        try:
            run_job(
                JobContext(
                    self.settings,
                    slot.database,
                    slot.telegram,
                    slot.providers,
                    job,
                    deadline=deadline,
                    render_slots=self.render_slots,
                )
            )
        finally:
            with self._busy_lock:
                self._busy -= 1
                self._ran += 1
        # A job that parked may be due soon, and another slot may be waiting for it.
        self.wake.notify()
