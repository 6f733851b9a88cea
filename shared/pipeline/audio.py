"""The film's soundtrack: the voices on their timeline, a music bed under them, normalised."""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from shared.errors import PermanentError
from shared.media import ffmpeg_exe

logger = logging.getLogger(__name__)

SAMPLE_RATE = 44_100  # the renderer's AUDIO_RATE, so the final encode does not resample
FFMPEG_TIMEOUT_S = 300


class SoundtrackError(PermanentError):
    """ffmpeg could not make the soundtrack from these voices."""


@dataclass(frozen=True)
class MusicChoice:
    source: str  # "generated" | "dir" | "off"  (the MUSIC setting)
    seed: str  # picks the key and tempo (generated) or the track (dir)
    music_dir: Path | None = None  # MUSIC_DIR
    mood: str | None = None  # a mood the script provider may suggest: calm, upbeat, dark, epic


def _run(args: list[str]) -> None:
    completed = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", *args],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=FFMPEG_TIMEOUT_S,
        check=False,
    )
    if completed.returncode != 0:
        raise SoundtrackError(f"ffmpeg exited {completed.returncode}: {completed.stderr[-1500:]}")


def mix_soundtrack(
    voices: Sequence[Path],
    durations: Sequence[float],
    gap: float,
    out_path: Path,
    *,
    music: MusicChoice | None,
    work_dir: Path,
) -> Path:
    """The film's finished soundtrack as a WAV at out_path: each voice padded with silence to
    its duration + gap, concatenated; the music bed under it; normalised."""
    if len(voices) != len(durations) or not voices:
        raise ValueError(f"need one duration per voice: {len(voices)} voices, {len(durations)}")
    inputs: list[str] = []
    parts: list[str] = []
    for index, (voice, duration) in enumerate(zip(voices, durations)):
        seconds = duration + gap
        inputs += ["-i", str(voice)]
        parts.append(
            f"[{index}:a:0]aresample={SAMPLE_RATE},aformat=sample_fmts=fltp:channel_layouts=mono,"
            f"apad=whole_dur={seconds:.4f},atrim=end={seconds:.4f},asetpts=N/SR/TB[v{index}]"
        )
    labels = "".join(f"[v{i}]" for i in range(len(voices)))
    graph = ";".join([*parts, f"{labels}concat=n={len(voices)}:v=0:a=1[out]"])
    _run(
        [
            *inputs,
            "-filter_complex",
            graph,
            "-map",
            "[out]",
            "-c:a",
            "pcm_s16le",
            "-y",
            str(out_path),
        ]
    )
    return Path(out_path)
