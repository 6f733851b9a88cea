"""Voice provider that needs no network: espeak-ng, loaded through ctypes from espeakng-loader.

The only module that imports `espeakng_loader`, so set-ups using another voice never load it.
espeak-ng reports where each word starts (an `espeakEVENT_WORD` with the word's 1-based character
position in the text and its time in the audio), so its speech comes with exact word timings.
"""

from __future__ import annotations

import bisect
import ctypes
import logging
import re
import threading
import wave
from pathlib import Path

import espeakng_loader

from shared.providers.base import Speech, WordTiming
from shared.words import settle

logger = logging.getLogger(__name__)

ESPEAK_VOICES = {"ru": "ru", "en": "en"}

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_RATE = 1
_EE_OK = 0
_SAMPLE_BYTES = 2
_TAIL_SILENCE_S = 0.15
_MIN_AUDIO_S = 0.5
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """`espeak_EVENT` from espeak-ng's speak_lib.h (API revision 12)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


class _Espeak:
    """The process-global espeak-ng library: initialised once, used under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._chunks: list[bytes] = []
        self._words: list[tuple[int, int]] = []
        self._library = ctypes.CDLL(espeakng_loader.get_library_path())
        self._declare_signatures()
        data_path = espeakng_loader.get_data_path().encode()
        self.sample_rate = self._library.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0
        )
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak-ng failed to initialise with data at {data_path!r}")
        # Kept on self: ctypes must not garbage-collect a callback the C library still holds.
        self._callback = _SynthCallback(self._collect)
        self._library.espeak_SetSynthCallback(self._callback)

    def _declare_signatures(self) -> None:
        lib = self._library
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int

    def _collect(self, samples: ctypes.Array, count: int, events: ctypes.Array) -> int:
        if count > 0:
            self._chunks.append(ctypes.string_at(samples, count * _SAMPLE_BYTES))
        index = 0
        while events and events[index].type != _EVENT_LIST_TERMINATED:
            event = events[index]
            if event.type == _EVENT_WORD:
                self._words.append((event.text_position, event.audio_position))
            index += 1
        return 0

    def synthesize(
        self, text: str, voice: str, words_per_minute: int
    ) -> tuple[bytes, list[tuple[int, int]]]:
        """16-bit mono PCM at `sample_rate` for `text`, and its word events as (1-based character
        position in `text`, milliseconds into the PCM). Call with `lock` held."""
        self._chunks = []
        self._words = []
        if self._library.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise RuntimeError(f"espeak-ng has no voice {voice!r}")
        self._library.espeak_SetParameter(_ESPEAK_RATE, words_per_minute, 0)
        encoded = text.encode("utf-8")
        status = self._library.espeak_Synth(
            encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None
        )
        if status != _EE_OK:
            raise RuntimeError(f"espeak-ng synthesis failed with status {status}")
        return b"".join(self._chunks), self._words


_engine: _Espeak | None = None
_engine_lock = threading.Lock()


def _espeak() -> _Espeak:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _Espeak()
        return _engine


class LocalVoice:
    """Voice provider speaking with espeak-ng; writes a mono 16-bit WAV."""

    def __init__(self, words_per_minute: int = 155) -> None:
        self.words_per_minute = words_per_minute

    def speak(self, text: str, language: str, out_path: Path) -> Speech:
        if not text or not text.strip():
            raise ValueError("nothing to speak: the text is empty")
        voice = ESPEAK_VOICES.get(language)
        if voice is None:
            raise ValueError(
                f"no local voice for language {language!r}; use one of {sorted(ESPEAK_VOICES)}"
            )
        engine = _espeak()
        text = text.strip()
        with engine.lock:
            pcm, events = engine.synthesize(text, voice, self.words_per_minute)
        spoken = len(pcm) / _SAMPLE_BYTES / engine.sample_rate
        words = word_positions(text, events, spoken)
        pcm = self._with_silence(pcm, engine.sample_rate)
        out_path = Path(out_path)
        with wave.open(str(out_path), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(_SAMPLE_BYTES)
            wav.setframerate(engine.sample_rate)
            wav.writeframes(pcm)
        seconds = len(pcm) / _SAMPLE_BYTES / engine.sample_rate
        logger.info(
            "local voice spoken language=%s seconds=%.2f words=%d events=%d path=%s",
            language,
            seconds,
            len(words),
            len(events),
            out_path,
        )
        return Speech(seconds, words)

    @staticmethod
    def _with_silence(pcm: bytes, sample_rate: int) -> bytes:
        """Add a short tail so words are not cut, and never return less than `_MIN_AUDIO_S`."""
        tail_samples = int(_TAIL_SILENCE_S * sample_rate)
        short_by = int(_MIN_AUDIO_S * sample_rate) - len(pcm) // _SAMPLE_BYTES - tail_samples
        if short_by > 0:
            logger.warning("espeak produced almost no audio; padding with silence")
        silence_samples = tail_samples + max(short_by, 0)
        return pcm + b"\x00" * (silence_samples * _SAMPLE_BYTES)


def word_positions(
    text: str, events: list[tuple[int, int]], spoken: float
) -> tuple[WordTiming, ...]:
    """One timing per whitespace-separated word of `text`, from espeak's word events.

    An event belongs to the word holding its character (or the next word, when it points at
    space); a word said in several events ("2025") starts at the first. A word without an
    event (a lone dash) is placed between its neighbours by `settle`; each word ends where the
    next starts, the last at `spoken` (the end of the synthesized speech).
    """
    spans = [(match.start(), match.end()) for match in re.finditer(r"\S+", text)]
    ends = [end for _, end in spans]
    starts: list[float | None] = [None] * len(spans)
    for position, milliseconds in events:
        index = bisect.bisect_right(ends, position - 1)
        if index < len(spans) and starts[index] is None:
            starts[index] = milliseconds / 1000
    return tuple(settle([text[a:b] for a, b in spans], starts, spoken))
