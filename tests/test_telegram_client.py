"""TelegramClient against the local Bot API server, over real HTTP."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests
from PIL import Image

from localapi import LocalServer, Reply, Request
from localapi.telegram_server import TelegramServer
from shared.errors import TransientError
from shared.http import RetryPolicy
from shared.telegram import (
    MAX_CAPTION_CHARS,
    MAX_TEXT_CHARS,
    ChatBlocked,
    TelegramClient,
    TelegramError,
    fit_text,
)

TOKEN = "987654:AAH-secret-token_value"
CHAT = 4242
KEYBOARD = {"inline_keyboard": [[{"text": "Approve", "callback_data": "approve:17"}]]}


@pytest.fixture
def server() -> Iterator[TelegramServer]:
    with TelegramServer(TOKEN, upload_limit_bytes=64 * 1024) as running:
        yield running


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(server: TelegramServer, sleeps: list[float]) -> TelegramClient:
    return TelegramClient(
        TOKEN,
        server.base_url,
        sleep=sleeps.append,
        timeout=5.0,
        policy=RetryPolicy(max_attempts=3, base_delay=0.1, max_delay=10.0),
    )


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "still.png"
    Image.new("RGB", (360, 640), (20, 120, 200)).save(path)
    return path


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    return path


def test_get_me_and_message_ids_rise_per_chat(client: TelegramClient) -> None:
    assert client.get_me()["is_bot"] is True
    first = client.send_message(CHAT, "one")
    second = client.send_message(CHAT, "two")
    other = client.send_message(CHAT + 1, "elsewhere")
    assert (first["message_id"], second["message_id"], other["message_id"]) == (1, 2, 1)
    assert second["chat"]["id"] == CHAT and second["text"] == "two"
    assert isinstance(second["date"], int)


def test_429_retry_after_is_honoured(
    client: TelegramClient, server: TelegramServer, sleeps: list[float]
) -> None:
    server.fail_next("sendMessage", 429, retry_after=3)
    message = client.send_message(CHAT, "hello", reply_markup=KEYBOARD)
    assert sleeps == [3.0]
    assert [call.status for call in server.calls_to("sendMessage")] == [429, 200]
    assert message["reply_markup"] == KEYBOARD


def test_5xx_is_retried_then_succeeds(
    client: TelegramClient, server: TelegramServer, sleeps: list[float]
) -> None:
    server.fail_next("sendMessage", 500, times=2)
    client.send_message(CHAT, "hello")
    assert len(sleeps) == 2
    assert [call.status for call in server.calls_to("sendMessage")] == [500, 500, 200]


def test_persistent_5xx_becomes_transient_error(
    client: TelegramClient, server: TelegramServer
) -> None:
    server.fail_next("sendChatAction", 502, times=3)
    with pytest.raises(TransientError):
        client.send_chat_action(CHAT, "upload_video")
    assert len(server.calls_to("sendChatAction")) == 3


@pytest.mark.parametrize(
    "description",
    [
        "Forbidden: bot was blocked by the user",
        "Forbidden: user is deactivated",
    ],
)
def test_blocked_user_raises_chat_blocked_without_retry(
    client: TelegramClient, server: TelegramServer, sleeps: list[float], description: str
) -> None:
    server.fail_next("sendMessage", 403, description=description)
    with pytest.raises(ChatBlocked) as raised:
        client.send_message(CHAT, "hello")
    assert raised.value.error_code == 403
    assert len(server.calls_to("sendMessage")) == 1 and sleeps == []


def test_block_chat_blocks_every_later_send(
    client: TelegramClient, server: TelegramServer, photo: Path
) -> None:
    client.send_message(CHAT, "before")
    server.block_chat(CHAT)
    with pytest.raises(ChatBlocked):
        client.send_message(CHAT, "after")
    with pytest.raises(ChatBlocked):
        client.send_photo(CHAT, photo)
    assert client.send_message(CHAT + 1, "another user")["message_id"] == 1


def test_other_403_is_a_plain_final_error(client: TelegramClient, server: TelegramServer) -> None:
    server.fail_next(
        "sendMessage", 403, description="Forbidden: bot can't initiate conversation with a user"
    )
    with pytest.raises(TelegramError) as raised:
        client.send_message(CHAT, "hello")
    assert not isinstance(raised.value, ChatBlocked)


def test_wrong_token_is_401_and_the_token_stays_secret(
    server: TelegramServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "111:wrong-token-value"
    with pytest.raises(TelegramError) as raised:
        TelegramClient(wrong, server.base_url).get_me()
    assert (raised.value.error_code, raised.value.description) == (401, "Unauthorized")
    assert wrong not in str(raised.value) and wrong not in caplog.text


def test_not_modified_edit_is_not_an_error(client: TelegramClient) -> None:
    sent = client.send_message(CHAT, "Script ready", reply_markup=KEYBOARD)
    assert (
        client.edit_message_text(CHAT, sent["message_id"], "Script ready", reply_markup=KEYBOARD)
        is None
    )
    edited = client.edit_message_text(CHAT, sent["message_id"], "Rendering…")
    assert edited["text"] == "Rendering…" and "reply_markup" not in edited


def test_edit_reply_markup_and_caption(client: TelegramClient, photo: Path) -> None:
    sent = client.send_photo(CHAT, photo, caption="Storyboard", reply_markup=KEYBOARD)
    assert (
        client.edit_message_reply_markup(CHAT, sent["message_id"])["message_id"]
        == (sent["message_id"])
    )
    assert client.edit_message_reply_markup(CHAT, sent["message_id"]) is None
    edited = client.edit_message_caption(CHAT, sent["message_id"], "Approved")
    assert edited["caption"] == "Approved"
    with pytest.raises(TelegramError, match="message to edit not found"):
        client.edit_message_text(CHAT, 999, "nothing there")


def test_long_texts_are_cut_to_telegram_limits(
    client: TelegramClient, server: TelegramServer, photo: Path
) -> None:
    text = "🎬" * 3000
    sent = client.send_message(CHAT, text)
    assert sent["text"].endswith("…")
    assert len(sent["text"].encode("utf-16-le")) // 2 <= MAX_TEXT_CHARS
    assert sent["text"][:-1] == "🎬" * len(sent["text"][:-1])
    captioned = client.send_photo(CHAT, photo, caption="x" * 2000)
    assert len(captioned["caption"]) == MAX_CAPTION_CHARS


def test_fit_text_leaves_short_text_alone() -> None:
    assert fit_text("short", 10) == "short"
    assert fit_text("abcdefghijk", 5) == "abcd…"


def test_empty_text_and_bad_button_data_are_refused(client: TelegramClient) -> None:
    with pytest.raises(TelegramError, match="message text is empty"):
        client.send_message(CHAT, "   ")
    too_long = {"inline_keyboard": [[{"text": "Go", "callback_data": "x" * 65}]]}
    with pytest.raises(TelegramError, match="BUTTON_DATA_INVALID") as raised:
        client.send_message(CHAT, "hello", reply_markup=too_long)
    assert raised.value.error_code == 400


def test_send_photo_is_multipart_with_the_file(
    client: TelegramClient, server: TelegramServer, photo: Path
) -> None:
    message = client.send_photo(CHAT, photo, caption="Scene 1", reply_markup=KEYBOARD)
    call = server.wait_for("sendPhoto")
    assert call.params["chat_id"] == CHAT and call.params["caption"] == "Scene 1"
    assert call.params["reply_markup"] == KEYBOARD
    assert call.files["photo"] == ("still.png", photo.read_bytes())
    largest = message["photo"][-1]
    assert (largest["width"], largest["height"]) == (360, 640)
    assert server.file_content(largest["file_id"]) == photo.read_bytes()


def test_send_video_sends_thumbnail_as_attachment(
    client: TelegramClient, server: TelegramServer, video: Path, photo: Path
) -> None:
    message = client.send_video(
        CHAT, video, duration=29.6, width=720, height=1280, thumbnail=photo, caption="Done"
    )
    call = server.wait_for("sendVideo")
    assert call.params["thumbnail"] == "attach://thumbnail"
    assert call.params["supports_streaming"] is True
    assert (call.params["duration"], call.params["width"], call.params["height"]) == (30, 720, 1280)
    filename, content = call.files["video"]
    assert (filename, content) == ("clip.mp4", video.read_bytes())
    assert call.files["thumbnail"].content == photo.read_bytes()
    sent = message["video"]
    assert (sent["duration"], sent["width"], sent["height"]) == (30, 720, 1280)
    assert sent["thumbnail"]["height"] == 640 and message["caption"] == "Done"


def test_multipart_upload_is_resent_whole_after_a_5xx(
    client: TelegramClient, server: TelegramServer, video: Path
) -> None:
    server.fail_next("sendVideo", 500)
    client.send_video(CHAT, video, duration=3, width=720, height=1280)
    attempts = server.calls_to("sendVideo")
    assert [call.status for call in attempts] == [500, 200]
    assert all(call.files["video"].content == video.read_bytes() for call in attempts)


def test_video_over_the_upload_limit_is_413(client: TelegramClient, tmp_path: Path) -> None:
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\x00" * (65 * 1024))
    with pytest.raises(TelegramError) as raised:
        client.send_video(CHAT, big, duration=3, width=720, height=1280)
    assert raised.value.error_code == 413


def test_chat_action_and_callback_answer(client: TelegramClient, server: TelegramServer) -> None:
    assert client.send_chat_action(CHAT, "upload_video") is True
    assert client.answer_callback_query("cbq-1", text="y" * 500, show_alert=True) is True
    call = server.wait_for("answerCallbackQuery")
    assert len(call.params["text"]) == 200 and call.params["show_alert"] is True
    with pytest.raises(TelegramError, match="wrong parameter action"):
        client.send_chat_action(CHAT, "dancing")


def test_get_updates_offset_and_long_poll(client: TelegramClient, server: TelegramServer) -> None:
    first = server.push_message(CHAT, "/start")
    updates = client.get_updates(timeout=0)
    assert [u["update_id"] for u in updates] == [first["update_id"]]
    assert updates[0]["message"]["entities"][0]["type"] == "bot_command"
    confirmed = first["update_id"] + 1
    assert client.get_updates(offset=confirmed, timeout=0) == []

    threading.Timer(0.3, server.push_message, args=(CHAT, "a cat on the moon")).start()
    started = time.monotonic()
    updates = client.get_updates(offset=confirmed, timeout=5)
    assert time.monotonic() - started < 3
    assert updates[0]["message"]["text"] == "a cat on the moon"


def test_callback_query_update_carries_the_message(
    client: TelegramClient, server: TelegramServer
) -> None:
    sent = client.send_message(CHAT, "Approve?", reply_markup=KEYBOARD)
    server.push_callback_query(CHAT, sent["message_id"], "approve:17")
    update = client.get_updates(allowed_updates=["callback_query"])[0]
    assert update["callback_query"]["data"] == "approve:17"
    assert update["callback_query"]["message"]["message_id"] == sent["message_id"]


class WebhookReceiver(LocalServer):
    """Records webhook deliveries; answers `status`, optionally with a webhook-reply body."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[dict, str]] = []
        self.status = 200
        self.reply_body: dict | None = None

    def handle(self, request: Request) -> Reply:
        self.received.append(
            (json.loads(request.body), request.header("x-telegram-bot-api-secret-token"))
        )
        return Reply.json(self.status, self.reply_body or {})


def test_webhook_delivery_secret_and_pending_count(
    client: TelegramClient, server: TelegramServer
) -> None:
    with WebhookReceiver() as receiver:
        assert client.set_webhook(f"{receiver.base_url}/hook", "s3cr3t_-", ["message"])
        with pytest.raises(TelegramError) as raised:
            client.get_updates()
        assert raised.value.error_code == 409

        receiver.reply_body = {"method": "sendMessage", "chat_id": CHAT, "text": "Got it"}
        server.push_message(CHAT, "hello")
        assert receiver.received[0][0]["message"]["text"] == "hello"
        assert receiver.received[0][1] == "s3cr3t_-"
        assert server.wait_for("sendMessage").params["text"] == "Got it"

        receiver.status = 500
        server.push_message(CHAT, "while down")
        info = client.get_webhook_info()
        assert info["url"].endswith("/hook") and info["pending_update_count"] == 1
        assert "500" in info["last_error_message"]

        receiver.status = 200
        assert server.deliver_pending() == 1
        assert client.get_webhook_info()["pending_update_count"] == 0
    assert client.delete_webhook() is True
    assert client.get_webhook_info()["url"] == ""


def test_bad_webhook_secret_is_refused(client: TelegramClient) -> None:
    with pytest.raises(TelegramError, match="secret token"):
        client.set_webhook("https://example.com/hook", "no spaces!", ["message"])


def test_token_never_logged_even_on_connection_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    sleeps: list[float] = []
    client = TelegramClient(
        TOKEN,
        f"http://127.0.0.1:{closed_port}",
        sleep=sleeps.append,
        policy=RetryPolicy(max_attempts=2),
    )
    with pytest.raises(TransientError) as raised:
        client.send_message(CHAT, "hello")
    assert TOKEN not in str(raised.value) and "bot***" in str(raised.value)
    assert TOKEN not in caplog.text
    assert raised.value.__context__ is None
    assert len(sleeps) == 1


def test_server_logs_never_contain_the_token(
    client: TelegramClient, server: TelegramServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.fail_next("sendMessage", 429, retry_after=1)
    client.send_message(CHAT, "hello")
    with pytest.raises(TelegramError):
        client.edit_message_text(CHAT, 77, "missing")
    assert caplog.records and TOKEN not in caplog.text


def test_on_call_sees_every_call(client: TelegramClient, server: TelegramServer) -> None:
    seen: list[str] = []
    server.on_call(lambda call: seen.append(call.method))
    client.send_message(CHAT, "hi")
    client.send_chat_action(CHAT, "typing")
    assert seen == ["sendMessage", "sendChatAction"]


def test_unknown_method_is_404(client: TelegramClient) -> None:
    with pytest.raises(TelegramError) as raised:
        client.call("sendTeleportation", chat_id=CHAT)
    assert raised.value.error_code == 404


def test_server_accepts_get_query_and_urlencoded_forms(server: TelegramServer) -> None:
    base = f"{server.base_url}/bot{TOKEN}"
    by_query = requests.get(
        f"{base}/sendMessage", params={"chat_id": CHAT, "text": "hi"}, timeout=5
    ).json()
    assert by_query["ok"] is True and by_query["result"]["text"] == "hi"
    by_form = requests.post(
        f"{base}/sendMessage",
        timeout=5,
        data={"chat_id": str(CHAT), "text": "pick", "reply_markup": json.dumps(KEYBOARD)},
    ).json()
    assert by_form["result"]["reply_markup"] == KEYBOARD
    not_json = requests.post(
        f"{base}/sendMessage", data="{", timeout=5, headers={"Content-Type": "application/json"}
    )
    assert not_json.status_code == 400 and not_json.json()["ok"] is False
