"""Real PostgreSQL for every test: embedded by default, TEST_DATABASE_URL when set.

Each test gets its own schema, migrated from scratch and dropped afterwards, so tests never see
each other's rows and the emergency SQL can name the schema exactly as operators would.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from flask.testing import FlaskClient
from hypothesis import settings as hypothesis_settings

from localapi.runway_server import RunwayServer
from localapi.telegram_server import TelegramServer
from shared import db as dbmod
from shared.config import Settings, load_settings
from shared.migrate import migrate
from shared.webhook import create_app, webhook_of
from tests.support import CLOCK_SQL, SECRET, TOKEN, DatabaseClock

# Examples hit real PostgreSQL and HTTP: a per-example deadline would only measure the machine's load.
hypothesis_settings.register_profile("real-services", deadline=None)
hypothesis_settings.load_profile("real-services")


@pytest.fixture(scope="session")
def pg_url() -> str:
    """TEST_DATABASE_URL, or an embedded server in its own temporary directory, deleted at exit
    (not under pytest's tmp_path, which a concurrent pytest run may prune)."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    parent = Path(tempfile.mkdtemp(prefix="videobot-pg-"))
    parent.chmod(0o755)  # the server runs as its own OS user when the tests run as root
    return dbmod.embedded_database_url(parent, delete_on_exit=True)


@pytest.fixture
def schema_env(pg_url: str) -> Iterator[dict[str, str]]:
    """Environment variables for a fresh, migrated schema (also for child processes)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    env = {"DATABASE_URL": pg_url, "DATABASE_SCHEMA": schema, "JOB_MAX_ATTEMPTS": "3"}
    admin = dbmod.connect(load_settings(env), "tests")
    migrate(admin)
    for statement in CLOCK_SQL.format(schema=schema).split(";\n"):
        admin.execute(statement)
    yield env
    admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    admin.close()


@pytest.fixture
def settings(schema_env: dict[str, str]) -> Settings:
    return load_settings(schema_env)


@pytest.fixture
def clock(db: dbmod.Database) -> DatabaseClock:
    return DatabaseClock(db)


@pytest.fixture
def db(settings: Settings) -> Iterator[dbmod.Database]:
    database = dbmod.connect(settings, "tests")
    yield database
    database.close()


@pytest.fixture
def telegram() -> Iterator[TelegramServer]:
    server = TelegramServer(TOKEN)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def webhook_env(schema_env: dict[str, str], telegram: TelegramServer) -> dict[str, str]:
    return {
        **schema_env,
        "TELEGRAM_WEBHOOK_SECRET": SECRET,
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_BASE": telegram.base_url,
        "MAX_JOBS_PER_DAY": "3",
        "LOG_LEVEL": "WARNING",
    }


@pytest.fixture
def client(webhook_env: dict[str, str]) -> Iterator[FlaskClient]:
    """A webhook app of this test's own, on this test's schema; its connections closed after."""
    app = create_app(load_settings(webhook_env))
    yield app.test_client()
    webhook_of(app).close()


@pytest.fixture
def worker_env(schema_env: dict[str, str], telegram: TelegramServer) -> dict[str, str]:
    return dict(
        schema_env,
        TELEGRAM_BOT_TOKEN=telegram.token,
        TELEGRAM_API_BASE=telegram.base_url,
        VIDEO_SECONDS="8",
        VIDEO_RESOLUTION="720",
        ANIMATION_PROVIDER="none",
        RETRY_BASE_SECONDS="0",
        WORKER_MAX_SECONDS="120",
        WORKER_CONCURRENCY="2",
    )


@pytest.fixture
def runway() -> Iterator[RunwayServer]:
    """The Runway stand-in, its tasks taking half a second."""
    with RunwayServer(task_seconds=0.5) as server:
        yield server
