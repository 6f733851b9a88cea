"""A local stand-in of fal.ai's queue API (https://queue.fal.run) for tests and the demo.

Routes, as fal answers them (`start()` returns the queue base URL):
- POST /{model id}: validates the input against the model family's schema (`SCHEMAS`, written
  from fal's model pages independently of `shared.providers.fal`, so a wrong mapping there is
  refused here with fal's 422 `{"detail": [{"loc", "msg", "type"}]}`), queues the request and
  answers `request_id`, `status_url`, `response_url`, `cancel_url`; those URLs name only the app
  (the first two segments of the model id), as fal's do;
- GET /{app}/requests/{id}/status: IN_QUEUE, then IN_PROGRESS, then COMPLETED once
  `task_seconds` have passed; a failed request is COMPLETED with `error` and `error_type`;
- GET /{app}/requests/{id}: `{"video": {"url", "content_type", "file_name", "file_size"}}`, or
  for a failed request its stored error answer;
- PUT /{app}/requests/{id}/cancel: 202 CANCELLATION_REQUESTED, 400 ALREADY_COMPLETED;
- GET /files/{id}.mp4 (the "CDN", no key): a real H.264 MP4 made with ffmpeg from the submitted
  image, of the requested duration, with a slowly moving crop; made on first use and cached.
Every queue route needs `Authorization: Key <key>` (401 otherwise).

Faults (counted, thread-safe): `fail_next_tasks(n)`, `drop_next_submissions(n)` (the request is
queued, then the connection drops with no answer), `rate_limit_next(n)` (429),
`drop_next_downloads(n)`; `task_seconds` and `delay_seconds` (every answer waits) may change at
run time. Counters: `submissions`, `requests`, `status_polls`, `cancelled`.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from PIL import Image, UnidentifiedImageError

from localapi import BadBody, LocalServer, Reply, Request, parse_form
from shared.media import ffmpeg_exe

DEFAULT_KEY = "fal-test-key"
CLIP_FPS = 24
CLIP_MAX_SIDE = 720
CROP_ZOOM = 1.1
FFMPEG_TIMEOUT_S = 120
ERRORS_URL = "https://docs.fal.ai/errors"
_DATA_URI_RE = re.compile(r"^data:(image/[\w.+-]+);base64,(.*)$", re.DOTALL)
_IMAGE_SUFFIXES = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}


@dataclass(frozen=True)
class Schema:
    """A model family's input: each known field with its type or allowed values, the required
    ones, and how long the clip is for a given input."""

    prefix: str
    fields: dict[str, type | tuple[Any, ...]]
    seconds: Callable[[dict[str, Any]], float]
    required: tuple[str, ...] = ("prompt", "image_url")


def _duration(default: str) -> Callable[[dict[str, Any]], float]:
    return lambda body: float(str(body.get("duration", default)).rstrip("s"))


def _frames(body: dict[str, Any]) -> float:
    return int(body.get("num_frames", 81)) / int(body.get("frames_per_second", 16))


# Input schemas from fal.ai/models/<model id>/api, first prefix match wins.
SCHEMAS: tuple[Schema, ...] = (
    Schema(
        "fal-ai/kling-video/",
        {
            "prompt": str,
            "image_url": str,
            "duration": ("5", "10"),
            "negative_prompt": str,
            "cfg_scale": float,
            "tail_image_url": str,
        },
        _duration("5"),
    ),
    Schema(
        "fal-ai/minimax/hailuo",
        {
            "prompt": str,
            "image_url": str,
            "duration": ("6", "10"),
            "prompt_optimizer": bool,
            "resolution": ("512P", "768P"),
            "end_image_url": str,
        },
        _duration("6"),
    ),
    Schema(
        "fal-ai/veo3/",
        {
            "prompt": str,
            "image_url": str,
            "duration": ("8s",),
            "aspect_ratio": ("auto", "16:9", "9:16"),
            "generate_audio": bool,
            "resolution": ("720p", "1080p"),
        },
        _duration("8s"),
    ),
    Schema(
        "fal-ai/veo3.1/",
        {
            "prompt": str,
            "image_url": str,
            "duration": ("4s", "6s", "8s"),
            "aspect_ratio": ("auto", "16:9", "9:16"),
            "generate_audio": bool,
            "resolution": ("720p", "1080p"),
            "negative_prompt": str,
        },
        _duration("8s"),
    ),
    Schema(
        "fal-ai/bytedance/seedance/v1/",
        {
            "prompt": str,
            "image_url": str,
            "duration": tuple(str(n) for n in range(2, 13)),
            "aspect_ratio": ("21:9", "16:9", "4:3", "1:1", "3:4", "9:16", "auto"),
            "resolution": ("480p", "720p", "1080p"),
            "camera_fixed": bool,
            "seed": int,
            "enable_safety_checker": bool,
        },
        _duration("5"),
    ),
    Schema(
        "fal-ai/wan/",
        {
            "prompt": str,
            "image_url": str,
            "num_frames": int,
            "frames_per_second": int,
            "resolution": ("480p", "580p", "720p"),
            "aspect_ratio": ("auto", "16:9", "9:16", "1:1"),
            "negative_prompt": str,
            "seed": int,
        },
        _frames,
    ),
)
COMMON_SCHEMA = Schema("", {"prompt": str, "image_url": str}, lambda body: 5.0)


def schema_of(model: str) -> Schema:
    return next((schema for schema in SCHEMAS if model.startswith(schema.prefix)), COMMON_SCHEMA)


class FalError(Exception):
    """An error answer with fal's `{"detail": ...}` body."""

    def __init__(self, status: int, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail
        self.headers = headers or {}

    def reply(self) -> Reply:
        return Reply.json(self.status, {"detail": self.detail}, self.headers)


def _invalid(field_name: str, msg: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"loc": ["body", field_name], "msg": msg, "type": kind, **extra}


def validate(schema: Schema, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The FastAPI-style validation errors of `body` under `schema` (empty: valid)."""
    errors = [
        _invalid(name, "field required", "value_error.missing")
        for name in schema.required
        if name not in body
    ]
    for name, value in body.items():
        rule = schema.fields.get(name)
        if rule is None:
            errors.append(_invalid(name, "extra fields not permitted", "value_error.extra"))
        elif isinstance(rule, tuple):
            if value not in rule:
                permitted = ", ".join(repr(option) for option in rule)
                errors.append(
                    _invalid(
                        name,
                        f"value is not a valid enumeration member; permitted: {permitted}",
                        "type_error.enum",
                        ctx={"enum_values": list(rule)},
                    )
                )
        elif not _has_type(value, rule):
            errors.append(_invalid(name, f"value is not a valid {rule.__name__}", "type_error"))
    return errors


def _has_type(value: Any, rule: type) -> bool:
    if rule is bool:
        return isinstance(value, bool)
    if rule is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if rule is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, rule)


@dataclass
class Task:
    """One queued request and what the server knows about it."""

    request_id: str
    model: str
    app: str
    seconds: float
    image: bytes
    image_type: str
    image_size: tuple[int, int]
    created: float
    failure: FalError | None = None
    cancelled: bool = False
    video: Path | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class FalServer(LocalServer):
    def __init__(self, key: str = DEFAULT_KEY, task_seconds: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.key = key
        self.task_seconds = task_seconds
        self.delay_seconds = 0.0
        self.submissions: list[tuple[str, dict[str, Any]]] = []
        self.status_polls = 0
        self.cancelled: list[str] = []
        self._tasks: dict[str, Task] = {}
        self._lock = threading.Lock()
        self._fail_tasks: list[FalError] = []
        self._drop_submissions = 0
        self._drop_downloads = 0
        self._rate_limits: list[float | None] = []
        self._files = Path(tempfile.mkdtemp(prefix="fal-server-"))

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self._files, ignore_errors=True)

    @property
    def requests(self) -> dict[str, str]:
        """Every request id and its state now: IN_QUEUE, IN_PROGRESS or COMPLETED."""
        with self._lock:
            tasks = list(self._tasks.values())
        return {task.request_id: self._state(task) for task in tasks}

    def fail_next_tasks(
        self,
        count: int = 1,
        *,
        message: str = "The video generation failed: the model could not animate the image.",
        error_type: str = "generation_failed",
        status: int = 422,
    ) -> None:
        """The next `count` submitted requests are queued, then end in error the way fal reports
        it: COMPLETED with `error`/`error_type`, and a result that answers `status`."""
        failure = FalError(
            status,
            [
                {
                    "loc": ["body"],
                    "msg": message,
                    "type": error_type,
                    "url": f"{ERRORS_URL}#{error_type}",
                }
            ],
            {"X-Fal-Error-Type": error_type, "X-Fal-Retryable": "false"},
        )
        with self._lock:
            self._fail_tasks.extend([failure] * count)

    def drop_next_submissions(self, count: int = 1) -> None:
        with self._lock:
            self._drop_submissions += count

    def drop_next_downloads(self, count: int = 1) -> None:
        with self._lock:
            self._drop_downloads += count

    def rate_limit_next(self, count: int = 1, *, retry_after: float | None = None) -> None:
        """Answer the next `count` queue requests with 429 (with Retry-After when given)."""
        with self._lock:
            self._rate_limits.extend([retry_after] * count)

    def handle(self, request: Request) -> Reply:
        time.sleep(self.delay_seconds)
        try:
            return self._route(request)
        except FalError as exc:
            return exc.reply()

    def _route(self, request: Request) -> Reply:
        parts = [part for part in request.path.split("/") if part]
        if request.method == "GET" and len(parts) == 2 and parts[0] == "files":
            return self._file(parts[1])
        self._authorize(request.header("authorization"))
        self._rate_limit()
        if request.method == "POST" and len(parts) >= 2:
            return self._submit("/".join(parts), request)
        if len(parts) >= 4 and parts[2] == "requests":
            app, request_id, rest = "/".join(parts[:2]), parts[3], parts[4:]
            if request.method == "GET" and rest == ["status"]:
                return self._status(self._task(app, request_id))
            if request.method == "GET" and not rest:
                return self._result(self._task(app, request_id))
            if request.method == "PUT" and rest == ["cancel"]:
                return self._cancel(self._task(app, request_id))
        raise FalError(404, "Not Found")

    def _authorize(self, header: str) -> None:
        scheme, _, credentials = header.partition(" ")
        if not header:
            raise FalError(401, "Missing authorization header")
        if scheme != "Key" or credentials.strip() != self.key:
            raise FalError(401, "No user found for Key ID and Secret")

    def _rate_limit(self) -> None:
        with self._lock:
            if not self._rate_limits:
                return
            retry_after = self._rate_limits.pop(0)
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        raise FalError(429, "Too many concurrent requests for this user.", headers)

    def _submit(self, model: str, request: Request) -> Reply:
        try:
            body, _ = parse_form(request)
        except BadBody as exc:
            raise FalError(422, [_invalid("body", str(exc), "value_error.jsondecode")]) from None
        schema = schema_of(model)
        errors = validate(schema, body)
        if errors:
            raise FalError(422, errors)
        image, image_type, image_size = _decode_image(body["image_url"])
        request_id = str(uuid.uuid4())
        app = "/".join(model.split("/")[:2])
        task = Task(
            request_id=request_id,
            model=model,
            app=app,
            seconds=schema.seconds(body),
            image=image,
            image_type=image_type,
            image_size=image_size,
            created=time.monotonic(),
        )
        recorded = {**body, "image_url": len(image)}
        with self._lock:
            task.failure = self._fail_tasks.pop(0) if self._fail_tasks else None
            self._tasks[request_id] = task
            self.submissions.append((model, recorded))
            if self._drop_submissions:
                self._drop_submissions -= 1
                return Reply.no_answer()
        return Reply.json(200, {**self._urls(task), "queue_position": 0})

    def _urls(self, task: Task) -> dict[str, str]:
        base = f"{self.base_url}/{task.app}/requests/{task.request_id}"
        return {
            "request_id": task.request_id,
            "response_url": base,
            "status_url": f"{base}/status",
            "cancel_url": f"{base}/cancel",
        }

    def _task(self, app: str, request_id: str) -> Task:
        with self._lock:
            task = self._tasks.get(request_id)
        if task is None or task.app != app:
            raise FalError(404, "Request not found")
        return task

    def _state(self, task: Task) -> str:
        if task.cancelled:
            return "COMPLETED"
        elapsed = time.monotonic() - task.created
        if elapsed >= self.task_seconds:
            return "COMPLETED"
        return "IN_QUEUE" if elapsed < self.task_seconds / 4 else "IN_PROGRESS"

    def _status(self, task: Task) -> Reply:
        with self._lock:
            self.status_polls += 1
        state = self._state(task)
        body: dict[str, Any] = {**self._urls(task), "status": state, "logs": None}
        if state == "IN_QUEUE":
            body["queue_position"] = 0
        if state == "COMPLETED":
            body["metrics"] = {"inference_time": self.task_seconds}
            failure = self._failure(task)
            if failure is not None:
                body["error"] = _message(failure)
                body["error_type"] = failure.headers.get("X-Fal-Error-Type", "")
        return Reply.json(200, body)

    def _failure(self, task: Task) -> FalError | None:
        if task.cancelled:
            return FalError(400, "Request was cancelled", {"X-Fal-Error-Type": "cancelled"})
        return task.failure

    def _result(self, task: Task) -> Reply:
        if self._state(task) != "COMPLETED":
            raise FalError(400, "Request is still in progress")
        failure = self._failure(task)
        if failure is not None:
            raise failure
        video = self._video(task)
        return Reply.json(
            200,
            {
                "video": {
                    "url": f"{self.base_url}/files/{task.request_id}.mp4",
                    "content_type": "video/mp4",
                    "file_name": f"{task.request_id}.mp4",
                    "file_size": video.stat().st_size,
                }
            },
        )

    def _cancel(self, task: Task) -> Reply:
        if self._state(task) == "COMPLETED":
            return Reply.json(400, {"status": "ALREADY_COMPLETED"})
        with self._lock:
            task.cancelled = True
            self.cancelled.append(task.request_id)
        return Reply.json(202, {"status": "CANCELLATION_REQUESTED"})

    def _file(self, name: str) -> Reply:
        request_id = name.removesuffix(".mp4")
        with self._lock:
            task = self._tasks.get(request_id)
            if self._drop_downloads:
                self._drop_downloads -= 1
                return Reply.no_answer()
        if task is None or name == request_id or self._failure(task) is not None:
            raise FalError(404, "File not found")
        return Reply(200, self._video(task).read_bytes(), "video/mp4")

    def _video(self, task: Task) -> Path:
        """The task's clip, rendered on first use (one ffmpeg run per task, even when asked
        for concurrently)."""
        with task.lock:
            if task.video is None:
                source = self._files / f"{task.request_id}{_IMAGE_SUFFIXES[task.image_type]}"
                source.write_bytes(task.image)
                target = self._files / f"{task.request_id}.mp4"
                render_clip(source, target, task.seconds, task.image_size)
                task.video = target
            return task.video


def _message(failure: FalError) -> str:
    detail = failure.detail
    if isinstance(detail, list):
        return "; ".join(str(item.get("msg", item)) for item in detail)
    return str(detail)


def _decode_image(value: str) -> tuple[bytes, str, tuple[int, int]]:
    """The bytes, type and size of a data-URI image; fal cannot fetch anything from here."""
    match = _DATA_URI_RE.match(value)
    if match is None:
        raise FalError(
            422,
            [
                _invalid(
                    "image_url",
                    "Failed to download the file: only data URIs reach this stand-in.",
                    "file_download_error",
                )
            ],
        )
    image_type = match.group(1)
    try:
        image = base64.b64decode(match.group(2), validate=True)
        with Image.open(io.BytesIO(image)) as picture:
            size = picture.size
    except (binascii.Error, UnidentifiedImageError, OSError):
        raise _unreadable_image() from None
    if image_type not in _IMAGE_SUFFIXES:
        raise _unreadable_image()
    return image, image_type, size


def _unreadable_image() -> FalError:
    return FalError(422, [_invalid("image_url", "Failed to load the image.", "image_load_error")])


def clip_size(image_size: tuple[int, int]) -> tuple[int, int]:
    """The image's aspect with its longer side at most CLIP_MAX_SIDE, in even pixels."""
    width, height = image_size
    scale = min(1.0, CLIP_MAX_SIDE / max(width, height))
    return _even(width * scale), _even(height * scale)


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def render_clip(image: Path, out_path: Path, seconds: float, image_size: tuple[int, int]) -> None:
    """A cheap H.264 MP4 of `seconds` at CLIP_FPS whose frames differ: a crop drifting across
    the image, enlarged by CROP_ZOOM."""
    width, height = clip_size(image_size)
    wide, tall = _even(math.ceil(width * CROP_ZOOM)), _even(math.ceil(height * CROP_ZOOM))
    drift = f"t/{seconds:.3f}"
    video_filter = (
        f"scale={wide}:{tall},crop={width}:{height}:x=(iw-ow)*{drift}:y=(ih-oh)*{drift},"
        "format=yuv420p"
    )
    command = [
        ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-loop",
        "1",
        "-i",
        str(image),
        "-t",
        f"{seconds:.3f}",
        "-r",
        str(CLIP_FPS),
        "-vf",
        video_filter,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-movflags",
        "+faststart",
        str(out_path),
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=FFMPEG_TIMEOUT_S, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"ffmpeg failed to render the clip: {completed.stderr[-500:]}")
