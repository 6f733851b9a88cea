"""The Telegram webhook's entry points, over `shared.webhook.create_app` with `load_settings()`.

    functions-framework --target=webhook --source=functions/webhook/main.py --port=8080
    gunicorn -w 2 --threads 8 'functions.webhook.main:create()'     (as deployed; see render.yaml)

Importing this module reads no setting and opens nothing. gunicorn calls `create()` as each
worker starts, so a missing TELEGRAM_WEBHOOK_SECRET stops it there; the functions-framework
target builds the same app on its first request. See shared/webhook.py for the HTTP contract.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    # functions-framework loads this file by path and puts only its own folder on sys.path.
    sys.path.insert(0, str(REPO_ROOT))

import flask  # noqa: E402
import functions_framework  # noqa: E402

from shared.config import load_settings  # noqa: E402
from shared.logs import setup_logging  # noqa: E402
from shared.webhook import create_app, webhook_of  # noqa: E402

_lock = threading.Lock()
_app: flask.Flask | None = None


def create() -> flask.Flask:
    """The webhook app from the environment's settings, with logging set up from them."""
    settings = load_settings()
    setup_logging(settings.log_level)
    return create_app(settings)


def _shared_app() -> flask.Flask:
    """This process's app for the functions-framework target, built once, on first use."""
    global _app
    with _lock:
        if _app is None:
            _app = create()
        return _app


@functions_framework.http
def webhook(request: flask.Request) -> flask.Response:
    """The Cloud Functions-style entry point."""
    return webhook_of(_shared_app()).dispatch(request)
