"""The cron worker: `python -m functions.worker` is one tick.

A tick claims one job at a time and runs it until nothing is runnable or WORKER_MAX_SECONDS is
spent; then it claims nothing new. With WORKER_LISTEN_SECONDS it then stays up to that long in
all (from its start) and runs another tick as soon as a job, a decision or a revision is
inserted (LISTEN, see sql/002_notify.sql); otherwise it exits 0 at once. `--loop` keeps going:
a tick on each notification, and at least every WORKER_POLL_SECONDS so that retries and gate
deadlines come due. The exit code is non-zero only when the worker cannot run at all
(configuration, database), with a message that says why: 2, as `shared.errors.exit_code` maps it.
"""

from __future__ import annotations

import argparse
import logging
import time

from shared import db as dbmod
from shared import queue
from shared.config import ConfigError, Settings, load_settings
from shared.errors import ConfigurationError, Unavailable, run_main
from shared.logs import setup_logging
from shared.migrate import migrate
from shared.pipeline.job import JobContext
from shared.pipeline.runner import run_job
from shared.providers import Providers, make_providers
from shared.telegram import TelegramClient

log = logging.getLogger("worker")


def run_tick(
    settings: Settings, database: dbmod.Database, telegram: TelegramClient, providers: Providers
) -> int:
    """Claim and run jobs until none is runnable or the time is spent; return how many ran."""
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
    """Everything a tick needs; raises ConfigError or a connection error when it can't run."""
    if not settings.telegram_bot_token:
        raise ConfigError("TELEGRAM_BOT_TOKEN is not set: the worker cannot talk to Telegram")
    providers = make_providers(settings)
    database = dbmod.connect(settings, "ai_video_bot-worker")
    migrate(database)
    telegram = TelegramClient(settings.telegram_bot_token, settings.telegram_api_base)
    log.info("worker ready: %s providers=%s", dbmod.describe(settings), settings.providers_label)
    return database, telegram, providers


def listen(settings: Settings) -> dbmod.Database:
    """A connection of its own that listens to the schema's wake channel. It holds no lease and
    is idle between waits; subscribe before the first tick, so that nothing inserted after that
    tick's last claim goes unnoticed."""
    channel = dbmod.wake_channel(settings.database_schema)
    listener = dbmod.connect(settings, "ai_video_bot-worker-listen")
    listener.listen(channel)
    log.info("worker listening channel=%s", channel)
    return listener


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
        help="keep running: a tick on new work, and every WORKER_POLL_SECONDS",
    )
    args = parser.parse_args(argv)
    return run_main(lambda: _run(args.loop, started), prog="worker")


def _run(loop: bool, started: float) -> int:
    settings = load_settings()
    setup_logging(settings.log_level)
    try:
        database, telegram, providers = start(settings)
        listener = listen(settings) if loop or settings.worker_listen_seconds > 0 else None
    except ConfigurationError:
        raise
    except Exception as exc:  # whatever connecting or migrating raised: the worker cannot run
        raise Unavailable(f"cannot use the database ({dbmod.describe(settings)}): {exc}") from None
    warn_if_database_is_large(settings, database)
    listen_until = started + settings.worker_listen_seconds
    while True:
        ran = run_tick(settings, database, telegram, providers)
        log.info("worker tick done jobs=%s", ran)
        if listener is None:
            return 0
        if loop:
            wait_for_work(listener, time.monotonic() + settings.worker_poll_seconds)
        elif not wait_for_work(listener, listen_until):
            log.info("worker listen window over seconds=%s", settings.worker_listen_seconds)
            return 0
