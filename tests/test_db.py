"""DATABASE_URL parsing, configuration errors and migrations, against real PostgreSQL."""

from __future__ import annotations

import ssl
import subprocess
import sys
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import db as dbmod
from shared.config import REPO_ROOT, ConfigError, load_settings
from shared.migrate import migrate, migration_files
from tests.support import child_env


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_render_internal_url_without_port(scheme):
    params = dbmod.parse_database_url(f"{scheme}://bot:s3cret@dpg-abc123-a/videobot")
    assert (params.user, params.password, params.host, params.port, params.database) == (
        "bot",
        "s3cret",
        "dpg-abc123-a",
        5432,
        "videobot",
    )
    assert params.unix_sock is None


def test_percent_encoded_credentials_are_decoded():
    params = dbmod.parse_database_url("postgresql://us%40er:p%3Aw%2Fd%40@db.example:6543/app")
    assert (params.user, params.password, params.port) == ("us@er", "p:w/d@", 6543)


def test_unix_socket_from_host_query():
    params = dbmod.parse_database_url("postgresql://postgres:@/postgres?host=/tmp/pg")
    assert params.unix_sock == "/tmp/pg/.s.PGSQL.5432"
    assert params.ssl_context is False
    assert params.describe() == "/tmp/pg/postgres"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("disable", False), ("allow", None), ("prefer", None), ("require", True)],
)
def test_sslmode_maps_onto_pg8000(mode, expected):
    assert dbmod.parse_database_url(f"postgres://u:p@h/d?sslmode={mode}").ssl_context is expected


@pytest.mark.parametrize(("mode", "checks_host"), [("verify-ca", False), ("verify-full", True)])
def test_verifying_sslmodes_build_a_verifying_context(mode, checks_host):
    context = dbmod.parse_database_url(f"postgres://u:p@h/d?sslmode={mode}").ssl_context
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is checks_host


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:hunter2@h/d", "must start with postgres://"),
        ("postgres://u:hunter2@h:port/d", "port is not a number"),
        ("postgres://u:hunter2@h/d?sslmode=maybe", "sslmode='maybe'"),
        ("postgres://u:hunter2@h", "names no database"),
        ("postgres://u:hunter2@/d", "names no host"),
    ],
)
def test_malformed_urls_say_what_is_wrong_without_the_password(url, message):
    with pytest.raises(dbmod.DatabaseUrlError) as error:
        dbmod.parse_database_url(url)
    assert message in str(error.value)
    assert "hunter2" not in str(error.value)


@given(
    user=st.text(min_size=1, max_size=20),
    password=st.text(min_size=1, max_size=20),
    host=st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z]{2,5})?", fullmatch=True),
    port=st.integers(1, 65535),
    database=st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True),
)
def test_any_encoded_url_round_trips(user, password, host, port, database):
    url = f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/{database}"
    params = dbmod.parse_database_url(url)
    assert (params.user, params.password, params.host, params.port, params.database) == (
        user,
        password,
        host,
        port,
        database,
    )


def test_log_line_names_host_database_and_schema_never_the_password():
    settings = load_settings({"DATABASE_URL": "postgres://bot:hunter2@db.internal/videos"})
    assert dbmod.describe(settings) == "postgres=db.internal:5432/videos schema=ai_video_bot"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DATABASE_SCHEMA": "drop table;"}, "DATABASE_SCHEMA"),
        ({"WORKER_LEASE_SECONDS": "soon"}, "WORKER_LEASE_SECONDS must be a whole number"),
        ({"VIDEO_FORMAT": "4:3"}, "VIDEO_FORMAT must be one of 9:16, 16:9, 1:1"),
        ({"APPROVAL_GATES": "script,final"}, "APPROVAL_GATES may name only"),
        ({"ALLOWED_USER_IDS": "12,bob"}, "ALLOWED_USER_IDS"),
    ],
)
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


def test_gates_can_be_switched_off():
    assert load_settings({"APPROVAL_GATES": ""}).approval_gates == ()
    assert load_settings({"APPROVAL_GATES": "images"}).approval_gates == ("images",)
    assert load_settings({"APPROVAL_GATES": "storyboard"}).approval_gates == ("images",)


def test_migrations_run_again_do_nothing(db):
    assert migrate(db) == []
    versions = [row[0] for row in db.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == [path.name for path in migration_files()]


def test_everything_lives_in_the_configured_schema(db):
    tables = {
        row[0]
        for row in db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = :s", s=db.schema
        )
    }
    assert {"jobs", "approval_statuses", "telegram_updates", "schema_migrations"} <= tables
    columns = db.execute(
        "SELECT column_name, data_type, character_maximum_length, is_nullable "
        "FROM information_schema.columns WHERE table_schema = :s AND table_name = 'approval_statuses' "
        "ORDER BY ordinal_position",
        s=db.schema,
    )
    assert columns == [
        ["id", "integer", None, "NO"],
        ["job_id", "character varying", 100, "NO"],
        ["approval_type", "character varying", 50, "NO"],
        ["status", "character varying", 20, "NO"],
        ["created_at", "timestamp without time zone", None, "YES"],
        ["expires_at", "timestamp without time zone", None, "NO"],
    ]
    indexes = {
        row[0]
        for row in db.execute("SELECT indexname FROM pg_indexes WHERE schemaname = :s", s=db.schema)
    }
    assert {"idx_approval_job_type", "idx_approval_expires", "unique_job_approval"} <= indexes


def test_three_concurrent_migrate_processes_all_succeed(pg_url):
    schema_env = {"DATABASE_URL": pg_url, "DATABASE_SCHEMA": "t_concurrent_migrate"}
    admin = dbmod.connect(load_settings(schema_env), "tests")
    admin.execute("DROP SCHEMA IF EXISTS t_concurrent_migrate CASCADE")
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "shared.migrate"],
                cwd=REPO_ROOT,
                env=child_env(schema_env),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        outputs = [proc.communicate(timeout=60) for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0, 0], outputs
        applied = [
            out for out, _ in outputs if f"applied {len(migration_files())} migration" in out
        ]
        assert len(applied) == 1, outputs
        count = admin.execute("SELECT count(*) FROM t_concurrent_migrate.schema_migrations")[0][0]
        assert count == len(migration_files())
    finally:
        admin.execute("DROP SCHEMA IF EXISTS t_concurrent_migrate CASCADE")
        admin.close()


def test_migrate_command_reports_an_unreachable_database_plainly(schema_env):
    env = child_env(schema_env, DATABASE_URL="postgresql://u:hunter2@127.0.0.1:1/nothing")
    result = subprocess.run(
        [sys.executable, "-m", "shared.migrate"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "cannot connect to the database (postgres=127.0.0.1:1/nothing" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
