"""Local stand-ins for the remote APIs the bot talks to, speaking their real wire formats.

`localapi.telegram_server.TelegramServer` plays the Telegram Bot API and
`localapi.openai_server.OpenAIServer` an OpenAI-compatible API. Both are real HTTP servers in a
background thread, used by the tests and by `shared.operator.demo` (`python manage.py demo`),
which wires them to the real webhook, PostgreSQL and worker. Only such stand-ins live here. This
module holds what the servers share: the background server lifecycle and request-body parsing.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import logging
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, NamedTuple, Self
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger(__name__)

SHUTDOWN_POLL_SECONDS = 0.05


class UploadedFile(NamedTuple):
    """One file part of a multipart request."""

    filename: str
    content: bytes


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    dropped: bool = False

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> "Reply":
        body = json.dumps(payload, ensure_ascii=False).encode()
        return cls(status, body, "application/json", headers or {})

    @classmethod
    def no_answer(cls) -> "Reply":
        """Close the connection without sending any response: the client sees the server hang
        up after its request went through (RemoteDisconnected, a requests.ConnectionError)."""
        return cls(0, dropped=True)


class BadBody(ValueError):
    """The request body could not be parsed as its Content-Type says."""


def parse_form(request: Request) -> tuple[dict[str, Any], dict[str, UploadedFile]]:
    """Parameters and files from the query string and a urlencoded, JSON or multipart body."""
    params: dict[str, Any] = dict(request.query)
    files: dict[str, UploadedFile] = {}
    content_type = request.header("content-type")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if not request.body:
        return params, files
    if media_type == "application/json":
        try:
            payload = json.loads(request.body)
        except ValueError:
            raise BadBody("body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise BadBody("JSON body must be an object")
        params.update(payload)
    elif media_type == "multipart/form-data":
        fields, files = parse_multipart(content_type, request.body)
        params.update(fields)
    else:
        params.update(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
    return params, files


def parse_multipart(
    content_type: str, body: bytes
) -> tuple[dict[str, str], dict[str, UploadedFile]]:
    """Split a multipart/form-data body with the stdlib email parser (`cgi` is deprecated)."""
    envelope = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode() + body
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(envelope)
    if not message.is_multipart():
        raise BadBody("multipart body has no parts (missing or wrong boundary?)")
    fields: dict[str, str] = {}
    files: dict[str, UploadedFile] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        content = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files[name] = UploadedFile(filename, content)
        else:
            charset = part.get_content_charset() or "utf-8"
            fields[name] = content.decode(charset, "replace")
    return fields, files


class LocalServer:
    """A `ThreadingHTTPServer` in a daemon thread; subclasses implement `handle`.

    `start()` returns the base URL; `stop()` shuts it down; it is also a context manager.
    Every connection is closed after one response (HTTP/1.0), so a stopped server really stops.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._address = (host, port)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError(f"{type(self).__name__} is not running; call start() first")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        if self._httpd is None:
            self._httpd = ThreadingHTTPServer(self._address, _handler_for(self))
            self._httpd.daemon_threads = True
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
                name=f"{type(self).__name__}-{self._httpd.server_address[1]}",
                daemon=True,
            )
            self._thread.start()
            log.info("local server started server=%s url=%s", type(self).__name__, self.base_url)
        return self.base_url

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        log.info("local server stopped server=%s", type(self).__name__)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def handle(self, request: Request) -> Reply:
        raise NotImplementedError


def _handler_for(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = f"{type(server).__name__}/1.0"

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def do_PUT(self) -> None:
            self._serve()

        def do_DELETE(self) -> None:
            self._serve()

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            url = urlsplit(self.path)
            request = Request(
                method=self.command,
                path=url.path,
                query=dict(parse_qsl(url.query, keep_blank_values=True)),
                headers={name.lower(): value for name, value in self.headers.items()},
                body=body,
            )
            try:
                reply = server.handle(request)
            except Exception:
                log.exception("local server handler failed server=%s", type(server).__name__)
                reply = Reply.json(500, {"error": "internal error in the local server"})
            self._send(reply)

        def _send(self, reply: Reply) -> None:
            if reply.dropped:
                self.close_connection = True
                return
            try:
                self.send_response(reply.status, HTTPStatus(reply.status).phrase)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(reply.body)
            except (BrokenPipeError, ConnectionResetError):
                log.info("local server client went away server=%s", type(server).__name__)

        def log_message(self, format: str, *args: Any) -> None:
            """Silence the default stderr access log (it would print the bot token)."""

    return Handler
