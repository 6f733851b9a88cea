"""The soundtrack with real ffmpeg and real espeak voices: length, loudness (also after the AAC
encode), ducking measured on the music stem, per-job beds, MUSIC_DIR tracks, fades."""

from __future__ import annotations

import array
import logging
import math
import re
import subprocess
import wave
from pathlib import Path

import pytest

from shared.media import audio_duration, ffmpeg_exe
from shared.pipeline.audio import (
    FADE_IN_S,
    FADE_OUT_S,
    MusicChoice,
    bed_style,
    choose_track,
    mix_soundtrack,
    music_bed,
    music_stem,
)
from shared.providers.local_voice import LocalVoice

GAP = 0.25  # the renderer's GAP_SECONDS
VOICE_TAIL = 0.15  # silence LocalVoice appends to each voice
RATE = 8000  # analysis rate: the bed has nothing that matters above 4 kHz
SCENES = [
    ("The morning light spreads slowly over the quiet harbour and the boats.", "en"),
    ("Рыбаки проверяют сети и негромко переговариваются у самой воды.", "ru"),
    ("By noon the market is full of voices, colours and the smell of the sea.", "en"),
]


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[float]]:
    folder = tmp_path_factory.mktemp("voices")
    voices, durations = [], []
    for index, (text, language) in enumerate(SCENES):
        path = folder / f"voice_{index}.wav"
        durations.append(LocalVoice().speak(text, language, path).seconds)
        voices.append(path)
    return voices, durations


def _ffmpeg(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", *args], capture_output=True, check=True
    )


def _samples(path: Path) -> array.array:
    """The file as mono float samples at RATE."""
    raw = _ffmpeg("-i", str(path), "-ac", "1", "-ar", str(RATE), "-f", "f32le", "-").stdout
    samples = array.array("f")
    samples.frombytes(raw)
    return samples


def _rms_db(samples: array.array, windows: list[tuple[float, float]]) -> float:
    """RMS in dB over all the (start, end) windows together."""
    chunks = [samples[int(start * RATE) : int(end * RATE)] for start, end in windows]
    count = sum(len(chunk) for chunk in chunks)
    energy = sum(value * value for chunk in chunks for value in chunk)
    return 10 * math.log10(energy / count + 1e-30)


def _loudness(path: Path) -> tuple[float, float]:
    """Integrated loudness (LUFS) and true peak (dBTP) by ffmpeg's ebur128."""
    log = _ffmpeg(
        "-i", str(path), "-af", "ebur128=peak=true:framelog=quiet", "-f", "null", "-"
    ).stderr.decode()
    summary = log[log.rindex("Summary:") :]
    integrated = float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1))
    true_peak = float(re.search(r"Peak:\s+(-?[\d.]+|-inf) dBFS", summary).group(1))
    return integrated, true_peak


def _timeline(
    durations: list[float],
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(speech windows, gap windows): each voice's words, and the silence after them."""
    speech, gaps, start = [], [], 0.0
    for duration in durations:
        speech.append((start + 0.05, start + duration - VOICE_TAIL))
        gaps.append((start + duration, start + duration + GAP))
        start += duration + GAP
    return speech, gaps


@pytest.mark.parametrize("source", ["off", "generated"])
def test_soundtrack_length_and_loudness_in_wav_and_aac(
    source: str, film: tuple[list[Path], list[float]], tmp_path: Path
) -> None:
    voices, durations = film
    out = mix_soundtrack(
        voices,
        durations,
        GAP,
        tmp_path / "soundtrack.wav",
        music=MusicChoice(source, "job-1:harbour", mood="calm"),
        work_dir=tmp_path / "work",
    )
    with wave.open(str(out), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels()) == (44_100, 2)
        seconds = wav.getnframes() / wav.getframerate()
    assert seconds == pytest.approx(sum(durations) + GAP * len(durations), abs=0.01)
    encoded = tmp_path / "soundtrack.mp4"  # as the renderer encodes it: its coder matters
    _ffmpeg("-i", str(out), "-c:a", "aac", "-aac_coder", "fast", "-b:a", "96k", str(encoded))
    for path in (out, encoded):
        integrated, true_peak = _loudness(path)
        assert integrated == pytest.approx(-14.0, abs=1.0), path.name
        assert true_peak <= -1.0, path.name


def test_music_off_is_the_voice_alone(film: tuple[list[Path], list[float]], tmp_path: Path) -> None:
    voices, durations = film
    out = mix_soundtrack(
        voices,
        durations,
        GAP,
        tmp_path / "soundtrack.wav",
        music=MusicChoice("off", "job-1"),
        work_dir=tmp_path,
    )
    samples = _samples(out)
    _, gaps = _timeline(durations)
    assert _rms_db(samples, gaps) < -80  # nothing under the voice: the pauses are silent


def test_bed_ducks_under_speech_and_recovers_in_pauses(
    film: tuple[list[Path], list[float]], tmp_path: Path
) -> None:
    voices, durations = film
    stem = music_stem(
        voices,
        durations,
        GAP,
        tmp_path / "stem.wav",
        music=MusicChoice("generated", "job-2:market", mood="upbeat"),
        work_dir=tmp_path,
        dry_path=tmp_path / "dry.wav",
    )
    ducked, dry = _samples(stem), _samples(tmp_path / "dry.wav")
    speech, gaps = _timeline(durations)
    gaps = gaps[:-1]  # the last pause is in the fade-out
    assert _rms_db(ducked, gaps) - _rms_db(ducked, speech) >= 10
    for window in speech:  # every scene, measured against the same bed undisturbed
        assert _rms_db(dry, [window]) - _rms_db(ducked, [window]) >= 10, window
    for window in gaps:
        assert _rms_db(dry, [window]) - _rms_db(ducked, [window]) <= 4, window


def test_generated_beds_differ_per_seed_and_fade(tmp_path: Path) -> None:
    first = music_bed(MusicChoice("generated", "job-3:a", mood="calm"), 8.0, tmp_path / "a.wav")
    again = music_bed(MusicChoice("generated", "job-3:a", mood="calm"), 8.0, tmp_path / "a2.wav")
    other = music_bed(MusicChoice("generated", "job-4:b", mood="calm"), 8.0, tmp_path / "b.wav")
    assert first.read_bytes() == again.read_bytes()
    assert bed_style("job-3:a", "calm") != bed_style("job-4:b", "calm")
    a, b = _samples(first), _samples(other)
    dot = sum(x * y for x, y in zip(a, b))
    correlation = dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
    assert abs(correlation) < 0.5
    assert audio_duration(first) == pytest.approx(8.0, abs=0.01)
    middle = _rms_db(a, [(2.0, 3.0)])
    assert middle > -40  # music, not silence
    assert _rms_db(a, [(0.0, 0.1)]) < middle - 15  # fading in over FADE_IN_S
    assert _rms_db(a, [(7.9, 8.0)]) < middle - 15  # faded out over FADE_OUT_S
    assert _rms_db(a, [(FADE_IN_S, 8.0 - FADE_OUT_S)]) > middle - 6


@pytest.fixture(scope="module")
def music_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tracks named by mood (a 4 s one in a `calm` folder, a 20 s one), and a broken one."""
    folder = tmp_path_factory.mktemp("music")
    (folder / "calm").mkdir()
    _ffmpeg(
        "-f", "lavfi", "-i", "anoisesrc=c=pink:a=0.2:d=4:seed=7", str(folder / "calm" / "brook.mp3")
    )
    _ffmpeg("-f", "lavfi", "-i", "anoisesrc=c=brown:a=0.3:d=20", str(folder / "epic_theme.m4a"))
    (folder / "dark_night.mp3").write_bytes(b"not audio at all")
    return folder


def test_music_dir_picks_by_mood(music_dir: Path) -> None:
    assert choose_track(music_dir, "job-5", "calm") == music_dir / "calm" / "brook.mp3"
    assert choose_track(music_dir, "job-5", "Epic") == music_dir / "epic_theme.m4a"
    unknown = {choose_track(music_dir, f"job-{n}", "whimsical") for n in range(20)}
    assert len(unknown) > 1  # no track for the mood: the seed picks among all


def test_music_dir_loops_a_short_track(music_dir: Path, tmp_path: Path) -> None:
    bed = music_bed(MusicChoice("dir", "job-5", music_dir, "calm"), 12.0, tmp_path / "bed.wav")
    samples = _samples(bed)
    assert len(samples) / RATE == pytest.approx(12.0, abs=0.01)
    levels = [_rms_db(samples, [(start / 2, start / 2 + 0.5)]) for start in range(2, 20)]
    assert max(levels) - min(levels) < 4  # no gap or dip at the seams (4 s, 7 s, 10 s)


def test_unreadable_track_falls_back_to_the_generated_bed(
    music_dir: Path, film: tuple[list[Path], list[float]], tmp_path: Path, caplog
) -> None:
    choice = MusicChoice("dir", "job-6", music_dir, "dark")
    assert choose_track(music_dir, "job-6", "dark") == music_dir / "dark_night.mp3"
    with caplog.at_level(logging.WARNING, logger="shared.pipeline.audio"):
        bed = music_bed(choice, 6.0, tmp_path / "bed.wav")
    assert "generated bed" in caplog.text
    generated = music_bed(MusicChoice("generated", "job-6", mood="dark"), 6.0, tmp_path / "g.wav")
    assert bed.read_bytes() == generated.read_bytes()
    voices, durations = film
    out = mix_soundtrack(
        voices, durations, GAP, tmp_path / "soundtrack.wav", music=choice, work_dir=tmp_path
    )
    assert audio_duration(out) == pytest.approx(sum(durations) + GAP * len(durations), abs=0.01)
