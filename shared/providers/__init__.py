"""Pick the script, voice, visuals, animation and transcription providers named in the settings.

Provider modules are imported only when chosen, so a local-only setup never loads the OpenAI
code, and an all-OpenAI setup never loads espeak-ng (only `local_voice` imports it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from shared.config import ConfigError, Settings
from shared.providers.base import (
    LocalAnimator,
    RemoteAnimator,
    RemoteVisuals,
    ScriptProvider,
    Transcriber,
    VisualsProvider,
    VoiceProvider,
)

if TYPE_CHECKING:
    from shared.providers.openai import OpenAIClient
    from shared.providers.runway import RunwayClient


class Providers(NamedTuple):
    script: ScriptProvider
    voice: VoiceProvider
    visuals: VisualsProvider | RemoteVisuals
    """Draws the stills: on this machine or synchronously (`draw`), or as remote tasks
    (`submit`, Runway)."""
    transcriber: Transcriber | None = None
    """Hears spoken descriptions; None when TRANSCRIBE_PROVIDER is local (no offline speech
    recognition: the webhook asks the user to type instead)."""
    animator: RemoteAnimator | LocalAnimator | None = None
    """Brings the stills to life (ANIMATION_PROVIDER); None for `none`: stills with a pan."""


def make_providers(settings: Settings) -> Providers:
    """Build the providers chosen by SCRIPT_PROVIDER / VOICE_PROVIDER / VISUALS_PROVIDER /
    TRANSCRIBE_PROVIDER.

    Raises `ConfigError` when openai is chosen without OPENAI_API_KEY. The OpenAI providers
    share one client (one connection pool).
    """
    client = _openai_client(settings)
    visuals = _visuals_provider(settings, client)
    return Providers(
        script=_script_provider(settings, client),
        voice=_voice_provider(settings, client),
        visuals=visuals,
        transcriber=_transcriber(settings, client),
        animator=_animator(settings, visuals),
    )


def _openai_client(settings: Settings) -> "OpenAIClient | None":
    """The shared OpenAI client if any provider is openai, else None."""
    chosen = {
        "SCRIPT_PROVIDER": settings.script_provider,
        "VOICE_PROVIDER": settings.voice_provider,
        "VISUALS_PROVIDER": settings.visuals_provider,
        "TRANSCRIBE_PROVIDER": settings.transcribe_provider,
    }
    uses_openai = [name for name, provider in chosen.items() if provider == "openai"]
    if not uses_openai:
        return None
    if not settings.openai_api_key:
        raise ConfigError(
            f"{', '.join(uses_openai)} chooses openai, but OPENAI_API_KEY is empty; "
            "set the key or choose the local provider"
        )
    from shared.providers.openai import OpenAIClient

    return OpenAIClient(
        settings.openai_base_url,
        settings.openai_api_key,
        timeout=settings.openai_timeout_seconds,
        total_timeout=settings.openai_total_seconds,
    )


def _script_provider(settings: Settings, client: "OpenAIClient | None") -> ScriptProvider:
    if settings.script_provider == "openai" and client is not None:
        from shared.providers.openai import OpenAIScript

        return OpenAIScript(client, settings.openai_script_model)
    from shared.providers.local_script import LocalScript

    return LocalScript()


def _voice_provider(settings: Settings, client: "OpenAIClient | None") -> VoiceProvider:
    if settings.voice_provider == "openai" and client is not None:
        from shared.providers.openai import OpenAIVoice

        return OpenAIVoice(client, settings.openai_tts_model, settings.openai_tts_voice)
    from shared.providers.local_voice import LocalVoice

    return LocalVoice()


def _visuals_provider(
    settings: Settings, client: "OpenAIClient | None"
) -> VisualsProvider | RemoteVisuals:
    if settings.visuals_provider == "runway":
        from shared.providers.runway import RunwayVisuals

        return RunwayVisuals(_runway_client(settings), settings.runway_image_model)
    if settings.visuals_provider == "openai" and client is not None:
        from shared.providers.openai import OpenAIVisuals

        return OpenAIVisuals(client, settings.openai_image_model)
    from shared.providers.local_visuals import LocalVisuals

    # With burned-in captions the narration is on screen already: the card shows no words of it.
    return LocalVisuals(show_words=settings.caption_style == "off")


def _transcriber(settings: Settings, client: "OpenAIClient | None") -> Transcriber | None:
    if settings.transcribe_provider == "openai" and client is not None:
        from shared.providers.openai import OpenAITranscriber

        return OpenAITranscriber(
            client, settings.openai_transcribe_model, align_model=settings.openai_align_model
        )
    return None


def _runway_client(settings: Settings) -> "RunwayClient":
    if not settings.runway_api_key:
        raise ConfigError(
            "Runway is chosen (ANIMATION_PROVIDER or VISUALS_PROVIDER), but RUNWAY_API_KEY is "
            "empty; set the key or choose another provider"
        )
    from shared.providers.runway import RunwayClient

    return RunwayClient(
        settings.runway_api_base, settings.runway_api_key, settings.runway_api_version
    )


def _animator(
    settings: Settings, visuals: VisualsProvider | RemoteVisuals
) -> RemoteAnimator | LocalAnimator | None:
    provider = settings.animation_provider
    if provider == "none":
        return None
    if provider == "runway":
        from shared.providers.runway import RunwayAnimator

        return RunwayAnimator(_runway_client(settings), settings.runway_video_model)
    if provider == "fal":
        if not settings.fal_key:
            raise ConfigError(
                "ANIMATION_PROVIDER=fal, but FAL_KEY is empty; set the key or choose another "
                "provider"
            )
        from shared.providers.fal import FalAnimator

        return FalAnimator(settings.fal_queue_base, settings.fal_key, settings.fal_video_model)
    from shared.providers.local_animation import LocalAnimation
    from shared.providers.local_visuals import LocalVisuals

    # Local cards are animated from their layers (parallax); other stills as pictures.
    return LocalAnimation(visuals if isinstance(visuals, LocalVisuals) else None)
