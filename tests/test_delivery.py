"""Delivering the finished video when Telegram rate-limits, refuses or loses the answer: the real
worker, the real webhook app, real PostgreSQL and the local Telegram Bot API server.

What is asserted is what the user would notice: how many videos arrive in the chat, the
messages and buttons they get, and that a rate limit never costs them their video."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from flask.testing import FlaskClient

from functions.worker.main import run_tick, start
from localapi.telegram_server import RecordedCall, TelegramServer
from shared import queue
from shared.buttons import resend_callback_data
from shared.config import REPO_ROOT, load_settings
from shared.db import Database
from tests.support import (
    USER_ID,
    child_env,
    post,
    wait_out_lease,
    worker_process,
)

DESCRIPTION = "A lighthouse at dawn. Waves crash on the rocks. A boat comes home."
SEND_AGAIN = "📤 Send it again"
NOT_ARRIVED = "may not have arrived"


@pytest.fixture
def worker_env(webhook_env: dict[str, str]) -> dict[str, str]:
    return dict(
        webhook_env,
        APPROVAL_GATES="",
        VIDEO_SECONDS="8",
        RETRY_BASE_SECONDS="0",
        WORKER_MAX_SECONDS="120",
    )


class Worker:
    """Cron ticks in this process, with settings from `env`."""

    def __init__(self, env: dict[str, str]) -> None:
        self.settings = load_settings(env)
        self.db, self.telegram, self.providers = start(self.settings)

    def tick(self) -> int:
        return run_tick(self.settings, self.db, self.telegram, self.providers)


def enqueue(db: Database, max_attempts: int = 3) -> int:
    job_id, _ = queue.enqueue(
        db,
        chat_id=USER_ID,
        user_id=USER_ID,
        description=DESCRIPTION,
        language="en",
        max_attempts=max_attempts,
    )
    return job_id


def videos_received(telegram: TelegramServer) -> list[RecordedCall]:
    """sendVideo calls that put a video in the chat (a dropped answer did too)."""
    return [call for call in telegram.calls_to("sendVideo") if call.status == 200]


def texts_received(telegram: TelegramServer) -> list[str]:
    return [
        call.params.get("text", "")
        for call in telegram.calls_to("sendMessage")
        if call.status == 200
    ]


def resend_notice(telegram: TelegramServer) -> dict[str, Any]:
    """The "may not have arrived" message as it stands in the chat now."""
    [call] = [
        c
        for c in telegram.calls_to("sendMessage")
        if c.status == 200 and NOT_ARRIVED in c.params["text"]
    ]
    return telegram.message(USER_ID, call.response["result"]["message_id"])


def buttons(message: dict[str, Any]) -> list[tuple[str, str]]:
    rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return [(button["text"], button["callback_data"]) for row in rows for button in row]


def press_button(
    client: FlaskClient, message: dict[str, Any], data: str, update_id: int, user_id: int = USER_ID
) -> dict[str, Any]:
    """A press of a button under `message`, POSTed to the webhook as Telegram sends it."""
    update = {
        "update_id": update_id,
        "callback_query": {
            "id": f"cbq-{update_id}",
            "chat_instance": "1",
            "from": {"id": user_id, "is_bot": False, "first_name": "Tester", "language_code": "en"},
            "message": message,
            "data": data,
        },
    }
    response = post(client, update)
    assert response.status_code == 200
    return response.get_json()


def delivery(db: Database, job_id: int) -> dict[str, Any]:
    [row] = db.execute(
        "SELECT state, attempts, resends FROM deliveries WHERE job_id = :j", j=job_id
    )
    return dict(zip(("state", "attempts", "resends"), row))


def job(db: Database, job_id: int) -> dict[str, Any]:
    return db.one("get_job", id=job_id)


def wait_until_due(db: Database, job_id: int) -> None:
    left = db.execute("SELECT extract(epoch FROM run_at - now()) FROM jobs WHERE id = :j", j=job_id)
    time.sleep(max(0.0, float(left[0][0])) + 0.05)


def test_rate_limited_upload_waits_and_delivers_one_video(db, worker_env, telegram):
    worker = Worker(worker_env)
    job_id = enqueue(db, max_attempts=1)  # a rate limit that counted an attempt would fail it
    telegram.fail_next("sendVideo", 429, retry_after=1, times=5)

    assert worker.tick() == 1
    row = job(db, job_id)
    assert (row["state"], row["step"]) == ("queued", "deliver")
    assert videos_received(telegram) == []
    assert delivery(db, job_id)["state"] == "failed"

    wait_until_due(db, job_id)
    assert worker.tick() == 1
    assert len(videos_received(telegram)) == 1
    assert job(db, job_id)["state"] == "done"
    assert not any("Could not" in text for text in texts_received(telegram))
    status = telegram.message(USER_ID, job(db, job_id)["status_message_id"])
    assert status["text"] == "✅ Done"
    events = [
        row[0] for row in db.execute("SELECT event FROM job_events WHERE job_id = :j", j=job_id)
    ]
    assert "deferred" in events and "retry_scheduled" not in events and "failed" not in events


@pytest.mark.parametrize(("status", "times"), [(400, 1), (502, 4)])
def test_refused_upload_is_retried_and_delivered(db, worker_env, telegram, status, times):
    worker = Worker(worker_env)
    job_id = enqueue(db)
    telegram.fail_next("sendVideo", status, times=times)

    assert worker.tick() == 2  # the retry is due at once (RETRY_BASE_SECONDS=0)

    assert len(videos_received(telegram)) == 1
    assert job(db, job_id)["state"] == "done"
    assert (delivery(db, job_id)["state"], delivery(db, job_id)["attempts"]) == ("sent", 2)
    assert not any(NOT_ARRIVED in text for text in texts_received(telegram))


def test_lost_answer_is_never_resent_unasked_and_the_button_sends_it_once(
    db, worker_env, telegram, client
):
    worker = Worker(worker_env)
    job_id = enqueue(db)
    telegram.drop_next("sendVideo")

    assert worker.tick() == 1
    assert len(telegram.calls_to("sendVideo")) == 1
    notice = resend_notice(telegram)
    assert f"The video for job #{job_id} may not have arrived" in notice["text"]
    assert buttons(notice) == [(SEND_AGAIN, resend_callback_data(job_id))]
    assert job(db, job_id)["state"] == "done"
    assert set(queue.load_artifacts(db, job_id, "out/")) == {"out/thumb.jpg", "out/video.mp4"}
    assert worker.tick() == 0
    assert len(telegram.calls_to("sendVideo")) == 1

    stranger = press_button(client, notice, resend_callback_data(job_id), 50001, user_id=999)
    assert stranger["text"] == "⛔ This button is not yours."
    assert delivery(db, job_id)["state"] == "unknown"

    first = press_button(client, notice, resend_callback_data(job_id), 50002)
    assert first == {
        "method": "answerCallbackQuery",
        "callback_query_id": "cbq-50002",
        "text": "📤 Sending the video again",
    }
    assert buttons(resend_notice(telegram)) == []
    second = press_button(client, notice, resend_callback_data(job_id), 50003)
    assert second["text"] == "This video has already been sent again."

    assert worker.tick() == 1
    assert len(telegram.calls_to("sendVideo")) == 2
    assert len(videos_received(telegram)) == 2
    assert job(db, job_id)["state"] == "done"
    assert (delivery(db, job_id)["state"], delivery(db, job_id)["resends"]) == ("sent", 1)
    assert queue.load_artifacts(db, job_id) == {}

    again = press_button(client, notice, resend_callback_data(job_id), 50004)
    assert again["text"] == "This video has already been sent again."
    assert worker.tick() == 0
    assert len(telegram.calls_to("sendVideo")) == 2


def test_operator_resend_goes_the_same_way(db, worker_env, telegram):
    worker = Worker(worker_env)
    job_id = enqueue(db)
    telegram.drop_next("sendVideo")
    worker.tick()
    assert delivery(db, job_id)["state"] == "unknown"

    resent = manage(worker_env, "resend", str(job_id))
    assert resent.returncode == 0, resent.stderr
    assert f"job {job_id}: the next worker run sends the video again" in resent.stdout
    assert worker.tick() == 1
    assert len(videos_received(telegram)) == 2
    assert delivery(db, job_id)["state"] == "sent"

    refused = manage(worker_env, "resend", str(job_id))
    assert refused.returncode == 1
    assert "its delivery is sent" in refused.stderr
    shown = manage(worker_env, "show", str(job_id))
    assert "delivery: sent" in shown.stdout and "resends 1" in shown.stdout


def test_worker_killed_mid_upload_leaves_the_choice_to_the_user(db, worker_env, telegram, client):
    env = child_env(worker_env, WORKER_LEASE_SECONDS="5")
    job_id = enqueue(db)
    first = worker_process(env)

    killed: list[int] = []

    def kill_on_upload(call: RecordedCall) -> None:
        if call.method == "sendVideo" and not killed:  # Telegram has the video; the worker
            killed.append(first.pid)  # dies before the answer reaches it
            os.kill(first.pid, signal.SIGKILL)

    telegram.on_call(kill_on_upload)
    try:
        assert first.wait(timeout=120) == -signal.SIGKILL
    finally:
        first.kill()
    assert delivery(db, job_id)["state"] == "sending"
    wait_out_lease(db, job_id)

    worker = Worker(worker_env)
    assert worker.tick() == 1
    assert len(telegram.calls_to("sendVideo")) == 1
    notice = resend_notice(telegram)
    assert buttons(notice) == [(SEND_AGAIN, resend_callback_data(job_id))]
    assert delivery(db, job_id)["state"] == "unknown"

    press_button(client, notice, resend_callback_data(job_id), 50001)
    assert worker.tick() == 1
    assert len(videos_received(telegram)) == 2
    assert job(db, job_id)["state"] == "done"


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=60,
    )
