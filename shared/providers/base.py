"""One small interface per kind of provider; `shared.providers.make_providers` picks them."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Protocol

from shared.plan import Scene, ScenePlan


class ScriptProvider(Protocol):
    def write(self, description: str, language: str, seconds: int, variant: int = 0) -> ScenePlan:
        """A plan of 3-8 scenes in `language` ('ru' or 'en') lasting about `seconds`.

        `variant` counts the user's "regenerate" presses: each must give a different take."""


class WordTiming(NamedTuple):
    """A word of the narration and when it is spoken, in seconds from the start of its audio."""

    word: str
    start: float
    end: float


class Speech(NamedTuple):
    """What a voice provider made: the audio's length in seconds, and when each word is said
    (None when the provider cannot tell; shared.pipeline.timings aligns them then)."""

    seconds: float
    words: tuple[WordTiming, ...] | None = None


class VoiceProvider(Protocol):
    def speak(self, text: str, language: str, out_path: Path) -> Speech:
        """Write the narration of `text` as an audio file at `out_path`; return its seconds and,
        where the provider knows them, its word timings."""


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


class AnimationStatus(NamedTuple):
    """A remote task (a clip, or a Runway still) as its provider reports it: `state` is
    'queued' (waiting in the provider's line: Runway PENDING or THROTTLED, fal IN_QUEUE),
    'running' (the provider works on it), 'succeeded' or 'failed'; `output_url` is set when it
    succeeded, `error` when it failed; `progress` (0..1) when the provider says."""

    state: str
    output_url: str | None = None
    error: str | None = None
    progress: float | None = None


class RemoteAnimator(Protocol):
    """A paid image-to-video service that runs tasks remotely (Runway, fal.ai).

    `submit` sends one still and returns the task's handle: a JSON-serialisable dict with at
    least "id", and whatever else polling needs (fal's status and response URLs). The caller
    records the handle at once; `status`, `download` and `cancel` take only recorded handles.
    `submit` raises shared.errors.OutcomeUnknown when the request may have reached the service
    but no answer came back (it must not be sent again blindly), TransientError when it surely
    did not (a connection never opened, a 429, a 5xx before the task existed) and PermanentError
    or OwnerActionNeeded when it was refused."""

    name: str
    model: str

    def submit(self, still: Path, prompt: str, seconds: float, size: tuple[int, int]) -> dict: ...

    def status(self, handle: dict) -> AnimationStatus: ...

    def download(self, status: AnimationStatus, out_path: Path) -> None: ...

    def cancel(self, handle: dict) -> None:
        """Best effort: ask the service to stop a task whose clip is no longer wanted."""

    def billed_seconds(self, seconds: float) -> float:
        """The seconds of video a task for a `seconds`-long scene asks for (and is billed)."""
        ...


class RemoteVisuals(Protocol):
    """A paid text-to-image service that runs tasks remotely (Runway text_to_image), with the
    same discipline as a `RemoteAnimator`: `submit` returns the handle the caller records at
    once, `status`, `download` and `cancel` take recorded handles only, and `submit` raises
    OutcomeUnknown, TransientError, PermanentError or OwnerActionNeeded as a RemoteAnimator's
    does."""

    name: str
    model: str

    def submit(
        self, plan: ScenePlan, index: int, size: tuple[int, int], variant: int = 0
    ) -> dict: ...

    def status(self, handle: dict) -> AnimationStatus: ...

    def download(self, status: AnimationStatus, size: tuple[int, int], out_path: Path) -> None:
        """Write the task's picture as a PNG of exactly `size` (fitted to the frame)."""

    def cancel(self, handle: dict) -> None: ...


class LocalAnimator(Protocol):
    """Motion made on this machine (ffmpeg or Pillow), synchronously and for free."""

    def animate(
        self,
        still: Path,
        plan: ScenePlan,
        index: int,
        seconds: float,
        size: tuple[int, int],
        fps: int,
        out_path: Path,
        variant: int = 0,
    ) -> None:
        """Write an H.264 MP4 clip of `seconds` at `size` and `fps` that brings the scene's
        still to life."""


__all__ = [
    "AnimationStatus",
    "LocalAnimator",
    "RemoteAnimator",
    "RemoteVisuals",
    "Speech",
    "WordTiming",
    "Scene",
    "ScenePlan",
    "ScriptProvider",
    "Transcriber",
    "VoiceProvider",
    "VisualsProvider",
]
