"""Word timings for captions, measured for real: espeak-ng's word events against the energy
onsets in its own audio, the syllable-and-pause estimate against espeak's timings, and whisper
word timestamps from the OpenAI stand-in over real HTTP, mapped onto the narration's words."""

from __future__ import annotations

import array
import io
import logging
import statistics
import wave
from pathlib import Path
from typing import Iterator, Sequence

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from localapi.openai_server import OpenAIServer
from shared.http import RetryPolicy
from shared.pipeline import timings
from shared.pipeline.timings import estimate, map_words, silences, syllables, word_timings
from shared.providers.base import Speech, WordTiming
from shared.providers.local_voice import LocalVoice
from shared.providers.openai import OpenAIClient, OpenAITranscriber, OpenAIVoice

API_KEY = "sk-test-timings-0123456789"
TOLERANCE_S = 0.1
FRAME_S = 0.005
LOUD = 400
QUIET_RUN_S = 0.1
PAUSED = [
    ("ru", "Один. Два. Три. Четыре."),
    ("en", "One. Two. Three. Four."),
    ("ru", "Сегодня утром, когда солнце только встало, мы пошли к озеру, и вода была тихой."),
    ("en", "The quick brown fox, which was hungry, jumped over the lazy dog. Then it slept."),
]
MIXED = [
    *PAUSED,
    ("ru", "Байкал — самое глубокое озеро на планете. Зимой лёд становится прозрачным."),
    ("ru", "Привет! Это проверка русского голоса. Мы говорим медленно, чётко и с паузами."),
    ("en", "Hello! This is a test of the voice, and it should keep going. Captions follow."),
]


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(API_KEY) as running:
        yield running


@pytest.fixture
def client(server: OpenAIServer) -> OpenAIClient:
    return OpenAIClient(
        server.start(),
        API_KEY,
        sleep=lambda _: None,
        timeout=10.0,
        policy=RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.01),
    )


def onsets(path: Path) -> list[float]:
    """When sound starts again after each stretch of at least QUIET_RUN_S of quiet (and at the
    very start), read from the WAV's samples in FRAME_S frames."""
    with wave.open(str(path), "rb") as wav:
        rate = wav.getframerate()
        samples = array.array("h", wav.readframes(wav.getnframes()))
    frame = int(rate * FRAME_S)
    found, quiet = [], QUIET_RUN_S
    for index in range(0, len(samples) - frame, frame):
        if max(map(abs, samples[index : index + frame])) > LOUD:
            if quiet >= QUIET_RUN_S:
                found.append(index / rate)
            quiet = 0.0
        else:
            quiet += FRAME_S
    return found


def after_pauses(words: Sequence[WordTiming]) -> list[WordTiming]:
    """The first word and every word after punctuation: where a voice pauses."""
    return [words[0]] + [word for before, word in zip(words, words[1:]) if before.word[-1] in ",."]


def assert_well_formed(timed: Sequence[WordTiming], narration: str, seconds: float) -> None:
    assert [word.word for word in timed] == narration.split()
    for word, following in zip(timed, timed[1:]):
        assert word.start <= word.end == following.start
    assert all(0.0 <= word.start <= word.end <= seconds for word in timed)


def test_espeak_word_starts_are_within_100_ms_of_the_voice(tmp_path: Path) -> None:
    errors = []
    for index, (language, text) in enumerate(PAUSED):
        path = tmp_path / f"{index}.wav"
        speech = LocalVoice().speak(text, language, path)
        expected = after_pauses(speech.words)
        heard = onsets(path)
        assert len(heard) == len(expected), (text, heard, expected)
        errors += [abs(word.start - onset) for word, onset in zip(expected, heard)]
    print(f"espeak onset error mean={statistics.mean(errors):.3f}s max={max(errors):.3f}s")
    assert max(errors) <= TOLERANCE_S


@pytest.mark.parametrize(
    ("language", "text"),
    [
        ("ru", "Байкал — самое «глубокое» озеро. В 2025 году, т.е. сейчас, лёд-стекло!"),
        ("en", "Hello-world: it's 3 o'clock... Mr. Smith? (Yes) — ok."),
        ("ru", "  Один   слово  "),
    ],
)
def test_espeak_gives_one_timing_per_narration_word(
    tmp_path: Path, language: str, text: str
) -> None:
    speech = LocalVoice().speak(text, language, tmp_path / "voice.wav")
    assert speech.words is not None
    assert_well_formed(speech.words, text, speech.seconds)
    assert speech.words[-1].end < speech.seconds, "the tail silence belongs to no word"
    assert word_timings(speech, text, tmp_path / "voice.wav", language) == list(speech.words)


def test_the_estimate_follows_espeak_and_resynchronises_at_pauses(tmp_path: Path) -> None:
    errors, at_pauses = [], []
    for index, (language, text) in enumerate(MIXED):
        path = tmp_path / f"{index}.wav"
        speech = LocalVoice().speak(text, language, path)
        guessed = word_timings(Speech(speech.seconds), text, path, language)
        assert_well_formed(guessed, text, speech.seconds)
        errors += [abs(a.start - b.start) for a, b in zip(speech.words, guessed)]
        at_pauses += [
            abs(a.start - b.start)
            for a, b in zip(after_pauses(speech.words), after_pauses(guessed))
        ]
    print(
        f"estimate vs espeak mean={statistics.mean(errors):.3f}s max={max(errors):.3f}s; "
        f"after pauses mean={statistics.mean(at_pauses):.3f}s max={max(at_pauses):.3f}s"
    )
    assert statistics.mean(errors) <= 0.25
    assert max(at_pauses) <= TOLERANCE_S


def test_the_estimate_without_pauses_shares_the_audio_by_syllables() -> None:
    # 2 syllables + a comma's 1.5, 1, 0 + a dash's 1.5, 3: eight units over three seconds, and
    # the dash (not said) starts with the word after it.
    guessed = estimate(["Один,", "два", "—", "двадцать."], 3.0)
    assert [round(word.start, 4) for word in guessed] == [0.0, 1.3125, 2.25, 2.25]
    assert guessed[-1].end == 3.0
    assert (syllables("двадцать."), syllables("—"), syllables("2025"), syllables("Ok")) == (
        2,
        0,
        8,
        1,
    )


def test_silences_come_from_ffmpeg(tmp_path: Path) -> None:
    path = tmp_path / "voice.wav"
    speech = LocalVoice().speak("Один. Два.", "ru", path)
    quiet = silences(path)
    assert len(quiet) == 2 and quiet[-1][1] >= speech.seconds - 0.01
    assert quiet[0][1] == pytest.approx(speech.words[1].start, abs=TOLERANCE_S)
    assert silences(tmp_path / "missing.wav") == []


def test_whisper_words_are_mapped_onto_the_narration(
    tmp_path: Path, server: OpenAIServer, client: OpenAIClient
) -> None:
    """espeak's own timings play whisper's answer, spelled the way whisper writes: numbers in
    words, other case, no punctuation, one word missed, one extra."""
    narration = "В 2025 году озеро — «Байкал» — замёрзло, и 3 рыбака ушли домой."
    path = tmp_path / "voice.wav"
    truth = LocalVoice().speak(narration, "ru", path).words
    said = {word.word: word for word in truth}
    heard = [
        ("в", said["В"].start, said["В"].end),
        ("две", said["2025"].start, said["2025"].start + 0.4),
        ("тысячи", said["2025"].start + 0.4, said["2025"].end),
        ("двадцать", said["2025"].start + 0.8, said["2025"].end),
        ("пятом", said["2025"].start + 1.0, said["2025"].end),
        ("Году", said["году"].start, said["году"].end),
        ("эээ", said["году"].end, said["году"].end + 0.05),
        ("озеро", said["озеро"].start, said["озеро"].end),
        ("Байкал", said["«Байкал»"].start, said["«Байкал»"].end),
        ("замерзло", said["замёрзло,"].start, said["замёрзло,"].end),
        ("и", said["и"].start, said["и"].end),
        ("три", said["3"].start, said["3"].end),
        ("рыбака", said["рыбака"].start, said["рыбака"].end),
        ("домой", said["домой."].start, said["домой."].end),
    ]
    server.add_transcript(path.read_bytes(), "в две тысячи ... домой", "ru", heard)
    transcriber = OpenAITranscriber(client, "gpt-4o-mini-transcribe")
    seconds = LocalVoice().speak(narration, "ru", tmp_path / "again.wav").seconds
    timed = word_timings(Speech(seconds), narration, path, "ru", transcriber)
    assert_well_formed(timed, narration, seconds)
    [request] = server.requests_to("/audio/transcriptions")
    assert {key: request.body[key] for key in ("model", "response_format", "language")} == {
        "model": "whisper-1",
        "response_format": "verbose_json",
        "language": "ru",
    }
    assert request.body["timestamp_granularities[]"] == "word"
    errors = {
        word.word: abs(word.start - expected.start)
        for word, expected in zip(timed, truth)
        if word.word not in ("ушли", "—")
    }
    assert max(errors.values()) <= 0.006, [(w.word, w.start, e.start) for w, e in zip(timed, truth)]
    unheard = {word.word: word for word in timed}["ушли"]
    assert said["рыбака"].start < unheard.start < said["домой."].start


def test_whisper_words_from_the_stand_in_follow_the_sound(
    tmp_path: Path, server: OpenAIServer, client: OpenAIClient
) -> None:
    narration = "The cat looks at the moon and dreams of cheese."
    path = tmp_path / "voice.wav"
    speech = OpenAIVoice(client, "gpt-4o-mini-tts", "alloy").speak(narration, "en", path)
    server.add_transcript(path.read_bytes(), "the cat looks at the moon and dreams of cheese")
    words = OpenAITranscriber(client, "gpt-4o-mini-transcribe").words(path, "en")
    assert [word.word for word in words] == narration.rstrip(".").lower().split()
    assert words[0].start < 0.1 and words[-1].end == pytest.approx(speech.seconds, abs=0.05)
    timed = word_timings(speech, narration, path, "en", OpenAITranscriber(client, "x"))
    assert_well_formed(timed, narration, speech.seconds)
    assert [word.start for word in timed] == pytest.approx([w.start for w in words], abs=1e-9)


@pytest.mark.parametrize(
    ("fault", "kind"),
    [(400, "RequestRefused"), (500, "TransientError"), (401, "OwnerActionNeeded")],
)
def test_a_failed_alignment_falls_back_to_the_estimate(
    tmp_path: Path,
    server: OpenAIServer,
    client: OpenAIClient,
    caplog: pytest.LogCaptureFixture,
    fault: int,
    kind: str,
) -> None:
    narration = "Один. Два. Три. Четыре."
    path = tmp_path / "voice.wav"
    speech = LocalVoice().speak(narration, "ru", path)
    server.fail_next("/audio/transcriptions", fault, times=2)
    caplog.set_level(logging.WARNING)
    timed = word_timings(
        Speech(speech.seconds), narration, path, "ru", OpenAITranscriber(client, "whisper-1")
    )
    assert timed == estimate(narration.split(), speech.seconds, silences(path))
    assert f"word alignment failed, estimating audio=voice.wav error_kind={kind}" in caplog.text
    assert API_KEY not in caplog.text


def test_a_model_without_word_timestamps_is_refused_and_estimated(
    tmp_path: Path, server: OpenAIServer, client: OpenAIClient, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "voice.wav"
    speech = LocalVoice().speak("Один. Два.", "ru", path)
    transcriber = OpenAITranscriber(client, "whisper-1", align_model="gpt-4o-mini-transcribe")
    timed = word_timings(Speech(speech.seconds), "Один. Два.", path, "ru", transcriber)
    assert timed == estimate(["Один.", "Два."], speech.seconds, silences(path))
    assert "not compatible with model 'gpt-4o-mini-transcribe'" in caplog.text


def test_a_transcript_of_something_else_is_not_trusted(
    tmp_path: Path, server: OpenAIServer, client: OpenAIClient
) -> None:
    path = tmp_path / "voice.wav"
    speech = LocalVoice().speak("Один. Два. Три.", "ru", path)
    server.add_transcript(
        path.read_bytes(), "hello world", "ru", [("hello", 0, 1), ("world", 1, 2)]
    )
    timed = word_timings(
        Speech(speech.seconds), "Один. Два. Три.", path, "ru", OpenAITranscriber(client, "x")
    )
    assert timed == estimate(["Один.", "Два.", "Три."], speech.seconds, silences(path))


def test_the_stand_in_answers_word_timestamps_like_openai(server: OpenAIServer) -> None:
    url = f"{server.start()}/audio/transcriptions"

    def post(**form: str) -> requests.Response:
        return requests.post(
            url,
            headers={"Authorization": f"Bearer {API_KEY}"},
            data={"model": "whisper-1", **form},
            files={"file": ("voice.wav", wav_bytes, "audio/wav")},
            timeout=5,
        )

    wav_bytes = _tone_wav()
    server.add_transcript(wav_bytes, "Hi there", "en", [("Hi", 0.1, 0.3), ("there", 0.3, 0.6)])
    body = post(response_format="verbose_json", **{"timestamp_granularities[]": "word"}).json()
    assert body["task"] == "transcribe" and body["language"] == "english"
    assert body["text"] == "Hi there" and "segments" not in body
    assert body["words"] == [
        {"word": "Hi", "start": 0.1, "end": 0.3},
        {"word": "there", "start": 0.3, "end": 0.6},
    ]
    assert "words" not in post(response_format="verbose_json").json()
    refused = post(response_format="json", **{"timestamp_granularities[]": "word"})
    assert refused.status_code == 400 and "verbose_json" in refused.json()["error"]["message"]
    refused = post(
        model="gpt-4o-transcribe",
        response_format="verbose_json",
        **{"timestamp_granularities[]": "word"},
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "response_format"
    refused = post(model="gpt-4o-transcribe", **{"timestamp_granularities[]": "word"})
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "timestamp_granularities"


def _tone_wav() -> bytes:
    """Half a second of silence, then half a second of a loud square wave (16 kHz mono)."""
    samples = array.array("h", [0] * 8000 + [6000 if i % 40 < 20 else -6000 for i in range(8000)])
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(samples.tobytes())
    return buffer.getvalue()


_WORD = st.text(
    alphabet=st.sampled_from("abcxyzабвгдеёжAБ0123456789.,!?—«»-'"), min_size=1, max_size=8
)


@st.composite
def _narration_and_heard(draw: st.DrawFn) -> tuple[list[str], list[WordTiming], float]:
    narration = draw(st.lists(_WORD, min_size=0, max_size=25))
    heard, clock = [], draw(st.floats(0, 2))
    for word in narration:
        choice = draw(st.sampled_from(["same", "upper", "bare", "other", "missing", "extra"]))
        if choice == "missing":
            continue
        spelled = {
            "same": word,
            "upper": word.upper(),
            "bare": word.strip(".,!?—«»-'"),
            "other": draw(_WORD),
            "extra": word,
        }[choice]
        length = draw(st.floats(0, 1.5))
        heard.append(WordTiming(spelled, clock, clock + length))
        if choice == "extra":
            heard.append(WordTiming(draw(_WORD), clock + length, clock + 2 * length))
        clock += length * draw(st.sampled_from([0.5, 1.0, 2.0]))
    if draw(st.booleans()):
        heard = draw(st.permutations(heard))
    seconds = draw(st.floats(0, 40))
    return narration, heard, seconds


@given(_narration_and_heard())
def test_any_heard_words_give_one_monotonic_timing_per_narration_word(
    case: tuple[list[str], list[WordTiming], float],
) -> None:
    narration, heard, seconds = case
    timed = map_words(narration, heard, seconds)
    assert_well_formed(timed, " ".join(narration), seconds)
    if narration:
        assert timed[-1].end <= seconds


def test_timings_round_trip_through_json() -> None:
    words = [WordTiming("Привет,", 0.0, 0.4567), WordTiming("мир!", 0.4567, 1.0)]
    assert timings.loads(timings.dumps(words)) == [
        WordTiming("Привет,", 0.0, 0.457),
        WordTiming("мир!", 0.457, 1.0),
    ]
