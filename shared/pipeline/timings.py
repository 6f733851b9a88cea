"""When each word of a scene's narration is spoken, for captions that follow the voice.

A voice provider that knows (espeak-ng) gives the timings with its audio; for one that does not,
`word_timings` estimates them here. The media step stores them as `words/NN.json` next to the
voice, so a re-render never computes them again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from shared.providers.base import Speech, Transcriber, WordTiming


def word_timings(
    speech: Speech,
    narration: str,
    audio: Path,
    language: str,
    transcriber: Transcriber | None = None,
) -> list[WordTiming]:
    """The speech's own timings when the provider gave them, else an estimate that shares the
    audio's length among the narration's words by their length."""
    if speech.words:
        return list(speech.words)
    words = narration.split()
    weights = [len(word) + 2 for word in words]
    total = sum(weights) or 1
    timings, clock = [], 0.0
    for word, weight in zip(words, weights):
        end = clock + speech.seconds * weight / total
        timings.append(WordTiming(word, clock, end))
        clock = end
    return timings


def dumps(timings: Sequence[WordTiming]) -> bytes:
    """Timings as the JSON stored with the voice: [[word, start, end], ...]."""
    return json.dumps([[w.word, round(w.start, 3), round(w.end, 3)] for w in timings]).encode()


def loads(data: bytes) -> list[WordTiming]:
    return [
        WordTiming(str(word), float(start), float(end)) for word, start, end in json.loads(data)
    ]
