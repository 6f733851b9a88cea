"""Voice provider that needs no network: espeak-ng, loaded through ctypes from espeakng-loader.

The only module that imports `espeakng_loader`, so set-ups using another voice never load it.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import wave
from pathlib import Path

import espeakng_loader

from shared.providers.base import Speech

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

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _Espeak:
    """The process-global espeak-ng library: initialised once, used under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._chunks: list[bytes] = []
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

    def _collect(self, samples: ctypes.Array, count: int, _events: int) -> int:
        if count > 0:
            self._chunks.append(ctypes.string_at(samples, count * _SAMPLE_BYTES))
        return 0

    def synthesize(self, text: str, voice: str, words_per_minute: int) -> bytes:
        """16-bit mono PCM at `sample_rate` for `text`. Call with `lock` held."""
        self._chunks = []
        if self._library.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise RuntimeError(f"espeak-ng has no voice {voice!r}")
        self._library.espeak_SetParameter(_ESPEAK_RATE, words_per_minute, 0)
        encoded = text.encode("utf-8")
        status = self._library.espeak_Synth(
            encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None
        )
        if status != _EE_OK:
            raise RuntimeError(f"espeak-ng synthesis failed with status {status}")
        return b"".join(self._chunks)


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
        with engine.lock:
            pcm = engine.synthesize(text.strip(), voice, self.words_per_minute)
        pcm = self._with_silence(pcm, engine.sample_rate)
        out_path = Path(out_path)
        with wave.open(str(out_path), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(_SAMPLE_BYTES)
            wav.setframerate(engine.sample_rate)
            wav.writeframes(pcm)
        seconds = len(pcm) / _SAMPLE_BYTES / engine.sample_rate
        logger.info(
            "local voice spoken language=%s seconds=%.2f path=%s", language, seconds, out_path
        )
        return Speech(seconds)

    @staticmethod
    def _with_silence(pcm: bytes, sample_rate: int) -> bytes:
        """Add a short tail so words are not cut, and never return less than `_MIN_AUDIO_S`."""
        tail_samples = int(_TAIL_SILENCE_S * sample_rate)
        short_by = int(_MIN_AUDIO_S * sample_rate) - len(pcm) // _SAMPLE_BYTES - tail_samples
        if short_by > 0:
            logger.warning("espeak produced almost no audio; padding with silence")
        silence_samples = tail_samples + max(short_by, 0)
        return pcm + b"\x00" * (silence_samples * _SAMPLE_BYTES)
