"""Apply `sql/NNN_*.sql` in order, once each, recorded in `schema_migrations`.

Concurrent runs are safe: the slow path takes a transaction-scoped advisory lock (fine behind
PgBouncer), re-reads what is applied, and applies the rest in the same transaction. When nothing
is pending, the fast path is a single SELECT with no lock.

    python -m shared.migrate
"""

from __future__ import annotations

import logging
import re
import sys
import zlib
from pathlib import Path

from shared import db
from shared.config import load_settings
from shared.errors import ConfigurationError, Unavailable, run_main
from shared.logs import setup_logging

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "sql"
_MIGRATION_RE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def migration_files() -> list[Path]:
    return sorted(p for p in MIGRATIONS_DIR.iterdir() if _MIGRATION_RE.match(p.name))


def _applied(database: db.Database) -> set[str]:
    exists = database.execute(
        "SELECT to_regclass(:t) IS NOT NULL", t=f"{database.schema}.schema_migrations"
    )
    if not exists[0][0]:
        return set()
    return {row[0] for row in database.execute("SELECT version FROM schema_migrations")}


def migrate(database: db.Database) -> list[str]:
    """Apply pending migrations; return the names applied by this call."""
    files = migration_files()
    if {p.name for p in files} <= _applied(database):
        return []
    lock_key = zlib.crc32(f"ai_video_bot.migrate.{database.schema}".encode())
    applied_now: list[str] = []
    with database.transaction():
        database.execute("SELECT pg_advisory_xact_lock(:key)", key=lock_key)
        database.execute(f"CREATE SCHEMA IF NOT EXISTS {database.schema}")
        database.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        done = _applied(database)
        for path in files:
            if path.name in done:
                continue
            database.execute(path.read_text(encoding="utf-8"))
            database.execute("INSERT INTO schema_migrations (version) VALUES (:v)", v=path.name)
            applied_now.append(path.name)
    for name in applied_now:
        log.info("migration applied name=%s schema=%s", name, database.schema)
    return applied_now


def main() -> int:
    """Exit 0 when the schema is up to date, 2 when migrate cannot run (`shared.errors.exit_code`)."""
    return run_main(_run, prog="migrate")


def _run() -> int:
    settings = load_settings()
    setup_logging(settings.log_level)
    try:
        database = db.connect(settings, "ai_video_bot-migrate")
    except ConfigurationError:
        raise
    except Exception as exc:  # the database is unreachable: say so plainly
        raise Unavailable(
            f"cannot connect to the database ({db.describe(settings)}): {exc}"
        ) from None
    log.info("migrate connected %s", db.describe(settings))
    try:
        applied = migrate(database)
    finally:
        database.close()
    print(
        f"applied {len(applied)} migration(s)"
        + (": " + ", ".join(applied) if applied else ", schema is up to date")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
