"""Burned-in captions: an ASS file timed on the real voice durations of each scene.

Each scene's narration is cut into short chunks of a few words; the chunks share that scene's
spoken time in proportion to their length, so captions follow the voice closely enough for
short clips without word-level timings.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from shared.plan import Scene
from shared.providers.base import WordTiming

logger = logging.getLogger(__name__)

FONT_FAMILY = "DejaVu Sans"  # family name inside FONTS_DIR/DejaVuSans-Bold.ttf
CAPTION_MAX_WORDS = 4
CAPTION_MAX_CHARS = 26
_FONT_SHARE_OF_HEIGHT = 0.045
_FONT_SHARE_OF_WIDTH = 0.075
_BOTTOM_MARGIN_SHARE = 0.14
# The bundled font has no glyph that could stand for a literal backslash inside ASS text
# (where "\" starts a tag), so captions show SET MINUS, which looks the same.
_BACKSLASH_LOOKALIKE = "\u2216"


def scene_starts(durations: Sequence[float], gap_seconds: float = 0.0) -> list[float]:
    """Start time of each scene when scene i lasts durations[i] plus `gap_seconds` of silence."""
    starts: list[float] = []
    clock = 0.0
    for duration in durations:
        starts.append(clock)
        clock += duration + gap_seconds
    return starts


def caption_chunks(
    narration: str, max_words: int = CAPTION_MAX_WORDS, max_chars: int = CAPTION_MAX_CHARS
) -> list[str]:
    """Narration cut into captions of at most `max_words` words and about `max_chars` chars.

    A chunk also ends after a word that closes a sentence or clause, so captions break where
    the voice pauses.
    """
    chunks: list[str] = []
    current: list[str] = []
    for word in narration.split():
        if current and (len(current) >= max_words or len(" ".join([*current, word])) > max_chars):
            chunks.append(" ".join(current))
            current = []
        current.append(word)
        if word[-1] in ".!?…;:" and len(current) >= 2:
            chunks.append(" ".join(current))
            current = []
    if current:
        chunks.append(" ".join(current))
    return chunks


def escape_ass_text(text: str) -> str:
    """Make `text` safe as the text field of an ASS Dialogue line: no tags, one line."""
    text = text.replace("\\", _BACKSLASH_LOOKALIKE)
    text = text.replace("{", "\\{").replace("}", "\\}")
    return " ".join(text.split())


def _timestamp(seconds: float) -> str:
    """ASS time: H:MM:SS.cc (centiseconds)."""
    centiseconds = max(int(round(seconds * 100)), 0)
    hours, rest = divmod(centiseconds, 360_000)
    minutes, rest = divmod(rest, 6_000)
    secs, cents = divmod(rest, 100)
    return f"{hours}:{minutes:02d}:{secs:02d}.{cents:02d}"


def font_size_for(size: tuple[int, int]) -> int:
    """Caption size in pixels: follows the video height, narrowed for portrait frames."""
    width, height = size
    return max(int(round(min(height * _FONT_SHARE_OF_HEIGHT, width * _FONT_SHARE_OF_WIDTH))), 10)


def _header(size: tuple[int, int]) -> str:
    width, height = size
    font_size = font_size_for(size)
    outline = max(round(font_size * 0.08), 2)
    margin_side = round(width * 0.06)
    margin_bottom = round(height * _BOTTOM_MARGIN_SHARE)
    style = (
        f"Style: Caption,{FONT_FAMILY},{font_size},&H00FFFFFF,&H00FFFFFF,&H00101010,&H96000000,"
        f"-1,0,0,0,100,100,0,0,1,{outline},0,2,{margin_side},{margin_side},{margin_bottom},1"
    )
    return "\n".join(
        [
            "[Script Info]",
            "ScriptType: v4.00+",
            f"PlayResX: {width}",
            f"PlayResY: {height}",
            "WrapStyle: 0",
            "ScaledBorderAndShadow: yes",
            "YCbCr Matrix: TV.709",
            "",
            "[V4+ Styles]",
            "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, "
            "BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, "
            "BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding",
            style,
            "",
            "[Events]",
            "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text",
        ]
    )


def _scene_events(narration: str, start: float, duration: float) -> list[str]:
    chunks = caption_chunks(narration)
    weights = [len(chunk) + 3 for chunk in chunks]  # +3: even short words take a beat to say
    total_weight = sum(weights)
    events = []
    clock = start
    for chunk, weight in zip(chunks, weights):
        end = clock + duration * weight / total_weight
        events.append(
            f"Dialogue: 0,{_timestamp(clock)},{_timestamp(end)},Caption,,0,0,0,,"
            f"{escape_ass_text(chunk)}"
        )
        clock = end
    return events


def build_ass(
    scenes: Sequence[Scene],
    durations: Sequence[float],
    size: tuple[int, int],
    *,
    gap_seconds: float = 0.0,
) -> str:
    """The ASS document for `scenes` spoken for `durations` seconds, each followed by a gap."""
    if len(scenes) != len(durations):
        raise ValueError(f"{len(scenes)} scenes but {len(durations)} voice durations")
    if any(duration <= 0 for duration in durations):
        raise ValueError("every voice duration must be positive")
    events: list[str] = []
    for scene, start, duration in zip(scenes, scene_starts(durations, gap_seconds), durations):
        events.extend(_scene_events(scene.narration, start, duration))
    return _header(size) + "\n" + "\n".join(events) + "\n"


def write_ass(
    scenes: Sequence[Scene],
    durations: Sequence[float],
    size: tuple[int, int],
    out_path: Path,
    *,
    gap_seconds: float = 0.0,
) -> Path:
    """Write `build_ass(...)` to `out_path` as UTF-8 and return the path."""
    out_path = Path(out_path)
    document = build_ass(scenes, durations, size, gap_seconds=gap_seconds)
    out_path.write_text(document, encoding="utf-8")
    logger.info("subtitles written scenes=%d path=%s", len(scenes), out_path)
    return out_path


def write_captions(
    scenes: Sequence[Scene],
    words: Sequence[Sequence[WordTiming]],
    starts: Sequence[float],
    size: tuple[int, int],
    style: str,
    out_path: Path,
) -> Path | None:
    """An ASS file at out_path with the captions of `style` ("karaoke", "words", "sentence",
    "off"); None for "off"."""
    if style == "off":
        return None
    events: list[str] = []
    for scene_words, start in zip(words, starts):
        index = 0
        for chunk in caption_chunks(" ".join(w.word for w in scene_words)):
            count = len(chunk.split())
            group = scene_words[index : index + count]
            index += count
            events.append(
                f"Dialogue: 0,{_timestamp(start + group[0].start)},"
                f"{_timestamp(start + group[-1].end)},Caption,,0,0,0,,{escape_ass_text(chunk)}"
            )
    out_path = Path(out_path)
    out_path.write_text(_header(size) + "\n" + "\n".join(events) + "\n", encoding="utf-8")
    logger.info("captions written style=%s scenes=%d path=%s", style, len(scenes), out_path)
    return out_path
