"""What the tests share besides fixtures (those are in conftest.py): Telegram updates to send,
the webhook's secret, a worker that ticks in the test's process, the CLI as a subprocess."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from flask.testing import FlaskClient

from functions.worker.main import run_tick, start
from localapi import Reply
from localapi.telegram_server import DEFAULT_TOKEN, TelegramServer
from shared import db as dbmod
from shared import queue
from shared.config import REPO_ROOT, load_settings
from shared.db import Database

FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures" / "updates"
SAMPLES_DIR = REPO_ROOT / "tests" / "fixtures" / "bot-api-samples"
WEBHOOK_SOURCE = str(REPO_ROOT / "functions" / "webhook" / "main.py")
SECRET = "test-secret_0123456789"
TOKEN = DEFAULT_TOKEN
USER_ID = 1111111
SECRET_HEADERS = {"X-Telegram-Bot-Api-Secret-Token": SECRET}


def load_update(name: str, update_id: int | None = None) -> dict[str, Any]:
    """A fixture from tests/fixtures/updates (a fresh copy), optionally with another update_id."""
    update = json.loads((FIXTURES_DIR / f"{name}.json").read_text(encoding="utf-8"))
    if update_id is not None:
        update["update_id"] = update_id
    return update


def sample_paths() -> list[Path]:
    """Telegram's own sample updates (copied from its webhook guide, see the folder's README)."""
    paths = sorted(SAMPLES_DIR.glob("*.json"))
    assert len(paths) == 4, f"the Telegram samples are missing from {SAMPLES_DIR}"
    return paths


def text_message(
    text: str, update_id: int, *, user_id: int = USER_ID, language: str = "en"
) -> dict[str, Any]:
    update = load_update("description_en", update_id)
    message = update["message"]
    message["text"] = text
    message["from"] = {**message["from"], "id": user_id, "language_code": language}
    message["chat"] = {**message["chat"], "id": user_id}
    return update


def press(update_id: int, data: str, message_id: int, *, user_id: int = USER_ID) -> dict[str, Any]:
    """A press of a button under the bot's script message `message_id`."""
    update = load_update("callback_approve_script", update_id)
    callback = update["callback_query"]
    callback["data"] = data
    callback["id"] = f"cbq-{update_id}"
    callback["from"] = {**callback["from"], "id": user_id}
    callback["message"]["message_id"] = message_id
    return update


def count(db: Database, table: str) -> int:
    return db.execute(f"SELECT count(*) FROM {table}")[0][0]


def park_at_gate(db: Database, gate: str, message_id: int, ttl_seconds: float = 3600.0) -> int:
    """Run the worker's side of a gate with the real queue: claim the job, open `gate`."""
    [job] = queue.claim(db, 1, lease_seconds=60)
    queue.open_gate(db, job, gate, message_id, ttl_seconds)
    return job.id


def post(client: FlaskClient, update: Any, **kwargs: Any) -> Any:
    """POST an update with the right secret; return the response, read and closed.

    Closing runs the webhook's after-response work (the gate message edit), as a real WSGI
    server does once the response is sent.
    """
    response = client.post("/", json=copy.deepcopy(update), headers=SECRET_HEADERS, **kwargs)
    response.get_data()
    response.close()
    return response


def child_env(schema_env: dict[str, str], **extra: str) -> dict[str, str]:
    """The process environment for a subprocess that must use the test's schema."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATABASE_SCHEMA")}
    env.update(schema_env)
    env.update(extra)
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def manage(env: dict[str, str], *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=child_env(env, **extra_env),
        capture_output=True,
        text=True,
        timeout=60,
    )


CHAT = 4242


class Worker:
    """Cron ticks in this process, with settings from `env`."""

    def __init__(self, env: dict[str, str]) -> None:
        self.settings = load_settings(env)
        self.db, self.telegram, self.providers = start(self.settings)

    def tick(self) -> int:
        return run_tick(self.settings, self.db, self.telegram, self.providers)


def worker_process(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """One cron run of the worker in a process of its own (to be killed), its output dropped."""
    return subprocess.Popen(
        [sys.executable, "-m", "functions.worker"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kill_worker_when(
    env: dict[str, str], ready: Callable[[], bool], seen: Callable[[], object], pause: float = 0.05
) -> None:
    """Start one cron run of the worker in a process of its own and SIGKILL it as soon as
    `ready()` holds; fails when it ends by itself first, or when `ready()` never holds within a
    minute (the message is `seen()`, what was there instead)."""
    process = worker_process(env)
    try:
        deadline = time.monotonic() + 60
        while not ready():
            assert time.monotonic() < deadline, seen()
            assert process.poll() is None, "the worker ended before it was killed"
            time.sleep(pause)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def scenes_of(db: Database, job_id: int) -> int:
    """How many scenes the job's script has."""
    return len(job(db, job_id)["checkpoints"]["script"]["scenes"])


def wait_out_lease(db: dbmod.Database, job_id: int, margin: float = 0.2) -> None:
    """Sleep until job `job_id`'s lease has expired by the database's clock (a killed worker's
    job is then taken back by the next claim)."""
    [[left]] = db.execute(
        "SELECT extract(epoch FROM lease_expires_at - now()) FROM jobs WHERE id = :j", j=job_id
    )
    time.sleep(max(0.0, float(left)) + margin)


def enqueue(db: dbmod.Database, description: str, language: str = "en") -> int:
    job_id, _ = queue.enqueue(
        db, chat_id=CHAT, user_id=CHAT, description=description, language=language, max_attempts=3
    )
    return job_id


def decide(db: dbmod.Database, job_id: int, gate: str, status: str = "approved") -> None:
    db.execute(
        f"INSERT INTO {db.schema}.approval_statuses (job_id, approval_type, status, expires_at) "
        "VALUES (:j, :g, :s, now() + interval '1 day')",
        j=str(job_id),
        g=gate,
        s=status,
    )


def job(db: dbmod.Database, job_id: int) -> dict:
    return db.one("get_job", id=job_id)


def texts_sent(telegram: TelegramServer) -> list[str]:
    return [call.params.get("text", "") for call in telegram.calls_to("sendMessage")]


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
        self.db.execute(
            f"UPDATE {self.db.schema}.test_clock SET offset_seconds = offset_seconds + :s",
            s=seconds,
        )


def completion(content: str) -> Reply:
    """A chat completion whose message says `content`, as OpenAI answers one."""
    return Reply.json(
        200,
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": content, "refusal": None},
                }
            ],
        },
    )
