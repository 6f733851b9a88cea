"""The OpenAI providers against the local OpenAI-compatible server, over real HTTP."""

from __future__ import annotations

import json
import logging
import wave
from pathlib import Path
from typing import Iterator

import pytest
import requests
from PIL import Image

from localapi import Reply
from localapi.openai_server import OpenAIServer
from shared.config import ConfigError, Settings
from shared.errors import OwnerActionNeeded, PermanentError, TransientError
from shared.http import RetryPolicy
from shared.plan import Scene, ScenePlan
from shared.providers import Providers, make_providers
from shared.providers.openai import (
    OpenAIClient,
    OpenAIScript,
    OpenAIVisuals,
    OpenAIVoice,
    generation_size,
)
from tests.support import completion

API_KEY = "sk-proj-test-secret-abcdef0123456789"
DESCRIPTION = "A curious cat builds a rocket and flies to the moon to find cheese"


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(API_KEY) as running:
        yield running


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(server: OpenAIServer, sleeps: list[float]) -> OpenAIClient:
    return OpenAIClient(
        server.start(),
        API_KEY,
        sleep=sleeps.append,
        timeout=10.0,
        policy=RetryPolicy(max_attempts=3, base_delay=0.1, max_delay=10.0),
    )


@pytest.fixture
def plan() -> ScenePlan:
    scene = Scene("Narration.", "Text", "a cat in a rocket, watercolor", 5.0)
    return ScenePlan("Cat", "en", (scene, scene, scene))


def test_script_sends_a_strict_schema_and_returns_a_plan(
    client: OpenAIClient, server: OpenAIServer
) -> None:
    plan = OpenAIScript(client, "gpt-4o-mini").write(DESCRIPTION, "ru", 30)
    assert plan.language == "ru" and 3 <= len(plan.scenes) <= 8
    assert abs(sum(scene.duration for scene in plan.scenes) - 30) < 1
    request = server.requests_to("/chat/completions")[0]
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    response_format = request.body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "scene_plan"
    assert response_format["json_schema"]["strict"] is True
    schema = response_format["json_schema"]["schema"]
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == set(schema["properties"]) == {"title", "mood", "scenes"}
    assert request.body["messages"][-1] == {"role": "user", "content": DESCRIPTION}
    assert "Language: ru" in request.body["messages"][0]["content"]


def test_invalid_json_is_retried_then_succeeds(client: OpenAIClient, server: OpenAIServer) -> None:
    server.bad_json_next(2)
    plan = OpenAIScript(client, "gpt-4o-mini").write(DESCRIPTION, "en", 20)
    assert plan.title
    assert len(server.requests_to("/chat/completions")) == 3


def test_invalid_json_three_times_is_permanent(client: OpenAIClient, server: OpenAIServer) -> None:
    server.bad_json_next(3)
    with pytest.raises(PermanentError, match="not valid JSON"):
        OpenAIScript(client, "gpt-4o-mini").write(DESCRIPTION, "en", 20)
    assert len(server.requests_to("/chat/completions")) == 3


def test_an_invalid_plan_is_retried_then_permanent(
    client: OpenAIClient, server: OpenAIServer
) -> None:
    one_scene = json.dumps(
        {
            "title": "T",
            "scenes": [
                {"narration": "n", "on_screen_text": "t", "visual_prompt": "v", "duration": 3}
            ],
        }
    )
    server.respond_next("/chat/completions", completion(one_scene), times=3)
    with pytest.raises(PermanentError, match="3-8 scenes, got 1"):
        OpenAIScript(client, "gpt-4o-mini").write(DESCRIPTION, "en", 20)


def test_rejected_key_is_permanent_at_once_and_never_logged(
    server: OpenAIServer, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong_key = "sk-wrong-key-000000000000000000"
    client = OpenAIClient(server.start(), wrong_key, sleep=sleeps.append)
    with pytest.raises(OwnerActionNeeded, match="API key was rejected.*OPENAI_API_KEY") as raised:
        OpenAIScript(client, "gpt-4o-mini").write(DESCRIPTION, "en", 20)
    assert len(server.requests) == 1 and sleeps == []
    assert "openai needs the owner" in caplog.text
    assert wrong_key not in caplog.text and wrong_key not in str(raised.value)


def test_429_retry_after_then_success(
    client: OpenAIClient, server: OpenAIServer, sleeps: list[float], tmp_path: Path
) -> None:
    server.fail_next("/audio/speech", 429, retry_after=2)
    OpenAIVoice(client, "gpt-4o-mini-tts", "alloy").speak("Hello there.", "en", tmp_path / "a.wav")
    assert sleeps == [2.0]


def test_persistent_5xx_is_transient(
    client: OpenAIClient, server: OpenAIServer, plan: ScenePlan, tmp_path: Path
) -> None:
    server.fail_next("/images/generations", 500, times=3)
    with pytest.raises(TransientError):
        OpenAIVisuals(client, "gpt-image-1").draw(plan, 0, (720, 1280), tmp_path / "s.png")
    assert len(server.requests_to("/images/generations")) == 3


def test_voice_writes_a_valid_wav_and_returns_its_length(
    client: OpenAIClient, server: OpenAIServer, tmp_path: Path
) -> None:
    text = "The cat looks at the moon and dreams of cheese."
    out = tmp_path / "voice" / "scene0.wav"
    speech = OpenAIVoice(client, "gpt-4o-mini-tts", "alloy").speak(text, "en", out)
    seconds = speech.seconds
    assert speech.words is None
    assert seconds == pytest.approx(len(text) / 14, abs=0.05)
    with wave.open(str(out)) as written:
        assert written.getnframes() / written.getframerate() == pytest.approx(seconds)
    body = server.requests_to("/audio/speech")[0].body
    assert body == {
        "model": "gpt-4o-mini-tts",
        "voice": "alloy",
        "input": text,
        "response_format": "wav",
    }


def test_voice_refuses_audio_that_is_not_wav(
    client: OpenAIClient, server: OpenAIServer, tmp_path: Path
) -> None:
    server.respond_next("/audio/speech", Reply(200, b"ID3\x04\x00fake-mp3", "audio/mpeg"))
    with pytest.raises(PermanentError, match="did not return WAV"):
        OpenAIVoice(client, "tts-1", "alloy").speak("Hello.", "en", tmp_path / "a.wav")


@pytest.mark.parametrize(
    ("size", "requested"),
    [
        ((720, 1280), "1024x1536"),
        ((1280, 720), "1536x1024"),
        ((1080, 1080), "1024x1024"),
    ],
)
def test_visuals_are_fitted_to_the_exact_frame(
    client: OpenAIClient,
    server: OpenAIServer,
    plan: ScenePlan,
    tmp_path: Path,
    size: tuple[int, int],
    requested: str,
) -> None:
    out = tmp_path / "scene.png"
    OpenAIVisuals(client, "gpt-image-1").draw(plan, 1, size, out)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == size
    body = server.requests_to("/images/generations")[0].body
    assert body["size"] == requested and body["prompt"] == plan.scenes[1].visual_prompt
    assert "response_format" not in body


def test_dall_e_gets_its_own_sizes_and_b64_json(
    client: OpenAIClient, server: OpenAIServer, plan: ScenePlan, tmp_path: Path
) -> None:
    OpenAIVisuals(client, "dall-e-3").draw(plan, 0, (720, 1280), tmp_path / "s.png")
    body = server.requests_to("/images/generations")[0].body
    assert (body["size"], body["response_format"]) == ("1024x1792", "b64_json")


def test_generation_size_defaults_to_gpt_image_sizes() -> None:
    assert generation_size((1000, 1100), "some-compatible-model") == "1024x1024"


def test_make_providers_wants_a_key_for_openai() -> None:
    with pytest.raises(ConfigError, match="VOICE_PROVIDER.*OPENAI_API_KEY"):
        make_providers(Settings(voice_provider="openai", openai_api_key=""))


def test_make_providers_builds_openai_providers() -> None:
    providers = make_providers(
        Settings(
            script_provider="openai",
            voice_provider="openai",
            visuals_provider="openai",
            openai_api_key=API_KEY,
        )
    )
    assert isinstance(providers, Providers)
    assert isinstance(providers.script, OpenAIScript)
    assert isinstance(providers.voice, OpenAIVoice)
    assert isinstance(providers.visuals, OpenAIVisuals)


def test_make_providers_defaults_to_local() -> None:
    from shared.providers.local_script import LocalScript
    from shared.providers.local_visuals import LocalVisuals
    from shared.providers.local_voice import LocalVoice

    providers = make_providers(Settings())
    assert isinstance(providers.script, LocalScript)
    assert isinstance(providers.voice, LocalVoice)
    assert isinstance(providers.visuals, LocalVisuals)


def test_server_plan_follows_the_requested_schema(server: OpenAIServer) -> None:
    schema = {
        "type": "object",
        "required": ["title", "mood", "scenes"],
        "properties": {
            "title": {"type": "string"},
            "mood": {"type": "string"},
            "scenes": {
                "type": "array",
                "minItems": 5,
                "maxItems": 5,
                "items": {
                    "type": "object",
                    "properties": {"narration": {"type": "string"}, "duration": {"type": "number"}},
                },
            },
        },
    }
    response = requests.post(
        f"{server.start()}/chat/completions",
        timeout=10,
        headers={"Authorization": f"Bearer {API_KEY}"},
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": DESCRIPTION}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "strict": True, "schema": schema},
            },
        },
    )
    body = response.json()
    assert body["object"] == "chat.completion"
    plan = json.loads(body["choices"][0]["message"]["content"])
    assert set(plan) == {"title", "mood", "scenes"} and len(plan["scenes"]) == 5
    assert all(set(scene) == {"narration", "duration"} for scene in plan["scenes"])


def test_server_answers_openai_error_bodies(server: OpenAIServer) -> None:
    unauthorized = requests.post(f"{server.start()}/images/generations", json={}, timeout=5)
    assert unauthorized.status_code == 401
    assert unauthorized.json()["error"]["type"] == "invalid_request_error"
    wrong_key = requests.post(
        f"{server.start()}/images/generations",
        json={},
        timeout=5,
        headers={"Authorization": "Bearer sk-nope-123456789"},
    )
    assert wrong_key.json()["error"]["code"] == "invalid_api_key"
    bad_param = requests.post(
        f"{server.start()}/images/generations",
        timeout=5,
        headers={"Authorization": f"Bearer {API_KEY}"},
        json={"model": "gpt-image-1", "prompt": "cat", "response_format": "b64_json"},
    )
    assert bad_param.status_code == 400
    assert "response_format" in bad_param.json()["error"]["message"]
