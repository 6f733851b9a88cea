"""The Telegram webhook's HTTP layer: `create_app(settings)` builds it, and nothing happens at import.

`GET /healthz` answers 200 while `SELECT 1` works, 503 otherwise. A POST to any path is one
update, checked in this order: the secret header (401, nothing written), the size (400 over
1 MB), the JSON (400 unless an object with an integer update_id). The update is then handled in
one transaction by `shared.bot.handle_update`, and the response body carries the bot's answer as
one Bot API call. A database failure answers 503, so Telegram delivers the update again; 200
means the update is recorded. The one outbound call, the edit after a decisive button press,
runs after the response is sent, with a short timeout, and its failure is only logged.

Every POST goes straight from WSGI to `Webhook.answer_update`, past Flask's request context,
routing and response objects (about half of the webhook's own CPU per update, issue 17); GET
/healthz and the other methods go through Flask. The functions-framework target hands a
`flask.Request` to `Webhook.dispatch`, which answers the same. Each app holds its own database
connections, one per serving thread, opened on demand (the first one migrates the schema), so
that tests and the demo build as many apps as they like.
`functions/webhook/main.py` is the deployed entry point over this module.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from dataclasses import dataclass
from http import HTTPStatus
from typing import IO, Any, Callable, Iterable

import flask
from werkzeug.exceptions import ClientDisconnected
from werkzeug.wsgi import ClosingIterator, get_content_length, get_input_stream

from shared import bot, db
from shared.config import ConfigError, Settings
from shared.errors import DATABASE_ERRORS, PermanentError, TransientError
from shared.http import RetryPolicy
from shared.migrate import migrate
from shared.telegram import TelegramClient

log = logging.getLogger("webhook")

MAX_BODY_BYTES = 1024 * 1024
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
SECRET_ENVIRON = "HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN"
"""The WSGI environ's key for SECRET_HEADER."""
EDIT_TIMEOUT_SECONDS = 3.0
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
EXTENSION = "ai_video_bot.webhook"

StartResponse = Callable[..., Any]


@dataclass(frozen=True)
class Answer:
    """A response: the status, the JSON body and what to do once it is sent (the edit)."""

    status: int
    payload: dict[str, Any]
    after: Callable[[], None] | None = None

    def flask_response(self) -> flask.Response:
        response = flask.Response(
            _encode(self.payload), status=self.status, mimetype="application/json"
        )
        if self.after is not None:
            response.call_on_close(self.after)
        return response

    def wsgi(self, start_response: StartResponse) -> Iterable[bytes]:
        """Start the response and return its body; `after` runs when the server closes it."""
        body = _encode(self.payload)
        start_response(
            _STATUS_LINES[self.status],
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body] if self.after is None else ClosingIterator([body], self.after)


class Webhook:
    """The webhook's handlers and resources for one set of settings."""

    def __init__(self, settings: Settings) -> None:
        if not settings.telegram_webhook_secret:
            raise ConfigError(
                "TELEGRAM_WEBHOOK_SECRET is required: the webhook accepts only requests that carry "
                "it in the X-Telegram-Bot-Api-Secret-Token header (pass it to setWebhook as secret_token)"
            )
        self.settings = settings
        self._secret = settings.webhook_secret_token.encode()
        self._thread_state = threading.local()
        self._lock = threading.Lock()
        self._connections: set[db.Database] = set()
        self._migrated = False

    # --- Per-thread resources ---

    def _database(self) -> db.Database:
        """This thread's connection, opened (and the schema migrated, once per app) on demand."""
        database = getattr(self._thread_state, "database", None)
        if database is None:
            database = db.connect(self.settings, "ai_video_bot-webhook")
            self._thread_state.database = database
            with self._lock:
                self._connections.add(database)
                if not self._migrated:
                    migrate(database)
                    self._migrated = True
        return database

    def _drop_database(self) -> None:
        """Forget this thread's connection after a failure; the next request reconnects."""
        database = getattr(self._thread_state, "database", None)
        self._thread_state.database = None
        if database is not None:
            with self._lock:
                self._connections.discard(database)
            database.close()

    def close(self) -> None:
        """Close every connection this app opened, in any thread (when it stops serving)."""
        with self._lock:
            connections, self._connections = self._connections, set()
        for database in connections:
            database.close()

    def _telegram(self) -> TelegramClient | None:
        client = getattr(self._thread_state, "telegram", None)
        if client is None and self.settings.telegram_bot_token:
            client = TelegramClient(
                self.settings.telegram_bot_token,
                self.settings.telegram_api_base,
                timeout=EDIT_TIMEOUT_SECONDS,
                policy=RetryPolicy(max_attempts=1),
            )
            self._thread_state.telegram = client
        return client

    # --- Handlers ---

    def dispatch(self, request: flask.Request) -> flask.Response:
        """Answer one request: GET /healthz, or a POST of an update to any path."""
        if request.method == "GET" and request.path.rstrip("/") == "/healthz":
            return self.healthz().flask_response()
        if request.method != "POST":
            return _error(405, "POST an update, or GET /healthz").flask_response()
        answer = self.answer_update(
            request.headers.get(SECRET_HEADER, ""), request.content_length, request.stream
        )
        return answer.flask_response()

    def wsgi_update(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        """Answer a POST of an update straight from WSGI, as `dispatch` would."""
        answer = self.answer_update(
            environ.get(SECRET_ENVIRON, ""),
            get_content_length(environ),
            get_input_stream(environ),
        )
        return answer.wsgi(start_response)

    def healthz(self) -> Answer:
        try:
            self._database().execute("SELECT 1")
        except DATABASE_ERRORS as exc:
            self._drop_database()
            log.warning("health check failed error=%s", type(exc).__name__)
            return _error(503, "database unavailable")
        return Answer(200, {"ok": True})

    def answer_update(self, secret: str, content_length: int | None, body: IO[bytes]) -> Answer:
        """One update: `secret` is the header's value, `body` the request body's stream."""
        given = secret.encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, self._secret):
            log.warning("webhook refused reason=bad_secret")
            return _error(401, "unauthorized")
        update = _read_update(content_length, body)
        if isinstance(update, Answer):
            return update
        update_id = update["update_id"]
        try:
            reply = bot.handle_update(self._database(), self.settings, update)
        except DATABASE_ERRORS as exc:
            self._drop_database()
            log.warning(
                "update not recorded update_id=%s error=%s: %s", update_id, type(exc).__name__, exc
            )
            return _error(503, "database unavailable")
        except Exception:
            log.exception("update handler failed update_id=%s", update_id)
            return self._record_unhandled(update_id)
        if reply.edit is None:
            return Answer(200, reply.body or {})
        edit = reply.edit
        return Answer(200, reply.body or {}, lambda: self._apply_edit(edit, update_id))

    def _record_unhandled(self, update_id: int) -> Answer:
        """A bug in the handler: record the update so Telegram does not redeliver it forever.

        The handler's transaction was rolled back, and the connection may be mid-protocol, so a
        fresh one records the update as 'unhandled'. 503 if even that fails.
        """
        self._drop_database()
        try:
            self._database().run("record_update", update_id=update_id, kind="unhandled")
        except DATABASE_ERRORS:
            self._drop_database()
            return _error(503, "database unavailable")
        return Answer(200, {})

    def _apply_edit(self, edit: bot.MessageEdit, update_id: int) -> None:
        """Show the decision on the gate message and drop its buttons; failures are only logged."""
        client = self._telegram()
        if client is None:
            log.warning("gate message not edited update_id=%s reason=no_bot_token", update_id)
            return
        try:
            bot.perform_edit(client, edit)
        except (PermanentError, TransientError) as exc:
            log.warning(
                "gate message not edited update_id=%s chat=%s error=%s",
                update_id,
                edit.chat_id,
                exc,
            )


# --- Responses ---

_STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}


def _encode(payload: dict[str, Any]) -> bytes:
    """JSON, ASCII-escaped, so a lone surrogate echoed from the update cannot break it."""
    return json.dumps(payload).encode()


def _error(status: int, message: str) -> Answer:
    return Answer(status, {"ok": False, "error": message})


def _read_update(content_length: int | None, body: IO[bytes]) -> dict[str, Any] | Answer:
    """The update from the request body, or the 400 answer that rejects it."""
    if (content_length or 0) > MAX_BODY_BYTES:
        return _error(400, "body too large")
    try:
        data = body.read(MAX_BODY_BYTES + 1)
    except ClientDisconnected:
        return _error(400, "body shorter than its Content-Length")
    if len(data) > MAX_BODY_BYTES:
        return _error(400, "body too large")
    try:
        update = json.loads(data)
    except (ValueError, RecursionError):
        return _error(400, "body is not JSON")
    if bot.update_id_of(update) is None:
        return _error(400, "body is not an update: an object with an integer update_id")
    return update


# --- The app ---


def create_app(settings: Settings) -> flask.Flask:
    """The webhook as a Flask app: a POST to any path goes to `Webhook.wsgi_update`, every
    other method and path to `Webhook.dispatch`.

    Raises ConfigError when TELEGRAM_WEBHOOK_SECRET is not set. Connects to nothing yet: the
    first request does. `webhook_of(app)` is the app's `Webhook` (to close its connections).
    """
    webhook = Webhook(settings)
    app = flask.Flask(__name__, static_folder=None)
    app.extensions[EXTENSION] = webhook

    def entry(path: str) -> flask.Response:
        return webhook.dispatch(flask.request)

    app.add_url_rule("/", "webhook", entry, defaults={"path": ""}, methods=METHODS)
    app.add_url_rule("/<path:path>", "webhook", entry, methods=METHODS)
    flask_wsgi = app.wsgi_app

    def wsgi_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "POST":
            return webhook.wsgi_update(environ, start_response)
        return flask_wsgi(environ, start_response)

    app.wsgi_app = wsgi_app  # type: ignore[method-assign]
    log.info("webhook ready: %s", db.describe(settings))
    return app


def webhook_of(app: flask.Flask) -> Webhook:
    """The `Webhook` behind an app that `create_app` built."""
    return app.extensions[EXTENSION]
