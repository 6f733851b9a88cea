"""The cron worker: `python -m functions.worker` is one tick.

A tick claims one job at a time and runs it until nothing is runnable or WORKER_MAX_SECONDS is
spent; then it claims nothing new and exits 0. `--loop` keeps polling, for local runs. The exit
code is non-zero only when the worker cannot run at all (configuration, database), with a
message that says why.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from shared import db as dbmod
from shared import queue
from shared.config import ConfigError, Settings, load_settings
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
        jobs = queue.claim(database, 1, settings.worker_lease_seconds)
        if not jobs:
            break
        run_job(JobContext(settings, database, telegram, providers, jobs[0]))
        ran += 1
    return ran


def warn_if_database_is_large(settings: Settings, database: dbmod.Database) -> None:
    size_mb = database.one("database_size_mb")["size_mb"]
    if size_mb > settings.db_size_warn_mb:
        log.warning(
            "database is large size_mb=%s limit_mb=%s: run `python manage.py prune --older-than 30`",
            size_mb, settings.db_size_warn_mb,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m functions.worker", description=__doc__.split("\n")[0])
    parser.add_argument("--loop", action="store_true", help="keep polling for jobs (local runs)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        setup_logging(settings.log_level)
        database, telegram, providers = start(settings)
    except (ConfigError, dbmod.DatabaseUrlError) as exc:
        print(f"worker: configuration error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"worker: cannot use the database ({dbmod.describe(settings)}): {exc}", file=sys.stderr)
        return 2
    warn_if_database_is_large(settings, database)
    while True:
        ran = run_tick(settings, database, telegram, providers)
        log.info("worker tick done jobs=%s", ran)
        if not args.loop:
            return 0
        time.sleep(settings.worker_poll_seconds)
