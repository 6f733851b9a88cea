"""fal.ai's queue API as a `RemoteAnimator`: any image-to-video model hosted on fal.

The wire protocol (https://docs.fal.ai/model-apis/model-endpoints/queue):
- submit: `POST {queue base}/{model id}` with the model's input as JSON and
  `Authorization: Key <FAL_KEY>`; the answer carries `request_id`, `status_url`, `response_url`
  and `cancel_url`. Those URLs name only the app (`fal-ai/kling-video/requests/{id}`, without the
  model's sub-path), so they are recorded as fal gives them and never rebuilt;
- status: `GET status_url` → `{"status": "IN_QUEUE" | "IN_PROGRESS" | "COMPLETED", ...}`. There
  is no failed status: a failed request is COMPLETED with `error` (and `error_type`) in the status
  body, and its result answers with an error status and fal's `{"detail": ...}` body;
- result: `GET response_url` → the model's output, `{"video": {"url": ..., ...}}` for video
  models; the URL is a CDN address, fetched without the key;
- cancel: `PUT cancel_url`.

Models differ in how their input is named; `FAMILIES` maps a model-id prefix to its field names,
allowed durations and fixed extras, and unknown models get the common `image_url` + `prompt`.
The still goes inline as a base64 data URI, which fal accepts wherever it takes a file URL.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import mimetypes
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import requests
from PIL import Image, ImageOps

from shared.errors import (
    BotError,
    OutcomeUnknown,
    OwnerActionNeeded,
    PermanentError,
    TransientError,
)
from shared.http import HttpClient, RetryPolicy, retry_after_seconds
from shared.providers.base import AnimationStatus

log = logging.getLogger(__name__)

SNIPPET_CHARS = 300
# A still larger than this goes as JPEG: fal caps request bodies, and base64 adds a third.
INLINE_IMAGE_BYTES = 1_000_000
JPEG_QUALITY = 90
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})
DOWNLOAD_CHUNK_BYTES = 1 << 16
RUNNING_STATES = frozenset({"IN_QUEUE", "IN_PROGRESS"})
QUEUED_STATE = "IN_QUEUE"
"""The request waits in fal's line: its timeout has not begun."""


@dataclass(frozen=True)
class ModelFamily:
    """How the models whose id starts with `prefix` name their input and output.

    `durations` are the allowed values of `duration_field` as written on the wire, shortest
    first ("5" for Kling, "8s" for Veo); empty when the family takes no duration, and then a clip
    lasts `default_seconds` (None: unknown). `aspect_ratios` are the values `aspect_field` takes;
    `fixed` are extra fields sent as they are; `video_path` leads to the clip's URL in the result.
    """

    prefix: str
    image_field: str = "image_url"
    prompt_field: str = "prompt"
    duration_field: str = "duration"
    durations: tuple[str, ...] = ()
    default_seconds: float | None = None
    aspect_field: str = "aspect_ratio"
    aspect_ratios: tuple[str, ...] = ()
    fixed: Mapping[str, Any] = field(default_factory=dict)
    video_path: tuple[str, ...] = ("video", "url")

    def duration_for(self, seconds: float) -> str | None:
        """The shortest allowed duration that covers `seconds`, capped at the longest."""
        if not self.durations:
            return None
        for value in self.durations:
            if _seconds_of(value) >= seconds:
                return value
        return self.durations[-1]

    def aspect_for(self, size: tuple[int, int]) -> str | None:
        """The allowed aspect ratio nearest to `size` (width, height), compared in log space."""
        if not self.aspect_ratios:
            return None
        wanted = math.log(size[0] / size[1])
        return min(self.aspect_ratios, key=lambda ratio: abs(_log_ratio(ratio) - wanted))


# From each family's input schema on fal.ai/models/<model id>/api (checked 2026-11).
FAMILIES: tuple[ModelFamily, ...] = (
    # fal-ai/kling-video/v2.1/standard/image-to-video and siblings (v1.6, v2.5-turbo, pro).
    ModelFamily(
        "fal-ai/kling-video/",
        durations=("5", "10"),
        fixed={"negative_prompt": "blur, distort, and low quality, text, watermark"},
    ),
    # fal-ai/minimax/hailuo-02/standard/image-to-video, hailuo-02-fast, ...
    ModelFamily(
        "fal-ai/minimax/hailuo",
        durations=("6", "10"),
        fixed={"prompt_optimizer": True},
    ),
    # fal-ai/veo3/fast/image-to-video makes 8 s clips only; the bot lays its own narration, so
    # no generated audio (it also costs more).
    ModelFamily(
        "fal-ai/veo3/",
        durations=("8s",),
        aspect_ratios=("16:9", "9:16"),
        fixed={"generate_audio": False},
    ),
    ModelFamily(
        "fal-ai/veo3.1/",
        durations=("4s", "6s", "8s"),
        aspect_ratios=("16:9", "9:16"),
        fixed={"generate_audio": False},
    ),
    # fal-ai/bytedance/seedance/v1/{lite,pro}/image-to-video: whole seconds as strings.
    ModelFamily(
        "fal-ai/bytedance/seedance/v1/",
        durations=tuple(str(n) for n in range(3, 13)),
        aspect_ratios=("21:9", "16:9", "4:3", "1:1", "3:4", "9:16"),
    ),
    # fal-ai/wan/v2.2-a14b/image-to-video counts frames (81 at 16 fps by default), not seconds.
    ModelFamily(
        "fal-ai/wan/",
        default_seconds=81 / 16,
        aspect_ratios=("16:9", "9:16", "1:1"),
    ),
)
COMMON = ModelFamily("")


def family_of(model: str) -> ModelFamily:
    """The family whose prefix `model` starts with, else the common shape."""
    return next((family for family in FAMILIES if model.startswith(family.prefix)), COMMON)


def _seconds_of(duration: str) -> float:
    return float(duration.rstrip("s"))


def _log_ratio(ratio: str) -> float:
    width, height = ratio.split(":")
    return math.log(float(width) / float(height))


def _fal_error_body(response: requests.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "detail" in body


def _retryable(response: requests.Response) -> bool:
    """What fal's own client retries: 408, 409, 429, and a 5xx from the gateway in front of fal
    (no `{"detail": ...}` body). A 5xx with fal's error body is a stored answer (a failed
    request's result) that would come back the same."""
    status = response.status_code
    if status in (408, 409, 429):
        return True
    return status >= 500 and not _fal_error_body(response)


def detail_of(response: requests.Response) -> str:
    """fal's error `detail`, as one line: a string, or a list of `{"loc", "msg", "type"}`."""
    try:
        body = response.json()
    except ValueError:
        return response.text
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if not isinstance(item, dict):
                parts.append(str(item))
                continue
            loc = [str(part) for part in item.get("loc", []) if part != "body"]
            where = ".".join(loc)
            parts.append(f"{where}: {item.get('msg', '')}" if where else str(item.get("msg", "")))
        return "; ".join(parts)
    return json.dumps(detail, ensure_ascii=False)


def data_uri(still: Path) -> tuple[str, int]:
    """The still as a base64 data URI, and its byte count: as it is when small and of a type
    every model reads, else re-encoded as JPEG."""
    raw = still.read_bytes()
    mime = mimetypes.guess_type(still.name)[0] or ""
    if len(raw) > INLINE_IMAGE_BYTES or mime not in INLINE_TYPES:
        with Image.open(still) as image:
            buffer = io.BytesIO()
            ImageOps.exif_transpose(image).convert("RGB").save(buffer, "JPEG", quality=JPEG_QUALITY)
        raw, mime = buffer.getvalue(), "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}", len(raw)


class FalAnimator:
    """Animates stills with the fal-hosted image-to-video model `model`.

    Status and result GETs are retried (idempotent); the submit POST is not sent again once it
    may have arrived (`OutcomeUnknown`). The key is sent only to the queue, never to the CDN,
    and never appears in logs or errors.
    """

    name = "fal"

    def __init__(
        self,
        queue_base: str,
        key: str,
        model: str,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float = 30.0,
        policy: RetryPolicy | None = None,
    ) -> None:
        if not key:
            raise ValueError("a fal.ai key (FAL_KEY) is required")
        self.queue_base = queue_base.rstrip("/")
        self.model = model.strip("/")
        self.family = family_of(self.model)
        self._key = key
        self._sleep = sleep
        self._timeout = timeout
        self._policy = policy or RetryPolicy()
        self._http = HttpClient(
            service="fal",
            secrets=(key,),
            session=session or requests.Session(),
            sleep=sleep,
            timeout=timeout,
            policy=self._policy,
            retryable=_retryable,
        )

    def billed_seconds(self, seconds: float) -> float:
        duration = self.family.duration_for(seconds)
        if duration is not None:
            return _seconds_of(duration)
        return self.family.default_seconds or seconds

    def submit(self, still: Path, prompt: str, seconds: float, size: tuple[int, int]) -> dict:
        family = self.family
        image, image_bytes = data_uri(still)
        payload: dict[str, Any] = {family.image_field: image, family.prompt_field: prompt}
        duration = family.duration_for(seconds)
        if duration is not None:
            payload[family.duration_field] = duration
        aspect = family.aspect_for(size)
        if aspect is not None:
            payload[family.aspect_field] = aspect
        payload.update(family.fixed)
        response = self._http.request(
            "POST",
            f"{self.queue_base}/{self.model}",
            label="submit",
            json_body=payload,
            headers=self._auth(),
            idempotent=False,
        )
        self._check(response, "submit")
        handle = self._handle(response)
        log.info(
            "fal submitted model=%s request_id=%s duration=%s aspect=%s image_bytes=%d",
            self.model,
            handle["id"],
            duration,
            aspect,
            image_bytes,
        )
        return handle

    def status(self, handle: dict) -> AnimationStatus:
        response = self._get(handle["status_url"], "status")
        self._check(response, "status")
        body = self._json(response, "status")
        state = body.get("status")
        if state in RUNNING_STATES:
            log.debug(
                "fal running request_id=%s status=%s queue_position=%s",
                handle["id"],
                state,
                body.get("queue_position"),
            )
            return AnimationStatus("queued" if state == QUEUED_STATE else "running")
        if state != "COMPLETED":
            log.warning("fal unknown status request_id=%s status=%s", handle["id"], state)
            return AnimationStatus("running")
        if body.get("error"):
            return self._failed(handle, str(body["error"]), str(body.get("error_type") or ""))
        return self._result(handle)

    def download(self, status: AnimationStatus, out_path: Path) -> None:
        if status.state != "succeeded" or not status.output_url:
            raise ValueError(f"nothing to download from a {status.state} fal request")
        partial = out_path.with_name(out_path.name + ".part")
        attempts = self._policy.max_attempts
        for attempt in range(1, attempts + 1):
            problem = self._fetch(status.output_url, partial)
            if problem is None:
                partial.replace(out_path)
                return
            if attempt == attempts:
                partial.unlink(missing_ok=True)
                raise TransientError(f"fal download failed after {attempt} attempt(s): {problem}")
            delay = self._policy.backoff(attempt)
            log.warning(
                "fal download retry attempt=%d/%d delay=%.2f reason=%s",
                attempt,
                attempts,
                delay,
                problem,
            )
            self._sleep(delay)

    def cancel(self, handle: dict) -> None:
        try:
            response = self._http.request(
                "PUT", handle["cancel_url"], label="cancel", headers=self._auth()
            )
        except BotError as exc:
            log.warning("fal cancel failed request_id=%s reason=%s", handle.get("id"), exc)
            return
        answer = self._snippet(response.text)
        log.info(
            "fal cancel request_id=%s http_status=%d answer=%s",
            handle.get("id"),
            response.status_code,
            answer,
        )

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Key {self._key}"}

    def _get(self, url: str, label: str) -> requests.Response:
        return self._http.request("GET", url, label=label, headers=self._auth())

    def _result(self, handle: dict) -> AnimationStatus:
        response = self._get(handle["response_url"], "result")
        if response.status_code in (401, 403, 429):
            self._check(response, "result")
        if not response.ok:
            return self._failed(
                handle, detail_of(response), response.headers.get("X-Fal-Error-Type", "")
            )
        body = self._json(response, "result")
        url: Any = body
        for key in self.family.video_path:
            url = url.get(key) if isinstance(url, dict) else None
        if not isinstance(url, str) or not url:
            shape = self._snippet(json.dumps(body, ensure_ascii=False))
            return self._failed(handle, f"the result has no video URL: {shape}", "")
        log.info("fal succeeded request_id=%s", handle["id"])
        return AnimationStatus("succeeded", output_url=url)

    def _failed(self, handle: dict, message: str, error_type: str) -> AnimationStatus:
        message = self._snippet(message)
        kind = f" ({error_type})" if error_type else ""
        log.warning(
            "fal request failed request_id=%s error_type=%s error=%s",
            handle["id"],
            error_type,
            message,
        )
        return AnimationStatus("failed", error=f"fal.ai: {message}{kind}")

    def _check(self, response: requests.Response, label: str) -> None:
        """Return for a 2xx, else raise the error kind the status stands for."""
        if response.ok:
            return
        status = response.status_code
        detail = self._snippet(detail_of(response))
        if status in (401, 403):
            log.error("fal refused the key label=%s status=%d detail=%s", label, status, detail)
            raise OwnerActionNeeded(
                f"fal.ai refused the API key (HTTP {status} on {label}): check FAL_KEY ({detail})"
            )
        log.warning("fal refused label=%s status=%d detail=%s", label, status, detail)
        message = f"fal.ai {label} for {self.model}: HTTP {status}: {detail}"
        if status == 429 or status >= 500:
            raise TransientError(message, retry_after=retry_after_seconds(response))
        raise PermanentError(message)

    def _handle(self, response: requests.Response) -> dict:
        """The handle from a submit answer; an unreadable 2xx means the request was probably
        queued, so it is an unknown outcome rather than a refusal."""
        try:
            body = response.json()
        except ValueError:
            body = None
        names = ("request_id", "status_url", "response_url", "cancel_url")
        if not isinstance(body, dict) or not all(isinstance(body.get(n), str) for n in names):
            raise OutcomeUnknown(
                f"fal.ai submit for {self.model}: unreadable answer "
                f"{self._snippet(response.text)!r}"
            )
        return {
            "id": body["request_id"],
            "status_url": body["status_url"],
            "response_url": body["response_url"],
            "cancel_url": body["cancel_url"],
        }

    def _json(self, response: requests.Response, label: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise TransientError(
                f"fal.ai {label}: not a JSON object: {self._snippet(response.text)!r}"
            )
        return body

    def _fetch(self, url: str, partial: Path) -> str | None:
        """Stream `url` into `partial`; None when complete, else why it should be tried again.

        Raises PermanentError when the CDN refuses (an expired or unknown file)."""
        try:
            with self._http.session.get(url, stream=True, timeout=self._timeout) as response:
                status = response.status_code
                if status == 429 or status >= 500:
                    return f"HTTP {status}"
                if not response.ok:
                    raise PermanentError(f"fal video download refused: HTTP {status}")
                expected = response.headers.get("Content-Length")
                written = 0
                with partial.open("wb") as out:
                    for chunk in response.iter_content(DOWNLOAD_CHUNK_BYTES):
                        out.write(chunk)
                        written += len(chunk)
        except requests.RequestException as exc:
            return f"{type(exc).__name__}: {self._snippet(str(exc))}"
        if expected is not None and expected.isdigit() and int(expected) != written:
            return f"truncated: {written} of {expected} bytes"
        if written == 0:
            return "empty body"
        return None

    def _snippet(self, text: str) -> str:
        return self._http.redact(" ".join(text.split()))[:SNIPPET_CHARS]
