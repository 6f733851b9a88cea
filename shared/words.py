"""Word-timing arithmetic that a voice provider and the pipeline both need: how long a word is
to say (its syllables), and one timing per word from the starts known for some of them."""

from __future__ import annotations

from typing import Sequence

from shared.providers.base import WordTiming

VOWELS = frozenset("aeiouyаеёиоуыэюя")


def syllables(word: str) -> int:
    """Vowels (Latin and Cyrillic) in `word`, two per digit; at least 1 for a word with a
    letter or digit, 0 for bare punctuation."""
    lowered = word.lower()
    count = sum(1 for char in lowered if char in VOWELS) + 2 * sum(map(str.isdigit, lowered))
    return max(count, 1) if any(map(str.isalnum, lowered)) else 0


def settle(words: Sequence[str], starts: Sequence[float | None], end: float) -> list[WordTiming]:
    """One timing per word from the starts known for some of them.

    Known starts are kept, clamped to [0, end] and made non-decreasing; the words between two
    known starts (or 0 and `end`) share that time by syllables, so bare punctuation gets no
    time. Each word ends where the next starts; the last at `end`.
    """
    end = max(end, 0.0)
    anchors: list[tuple[int, float]] = []
    floor = 0.0
    for index, start in enumerate(starts):
        if start is not None:
            floor = max(floor, min(max(start, 0.0), end))
            anchors.append((index, floor))
    if not anchors or anchors[0][0] != 0:
        anchors.insert(0, (0, 0.0))
    anchors.append((len(words), end))
    sizes = [syllables(word) for word in words]
    times = [0.0] * len(words)
    for (first, begin), (stop, finish) in zip(anchors, anchors[1:]):
        total = sum(sizes[first:stop])
        clock = 0.0
        for index in range(first, stop):
            share = clock / total if total else (index - first) / (stop - first)
            times[index] = begin + (finish - begin) * share
            clock += sizes[index]
    return [
        WordTiming(word, start, next_start)
        for word, start, next_start in zip(words, times, [*times[1:], end])
    ]
