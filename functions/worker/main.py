"""The worker: `python -m functions.worker` is one cron run; `--loop` keeps running (a Render
background worker).

A process runs WORKER_CONCURRENCY job slots side by side (functions/worker/pool.py), each
claiming one job at a time, with at most RENDER_CONCURRENCY renders at once; both default to
what the process's CPUs and memory hold (shared/capacity.py), stated in the start-up log. A cron
run claims for WORKER_MAX_SECONDS and ends when no slot has work left; with
WORKER_LISTEN_SECONDS it stays up to that long in all (from its start), claims again as soon as
a decision or a revision is inserted (LISTEN, see sql/002_notify.sql and sql/013), and looks for
new jobs every WORKER_POLL_SECONDS. `--loop` keeps going the same way, for good; SIGTERM (a
deploy) stops it claiming, and it exits when its jobs are done.
Several processes, on one machine or many, share the queue with no other coordination. The exit
code is non-zero only when the worker cannot run at all (configuration, database), with a
message that says why: 2, as `shared.errors.exit_code` maps it.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import time
import uuid

from functions.worker.pool import Pool, Slot, Window
from shared import db as dbmod
from shared import queue
from shared.capacity import capacity
from shared.config import ConfigError, Settings, load_settings
from shared.errors import ConfigurationError, Unavailable, run_main
from shared.logs import setup_logging
from shared.migrate import migrate
from shared.pipeline.job import JobContext
from shared.pipeline.render import RENDER_PEAK_MB
from shared.pipeline.runner import run_job
from shared.providers import Providers, make_providers
from shared.telegram import TelegramClient

log = logging.getLogger("worker")

WORKER_HEARTBEAT_SECONDS = 15.0
"""How often a process renews its row in `workers` (manage.py stats shows the age)."""


def run_tick(
    settings: Settings, database: dbmod.Database, telegram: TelegramClient, providers: Providers
) -> int:
    """One slot, in the caller's thread: claim and run jobs until none is runnable or the time
    is spent; return how many ran. The demo, `manage.py poll` and the tests step the worker
    with it."""
    stop_claiming_at = time.monotonic() + settings.worker_max_seconds
    ran = 0
    while time.monotonic() < stop_claiming_at:
        jobs = queue.claim(database, 1, settings.worker_lease_seconds, settings.max_concurrent_jobs)
        if not jobs:
            break
        run_job(
            JobContext(settings, database, telegram, providers, jobs[0], deadline=stop_claiming_at)
        )
        ran += 1
    return ran


def warn_if_database_is_large(settings: Settings, database: dbmod.Database) -> None:
    size_mb = database.one("database_size")["bytes"] // (1024 * 1024)
    if size_mb > settings.db_size_warn_mb:
        log.warning(
            "database is large size_mb=%s limit_mb=%s: run `python manage.py prune --older-than 30`",
            size_mb,
            settings.db_size_warn_mb,
        )


def start(settings: Settings) -> tuple[dbmod.Database, TelegramClient, Providers]:
    """What one slot needs, on a migrated database; raises ConfigError or a connection error
    when it can't run."""
    slot = open_slot(settings)
    migrate(slot.database)
    return slot.database, slot.telegram, slot.providers


def checked_providers(settings: Settings) -> Providers:
    """The providers, once the settings are known to be complete: a missing key is told before
    any connection is tried."""
    if not settings.telegram_bot_token:
        raise ConfigError("TELEGRAM_BOT_TOKEN is not set: the worker cannot talk to Telegram")
    return make_providers(settings)


def open_slot(settings: Settings) -> Slot:
    """A slot's own connection, providers and Telegram client."""
    providers = checked_providers(settings)
    database = dbmod.connect(settings, "ai_video_bot-worker")
    telegram = TelegramClient(settings.telegram_bot_token, settings.telegram_api_base)
    return Slot(database, telegram, providers)


def wait_for_work(listener: dbmod.Database, deadline: float) -> bool:
    """Wait until something is inserted for the worker to do (True) or `deadline` passes."""
    while (left := deadline - time.monotonic()) > 0:
        if job_ids := listener.wait_for_notify(left):
            log.info("worker woken jobs=%s", ",".join(job_ids))
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    parser = argparse.ArgumentParser(
        prog="python -m functions.worker", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--loop",
        action="store_true",
        help="keep running: claim on new work, and every WORKER_POLL_SECONDS",
    )
    args = parser.parse_args(argv)
    return run_main(lambda: _run(args.loop, started), prog="worker")


def _run(loop: bool, started: float) -> int:
    settings = load_settings()
    setup_logging(settings.log_level)
    worker_id = uuid.uuid4()
    fits = capacity(settings, RENDER_PEAK_MB)
    checked_providers(settings)
    try:
        control = dbmod.connect(settings, "ai_video_bot-worker-control")
        migrate(control)
        pool = Pool(settings, fits, worker_id, lambda: open_slot(settings))
        listening = loop or settings.worker_listen_seconds > 0
        if listening:
            control.listen(dbmod.wake_channel(settings.database_schema))
        _register(control, worker_id, pool)
        window = Window(
            claim_until=started + settings.worker_max_seconds,
            stay_until=started + settings.worker_listen_seconds,
            loop=loop,
        )
        pool.start(window)
    except ConfigurationError:
        raise
    except Exception as exc:  # whatever connecting or migrating raised: the worker cannot run
        raise Unavailable(f"cannot use the database ({dbmod.describe(settings)}): {exc}") from None
    log.info(
        "worker ready worker=%s %s %s providers=%s",
        worker_id,
        fits.describe(),
        dbmod.describe(settings),
        settings.providers_label,
    )
    warn_if_database_is_large(settings, control)
    signal.signal(signal.SIGTERM, lambda *_: pool.stop())
    _supervise(pool, control, worker_id, listening)
    pool.join()
    queue.stop_worker(control, worker_id)
    control.close()
    log.info("worker done worker=%s jobs=%s", worker_id, pool.ran)
    return 0


def _register(control: dbmod.Database, worker_id: uuid.UUID, pool: Pool) -> None:
    """Record this process in `workers`, or renew its heartbeat there."""
    fits = pool.capacity
    queue.register_worker(
        control, worker_id, socket.gethostname(), os.getpid(), fits.slots, fits.render_slots
    )


def _supervise(pool: Pool, control: dbmod.Database, worker_id: uuid.UUID, listening: bool) -> None:
    """While any slot runs: pass each notification on to the idle slots, and renew the
    process's heartbeat."""
    next_beat = time.monotonic() + WORKER_HEARTBEAT_SECONDS
    while pool.alive():
        if listening:
            if wait_for_work(control, min(next_beat, time.monotonic() + 1.0)):
                pool.wake.notify()
        else:
            pool.join(timeout=1.0)
        if time.monotonic() >= next_beat:
            _register(control, worker_id, pool)
            next_beat = time.monotonic() + WORKER_HEARTBEAT_SECONDS
