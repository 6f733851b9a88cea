"""Spoken descriptions: a voice message, an audio file or a video note becomes a job whose first
step, `transcribe`, downloads it from Telegram and hears it through the OpenAI stand-in; what
was heard is the description, and the script message starts with it. Refusals: no transcriber
(TRANSCRIBE_PROVIDER=local), a file past getFile's 20 MB, nothing heard, too long, another
language."""

from __future__ import annotations

import io
import wave
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from localapi.openai_server import OpenAIServer
from localapi.telegram_server import TelegramServer
from shared.config import load_settings
from shared.pipeline.steps import TABLE
from shared.webhook import create_app, webhook_of
from tests.support import USER_ID, Worker, count, decide, job, post, texts_sent

HEARD = {
    "en": "A lighthouse at dawn. Waves crash on the rocks. A fishing boat comes home.",
    "ru": "Маяк на рассвете. Волны бьются о скалы. Рыбацкая лодка возвращается домой.",
}


def wav(seconds: float = 1.0, tone: int = 0) -> bytes:
    """A short silent-ish WAV; `tone` makes the bytes (and so the registered transcript) differ."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(bytes([tone % 256, 0]) * int(8000 * seconds))
    return buffer.getvalue()


@pytest.fixture
def openai() -> Iterator[OpenAIServer]:
    with OpenAIServer() as server:
        yield server


@pytest.fixture
def voice_env(webhook_env: dict[str, str], openai: OpenAIServer) -> dict[str, str]:
    return dict(
        webhook_env,
        TRANSCRIBE_PROVIDER="openai",
        OPENAI_BASE_URL=f"{openai.base_url}/v1",
        OPENAI_API_KEY=openai.api_key,
        VIDEO_SECONDS="8",
        VIDEO_RESOLUTION="720",
        RETRY_BASE_SECONDS="0",
        WORKER_MAX_SECONDS="120",
    )


@pytest.fixture
def voice_client(voice_env: dict[str, str]) -> Iterator[FlaskClient]:
    app = create_app(load_settings(voice_env))
    yield app.test_client()
    webhook_of(app).close()


def send_voice(
    client: FlaskClient,
    telegram: TelegramServer,
    audio: bytes,
    *,
    language: str = "en",
    kind: str = "voice",
    file_size: int | None = None,
) -> str:
    """The user sends `audio`; return the text the webhook answers with."""
    file_id = telegram.add_file(audio, kind=kind)
    update = telegram.push_voice(
        USER_ID, file_id, 3, kind=kind, file_size=file_size, language_code=language
    )
    response = post(client, update)
    assert response.status_code == 200
    body = response.get_json() or {}
    return body.get("text", "")


def only_job(db) -> dict:
    [row] = db.execute("SELECT id FROM jobs")
    return job(db, row[0])


@pytest.mark.parametrize("language", ["en", "ru"])
def test_a_voice_message_becomes_a_delivered_video(
    db, voice_env, voice_client, telegram, openai, language
):
    audio = wav()
    openai.add_transcript(audio, HEARD[language], language)
    reply = send_voice(voice_client, telegram, audio, language=language)
    assert reply.startswith("🎙")
    row = only_job(db)
    assert (row["state"], row["step"]) == ("queued", "transcribe")
    assert row["voice_file_id"] and row["language"] == language
    assert telegram.calls == [], "the webhook makes no outbound call"

    worker = Worker(voice_env)
    assert worker.tick() == 1
    [request] = openai.requests_to("/audio/transcriptions")
    assert request.body["model"] == "gpt-4o-mini-transcribe"
    assert (request.body["response_format"], request.body["language"]) == ("json", language)
    assert request.body["file"].content == audio
    assert request.body["file"].filename.endswith(".oga")
    row = job(db, row["id"])
    assert row["description"] == HEARD[language]
    assert row["checkpoints"]["transcribe"]["heard"] == HEARD[language]
    script = telegram.wait_for("sendMessage", lambda call: "reply_markup" in call.params)
    heard = "🎙 I heard: " if language == "en" else "🎙 Я услышал: "
    assert script.params["text"].startswith(heard)
    assert HEARD[language] in script.params["text"]
    assert [call.status for call in telegram.calls_to("downloadFile")] == [200]

    for gate in TABLE.gates:
        decide(db, row["id"], gate)
        worker.tick()
    assert job(db, row["id"])["state"] == "done"
    previews = [call for call in telegram.calls_to("sendVideo") if "reply_markup" in call.params]
    assert len(previews) == 1, "the videos gate showed the clips once"
    assert len(telegram.calls_to("sendVideo")) == 2, "then the film, once"
    assert not openai.requests_to("/chat/completions"), "the other providers stay local"


@pytest.mark.parametrize("kind", ["audio", "video_note"])
def test_an_audio_file_or_a_video_note_is_a_spoken_description_too(
    db, voice_client, telegram, kind
):
    assert send_voice(voice_client, telegram, wav(), kind=kind).startswith("🎙 Got it! Job #")
    assert only_job(db)["step"] == "transcribe"


def test_without_a_transcriber_the_user_is_asked_to_type_and_no_job_is_made(db, client, telegram):
    for language, words in (("en", "Please type it, or ask"), ("ru", "напишите описание")):
        assert words in send_voice(client, telegram, wav(), language=language)
    assert count(db, "jobs") == 0
    assert telegram.calls == []


def test_a_file_past_the_download_limit_is_refused(db, voice_client, telegram):
    reply = send_voice(voice_client, telegram, wav(), file_size=21 * 1024 * 1024)
    assert "too big (21.0 MB)" in reply and "at most 20 MB" in reply
    assert count(db, "jobs") == 0


def test_the_per_user_limits_apply_to_spoken_descriptions(db, voice_client, telegram):
    assert "Got it" in send_voice(voice_client, telegram, wav())
    assert "already have a job in progress" in send_voice(voice_client, telegram, wav(tone=1))
    assert count(db, "jobs") == 1


def test_a_redelivered_voice_update_makes_no_second_job(db, voice_client, telegram):
    file_id = telegram.add_file(wav())
    update = telegram.push_voice(USER_ID, file_id, 3)
    assert post(voice_client, update).get_json()["text"].startswith("🎙")
    assert (post(voice_client, update).get_json(silent=True) or {}).get("text") is None
    assert count(db, "jobs") == 1


@pytest.mark.parametrize(
    ("transcript", "says", "error"),
    [
        ("", "couldn't hear any words", "nothing heard"),
        ("word " * 30, "too long (149 characters, the limit is 100)", "149 characters"),
        ("東京の夜、ネオンの光が雨に映る。", "only understand Russian and English", "neither"),
    ],
    ids=["empty", "too_long", "other_language"],
)
def test_an_unusable_transcript_ends_the_job_with_a_message_that_says_why(
    db, voice_env, telegram, openai, transcript, says, error
):
    env = dict(voice_env, MAX_DESCRIPTION_CHARS="100")
    app = create_app(load_settings(env))
    audio = wav(tone=7)
    if transcript:
        openai.add_transcript(audio, transcript, "ja")
    send_voice(app.test_client(), telegram, audio)
    webhook_of(app).close()
    job_id = only_job(db)["id"]
    worker = Worker(env)
    worker.tick()
    row = job(db, job_id)
    assert (row["state"], row["step"]) == ("failed", "transcribe")
    assert error in row["last_error"]
    assert says in texts_sent(telegram)[-1]
    assert not any("reply_markup" in call.params for call in telegram.calls_to("sendMessage"))
    assert len(openai.requests_to("/audio/transcriptions")) == 1
    assert worker.tick() == 0, "nothing more is spent on it"


def test_a_voice_job_meets_a_worker_without_a_transcriber(db, voice_client, voice_env, telegram):
    send_voice(voice_client, telegram, wav())
    job_id = only_job(db)["id"]
    Worker(dict(voice_env, TRANSCRIBE_PROVIDER="local")).tick()
    row = job(db, job_id)
    assert row["state"] == "failed" and "TRANSCRIBE_PROVIDER" in row["last_error"]
    assert "the bot is unavailable" in texts_sent(telegram)[-1]
