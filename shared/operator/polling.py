"""Running the bot without a public URL: long polling with the webhook's own update handler,
and the worker's ticks in a thread beside it (`python manage.py poll`)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from shared import bot
from shared import db as dbmod
from shared.config import Settings
from shared.errors import DATABASE_ERRORS, PermanentError, TransientError
from shared.providers import Providers
from shared.telegram import TelegramClient

log = logging.getLogger("poll")

POLL_TIMEOUT_SECONDS = 25


class UpdatePoller:
    """getUpdates in a loop, each update handled by `shared.bot.handle_update` as the webhook
    handles it. The offset moves past an update only once it is recorded, so an update whose
    transaction failed is fetched again (and a recorded one handled twice changes nothing)."""

    def __init__(self, settings: Settings, telegram: TelegramClient) -> None:
        self._settings = settings
        self._telegram = telegram
        self._database: dbmod.Database | None = None
        self._offset: int | None = None

    def drain(self) -> int:
        """Handle every pending update without waiting for new ones; return how many."""
        handled = 0
        while count := self.poll(timeout=0):
            handled += count
        return handled

    def run_forever(self) -> None:
        """Long-poll until interrupted; database and network trouble is waited out."""
        while True:
            try:
                self.poll(timeout=POLL_TIMEOUT_SECONDS)
            except (TransientError, *DATABASE_ERRORS) as exc:
                log.warning(
                    "poll failed error=%s retry_in_s=%s: %s",
                    type(exc).__name__,
                    self._settings.worker_poll_seconds,
                    exc,
                )
                self.close()
                time.sleep(self._settings.worker_poll_seconds)

    def poll(self, timeout: int) -> int:
        updates = self._telegram.get_updates(
            self._offset, timeout=timeout, allowed_updates=list(bot.WEBHOOK_UPDATES)
        )
        for update in updates:
            self._handle(update)
        return len(updates)

    def close(self) -> None:
        if self._database is not None:
            self._database.close()
            self._database = None

    def _handle(self, update: Any) -> None:
        update_id = bot.update_id_of(update)
        if update_id is None:
            log.warning("update skipped reason=no_update_id")
            return
        if self._database is None:
            self._database = dbmod.connect(self._settings, "ai_video_bot-poll")
        reply = bot.handle_update(self._database, self._settings, update)
        self._offset = update_id + 1
        self._perform(reply, update_id)

    def _perform(self, reply: bot.Reply, update_id: int) -> None:
        """The calls the webhook leaves to Telegram and makes after its response: the reply
        body, then the edit of the gate message after a decisive press. Failures are logged."""
        try:
            if reply.body is not None:
                params = dict(reply.body)
                self._telegram.call(params.pop("method"), **params)
            if reply.edit is not None:
                bot.perform_edit(self._telegram, reply.edit)
        except (PermanentError, TransientError) as exc:
            log.warning("reply not sent update_id=%s error=%s", update_id, exc)


class WorkerThread:
    """The worker beside the poller: `run_tick` (passed in, as the worker is imported lazily)
    every WORKER_POLL_SECONDS on its own connection, reconnecting after a failed tick."""

    def __init__(
        self,
        settings: Settings,
        database: dbmod.Database,
        telegram: TelegramClient,
        providers: Providers,
        run_tick: Callable[[Settings, dbmod.Database, TelegramClient, Providers], int],
    ) -> None:
        self._settings = settings
        self._database: dbmod.Database | None = database
        self._telegram = telegram
        self._providers = providers
        self._run_tick = run_tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._tick()
            self._stop.wait(self._settings.worker_poll_seconds)
        if self._database is not None:
            self._database.close()

    def _tick(self) -> None:
        try:
            if self._database is None:
                self._database = dbmod.connect(self._settings, "ai_video_bot-worker")
            ran = self._run_tick(self._settings, self._database, self._telegram, self._providers)
        except Exception:
            log.exception("worker tick failed; reconnecting")
            if self._database is not None:
                self._database.close()
            self._database = None
            return
        if ran:
            log.info("worker tick done jobs=%s", ran)
