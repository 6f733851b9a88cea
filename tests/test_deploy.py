"""The first deploy as committed: a webhook secret in Render's generated format (base64 with
`+`, `/` and `=`, which Telegram refuses as a `secret_token`) works through `set-webhook`, which
finds the service's URL in RENDER_EXTERNAL_URL, and through the webhook's header check."""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st

from localapi.telegram_server import TelegramServer
from shared.config import load_settings, telegram_secret_token
from shared.db import Database
from shared.telegram import TelegramClient, TelegramError
from tests.support import (
    TOKEN,
    load_update,
    manage,
)

# Render's documented example of a generated value: 256 random bits in base64.
RENDER_SECRET = "B0jrphAPOY7pg92AN0c9MN4yecczLMdwnx4OkA1KFUk="
RENDER_SECRET_WITH_SLASH_AND_PLUS = "q+8/Zf0kR2m1H9yJb/0u4W+1nE6dHc3sT7aLxQ2vYpM="
RENDER_URL = "https://ai-video-bot-webhook.onrender.com"
TELEGRAM_SECRET_RULE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
HEADER = "X-Telegram-Bot-Api-Secret-Token"


@pytest.fixture(params=[RENDER_SECRET, RENDER_SECRET_WITH_SLASH_AND_PLUS])
def render_secret(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def webhook_env(
    schema_env: dict[str, str], telegram: TelegramServer, render_secret: str
) -> dict[str, str]:
    """The web service's environment as the blueprint makes it (overrides the shared fixture)."""
    return {
        **schema_env,
        "TELEGRAM_WEBHOOK_SECRET": render_secret,
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_BASE": telegram.base_url,
        "RENDER_EXTERNAL_URL": RENDER_URL,
        "LOG_LEVEL": "WARNING",
    }


def test_telegram_refuses_the_raw_render_secret(
    telegram: TelegramServer, render_secret: str
) -> None:
    """The stand-in enforces Telegram's rule, so the next test would catch a raw secret."""
    with pytest.raises(TelegramError, match="secret token contains unallowed characters"):
        TelegramClient(TOKEN, telegram.base_url).set_webhook(
            RENDER_URL + "/", render_secret, ["message"]
        )


def test_a_render_secret_works_through_set_webhook_and_the_webhook(
    telegram: TelegramServer,
    webhook_env: dict[str, str],
    client: FlaskClient,
    db: Database,
    render_secret: str,
) -> None:
    result = manage(webhook_env, "set-webhook")

    assert result.returncode == 0, result.stderr
    assert f"webhook set to {RENDER_URL}/" in result.stdout
    [call] = telegram.calls_to("setWebhook")
    assert call.status == 200 and call.params["url"] == RENDER_URL + "/"
    token = call.params["secret_token"]
    assert TELEGRAM_SECRET_RULE.match(token)
    assert (
        render_secret not in result.stdout + result.stderr
        and token not in result.stdout + result.stderr
    )

    # Telegram sends what setWebhook registered; the webhook accepts exactly that.
    update = load_update("description_en")
    accepted = client.post("/", json=update, headers={HEADER: token})
    assert accepted.status_code == 200 and "queued" in accepted.get_json()["text"]
    assert db.execute("SELECT count(*) FROM jobs")[0][0] == 1
    for wrong in (render_secret, token[:-1], ""):
        refused = client.post("/", json=load_update("description_en", 999), headers={HEADER: wrong})
        assert refused.status_code == 401
    assert db.execute("SELECT count(*) FROM jobs")[0][0] == 1


def test_set_webhook_without_a_url_outside_render_says_what_to_do(telegram: TelegramServer) -> None:
    env = {
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_BASE": telegram.base_url,
        "TELEGRAM_WEBHOOK_SECRET": RENDER_SECRET,
        "RENDER_EXTERNAL_URL": "",
    }

    result = manage({}, "set-webhook", **env)

    assert result.returncode == 1
    assert "give the webhook URL" in result.stderr and "RENDER_EXTERNAL_URL" in result.stderr
    assert telegram.calls == []


def test_a_secret_telegram_already_accepts_is_kept_as_it_is() -> None:
    """Existing deployments, whose secret was valid, keep working with no new setWebhook."""
    for secret in ("operator-test-secret_42", "a", "x" * 256):
        assert load_settings({"TELEGRAM_WEBHOOK_SECRET": secret}).webhook_secret_token == secret


@given(st.text(min_size=1, max_size=300).filter(str.strip))
def test_any_secret_becomes_a_token_telegram_accepts(secret: str) -> None:
    secret = secret.strip()
    token = telegram_secret_token(secret)
    assert TELEGRAM_SECRET_RULE.match(token)
    assert token == telegram_secret_token(secret)
    if not TELEGRAM_SECRET_RULE.match(secret):
        assert token != secret and len(token) == 43


def test_the_runbook_runs_through_manage_sql_where_no_psql_is_installed(
    schema_env: dict[str, str], db: Database
) -> None:
    db.execute("INSERT INTO jobs (chat_id, user_id, description) VALUES (1, 1, 'a cat')")
    schema = schema_env["DATABASE_SCHEMA"]
    approve = (
        f"INSERT INTO {schema}.approval_statuses (job_id, approval_type, status, expires_at) "
        "VALUES ('1', 'script', 'approved', now() + interval '1 day')"
    )

    inserted = manage(schema_env, "sql", approve)
    seen = manage(schema_env, "sql", f"SELECT job_id, status FROM {schema}.approval_statuses")
    refused = manage(schema_env, "sql", "SELECT * FROM no_such_table")

    assert (inserted.returncode, inserted.stdout.strip()) == (0, "(1 row)"), inserted.stderr
    assert seen.stdout.splitlines() == ["job_id  status", "1       approved", "(1 row)"]
    assert refused.returncode == 1
    assert (
        'the database refused the statement: relation "no_such_table" does not exist'
        in refused.stderr
    )
