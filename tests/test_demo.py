"""`manage.py demo` and `manage.py poll` as a newcomer and an owner run them: subprocesses against
real PostgreSQL (the test's schema), with the local Telegram Bot API server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from localapi.telegram_server import DEFAULT_TOKEN, TelegramServer
from shared.buttons import callback_data
from shared.config import REPO_ROOT
from shared.media import probe
from shared.operator import ops
from shared.telegram import TelegramClient
from shared.texts import t
from tests.support import child_env

CHAT = 5151
BUTTONS = "[✅ Approve] [🔁 Regenerate] [❌ Cancel]"


def manage(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def poll_env(schema_env: dict[str, str], telegram: TelegramServer) -> dict[str, str]:
    return child_env(
        schema_env, TELEGRAM_BOT_TOKEN=telegram.token, TELEGRAM_API_BASE=telegram.base_url
    )


# ---- demo ---------------------------------------------------------------------------------------


def test_demo_chats_through_the_three_gates_and_writes_a_real_video(schema_env, db, tmp_path):
    out = tmp_path / "clip.mp4"
    env = child_env(schema_env, VIDEOBOT_DATA_DIR=str(tmp_path / "data"))

    result = manage(
        env,
        "demo",
        "A cat on a skateboard at sunset",
        "--seconds",
        "6",
        "--out",
        str(out),
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    chat = result.stdout
    assert "👤 you: /start" in chat
    assert "🤖 bot: " + t("welcome", "en", max_chars=1000).splitlines()[0] in chat
    assert "👤 you: A cat on a skateboard at sunset" in chat
    script_at = chat.index("📝 Script:")
    storyboard_at = chat.index("[photo ")
    assert BUTTONS in chat[script_at:storyboard_at]
    assert "Storyboard for" in chat[storyboard_at:]
    assert 'Clips for "' in chat[storyboard_at:]
    assert chat.count("👤 you: pressed [✅ Approve]") == 3
    assert "🎬 Rendering…  [██████████] 100%" in chat or "🤖 bot: ✅ Done" in chat
    assert "[video " in chat

    video_path = Path(re.search(r"✅ video: (\S+)", chat).group(1))
    assert video_path == out.resolve() and video_path.is_file()
    info = probe(video_path)
    assert (info.video_codec, info.width, info.height) == ("h264", 1080, 1920)
    transcript = Path(re.search(r"📝 transcript: (\S+)", chat).group(1))
    assert transcript.read_text(encoding="utf-8").startswith("👤 you: /start")

    job_id = int(re.search(r"manage\.py show (\d+)", chat).group(1))
    assert ops.get_job(db, job_id)["state"] == "done"
    assert DEFAULT_TOKEN not in chat + result.stderr


# ---- poll ---------------------------------------------------------------------------------------


def test_poll_once_answers_creates_the_job_and_runs_the_worker(schema_env, db, telegram):
    telegram.push_message(CHAT, "/start")
    telegram.push_message(CHAT, "A lighthouse in a storm")

    result = manage(poll_env(schema_env, telegram), "poll", "--once")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "handled 2 updates" in result.stdout
    texts = [call.params["text"] for call in telegram.calls_to("sendMessage")]
    assert t("welcome", "en", max_chars=1000) in texts
    jobs = db.run("recent_jobs", user_id=CHAT, limit=5)
    assert len(jobs) == 1
    job = ops.get_job(db, jobs[0]["id"])
    assert (job["state"], job["gate"]) == ("waiting", "script")
    gate_message = telegram.message(CHAT, job["gate_message_id"])
    keyboard = gate_message["reply_markup"]["inline_keyboard"][0]
    assert keyboard[0]["callback_data"] == callback_data(job["id"], "script", "approve")
    assert (
        TelegramClient(telegram.token, telegram.base_url).get_webhook_info()["pending_update_count"]
        == 0
    )


def test_poll_once_does_not_answer_a_redelivered_update(schema_env, telegram):
    update = telegram.push_message(CHAT, "/help")
    env = poll_env(schema_env, telegram)
    assert manage(env, "poll", "--once").returncode == 0

    telegram.push_update(update)
    again = manage(env, "poll", "--once")

    assert again.returncode == 0, again.stderr
    assert "handled 1 updates" in again.stdout
    assert len(telegram.calls_to("sendMessage")) == 1


def test_poll_refuses_while_a_webhook_is_set(schema_env, telegram):
    TelegramClient(telegram.token, telegram.base_url).set_webhook(
        "https://bot.example.com/hook", "a-secret", list(ops.WEBHOOK_UPDATES)
    )

    result = manage(poll_env(schema_env, telegram), "poll", "--once")

    assert result.returncode == 1
    assert "python manage.py delete-webhook" in result.stderr
    assert not telegram.calls_to("getUpdates")
    assert telegram.token not in result.stdout + result.stderr


def test_poll_needs_a_bot_token(schema_env):
    result = manage(child_env(schema_env, TELEGRAM_BOT_TOKEN=""), "poll", "--once")

    assert result.returncode == 2
    assert "TELEGRAM_BOT_TOKEN" in result.stderr


def test_poll_once_reports_an_unreachable_database(telegram, tmp_path):
    env = child_env(
        {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "DATABASE_SCHEMA": "nowhere"},
        TELEGRAM_BOT_TOKEN=telegram.token,
        TELEGRAM_API_BASE=telegram.base_url,
    )

    result = manage(env, "poll", "--once")

    assert result.returncode == 2
    assert "error" in result.stderr.lower()
