"""When each word of a scene's narration is spoken, for captions that follow the voice.

Three sources, best first: the voice's own timings (espeak-ng reports them), the word timestamps
of a transcription model that heard the audio (whisper-1), mapped back onto the narration's own
words, and an estimate from syllables, punctuation and the pauses ffmpeg finds in the audio.
Whatever the source, there is one timing per whitespace-separated word of the narration, in
order, each ending where the next begins. The media step stores them as `words/NN.json` next to
the voice, so a re-render never computes them again.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import re
import subprocess
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

from shared.errors import PermanentError, TransientError
from shared.media import ffmpeg_exe
from shared.providers.base import Speech, Transcriber, WordTiming
from shared.words import settle, syllables

log = logging.getLogger(__name__)

# What a pause after a word costs, in syllables of speech, by the punctuation that ends it.
CLAUSE_PAUSE = 1.5
SENTENCE_PAUSE = 3.0
SENTENCE_ENDS = frozenset(".!?…")
CLAUSE_ENDS = frozenset(",;:—–-")
CLOSING_MARKS = "\"'»”’)]"
SILENCE_NOISE = "-35dB"
SILENCE_MIN_S = 0.1
SILENCEDETECT_TIMEOUT_S = 60
# Seconds a pause found at a word boundary without punctuation costs the alignment, and what
# leaving a found pause unused costs: a voice pauses at punctuation, rarely elsewhere.
UNPUNCTUATED_PAUSE_COST = 0.6
UNUSED_PAUSE_COST = 1.0
# Below this share of the narration's words found in a transcript, the transcript is of
# something else (or nothing), and the estimate is better.
MIN_HEARD_SHARE = 1 / 3
_EDGE_S = 0.02
_SILENCE_RE = re.compile(r"silence_(start|end): (-?\d+(?:\.\d+)?)")


@runtime_checkable
class WordTranscriber(Protocol):
    """A transcriber that also tells when each heard word is said (OpenAITranscriber)."""

    def words(self, audio_path: Path, language: str) -> list[WordTiming]: ...


def word_timings(
    speech: Speech,
    narration: str,
    audio: Path,
    language: str,
    transcriber: Transcriber | None = None,
) -> list[WordTiming]:
    """One timing per word of `narration`: the speech's own when the provider gave them, else
    those a word-timing transcriber hears in `audio`, else an estimate. Never raises for a
    failed alignment: captions must not fail a job."""
    words, audio = narration.split(), Path(audio)
    if speech.words:
        if [timing.word for timing in speech.words] == words:
            return list(speech.words)
        return map_words(words, speech.words, speech.seconds)
    if isinstance(transcriber, WordTranscriber):
        heard = _heard(transcriber, audio, language)
        _, found = _matched_starts(words, heard)
        content = sum(1 for word in words if _key(word))
        if heard and found >= MIN_HEARD_SHARE * content:
            log.info(
                "words aligned audio=%s words=%d heard=%d matched=%d",
                audio.name,
                len(words),
                len(heard),
                found,
            )
            return map_words(words, heard, speech.seconds)
        if heard:
            log.warning(
                "transcript does not match the narration, estimating audio=%s words=%d "
                "heard=%d matched=%d",
                audio.name,
                len(words),
                len(heard),
                found,
            )
    return estimate(words, speech.seconds, silences(audio))


def _heard(transcriber: WordTranscriber, audio: Path, language: str) -> list[WordTiming]:
    try:
        return transcriber.words(audio, language)
    except (TransientError, PermanentError) as error:  # OwnerActionNeeded is a PermanentError
        log.warning(
            "word alignment failed, estimating audio=%s error_kind=%s error=%s",
            audio.name,
            type(error).__name__,
            error,
        )
        return []


def pause_after(word: str) -> float:
    """The pause, in syllables, that the punctuation at the end of `word` asks for."""
    stripped = word.rstrip(CLOSING_MARKS)
    if stripped and stripped[-1] in SENTENCE_ENDS:
        return SENTENCE_PAUSE
    if stripped and stripped[-1] in CLAUSE_ENDS:
        return CLAUSE_PAUSE
    return 0.0


def map_words(
    narration: Sequence[str], heard: Sequence[WordTiming], seconds: float
) -> list[WordTiming]:
    """The heard words' times carried onto the narration's own words.

    Words are compared by their letters and digits only (case, punctuation and "ё" aside); a
    narration word heard differently ("3" heard as "three") takes the time of what was heard in
    its place, and one not heard at all is placed between its neighbours by `settle`.
    """
    starts, _ = _matched_starts(narration, heard)
    heard_end = max((timing.end for timing in heard), default=seconds)
    end = seconds if not starts or starts[-1] is None else min(seconds, heard_end)
    return settle(narration, starts, end)


def _key(word: str) -> str:
    return "".join(char for char in word.lower().replace("ё", "е") if char.isalnum())


def _matched_starts(
    narration: Sequence[str], heard: Sequence[WordTiming]
) -> tuple[list[float | None], int]:
    """The start of each narration word found in `heard` (None when not), and how many were
    found exactly."""
    heard = [timing for timing in heard if _key(timing.word)]
    # Bare punctuation never matches: each gets a key no heard word has.
    keys: list[object] = [_key(word) or ("", index) for index, word in enumerate(narration)]
    matcher = difflib.SequenceMatcher(None, keys, [_key(t.word) for t in heard], autojunk=False)
    starts: list[float | None] = [None] * len(narration)
    found = 0
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            for offset in range(i2 - i1):
                starts[i1 + offset] = heard[j1 + offset].start
            found += i2 - i1 if tag == "equal" else 0
        elif tag == "replace":
            starts[i1] = heard[j1].start
    return starts, found


def silences(audio: Path) -> list[tuple[float, float]]:
    """The quiet stretches of `audio` as (start, end) seconds, by ffmpeg's silencedetect; one
    lasting to the end of the file ends at infinity. [] when ffmpeg cannot read the file: the
    estimate then spreads the words over the whole audio."""
    command = [
        ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-i",
        str(audio),
        "-af",
        f"silencedetect=noise={SILENCE_NOISE}:d={SILENCE_MIN_S}",
        "-f",
        "null",
        "-",
    ]
    try:
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=SILENCEDETECT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        log.warning("silencedetect failed audio=%s error=%s", audio.name, error)
        return []
    if completed.returncode != 0:
        log.warning(
            "silencedetect failed audio=%s returncode=%d stderr=%s",
            audio.name,
            completed.returncode,
            completed.stderr[-200:].replace("\n", " "),
        )
        return []
    found: list[tuple[float, float]] = []
    start: float | None = None
    for kind, value in _SILENCE_RE.findall(completed.stderr):
        if kind == "start":
            start = max(float(value), 0.0)
        elif start is not None:
            found.append((start, float(value)))
            start = None
    if start is not None:
        found.append((start, math.inf))
    return found


def estimate(
    words: Sequence[str], seconds: float, quiet: Sequence[tuple[float, float]] = ()
) -> list[WordTiming]:
    """Timings for audio that came without them: each word takes time by its syllables, its
    punctuation adds a pause, and the pauses found in the audio (`quiet`, from `silences`)
    re-synchronise the estimate: each is matched to a word boundary, preferably a punctuated
    one near where the estimate puts it, and the words between two pauses share the speech
    between them."""
    if not words:
        return []
    begin, finish, pauses = _speech_span(seconds, quiet)
    sizes = [float(syllables(word)) for word in words]
    gaps = [pause_after(word) for word in words[:-1]] + [0.0]
    matched = _pause_boundaries(pauses, sizes, gaps, begin, finish)
    starts = [0.0] * len(words)
    first, segment_start = 0, begin
    for boundary in [*sorted(matched), len(words) - 1]:
        segment_end = matched[boundary][0] if boundary in matched else finish
        units = [sizes[j] + (gaps[j] if j < boundary else 0.0) for j in range(first, boundary + 1)]
        total = sum(units) or 1.0
        clock = 0.0
        for index, unit in zip(range(first, boundary + 1), units):
            starts[index] = segment_start + (segment_end - segment_start) * clock / total
            clock += unit
        if boundary in matched:
            first, segment_start = boundary + 1, matched[boundary][1]
    # Bare punctuation is not said: let `settle` put it where the next word starts.
    return settle(words, [s if size else None for s, size in zip(starts, sizes)], finish)


def _speech_span(
    seconds: float, quiet: Sequence[tuple[float, float]]
) -> tuple[float, float, list[tuple[float, float]]]:
    """Where speech begins and ends (after leading, before trailing silence), and the pauses
    in between."""
    begin, finish, pauses = 0.0, seconds, []
    for start, end in sorted(quiet):
        end = min(end, seconds)
        if start <= _EDGE_S:
            begin = max(begin, end)
        elif end >= seconds - _EDGE_S:
            finish = min(finish, start)
        elif end > start:
            pauses.append((start, end))
    if finish - begin <= 0:
        return 0.0, seconds, []
    return begin, finish, [(a, b) for a, b in pauses if begin < a and b < finish]


def _pause_boundaries(
    pauses: Sequence[tuple[float, float]],
    sizes: Sequence[float],
    gaps: Sequence[float],
    begin: float,
    finish: float,
) -> dict[int, tuple[float, float]]:
    """Which pause falls after which word: {word index: (pause start, pause end)}.

    A monotonic alignment (dynamic programming) of the pauses with the word boundaries,
    comparing each pause's place in the speech (pauses left out) with the boundary's place by
    syllables, and charging for unpunctuated boundaries and unused pauses.
    """
    boundaries = len(sizes) - 1
    if not pauses or boundaries < 1:
        return {}
    speech = finish - begin - sum(end - start for start, end in pauses)
    units = sum(sizes) + sum(gaps)
    boundary_at, clock = [], 0.0
    for index in range(boundaries):
        clock += sizes[index] + gaps[index]
        boundary_at.append(speech * (clock - gaps[index] / 2) / units)
    pause_at, silent = [], 0.0
    for start, end in pauses:
        pause_at.append(start - begin - silent)
        silent += end - start
    punctuated = [gap > 0 for gap in gaps]
    count = len(pauses)
    cost = [[0.0] * (boundaries + 1) for _ in range(count + 1)]
    for i in range(1, count + 1):
        cost[i][0] = i * UNUSED_PAUSE_COST
    for i in range(1, count + 1):
        for j in range(1, boundaries + 1):
            here = abs(pause_at[i - 1] - boundary_at[j - 1]) + (
                0.0 if punctuated[j - 1] else UNPUNCTUATED_PAUSE_COST
            )
            cost[i][j] = min(
                cost[i][j - 1], cost[i - 1][j] + UNUSED_PAUSE_COST, cost[i - 1][j - 1] + here
            )
    matched: dict[int, tuple[float, float]] = {}
    i, j = count, boundaries
    while i and j:
        if cost[i][j] == cost[i][j - 1]:
            j -= 1
        elif cost[i][j] == cost[i - 1][j] + UNUSED_PAUSE_COST:
            i -= 1
        else:
            matched[j - 1] = pauses[i - 1]
            i, j = i - 1, j - 1
    return matched


def dumps(timings: Sequence[WordTiming]) -> bytes:
    """Timings as the JSON stored with the voice: [[word, start, end], ...]."""
    return json.dumps([[w.word, round(w.start, 3), round(w.end, 3)] for w in timings]).encode()


def loads(data: bytes) -> list[WordTiming]:
    return [
        WordTiming(str(word), float(start), float(end)) for word, start, end in json.loads(data)
    ]
