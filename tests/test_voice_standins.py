"""The stand-ins' side of spoken descriptions, through our own clients: the Telegram server's
getFile and file downloads (the token in the URL never logged), the OpenAI server's
/audio/transcriptions in its response formats, its 25 MB limit and its format errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import requests

from localapi.openai_server import OpenAIServer
from shared.providers.openai import OpenAIClient, OpenAITranscriber, RequestRefused
from shared.telegram import TelegramClient, TelegramError
from tests.test_voice import wav


def test_get_file_then_download_gives_the_bytes_and_never_logs_the_token(telegram, caplog):
    caplog.set_level(logging.DEBUG)
    audio = wav()
    file_id = telegram.add_file(audio)
    client = TelegramClient(telegram.token, telegram.base_url)
    info = client.get_file(file_id)
    assert set(info) == {"file_id", "file_unique_id", "file_size", "file_path"}
    assert info["file_size"] == len(audio) and info["file_path"].startswith("voice/")
    assert client.get_file(file_id)["file_path"] == info["file_path"]
    assert client.download_file(info["file_path"]) == audio
    with pytest.raises(TelegramError) as missing:
        client.download_file("voice/file_999.oga")
    assert missing.value.error_code == 404
    assert telegram.token not in caplog.text and telegram.token not in str(missing.value)


def test_telegram_refuses_unknown_and_too_big_files(telegram):
    client = TelegramClient(telegram.token, telegram.base_url)
    with pytest.raises(TelegramError, match="invalid file_id"):
        client.get_file("no-such-file")
    big = telegram.add_file(b"\0" * (20 * 1024 * 1024 + 1), kind="audio")
    with pytest.raises(TelegramError, match="file is too big"):
        client.get_file(big)
    wrong_token = requests.get(f"{telegram.base_url}/file/bot1:wrong/voice/file_1.oga", timeout=5)
    assert wrong_token.status_code == 404


def test_a_voice_update_carries_telegrams_fields(telegram):
    file_id = telegram.add_file(wav(), kind="video_note")
    update = telegram.push_voice(7, file_id, 4, kind="video_note")
    note = update["message"]["video_note"]
    assert {"file_id", "file_unique_id", "length", "duration", "file_size"} <= set(note)


def transcriptions(openai: OpenAIServer, **form: str) -> requests.Response:
    return requests.post(
        f"{openai.base_url}/v1/audio/transcriptions",
        headers={"Authorization": f"Bearer {openai.api_key}"},
        data={"model": "whisper-1", **form},
        files={"file": ("voice.oga", wav(), "audio/ogg")},
        timeout=5,
    )


def test_the_transcription_formats(tmp_path: Path):
    with OpenAIServer() as openai:
        openai.add_transcript(wav(), "Привет, мир", "ru")
        assert transcriptions(openai).json()["text"] == "Привет, мир"
        assert transcriptions(openai, response_format="text").text == "Привет, мир\n"
        verbose = transcriptions(openai, response_format="verbose_json").json()
        assert (verbose["language"], verbose["duration"]) == ("russian", 1.0)
        assert transcriptions(openai, response_format="srt").text.startswith("1\n00:00:00,000")
        refused = transcriptions(openai, model="gpt-4o-mini-transcribe", response_format="srt")
        assert refused.status_code == 400 and "not compatible" in refused.json()["error"]["message"]
        path = tmp_path / "voice.oga"
        path.write_bytes(wav())
        client = OpenAIClient(f"{openai.base_url}/v1", openai.api_key)
        assert OpenAITranscriber(client, "gpt-4o-mini-transcribe").transcribe(path, "ru") == (
            "Привет, мир"
        )


def test_the_transcription_limits_and_format_errors(tmp_path: Path):
    with OpenAIServer() as openai:
        client = OpenAIClient(f"{openai.base_url}/v1", openai.api_key)
        transcriber = OpenAITranscriber(client, "gpt-4o-mini-transcribe")
        big = tmp_path / "big.mp3"
        big.write_bytes(b"\0" * (25 * 1024 * 1024 + 1))
        with pytest.raises(RequestRefused, match="Maximum content size limit") as too_big:
            transcriber.transcribe(big, "en")
        assert too_big.value.status == 413
        text = tmp_path / "notes.txt"
        text.write_bytes(b"hello")
        with pytest.raises(RequestRefused, match="Invalid file format"):
            transcriber.transcribe(text, "en")
        unheard = tmp_path / "silence.wav"
        unheard.write_bytes(wav(tone=3))
        assert transcriber.transcribe(unheard, "en") == ""
