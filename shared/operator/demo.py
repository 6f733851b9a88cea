"""`python manage.py demo "DESCRIPTION"`: the whole bot on one machine, through its real paths.

The only stand-in is the Telegram Bot API: `localapi.telegram_server.TelegramServer`, a real
HTTP server in this process, plays api.telegram.org. Everything of ours runs as deployed:
PostgreSQL (embedded unless DATABASE_URL is set, in DATABASE_SCHEMA), the webhook's Flask app
served over HTTP on 127.0.0.1 and registered with setWebhook and a secret, the user's messages
and button presses delivered to it as Telegram updates, and the worker's `run_tick` in this
process. What the bot says is shown as a chat (from the calls the local server records) and
kept as a transcript; the MP4 the server received in sendVideo is written to disk.

The settings are the environment's with the demo's own on top (the local Bot API and its token,
a fresh webhook secret, the video flags); the environment itself is left as it is. The worker's
`start` and `run_tick` are passed in by `manage.py`, as shared/ never imports functions/.
"""

from __future__ import annotations

import logging
import os
import random
import re
import secrets
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, TextIO

import flask
from werkzeug.serving import BaseWSGIServer, make_server

from localapi.telegram_server import RecordedCall, TelegramServer
from shared import db as dbmod
from shared import queue
from shared.buttons import parse_callback_data
from shared.config import REPO_ROOT, Settings, load_settings
from shared.errors import PermanentError
from shared.logs import setup_logging
from shared.media import probe
from shared.operator import ops
from shared.providers import Providers
from shared.telegram import TelegramClient
from shared.texts import TEXTS
from shared.webhook import create_app, webhook_of

log = logging.getLogger(__name__)

BAR_CELLS = 10
CONTINUATION_INDENT = " " * 8
EDIT_WAIT_SECONDS = 3.0
HEALTH_TIMEOUT_SECONDS = 60.0
ANSWER_ACTIONS = {
    "": "approve",
    "y": "approve",
    "yes": "approve",
    "r": "regenerate",
    "regenerate": "regenerate",
    "c": "cancel",
    "cancel": "cancel",
}


StartWorker = Callable[[Settings], tuple[dbmod.Database, TelegramClient, Providers]]
RunTick = Callable[[Settings, dbmod.Database, TelegramClient, Providers], int]


class DemoError(PermanentError):
    """The demo cannot go on; the message says why."""


@dataclass(frozen=True)
class DemoOptions:
    """The command line of `manage.py demo`; None video settings keep VIDEO_FORMAT/SECONDS."""

    description: str
    language: str
    interactive: bool
    out: Path | None
    video_format: str | None
    video_seconds: int | None
    verbose: bool


# ---- the chat on the terminal ------------------------------------------------------------------


@dataclass(frozen=True)
class StatusLine:
    """The job's status message at one moment: a stage label and, for some stages, a percentage
    or the counts the text shows ("scene 2 of 6": `text`, the message as it reads)."""

    label: str
    pct: int | None = None
    text: str | None = None

    def render(self) -> str:
        if self.pct is None:
            return f"🤖 bot: {self.text or self.label}"
        filled = self.pct * BAR_CELLS // 100
        return f"🤖 bot: {self.label}  [{'█' * filled}{'░' * (BAR_CELLS - filled)}] {self.pct}%"


_PLACEHOLDER = re.compile(r"\\\{(\w+)\\\}")
"""A `{name}` placeholder in an escaped template."""


def _status_patterns() -> list[tuple[re.Pattern[str], str]]:
    """(pattern, label) for every `progress_*` text, so status messages are told from chat. The
    label is the text before its first placeholder; each placeholder is a number (`pct`, or a
    count such as "scene 2 of 6")."""
    patterns = []
    for key, variants in TEXTS.items():
        if not key.startswith("progress_"):
            continue
        for template in variants.values():
            label = re.split(r"\{\w+\}", template)[0].strip()
            regex = _PLACEHOLDER.sub(r"(?P<\1>\\d{1,3})", re.escape(template))
            patterns.append((re.compile(regex), label))
    return patterns


class ChatPrinter:
    """Shows the conversation as it happens and keeps it as a transcript.

    Status messages become one line per stage, redrawn in place on a terminal (written once,
    in its final state, when the output is a file or a pipe). A stage with a percentage that is
    followed by the next stage did finish, so it is shown at 100%.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._redraw = stream.isatty()
        self._lock = threading.RLock()
        self._lines: list[str] = []
        self._status: StatusLine | None = None
        self._shown_texts: dict[int, str] = {}
        self._status_patterns = _status_patterns()

    @property
    def transcript(self) -> str:
        with self._lock:
            return "\n".join(self._lines) + "\n"

    def say(self, line: str) -> None:
        """Print a line of the chat (or a note about it) and keep it in the transcript."""
        with self._lock:
            self._end_status()
            self._lines.append(line)
            self._stream.write(line + "\n")
            self._stream.flush()

    def finish(self) -> None:
        """Write out the status line still being drawn, if any."""
        with self._lock:
            self._end_status()

    def on_call(self, call: RecordedCall) -> None:
        """TelegramServer observer: show what the bot just did. Never raises into the server."""
        try:
            self._show_call(call)
        except Exception:
            log.exception("chat printer failed method=%s", call.method)

    def _show_call(self, call: RecordedCall) -> None:
        if call.status != 200:
            log.info("telegram call refused method=%s status=%s", call.method, call.status)
            return
        result = call.response.get("result")
        message = result if isinstance(result, dict) else {}
        with self._lock:
            if call.method == "sendMessage":
                self._show_message(message["message_id"], message["text"], message)
            elif call.method in ("editMessageText", "editMessageCaption"):
                text = message.get("text", message.get("caption", ""))
                self._show_edit(message["message_id"], text)
            elif call.method == "sendPhoto":
                self._show_photo(message)
            elif call.method == "sendVideo":
                self._show_video(message)
            elif call.method == "answerCallbackQuery" and call.params.get("text"):
                self.say(f"🤖 bot (pop-up): {call.params['text']}")

    def _show_message(self, message_id: int, text: str, message: dict[str, Any]) -> None:
        status = self._parse_status(text)
        if status is not None:
            self._show_status(status)
            return
        self._shown_texts[message_id] = text
        self.say(_bot_line(text, message))

    def _show_edit(self, message_id: int, text: str) -> None:
        status = self._parse_status(text)
        if status is not None:
            self._show_status(status)
            return
        before = self._shown_texts.get(message_id, "")
        self._shown_texts[message_id] = text
        change = text[len(before) :].strip() if before and text.startswith(before) else text
        self.say(_indented(f"🤖 bot ✏️ edited its message: {change}"))

    def _show_photo(self, message: dict[str, Any]) -> None:
        largest = message["photo"][-1]
        caption = message.get("caption", "")
        self._shown_texts[message["message_id"]] = caption
        self.say(_bot_line(f"[photo {largest['width']}x{largest['height']}] {caption}", message))

    def _show_video(self, message: dict[str, Any]) -> None:
        video = message["video"]
        size = ops.format_bytes(video["file_size"])
        described = f"[video {video['duration']} s, {video['width']}x{video['height']}, {size}]"
        self.say(_bot_line(f"{described} {message.get('caption', '')}", message))

    def _parse_status(self, text: str) -> StatusLine | None:
        for pattern, label in self._status_patterns:
            match = pattern.fullmatch(text)
            if match is not None:
                pct = match.groupdict().get("pct")
                if pct is not None:
                    return StatusLine(label, int(pct))
                return StatusLine(label, text=text if match.groupdict() else None)
        return None

    def _show_status(self, status: StatusLine) -> None:
        current = self._status
        if current is not None and current.label != status.label:
            if current.pct is not None:
                self._status = replace(current, pct=100)
            self._end_status()
        self._status = status
        if self._redraw:
            self._stream.write("\r\033[K" + status.render())
            self._stream.flush()

    def _end_status(self) -> None:
        """Leave the status line as it is and go on below it."""
        if self._status is None:
            return
        line = self._status.render()
        self._status = None
        self._lines.append(line)
        self._stream.write(("\r\033[K" if self._redraw else "") + line + "\n")
        self._stream.flush()


def _indented(text: str) -> str:
    """Continuation lines under the speaker's name; blank lines stay blank."""
    first, *rest = text.split("\n")
    return "\n".join([first] + [CONTINUATION_INDENT + line if line else "" for line in rest])


def _buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    keyboard = (message.get("reply_markup") or {}).get("inline_keyboard") or []
    return [button for row in keyboard for button in row]


def _bot_line(text: str, message: dict[str, Any]) -> str:
    """`🤖 bot: text`, with the inline buttons below it as `[✅ Approve] [🔁 Regenerate] …`."""
    line = _indented(f"🤖 bot: {text}")
    buttons = _buttons(message)
    if buttons:
        line += "\n" + CONTINUATION_INDENT + " ".join(f"[{button['text']}]" for button in buttons)
    return line


# ---- the webhook over HTTP ---------------------------------------------------------------------


class WebhookServer:
    """The webhook's Flask app on 127.0.0.1 in a background thread.

    One request at a time: the webhook keeps one database connection per thread, so a single
    serving thread keeps one connection for the whole demo.
    """

    def __init__(self, app: flask.Flask) -> None:
        self._app = app
        self._server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=False)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="demo-webhook", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        webhook_of(self._app).close()

    def wait_until_healthy(self) -> None:
        """GET /healthz, which also connects the webhook to PostgreSQL and migrates the schema."""
        try:
            with urllib.request.urlopen(self.url + "healthz", timeout=HEALTH_TIMEOUT_SECONDS):
                return
        except urllib.error.HTTPError as exc:
            raise DemoError(
                f"the webhook is not healthy: HTTP {exc.code} {exc.read()[:200]!r}"
            ) from None
        except OSError as exc:
            raise DemoError(f"the webhook does not answer: {exc}") from None


# ---- the demo ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoUser:
    """The demo's Telegram user: new on every run, so the per-user job limits of earlier demos
    in the same schema never get in the way."""

    language: str
    user_id: int = field(default_factory=lambda: random.randint(10**9, 2**31 - 1))


@dataclass
class Worker:
    """What `run_tick` needs, as the worker's own `start` builds it."""

    settings: Settings
    database: dbmod.Database
    telegram: TelegramClient
    providers: Providers
    run_tick: RunTick

    def tick(self) -> int:
        return self.run_tick(self.settings, self.database, self.telegram, self.providers)


class Demo:
    """One demo run: the user's side of the chat, the worker's ticks, the presses at the gates."""

    def __init__(
        self,
        options: DemoOptions,
        telegram_server: TelegramServer,
        worker: Worker,
        printer: ChatPrinter,
        user: DemoUser,
    ) -> None:
        self._options = options
        self._server = telegram_server
        self._worker = worker
        self._printer = printer
        self._user = user
        self._pressed_messages: set[int] = set()

    def send(self, text: str) -> None:
        """The user writes `text`; it reaches the webhook as an update, like on Telegram."""
        self._printer.say(_indented(f"👤 you: {text}"))
        self._server.push_message(
            self._user.user_id, text, first_name="Demo", language_code=self._user.language
        )
        self._check_delivered()

    def _check_delivered(self) -> None:
        info = self._worker.telegram.get_webhook_info()
        if info.get("pending_update_count"):
            reason = info.get("last_error_message") or "no reason given"
            raise DemoError(f"the webhook did not accept the update: {reason}")

    def created_job_id(self) -> int:
        jobs = self._worker.database.run("recent_jobs", user_id=self._user.user_id, limit=1)
        if not jobs:
            raise DemoError("the bot did not take the description as a job (see its answer above)")
        return jobs[0]["id"]

    def run_job(self, job_id: int) -> dict[str, Any]:
        """Run worker ticks, deciding at each gate, until the job is done, failed or cancelled."""
        while True:
            ran = self._worker.tick()
            job = ops.get_job(self._worker.database, job_id)
            if job["state"] in queue.FINAL_STATES:
                return job
            if job["state"] == "waiting" and job["gate_message_id"] not in self._pressed_messages:
                self._decide(job)
            elif ran == 0:
                time.sleep(self._worker.settings.worker_poll_seconds)

    def _decide(self, job: dict[str, Any]) -> None:
        action = self._ask(job["gate"]) if self._options.interactive else "approve"
        message_id = job["gate_message_id"]
        message = self._server.message(self._user.user_id, message_id)
        button = _button_for(message, action)
        self._pressed_messages.add(message_id)
        self._printer.say(f"👤 you: pressed [{button['text']}]")
        self._server.push_callback_query(
            self._user.user_id,
            message_id,
            button["callback_data"],
            language_code=self._user.language,
        )
        self._check_delivered()
        self._wait_for_decision_edit(message_id, "photo" in message or "video" in message)

    def _ask(self, gate: str) -> str:
        while True:
            try:
                answer = input(f"   {gate}: Approve? [y]es / [r]egenerate / [c]ancel: ")
            except EOFError:
                return "cancel"
            action = ANSWER_ACTIONS.get(answer.strip().lower())
            if action is not None:
                return action

    def _wait_for_decision_edit(self, message_id: int, is_media: bool) -> None:
        """The webhook edits the gate message after answering; let it show before the worker
        goes on, so the chat reads in order. A missing edit only costs that line."""
        try:
            self._server.wait_for(
                "editMessageCaption" if is_media else "editMessageText",
                lambda call: call.params.get("message_id") == message_id,
                timeout=EDIT_WAIT_SECONDS,
            )
        except TimeoutError:
            log.info("gate message not edited message=%s", message_id)


def _button_for(message: dict[str, Any], action: str) -> dict[str, Any]:
    """The gate message's own button for `action`, with the callback_data it really carries."""
    for button in _buttons(message):
        press = parse_callback_data(button.get("callback_data"))
        if press is not None and press.action == action:
            return button
    raise DemoError(f"the gate message has no {action} button")


def _demo_settings(options: DemoOptions, telegram_server: TelegramServer) -> Settings:
    """The environment's settings with the demo's on top: the local Bot API and its token, a
    fresh webhook secret, the video flags (checked as the variables would be)."""
    overrides = {
        "TELEGRAM_API_BASE": telegram_server.base_url,
        "TELEGRAM_BOT_TOKEN": telegram_server.token,
        "TELEGRAM_WEBHOOK_SECRET": secrets.token_urlsafe(32),
    }
    if options.video_format is not None:
        overrides["VIDEO_FORMAT"] = options.video_format
    if options.video_seconds is not None:
        overrides["VIDEO_SECONDS"] = str(options.video_seconds)
    return load_settings({**os.environ, **overrides})


def _delivered_video(telegram_server: TelegramServer) -> bytes | None:
    """The bytes of the video the bot uploaded with sendVideo, if it did."""
    sent = [call for call in telegram_server.calls_to("sendVideo") if call.status == 200]
    return sent[-1].files["video"].content if sent else None


def _save_results(
    printer: ChatPrinter, video: bytes | None, job_id: int, out: Path | None
) -> tuple[Path | None, Path]:
    """Write the video (if any) and the transcript; return their paths."""
    video_path = (out or REPO_ROOT / "out" / f"demo-{job_id}.mp4").resolve()
    transcript_path = video_path.with_suffix(".txt")
    video_path.parent.mkdir(parents=True, exist_ok=True)
    transcript_path.write_text(printer.transcript, encoding="utf-8")
    if video is None:
        return None, transcript_path
    video_path.write_bytes(video)
    return video_path, transcript_path


def _report(job: dict[str, Any], video_path: Path | None, transcript_path: Path) -> int:
    print()
    if job["state"] == "done" and video_path is not None:
        info = probe(video_path)
        print(f"✅ video: {video_path}")
        print(
            f"   {info.duration:.1f} s, {info.width}x{info.height} {info.video_codec}, "
            f"{ops.format_bytes(video_path.stat().st_size)}"
        )
        exit_code = 0
    else:
        reason = job["last_error"] or job["cancel_reason"] or "no video was delivered"
        print(f"❌ job {job['id']} {job['state']}: {reason}", file=sys.stderr)
        exit_code = 1
    print(f"📝 transcript: {transcript_path}")
    print(f"🔎 the job in PostgreSQL: python manage.py show {job['id']}")
    return exit_code


def run(options: DemoOptions, start_worker: StartWorker, run_tick: RunTick) -> int:
    """Run the demo end to end; 0 when a video was delivered, 1 otherwise.

    Logs are WARNING and above only (INFO with -v), so that the chat stays readable.
    """
    setup_logging("INFO" if options.verbose else "WARNING")
    printer = ChatPrinter(sys.stdout)
    # Update ids above any an earlier demo recorded in this schema (microseconds since the
    # epoch), so that none is taken for a redelivery.
    with TelegramServer(first_update_id=time.time_ns() // 1000) as telegram_server:
        telegram_server.on_call(printer.on_call)
        settings = _demo_settings(options, telegram_server)
        print(
            f"Starting: {dbmod.describe(settings)}; Telegram Bot API stand-in at "
            f"{telegram_server.base_url}"
        )
        database, client, providers = start_worker(settings)
        webhook = WebhookServer(create_app(settings))
        webhook.start()
        try:
            worker = Worker(settings, database, client, providers, run_tick)
            return _converse(options, settings, telegram_server, webhook, worker, printer)
        finally:
            webhook.stop()
            database.close()


def _converse(
    options: DemoOptions,
    settings: Settings,
    telegram_server: TelegramServer,
    webhook: WebhookServer,
    worker: Worker,
    printer: ChatPrinter,
) -> int:
    """Register the webhook as an owner would, then chat until the job ends."""
    webhook.wait_until_healthy()
    worker.telegram.set_webhook(
        webhook.url, settings.webhook_secret_token, list(ops.WEBHOOK_UPDATES)
    )
    print(f"Webhook at {webhook.url}; video {settings.video_format}, {settings.video_seconds} s\n")
    user = DemoUser(options.language)
    demo = Demo(options, telegram_server, worker, printer, user)
    demo.send("/start")
    demo.send(options.description)
    job_id = demo.created_job_id()
    log.info("demo job created job=%s user=%s", job_id, user.user_id)
    try:
        job = demo.run_job(job_id)
    except KeyboardInterrupt:
        printer.say(
            f"interrupted: job {job_id} stays as it is (python manage.py cancel {job_id} stops it)"
        )
        return 1
    printer.finish()
    video_path, transcript_path = _save_results(
        printer, _delivered_video(telegram_server), job_id, options.out
    )
    return _report(job, video_path, transcript_path)
