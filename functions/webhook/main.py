"""The Telegram webhook: a stateless HTTP function in front of PostgreSQL.

    functions-framework --target=webhook --source=functions/webhook/main.py --port=8080
    gunicorn -w 2 --threads 8 functions.webhook.main:app     (as deployed; see bench/webhook.py)

`GET /healthz` answers 200 while `SELECT 1` works, 503 otherwise. A POST to any path is one
update, checked in this order: the secret header (401, nothing written), the size (400 over
1 MB), the JSON (400 unless an object with an integer update_id). The update is then handled in
one transaction by `shared.bot.handle_update`, and the response body carries the bot's answer as
one Bot API call. A database failure answers 503, so Telegram delivers the update again; 200
means the update is recorded. The one outbound call, the edit after a decisive button press,
runs after the response is sent, with a short timeout, and its failure is only logged.
"""

from __future__ import annotations

import hmac
import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    # functions-framework loads this file by path and puts only its own folder on sys.path.
    sys.path.insert(0, str(REPO_ROOT))

import flask  # noqa: E402
import functions_framework  # noqa: E402
import pg8000.native  # noqa: E402

from shared import bot, db  # noqa: E402
from shared.config import ConfigError, Settings, load_settings  # noqa: E402
from shared.errors import PermanentError, TransientError  # noqa: E402
from shared.http import RetryPolicy  # noqa: E402
from shared.logs import setup_logging  # noqa: E402
from shared.migrate import migrate  # noqa: E402
from shared.telegram import TelegramClient  # noqa: E402

log = logging.getLogger("webhook")

MAX_BODY_BYTES = 1024 * 1024
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
EDIT_TIMEOUT_SECONDS = 3.0
DATABASE_ERRORS = (pg8000.native.InterfaceError, pg8000.native.DatabaseError, OSError)


def _load_settings() -> Settings:
    settings = load_settings()
    if not settings.telegram_webhook_secret:
        raise ConfigError(
            "TELEGRAM_WEBHOOK_SECRET is required: the webhook accepts only requests that carry "
            "it in the X-Telegram-Bot-Api-Secret-Token header (pass it to setWebhook as secret_token)"
        )
    return settings


SETTINGS = _load_settings()
setup_logging(SETTINGS.log_level)
_SECRET = SETTINGS.webhook_secret_token.encode()
_thread_state = threading.local()
_migration_lock = threading.Lock()
_migrated = False
log.info("webhook ready: %s", db.describe(SETTINGS))


# --- Per-thread resources ---


def _database() -> db.Database:
    """This thread's connection, opened (and the schema migrated, once per process) on demand."""
    database = getattr(_thread_state, "database", None)
    if database is None:
        database = db.connect(SETTINGS, "ai_video_bot-webhook")
        _thread_state.database = database
        _migrate_once(database)
    return database


def _migrate_once(database: db.Database) -> None:
    global _migrated
    with _migration_lock:
        if not _migrated:
            migrate(database)
            _migrated = True


def _drop_database() -> None:
    """Forget this thread's connection after a failure; the next request reconnects."""
    database = getattr(_thread_state, "database", None)
    _thread_state.database = None
    if database is not None:
        database.close()


def _telegram() -> TelegramClient | None:
    client = getattr(_thread_state, "telegram", None)
    if client is None and SETTINGS.telegram_bot_token:
        client = TelegramClient(
            SETTINGS.telegram_bot_token,
            SETTINGS.telegram_api_base,
            timeout=EDIT_TIMEOUT_SECONDS,
            policy=RetryPolicy(max_attempts=1),
        )
        _thread_state.telegram = client
    return client


# --- Responses ---


def _json(status: int, payload: dict[str, Any]) -> flask.Response:
    """A JSON response; ASCII-escaped, so a lone surrogate echoed from the update cannot break it."""
    return flask.Response(json.dumps(payload), status=status, mimetype="application/json")


def _error(status: int, message: str) -> flask.Response:
    return _json(status, {"ok": False, "error": message})


# --- Handlers ---


def healthz() -> flask.Response:
    try:
        _database().execute("SELECT 1")
    except DATABASE_ERRORS as exc:
        _drop_database()
        log.warning("health check failed error=%s", type(exc).__name__)
        return _error(503, "database unavailable")
    return _json(200, {"ok": True})


def _read_update(request: flask.Request) -> dict[str, Any] | flask.Response:
    """The update from the request body, or the 400 response that rejects it."""
    if (request.content_length or 0) > MAX_BODY_BYTES:
        return _error(400, "body too large")
    body = request.stream.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        return _error(400, "body too large")
    try:
        update = json.loads(body)
    except (ValueError, RecursionError):
        return _error(400, "body is not JSON")
    if bot.update_id_of(update) is None:
        return _error(400, "body is not an update: an object with an integer update_id")
    return update


def receive_update(request: flask.Request) -> flask.Response:
    given = request.headers.get(SECRET_HEADER, "").encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, _SECRET):
        log.warning("webhook refused reason=bad_secret")
        return _error(401, "unauthorized")
    update = _read_update(request)
    if isinstance(update, flask.Response):
        return update
    update_id = update["update_id"]
    try:
        reply = bot.handle_update(_database(), SETTINGS, update)
    except DATABASE_ERRORS as exc:
        _drop_database()
        log.warning("update not recorded update_id=%s error=%s: %s", update_id, type(exc).__name__, exc)
        return _error(503, "database unavailable")
    except Exception:
        log.exception("update handler failed update_id=%s", update_id)
        return _record_unhandled(update_id)
    response = _json(200, reply.body or {})
    if reply.edit is not None:
        response.call_on_close(lambda: _apply_edit(reply.edit, update_id))
    return response


def _record_unhandled(update_id: int) -> flask.Response:
    """A bug in the handler: record the update so Telegram does not redeliver it forever.

    The handler's transaction was rolled back, and the connection may be mid-protocol, so a
    fresh one records the update as 'unhandled'. 503 if even that fails.
    """
    _drop_database()
    try:
        _database().run("record_update", update_id=update_id, kind="unhandled", chat_id=None)
    except DATABASE_ERRORS:
        _drop_database()
        return _error(503, "database unavailable")
    return _json(200, {})


def _apply_edit(edit: bot.MessageEdit, update_id: int) -> None:
    """Show the decision on the gate message and drop its buttons; failures are only logged."""
    client = _telegram()
    if client is None:
        log.warning("gate message not edited update_id=%s reason=no_bot_token", update_id)
        return
    try:
        bot.perform_edit(client, edit)
    except (PermanentError, TransientError) as exc:
        log.warning("gate message not edited update_id=%s chat=%s error=%s", update_id, edit.chat_id, exc)


def _dispatch(request: flask.Request) -> flask.Response:
    if request.method == "GET" and request.path.rstrip("/") == "/healthz":
        return healthz()
    if request.method != "POST":
        return _error(405, "POST an update, or GET /healthz")
    return receive_update(request)


@functions_framework.http
def webhook(request: flask.Request) -> flask.Response:
    """The Cloud Functions-style entry point."""
    return _dispatch(request)


app = flask.Flask(__name__, static_folder=None)


@app.route("/", defaults={"path": ""}, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
@app.route("/<path:path>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def _wsgi_entry(path: str) -> flask.Response:
    """The same handler for gunicorn: every path goes to `webhook`."""
    return _dispatch(flask.request)
