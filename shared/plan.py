"""The scene plan: what the script step writes and every later step reads."""

from __future__ import annotations

import bisect
import re
from dataclasses import asdict, dataclass
from typing import Any, Callable

MIN_SCENES = 3
MAX_SCENES = 8
MOODS = ("calm", "warm", "upbeat", "epic", "dark")
"""The moods a script may suggest for its music (MUSIC_DIR may hold a folder per mood)."""
ELLIPSIS = "…"


@dataclass(frozen=True)
class Scene:
    narration: str
    on_screen_text: str
    visual_prompt: str
    duration: float


@dataclass(frozen=True)
class ScenePlan:
    title: str
    language: str
    scenes: tuple[Scene, ...]
    mood: str | None = None
    """One of MOODS when the script provider suggested one, for the music."""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "title": self.title,
            "language": self.language,
            "scenes": [asdict(scene) for scene in self.scenes],
        }
        if self.mood:
            data["mood"] = self.mood
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ScenePlan":
        """Build a plan from stored or provider JSON; raise ValueError naming what is wrong."""
        try:
            scenes = tuple(
                Scene(
                    narration=str(s["narration"]).strip(),
                    on_screen_text=str(s["on_screen_text"]).strip(),
                    visual_prompt=str(s["visual_prompt"]).strip(),
                    duration=float(s["duration"]),
                )
                for s in data["scenes"]
            )
            mood = str(data.get("mood") or "").strip().lower()
            plan = cls(
                title=str(data["title"]).strip(),
                language=str(data["language"]),
                scenes=scenes,
                mood=mood if mood in MOODS else None,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"scene plan is missing a field: {exc}") from None
        if not plan.title:
            raise ValueError("scene plan has an empty title")
        if not MIN_SCENES <= len(plan.scenes) <= MAX_SCENES:
            raise ValueError(
                f"scene plan needs {MIN_SCENES}-{MAX_SCENES} scenes, got {len(plan.scenes)}"
            )
        if any(not s.narration or s.duration <= 0 for s in plan.scenes):
            raise ValueError("every scene needs narration and a positive duration")
        return plan


def shorten(text: str, limit: float, measure: Callable[[str], float] = len) -> str:
    """`text` if it measures at most `limit`, else its longest prefix that still does with "…"
    added (spaces before the "…" dropped).

    `measure` is `len` for characters or a font's `getlength` for pixels; it must not shrink
    as the text grows, which lets the cut be found by bisection.
    """
    if measure(text) <= limit:
        return text
    # How many prefixes text[:0], text[:1], ... still fit with the "…"; the longest is kept.
    fitting = bisect.bisect_left(
        range(len(text)), True, key=lambda end: measure(text[:end] + ELLIPSIS) > limit
    )
    return text[: max(fitting - 1, 0)].rstrip() + ELLIPSIS


# --- Building a plan from plain text (the local script provider and edited scripts) ---

_MAX_SCENE_WORDS = 30
_MIN_CLAUSE_WORDS = 3
_ON_SCREEN_MAX_WORDS = 6
_ON_SCREEN_MAX_CHARS = 48
_TITLE_MAX_WORDS = 6
_TITLE_MAX_CHARS = 60
_MIN_WEIGHT_SHARE = 0.5

_SENTENCE_END_RE = re.compile(r"(?<=[.!?…])[\"'»”)\]]*\s+|\n+")
_CLAUSE_BREAK_RE = re.compile(r"(?<=[,;:])\s+|\s+[—–-]\s+")
_EDGE_PUNCTUATION = " \t\n.,;:!?…—–-\"'«»“”„()[]"
_NUMBERED_LINE_RE = re.compile(
    r"^\s*(?:(?:сцена|scene)\s*(?P<scene_no>\d{1,2})\s*[.):—–-]?\s*"
    r"|(?P<line_no>\d{1,2})\s*[.)]\s+|(?P<dash_no>\d{1,2})\s*[:—–-]\s+)(?P<body>.*)$",
    re.IGNORECASE,
)

_PHRASES = {
    "ru": {
        "intro": "Коротко о главном: {topic}.",
        "closing": "Вот и вся история: {topic}. Спасибо за просмотр!",
        "closing_on_screen": "Спасибо за просмотр!",
        "visual": "Кинематографичная иллюстрация: {subject}",
        "fallback_title": "Видео",
    },
    "en": {
        "intro": "In short: {topic}.",
        "closing": "That's the story: {topic}. Thanks for watching!",
        "closing_on_screen": "Thanks for watching!",
        "visual": "Cinematic illustration: {subject}",
        "fallback_title": "Video",
    },
}


def _phrases(language: str) -> dict[str, str]:
    """Template phrases for `language`; English for any language we have no phrases for."""
    return _PHRASES.get(language, _PHRASES["en"])


def _normalize(text: str) -> str:
    """Collapse runs of spaces inside lines; keep line breaks (they end sentences)."""
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def _split_sentences(text: str) -> list[str]:
    return [part.strip() for part in _SENTENCE_END_RE.split(text) if part and part.strip()]


def _word_count(text: str) -> int:
    return len(text.split())


def _split_piece(piece: str) -> list[str] | None:
    """Split one piece in two at the clause break nearest its middle, or mid-word-list if it is
    very long; None if no split keeps both halves meaningful."""
    words_total = _word_count(piece)
    best: tuple[int, int, int] | None = None
    for match in _CLAUSE_BREAK_RE.finditer(piece):
        left_words = _word_count(piece[: match.start()])
        if min(left_words, words_total - left_words) < _MIN_CLAUSE_WORDS:
            continue
        distance = abs(words_total - 2 * left_words)
        if best is None or distance < best[0]:
            best = (distance, match.start(), match.end())
    if best is not None:
        _, cut_start, cut_end = best
        return [piece[:cut_start].strip(), piece[cut_end:].strip()]
    if words_total > _MAX_SCENE_WORDS:
        words = piece.split()
        half = words_total // 2
        return [" ".join(words[:half]), " ".join(words[half:])]
    return None


def _has_words(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def _attach_wordless(pieces: list[str]) -> list[str]:
    """Glue pieces without letters or digits ("...", "!!") to a neighbour: never a scene alone."""
    kept: list[str] = []
    pending = ""
    for piece in pieces:
        if not _has_words(piece):
            if kept:
                kept[-1] = f"{kept[-1]} {piece}"
            else:
                pending = f"{pending} {piece}".strip()
            continue
        kept.append(f"{pending} {piece}".strip())
        pending = ""
    return kept or [pending]


def _split_until_enough(pieces: list[str]) -> list[str]:
    """Split the longest pieces while there are too few scenes or a scene is too long."""
    pieces = list(pieces)
    unsplittable: set[str] = set()
    while True:
        candidates = [p for p in pieces if p not in unsplittable]
        if not candidates:
            return pieces
        longest = max(candidates, key=_word_count)
        too_few = len(pieces) < MIN_SCENES
        too_long = _word_count(longest) > _MAX_SCENE_WORDS
        if not (too_few or too_long) or len(pieces) >= MAX_SCENES * 4:
            return pieces
        halves = _split_piece(longest)
        if halves is None:
            unsplittable.add(longest)
            continue
        index = pieces.index(longest)
        pieces[index : index + 1] = halves


def _merge_until_fits(pieces: list[str]) -> list[str]:
    """Merge the adjacent pair with the shortest combined text until at most MAX_SCENES remain."""
    pieces = list(pieces)
    while len(pieces) > MAX_SCENES:
        index = min(range(len(pieces) - 1), key=lambda i: len(pieces[i]) + len(pieces[i + 1]))
        pieces[index : index + 2] = [f"{pieces[index]} {pieces[index + 1]}"]
    return pieces


def _strip_edges(text: str) -> str:
    return text.strip(_EDGE_PUNCTUATION)


def _short_phrase(text: str, max_words: int, max_chars: int) -> str:
    """The first words of `text` (its first clause when that is short enough), cut on a word."""
    first_clause = _strip_edges(re.split(r"[,;:—–(]|\s-\s", text, maxsplit=1)[0])
    source = first_clause if _word_count(first_clause) >= 2 else _strip_edges(text)
    words = source.split()
    phrase = " ".join(words[:max_words])
    truncated = len(words) > max_words
    if len(phrase) > max_chars:
        cut = phrase[:max_chars]
        phrase = cut.rsplit(" ", 1)[0] if " " in cut else cut
        truncated = True
    phrase = _strip_edges(phrase) or phrase.strip()
    return f"{phrase}{ELLIPSIS}" if truncated and phrase else phrase


def _title_from(text: str, language: str) -> str:
    sentences = _split_sentences(text)
    first_sentence = sentences[0] if sentences else text
    title = _strip_edges(_short_phrase(first_sentence, _TITLE_MAX_WORDS, _TITLE_MAX_CHARS - 1))
    if not _has_words(title):
        return _phrases(language)["fallback_title"]
    return title[:1].upper() + title[1:]


@dataclass(frozen=True)
class _SceneDraft:
    narration: str
    on_screen_text: str
    subject: str  # what the picture should show


def _draft(narration: str) -> _SceneDraft:
    on_screen = _short_phrase(narration, _ON_SCREEN_MAX_WORDS, _ON_SCREEN_MAX_CHARS)
    return _SceneDraft(narration, on_screen, _strip_edges(narration))


def _frame_with_intro_and_closing(
    drafts: list[_SceneDraft], title: str, language: str
) -> list[_SceneDraft]:
    """Too little text for three scenes: frame it with a closing, then an intro, about its title."""
    phrases = _phrases(language)
    drafts = list(drafts)
    if len(drafts) < MIN_SCENES:
        closing = phrases["closing"].format(topic=title)
        drafts.append(_SceneDraft(closing, phrases["closing_on_screen"], title))
    if len(drafts) < MIN_SCENES:
        headline = _short_phrase(title, _ON_SCREEN_MAX_WORDS, _ON_SCREEN_MAX_CHARS)
        drafts.insert(0, _SceneDraft(phrases["intro"].format(topic=title), headline, title))
    return drafts


def _durations(narrations: list[str], seconds: float) -> list[float]:
    """Seconds per scene, proportional to narration length, with a floor so no scene flashes by."""
    lengths = [len(n) for n in narrations]
    floor = _MIN_WEIGHT_SHARE * sum(lengths) / len(lengths)
    weights = [max(length, floor, 1.0) for length in lengths]
    total = sum(weights)
    return [max(round(seconds * w / total, 2), 0.01) for w in weights]


def _plan_from_pieces(pieces: list[str], language: str, seconds: float, title: str) -> ScenePlan:
    pieces = _merge_until_fits(_split_until_enough(_attach_wordless(pieces)))
    drafts = _frame_with_intro_and_closing([_draft(p) for p in pieces], title, language)
    visual_template = _phrases(language)["visual"]
    durations = _durations([d.narration for d in drafts], seconds)
    scenes = tuple(
        Scene(
            narration=draft.narration,
            on_screen_text=draft.on_screen_text or title,
            visual_prompt=visual_template.format(subject=draft.subject or title),
            duration=duration,
        )
        for draft, duration in zip(drafts, durations)
    )
    return ScenePlan(title=title, language=language, scenes=scenes)


def _checked_text(text: str, seconds: float) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the text for a scene plan is empty")
    if seconds <= 0:
        raise ValueError(f"the video length must be positive, got {seconds} s")
    return _normalize(text)


def plan_from_text(text: str, language: str, seconds: int, title: str | None = None) -> ScenePlan:
    """A deterministic plan whose scenes are the sentences of `text`.

    Long sentences are split at clause breaks and short ones merged so there are 3-8 scenes;
    text too short for three scenes gets an intro and a closing built from its title.
    Scene durations follow narration length and add up to about `seconds`.
    """
    normalized = _checked_text(text, seconds)
    given_title = (title or "").strip()[:_TITLE_MAX_CHARS].strip()
    plan_title = given_title or _title_from(normalized, language)
    return _plan_from_pieces(_split_sentences(normalized), language, seconds, plan_title)


def _numbered_scenes(lines: list[str]) -> tuple[str, list[str]] | None:
    """(title line or "", scene texts) when the lines look like a numbered script, else None.

    Unnumbered lines before the first numbered one: the first is the title, any others open
    the first scene; unnumbered lines after a numbered one continue that scene.
    """
    leading: list[str] = []
    scenes: list[list[str]] = []
    for line in lines:
        match = _NUMBERED_LINE_RE.match(line)
        if match:
            scenes.append([match.group("body").strip()])
        elif scenes:
            scenes[-1].append(line.strip())
        else:
            leading.append(line.strip())
    scene_texts = [" ".join(part for part in parts if part) for parts in scenes]
    scene_texts = [text for text in scene_texts if _has_words(text)]
    if not scene_texts:
        return None
    title = leading[0] if leading else ""
    if leading[1:]:
        scene_texts[0] = " ".join([*leading[1:], scene_texts[0]])
    return title, scene_texts


def parse_edited_script(text: str, language: str, seconds: int) -> ScenePlan:
    """A plan from a script the user corrected.

    Numbered lines ("1. …", "2) …", "Сцена 3: …") are one scene each, an unnumbered first
    line is the title, and unnumbered lines after a scene continue it. Text that does not look
    numbered is treated as plain text (see `plan_from_text`).
    """
    normalized = _checked_text(text, seconds)
    numbered = _numbered_scenes(normalized.split("\n"))
    if numbered is None:
        return plan_from_text(normalized, language, seconds)
    title_line, scene_texts = numbered
    title = _strip_edges(_strip_edges(title_line)[:_TITLE_MAX_CHARS])
    if not _has_words(title):
        title = _title_from(scene_texts[0], language)
    return _plan_from_pieces(scene_texts, language, seconds, title)
