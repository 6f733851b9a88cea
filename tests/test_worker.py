"""The worker end to end: real PostgreSQL, the local Telegram Bot API server, the local
OpenAI-compatible server, real espeak-ng and ffmpeg. Decisions arrive the way an operator's
emergency SQL writes them; tests/test_demo.py drives the same path through the webhook."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from functions.worker.main import warn_if_database_is_large
from localapi.openai_server import OpenAIServer
from shared import queue
from shared.config import REPO_ROOT, load_settings
from shared.media import probe
from shared.operator import ops
from tests.support import (
    CHAT,
    Worker,
    child_env,
    decide,
    enqueue,
    job,
    texts_sent,
    wait_out_lease,
    worker_process,
)


def test_description_becomes_a_delivered_watchable_video(db, worker_env, telegram, tmp_path):
    worker = Worker(dict(worker_env, VIDEO_SECONDS="10"))
    job_id = enqueue(
        db, "A lighthouse at dawn. Waves crash on the rocks. A ship comes home safely."
    )
    telegram.fail_next("sendMessage", 429, retry_after=1)

    assert worker.tick() == 1
    script = telegram.wait_for("sendMessage", lambda c: "reply_markup" in c.params)
    buttons = [b["text"] for row in script.params["reply_markup"]["inline_keyboard"] for b in row]
    assert [b[0] for b in buttons] == ["✅", "🔁", "❌"]
    assert "A lighthouse at dawn" in script.params["text"]
    assert (job(db, job_id)["state"], job(db, job_id)["gate"]) == ("waiting", "script")

    assert worker.tick() == 0, "a waiting job must not run without a decision"
    decide(db, job_id, "script")
    assert worker.tick() == 1
    storyboard = telegram.wait_for("sendPhoto")
    assert storyboard.params["reply_markup"]["inline_keyboard"]
    assert job(db, job_id)["gate"] == "images"

    decide(db, job_id, "images")
    approved_at = time.monotonic()
    assert worker.tick() == 1
    e2e = time.monotonic() - approved_at
    [upload] = telegram.calls_to("sendVideo")
    video = tmp_path / "delivered.mp4"
    video.write_bytes(upload.files["video"].content)
    info = probe(video)
    voice_seconds = sum(job(db, job_id)["checkpoints"]["media"]["durations"])
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert (info.width, info.height) == (720, 1280)
    assert abs(info.duration - voice_seconds) <= 0.1 * voice_seconds
    assert video.stat().st_size <= 50 * 1024 * 1024
    assert upload.params["supports_streaming"] in (True, "true")
    assert int(upload.params["width"]) == 720 and "thumbnail" in upload.files
    assert telegram.calls_to("sendChatAction")[0].params["action"] == "upload_video"

    row = job(db, job_id)
    assert row["state"] == "done"
    assert queue.load_artifacts(db, job_id) == {}
    status_id = row["status_message_id"]
    assert telegram.message(CHAT, status_id)["text"] == "✅ Done"
    assert e2e < 60
    edits = [
        c.at for c in telegram.calls_to("editMessageText") if c.params["message_id"] == status_id
    ]
    assert len(edits) >= 3
    assert min(b - a for a, b in zip(edits, edits[1:])) >= 0.95, "edits faster than Telegram's pace"


def test_russian_job_speaks_and_writes_russian(db, worker_env, telegram):
    worker = Worker(dict(worker_env, APPROVAL_GATES="script"))
    job_id = enqueue(db, "Кот гуляет по крыше. Луна светит ярко. Утром кот спит.", language="ru")
    worker.tick()
    script = telegram.wait_for("sendMessage", lambda c: "reply_markup" in c.params)
    assert "Сценарий" in script.params["text"] and "Кот гуляет по крыше" in script.params["text"]
    decide(db, job_id, "script")
    worker.tick()
    assert job(db, job_id)["state"] == "done"
    assert telegram.calls_to("sendVideo")[0].params["caption"].startswith("🎬 «")


def test_gates_switched_off_run_straight_through(db, worker_env, telegram):
    worker = Worker(dict(worker_env, APPROVAL_GATES=""))
    job_id = enqueue(db, "Three friends climb a hill and watch the sunset together.")
    assert worker.tick() == 1
    assert job(db, job_id)["state"] == "done"
    assert len(telegram.calls_to("sendVideo")) == 1
    assert telegram.calls_to("sendPhoto") == []


def test_regenerate_and_edit_reopen_the_script_gate(db, worker_env, telegram):
    worker = Worker(worker_env)
    job_id = enqueue(db, "A robot learns to paint. It paints the sea. People love it.")
    worker.tick()
    first = texts_sent(telegram)[-1]
    db.execute(
        "INSERT INTO job_revisions (job_id, gate, kind) VALUES (:j, 'script', 'regenerate')",
        j=job_id,
    )
    worker.tick()
    second = texts_sent(telegram)[-1]
    assert second != first and job(db, job_id)["gate"] == "script"

    db.execute(
        "INSERT INTO job_revisions (job_id, gate, kind, text) VALUES (:j, 'script', 'edit', :t)",
        j=job_id,
        t="My title\n1. The robot wakes up.\n2. It mixes blue paint.\n3. The gallery opens.",
    )
    worker.tick()
    edited = texts_sent(telegram)[-1]
    assert "My title" in edited and "It mixes blue paint." in edited
    assert job(db, job_id)["checkpoints"]["script"]["title"] == "My title"


def test_cancel_at_the_gate_and_expiry_tell_the_user(db, worker_env, telegram, clock):
    worker = Worker(worker_env)
    cancelled = enqueue(db, "A quiet forest in the rain, drops on the leaves, a deer.")
    expiring = enqueue(db, "Mountains in the morning fog and a cup of coffee.")
    worker.tick()
    decide(db, cancelled, "script", "cancelled")
    clock.advance(24 * 3600 + 1)  # APPROVAL_TTL_HOURS: the gate's deadline passes for both
    worker.tick()
    assert (job(db, cancelled)["state"], job(db, cancelled)["cancel_reason"]) == (
        "cancelled",
        "cancelled at the script gate",
    )
    assert (job(db, expiring)["state"], job(db, expiring)["cancel_reason"]) == (
        "cancelled",
        "approval expired at the script gate",
    )
    notices = texts_sent(telegram)
    assert f"❌ Job #{cancelled} was cancelled." in notices
    assert any(
        text.startswith(f"⌛ Time to decide ran out, so job #{expiring}") for text in notices
    )


def test_a_flaky_provider_is_retried_without_redoing_finished_steps(db, worker_env, telegram):
    with OpenAIServer() as openai:
        env = dict(
            worker_env,
            APPROVAL_GATES="",
            SCRIPT_PROVIDER="openai",
            VOICE_PROVIDER="openai",
            VOICE_CONCURRENCY="1",  # one voice at a time: the failures below hit one call
            OPENAI_BASE_URL=f"{openai.base_url}/v1",
            OPENAI_API_KEY=openai.api_key,
        )
        worker = Worker(env)
        job_id = enqueue(db, "A baker makes bread at night for the whole town.")
        # Each failed step attempt exhausts the HTTP client's own retries of the first voice call.
        openai.fail_next("/v1/audio/speech", 503, times=8)
        for _ in range(3):
            worker.tick()
            db.execute("UPDATE jobs SET run_at = now() WHERE id = :j", j=job_id)
        row = job(db, job_id)
        assert row["state"] == "done", row["last_error"]
        assert len(openai.requests_to("/v1/chat/completions")) == 1
        events = db.execute(
            "SELECT event, step FROM job_events WHERE job_id = :j ORDER BY id", j=job_id
        )
        assert events[:2] == [["retry_scheduled", "media"], ["retry_scheduled", "media"]]
        assert len(telegram.calls_to("sendVideo")) == 1


def test_rejected_api_key_fails_fast_and_says_what_failed(db, worker_env, telegram, caplog):
    with OpenAIServer() as openai:
        env = dict(
            worker_env,
            SCRIPT_PROVIDER="openai",
            OPENAI_BASE_URL=f"{openai.base_url}/v1",
            OPENAI_API_KEY="sk-wrong-key-000000",
        )
        worker = Worker(env)
        job_id = enqueue(db, "A city at night with neon lights.")
        worker.tick()
    assert job(db, job_id)["state"] == "failed"
    notices = texts_sent(telegram)
    assert f"😔 Job #{job_id} has stopped: the bot is unavailable right now" in notices[-1]
    assert not any("Send the description again" in text for text in notices), (
        "only the owner can fix a key"
    )
    assert "sk-wrong-key-000000" not in caplog.text


def test_blocked_user_gets_nothing_more_and_their_jobs_stop(db, worker_env, telegram):
    worker = Worker(worker_env)
    job_id = enqueue(db, "A cat chases a butterfly in the garden.")
    telegram.block_chat(CHAT)
    worker.tick()
    assert job(db, job_id)["state"] == "cancelled"
    assert db.one("chat_is_blocked", chat_id=CHAT)["blocked"]


def test_worker_without_configuration_or_database_exits_with_a_clear_message(schema_env):
    no_token = subprocess.run(
        [sys.executable, "-m", "functions.worker"],
        cwd=REPO_ROOT,
        env=child_env(schema_env, TELEGRAM_BOT_TOKEN=""),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no_token.returncode == 2
    assert "TELEGRAM_BOT_TOKEN is not set" in no_token.stderr
    no_db = subprocess.run(
        [sys.executable, "-m", "functions.worker"],
        cwd=REPO_ROOT,
        env=child_env(
            schema_env,
            TELEGRAM_BOT_TOKEN="1:x",
            DATABASE_URL="postgresql://bot:hunter2@127.0.0.1:1/videos",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no_db.returncode == 2
    assert "cannot use the database (postgres=127.0.0.1:1/videos" in no_db.stderr
    assert "hunter2" not in no_db.stderr


def test_worker_killed_during_render_delivers_exactly_once(db, worker_env, telegram):
    env = child_env(worker_env, APPROVAL_GATES="", WORKER_LEASE_SECONDS="9", VIDEO_SECONDS="20")
    job_id = enqueue(db, "A long train crosses a snowy valley. Children wave. The sun sets.")
    first = worker_process(env)
    try:
        telegram.wait_for(
            "editMessageText", lambda c: "Rendering" in c.params.get("text", ""), timeout=60
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert job(db, job_id)["state"] == "running"
    early = subprocess.run(
        [sys.executable, "-m", "functions.worker"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert early.returncode == 0, early.stderr
    assert job(db, job_id)["state"] == "running", "taken over before the lease expired"
    wait_out_lease(db, job_id, margin=0.3)
    late = subprocess.run(
        [sys.executable, "-m", "functions.worker"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert late.returncode == 0, late.stderr
    assert job(db, job_id)["state"] == "done"
    assert len(telegram.calls_to("sendVideo")) == 1


def test_operator_retry_of_a_cancelled_job_makes_its_lost_files_again(db, worker_env, telegram):
    worker = Worker(dict(worker_env, APPROVAL_GATES="images"))
    job_id = enqueue(db, "An old clock tower rings at noon. Pigeons fly up. The square is busy.")
    worker.tick()
    assert job(db, job_id)["gate"] == "images"
    ops.cancel(db, job_id)
    worker.tick()
    assert job(db, job_id)["state"] == "cancelled"
    assert queue.load_artifacts(db, job_id) == {}, "a cancelled job's files are deleted"

    ops.retry(db, job_id)
    worker.tick()
    assert job(db, job_id)["gate"] == "images"
    assert len(telegram.calls_to("sendPhoto")) == 2
    decide(db, job_id, "images")
    worker.tick()
    assert job(db, job_id)["state"] == "done"
    assert len(telegram.calls_to("sendVideo")) == 1


def test_operator_cancel_stops_a_running_render_and_tells_the_user(db, worker_env, telegram):
    env = child_env(worker_env, APPROVAL_GATES="", WORKER_LEASE_SECONDS="6", VIDEO_SECONDS="20")
    job_id = enqueue(db, "A hot air balloon rises over the desert. The crew laughs. Night falls.")
    worker = subprocess.Popen(
        [sys.executable, "-m", "functions.worker"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        telegram.wait_for(
            "editMessageText", lambda c: "Rendering" in c.params.get("text", ""), timeout=60
        )
        ops.cancel(db, job_id)
        _, stderr = worker.communicate(timeout=60)
    finally:
        worker.kill()
    assert worker.returncode == 0, stderr
    row = job(db, job_id)
    assert (row["state"], row["cancel_reason"]) == ("cancelled", "cancel requested")
    assert f"❌ Job #{job_id} was cancelled." in texts_sent(telegram)
    assert telegram.calls_to("sendVideo") == []


def test_worker_warns_when_the_database_grows_past_the_limit(db, worker_env, caplog):
    warn_if_database_is_large(load_settings(dict(worker_env, DB_SIZE_WARN_MB="100000")), db)
    assert "database is large" not in caplog.text
    warn_if_database_is_large(load_settings(dict(worker_env, DB_SIZE_WARN_MB="1")), db)
    assert "database is large" in caplog.text and "limit_mb=1" in caplog.text


@pytest.mark.parametrize(
    ("earlier_run", "state", "notice"),
    [
        ("sent", "done", "✅ Done"),
        ("sending", "done", "⚠️ Sent, not confirmed"),
    ],
)
def test_a_delivery_an_earlier_run_started_is_never_sent_again(
    db, worker_env, telegram, earlier_run, state, notice
):
    worker = Worker(dict(worker_env, APPROVAL_GATES="images"))
    job_id = enqueue(db, "A kite flies over the beach. The wind turns. It lands softly.")
    worker.tick()
    db.execute("INSERT INTO deliveries (job_id, state) VALUES (:j, :s)", j=job_id, s=earlier_run)
    decide(db, job_id, "images")
    worker.tick()
    assert job(db, job_id)["state"] == state
    assert telegram.calls_to("sendVideo") == []
    shown = texts_sent(telegram) + [
        c.params.get("text") for c in telegram.calls_to("editMessageText")
    ]
    assert notice in shown
