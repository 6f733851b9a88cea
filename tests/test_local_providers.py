"""The local providers for real: espeak-ng speech, Pillow cards; plus media probing and ASS."""

from __future__ import annotations

import array
import subprocess
import threading
import wave
from pathlib import Path

import pytest
from PIL import Image

from shared.media import audio_duration, ffmpeg_exe, probe
from shared.pipeline.subtitles import (
    FONT_FAMILY,
    escape_ass_text,
    font_size_for,
    split_lines,
    write_captions,
)
from shared.plan import plan_from_text
from shared.providers.base import WordTiming
from shared.providers.local_script import LocalScript
from shared.providers.local_visuals import LocalVisuals
from shared.providers.local_voice import LocalVoice

RUSSIAN = (
    "Байкал — самое глубокое озеро на планете. Зимой лёд становится прозрачным. Берегите Байкал!"
)


@pytest.fixture(scope="module")
def plan():
    return plan_from_text(RUSSIAN, "ru", 15)


def _samples(path: Path) -> array.array:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
        return array.array("h", wav.readframes(wav.getnframes()))


def test_local_script_uses_the_description() -> None:
    plan = LocalScript().write(RUSSIAN, "ru", 15)
    assert plan.language == "ru"
    assert plan.scenes[0].narration.startswith("Байкал")


@pytest.mark.parametrize(
    ("language", "text"),
    [
        ("ru", "Привет! Это проверка русского голоса."),
        ("en", "Hello! This is a test of the voice."),
    ],
)
def test_voice_writes_real_speech(tmp_path: Path, language: str, text: str) -> None:
    out = tmp_path / "voice.wav"
    speech = LocalVoice().speak(text, language, out)
    seconds = speech.seconds
    assert 1.0 < seconds < 6.0
    assert [word.word for word in speech.words] == text.split()
    assert seconds == pytest.approx(audio_duration(out), abs=0.01)
    samples = _samples(out)
    loud = sum(1 for s in samples if abs(s) > 1000)
    assert loud > len(samples) * 0.1, "the file should contain speech, not silence"


def test_voice_length_follows_the_text(tmp_path: Path) -> None:
    voice = LocalVoice()
    short = voice.speak("Один.", "ru", tmp_path / "short.wav").seconds
    long = voice.speak(
        "Один, два, три, четыре, пять, шесть, семь, восемь.", "ru", tmp_path / "long.wav"
    ).seconds
    assert long > short * 2


def test_voice_is_safe_across_threads(tmp_path: Path) -> None:
    """espeak-ng is one global engine; concurrent calls must not mix their audio.

    (espeak output varies by a few samples from call to call, so lengths are compared.)
    """
    voice = LocalVoice()
    texts = {"ru": "Первая фраза для проверки.", "en": "A second phrase to check."}
    alone = {
        language: voice.speak(text, language, tmp_path / f"{language}_alone.wav").seconds
        for language, text in texts.items()
    }
    results: dict[str, float] = {}

    def speak(language: str, n: int) -> None:
        path = tmp_path / f"{language}_{n}.wav"
        results[path.name] = voice.speak(texts[language], language, path).seconds

    threads = [
        threading.Thread(target=speak, args=(language, n)) for n in range(3) for language in texts
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6
    for name, seconds in results.items():
        language = name.split("_")[0]
        assert seconds == pytest.approx(alone[language], abs=0.05)
        assert audio_duration(tmp_path / name) == pytest.approx(seconds, abs=0.01)


def test_voice_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        LocalVoice().speak("  ", "ru", tmp_path / "x.wav")
    with pytest.raises(ValueError, match="language"):
        LocalVoice().speak("Hola", "es", tmp_path / "x.wav")


@pytest.mark.parametrize("size", [(720, 1280), (1280, 720), (1080, 1080)])
def test_visuals_draw_a_card_of_the_requested_size(tmp_path: Path, plan, size) -> None:
    out = tmp_path / "card.png"
    LocalVisuals().draw(plan, 0, size, out)
    with Image.open(out) as card:
        assert card.format == "PNG"
        assert card.size == size
        colours = card.convert("RGB").resize((90, 160)).getcolors(maxcolors=100_000)
    assert len(colours) > 2000, "a designed gradient card, not a flat fill"


def test_visuals_are_deterministic_and_differ_per_scene(tmp_path: Path, plan) -> None:
    visuals = LocalVisuals()
    visuals.draw(plan, 1, (360, 640), tmp_path / "a.png")
    visuals.draw(plan, 1, (360, 640), tmp_path / "b.png")
    visuals.draw(plan, 2, (360, 640), tmp_path / "c.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "c.png").read_bytes()


def test_regenerate_gives_a_new_take_of_the_same_narration(tmp_path: Path, plan) -> None:
    first, second = (
        LocalScript().write(RUSSIAN, "ru", 15),
        LocalScript().write(RUSSIAN, "ru", 15, variant=1),
    )
    assert [s.narration for s in second.scenes] == [s.narration for s in first.scenes]
    assert second.title != first.title
    LocalVisuals().draw(plan, 1, (360, 640), tmp_path / "take1.png")
    LocalVisuals().draw(plan, 1, (360, 640), tmp_path / "take2.png", variant=1)
    assert (tmp_path / "take1.png").read_bytes() != (tmp_path / "take2.png").read_bytes()


def test_visuals_reject_a_missing_scene(tmp_path: Path, plan) -> None:
    with pytest.raises(ValueError, match="scene index"):
        LocalVisuals().draw(plan, len(plan.scenes), (720, 1280), tmp_path / "x.png")


def test_probe_reads_audio_and_video(tmp_path: Path) -> None:
    wav = tmp_path / "voice.wav"
    seconds = LocalVoice().speak("Проверка.", "ru", wav).seconds
    info = probe(wav)
    assert info.audio_codec == "pcm_s16le" and info.video_codec is None
    assert info.duration == pytest.approx(seconds, abs=0.02)
    m4a = tmp_path / "voice.m4a"
    subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-i", str(wav), "-c:a", "aac", str(m4a)], check=True
    )
    assert audio_duration(m4a) == pytest.approx(seconds, abs=0.1)
    with pytest.raises(FileNotFoundError):
        probe(tmp_path / "missing.mp4")


def test_caption_lines_are_short_and_keep_every_word() -> None:
    narration = (
        "Сегодня Москва — огромный мегаполис с населением более двенадцати миллионов человек."
    )
    lines = split_lines(narration.split(), max_words=4)
    assert " ".join(" ".join(line) for line in lines) == narration
    assert all(1 <= len(line) <= 4 for line in lines)


def test_ass_text_escaping() -> None:
    assert escape_ass_text("a {\\b1} b") == "a \\{\u2216b1\\} b"
    assert escape_ass_text("line one\nline two\\N") == "line one line two\u2216N"


def test_ass_document_is_timed_on_word_timings(plan, tmp_path: Path) -> None:
    words = [
        [WordTiming(word, 0.3 * i, 0.3 * i + 0.25) for i, word in enumerate(s.narration.split())]
        for s in plan.scenes
    ]
    starts = [0.0, 4.0, 8.0]
    path = write_captions(plan.scenes, words, starts, (720, 1280), "sentence", tmp_path / "a.ass")
    document = path.read_text(encoding="utf-8")
    assert "PlayResX: 720" in document and "PlayResY: 1280" in document
    assert f"Style: Caption,{FONT_FAMILY},{font_size_for((720, 1280))}," in document
    dialogues = [line for line in document.splitlines() if line.startswith("Dialogue:")]
    assert dialogues[0].split(",")[1] == "0:00:00.00"
    last = words[-1][-1]
    assert dialogues[-1].split(",")[2] == f"0:00:{8 + last.end + 0.5:05.2f}"
    assert "Байкал" in document
    with pytest.raises(ValueError):
        write_captions(plan.scenes, words[:1], starts, (720, 1280), "sentence", tmp_path / "b")
