"""The OpenAI providers against stand-ins for other OpenAI-compatible servers, over real HTTP.

Each flavor of the local server plays one server family (see `localapi.openai_server.FLAVORS`):
it refuses response_format types with that family's real error body, wraps its JSON, answers
with an error only the owner can fix, or hangs.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from localapi import Reply
from localapi.openai_server import OpenAIServer
from shared.config import Settings
from shared.errors import OwnerActionNeeded, PermanentError, TransientError
from shared.http import RetryPolicy
from shared.plan import Scene, ScenePlan
from shared.providers import make_providers
from shared.providers.openai import (
    SCENE_PLAN_SCHEMA,
    OpenAIClient,
    OpenAIScript,
    OpenAIVisuals,
    OpenAIVoice,
    extract_json_object,
)
from tests.support import completion

API_KEY = "sk-proj-compat-secret-0123456789abcdef"
DESCRIPTION = "A curious cat builds a rocket and flies to the moon to find cheese"
CHAT = "/chat/completions"


@pytest.fixture
def sleeps() -> list[float]:
    return []


def start(flavor: str, **options: Any) -> OpenAIServer:
    server = OpenAIServer(API_KEY, flavor=flavor, **options)
    server.start()
    return server


@pytest.fixture
def servers() -> Iterator[list[OpenAIServer]]:
    running: list[OpenAIServer] = []
    yield running
    for server in running:
        server.stop()


def client_for(server: OpenAIServer, sleeps: list[float]) -> OpenAIClient:
    return OpenAIClient(
        server.start(),
        API_KEY,
        sleep=sleeps.append,
        timeout=10.0,
        policy=RetryPolicy(max_attempts=3, base_delay=0.1, max_delay=10.0),
    )


def unique_model() -> str:
    """A model name no other test used, so the remembered mode starts empty."""
    return f"compat-model-{uuid.uuid4().hex[:8]}"


def response_type(body: dict[str, Any]) -> str:
    return body.get("response_format", {}).get("type", "none")


# flavor -> the response_format types tried on the first call; the last one is remembered.
FIRST_CALL_MODES = {
    "openai": ["json_schema"],
    "ollama": ["json_schema"],
    "ollama-legacy": ["json_schema"],
    "lmstudio": ["json_schema"],
    "vllm": ["json_schema", "json_object"],
    "groq": ["json_schema", "json_object"],
    "text-only": ["json_schema", "json_object", "none"],
}


@pytest.mark.parametrize("flavor", sorted(FIRST_CALL_MODES))
def test_the_script_step_succeeds_and_remembers_the_mode_that_works(
    flavor: str, servers: list[OpenAIServer], sleeps: list[float]
) -> None:
    server = start(flavor)
    servers.append(server)
    client, model = client_for(server, sleeps), unique_model()

    plan = OpenAIScript(client, model).write(DESCRIPTION, "ru", 30)

    assert plan.language == "ru" and 3 <= len(plan.scenes) <= 8
    first = server.requests_to(CHAT)
    assert [response_type(r.body) for r in first] == FIRST_CALL_MODES[flavor]
    assert [r.status for r in first] == [400] * (len(first) - 1) + [200]
    assert sleeps == []

    again = OpenAIScript(client, model).write("A dog learns to surf", "en", 20)

    assert again.language == "en" and again.title
    second = server.requests_to(CHAT)[len(first) :]
    assert len(second) == 1, "one paid request once the working mode is known"
    assert response_type(second[0].body) == FIRST_CALL_MODES[flavor][-1]


def test_without_response_format_the_schema_is_spelled_out_in_the_prompt(
    servers: list[OpenAIServer], sleeps: list[float]
) -> None:
    server = start("text-only")
    servers.append(server)
    OpenAIScript(client_for(server, sleeps), unique_model()).write(DESCRIPTION, "en", 30)
    last = server.requests_to(CHAT)[-1].body
    assert "response_format" not in last
    assert json.dumps(SCENE_PLAN_SCHEMA) in last["messages"][0]["content"]
    assert "JSON" in last["messages"][0]["content"]


def test_json_mode_also_gets_the_schema_and_the_word_json(
    servers: list[OpenAIServer], sleeps: list[float]
) -> None:
    server = start("groq")
    servers.append(server)
    OpenAIScript(client_for(server, sleeps), unique_model()).write(DESCRIPTION, "en", 30)
    last = server.requests_to(CHAT)[-1].body
    assert last["response_format"] == {"type": "json_object"}
    assert json.dumps(SCENE_PLAN_SCHEMA) in last["messages"][0]["content"]


def test_an_unrelated_400_is_not_mistaken_for_a_format_refusal(
    servers: list[OpenAIServer], sleeps: list[float]
) -> None:
    server = start("openai")
    servers.append(server)
    server.respond_next(
        CHAT,
        Reply.json(
            400,
            {
                "error": {
                    "message": "This model's maximum context length is 8192 tokens.",
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }
            },
        ),
    )
    with pytest.raises(PermanentError, match="maximum context length") as raised:
        OpenAIScript(client_for(server, sleeps), unique_model()).write(DESCRIPTION, "en", 30)
    assert not isinstance(raised.value, OwnerActionNeeded)
    assert len(server.requests_to(CHAT)) == 1


OWNER_FAILURES = {
    "quota": "OpenAI says the account has no quota left (insufficient_quota): add credit or "
    "change OPENAI_API_KEY",
    "no-retry": "asked not to retry",
}


@pytest.mark.parametrize("flavor", sorted(OWNER_FAILURES))
def test_what_only_the_owner_can_fix_fails_at_once_on_every_route(
    flavor: str, servers: list[OpenAIServer], sleeps: list[float], tmp_path: Path
) -> None:
    server = start(flavor)
    servers.append(server)
    client = client_for(server, sleeps)
    scene = Scene("Narration.", "Text", "a cat in a rocket", 5.0)
    plan = ScenePlan("Cat", "en", (scene, scene, scene))
    calls = [
        lambda: OpenAIScript(client, unique_model()).write(DESCRIPTION, "en", 30),
        lambda: OpenAIVoice(client, "tts-1", "alloy").speak("Hi.", "en", tmp_path / "a.wav"),
        lambda: OpenAIVisuals(client, "gpt-image-1").draw(plan, 0, (720, 1280), tmp_path / "s.png"),
    ]
    for call in calls:
        with pytest.raises(OwnerActionNeeded, match=re.escape(OWNER_FAILURES[flavor])) as raised:
            call()
        assert API_KEY not in str(raised.value)
    assert len(server.requests) == len(calls), "one request per call, no retries"
    assert sleeps == []


@pytest.mark.parametrize(
    ("status", "text"),
    [
        (401, "API key was rejected.*check OPENAI_API_KEY"),
        (403, "may not use .* check OPENAI_API_KEY"),
        (404, "does not exist: check OPENAI_BASE_URL"),
    ],
)
def test_key_access_and_url_problems_are_for_the_owner(
    status: int, text: str, servers: list[OpenAIServer], sleeps: list[float]
) -> None:
    server = start("openai")
    servers.append(server)
    server.fail_next(CHAT, status)
    with pytest.raises(OwnerActionNeeded, match=text):
        OpenAIScript(client_for(server, sleeps), unique_model()).write(DESCRIPTION, "en", 30)
    assert len(server.requests) == 1 and sleeps == []


def test_a_hung_server_is_bounded_by_the_configured_timeouts(
    servers: list[OpenAIServer],
) -> None:
    server = start("openai", delay=3.0)
    servers.append(server)
    settings = Settings(
        script_provider="openai",
        openai_api_key=API_KEY,
        openai_base_url=server.start(),
        openai_timeout_seconds=0.3,
        openai_total_seconds=1.0,
    )
    script = make_providers(settings).script
    began = time.monotonic()
    with pytest.raises(TransientError, match="Timeout"):
        script.write(DESCRIPTION, "en", 30)
    elapsed = time.monotonic() - began
    assert 0.5 <= elapsed < 1.5, elapsed


def test_unusable_content_is_logged_as_a_short_redacted_line(
    servers: list[OpenAIServer], sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    server = start("openai")
    servers.append(server)
    rambling = f"I cannot do JSON today.\n\nMy key is {API_KEY}.\n" + "blah " * 200
    server.respond_next(
        CHAT,
        completion(rambling),
        times=3,
    )
    caplog.set_level(logging.WARNING, logger="shared.providers.openai")
    with pytest.raises(PermanentError, match="not valid JSON"):
        OpenAIScript(client_for(server, sleeps), unique_model()).write(DESCRIPTION, "en", 30)
    lines = [r.getMessage() for r in caplog.records if "script unusable" in r.getMessage()]
    assert len(lines) == 3
    for line in lines:
        snippet = line.split("content=", 1)[1]
        assert snippet.startswith("I cannot do JSON today. My key is ***.")
        assert len(snippet) <= 200 and "\n" not in line and API_KEY not in line


# ---- the JSON extraction on its own ------------------------------------------------------------

_PROSE = st.text(
    st.characters(codec="utf-8", exclude_characters="{}`<>", exclude_categories=("Cs",)),
    max_size=60,
)
_SCENE = st.fixed_dictionaries(
    {
        "narration": st.text(min_size=1, max_size=40),
        "on_screen_text": st.text(max_size=20),
        "visual_prompt": st.text(max_size=40),
        "duration": st.floats(min_value=0.5, max_value=30, allow_nan=False),
    }
)
_PLAN = st.fixed_dictionaries(
    {
        "title": st.text(min_size=1, max_size=40),
        "scenes": st.lists(_SCENE, min_size=3, max_size=8),
    }
)


@st.composite
def wrapped(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A plan and a model's answer carrying it: bare, fenced, after <think>, amid prose."""
    plan = draw(_PLAN)
    text = json.dumps(
        plan, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 2]))
    )
    wrapper = draw(st.sampled_from(["bare", "fence", "fence-json", "prose"]))
    if wrapper == "fence":
        text = f"```\n{text}\n```"
    elif wrapper == "fence-json":
        text = f"{draw(_PROSE)}\n```json\n{text}\n```\n{draw(_PROSE)}"
    elif wrapper == "prose":
        text = f"{draw(_PROSE)}{text}{draw(_PROSE)}"
    if draw(st.booleans()):
        thought = draw(st.text(max_size=80).filter(lambda t: "</think>" not in t))
        text = f"<think>{thought}</think>\n{text}"
    return plan, text


@given(wrapped())
def test_the_plan_is_found_whatever_wraps_it(case: tuple[dict[str, Any], str]) -> None:
    plan, answer = case
    assert extract_json_object(answer) == plan


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("Sure! Here is a plan: first we show the", "not valid JSON"),
        ('{"title": "a"} and also {"title": "b"}', "more than one JSON object"),
        ('["not", "an", "object"]', "not a JSON object"),
        ('<think>{"title": "only a thought"}</think>', "not valid JSON"),
    ],
)
def test_answers_without_exactly_one_object_are_refused(answer: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        extract_json_object(answer)
