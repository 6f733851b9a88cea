"""One small interface per kind of provider; `shared.providers.make_providers` picks them."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from shared.plan import Scene, ScenePlan


class ScriptProvider(Protocol):
    def write(self, description: str, language: str, seconds: int, variant: int = 0) -> ScenePlan:
        """A plan of 3-8 scenes in `language` ('ru' or 'en') lasting about `seconds`.

        `variant` counts the user's "regenerate" presses: each must give a different take."""


class VoiceProvider(Protocol):
    def speak(self, text: str, language: str, out_path: Path) -> float:
        """Write the narration of `text` as an audio file at `out_path`; return its seconds."""


class VisualsProvider(Protocol):
    def draw(
        self, plan: ScenePlan, index: int, size: tuple[int, int], out_path: Path, variant: int = 0
    ) -> None:
        """Write a still (PNG) for `plan.scenes[index]` at `size` (width, height) to `out_path`;
        another `variant` of the same scene must look different."""


class Transcriber(Protocol):
    def transcribe(self, audio_path: Path, language: str) -> str:
        """The words spoken in the audio file at `audio_path` ("" when none were heard);
        `language` ('ru' or 'en') is a hint."""


__all__ = [
    "Scene",
    "ScenePlan",
    "ScriptProvider",
    "Transcriber",
    "VoiceProvider",
    "VisualsProvider",
]
