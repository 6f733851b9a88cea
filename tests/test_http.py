"""shared.http against real local servers: retries, delays, attempt limits and redaction."""

from __future__ import annotations

import email.utils
import logging
import socket
import time
from typing import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from localapi import Reply
from localapi.openai_server import OpenAIServer
from shared.errors import PermanentError, TransientError
from shared.http import HttpClient, RetryPolicy, redact

API_KEY = "sk-http-test-secret-0123456789"
PATH = "/chat/completions"
CHAT_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a cat"}]}


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(API_KEY) as running:
        yield running


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_client(
    sleeps: list[float], total_timeout: float | None = None, **policy: float
) -> HttpClient:
    return HttpClient(
        service="openai",
        secrets=(API_KEY,),
        sleep=sleeps.append,
        timeout=5.0,
        policy=RetryPolicy(**policy),
        rand=lambda: 1.0,
        total_timeout=total_timeout,
    )


def post_chat(client: HttpClient, server: OpenAIServer) -> int:
    response = client.request(
        "POST",
        f"{server.start()}{PATH}",
        label=PATH,
        json_body=CHAT_BODY,
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    return response.status_code


def test_redact_replaces_plain_and_url_quoted_secrets() -> None:
    token = "123:ABC/def"
    text = f"GET /bot{token}/x and /bot123%3AABC%2Fdef/y with key sk-1"
    cleaned = redact(text, [token, "", "sk-1"])
    assert token not in cleaned and "123%3AABC%2Fdef" not in cleaned and "sk-1" not in cleaned
    assert cleaned.count("***") == 3


def test_retry_after_header_is_honoured(server: OpenAIServer, sleeps: list[float]) -> None:
    server.fail_next(PATH, 429, retry_after=2)
    assert post_chat(make_client(sleeps), server) == 200
    assert sleeps == [2.0]
    assert [r.status for r in server.requests_to(PATH)] == [429, 200]


def test_retry_after_http_date_is_understood(server: OpenAIServer, sleeps: list[float]) -> None:
    when = email.utils.formatdate(time.time() + 6, usegmt=True)
    server.respond_next(PATH, Reply.json(503, {"error": {}}, {"Retry-After": when}))
    assert post_chat(make_client(sleeps), server) == 200
    assert len(sleeps) == 1 and 3.0 < sleeps[0] <= 6.0


def test_5xx_is_retried_with_capped_exponential_backoff(
    server: OpenAIServer, sleeps: list[float]
) -> None:
    server.fail_next(PATH, 500, times=3)
    client = make_client(sleeps, max_attempts=4, base_delay=1.0, max_delay=3.0)
    assert post_chat(client, server) == 200
    assert sleeps == [1.0, 2.0, 3.0]


def test_attempts_run_out_into_transient_error(server: OpenAIServer, sleeps: list[float]) -> None:
    server.fail_next(PATH, 429, retry_after=1, times=5)
    with pytest.raises(TransientError) as raised:
        post_chat(make_client(sleeps, max_attempts=3), server)
    assert raised.value.retry_after == 1.0
    assert "3 attempt(s)" in str(raised.value)
    assert len(server.requests_to(PATH)) == 3
    assert sleeps == [1.0, 1.0]


def test_a_long_retry_after_is_handed_back_instead_of_slept(
    server: OpenAIServer, sleeps: list[float]
) -> None:
    server.fail_next(PATH, 429, retry_after=120)
    with pytest.raises(TransientError) as raised:
        post_chat(make_client(sleeps, max_delay=30.0), server)
    assert raised.value.retry_after == 120.0
    assert sleeps == []
    assert len(server.requests_to(PATH)) == 1


def test_4xx_is_returned_without_retrying(server: OpenAIServer, sleeps: list[float]) -> None:
    server.fail_next(PATH, 401)
    assert post_chat(make_client(sleeps), server) == 401
    assert sleeps == []


def test_connection_error_never_shows_the_secret(
    sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    client = make_client(sleeps, max_attempts=2)
    with pytest.raises(TransientError) as raised:
        client.request("GET", f"http://127.0.0.1:{closed_port}/bot{API_KEY}/getMe", label="getMe")
    assert API_KEY not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__context__ is None
    assert "ConnectionError" in str(raised.value)
    assert API_KEY not in caplog.text
    assert len(sleeps) == 1


def test_read_timeout_is_retried_then_transient(sleeps: list[float]) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1/x"
        client = make_client(sleeps, max_attempts=2)
        with pytest.raises(TransientError, match="Timeout"):
            client.request("POST", url, label="/x", json_body={}, timeout=0.2)
    assert len(sleeps) == 1


def test_x_should_retry_false_is_obeyed(server: OpenAIServer, sleeps: list[float]) -> None:
    server.respond_next(PATH, Reply.json(503, {"error": {}}, {"x-should-retry": "false"}))
    assert post_chat(make_client(sleeps), server) == 503
    assert sleeps == [] and len(server.requests_to(PATH)) == 1


def test_x_should_retry_true_retries_even_a_4xx(server: OpenAIServer, sleeps: list[float]) -> None:
    server.respond_next(PATH, Reply.json(409, {"error": {}}, {"X-Should-Retry": "true"}))
    assert post_chat(make_client(sleeps), server) == 200
    assert [r.status for r in server.requests_to(PATH)] == [409, 200]


def test_no_sleep_runs_past_the_time_budget(server: OpenAIServer, sleeps: list[float]) -> None:
    server.fail_next(PATH, 429, retry_after=2)
    with pytest.raises(TransientError, match="time budget of 1s spent") as raised:
        post_chat(make_client(sleeps, total_timeout=1.0), server)
    assert raised.value.retry_after == 2.0
    assert sleeps == [] and len(server.requests_to(PATH)) == 1


def test_the_time_budget_bounds_every_attempt() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1/x"
        client = HttpClient(
            service="openai", timeout=30.0, total_timeout=0.5, policy=RetryPolicy(base_delay=0.1)
        )
        began = time.monotonic()
        with pytest.raises(TransientError, match="Timeout"):
            client.request("POST", url, label="/x", json_body={})
    assert time.monotonic() - began < 1.0


def test_malformed_url_is_permanent() -> None:
    with pytest.raises(PermanentError):
        make_client([]).request("GET", f"nothttp://host/bot{API_KEY}", label="x")


@given(
    attempt=st.integers(min_value=1, max_value=60),
    rand=st.floats(min_value=0.0, max_value=1.0),
    base=st.floats(min_value=0.01, max_value=10.0),
    cap=st.floats(min_value=0.01, max_value=100.0),
)
def test_backoff_stays_within_half_and_full_capped_delay(
    attempt: int, rand: float, base: float, cap: float
) -> None:
    policy = RetryPolicy(base_delay=base, max_delay=cap)
    ceiling = min(cap, base * 2 ** (attempt - 1))
    assert ceiling / 2 <= policy.backoff(attempt, lambda: rand) <= ceiling
