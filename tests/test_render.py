"""Render real 3-scene Russian films (espeak voice, Pillow cards, ffmpeg test clips) and
inspect the MP4s and the ffmpeg commands that made them."""

from __future__ import annotations

import re
import struct
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from fontTools.ttLib import TTFont
from PIL import Image

from shared.media import FONTS_DIR, audio_duration, ffmpeg_exe, probe
from shared.pipeline import render
from shared.pipeline.audio import MusicChoice
from shared.pipeline.render import RenderResult, film_seconds, render_video, video_bitrate_for
from shared.pipeline.segments import SceneRun
from shared.pipeline.storyboard import make_storyboard
from shared.pipeline.subtitles import FONT_FAMILY, scene_starts
from shared.plan import ScenePlan, plan_from_text
from shared.providers.base import WordTiming
from shared.providers.local_visuals import LocalVisuals
from shared.providers.local_voice import LocalVoice

SIZE = (720, 1280)
SIZE_1080 = (1080, 1920)
FPS = 30
MAX_BYTES = 50 * 1024 * 1024
TEXT = (
    "Ёжик живёт в лесу. Он собирает яблоки и грибы, пока не наступит зима. "
    "Щедрая осень — «лучшее» время!"
)
SHORT_CLIP_SECONDS = 1.2  # scene 1 lasts about 3 s: the clip is held on its last frame
LONG_CLIP_SECONDS = 8.0  # scene 2 lasts about 2.5 s: the clip is trimmed


@dataclass
class Calls:
    """What render_video asked of ffmpeg and of the soundtrack mixer: per encode, the
    encoder's command and the scene commands that fed it, and the mux commands."""

    commands: list[list[str]]
    scenes: list[list[SceneRun]]
    soundtracks: list[Path]
    muxes: list[list[str]]


class Clip:
    def __init__(
        self,
        plan: ScenePlan,
        images: list[Path],
        durations: list[float],
        result: RenderResult,
        progress: list[float],
        work_dir: Path,
        calls: Calls,
    ) -> None:
        self.plan = plan
        self.images = images
        self.durations = durations
        self.result = result
        self.progress = progress
        self.work_dir = work_dir
        self.calls = calls


@dataclass(frozen=True)
class Voices:
    plan: ScenePlan
    audios: list[Path]
    durations: list[float]
    words: list[list[WordTiming]]


@dataclass(frozen=True)
class Film:
    result: RenderResult
    durations: list[float]
    calls: Calls


@contextmanager
def recording() -> Iterator[Calls]:
    """Spy on the render's ffmpeg runs and soundtrack mixes; both still do their work."""
    calls = Calls([], [], [], [])
    real_run, real_mix, real_mux = render.run_piped, render.mix_soundtrack, render.mux

    def run_piped(scenes: list[SceneRun], encoder: list[str], *rest: Any, **options: Any) -> None:
        calls.scenes.append(list(scenes))
        calls.commands.append(list(encoder))
        real_run(scenes, encoder, *rest, **options)

    def mix_soundtrack(*args: Any, **options: Any) -> Path:
        calls.soundtracks.append(real_mix(*args, **options))
        return calls.soundtracks[-1]

    def mux(picture: Path, sound: Path, out_path: Path) -> None:
        calls.muxes.append(render.build_mux_command(picture, sound, out_path))
        real_mux(picture, sound, out_path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(render, "run_piped", run_piped)
        patch.setattr(render, "mix_soundtrack", mix_soundtrack)
        patch.setattr(render, "mux", mux)
        yield calls


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory) -> Voices:
    directory = tmp_path_factory.mktemp("voices")
    plan = plan_from_text(TEXT, "ru", 12)
    assert len(plan.scenes) == 3
    audios, durations, words = [], [], []
    for index, scene in enumerate(plan.scenes):
        audios.append(directory / f"scene_{index}.wav")
        speech = LocalVoice().speak(scene.narration, "ru", audios[-1])
        durations.append(speech.seconds)
        words.append(list(speech.words or ()))
    return Voices(plan, audios, durations, words)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, voices: Voices) -> Clip:
    directory = tmp_path_factory.mktemp("render")
    images = []
    for index in range(len(voices.plan.scenes)):
        images.append(directory / f"scene_{index}.png")
        LocalVisuals().draw(voices.plan, index, SIZE, images[-1])
    progress: list[float] = []
    work_dir = directory / "work"
    with recording() as calls:
        result = render_video(
            voices.plan,
            images,
            voices.audios,
            voices.durations,
            directory / "clip.mp4",
            size=SIZE,
            fps=FPS,
            work_dir=work_dir,
            progress=progress.append,
            max_bytes=MAX_BYTES,
        )
    return Clip(voices.plan, images, voices.durations, result, progress, work_dir, calls)


def _test_clip(path: Path, seconds: float, size: tuple[int, int], rate: int) -> Path:
    """An H.264 clip of ffmpeg's moving test pattern."""
    subprocess.run(
        [
            ffmpeg_exe(),
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={size[0]}x{size[1]}:rate={rate}",
            "-t",
            str(seconds),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            str(path),
        ],
        check=True,
    )
    return path


def _render_film(directory: Path, voices: Voices, size: tuple[int, int], **options: Any) -> Film:
    """Scene 0 a still, scene 1 a short landscape clip at 24 fps, scene 2 a long one at 60."""
    still = directory / "scene_0.png"
    LocalVisuals().draw(voices.plan, 0, size, still)
    visuals = [
        still,
        _test_clip(directory / "short.mp4", SHORT_CLIP_SECONDS, (640, 360), 24),
        _test_clip(directory / "long.mp4", LONG_CLIP_SECONDS, (1280, 720), 60),
    ]
    with recording() as calls:
        result = render_video(
            voices.plan,
            visuals,
            voices.audios,
            voices.durations,
            directory / "film.mp4",
            size=size,
            fps=FPS,
            work_dir=directory / "work",
            **options,
        )
    return Film(result, voices.durations, calls)


@pytest.fixture(scope="module")
def clip_film(tmp_path_factory: pytest.TempPathFactory, voices: Voices) -> Film:
    return _render_film(tmp_path_factory.mktemp("clips"), voices, SIZE, caption_style="off")


@pytest.fixture(scope="module")
def film_1080(tmp_path_factory: pytest.TempPathFactory, voices: Voices) -> Film:
    music = MusicChoice(source="generated", seed="test")
    return _render_film(
        tmp_path_factory.mktemp("clips_1080"), voices, SIZE_1080, music=music, words=voices.words
    )


def _top_level_atoms(path: Path) -> list[tuple[str, int]]:
    """(type, byte offset) of each top-level MP4 box."""
    atoms = []
    with open(path, "rb") as mp4:
        offset = 0
        while header := mp4.read(8):
            size, kind = struct.unpack(">I4s", header)
            if size == 1:
                size = struct.unpack(">Q", mp4.read(8))[0]
            atoms.append((kind.decode("latin-1"), offset))
            if size == 0:
                break
            offset += size
            mp4.seek(offset)
    return atoms


def test_streams_size_and_duration(clip: Clip) -> None:
    info = probe(clip.result.path)
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert (info.width, info.height) == SIZE == (clip.result.width, clip.result.height)
    voice = sum(clip.durations)
    assert abs(info.duration - voice) <= 0.1 * voice
    assert clip.result.duration == pytest.approx(info.duration, abs=0.05)
    assert clip.result.size_bytes == clip.result.path.stat().st_size <= MAX_BYTES


def test_decodes_cleanly_to_the_end(clip: Clip) -> None:
    decoded = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(clip.result.path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert decoded.stderr.strip() == ""


def test_faststart_puts_moov_before_mdat(clip: Clip) -> None:
    offsets = dict(_top_level_atoms(clip.result.path))
    assert offsets["moov"] < offsets["mdat"]


def test_progress_is_reported_and_ends_at_one(clip: Clip) -> None:
    assert len(clip.progress) >= 2
    assert clip.progress == sorted(clip.progress)
    assert clip.progress[-1] == 1.0 and all(0 <= p <= 1 for p in clip.progress)


def test_thumbnail_meets_telegram_limits(clip: Clip) -> None:
    with Image.open(clip.result.thumbnail) as thumbnail:
        assert thumbnail.format == "JPEG"
        assert max(thumbnail.size) <= 320
        assert thumbnail.size[1] > thumbnail.size[0]
    assert clip.result.thumbnail.stat().st_size <= 200 * 1024


def test_subtitles_are_russian_in_the_bundled_font(clip: Clip) -> None:
    document = (clip.work_dir / "captions.ass").read_text(encoding="utf-8")
    assert f",{FONT_FAMILY}," in document
    caption_lines = [
        re.sub(r"\{[^}]*\}", "", line.split(",", 9)[9])  # without the karaoke colour tags
        for line in document.splitlines()
        if line.startswith("Dialogue:")
    ]
    assert "Ёжик живёт в лесу." in caption_lines
    caption_text = "".join(caption_lines)
    assert re.search("[а-яё]", caption_text)
    font = TTFont(str(FONTS_DIR / "DejaVuSans-Bold.ttf"))
    cmap = font.getBestCmap()
    family_names = {record.toUnicode() for record in font["name"].names if record.nameID == 1}
    assert FONT_FAMILY in family_names
    missing = {char for char in caption_text if ord(char) not in cmap}
    assert not missing, f"characters without a glyph: {missing}"


def test_bad_inputs_are_rejected(clip: Clip, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one visual, audio and duration per scene"):
        render_video(clip.plan, clip.images[:2], [], [], tmp_path / "x.mp4", work_dir=tmp_path)
    with pytest.raises(ValueError, match="even"):
        render_video(
            clip.plan,
            clip.images,
            clip.images,
            [1.0, 1.0, 1.0],
            tmp_path / "x.mp4",
            size=(721, 1280),
            work_dir=tmp_path,
        )


def test_a_clip_is_shown_by_one_scene_only(clip_film: Film, voices: Voices, tmp_path: Path) -> None:
    clip = clip_film.result.path.parent / "short.mp4"
    with pytest.raises(ValueError, match="one scene only"):
        render_video(
            voices.plan,
            [clip, clip, clip_film.result.path.parent / "scene_0.png"],
            voices.audios,
            voices.durations,
            tmp_path / "x.mp4",
            work_dir=tmp_path,
        )


def test_bitrate_budget_fits_the_limit() -> None:
    assert video_bitrate_for(30, SIZE, MAX_BYTES) == 2_500_000
    long_video = video_bitrate_for(600, SIZE, MAX_BYTES)
    assert (long_video + 96_000) * 600 / 8 <= MAX_BYTES
    with pytest.raises(ValueError, match="cannot fit"):
        video_bitrate_for(3600, SIZE, 10 * 1024 * 1024)
    full_hd = video_bitrate_for(60, SIZE_1080, MAX_BYTES)
    assert full_hd == 5_625_000  # the 720p quality rate scaled by the area
    assert (full_hd + 96_000) * 60 / 8 <= 0.92 * MAX_BYTES


def test_storyboard_is_a_numbered_grid_within_photo_limits(clip: Clip, tmp_path: Path) -> None:
    labels = [scene.on_screen_text for scene in clip.plan.scenes]
    sheet = make_storyboard(clip.images, tmp_path / "storyboard.jpg", labels=labels)
    with Image.open(sheet) as image:
        assert image.format == "JPEG"
        assert sum(image.size) <= 10_000
        assert image.width > image.height  # three portrait frames side by side
    assert sheet.stat().st_size <= 10 * 1024 * 1024
    with pytest.raises(ValueError):
        make_storyboard([], tmp_path / "empty.jpg")


def _gray_frame(video: Path, seconds: float) -> bytes:
    """The frame shown at `seconds`, as 8-bit luma."""
    return subprocess.run(
        [
            ffmpeg_exe(),
            "-v",
            "error",
            "-ss",
            f"{seconds:.3f}",
            "-i",
            str(video),
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "gray",
            "-",
        ],
        capture_output=True,
        check=True,
    ).stdout


def _difference(video: Path, first: float, second: float) -> float:
    """Mean absolute luma difference between the frames at two times."""
    a, b = _gray_frame(video, first), _gray_frame(video, second)
    assert len(a) == len(b) > 0
    return sum(abs(x - y) for x, y in zip(a, b)) / len(a)


def _video_frames(video: Path) -> int:
    counted = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(video), "-map", "0:v:0", "-c", "copy"]
        + ["-f", "null", "-progress", "pipe:1", "-"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(re.findall(r"^frame=(\d+)$", counted.stdout, re.MULTILINE)[-1])


def _filter_graph(command: list[str]) -> str:
    return command[command.index("-filter_complex") + 1]


def _scene_starts(durations: list[float]) -> list[float]:
    return scene_starts(durations, render.gap_seconds_for(durations))


def test_clip_film_lasts_as_long_as_the_soundtrack(clip_film: Film) -> None:
    info = probe(clip_film.result.path)
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert (info.width, info.height) == SIZE == (clip_film.result.width, clip_film.result.height)
    assert info.fps == FPS
    seconds = film_seconds(clip_film.durations)
    assert abs(_video_frames(clip_film.result.path) / FPS - seconds) <= 1 / FPS
    assert clip_film.result.duration == pytest.approx(seconds, abs=0.05)


def test_clips_play_and_a_short_clip_holds_its_last_frame(clip_film: Film) -> None:
    video = clip_film.result.path
    _, clip_start, long_start = _scene_starts(clip_film.durations)
    held_from, held_to = clip_start + SHORT_CLIP_SECONDS + 0.2, long_start - 0.4
    assert held_to - held_from > 1.0, "scene 1's voice is too short to show the held tail"
    assert _difference(video, clip_start + 0.3, clip_start + 0.9) > 2.0
    assert _difference(video, held_from, held_to) < 0.5
    assert _difference(video, long_start + 0.3, long_start + 1.0) > 2.0


def test_captions_off_leaves_out_the_ass_filter(clip_film: Film, clip: Clip) -> None:
    assert len(clip_film.calls.commands) == 1
    assert not re.search(r"\bass=", _filter_graph(clip_film.calls.commands[0]))
    assert re.search(r"\bass=", _filter_graph(clip.calls.commands[0]))


@pytest.mark.parametrize("name", ["clip", "clip_film", "film_1080"])
def test_render_encodes_the_mixed_soundtrack(name: str, request: pytest.FixtureRequest) -> None:
    film = request.getfixturevalue(name)
    (soundtrack,) = film.calls.soundtracks
    assert len(film.calls.muxes) == len(film.calls.commands)
    assert soundtrack.suffix == ".m4a"  # the mix's last pass writes the film's AAC
    for command in film.calls.muxes:
        inputs = [command[i + 1] for i, arg in enumerate(command) if arg == "-i"]
        assert str(soundtrack) in inputs
        assert f"{inputs.index(str(soundtrack))}:a" in command
        assert command[command.index("-codec") + 1] == "copy"
    assert audio_duration(film.result.path) == pytest.approx(audio_duration(soundtrack), abs=0.05)
    assert audio_duration(soundtrack) == pytest.approx(film_seconds(film.durations), abs=0.01)


def test_1080p_film_has_the_full_frame_and_captions(film_1080: Film) -> None:
    info = probe(film_1080.result.path)
    assert (info.width, info.height) == SIZE_1080
    assert (film_1080.result.width, film_1080.result.height) == SIZE_1080
    assert film_1080.result.size_bytes <= MAX_BYTES
    assert abs(_video_frames(film_1080.result.path) / FPS - film_seconds(film_1080.durations)) <= (
        1 / FPS
    )
    assert re.search(r"\bass=", _filter_graph(film_1080.calls.commands[0]))


def _ass_seconds(stamp: str) -> float:
    hours, minutes, seconds = stamp.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def test_the_films_karaoke_follows_the_voices_word_timings(film_1080: Film, voices: Voices) -> None:
    """Each word of the narration is highlighted from the moment espeak-ng says it (ASS keeps
    centiseconds), in the captions the 1080p film burned in."""
    captions = (film_1080.result.path.parent / "work" / "captions.ass").read_text("utf-8")
    starts = [
        _ass_seconds(line.split(",")[1])
        for line in captions.splitlines()
        if line.startswith("Dialogue:")
    ]
    spoken = [
        scene_start + word.start
        for scene_start, words in zip(
            scene_starts(voices.durations, render.gap_seconds_for(voices.durations)), voices.words
        )
        for word in words
    ]
    assert len(starts) == len(spoken) == sum(len(s.narration.split()) for s in voices.plan.scenes)
    assert max(abs(start - said) for start, said in zip(starts, spoken)) <= 0.1


def test_the_films_loudness_is_broadcast_loudness(film_1080: Film) -> None:
    """-14 LUFS integrated and a true peak under -1 dBTP, measured by ffmpeg's ebur128 on the
    delivered MP4 (voices and the generated music bed, AAC)."""
    completed = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostats", "-i", str(film_1080.result.path)]
        + ["-af", "ebur128=peak=true:framelog=quiet", "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = completed.stderr[completed.stderr.rindex("Summary:") :]
    integrated = float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1))
    true_peak = float(re.search(r"Peak:\s+(-?[\d.]+|-inf) dBFS", summary).group(1))
    assert integrated == pytest.approx(-14.0, abs=1.0)
    assert true_peak <= -1.0


@pytest.mark.parametrize("name", ["clip", "film_1080"])
def test_each_scene_is_decoded_by_its_own_short_process(
    name: str, request: pytest.FixtureRequest
) -> None:
    """Memory stays flat however many scenes a film has: scene i's process decodes only its
    own visual, and fades from the tail the previous scene's process left behind."""
    film = request.getfixturevalue(name)
    (scenes,) = film.calls.scenes
    assert len(scenes) == len(film.durations) == 3
    visuals = []
    for index, scene in enumerate(scenes):
        inputs = [scene.command[i + 1] for i, arg in enumerate(scene.command) if arg == "-i"]
        if index > 0:
            assert inputs.pop(0) == str(scenes[index - 1].tail)
        visuals += inputs
    assert len(visuals) == len(set(visuals)) == 3
    assert scenes[-1].tail is None
    (encoder,) = film.calls.commands
    assert "pipe:0" in encoder


def test_scenes_cross_fade_into_each_other(clip: Clip) -> None:
    """Half-way through each cross-fade the picture is about half the one scene's and half the
    next one's (a cut would show one of them whole)."""
    video = clip.result.path
    for start in _scene_starts(clip.durations)[1:]:
        before, middle, after = (_gray_frame(video, start + offset) for offset in (-0.4, 0, 0.4))
        change = [b - a for a, b in zip(before, after)]
        assert sum(map(abs, change)) / len(change) > 10, "the scenes look alike"
        moved = [m - a for a, m in zip(before, middle)]
        share_of_next = sum(c * m for c, m in zip(change, moved)) / sum(c * c for c in change)
        assert 0.3 < share_of_next < 0.7
