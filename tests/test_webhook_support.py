"""What the webhook and bot tests share: update fixtures, the local Telegram server, the app.

No tests live here; the test modules import the fixtures they use.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask.testing import FlaskClient

from localapi.telegram_server import TelegramServer
from shared import queue
from shared.config import REPO_ROOT, load_settings
from shared.db import Database
from shared.webhook import create_app, webhook_of

FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures" / "updates"
SAMPLES_DIR = REPO_ROOT / "tests" / "fixtures" / "telegram-samples"
WEBHOOK_SOURCE = str(REPO_ROOT / "functions" / "webhook" / "main.py")
SECRET = "test-secret_0123456789"
TOKEN = "123456:TEST-token"
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


def text_message(text: str, update_id: int, *, user_id: int = USER_ID, language: str = "en") -> dict[str, Any]:
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


def post(client: FlaskClient, update: Any, **kwargs: Any) -> Any:
    """POST an update with the right secret; return the response, read and closed.

    Closing runs the webhook's after-response work (the gate message edit), as a real WSGI
    server does once the response is sent.
    """
    response = client.post("/", json=copy.deepcopy(update), headers=SECRET_HEADERS, **kwargs)
    response.get_data()
    response.close()
    return response
