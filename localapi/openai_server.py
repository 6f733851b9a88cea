"""A local OpenAI-compatible API server for tests and the demo.

Routes (under `/v1`, so `start()` returns a base URL ending in `/v1`, like OPENAI_BASE_URL):
- POST /chat/completions: a `chat.completion` whose content is a scene plan derived
  deterministically from the user's prompt; with `response_format.json_schema` the JSON follows
  that schema's fields;
- POST /audio/speech: a real WAV (a syllable-like tone sequence, ~14 characters per second);
- POST /images/generations: `b64_json` of a real PNG drawn with Pillow at the requested size;
- POST /audio/transcriptions (multipart): the transcript registered for the file's bytes with
  `add_transcript` (none: nothing heard), as json, text, verbose_json, srt or vtt; the 25 MB
  limit and the supported file formats as OpenAI answers them. whisper-1 also gives word
  timestamps (`response_format=verbose_json`, `timestamp_granularities[]=word`): the ones
  registered with the transcript, else its words spread over the sound in the WAV.
Every route needs `Authorization: Bearer <api_key>` and answers errors with OpenAI's error body.
Faults: `fail_next(path, status)`, `bad_json_next(n)`, `respond_next(path, ...)`, and `delay`
(seconds every answer waits, to play a hung server). Latency: `image_seconds` and
`speech_seconds`, how long a picture and a voice take to make (requests are served side by side,
so a benchmark can model gpt-image-1's 30-60 s and a crowd of jobs).

`flavor` plays another server family behind the same routes (see `FLAVORS`): one that refuses
some `response_format` types with that family's real 400 body, wraps the JSON in a Markdown fence,
a `<think>` block or prose, or answers every request with an error the owner has to fix.
"""

from __future__ import annotations

import array
import base64
import hashlib
import io
import json
import math
import re
import sys
import threading
import time
import wave
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Sequence

from PIL import Image, ImageDraw, ImageFont

from localapi import BadBody, LocalServer, Reply, Request, UploadedFile, parse_form
from shared.media import FONT_PATH

DEFAULT_API_KEY = "sk-local-test-key"
SPEECH_CHARS_PER_SECOND = 14.0
SPEECH_SAMPLE_RATE = 24_000
MAX_SPEECH_INPUT_CHARS = 4096
UNKNOWN_SIZE = b"\xff\xff\xff\xff"
IMAGE_SIZES = {
    "gpt-image": ("1024x1024", "1536x1024", "1024x1536", "auto"),
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
    "dall-e-2": ("256x256", "512x512", "1024x1024"),
}
NOT_JSON_REPLY = "Sure! Here is a great plan for your video: first we show the"
_SECONDS_RE = re.compile(r"(\d{1,3})\s*(?:seconds|second|secs|sec|s\b|секунд)", re.IGNORECASE)
_LANGUAGE_RE = re.compile(r"\blanguage(?: code)?:\s*([a-z]{2})\b", re.IGNORECASE)
_DEFAULT_SCENE_FIELDS = ("narration", "on_screen_text", "visual_prompt", "duration")
MAX_TRANSCRIPTION_BYTES = 25 * 1024 * 1024
TRANSCRIPTION_FORMATS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
TRANSCRIPTION_RESPONSES = ("json", "text", "srt", "verbose_json", "vtt")
LANGUAGE_NAMES = {"en": "english", "ru": "russian", "de": "german", "ja": "japanese"}
TIMESTAMP_GRANULARITIES = ("word", "segment")
SOUND_LEVEL = 500


class OpenAIError(Exception):
    """An error answer with OpenAI's `{"error": {...}}` body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {
            "error": {"message": message, "type": error_type, "param": param, "code": code}
        }
        self.headers = headers or {}

    def reply(self) -> Reply:
        return Reply.json(self.status, self.body, self.headers)


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: Any
    status: int
    at: float


@dataclass(frozen=True)
class Flavor:
    """How a server family departs from OpenAI.

    `refuses` maps a `response_format.type` to the 400 that family answers it with; `wrap` puts
    text around the JSON content when no `json_schema` constrains it (`"{json}"` marks where);
    `constrained_wrap` does so even under `json_schema`; `error` answers every request instead.
    """

    refuses: dict[str, Reply] = field(default_factory=dict)
    wrap: str = "{json}"
    constrained_wrap: bool = False
    error: Reply | None = None


_QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors."
)
_THINK = (
    '<think>\nThe user wants a short video. I should split it into scenes, e.g. {"scenes": '
    "[...]}, and keep each caption short.\n</think>\n\n{json}"
)
FLAVORS: dict[str, Flavor] = {
    "openai": Flavor(),
    # vLLM before structured outputs: pydantic rejects the type; old top-level error body.
    "vllm": Flavor(
        refuses={
            "json_schema": Reply.json(
                400,
                {
                    "object": "error",
                    "message": "[{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
                    "'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema', "
                    "'ctx': {'expected': \"'text' or 'json_object'\"}}]",
                    "type": "BadRequestError",
                    "param": None,
                    "code": 400,
                },
            )
        }
    ),
    # Groq refuses schema keywords it does not support (our plan uses minItems/maxItems).
    "groq": Flavor(
        refuses={
            "json_schema": Reply.json(
                400,
                {
                    "error": {
                        "message": "invalid schema for response format: response_format/json_schema/scenes: "
                        "minItems is not supported",
                        "type": "invalid_request_error",
                    }
                },
            )
        }
    ),
    # Ollama with a reasoning model (DeepSeek-R1, Qwen3): the reasoning stays in the content.
    "ollama": Flavor(wrap=_THINK, constrained_wrap=True),
    # Ollama before 0.5 ignored json_schema; llama models then fence their JSON.
    "ollama-legacy": Flavor(wrap="Here is the plan:\n```json\n{json}\n```"),
    # LM Studio accepts json_schema but refuses json_object, with a bare-string error body.
    "lmstudio": Flavor(
        refuses={
            "json_object": Reply.json(
                400,
                {
                    "error": "'response_format.type' must be 'json_schema' or 'text'",
                },
            )
        }
    ),
    # A server with no structured output at all (llama.cpp-style errors); the model adds prose.
    "text-only": Flavor(
        refuses={
            kind: Reply.json(
                400,
                {
                    "error": {
                        "code": 400,
                        "type": "invalid_request_error",
                        "message": f'response_format type must be "text", but got: {kind}',
                    }
                },
            )
            for kind in ("json_schema", "json_object")
        },
        wrap="Sure! Here is your video plan.\n{json}\nHope you like it.",
    ),
    "quota": Flavor(
        error=OpenAIError(
            429,
            _QUOTA_MESSAGE,
            error_type="insufficient_quota",
            code="insufficient_quota",
        ).reply()
    ),
    "no-retry": Flavor(
        error=OpenAIError(
            503,
            "The engine is currently overloaded, please try again later.",
            error_type="server_error",
            headers={"x-should-retry": "false"},
        ).reply()
    ),
}


def _fault(status: int, retry_after: float | None) -> OpenAIError:
    """The error OpenAI sends for `status` (429 carries a Retry-After header)."""
    if status == 429:
        return OpenAIError(
            429,
            "Rate limit reached for requests. Please try again later.",
            error_type="requests",
            code="rate_limit_exceeded",
            headers={"Retry-After": f"{retry_after if retry_after is not None else 1:g}"},
        )
    if status == 401:
        return OpenAIError(401, "Incorrect API key provided.", code="invalid_api_key")
    if status == 403:
        return OpenAIError(
            403,
            "You are not allowed to sample from this model",
            code="unsupported_country_region_territory",
        )
    if status >= 500:
        return OpenAIError(
            status,
            "The server had an error while processing your request. Sorry about that!",
            error_type="server_error",
        )
    return OpenAIError(status, "Injected error.")


class OpenAIServer(LocalServer):
    """An OpenAI-compatible server accepting one `api_key`; see the module docstring."""

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        flavor: str = "openai",
        delay: float = 0.0,
        image_seconds: float = 0.0,
        speech_seconds: float = 0.0,
    ) -> None:
        super().__init__(host, port)
        self.api_key = api_key
        self.flavor = FLAVORS[flavor]
        self.delay = delay
        self.image_seconds = image_seconds
        """How long /images/generations takes to draw a picture that it answers."""
        self.speech_seconds = speech_seconds
        """How long /audio/speech takes to speak a voice that it answers."""
        self.images_drawing = 0
        self.images_peak = 0
        """The most pictures /images/generations was drawing at once."""
        self._lock = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._canned: dict[str, deque[Reply]] = defaultdict(deque)
        self._bad_json_left = 0
        self._routes: dict[str, Callable[[dict[str, Any]], Reply]] = {
            "/v1/chat/completions": self._chat_completions,
            "/v1/audio/speech": self._speech,
            "/v1/images/generations": self._images,
            "/v1/audio/transcriptions": self._transcriptions,
        }
        self._transcripts: dict[str, Transcript] = {}

    def start(self) -> str:
        """Start serving; return the API base URL (ending in `/v1`)."""
        return f"{super().start()}/v1"

    # ---- test and demo controls -------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        path = _full_path(path)
        return [request for request in self.requests if request.path == path]

    def fail_next(
        self, path: str, status: int = 500, *, retry_after: float | None = None, times: int = 1
    ) -> None:
        """Answer the next `times` requests to `path` (e.g. "/chat/completions") with `status`."""
        self.respond_next(path, _fault(status, retry_after).reply(), times=times)

    def respond_next(self, path: str, reply: Reply, *, times: int = 1) -> None:
        """Answer the next `times` requests to `path` with exactly `reply` (after auth)."""
        with self._lock:
            self._canned[_full_path(path)].extend([reply] * times)

    def bad_json_next(self, count: int = 1) -> None:
        """Make the next `count` chat completions answer with content that is not JSON."""
        with self._lock:
            self._bad_json_left += count

    def add_transcript(
        self,
        audio: bytes,
        text: str,
        language: str = "en",
        words: Sequence[tuple[str, float, float]] | None = None,
    ) -> None:
        """What `/audio/transcriptions` hears in `audio` (by its bytes): `text`, spoken in
        `language` (an ISO-639-1 code), and for word timestamps `words` as (word, start, end)
        seconds (None: the text's words spread over the sound in the audio)."""
        timed = tuple((str(w), float(a), float(b)) for w, a, b in words) if words else None
        with self._lock:
            self._transcripts[hashlib.sha256(audio).hexdigest()] = Transcript(text, language, timed)

    # ---- HTTP entry point ---------------------------------------------------------------------

    def handle(self, request: Request) -> Reply:
        try:
            body = json.loads(request.body) if request.body else {}
        except ValueError:
            body = _form_body(request)
        time.sleep(self.delay)
        reply = self._answer(request, body)
        with self._lock:
            self._requests.append(
                RecordedRequest(request.path, request.headers, body, reply.status, time.time())
            )
            self._lock.notify_all()
        return reply

    def _answer(self, request: Request, body: Any) -> Reply:
        route = self._routes.get(request.path)
        if route is None or request.method != "POST":
            return OpenAIError(404, f"Invalid URL ({request.method} {request.path})").reply()
        try:
            self._authorize(request.header("authorization"))
        except OpenAIError as error:
            return error.reply()
        with self._lock:
            canned = self._canned.get(request.path)
            if canned:
                return canned.popleft()
        if self.flavor.error is not None:
            return self.flavor.error
        if not isinstance(body, dict):
            return OpenAIError(400, "We could not parse the JSON body of your request.").reply()
        try:
            return route(body)
        except OpenAIError as error:
            return error.reply()

    def _authorize(self, header: str) -> None:
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise OpenAIError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        if key.strip() != self.api_key:
            raise OpenAIError(
                401,
                f"Incorrect API key provided: {_mask(key.strip())}. You can find your API key "
                "at https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )

    # ---- chat completions ---------------------------------------------------------------------

    def _chat_completions(self, body: dict[str, Any]) -> Reply:
        model = _required_str(body, "model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise OpenAIError(400, "[] is too short - 'messages'", param="messages")
        prompt = "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        response_type = _response_type(body)
        if response_type in self.flavor.refuses:
            return self.flavor.refuses[response_type]
        with self._lock:
            bad_json = self._bad_json_left > 0
            self._bad_json_left -= 1 if bad_json else 0
        schema = _response_schema(body)
        content = (
            NOT_JSON_REPLY
            if bad_json
            else json.dumps(
                _scene_plan(_user_text(messages), prompt, schema or _prompt_schema(prompt)),
                ensure_ascii=False,
                indent=None if schema else 2,
            )
        )
        if not bad_json and (schema is None or self.flavor.constrained_wrap):
            content = self.flavor.wrap.replace("{json}", content)
        prompt_tokens = max(1, len(prompt) // 4)
        completion_tokens = max(1, len(content) // 4)
        return Reply.json(
            200,
            {
                "id": "chatcmpl-" + hashlib.sha1(prompt.encode()).hexdigest()[:24],
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
        )

    # ---- speech -------------------------------------------------------------------------------

    def _speech(self, body: dict[str, Any]) -> Reply:
        _required_str(body, "model")
        _required_str(body, "voice")
        text = _required_str(body, "input")
        if len(text) > MAX_SPEECH_INPUT_CHARS:
            raise OpenAIError(
                400,
                f"string too long. Expected a string with maximum length {MAX_SPEECH_INPUT_CHARS}",
                param="input",
            )
        audio_format = body.get("response_format", "mp3")
        if audio_format != "wav":
            raise OpenAIError(
                400,
                f"This local server only produces 'wav', not {audio_format!r}.",
                param="response_format",
            )
        time.sleep(self.speech_seconds)
        return Reply(200, _speech_wav(text), "audio/wav")

    # ---- images -------------------------------------------------------------------------------

    def _images(self, body: dict[str, Any]) -> Reply:
        model = str(body.get("model") or "dall-e-2")
        prompt = _required_str(body, "prompt")
        family = "gpt-image" if model.startswith("gpt-image") else model
        sizes = IMAGE_SIZES.get(family, IMAGE_SIZES["dall-e-2"])
        size = str(body.get("size") or sizes[0])
        if size not in sizes:
            raise OpenAIError(
                400,
                f"Invalid value: '{size}'. Supported values are: "
                f"{', '.join(repr(s) for s in sizes)}.",
                param="size",
                code="invalid_value",
            )
        response_format = body.get("response_format")
        if family == "gpt-image" and response_format is not None:
            raise OpenAIError(
                400,
                "Unknown parameter: 'response_format'.",
                param="response_format",
                code="unknown_parameter",
            )
        if family != "gpt-image" and response_format != "b64_json":
            raise OpenAIError(
                400,
                "This local server only returns response_format 'b64_json'.",
                param="response_format",
            )
        width, height = (1024, 1024) if size == "auto" else map(int, size.split("x"))
        with self._lock:
            self.images_drawing += 1
            self.images_peak = max(self.images_peak, self.images_drawing)
        try:
            time.sleep(self.image_seconds)
            png = _draw_png(prompt, (width, height))
        finally:
            with self._lock:
                self.images_drawing -= 1
        return Reply.json(
            200,
            {
                "created": int(time.time()),
                "data": [{"b64_json": base64.b64encode(png).decode("ascii")}],
            },
        )

    # ---- transcriptions -----------------------------------------------------------------------

    def _transcriptions(self, body: dict[str, Any]) -> Reply:
        upload = body.get("file")
        if not isinstance(upload, UploadedFile):
            raise OpenAIError(
                400,
                "Missing required parameter: 'file'.",
                param="file",
                code="missing_required_parameter",
            )
        model = _required_str(body, "model")
        if len(upload.content) > MAX_TRANSCRIPTION_BYTES:
            raise OpenAIError(
                413,
                f"Maximum content size limit ({MAX_TRANSCRIPTION_BYTES}) exceeded "
                f"({len(upload.content)} bytes read)",
                error_type="server_error",
            )
        if upload.filename.rsplit(".", 1)[-1].lower() not in TRANSCRIPTION_FORMATS:
            raise OpenAIError(
                400,
                f"Invalid file format. Supported formats: {list(TRANSCRIPTION_FORMATS)}",
            )
        response_format = str(body.get("response_format") or "json")
        allowed = ("json", "text") if model.startswith("gpt-") else TRANSCRIPTION_RESPONSES
        if response_format not in allowed:
            raise OpenAIError(
                400,
                f"response_format '{response_format}' is not compatible with model '{model}'. "
                f"Use {' or '.join(repr(name) for name in allowed)} instead.",
                param="response_format",
                code="unsupported_value",
            )
        granularities = _granularities(body, model, response_format)
        hint = body.get("language")
        if hint is not None and not re.fullmatch(r"[a-z]{2}", str(hint)):
            raise OpenAIError(
                400,
                f"Invalid language '{hint}'. Language parameter must be specified in "
                "ISO-639-1 format.",
                param="language",
                code="invalid_value",
            )
        with self._lock:
            heard = self._transcripts.get(
                hashlib.sha256(upload.content).hexdigest(), Transcript("", str(hint or "en"))
            )
        text, language = heard.text, heard.language
        seconds = _audio_seconds(upload.content)
        if response_format == "text":
            return Reply(200, f"{text}\n".encode(), "text/plain; charset=utf-8")
        if response_format in ("srt", "vtt"):
            return Reply(200, _subtitles(text, seconds, response_format).encode(), "text/plain")
        if response_format == "verbose_json":
            verbose: dict[str, Any] = {
                "task": "transcribe",
                "language": LANGUAGE_NAMES.get(language, language),
                "duration": seconds,
                "text": text,
            }
            if "word" in granularities:
                verbose["words"] = [
                    {"word": word, "start": round(start, 2), "end": round(end, 2)}
                    for word, start, end in heard.words or _spread(text, upload.content)
                ]
            if "segment" in granularities:
                segment = {"id": 0, "seek": 0, "start": 0.0, "end": seconds, "text": f" {text}"}
                verbose["segments"] = [segment] if text else []
            verbose["usage"] = {"type": "duration", "seconds": math.ceil(seconds)}
            return Reply.json(200, verbose)
        return Reply.json(
            200, {"text": text, "usage": {"type": "duration", "seconds": math.ceil(seconds)}}
        )


class Transcript(NamedTuple):
    text: str
    language: str
    words: tuple[tuple[str, float, float], ...] | None = None


def _granularities(body: dict[str, Any], model: str, response_format: str) -> tuple[str, ...]:
    """The `timestamp_granularities[]` asked for (segments when none are), refused like OpenAI
    does: only whisper-1 gives timestamps, and only as verbose_json."""
    value = body.get("timestamp_granularities[]", body.get("timestamp_granularities"))
    if value is None:
        return ("segment",)
    asked = tuple(value) if isinstance(value, list) else (str(value),)
    for name in asked:
        if name not in TIMESTAMP_GRANULARITIES:
            raise OpenAIError(
                400,
                f"Invalid value: '{name}'. Supported values are: 'word' and 'segment'.",
                param="timestamp_granularities[]",
                code="invalid_value",
            )
    if model.startswith("gpt-"):
        raise OpenAIError(
            400,
            f"timestamp_granularities is not supported for model '{model}'. Use 'whisper-1' "
            "for timestamps.",
            param="timestamp_granularities",
            code="unsupported_value",
        )
    if response_format != "verbose_json":
        raise OpenAIError(
            400,
            "timestamp_granularities is only supported with response_format 'verbose_json'.",
            param="timestamp_granularities",
            code="unsupported_value",
        )
    return asked


def _spread(text: str, audio: bytes) -> list[tuple[str, float, float]]:
    """The words of `text` spread by length over the sound in `audio` (a 16-bit WAV), from the
    first sample louder than SOUND_LEVEL to the last; nothing for audio it does not decode."""
    try:
        with wave.open(io.BytesIO(audio), "rb") as reader:
            rate, width, channels = (
                reader.getframerate(),
                reader.getsampwidth(),
                reader.getnchannels(),
            )
            frames = reader.readframes(reader.getnframes())
    except (wave.Error, EOFError):
        return []
    if width != 2:
        return []
    samples = array.array("h", frames[: len(frames) // 2 * 2])
    if sys.byteorder == "big":
        samples.byteswap()
    loud = [index for index, sample in enumerate(samples) if abs(sample) > SOUND_LEVEL]
    if not loud:
        return []
    begin, end = loud[0] / channels / rate, (loud[-1] + 1) / channels / rate
    words = text.split()
    total = sum(len(word) for word in words) or 1
    spread, clock = [], begin
    for word in words:
        step = (end - begin) * len(word) / total
        spread.append((word, clock, clock + step))
        clock += step
    return spread


def _form_body(request: Request) -> dict[str, Any] | None:
    """A multipart body as one dict: its fields, and its files as `UploadedFile`s; None when
    the body is neither JSON nor a form."""
    if not request.header("content-type").lower().startswith("multipart/form-data"):
        return None
    try:
        fields, files = parse_form(request)
    except BadBody:
        return None
    return {**fields, **files}


def _audio_seconds(audio: bytes) -> float:
    """The length of a WAV file; 0.0 for audio this server does not decode."""
    try:
        with wave.open(io.BytesIO(audio), "rb") as reader:
            return round(reader.getnframes() / reader.getframerate(), 2)
    except (wave.Error, EOFError):
        return 0.0


def _subtitles(text: str, seconds: float, kind: str) -> str:
    """One cue holding the whole transcript, as SRT or WebVTT."""
    end = f"00:00:{min(seconds, 59.999):06.3f}"
    if kind == "vtt":
        return f"WEBVTT\n\n00:00:00.000 --> {end}\n{text}\n"
    return f"1\n00:00:00,000 --> {end.replace('.', ',')}\n{text}\n"


def _full_path(path: str) -> str:
    path = "/" + path.strip("/")
    return path if path.startswith("/v1/") else f"/v1{path}"


def _mask(key: str) -> str:
    return f"{key[:3]}{'*' * 8}{key[-4:]}" if len(key) > 8 else "*" * len(key)


def _required_str(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise OpenAIError(
            400,
            f"Missing required parameter: '{name}'.",
            param=name,
            code="missing_required_parameter",
        )
    return value


def _user_text(messages: list[Any]) -> str:
    """The last user message: what the plan is about."""
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return str(users[-1].get("content", "")) if users else ""


def _response_type(body: dict[str, Any]) -> str:
    response_format = body.get("response_format")
    return str(response_format.get("type", "")) if isinstance(response_format, dict) else ""


def _prompt_schema(prompt: str) -> dict[str, Any] | None:
    """The first JSON object in the prompt that looks like a JSON schema, as a model would
    follow a schema spelled out in its instructions."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", prompt):
        try:
            candidate, _ = decoder.raw_decode(prompt, match.start())
        except ValueError:
            continue
        if isinstance(candidate, dict) and isinstance(candidate.get("properties"), dict):
            return candidate
    return None


def _response_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    if _response_type(body) != "json_schema":
        return None
    response_format = body["response_format"]
    json_schema = response_format.get("json_schema")
    if not isinstance(json_schema, dict) or not isinstance(json_schema.get("schema"), dict):
        raise OpenAIError(
            400,
            "Missing required parameter: 'response_format.json_schema'.",
            param="response_format.json_schema",
        )
    return json_schema["schema"]


def _scene_plan(user_text: str, prompt: str, schema: dict[str, Any] | None) -> dict[str, Any]:
    """A deterministic scene plan about `user_text`, shaped by `schema` when there is one.

    Scene count (3-8) and total length follow the prompt ("30 seconds"); the language is taken
    from the prompt ("language: ru") or guessed from the script of the user's text.
    """
    topic = " ".join(user_text.split()) or "an untitled idea"
    seconds = int(match[1]) if (match := _SECONDS_RE.search(prompt)) else 30
    language = (
        match[1].lower()
        if (match := _LANGUAGE_RE.search(prompt))
        else "ru"
        if re.search("[а-яё]", topic, re.IGNORECASE)
        else "en"
    )
    scene_schema = _scene_item_schema(schema)
    low, high = _item_bounds(schema)
    count = min(
        high,
        max(low, 3 + int(hashlib.sha1(topic.encode()).hexdigest(), 16) % 3, round(seconds / 8)),
    )
    words = topic.split()
    scenes = []
    for index in range(count):
        chunk = " ".join(words[index * len(words) // count : (index + 1) * len(words) // count])
        values = {
            "narration": f"{'Сцена' if language == 'ru' else 'Scene'} {index + 1}: "
            f"{chunk or topic}.",
            "on_screen_text": (chunk or topic)[:40],
            "visual_prompt": f"Illustration of {topic}, part {index + 1} of {count}",
            "duration": round(seconds / count, 2),
        }
        fields = tuple(scene_schema.get("properties", {})) or _DEFAULT_SCENE_FIELDS
        scenes.append({name: values.get(name, f"{name} {index + 1}") for name in fields})
    plan_values: dict[str, Any] = {"title": topic[:60], "language": language, "scenes": scenes}
    fields = tuple((schema or {}).get("properties", {})) or ("title", "language", "scenes")
    return {name: plan_values.get(name, f"{name} for {topic[:40]}") for name in fields}


def _scenes_schema(schema: dict[str, Any] | None) -> dict[str, Any]:
    return ((schema or {}).get("properties") or {}).get("scenes") or {}


def _scene_item_schema(schema: dict[str, Any] | None) -> dict[str, Any]:
    return _scenes_schema(schema).get("items") or {}


def _item_bounds(schema: dict[str, Any] | None) -> tuple[int, int]:
    scenes = _scenes_schema(schema)
    return int(scenes.get("minItems", 3)), int(scenes.get("maxItems", 8))


def _speech_wav(text: str) -> bytes:
    """16-bit mono WAV lasting len(text)/14 s: one short enveloped tone per syllable.

    Like OpenAI's streamed WAV, the RIFF and data sizes in the header are 0xFFFFFFFF
    placeholders, so clients must count the frames they actually received.
    """
    seconds = max(0.5, len(text) / SPEECH_CHARS_PER_SECOND)
    total = int(seconds * SPEECH_SAMPLE_RATE)
    syllable = int(0.18 * SPEECH_SAMPLE_RATE)
    samples = array.array("h")
    letters = [c for c in text if not c.isspace()] or ["a"]
    for start in range(0, total, syllable):
        length = min(syllable, total - start)
        pitch = 140 + (ord(letters[(start // syllable) % len(letters)]) * 37) % 160
        step = 2 * math.pi * pitch / SPEECH_SAMPLE_RATE
        samples.extend(
            int(9000 * math.sin(math.pi * i / length) * math.sin(step * i)) for i in range(length)
        )
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SPEECH_SAMPLE_RATE)
        if sys.byteorder == "big":
            samples.byteswap()
        wav.writeframes(samples.tobytes())
    audio = bytearray(buffer.getvalue())
    audio[4:8] = audio[40:44] = UNKNOWN_SIZE
    return bytes(audio)


def _draw_png(prompt: str, size: tuple[int, int]) -> bytes:
    """A gradient picture with a circle and the prompt text; colours derive from the prompt."""
    width, height = size
    digest = hashlib.sha1(prompt.encode()).digest()
    top, bottom = digest[0:3], digest[3:6]
    gradient = Image.linear_gradient("L").resize((width, height))
    image = Image.merge(
        "RGB",
        [gradient.point(lambda v, a=a, b=b: a + (b - a) * v // 255) for a, b in zip(top, bottom)],
    )
    draw = ImageDraw.Draw(image)
    radius = min(width, height) // 4
    center = (width // 2, height // 3)
    draw.ellipse(
        [center[0] - radius, center[1] - radius, center[0] + radius, center[1] + radius],
        fill=tuple(digest[6:9]),
        outline=(255, 255, 255),
        width=max(2, width // 200),
    )
    font = ImageFont.truetype(str(FONT_PATH), max(12, width // 24))
    draw.multiline_text(
        (width // 12, height * 2 // 3), _wrap(prompt, 28), font=font, fill=(255, 255, 255)
    )
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _wrap(text: str, width: int) -> str:
    lines: list[str] = []
    for word in text.split()[:30]:
        if lines and len(lines[-1]) + len(word) < width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return "\n".join(lines[:6])
