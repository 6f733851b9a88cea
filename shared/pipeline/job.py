"""What a step needs while it runs a claimed job: its context, the lease heartbeat, the status
message that shows progress, and the chat action shown while uploading."""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from types import TracebackType

from shared import db as dbmod
from shared import queue
from shared.config import Settings
from shared.costs import Meter
from shared.errors import JobStopped
from shared.plan import ScenePlan
from shared.providers import Providers
from shared.telegram import RateLimited, TelegramClient
from shared.texts import t

log = logging.getLogger(__name__)

STATUS_EDIT_INTERVAL = 3.0
STATUS_FORCED_GAP = 1.0
"""The least gap before a forced edit: Telegram's pace for one chat, about a message a second.
A forced edit waits in a job slot, so it waits no longer than Telegram asks."""
STATUS_CHATS_KEPT = 10_000
"""Chats whose last edit a worker process remembers before it forgets those past the interval."""
CHAT_ACTION_INTERVAL = 4.5


class CancelRequested(JobStopped):
    """The user or an operator asked to cancel this job while it was running."""


class Heartbeat:
    """Extends the lease every third of its length from a thread with its own connection, so a
    long provider call or render is never taken over. The job's thread calls `check()` between
    pieces of work to learn whether the lease was lost or a cancel was requested."""

    def __init__(self, settings: Settings, job: queue.ClaimedJob) -> None:
        self._settings = settings
        self._job = job
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job.id}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def check(self) -> None:
        if self._lost.is_set():
            raise queue.LeaseLost(f"job {self._job.id}: lease lost")
        if self._cancel.is_set():
            raise CancelRequested("cancel requested")

    def _beat(self) -> None:
        lease = self._settings.worker_lease_seconds
        database = None
        while not self._stop.wait(lease / 3):
            try:
                database = database or dbmod.connect(self._settings, "ai_video_bot-heartbeat")
                if queue.extend(database, self._job, lease):
                    self._cancel.set()
            except queue.LeaseLost:
                self._lost.set()
                break
            except Exception:  # a passing database error: the next beat tries again
                log.warning("heartbeat failed job=%s", self._job.id, exc_info=True)
                if database is not None:
                    database.close()
                database = None
        if database is not None:
            database.close()


@dataclass
class JobContext:
    settings: Settings
    db: dbmod.Database
    telegram: TelegramClient
    providers: Providers
    job: queue.ClaimedJob
    heartbeat: Heartbeat | None = None
    deadline: float | None = None
    """time.monotonic() by which the run wants to stop; a step that waits on remote work parks
    the job rather than wait past it."""
    render_slots: threading.Semaphore | None = None
    """The worker process's renders at once (shared/capacity.py); None: no bound (one slot)."""

    def __post_init__(self) -> None:
        self.status = StatusMessage(self)
        self.meter = Meter(self.settings, self.db, self.job)

    @property
    def language(self) -> str:
        return self.job.language

    def plan(self) -> ScenePlan:
        """The script the step `script` checkpointed."""
        return ScenePlan.from_dict(self.job.checkpoints["script"])

    def work_dir(self) -> tempfile.TemporaryDirectory:
        """One directory per job and step, removed when the step ends, however it ends."""
        return tempfile.TemporaryDirectory(prefix=f"videobot-job{self.job.id}-{self.job.step}-")

    def check(self) -> None:
        """Stop here if the lease is gone or a cancel arrived."""
        if self.heartbeat is not None:
            self.heartbeat.check()

    def checkpoint(self, result: object, next_step: str) -> None:
        self.check()
        queue.checkpoint(self.db, self.job, result, next_step, self.settings.worker_lease_seconds)


class StatusMessage:
    """The one progress message of a job, edited in place: progress within a step run at most
    once per 3 seconds, and no two edits of the chat's message less than a second apart."""

    _last_edit: dict[int, float] = {}
    """When this process last sent or edited a chat's progress message, across step runs (each
    run has its own StatusMessage), so that Telegram's pace holds from one step to the next."""
    _lock = threading.Lock()

    def __init__(self, ctx: JobContext) -> None:
        self._ctx = ctx
        self._run_last_edit = float("-inf")

    @classmethod
    def _since_last_edit(cls, chat_id: int) -> float:
        with cls._lock:
            return time.monotonic() - cls._last_edit.get(chat_id, float("-inf"))

    @classmethod
    def _edited(cls, chat_id: int) -> None:
        now = time.monotonic()
        with cls._lock:
            if len(cls._last_edit) > STATUS_CHATS_KEPT:
                cls._last_edit = {
                    chat: at
                    for chat, at in cls._last_edit.items()
                    if now - at < STATUS_EDIT_INTERVAL
                }
            cls._last_edit[chat_id] = now

    def show(self, key: str, *, force: bool = False, **fmt: object) -> None:
        """Show text `key`; a forced update (a new step) waits out the forced gap, others are
        skipped inside it and while this run's interval runs.
        The text shown is kept with the job, so no run edits the message to what it says.

        Progress gives way to deliveries: while Telegram has the bot paused, an unforced update
        is skipped, and a rate-limited one is dropped rather than fail the step."""
        text = t(key, self._ctx.language, **fmt)
        if text == self._ctx.job.status_text:
            return
        telegram = self._ctx.telegram
        since = self._since_last_edit(self._ctx.job.chat_id)
        since_in_run = time.monotonic() - self._run_last_edit
        if not force and (
            since < STATUS_FORCED_GAP
            or since_in_run < STATUS_EDIT_INTERVAL
            or telegram.paused_for()
        ):
            return
        if since < STATUS_FORCED_GAP:
            time.sleep(STATUS_FORCED_GAP - since)
        job = self._ctx.job
        try:
            if job.status_message_id is None:
                message_id = telegram.send_message(job.chat_id, text, best_effort=not force)[
                    "message_id"
                ]
            else:
                message_id = job.status_message_id
                telegram.edit_message_text(job.chat_id, message_id, text, best_effort=not force)
        except RateLimited as exc:
            log.info(
                "progress not shown job=%s chat=%s key=%s retry_after=%.1f",
                job.id,
                job.chat_id,
                key,
                exc.retry_after or 0.0,
            )
            return
        queue.set_status_message(self._ctx.db, job, message_id, text)
        self._edited(job.chat_id)
        self._run_last_edit = time.monotonic()


class ChatAction:
    """Repeat a chat action (e.g. upload_video) every few seconds while the block runs."""

    def __init__(self, telegram: TelegramClient, chat_id: int, action: str) -> None:
        self._telegram = telegram
        self._chat_id = chat_id
        self._action = action
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._repeat, daemon=True)

    def __enter__(self) -> "ChatAction":
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _repeat(self) -> None:
        while True:
            try:
                self._telegram.send_chat_action(self._chat_id, self._action)
            except Exception:  # a lost chat action costs nothing but the indicator
                log.info("chat action failed chat=%s action=%s", self._chat_id, self._action)
            if self._stop.wait(CHAT_ACTION_INTERVAL):
                return
