"""The baseline of bench/webhook.py: the least a Telegram webhook can do per update.

    gunicorn -w 2 --threads 8 'bench.bare_webhook:create()'

A plain WSGI app (no framework) that does what every webhook must: check the
X-Telegram-Bot-Api-Secret-Token header (401), parse the JSON update (400), then make ONE bare
INSERT of a row (update_id, the sender's user id, the text) into BARE_TABLE, a prepared
statement on this serving thread's own pg8000 connection, and answer 200 with a sendMessage
body, as our webhook does. Settings come from the environment (DATABASE_URL, DATABASE_SCHEMA,
TELEGRAM_WEBHOOK_SECRET); the table must exist (bench/webhook.py creates it). It is a bench
fixture, not part of the bot.
"""

from __future__ import annotations

import hmac
import json
import threading
from typing import Any, Callable, Iterable

from shared import db
from shared.config import Settings, load_settings
from shared.errors import DATABASE_ERRORS

BARE_TABLE = "bench_bare_updates"
CREATE_TABLE = (
    f"CREATE TABLE {BARE_TABLE} (update_id BIGINT PRIMARY KEY, user_id BIGINT, text TEXT NOT NULL)"
)
INSERT = f"INSERT INTO {BARE_TABLE} (update_id, user_id, text) VALUES (:update_id, :user_id, :text)"
MAX_BODY_BYTES = 1024 * 1024

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class BareWebhook:
    """A WSGI callable: secret check, JSON parse, one INSERT, 200."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._secret = settings.webhook_secret_token.encode()
        self._local = threading.local()

    def _insert(self) -> Any:
        """This thread's prepared INSERT, on a connection of its own opened on first use."""
        insert = getattr(self._local, "insert", None)
        if insert is None:
            database = db.connect(self.settings, "bench-bare-webhook")
            insert = database.conn.prepare(INSERT)
            self._local.database, self._local.insert = database, insert
        return insert

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] == "GET":
            return _answer(start_response, "200 OK", {"ok": True})
        given = environ.get("HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN", "").encode(
            "utf-8", "surrogateescape"
        )
        if not hmac.compare_digest(given, self._secret):
            return _answer(start_response, "401 Unauthorized", {"ok": False})
        try:
            update = json.loads(environ["wsgi.input"].read(MAX_BODY_BYTES + 1))
            update_id = update["update_id"]
            message = update.get("message") or {}
            user_id = (message.get("from") or {}).get("id")
            chat_id = (message.get("chat") or {}).get("id")
            text = message.get("text") or ""
        except (ValueError, TypeError, KeyError, AttributeError):
            return _answer(start_response, "400 Bad Request", {"ok": False})
        try:
            self._insert().run(update_id=update_id, user_id=user_id, text=text)
        except DATABASE_ERRORS:
            self._local.database.close()
            self._local.insert = None
            return _answer(start_response, "503 Service Unavailable", {"ok": False})
        reply = {"method": "sendMessage", "chat_id": chat_id, "text": f"Got it: {update_id}"}
        return _answer(start_response, "200 OK", reply)


def _answer(start_response: StartResponse, status: str, payload: dict[str, Any]) -> list[bytes]:
    body = json.dumps(payload).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def create() -> BareWebhook:
    """The app from the environment's settings (gunicorn's factory)."""
    return BareWebhook(load_settings())
