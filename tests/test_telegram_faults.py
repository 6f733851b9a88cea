"""The local Bot API server's fault injection for soak runs: answers dropped after the call took
effect, random Telegram-shaped errors, and the counters that report them. Plain `requests` on
the client side, so what is tested is the wire, not the bot's retry policy."""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
import requests

from localapi.telegram_server import TelegramServer

CHAT = 4242
KEYBOARD = {"inline_keyboard": [[{"text": "Send again", "callback_data": "resend:1"}]]}


@pytest.fixture
def server() -> Iterator[TelegramServer]:
    with TelegramServer() as running:
        yield running


def call(server: TelegramServer, method: str, **params: Any) -> requests.Response:
    return requests.post(f"{server.base_url}/bot{server.token}/{method}", json=params, timeout=5)


def send_video(server: TelegramServer, chat_id: int = CHAT) -> requests.Response:
    return requests.post(
        f"{server.base_url}/bot{server.token}/sendVideo",
        data={"chat_id": str(chat_id), "duration": "3"},
        files={"video": ("clip.mp4", b"\x00\x00\x00\x18ftypmp42" * 1000, "video/mp4")},
        timeout=5,
    )


def test_a_dropped_upload_is_recorded_as_sent_and_the_client_sees_a_connection_error(server):
    server.drop_next("sendVideo")
    with pytest.raises(requests.ConnectionError):
        send_video(server)
    [dropped] = server.calls_to("sendVideo")
    assert dropped.dropped and dropped.status == 200
    message_id = dropped.response["result"]["message_id"]
    assert "video" in server.message(CHAT, message_id)
    assert server.videos_by_chat() == {CHAT: 1}
    assert server.fault_counts == {"dropped": 1}

    answered = send_video(server)
    assert answered.json()["result"]["message_id"] == message_id + 1
    assert server.videos_by_chat() == {CHAT: 2}, "a resend after a drop is a duplicate"


def test_drop_next_counts_down_per_method(server):
    server.drop_next("sendMessage", times=2)
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            call(server, "sendMessage", chat_id=CHAT, text="hi")
    assert call(server, "getMe").json()["ok"]
    assert call(server, "sendMessage", chat_id=CHAT, text="hi").json()["ok"]
    assert [c.dropped for c in server.calls_to("sendMessage")] == [True, True, False]
    assert [m["message_id"] for m in server.chat_messages(CHAT)] == [1, 2, 3]


def test_random_errors_are_shaped_like_telegrams(server):
    server.random_faults(1.0, statuses=(429,), retry_after=3, seed=1)
    limited = call(server, "sendMessage", chat_id=CHAT, text="hi")
    assert limited.status_code == 429
    assert limited.json() == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 3",
        "parameters": {"retry_after": 3},
    }
    server.random_faults(1.0, statuses=(502,), seed=1)
    bad_gateway = call(server, "sendMessage", chat_id=CHAT, text="hi")
    assert bad_gateway.status_code == 502
    assert bad_gateway.json() == {"ok": False, "error_code": 502, "description": "Bad Gateway"}
    assert server.chat_messages(CHAT) == [], "an error answer means the call did nothing"
    assert server.fault_counts == {"429": 1, "502": 1}


def test_random_faults_hit_only_the_methods_named_and_switch_off(server):
    server.random_faults(1.0, methods=("editMessageText",), seed=1)
    assert call(server, "sendMessage", chat_id=CHAT, text="hi").json()["ok"]
    assert not call(server, "editMessageText", chat_id=CHAT, message_id=1, text="ho").json()["ok"]
    server.random_faults(0)
    assert call(server, "editMessageText", chat_id=CHAT, message_id=1, text="ho").json()["ok"]
    assert sum(server.fault_counts.values()) == 1


def test_random_drops_hit_only_video_uploads(server):
    server.random_faults(0, drop_uploads=1.0, seed=1)
    assert call(server, "sendMessage", chat_id=CHAT, text="hi").json()["ok"]
    with pytest.raises(requests.ConnectionError):
        send_video(server)
    assert server.fault_counts == {"dropped": 1}


def test_a_seed_replays_the_same_faults(server):
    def statuses(seed: int) -> list[int]:
        server.random_faults(0.5, statuses=(429, 500, 502), seed=seed)
        return [call(server, "getMe").status_code for _ in range(40)]

    first = statuses(7)
    assert first == statuses(7)
    assert {200, 429, 500, 502} <= set(first)


def test_fail_next_comes_before_random_faults_and_is_counted(server):
    server.random_faults(0, drop_uploads=1.0, seed=1)
    server.fail_next("sendVideo", 500)
    assert send_video(server).status_code == 500, "an error answer is never also dropped"
    assert server.videos_by_chat() == {}
    assert server.fault_counts == {"500": 1}


def test_chat_messages_show_the_current_state_of_the_bots_messages(server):
    server.push_message(CHAT, "a user's text")
    call(server, "sendMessage", chat_id=CHAT, text="sending…")
    call(server, "sendMessage", chat_id=CHAT + 1, text="elsewhere")
    call(
        server,
        "editMessageText",
        chat_id=CHAT,
        message_id=2,
        text="may not have arrived",
        reply_markup=json.loads(json.dumps(KEYBOARD)),
    )
    [message] = server.chat_messages(CHAT)
    assert message["text"] == "may not have arrived"
    assert message["reply_markup"] == KEYBOARD
