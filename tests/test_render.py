"""Render a real 3-scene Russian clip (espeak voice, Pillow cards) and inspect the MP4."""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path

import pytest
from fontTools.ttLib import TTFont
from PIL import Image

from shared.media import FONTS_DIR, ffmpeg_exe, probe
from shared.pipeline.render import RenderResult, render_video, video_bitrate_for
from shared.pipeline.storyboard import make_storyboard
from shared.pipeline.subtitles import FONT_FAMILY
from shared.plan import ScenePlan, plan_from_text
from shared.providers.local_visuals import LocalVisuals
from shared.providers.local_voice import LocalVoice

SIZE = (720, 1280)
MAX_BYTES = 50 * 1024 * 1024
TEXT = (
    "Ёжик живёт в лесу. Он собирает яблоки и грибы, пока не наступит зима. "
    "Щедрая осень — «лучшее» время!"
)


class Clip:
    def __init__(
        self,
        plan: ScenePlan,
        images: list[Path],
        durations: list[float],
        result: RenderResult,
        progress: list[float],
        work_dir: Path,
    ) -> None:
        self.plan = plan
        self.images = images
        self.durations = durations
        self.result = result
        self.progress = progress
        self.work_dir = work_dir


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    directory = tmp_path_factory.mktemp("render")
    plan = plan_from_text(TEXT, "ru", 12)
    assert len(plan.scenes) == 3
    images, audios, durations = [], [], []
    for index, scene in enumerate(plan.scenes):
        images.append(directory / f"scene_{index}.png")
        audios.append(directory / f"scene_{index}.wav")
        LocalVisuals().draw(plan, index, SIZE, images[-1])
        durations.append(LocalVoice().speak(scene.narration, "ru", audios[-1]).seconds)
    progress: list[float] = []
    work_dir = directory / "work"
    result = render_video(
        plan,
        images,
        audios,
        durations,
        directory / "clip.mp4",
        size=SIZE,
        fps=30,
        work_dir=work_dir,
        progress=progress.append,
        max_bytes=MAX_BYTES,
    )
    return Clip(plan, images, durations, result, progress, work_dir)


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
    assert "Ёжик живёт в лесу." in document
    caption_text = "".join(
        line.split(",", 9)[9] for line in document.splitlines() if line.startswith("Dialogue:")
    )
    assert re.search("[а-яё]", caption_text)
    font = TTFont(str(FONTS_DIR / "DejaVuSans-Bold.ttf"))
    cmap = font.getBestCmap()
    family_names = {record.toUnicode() for record in font["name"].names if record.nameID == 1}
    assert FONT_FAMILY in family_names
    missing = {char for char in caption_text if ord(char) not in cmap}
    assert not missing, f"characters without a glyph: {missing}"


def test_bad_inputs_are_rejected(clip: Clip, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one image, audio and duration per scene"):
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


def test_bitrate_budget_fits_the_limit() -> None:
    assert video_bitrate_for(30, SIZE, MAX_BYTES) == 2_500_000
    long_video = video_bitrate_for(600, SIZE, MAX_BYTES)
    assert (long_video + 96_000) * 600 / 8 <= MAX_BYTES
    with pytest.raises(ValueError, match="cannot fit"):
        video_bitrate_for(3600, SIZE, 10 * 1024 * 1024)


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
