"""Small ffmpeg helpers: where the binary is, and what is inside a media file.

There is no ffprobe next to the imageio-ffmpeg binary, so `probe` parses the stream summary
that `ffmpeg -i` prints, and `audio_duration` decodes the audio when the header cannot be
trusted (MP3 durations in headers are estimates).
"""

from __future__ import annotations

import logging
import re
import subprocess
import wave
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import imageio_ffmpeg

logger = logging.getLogger(__name__)

FONTS_DIR = Path(__file__).resolve().parent / "assets" / "fonts"
FONT_PATH = FONTS_DIR / "DejaVuSans-Bold.ttf"  # covers Latin and Cyrillic; see LICENSE-DejaVu.txt

PROBE_TIMEOUT_S = 60
_DURATION_RE = re.compile(r"Duration:\s*(\d+):(\d{2}):(\d{2}(?:\.\d+)?)")
_STREAM_RE = re.compile(r"Stream #\d+:\d+.*?: (Video|Audio): (\w+)(.*)")
_SIZE_RE = re.compile(r"\b(\d{2,5})x(\d{2,5})\b")
_FPS_RE = re.compile(r"([\d.]+) fps")
_OUT_TIME_RE = re.compile(r"^out_time_us=(\d+)$", re.MULTILINE)


@dataclass(frozen=True)
class MediaInfo:
    """What `ffmpeg -i` says about a file; codec/size fields are None for a missing stream."""

    duration: float
    width: int | None
    height: int | None
    video_codec: str | None
    audio_codec: str | None
    fps: float | None


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg."""
    return imageio_ffmpeg.get_ffmpeg_exe()


def _require_file(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"media file not found: {path}")
    return path


def parse_ffmpeg_info(stderr: str) -> MediaInfo:
    """Build a `MediaInfo` from the text `ffmpeg -hide_banner -i FILE` writes to stderr."""
    duration_match = _DURATION_RE.search(stderr)
    if duration_match is None:
        raise ValueError("ffmpeg did not report a duration: not a media file?")
    hours, minutes, seconds = duration_match.groups()
    duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    width = height = None
    video_codec = audio_codec = None
    fps = None
    for kind, codec, details in _STREAM_RE.findall(stderr):
        if kind == "Video" and video_codec is None:
            video_codec = codec
            size = _SIZE_RE.search(details)
            if size:
                width, height = int(size.group(1)), int(size.group(2))
            rate = _FPS_RE.search(details)
            fps = float(rate.group(1)) if rate else None
        elif kind == "Audio" and audio_codec is None:
            audio_codec = codec
    return MediaInfo(duration, width, height, video_codec, audio_codec, fps)


def probe(path: Path) -> MediaInfo:
    """Duration, picture size, codecs and frame rate of the media file at `path`."""
    path = _require_file(path)
    completed = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=PROBE_TIMEOUT_S,
        check=False,
    )
    try:
        return parse_ffmpeg_info(completed.stderr)
    except ValueError:
        raise ValueError(f"cannot read media file {path}: {completed.stderr[-300:]}") from None


def _decoded_audio_duration(path: Path) -> float:
    completed = subprocess.run(
        [
            ffmpeg_exe(),
            "-hide_banner",
            "-nostdin",
            "-nostats",
            "-i",
            str(path),
            "-map",
            "0:a:0",
            "-f",
            "null",
            "-progress",
            "pipe:1",
            "-",
        ],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=PROBE_TIMEOUT_S,
        check=False,
    )
    times = _OUT_TIME_RE.findall(completed.stdout)
    if completed.returncode != 0 or not times:
        raise ValueError(f"cannot decode audio in {path}: {completed.stderr[-300:]}")
    return int(times[-1]) / 1_000_000


def audio_duration(path: Path) -> float:
    """Exact seconds of audio in `path`: from the header for WAV, by decoding otherwise."""
    path = _require_file(path)
    if path.suffix.lower() == ".wav":
        try:
            with wave.open(str(path), "rb") as wav:
                return wav.getnframes() / wav.getframerate()
        except (wave.Error, EOFError):
            logger.info("wav header unreadable, decoding instead path=%s", path)
    return _decoded_audio_duration(path)
