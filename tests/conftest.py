"""Real PostgreSQL for every test: embedded by default, TEST_DATABASE_URL when set.

Each test gets its own schema, migrated from scratch and dropped afterwards, so tests never see
each other's rows and the emergency SQL can name the schema exactly as operators would.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import settings as hypothesis_settings

from shared import db as dbmod
from shared.config import REPO_ROOT, Settings, load_settings
from shared.migrate import migrate

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


# The database clock of a test's schema: every connection resolves an unqualified `now()` to
# this function before pg_catalog's (shared/db.py sets the search_path so), and `DatabaseClock`
# moves it, so that a test makes a deadline pass without editing rows.
CLOCK_SQL = """
CREATE TABLE {schema}.test_clock (offset_seconds float8 NOT NULL);
INSERT INTO {schema}.test_clock VALUES (0);
CREATE FUNCTION {schema}.now() RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.now() + make_interval(secs => (SELECT offset_seconds FROM {schema}.test_clock))
$$;
"""


@dataclass
class DatabaseClock:
    """Moves the test database's `now()`, for every connection to the test's schema."""

    db: dbmod.Database

    def advance(self, seconds: float) -> None:
        self.db.execute(f"UPDATE {self.db.schema}.test_clock SET offset_seconds = offset_seconds + :s", s=seconds)


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


def child_env(schema_env: dict[str, str], **extra: str) -> dict[str, str]:
    """The process environment for a subprocess that must use the test's schema."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATABASE_SCHEMA")}
    env.update(schema_env)
    env.update(extra)
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env
