"""Burned-in captions: an ASS file timed on the voice's word timings, for libass to draw.

Styles (CAPTION_STYLES):
- "karaoke": a line of 2-5 words; the word being spoken is drawn in the accent colour. One
  Dialogue per word, each ending exactly when the next word starts, so the line never blinks.
- "words": one or two words at a time, each popping in (a quick fade and grow).
- "sentence": phrases of a few words, shown while they are spoken.
- "off": no captions.

Layout is decided here, not by libass: WrapStyle 2 turns libass's own wrapping off, every line
is measured with the bundled font and gets at most one explicit break (two rows), and a line
still too wide (a single enormous word) is scaled down with \\fscx/\\fscy instead of being cut.
The bottom of the text sits above the bottom SAFE_BOTTOM_SHARE of the frame and the top below
SAFE_TOP_SHARE, where the short-video apps draw their buttons and titles.
"""

from __future__ import annotations

import argparse
import logging
import math
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

from PIL import Image, ImageFont

from shared.config import CAPTION_STYLES
from shared.media import FONT_PATH, FONTS_DIR, ffmpeg_exe
from shared.plan import Scene
from shared.providers.base import WordTiming

logger = logging.getLogger(__name__)

FONT_FAMILY = "DejaVu Sans"  # family name inside FONTS_DIR/DejaVuSans-Bold.ttf
SAFE_TOP_SHARE = 0.10
SAFE_BOTTOM_SHARE = 0.20
HOLD_SECONDS = 0.5  # a line stays up this long after its last word, unless the next one starts
_FONT_SHARE_OF_HEIGHT = 0.045
_FONT_SHARE_OF_WIDTH = 0.075
_WORDS_FONT_FACTOR = 1.3  # one or two words at a time can be bigger
_SIDE_MARGIN_SHARE = 0.07
_SAFE_PADDING_SHARE = 0.015  # extra room between the text's outline and the safe-zone edge
_OUTLINE_SHARE = 0.09  # of the font size
_SHADOW_SHARE = 0.04
_WHITE = "&H00FFFFFF"
_ACCENT = "&H0033D4FF"  # ASS colours are &HAABBGGRR: this is a warm yellow, #FFD433
_OUTLINE = "&H00101010"
_SHADOW = "&H80000000"
_SENTENCE_END = ".!?…"
_CLAUSE_END = _SENTENCE_END + ",;:—–"
# The bundled font has no glyph that could stand for a literal backslash inside ASS text
# (where "\" starts a tag), so captions show SET MINUS, which looks the same.
_BACKSLASH_LOOKALIKE = "\u2216"

Measure = Callable[[str], float]


@dataclass(frozen=True)
class _StyleRule:
    max_words: int
    min_words: int
    font_factor: float
    rows_per_line: float  # how many rows' width a line may take before it is cut shorter


_RULES = {
    "karaoke": _StyleRule(max_words=5, min_words=2, font_factor=1.0, rows_per_line=1.6),
    "words": _StyleRule(max_words=2, min_words=1, font_factor=_WORDS_FONT_FACTOR, rows_per_line=1),
    "sentence": _StyleRule(max_words=4, min_words=2, font_factor=1.0, rows_per_line=1.6),
}


def scene_starts(durations: Sequence[float], gap_seconds: float = 0.0) -> list[float]:
    """Start time of each scene when scene i lasts durations[i] plus `gap_seconds` of silence."""
    starts: list[float] = []
    clock = 0.0
    for duration in durations:
        starts.append(clock)
        clock += duration + gap_seconds
    return starts


def escape_ass_text(text: str) -> str:
    """Make `text` safe as the text field of an ASS Dialogue line: no tags, one line."""
    text = text.replace("\\", _BACKSLASH_LOOKALIKE)
    text = text.replace("{", "\\{").replace("}", "\\}")
    return " ".join(text.split())


def font_size_for(size: tuple[int, int]) -> int:
    """Caption size in pixels: follows the video height, narrowed for portrait frames."""
    width, height = size
    return max(int(round(min(height * _FONT_SHARE_OF_HEIGHT, width * _FONT_SHARE_OF_WIDTH))), 10)


def split_lines(
    words: Sequence[str],
    *,
    max_words: int = 5,
    min_words: int = 2,
    measure: Measure = len,
    limit: float = math.inf,
) -> list[list[str]]:
    """`words` cut into caption lines of at most `max_words` words measuring at most `limit`.

    Lines end at clause and sentence ends where possible; a clause longer than a line is cut
    into lines of even word counts; a line shorter than `min_words` joins a neighbour (or
    borrows one of its words) when the result still fits. A single word wider than `limit`
    gets a line of its own: words are never split.
    """
    lines: list[list[str]] = []
    for clause in _clauses(words):
        lines.extend(_cut_clause(clause, max_words, measure, limit))
    return _join_short_lines(lines, max_words, min_words, measure, limit)


def _clauses(words: Sequence[str]) -> list[list[str]]:
    clauses: list[list[str]] = [[]]
    for word in words:
        clauses[-1].append(word)
        if word[-1] in _CLAUSE_END:
            clauses.append([])
    return [clause for clause in clauses if clause]


def _fits(line: Sequence[str], max_words: int, measure: Measure, limit: float) -> bool:
    return len(line) == 1 or (len(line) <= max_words and measure(" ".join(line)) <= limit)


def _cut_clause(
    clause: list[str], max_words: int, measure: Measure, limit: float
) -> list[list[str]]:
    greedy: list[list[str]] = []
    for word in clause:
        if greedy and _fits([*greedy[-1], word], max_words, measure, limit):
            greedy[-1].append(word)
        else:
            greedy.append([word])
    # The same number of lines with word counts as even as possible reads better (4+3, not 5+2).
    count = len(greedy)
    bounds = [round(i * len(clause) / count) for i in range(count + 1)]
    even = [clause[a:b] for a, b in zip(bounds, bounds[1:])]
    if all(_fits(line, max_words, measure, limit) for line in even):
        return even
    return greedy


def _join_short_lines(
    lines: list[list[str]], max_words: int, min_words: int, measure: Measure, limit: float
) -> list[list[str]]:
    index = 0
    while index < len(lines):
        line = lines[index]
        if len(line) >= min_words or len(lines) == 1:
            index += 1
            continue
        before = lines[index - 1] if index > 0 else None
        after = lines[index + 1] if index + 1 < len(lines) else None
        # Prefer the neighbour in the same sentence.
        neighbours = [(-1, before), (1, after)]
        if before is not None and before[-1][-1] in _SENTENCE_END:
            neighbours.reverse()
        for side, other in neighbours:
            if other is None:
                continue
            first = index + min(side, 0)
            joined = [*other, *line] if side < 0 else [*line, *other]
            if _fits(joined, max_words, measure, limit):
                lines[first : first + 2] = [joined]
                index = first + 1
                break
        else:
            for side, other in neighbours:
                if other is None or len(other) <= min_words:
                    continue
                borrowed = [other[-1], *line] if side < 0 else [*line, other[0]]
                if _fits(borrowed, max_words, measure, limit):
                    lines[index] = borrowed
                    lines[index + side] = other[:-1] if side < 0 else other[1:]
                    break
            index += 1
    return lines


@lru_cache(maxsize=1)
def _reference_font() -> tuple[ImageFont.FreeTypeFont, float]:
    """The bundled font at a large size, and its pixel scale per point of ASS font size.

    libass sizes a font so that ascent + descent equal the ASS font size (Pillow sizes the em),
    so widths measured with Pillow are scaled by size / (ascent + descent)."""
    font = ImageFont.truetype(str(FONT_PATH), 1000)
    ascent, descent = font.getmetrics()
    return font, 1.0 / (ascent + descent)


def text_width(text: str, font_size: float) -> float:
    """Width in pixels libass gives `text` (plain, unescaped) in the bundled font."""
    font, per_point = _reference_font()
    return font.getlength(text.replace("\\", _BACKSLASH_LOOKALIKE)) * per_point * font_size


@dataclass(frozen=True)
class _Geometry:
    width: int
    height: int
    font_size: int
    outline: int
    shadow: int
    margin_side: int
    margin_bottom: int

    @property
    def row_width(self) -> float:
        return self.width - 2 * self.margin_side - 2 * self.outline


def _geometry(size: tuple[int, int], style: str) -> _Geometry:
    width, height = size
    font_size = round(font_size_for(size) * _RULES[style].font_factor)
    outline = max(round(font_size * _OUTLINE_SHARE), 2)
    shadow = max(round(font_size * _SHADOW_SHARE), 1)
    margin_bottom = math.ceil(height * (SAFE_BOTTOM_SHARE + _SAFE_PADDING_SHARE) + outline + shadow)
    return _Geometry(
        width, height, font_size, outline, shadow, round(width * _SIDE_MARGIN_SHARE), margin_bottom
    )


def _layout(line: Sequence[str], geometry: _Geometry) -> tuple[int | None, int]:
    """Where the line breaks into a second row (a word index, or None) and its scale in %."""

    def width(words: Sequence[str]) -> float:
        return text_width(" ".join(words), geometry.font_size)

    limit = geometry.row_width
    widest = width(line)
    split = None
    if widest > limit and len(line) > 1:
        split = min(range(1, len(line)), key=lambda i: max(width(line[:i]), width(line[i:])))
        widest = max(width(line[:split]), width(line[split:]))
    scale = 100 if widest <= limit else math.floor(100 * limit / widest)
    return split, scale


def _header(geometry: _Geometry) -> str:
    style = (
        f"Style: Caption,{FONT_FAMILY},{geometry.font_size},{_WHITE},{_WHITE},{_OUTLINE},"
        f"{_SHADOW},-1,0,0,0,100,100,0,0,1,{geometry.outline},{geometry.shadow},2,"
        f"{geometry.margin_side},{geometry.margin_side},{geometry.margin_bottom},1"
    )
    return "\n".join(
        [
            "[Script Info]",
            "ScriptType: v4.00+",
            f"PlayResX: {geometry.width}",
            f"PlayResY: {geometry.height}",
            "WrapStyle: 2",
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


def _timestamp(centiseconds: int) -> str:
    """ASS time: H:MM:SS.cc."""
    hours, rest = divmod(max(centiseconds, 0), 360_000)
    minutes, rest = divmod(rest, 6_000)
    secs, cents = divmod(rest, 100)
    return f"{hours}:{minutes:02d}:{secs:02d}.{cents:02d}"


@dataclass(frozen=True)
class _Word:
    text: str
    start: int  # centiseconds in the film
    end: int


def _film_words(
    words: Sequence[Sequence[WordTiming]], starts: Sequence[float]
) -> list[list[_Word]]:
    """Each scene's words on the film's clock in centiseconds, starts strictly increasing so
    every word gets an event of its own."""
    scenes: list[list[_Word]] = []
    previous = -1
    for scene_words, scene_start in zip(words, starts):
        scene: list[_Word] = []
        for timing in scene_words:
            text = " ".join(timing.word.split())
            if not text:
                continue
            start = max(round((scene_start + timing.start) * 100), previous + 1)
            end = max(round((scene_start + timing.end) * 100), start + 1)
            scene.append(_Word(text, start, end))
            previous = start
        scenes.append(scene)
    return scenes


def _line_text(
    line: Sequence[_Word], split: int | None, scale: int, highlight: int | None, style: str
) -> str:
    parts = []
    for index, word in enumerate(line):
        text = escape_ass_text(word.text)
        if index == highlight:
            text = f"{{\\1c{_ACCENT}&}}{text}{{\\1c{_WHITE}&}}"
        parts.append(("\\N" if index == split else " ") + text if index else text)
    tags = f"\\fscx{scale}\\fscy{scale}" if scale != 100 else ""
    if style == "words":
        small = round(scale * 0.8)
        tags = f"\\fad(80,0)\\fscx{small}\\fscy{small}\\t(0,120,\\fscx{scale}\\fscy{scale})"
    return (f"{{{tags}}}" if tags else "") + "".join(parts)


def _events(scenes: list[list[_Word]], style: str, geometry: _Geometry) -> list[str]:
    rule = _RULES[style]
    lines: list[list[_Word]] = []
    for scene in scenes:
        remaining = iter(scene)
        for texts in split_lines(
            [word.text for word in scene],
            max_words=rule.max_words,
            min_words=rule.min_words,
            measure=lambda text: text_width(text, geometry.font_size),
            limit=geometry.row_width * rule.rows_per_line,
        ):
            lines.append([next(remaining) for _ in texts])
    # (start, end, text) in centiseconds; an event ends when the next begins, or HOLD_SECONDS
    # after its last word, whichever is first.
    spans: list[tuple[int, int, str]] = []
    for number, line in enumerate(lines):
        following = lines[number + 1][0].start if number + 1 < len(lines) else None
        line_end = line[-1].end + round(HOLD_SECONDS * 100)
        if following is not None:
            line_end = min(line_end, following)
        line_end = max(line_end, line[-1].start + 1)
        split, scale = _layout([word.text for word in line], geometry)
        if style == "karaoke":
            for index, word in enumerate(line):
                end = line[index + 1].start if index + 1 < len(line) else line_end
                spans.append((word.start, end, _line_text(line, split, scale, index, style)))
        else:
            spans.append((line[0].start, line_end, _line_text(line, split, scale, None, style)))
    return [
        f"Dialogue: 0,{_timestamp(start)},{_timestamp(end)},Caption,,0,0,0,,{text}"
        for start, end, text in spans
    ]


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
    if style not in CAPTION_STYLES:
        raise ValueError(f"unknown caption style {style!r}; use one of {CAPTION_STYLES}")
    if not len(scenes) == len(words) == len(starts):
        raise ValueError(
            f"{len(scenes)} scenes but {len(words)} word timings and {len(starts)} starts"
        )
    if style == "off":
        return None
    for index, scene_words in enumerate(words):
        if not scene_words:
            logger.warning("scene has no word timings, no captions for it scene=%d", index)
    geometry = _geometry(size, style)
    events = _events(_film_words(words, starts), style, geometry)
    out_path = Path(out_path)
    out_path.write_text(_header(geometry) + "\n" + "\n".join(events) + "\n", encoding="utf-8")
    logger.info(
        "captions written style=%s scenes=%d events=%d path=%s",
        style,
        len(scenes),
        len(events),
        out_path,
    )
    return out_path


def caption_frames(
    ass_path: Path,
    size: tuple[int, int],
    times: Sequence[float],
    background: Path | None = None,
) -> list[Image.Image]:
    """The frames at `times` seconds (to the centisecond) of `ass_path` drawn by libass in the
    bundled font, as the renderer draws it, over black or over the picture `background`."""
    width, height = size
    frames = sorted({round(t * 100) for t in times})
    seconds = frames[-1] / 100 + 0.1
    if background is None:
        source = ["-f", "lavfi", "-i", f"color=black:s={width}x{height}:r=100:d={seconds:.2f}"]
    else:
        source = ["-loop", "1", "-framerate", "100", "-t", f"{seconds:.2f}", "-i", str(background)]
    picks = "+".join(f"eq(n,{n})" for n in frames)
    graph = (
        f"[0:v]scale={width}:{height},setsar=1,select='{picks}',format=rgb24,"
        f"ass=filename='{Path(ass_path).resolve()}':fontsdir='{FONTS_DIR}'"
    )
    with tempfile.TemporaryDirectory() as tmp:
        pattern = str(Path(tmp) / "frame_%04d.png")
        command = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", *source]
        command += ["-filter_complex", graph, "-fps_mode", "passthrough", pattern]
        subprocess.run(command, check=True, capture_output=True, timeout=120)
        by_frame = dict(zip(frames, sorted(Path(tmp).glob("frame_*.png"))))
        images = {n: Image.open(path).convert("RGB") for n, path in by_frame.items()}
    return [images[round(t * 100)] for t in times]


def write_strip(
    out_path: Path,
    narration: str = "Здесь вода чиста как стекло.",
    frame_width: int = 270,
    count: int = 5,
    step: float = 1 / 3,
) -> Path:
    """A picture of `count` frames, `step` seconds apart, of a Russian karaoke caption spoken by
    the local espeak-ng voice over a local card, side by side: the highlight should move from
    word to word. Uses the voice's word timings, or an estimate if it gives none."""
    from shared.pipeline.timings import word_timings
    from shared.plan import plan_from_text
    from shared.providers.local_visuals import LocalVisuals
    from shared.providers.local_voice import LocalVoice

    size = (720, 1280)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        speech = LocalVoice().speak(narration, "ru", work / "voice.wav")
        words = word_timings(speech, narration, work / "voice.wav", "ru")
        plan = plan_from_text(narration, "ru", 15)
        LocalVisuals(show_words=False).draw(plan, 0, size, work / "card.png")
        scene = Scene(narration, "", "", speech.seconds)
        write_captions([scene], [words], [0.0], size, "karaoke", work / "captions.ass")
        times = [words[0].start + 0.05 + step * i for i in range(count)]
        frames = caption_frames(work / "captions.ass", size, times, background=work / "card.png")
    frame_height = round(frame_width * size[1] / size[0])
    gap = 6
    strip = Image.new("RGB", (count * frame_width + (count - 1) * gap, frame_height), "white")
    for index, frame in enumerate(frames):
        small = frame.resize((frame_width, frame_height), Image.Resampling.LANCZOS)
        strip.paste(small, (index * (frame_width + gap), 0))
    out_path = Path(out_path)
    strip.save(out_path, optimize=True)
    logger.info(
        "caption strip written timings=%s times=%s path=%s",
        "voice" if speech.words else "estimated",
        ",".join(f"{t:.2f}" for t in times),
        out_path,
    )
    return out_path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Caption previews.")
    parser.add_argument("--strip", type=Path, required=True, help="write the karaoke strip PNG")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    write_strip(args.strip)


if __name__ == "__main__":
    main()
