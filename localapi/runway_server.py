"""A local stand-in of the Runway API (version 2024-11-06) for tests and the demo.

Routes, as Runway's (`start()` returns the base URL, like RUNWAY_API_BASE):
- POST /v1/image_to_video: `promptImage` must be a data URI of a JPEG, PNG or WebP (this server
  fetches no https URL); answers `{"id": ...}`. The clip is a real H.264 MP4 of `duration`
  seconds at the ratio's size, panning across the submitted still, made with ffmpeg on its
  first download and kept; tasks with the same still, ratio and duration share one encode, so
  that a crowd bench spends this machine's CPU on the worker, not on the stand-in's clips;
- POST /v1/text_to_image: a real PNG of the ratio's size;
- GET /v1/tasks/{id}: PENDING, (THROTTLED when `throttle`), RUNNING with `progress`, then
  SUCCEEDED with `output` (or FAILED with `failure` and `failureCode`) once the task has run
  `task_seconds` (a video) or `image_seconds` (an image), as they were when it was created.
  With `concurrency` set, Runway's line is modelled: at most that many tasks run at once, the
  others wait THROTTLED in the order they came, and a task's seconds count from when it leaves
  the line;
- DELETE /v1/tasks/{id}: 204, the task becomes CANCELLED;
- GET /files/{id}.mp4|.png?token=...: the output, "pre-signed" like Runway's: it needs the
  token and refuses a request that carries an Authorization header, as a storage host does.
The API routes need `Authorization: Bearer <api_key>` and a known `X-Runway-Version`, and refuse
bad bodies with `{"error": ..., "issues": [...]}`. The error wording is modelled on Runway's, not
copied from it.

Faults (all counted, thread-safe): `fail_next_tasks`, `drop_next_submissions` (the task is
created, then the connection closes with no answer), `rate_limit_next`, `drop_next_downloads`,
`out_of_credits`, and `delay_seconds` before every answer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import io
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, UnidentifiedImageError

from localapi import BadBody, LocalServer, Reply, Request, parse_form
from shared.media import ffmpeg_exe

DEFAULT_API_KEY = "runway-test-key"
API_VERSIONS = ("2024-11-06",)
VIDEO_MODELS: dict[str, dict[str, tuple[Any, ...]]] = {
    "gen4_turbo": {
        "ratios": ("1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672"),
        "durations": tuple(range(2, 11)),
    },
    "gen4.5": {
        "ratios": ("1280:720", "720:1280", "1104:832", "960:960", "832:1104", "1584:672"),
        "durations": tuple(range(2, 11)),
    },
    "veo3": {"ratios": ("1280:720", "720:1280"), "durations": (8,)},
    "veo3.1": {
        "ratios": ("1280:720", "720:1280", "1080:1920", "1920:1080"),
        "durations": (4, 6, 8),
    },
    "veo3.1_fast": {
        "ratios": ("1280:720", "720:1280", "1080:1920", "1920:1080"),
        "durations": (4, 6, 8),
    },
}
IMAGE_MODELS: dict[str, tuple[str, ...]] = dict.fromkeys(
    ("gen4_image", "gen4_image_turbo"),
    (
        "1024:1024",
        "1080:1080",
        "1168:880",
        "1360:768",
        "1440:1080",
        "1080:1440",
        "1808:768",
        "1920:1080",
        "1080:1920",
        "2112:912",
        "1280:720",
        "720:1280",
        "720:720",
        "960:720",
        "720:960",
        "1680:720",
    ),
)
MAX_PROMPT_UTF16 = 1000
MAX_DATA_URI_CHARS = 5_000_000
MAX_SEED = 4_294_967_295
CLIP_FPS = 24
FFMPEG_TIMEOUT_S = 120
_DATA_URI_RE = re.compile(r"data:(image/(?:jpeg|png|webp));base64,(.*)", re.DOTALL)
_TASK_PATH_RE = re.compile(r"/v1/tasks/([0-9a-f-]{36})")
_FILE_PATH_RE = re.compile(r"/files/([0-9a-f-]{36})\.(mp4|png)")


class RunwayError(Exception):
    """An error answer with Runway's `{"error": ..., "issues": [...]}` body."""

    def __init__(
        self,
        status: int,
        message: str,
        issues: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        body: dict[str, Any] = {"error": message}
        if issues is not None:
            body["issues"] = issues
        self.reply = Reply.json(status, body, headers)


def _invalid(field: str, message: str, code: str = "invalid_type") -> RunwayError:
    return RunwayError(
        400, "Validation of body failed", [{"code": code, "path": [field], "message": message}]
    )


class RunwayServer(LocalServer):
    """A Runway API accepting one `api_key`; see the module docstring."""

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        task_seconds: float = 0.5,
        *,
        image_seconds: float | None = None,
        concurrency: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        throttle: bool = False,
        delay_seconds: float = 0.0,
    ) -> None:
        super().__init__(host, port)
        self.api_key = api_key
        self.task_seconds = task_seconds
        """How long a video task runs once it leaves the line."""
        self.image_seconds = task_seconds if image_seconds is None else image_seconds
        """How long an image task runs once it leaves the line."""
        self.concurrency = concurrency
        """Tasks that run at once (None: all); the others wait THROTTLED."""
        self.throttle = throttle
        self.delay_seconds = delay_seconds
        self.out_of_credits = False
        self.submissions: list[dict[str, Any]] = []
        """Bodies of the task-creating requests that created a task; image data is replaced
        by its length in bytes."""
        self.tasks: dict[str, dict[str, Any]] = {}
        """Task id → {"status", "kind", "model", "ratio", "duration", "created", "seconds",
        "started" (None while it waits in the line), ...}; monotonic times."""
        self.polls = 0
        self.deleted: list[str] = []
        self.downloads = 0
        self._lock = threading.Lock()
        self._stills: dict[str, bytes] = {}
        self._file_locks: dict[str, threading.Lock] = {}
        self._fail_next: list[str] = []
        self._drop_submissions = 0
        self._drop_downloads = 0
        self._rate_limits: list[float] = []
        self._files_dir: Path | None = None

    def start(self) -> str:
        """Start serving; return the API base URL."""
        with self._lock:
            if self._files_dir is None:
                self._files_dir = Path(tempfile.mkdtemp(prefix="runway-files-"))
        return super().start()

    def stop(self) -> None:
        super().stop()
        with self._lock:
            files_dir, self._files_dir = self._files_dir, None
        if files_dir is not None:
            shutil.rmtree(files_dir, ignore_errors=True)

    # ---- test and demo controls -------------------------------------------------------------

    def fail_next_tasks(self, n: int = 1, code: str = "INTERNAL.BAD_OUTPUT.CODE01") -> None:
        """The next `n` tasks end FAILED with `failureCode` = `code`."""
        with self._lock:
            self._fail_next.extend([code] * n)

    def drop_next_submissions(self, n: int = 1) -> None:
        """The next `n` task-creating requests create their task, then get no answer."""
        with self._lock:
            self._drop_submissions += n

    def rate_limit_next(self, n: int = 1, retry_after: float = 0.1) -> None:
        """Answer the next `n` API requests with 429 and `Retry-After: retry_after`."""
        with self._lock:
            self._rate_limits.extend([retry_after] * n)

    def drop_next_downloads(self, n: int = 1) -> None:
        """Close the connection of the next `n` output downloads without an answer."""
        with self._lock:
            self._drop_downloads += n

    # ---- HTTP entry point ---------------------------------------------------------------------

    def handle(self, request: Request) -> Reply:
        time.sleep(self.delay_seconds)
        if request.path.startswith("/files/"):
            return self._file(request)
        try:
            self._authorize(request)
            with self._lock:
                retry_after = self._rate_limits.pop(0) if self._rate_limits else None
            if retry_after is not None:
                raise RunwayError(
                    429,
                    "You have exceeded the rate limit for this endpoint.",
                    headers={"Retry-After": f"{retry_after:g}"},
                )
            return self._route(request)
        except RunwayError as error:
            return error.reply

    def _route(self, request: Request) -> Reply:
        task = _TASK_PATH_RE.fullmatch(request.path)
        if task and request.method == "GET":
            return Reply.json(200, self._task_body(task[1]))
        if task and request.method == "DELETE":
            return self._delete(task[1])
        if request.method == "POST" and request.path in ("/v1/image_to_video", "/v1/text_to_image"):
            return self._submit(request)
        raise RunwayError(404, f"Cannot {request.method} {request.path}")

    def _authorize(self, request: Request) -> None:
        scheme, _, key = request.header("authorization").partition(" ")
        if scheme.lower() != "bearer" or key.strip() != self.api_key:
            raise RunwayError(401, "Invalid API key")
        version = request.header("x-runway-version")
        if not version:
            raise RunwayError(
                400, "The X-Runway-Version header is required; the latest version is 2024-11-06"
            )
        if version not in API_VERSIONS:
            raise RunwayError(
                400,
                f"Invalid X-Runway-Version header {version!r}: use one of "
                f"{', '.join(API_VERSIONS)}",
            )

    # ---- task creation ------------------------------------------------------------------------

    def _submit(self, request: Request) -> Reply:
        try:
            body, _ = parse_form(request)
        except BadBody as exc:
            raise RunwayError(400, f"Invalid request body: {exc}") from None
        if request.path == "/v1/image_to_video":
            task, still = self._image_to_video(body)
        else:
            task, still = self._text_to_image(body), None
        if self.out_of_credits:
            raise RunwayError(400, "You do not have enough credits to run this task.")
        task_id = str(uuid.uuid4())
        recorded = dict(body)
        if still is not None:
            recorded["promptImage"] = len(still)
        with self._lock:
            task["failureCode"] = self._fail_next.pop(0) if self._fail_next else None
            seconds = self.task_seconds if task["kind"] == "video" else self.image_seconds
            self.tasks[task_id] = {
                **task,
                "status": "PENDING",
                "created": time.monotonic(),
                "seconds": seconds,
                "started": None,
                "cancelled": None,
            }
            if still is not None:
                self._stills[task_id] = still
            self.submissions.append(recorded)
            dropped = self._drop_submissions > 0
            self._drop_submissions -= 1 if dropped else 0
        if dropped:
            return Reply.no_answer()
        return Reply.json(200, {"id": task_id})

    def _image_to_video(self, body: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        model = body.get("model")
        if model not in VIDEO_MODELS:
            raise _invalid(
                "model",
                f"Invalid enum value. Expected {_choices(VIDEO_MODELS)}, received '{model}'",
                "invalid_enum_value",
            )
        spec = VIDEO_MODELS[model]
        still = _decode_image(body.get("promptImage"))
        ratio = _choice(body, "ratio", spec["ratios"], required=True)
        duration = body.get("duration", 10 if 10 in spec["durations"] else spec["durations"][-1])
        if duration not in spec["durations"] or isinstance(duration, bool):
            raise _invalid(
                "duration",
                f"duration must be one of {', '.join(map(str, spec['durations']))} for {model}",
                "invalid_union",
            )
        _prompt(body, required=False)
        _seed(body)
        task = {"kind": "video", "model": model, "ratio": ratio, "duration": duration}
        return task, still

    def _text_to_image(self, body: dict[str, Any]) -> dict[str, Any]:
        model = body.get("model")
        if model not in IMAGE_MODELS:
            raise _invalid(
                "model",
                f"Invalid enum value. Expected {_choices(IMAGE_MODELS)}, received '{model}'",
                "invalid_enum_value",
            )
        prompt = _prompt(body, required=True)
        ratio = _choice(body, "ratio", IMAGE_MODELS[model], required=True)
        seed = _seed(body)
        return {"kind": "image", "model": model, "ratio": ratio, "prompt": prompt, "seed": seed}

    # ---- task state ---------------------------------------------------------------------------

    def _task_body(self, task_id: str) -> dict[str, Any]:
        with self._lock:
            self.polls += 1
            task = self.tasks.get(task_id)
            if task is None:
                raise RunwayError(404, "Task not found")
            self._line()
            self._advance(task)
            body: dict[str, Any] = {
                "id": task_id,
                "createdAt": _iso(task["created"]),
                "status": task["status"],
            }
            if task["status"] == "RUNNING":
                body["progress"] = task["progress"]
            elif task["status"] == "SUCCEEDED":
                suffix = "mp4" if task["kind"] == "video" else "png"
                body["output"] = [f"{self.base_url}/files/{task_id}.{suffix}?token={task['token']}"]
            elif task["status"] == "FAILED":
                body["failure"] = "An unexpected error occurred while generating the output."
                if task["failureCode"].startswith("SAFETY"):
                    body["failure"] = "The input was rejected by content moderation."
                body["failureCode"] = task["failureCode"]
            return body

    def _line(self) -> None:
        """Give each task the time it leaves Runway's line (under the lock): at once, or with
        `concurrency` set, in the order the tasks came, when a slot frees. A task cancelled
        before it left the line never takes a slot; one cancelled while running frees its slot
        then. Worked out afresh from the tasks' fixed times, so a start never moves."""
        now = time.monotonic()
        ends: list[float] = []  # a heap: when each task holding a slot gives it back
        for task in self.tasks.values():
            start, waited = task["created"], False
            if self.concurrency is not None:
                while ends and ends[0] <= start:
                    heapq.heappop(ends)
                if len(ends) >= self.concurrency:
                    start, waited = heapq.heappop(ends), True
            cancelled = task["cancelled"]
            if cancelled is not None and cancelled <= start:
                if waited:  # the slot it would have taken stays with the next in line
                    heapq.heappush(ends, start)
                continue
            end = start + task["seconds"]
            heapq.heappush(ends, end if cancelled is None else min(end, cancelled))
            task["started"] = start if start <= now else None

    def _advance(self, task: dict[str, Any]) -> None:
        """Move `task` along (THROTTLED in the line) → PENDING → (THROTTLED) → RUNNING →
        SUCCEEDED or FAILED by the time since it left the line (as a share of its seconds)."""
        if task["status"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return
        if task["started"] is None:
            task["status"] = "THROTTLED"
            return
        share = (time.monotonic() - task["started"]) / max(task["seconds"], 1e-9)
        task["status"] = "PENDING"
        running_from = 0.5 if self.throttle else 0.2
        if share >= 1:
            task["status"] = "FAILED" if task["failureCode"] else "SUCCEEDED"
            task["token"] = uuid.uuid4().hex
        elif share >= running_from:
            task["status"] = "RUNNING"
            task["progress"] = round((share - running_from) / (1 - running_from), 2)
        elif self.throttle and share >= 0.15:
            task["status"] = "THROTTLED"

    def _delete(self, task_id: str) -> Reply:
        with self._lock:
            task = self.tasks.get(task_id)
            if task is None:
                raise RunwayError(404, "Task not found")
            if task["status"] not in ("SUCCEEDED", "FAILED", "CANCELLED"):
                task["cancelled"] = time.monotonic()
            task["status"] = "CANCELLED"
            self.deleted.append(task_id)
        return Reply(204, b"", "text/plain")

    # ---- outputs ------------------------------------------------------------------------------

    def _file(self, request: Request) -> Reply:
        match = _FILE_PATH_RE.fullmatch(request.path)
        with self._lock:
            task = self.tasks.get(match[1]) if match else None
            self.downloads += 1
            dropped = self._drop_downloads > 0
            self._drop_downloads -= 1 if dropped else 0
        if task is None or task.get("token") != request.query.get("token"):
            return Reply(403, b"<Error><Code>AccessDenied</Code></Error>", "application/xml")
        if request.header("authorization"):
            return Reply(
                400,
                b"<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed"
                b"</Message></Error>",
                "application/xml",
            )
        if dropped:
            return Reply.no_answer()
        assert match is not None
        if match[2] == "png":
            return Reply(200, _draw_png(task), "image/png")
        return Reply(200, self._clip(match[1], task).read_bytes(), "video/mp4")

    def _clip(self, task_id: str, task: dict[str, Any]) -> Path:
        """The task's MP4, made on first use: a slow pan across the still at the ratio's size.
        One file per distinct still, ratio and duration."""
        with self._lock:
            files_dir = self._files_dir
            still = self._stills[task_id]
        key = hashlib.sha256(still + f"|{task['ratio']}|{task['duration']}".encode()).hexdigest()
        with self._lock:
            lock = self._file_locks.setdefault(key, threading.Lock())
        assert files_dir is not None
        clip = files_dir / f"{key}.mp4"
        with lock:
            if clip.exists():
                return clip
            source = files_dir / f"{key}.still"
            source.write_bytes(still)
            width, height = map(int, task["ratio"].split(":"))
            duration = task["duration"]
            zoomed_w, zoomed_h = _even(width * 1.15), _even(height * 1.15)
            pan = (
                f"scale={zoomed_w}:{zoomed_h}:force_original_aspect_ratio=increase,"
                f"crop={width}:{height}:x='(iw-{width})*t/{duration}':y='(ih-{height})/2',"
                "format=yuv420p"
            )
            partial = files_dir / f"{task_id}.part.mp4"
            completed = subprocess.run(
                [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loop", "1", "-i", str(source)]
                + ["-vf", pan, "-t", str(duration), "-r", str(CLIP_FPS), "-c:v", "libx264"]
                + ["-preset", "ultrafast", "-movflags", "+faststart", str(partial)],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=FFMPEG_TIMEOUT_S,
                check=False,
            )
            if completed.returncode != 0:
                raise RuntimeError(f"ffmpeg could not make the clip: {completed.stderr[-500:]}")
            partial.replace(clip)
            return clip


def _choices(options: Any) -> str:
    return " | ".join(f"'{option}'" for option in options)


def _choice(body: dict[str, Any], field: str, options: tuple[str, ...], *, required: bool) -> Any:
    value = body.get(field)
    if value is None and not required:
        return None
    if value not in options:
        raise _invalid(
            field,
            f"Invalid enum value. Expected {_choices(options)}, received '{value}'",
            "invalid_enum_value",
        )
    return value


def _prompt(body: dict[str, Any], *, required: bool) -> str | None:
    text = body.get("promptText")
    if text is None and not required:
        return None
    if not isinstance(text, str) or not text:
        raise _invalid("promptText", "promptText must be a non-empty string")
    if len(text.encode("utf-16-le")) // 2 > MAX_PROMPT_UTF16:
        raise _invalid(
            "promptText",
            f"String must contain at most {MAX_PROMPT_UTF16} character(s)",
            "too_big",
        )
    return text


def _seed(body: dict[str, Any]) -> int | None:
    seed = body.get("seed")
    if seed is None:
        return None
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise _invalid("seed", f"seed must be an integer from 0 to {MAX_SEED}")
    return seed


def _decode_image(value: Any) -> bytes:
    """The bytes of a promptImage data URI holding a JPEG, PNG or WebP with an aspect ratio
    between 0.5 and 2."""
    if not isinstance(value, str) or not value:
        raise _invalid("promptImage", "promptImage is required")
    if len(value) > MAX_DATA_URI_CHARS:
        raise _invalid("promptImage", "Data URIs must be at most 5MB", "too_big")
    match = _DATA_URI_RE.fullmatch(value)
    if match is None:
        raise _invalid(
            "promptImage",
            "This local server takes promptImage as a data URI of a JPEG, PNG or WebP image",
            "invalid_string",
        )
    try:
        data = base64.b64decode(match[2], validate=True)
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            width, height = image.size
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError):
        raise _invalid("promptImage", "The data URI is not a decodable image", "custom") from None
    if not 0.5 <= width / height <= 2:
        raise _invalid(
            "promptImage", "The image's width / height must be between 0.5 and 2", "custom"
        )
    return data


def _draw_png(task: dict[str, Any]) -> bytes:
    """A picture of the ratio's size: a gradient and a disc whose colours follow the prompt
    and seed, so another seed gives another picture."""
    width, height = map(int, task["ratio"].split(":"))
    tint = zlib.crc32(f"{task['prompt']}|{task['seed']}".encode()) & 0xFFFFFF
    colour = (tint >> 16, (tint >> 8) & 0xFF, tint & 0xFF)
    gradient = Image.linear_gradient("L").resize((width, height))
    image = Image.merge("RGB", [gradient.point(lambda v, c=c: (v + c) // 2) for c in colour])
    radius = min(width, height) // 4
    ImageDraw.Draw(image).ellipse(
        (width // 2 - radius, height // 2 - radius, width // 2 + radius, height // 2 + radius),
        fill=(255 - colour[0], 255 - colour[1], 255 - colour[2]),
    )
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def _even(value: float) -> int:
    return int(value) // 2 * 2


def _iso(monotonic: float) -> str:
    wall = time.time() - (time.monotonic() - monotonic)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1000):03d}Z"
