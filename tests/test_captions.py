"""Captions for real: the ASS written for each style, parsed, and drawn by libass (the bundled
ffmpeg) over black frames whose pixels are measured with Pillow."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from shared.pipeline.subtitles import (
    CAPTION_STYLES,
    SAFE_BOTTOM_SHARE,
    SAFE_TOP_SHARE,
    caption_frames,
    escape_ass_text,
    scene_starts,
    split_lines,
    text_width,
    write_captions,
    write_strip,
)
from shared.plan import Scene
from shared.providers.base import WordTiming

STORY = [
    "Байкал — самое глубокое озеро на планете. Его возраст больше двадцати миллионов лет.",
    "Зимой лёд становится прозрачным, как стекло, и сквозь него видно дно.",
    "Берегите Байкал! Это наше общее сокровище.",
]
LONG_WORDS = [
    "Высокопроизводительный компьютер показывает достопримечательности "
    "человеконенавистнического рентгеноэлектрокардиографического города.",
    "Превысокомногорассмотрительствующий "
    "Аааааааааааааааааааааааааааааааааааааааааааааааааааааааааааааааааааааааааааааааа "
    "конец.",
]
TRICKY = ["Braces {\\b1} and \\N stay {text}, not tags: a\\b."]
SIZES = [(720, 1280), (1080, 1920)]
VISIBLE = 10  # a channel above this is a caption pixel; the frame is pure black otherwise
_TAG = re.compile(r"(?<!\\)\{(.*?)(?<!\\)\}")
_SCALE = re.compile(r"\\fscy(\d+)")


def _timings(narration: str, seed: int) -> list[WordTiming]:
    """Timings shaped like a voice's: longer words take longer, sentences end with a pause."""
    clock, timings = 0.1, []
    for index, word in enumerate(narration.split()):
        length = 0.12 + 0.055 * len(word) + 0.03 * ((index * 7 + seed) % 5)
        timings.append(WordTiming(word, round(clock, 3), round(clock + length, 3)))
        clock += length + (0.45 if word[-1] in ".!?" else 0.04)
    return timings


@dataclass
class Film:
    scenes: list[Scene]
    words: list[list[WordTiming]]
    starts: list[float]

    @property
    def spoken(self) -> list[tuple[str, float, float]]:
        """Every word with its start and end on the film's clock."""
        return [
            (w.word, start + w.start, start + w.end)
            for scene_words, start in zip(self.words, self.starts)
            for w in scene_words
        ]


def _film(narrations: list[str]) -> Film:
    words = [_timings(text, seed) for seed, text in enumerate(narrations)]
    durations = [scene[-1].end + 0.15 for scene in words]
    scenes = [Scene(text, "", "", d) for text, d in zip(narrations, durations)]
    return Film(scenes, words, scene_starts(durations, 0.25))


@dataclass
class Event:
    start: float
    end: float
    text: str

    @property
    def shown(self) -> list[str]:
        """The words on screen, as escaped ASS text."""
        return _TAG.sub("", self.text).replace("\\N", " ").split()

    @property
    def highlighted(self) -> list[str]:
        """Words drawn in a colour other than white."""
        words, colour = [], "&H00FFFFFF&"
        for piece in re.split(r"((?<!\\)\{.*?(?<!\\)\})", self.text):
            tag = _TAG.fullmatch(piece)
            if tag:
                colour = m.group(1) if (m := re.search(r"\\1c(&H\w+&)", tag.group(1))) else colour
            elif colour != "&H00FFFFFF&":
                words.extend(piece.replace("\\N", " ").split())
        return words

    @property
    def rows(self) -> int:
        return self.text.count("\\N") + 1

    @property
    def scale(self) -> float:
        scales = _SCALE.findall(self.text)
        return int(scales[-1]) / 100 if scales else 1.0


def _seconds(stamp: str) -> float:
    hours, minutes, seconds = stamp.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _parse(path: Path) -> tuple[int, list[Event]]:
    """The style's font size and the events, in file order."""
    document = path.read_text(encoding="utf-8")
    font_size = int(re.search(r"^Style: Caption,[^,]+,(\d+),", document, re.M).group(1))
    events = []
    for line in document.splitlines():
        if line.startswith("Dialogue:"):
            fields = line.split(",", 9)
            events.append(Event(_seconds(fields[1]), _seconds(fields[2]), fields[9]))
    return font_size, events


def _write(
    film: Film, style: str, size: tuple[int, int], tmp_path: Path
) -> tuple[int, list[Event]]:
    path = write_captions(
        film.scenes, film.words, film.starts, size, style, tmp_path / f"{style}.ass"
    )
    assert path == tmp_path / f"{style}.ass"
    return _parse(path)


FILMS = {"story": STORY, "long_words": LONG_WORDS, "tricky": TRICKY}


@pytest.mark.parametrize("film_name", sorted(FILMS))
@pytest.mark.parametrize("style", ["karaoke", "words", "sentence"])
def test_events_follow_the_voice(style: str, film_name: str, tmp_path: Path) -> None:
    film = _film(FILMS[film_name])
    _, events = _write(film, style, (720, 1280), tmp_path)
    spoken = film.spoken
    # Every word is shown, in order; karaoke shows a line once per word it holds.
    shown = [word for event in events for word in event.shown]
    if style == "karaoke":
        assert [w for e in events for w in e.highlighted] == [
            escape_ass_text(w) for w, *_ in spoken
        ]
        firsts = [spoken[i] for i in range(len(spoken))]
    else:
        assert shown == [escape_ass_text(word) for word, *_ in spoken]
        assert all(not event.highlighted for event in events)
        counts = [len(event.shown) for event in events]
        firsts = [spoken[sum(counts[:i])] for i in range(len(events))]
    assert len(firsts) == len(events)
    for number, (event, (_, word_start, word_end)) in enumerate(zip(events, firsts)):
        assert event.start == pytest.approx(word_start, abs=0.01)
        assert event.end > event.start
        following = events[number + 1] if number + 1 < len(events) else None
        if following is not None:
            assert event.end <= following.start + 1e-9  # one caption at a time
            assert event.end >= min(word_end, following.start) - 0.01
        else:
            assert event.end >= word_end - 0.01
        if style == "karaoke" and following is not None and following.shown == event.shown:
            assert event.end == following.start  # no flicker inside a line
        assert 1 <= event.rows <= 2


def test_karaoke_highlights_the_word_being_spoken(tmp_path: Path) -> None:
    film = _film(STORY)
    _, events = _write(film, "karaoke", (1080, 1920), tmp_path)
    spoken = film.spoken
    for word, start, end in spoken:
        middle = (start + end) / 2
        (on_screen,) = [e for e in events if e.start <= middle < e.end]
        assert on_screen.highlighted == [escape_ass_text(word)]
    lengths = [len(e.shown) for e in events]
    assert all(2 <= n <= 5 for n in lengths)
    # Lines break at sentence ends: a word closing a sentence is the last of its line.
    for event in events:
        assert all(word[-1] not in ".!?" for word in event.shown[:-1])


def _is_accent(pixel: tuple[int, int, int]) -> bool:
    red, green, blue = pixel
    return red > 200 and green > 170 and blue < 110


def _caption_box(frame: Image.Image) -> tuple[int, int, int, int] | None:
    mask = frame.convert("L").point(lambda value: 255 if value > VISIBLE else 0)
    return mask.getbbox()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("style", ["karaoke", "words", "sentence"])
def test_captions_stay_in_the_safe_zone_in_two_rows(
    style: str, size: tuple[int, int], tmp_path: Path
) -> None:
    width, height = size
    film = _film([*STORY, *LONG_WORDS])
    font_size, events = _write(film, style, size, tmp_path)
    # Late in each event: the "words" pop-in has finished growing by then.
    times = [max(e.start + 0.14, (e.start + e.end) / 2) for e in events]
    times = [min(t, e.end - 0.01) for t, e in zip(times, events)]
    frames = caption_frames(tmp_path / f"{style}.ass", size, times)
    # Outline and shadow add about 0.13 of the font size around the glyphs; a third row would
    # add a whole line more.
    for event, frame in zip(events, frames):
        box = _caption_box(frame)
        assert box is not None, f"nothing drawn for {event.text!r}"
        left, top, right, bottom = box
        assert top >= SAFE_TOP_SHARE * height, event.text
        assert bottom <= (1 - SAFE_BOTTOM_SHARE) * height, event.text
        assert left > 0 and right < width, f"cut at the frame's edge: {event.text!r}"
        line = font_size * event.scale
        assert bottom - top <= 2 * line + 0.3 * font_size, event.text
        if event.rows == 1:
            assert bottom - top <= line + 0.3 * font_size, event.text
    absurd = [e for e in events if any(len(w) > 60 for w in e.shown)]
    assert absurd and all(e.scale < 0.5 and e.rows == 1 for e in absurd)


def test_karaoke_highlight_is_drawn_in_the_accent_colour(tmp_path: Path) -> None:
    film = _film(STORY[:1])
    _, events = _write(film, "karaoke", (720, 1280), tmp_path)
    first, second = events[0], events[1]
    frames = caption_frames(
        tmp_path / "karaoke.ass", (720, 1280), [first.start + 0.05, second.start + 0.05]
    )
    centres = []
    for frame in frames:
        yellow = [
            x
            for x in range(0, 720, 2)
            for y in range(128, 1024, 2)
            if _is_accent(frame.getpixel((x, y)))
        ]
        assert yellow, "no highlighted word drawn"
        centres.append(sum(yellow) / len(yellow))
    if first.shown == second.shown:
        assert centres[1] > centres[0] + 20  # the highlight moved right, to the next word


@settings(max_examples=300, deadline=None)
@given(
    words=st.lists(
        st.text(alphabet="абвгдеёжABCxyz.,!?—", min_size=1, max_size=30), min_size=1, max_size=60
    ),
    limit=st.integers(min_value=3, max_value=80),
    style=st.sampled_from([(5, 2), (2, 1), (4, 2)]),
)
def test_split_lines_keeps_every_word_whole_and_in_order(
    words: list[str], limit: int, style: tuple[int, int]
) -> None:
    max_words, min_words = style
    lines = split_lines(words, max_words=max_words, min_words=min_words, limit=limit)
    assert [word for line in lines for word in line] == words
    for line in lines:
        assert 1 <= len(line) <= max_words
        assert len(line) == 1 or len(" ".join(line)) <= limit
    if len(words) >= 2 and max_words * max(map(len, words)) + max_words - 1 <= limit:
        assert all(min_words <= len(line) for line in lines)


@settings(max_examples=100, deadline=None)
@given(
    text=st.lists(
        st.sampled_from(
            [
                "дом,",
                "озеро",
                "на",
                "планете.",
                "достопримечательности",
                "высокопроизводительный",
                "и",
                "Байкал!",
                "—",
                "a",
                "sea.",
            ]
        ),
        min_size=1,
        max_size=40,
    )
)
def test_split_lines_on_pixel_widths(text: list[str]) -> None:
    limit = 600.0
    lines = split_lines(text, measure=lambda s: text_width(s, 54), limit=limit)
    assert [word for line in lines for word in line] == text
    assert all(len(line) == 1 or text_width(" ".join(line), 54) <= limit for line in lines)


def test_off_writes_nothing(tmp_path: Path) -> None:
    film = _film(STORY)
    out = tmp_path / "off.ass"
    assert write_captions(film.scenes, film.words, film.starts, (720, 1280), "off", out) is None
    assert not out.exists()
    assert set(CAPTION_STYLES) == {"karaoke", "words", "sentence", "off"}


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    film = _film(STORY)
    with pytest.raises(ValueError, match="style"):
        write_captions(film.scenes, film.words, film.starts, (720, 1280), "neon", tmp_path / "a")
    with pytest.raises(ValueError, match="scenes"):
        write_captions(
            film.scenes, film.words[:2], film.starts, (720, 1280), "karaoke", tmp_path / "a"
        )


def test_a_scene_without_timings_has_no_captions(tmp_path: Path) -> None:
    film = _film(STORY)
    film.words[1] = []
    _, events = _write(film, "karaoke", (720, 1280), tmp_path)
    highlighted = [w for e in events for w in e.highlighted]
    expected = [w.word for i in (0, 2) for w in film.words[i]]
    assert highlighted == [escape_ass_text(w) for w in expected]


def test_strip_shows_the_highlight_moving_on_a_real_voice(tmp_path: Path) -> None:
    strip = Image.open(write_strip(tmp_path / "strip.png")).convert("RGB")
    frame_width, gap = 270, 6
    assert strip.size == (5 * frame_width + 4 * gap, 480)
    spots = []
    for index in range(5):
        frame = strip.crop((index * (frame_width + gap), 0, index * (frame_width + gap) + 270, 480))
        yellow = [
            (x, y)
            for x in range(frame_width)
            for y in range(48, 384)
            if _is_accent(frame.getpixel((x, y)))
        ]
        assert yellow, f"no highlighted word in frame {index}"
        spots.append(
            (
                round(sum(y for _, y in yellow) / len(yellow)),
                sum(x for x, _ in yellow) // len(yellow),
            )
        )
    # A different word lit in every frame, in reading order: rightwards, or down to the next row.
    for (y0, x0), (y1, x1) in zip(spots, spots[1:]):
        assert (abs(y1 - y0) <= 5 and x1 > x0 + 10) or y1 > y0 + 5, spots
