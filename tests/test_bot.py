"""The conversation, as a user sees it: each update POSTed to the webhook app (functions-framework
test client) on real PostgreSQL, checking the reply in the response body, the rows written and
the edit the local Telegram server received."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from localapi.telegram_server import TelegramServer
from shared import queue
from shared.buttons import callback_data, gate_keyboard
from shared.db import Database
from shared.telegram import TelegramClient
from tests.support import (
    TOKEN,
    USER_ID,
    DatabaseClock,
    count,
    load_update,
    park_at_gate,
    post,
    press,
    text_message,
)


def reply_of(client: FlaskClient, update: dict[str, Any]) -> dict[str, Any]:
    response = post(client, update)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type == "application/json"
    return response.get_json()


def jobs(db: Database) -> list[list[Any]]:
    return db.execute(
        "SELECT id, chat_id, user_id, language, description, state, max_attempts FROM jobs ORDER BY id"
    )


@pytest.mark.parametrize(
    ("fixture", "language_phrase"),
    [
        ("command_start_entities", "I turn a text description into a short video"),
        ("command_start_botname", "I turn a text description into a short video"),
        ("command_start_deeplink", "Я превращаю текстовое описание в короткое видео"),
        ("command_help", "up to 1000 characters"),
    ],
)
def test_start_and_help_explain_how_to_use_the_bot(
    client: FlaskClient, db: Database, fixture: str, language_phrase: str
) -> None:
    reply = reply_of(client, load_update(fixture))
    assert reply["method"] == "sendMessage"
    assert reply["chat_id"] == USER_ID
    assert language_phrase in reply["text"]
    assert count(db, "jobs") == 0
    assert count(db, "telegram_updates") == 1


def test_description_creates_a_job_once(client: FlaskClient, db: Database) -> None:
    update = load_update("description_en")
    reply = reply_of(client, update)
    assert reply == {"method": "sendMessage", "chat_id": USER_ID, "text": reply["text"]}
    assert "Job #1 is queued" in reply["text"]
    assert jobs(db) == [
        [
            1,
            USER_ID,
            USER_ID,
            "en",
            "Morning in the mountains: mist, sunrise and a cup of coffee on the porch.",
            "queued",
            3,
        ]
    ]
    assert reply_of(client, update) == {}
    assert count(db, "jobs") == 1


def test_missing_language_code_means_russian(client: FlaskClient, db: Database) -> None:
    reply = reply_of(client, load_update("description_ru_no_language"))
    assert "Принято" in reply["text"]
    assert jobs(db)[0][3] == "ru"


@pytest.mark.parametrize("text", ["   ", "x" * 1001])
def test_empty_or_too_long_description_is_refused_with_the_reason(
    client: FlaskClient, db: Database, text: str
) -> None:
    reply = reply_of(client, text_message(text, 30001))
    assert ("1000" in reply["text"]) == (len(text) > 1000)
    assert "empty" in reply["text"] or "too long" in reply["text"]
    assert count(db, "jobs") == 0


def test_second_active_job_is_refused_with_what_to_do(client: FlaskClient, db: Database) -> None:
    reply_of(client, text_message("A cat playing the piano", 30001))
    reply = reply_of(client, text_message("A dog on a surfboard", 30002))
    assert "/status" in reply["text"] and "/cancel" in reply["text"]
    assert count(db, "jobs") == 1


def test_daily_limit_says_come_back_tomorrow(client: FlaskClient, db: Database) -> None:
    for update_id in (30001, 30003, 30005):
        assert (
            "queued"
            in reply_of(client, text_message(f"Video number {update_id}", update_id))["text"]
        )
        reply_of(client, load_update("command_cancel", update_id + 1))
    reply = reply_of(client, text_message("One video too many", 30007))
    assert "come back tomorrow" in reply["text"]
    assert count(db, "jobs") == 3


def test_status_and_cancel(client: FlaskClient, db: Database) -> None:
    assert "no jobs yet" in reply_of(client, load_update("command_status", 30001))["text"]
    reply_of(client, text_message("Sunrise over the sea", 30002))
    status = reply_of(client, load_update("command_status", 30003))["text"]
    assert '#1 "Sunrise over the sea" — queued' in status
    assert "Cancelled 1 job" in reply_of(client, load_update("command_cancel", 30004))["text"]
    assert "cancelled" in reply_of(client, load_update("command_status", 30005))["text"]
    assert "Nothing to cancel" in reply_of(client, load_update("command_cancel", 30006))["text"]


def test_status_tells_a_waiting_job_in_words(client: FlaskClient, db: Database) -> None:
    reply_of(client, text_message("Sunrise over the sea", 30001))
    park_at_gate(db, "script", message_id=501)
    status = reply_of(client, load_update("command_status", 30002))["text"]
    assert "waiting for you to approve the script" in status


def test_user_not_in_allowed_list_is_refused(
    webhook_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, db: Database
) -> None:
    import functions_framework

    from tests.support import WEBHOOK_SOURCE

    for name, value in {**webhook_env, "ALLOWED_USER_IDS": "42,43"}.items():
        monkeypatch.setenv(name, value)
    app_client = functions_framework.create_app("webhook", WEBHOOK_SOURCE).test_client()
    reply = reply_of(app_client, load_update("description_en"))
    assert "only open to invited users" in reply["text"]
    assert count(db, "jobs") == 0


@pytest.mark.parametrize("fixture", ["photo", "sticker"])
def test_non_text_messages_get_a_hint(client: FlaskClient, db: Database, fixture: str) -> None:
    reply = reply_of(client, load_update(fixture))
    assert "I only understand text" in reply["text"]
    assert count(db, "jobs") == 0


@pytest.mark.parametrize("fixture", ["group_message", "channel_post"])
def test_group_and_channel_updates_are_recorded_and_ignored(
    client: FlaskClient, db: Database, fixture: str
) -> None:
    assert reply_of(client, load_update(fixture)) == {}
    assert count(db, "jobs") == 0
    assert count(db, "telegram_updates") == 1


def test_blocking_the_bot_cancels_jobs_and_blocks_the_chat(
    client: FlaskClient, db: Database
) -> None:
    reply_of(client, load_update("description_en"))
    assert reply_of(client, load_update("my_chat_member_kicked")) == {}
    assert db.execute("SELECT state FROM jobs") == [["cancelled"]]
    assert db.execute("SELECT chat_id FROM blocked_chats") == [[USER_ID]]
    assert reply_of(client, load_update("my_chat_member_member")) == {}
    assert count(db, "blocked_chats") == 0


def test_any_message_from_a_blocked_chat_unblocks_it(client: FlaskClient, db: Database) -> None:
    reply_of(client, load_update("my_chat_member_kicked"))
    assert count(db, "blocked_chats") == 1
    reply_of(client, load_update("description_en"))
    assert count(db, "blocked_chats") == 0
    assert count(db, "jobs") == 1


# --- Gate buttons ---


def send_gate_message(telegram: TelegramServer, job_id: int, gate: str) -> int:
    """What the worker does at a gate: a message with the buttons; returns its message_id."""
    client = TelegramClient(TOKEN, telegram.base_url)
    message = client.send_message(
        USER_ID, f"The {gate} of job {job_id}", reply_markup=gate_keyboard(job_id, gate, "en")
    )
    return message["message_id"]


def approvals(db: Database) -> list[list[Any]]:
    return db.execute("SELECT job_id, approval_type, status FROM approval_statuses ORDER BY id")


def test_approve_writes_the_decision_and_removes_the_buttons(
    client: FlaskClient, db: Database, telegram: TelegramServer
) -> None:
    reply_of(client, load_update("description_en"))
    message_id = send_gate_message(telegram, 1, "script")
    park_at_gate(db, "script", message_id)
    reply = reply_of(client, press(40001, callback_data(1, "script", "approve"), message_id))
    assert reply == {
        "method": "answerCallbackQuery",
        "callback_query_id": "cbq-40001",
        "text": "✅ Approved — working on it",
    }
    assert approvals(db) == [["1", "script", "approved"]]
    expires_at, deadline = db.execute(
        "SELECT a.expires_at, j.gate_deadline::timestamp FROM approval_statuses a JOIN jobs j ON a.job_id = j.id::text"
    )[0]
    assert expires_at == deadline
    edit = telegram.wait_for("editMessageText")
    assert edit.params["message_id"] == message_id
    assert edit.params["text"].endswith("✅ Approved")
    assert "reply_markup" not in telegram.message(USER_ID, message_id)
    assert queue.claim(db, 1, 60)[0].gate_decision == "approved"


def test_double_press_is_already_decided_with_one_row(
    client: FlaskClient, db: Database, telegram: TelegramServer
) -> None:
    reply_of(client, load_update("description_en"))
    message_id = send_gate_message(telegram, 1, "script")
    park_at_gate(db, "script", message_id)
    reply_of(client, press(40001, callback_data(1, "script", "approve"), message_id))
    second = reply_of(client, press(40002, callback_data(1, "script", "cancel"), message_id))
    assert second["text"] == "This step has already been decided."
    assert approvals(db) == [["1", "script", "approved"]]
    assert len(telegram.calls_to("editMessageText")) == 1


def test_someone_elses_press_is_refused(
    client: FlaskClient, db: Database, telegram: TelegramServer
) -> None:
    reply_of(client, load_update("description_en"))
    message_id = send_gate_message(telegram, 1, "script")
    park_at_gate(db, "script", message_id)
    reply = reply_of(
        client, press(40001, callback_data(1, "script", "approve"), message_id, user_id=999)
    )
    assert reply["text"] == "⛔ This button is not yours."
    assert count(db, "approval_statuses") == 0
    assert telegram.calls_to("editMessageText") == []


@pytest.mark.parametrize("data", ["g:77:script:a", "Data from button callback", "g:1:script:z", ""])
def test_forged_or_unknown_press_is_refused(client: FlaskClient, db: Database, data: str) -> None:
    reply_of(client, load_update("description_en"))
    park_at_gate(db, "script", 501)
    reply = reply_of(client, press(40001, data, 501))
    assert reply["method"] == "answerCallbackQuery"
    assert reply["text"] == "⛔ This button is not valid."
    assert count(db, "approval_statuses") + count(db, "job_revisions") == 0


def test_stale_button_on_an_old_message_has_expired(client: FlaskClient, db: Database) -> None:
    reply_of(client, load_update("description_en"))
    park_at_gate(db, "script", message_id=502)
    reply = reply_of(client, press(40001, callback_data(1, "script", "approve"), 501))
    assert reply["text"] == "⌛ These buttons have expired."
    assert count(db, "approval_statuses") == 0


def test_press_after_the_deadline_has_expired(
    client: FlaskClient, db: Database, clock: DatabaseClock
) -> None:
    reply_of(client, load_update("description_en"))
    park_at_gate(db, "script", 501, ttl_seconds=3600)
    clock.advance(3601)
    reply = reply_of(client, press(40001, callback_data(1, "script", "approve"), 501))
    assert reply["text"] == "⌛ These buttons have expired."
    assert count(db, "approval_statuses") == 0


def test_press_on_a_cancelled_job_says_it_is_closed(client: FlaskClient, db: Database) -> None:
    reply_of(client, load_update("description_en"))
    park_at_gate(db, "script", 501)
    reply_of(client, load_update("command_cancel"))
    reply = reply_of(client, press(40001, callback_data(1, "script", "approve"), 501))
    assert reply["text"] == "This job is already finished or cancelled."


def test_regenerate_writes_a_revision(client: FlaskClient, db: Database) -> None:
    reply_of(client, load_update("description_en"))
    park_at_gate(db, "script", 501)
    reply = reply_of(client, press(40001, callback_data(1, "script", "regenerate"), 501))
    assert reply["text"] == "🔁 Making a new version"
    assert db.execute("SELECT job_id, gate, kind, text FROM job_revisions") == [
        [1, "script", "regenerate", None]
    ]
    assert count(db, "approval_statuses") == 0
    again = reply_of(client, press(40002, callback_data(1, "script", "approve"), 501))
    assert again["text"] == "This step has already been decided."


def test_cancel_press_writes_a_cancelled_row(client: FlaskClient, db: Database) -> None:
    reply_of(client, load_update("description_en"))
    park_at_gate(db, "script", 501)
    assert (
        reply_of(client, press(40001, callback_data(1, "script", "cancel"), 501))["text"]
        == "❌ Job cancelled"
    )
    assert approvals(db) == [["1", "script", "cancelled"]]
    assert queue.claim(db, 1, 60)[0].cancel_requested


def test_an_old_storyboard_button_approves_the_images_gate_and_edits_the_photo_caption(
    client: FlaskClient, db: Database, telegram: TelegramServer
) -> None:
    """The photo's buttons were sent before the gate was renamed: g:1:storyboard:a."""
    reply_of(client, load_update("description_en"))
    park_at_gate(db, "images", 502)
    reply = reply_of(client, load_update("callback_storyboard_photo"))
    assert reply["text"] == "✅ Approved — working on it"
    assert approvals(db) == [["1", "images", "approved"]]
    edit = telegram.wait_for("editMessageCaption")
    assert edit.params["caption"].endswith("✅ Approved")
    assert edit.params["message_id"] == 502


def test_a_failed_edit_does_not_undo_the_decision(
    client: FlaskClient, db: Database, telegram: TelegramServer
) -> None:
    reply_of(client, load_update("description_en"))
    park_at_gate(db, "script", 501)
    telegram.fail_next("editMessageText", 500)
    reply = reply_of(client, load_update("callback_approve_script"))
    assert reply["text"] == "✅ Approved — working on it"
    assert approvals(db) == [["1", "script", "approved"]]


def test_reply_with_an_edited_script_writes_an_edit_revision(
    client: FlaskClient, db: Database
) -> None:
    reply_of(client, load_update("description_en"))
    park_at_gate(db, "script", 501)
    reply = reply_of(client, load_update("reply_edited_script"))
    assert "rewriting the script" in reply["text"]
    [[kind, text]] = db.execute(
        "SELECT kind, text FROM job_revisions WHERE job_id = 1 AND gate = 'script'"
    )
    assert kind == "edit" and text.startswith("1. Fog rolls over the valley.")
    assert count(db, "jobs") == 1
    second = reply_of(client, load_update("reply_edited_script", 20041))
    assert "can no longer be edited" in second["text"]
    assert count(db, "job_revisions") == 1


def test_reply_to_a_message_that_is_no_gate_is_a_new_description(
    client: FlaskClient, db: Database
) -> None:
    reply = reply_of(client, load_update("reply_edited_script"))
    assert "queued" in reply["text"]
    assert count(db, "jobs") == 1 and count(db, "job_revisions") == 0


# --- Texts ---


def test_every_text_exists_in_both_languages_with_the_same_placeholders() -> None:
    from string import Formatter

    from shared.texts import TEXTS

    for key, variants in TEXTS.items():
        assert set(variants) == {"ru", "en"}, key
        fields = [
            {name for _, name, _, _ in Formatter().parse(text) if name}
            for text in variants.values()
        ]
        assert fields[0] == fields[1], key


def test_worker_texts_read_as_the_user_sees_them() -> None:
    from shared.texts import failure_notice, script_message, t

    script = script_message("Morning", ["Mist over the valley.", "The sun comes up."], "en")
    assert script.splitlines()[:4] == [
        '📝 Script: "Morning"',
        "",
        "1. Mist over the valley.",
        "2. The sun comes up.",
    ]
    assert "reply to this message with a corrected script" in script
    assert (
        failure_notice("render", "en")
        == "⚠️ Could not render the video. Send the description again to retry."
    )
    assert failure_notice("mystery", "ru").startswith("⚠️ Не удалось сделать видео")
    assert t("progress_images", "en", pct=40) == "🎨 Drawing scenes… 40%"
    assert t("progress_done", "de") == "✅ Done"


# ---- time and cost: /stats for the owner, /status with costs --------------------------------


@pytest.fixture
def owner_client(webhook_env: dict[str, str]) -> Any:
    """A webhook whose OWNER_USER_IDS names USER_ID."""
    from shared.config import load_settings
    from shared.webhook import create_app, webhook_of

    app = create_app(load_settings({**webhook_env, "OWNER_USER_IDS": str(USER_ID)}))
    yield app.test_client()
    webhook_of(app).close()


def test_stats_is_the_owners_alone(
    client: FlaskClient, owner_client: FlaskClient, db: Database, clock: DatabaseClock
) -> None:
    refused = reply_of(client, text_message("/stats", 31001))["text"]
    assert refused.startswith("I don't know that command")
    reply_of(owner_client, text_message("A fox in the snow.", 31002))
    park_at_gate(db, "script", message_id=77)
    clock.advance(600)
    stats = reply_of(owner_client, text_message("/stats@VideoBot", 31003))["text"]
    assert "📊 Jobs: waiting 1" in stats
    assert "Today (UTC): $0 in 0 calls" in stats
    assert "Waiting longest: #1 at the script gate for 10 min 00 s" in stats
    assert "🗄 Database: " in stats and " MB" in stats
    assert post(owner_client, text_message("/stats", 31003)).get_json() == {}  # redelivery


def test_status_shows_each_jobs_time_and_cost(
    client: FlaskClient, db: Database, clock: DatabaseClock
) -> None:
    reply_of(client, text_message("Sunrise over the sea", 31101))
    [job] = queue.claim(db, 1, lease_seconds=60)
    run = queue.begin_step_run(db, job, "openai/local/local")
    queue.record_provider_call(
        db, job, "script", "openai", "gpt-4o-mini", {"input_tokens": 9}, 0.0123
    )
    clock.advance(65)
    queue.end_step_run(db, run, "continue")
    status = reply_of(client, load_update("command_status", 31102))["text"]
    assert (
        '#1 "Sunrise over the sea" — in progress: writing the script (⏱ 1 min 05 s, 💵 $0.01)'
        in status
    )
