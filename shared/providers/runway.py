"""Runway as the animation provider (image-to-video) and as a visuals provider (text-to-image).

Wire format (API version 2024-11-06, https://docs.dev.runwayml.com/api/): every request carries
`Authorization: Bearer <key>` and `X-Runway-Version`; `POST /v1/image_to_video` and
`POST /v1/text_to_image` create a task and answer `{"id": ...}`; `GET /v1/tasks/{id}` reports
`status` PENDING, THROTTLED, RUNNING (with `progress`), SUCCEEDED (with `output`, a list of
pre-signed URLs that expire in 24-48 h) or FAILED (with `failure` and `failureCode`) or CANCELLED;
`DELETE /v1/tasks/{id}` cancels or deletes a task. Refusals are `{"error": ..., "issues": [...]}`.

A task-creating POST costs credits, so it is never sent twice blindly: an answer lost after the
request went out raises `OutcomeUnknown`. The key never appears in logs or errors.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import time
import zlib
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import requests
from PIL import Image, ImageOps, UnidentifiedImageError

from shared.config import ConfigError
from shared.errors import BotError, OwnerActionNeeded, PermanentError, TransientError
from shared.http import HttpClient, RetryPolicy, is_retryable_status, redact, retry_after_seconds
from shared.plan import ScenePlan
from shared.providers.base import AnimationStatus

log = logging.getLogger(__name__)

SNIPPET_CHARS = 300
MAX_PROMPT_UTF16 = 1000
"""promptText: "a non-empty string up to 1000 characters (measured in UTF-16 code units)"."""
DATA_URI_LIMIT = 5_000_000
"""Runway takes images as data URIs up to 5 MB; the whole URI is kept under it."""
MAX_SEED = 4_294_967_295
DOWNLOAD_CHUNK = 1 << 16
QUEUED_STATES = frozenset({"PENDING", "THROTTLED"})
"""The task waits in Runway's line (THROTTLED: the account's concurrency is used up)."""
FAILED_STATES = frozenset({"FAILED", "CANCELLED"})
_DIRECT_IMAGE_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}

_I2V_16_9 = ("1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672")
VIDEO_RATIOS: dict[str, tuple[str, ...]] = {
    "gen4_turbo": _I2V_16_9,
    "gen4.5": _I2V_16_9,
    "veo3": ("1280:720", "720:1280"),
    "veo3.1": ("1280:720", "720:1280", "1080:1920", "1920:1080"),
    "veo3.1_fast": ("1280:720", "720:1280", "1080:1920", "1920:1080"),
}
"""The `ratio` values each image-to-video model accepts (SDK types, 2026)."""
VIDEO_DURATIONS: dict[str, tuple[int, ...]] = {
    "gen4_turbo": tuple(range(2, 11)),
    "gen4.5": tuple(range(2, 11)),
    "veo3": (8,),
    "veo3.1": (4, 6, 8),
    "veo3.1_fast": (4, 6, 8),
}
"""The `duration` values (seconds) each model accepts; gen4_turbo took only 5 or 10 until
October 2025, and takes any whole number from 2 to 10 since."""
_T2I_GEN4 = (
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
)
IMAGE_RATIOS: dict[str, tuple[str, ...]] = {"gen4_image": _T2I_GEN4, "gen4_image_turbo": _T2I_GEN4}
"""The `ratio` values each text-to-image model accepts."""
IMAGE_STYLE = "No text, no letters, no captions, no watermarks, no logos."


def closest_ratio(size: tuple[int, int], ratios: tuple[str, ...]) -> str:
    """The ratio ("W:H") whose aspect is closest to `size` (width, height), compared on a log
    scale so that 2:1 and 1:2 are equally far from 1:1; the first listed wins a tie."""
    target = math.log(size[0] / size[1])
    return min(ratios, key=lambda ratio: abs(math.log(_aspect(ratio)) - target))


def ratio_size(ratio: str) -> tuple[int, int]:
    width, height = ratio.split(":")
    return int(width), int(height)


def _aspect(ratio: str) -> float:
    width, height = ratio_size(ratio)
    return width / height


def pick_duration(seconds: float, durations: tuple[int, ...]) -> int:
    """The shortest accepted duration that covers `seconds`, or the longest one there is."""
    longer = [d for d in sorted(durations) if d >= seconds - 1e-6]
    return longer[0] if longer else max(durations)


def truncate_utf16(text: str, limit: int = MAX_PROMPT_UTF16) -> str:
    """`text` cut to at most `limit` UTF-16 code units (how Runway measures promptText), never
    splitting a surrogate pair."""
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return text[:index]
    return text


def url_label(url: str) -> str:
    """`url` without its query: pre-signed output URLs carry their signature there."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


class RunwayClient:
    """Talks to the Runway API: creates tasks, reads and cancels them, downloads their output.

    `connect_timeout` and `read_timeout` bound one attempt; GETs and DELETEs are retried on
    timeouts, 429 (honouring Retry-After) and 5xx; task-creating POSTs only when the connection
    never opened, or when Runway answered 429/5xx (it refused them, so nothing was created).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        version: str,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        policy: RetryPolicy | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("a Runway API key is required")
        self.base_url = base_url.rstrip("/")
        self.version = version
        self._api_key = api_key
        self._sleep = sleep
        self._timeout = (connect_timeout, read_timeout)
        self._policy = policy or RetryPolicy()
        self._session = session or requests.Session()
        self._http = HttpClient(
            service="runway",
            secrets=(api_key,),
            session=self._session,
            sleep=sleep,
            # requests takes a (connect, read) pair; HttpClient passes it through untouched
            # because this client sets no total_timeout.
            timeout=self._timeout,  # type: ignore[arg-type]
            policy=self._policy,
        )

    def create_task(self, path: str, payload: dict[str, Any]) -> str:
        """POST `payload` to `path` (e.g. "/v1/image_to_video"); the new task's id."""
        response = self._request("POST", path, payload, idempotent=False)
        try:
            task_id = response.json()["id"]
        except (ValueError, KeyError, TypeError):
            raise PermanentError(
                f"Runway answered {path} without a task id: {self._snippet(response)}"
            ) from None
        log.debug("runway task created path=%s task=%s model=%s", path, task_id, payload["model"])
        return str(task_id)

    def task(self, task_id: str) -> dict[str, Any]:
        """The task as `GET /v1/tasks/{id}` reports it."""
        response = self._request("GET", f"/v1/tasks/{task_id}")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "status" not in body:
            raise PermanentError(
                f"Runway answered task {task_id} without a status: {self._snippet(response)}"
            )
        return body

    def delete_task(self, task_id: str) -> None:
        """Cancel a task that is still running, or delete a finished one."""
        self._request("DELETE", f"/v1/tasks/{task_id}")
        log.info("runway task deleted task=%s", task_id)

    def download(self, url: str, out_path: Path) -> None:
        """Stream `url` (a pre-signed output URL) to `out_path`, retrying a broken transfer.

        No Authorization header goes along: the URL is signed and lives on another host, which
        must never see the key. A URL that has expired (401/403/404/410) raises TransientError,
        since reading the task again gives a fresh one."""
        label = url_label(url)
        query = urlsplit(url).query
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        partial = out_path.with_name(out_path.name + ".part")
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                with self._session.get(
                    url,
                    stream=True,
                    timeout=self._timeout,
                    headers={"Authorization": None},  # drops one a caller's session may carry
                ) as response:
                    if response.ok:
                        with partial.open("wb") as sink:
                            for chunk in response.iter_content(DOWNLOAD_CHUNK):
                                sink.write(chunk)
                        partial.replace(out_path)
                        log.info(
                            "runway output downloaded url=%s bytes=%d",
                            label,
                            out_path.stat().st_size,
                        )
                        return
                    status = response.status_code
                    retry_after = retry_after_seconds(response)
                reason = f"HTTP {status}"
            except requests.RequestException as exc:
                status = None
                reason = f"{type(exc).__name__}: {redact(str(exc), [query, self._api_key])}"
            partial.unlink(missing_ok=True)
            if status is not None and not is_retryable_status(status):
                self._refuse_download(label, status)
            too_long = retry_after is not None and retry_after > self._policy.max_delay
            if attempt >= self._policy.max_attempts or too_long:
                raise TransientError(
                    f"Runway output download failed after {attempt} attempt(s) url={label}: "
                    f"{reason}",
                    retry_after=retry_after,
                )
            delay = retry_after if retry_after is not None else self._policy.backoff(attempt)
            log.warning(
                "runway download retry url=%s attempt=%d/%d delay=%.2f reason=%s",
                label,
                attempt,
                self._policy.max_attempts,
                delay,
                reason,
            )
            self._sleep(delay)

    @staticmethod
    def _refuse_download(label: str, status: int) -> None:
        if status in (401, 403, 404, 410):
            raise TransientError(
                f"Runway output URL refused (HTTP {status}), probably expired: read the task "
                f"again for a fresh URL (url={label})"
            )
        raise PermanentError(f"Runway output download refused (HTTP {status}) url={label}")

    def _request(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None = None,
        *,
        idempotent: bool = True,
    ) -> requests.Response:
        response = self._http.request(
            method,
            f"{self.base_url}{path}",
            label=f"{method} {path}",
            json_body=payload,
            headers={
                "Authorization": f"Bearer {self._api_key}",
                "X-Runway-Version": self.version,
            },
            idempotent=idempotent,
        )
        return self._checked(method, path, response)

    def _checked(self, method: str, path: str, response: requests.Response) -> requests.Response:
        """The 2xx `response`, else the error it stands for."""
        if response.ok:
            return response
        status = response.status_code
        message = self._error_message(response)
        if status in (401, 403):
            log.error("runway refused the key method=%s path=%s status=%d", method, path, status)
            raise OwnerActionNeeded(
                f"Runway rejected the API key (HTTP {status}) at {self.base_url}: "
                "check RUNWAY_API_KEY"
            )
        if status == 400 and "credit" in message.lower():
            log.error("runway out of credits method=%s path=%s message=%s", method, path, message)
            raise OwnerActionNeeded(
                f"Runway says the account cannot pay for this task: add credits to the Runway "
                f"developer account of RUNWAY_API_KEY ({message})"
            )
        if is_retryable_status(status):  # only when the server said not to retry
            raise TransientError(
                f"Runway {method} {path} failed (HTTP {status}): {message}",
                retry_after=retry_after_seconds(response),
            )
        log.warning(
            "runway request refused method=%s path=%s status=%d message=%s",
            method,
            path,
            status,
            message,
        )
        raise PermanentError(f"Runway refused {method} {path} (HTTP {status}): {message}")

    def _error_message(self, response: requests.Response) -> str:
        """Runway's `error`, followed by each of its `issues` as "path: message"."""
        try:
            body = response.json()
        except ValueError:
            return self._snippet(response)
        if not isinstance(body, dict):
            return self._redacted(str(body))
        parts = [str(body.get("error") or body.get("message") or "")]
        for issue in body.get("issues") or []:
            if isinstance(issue, dict):
                where = ".".join(str(step) for step in issue.get("path") or [])
                parts.append(f"{where}: {issue.get('message', '')}" if where else str(issue))
        return self._redacted("; ".join(part for part in parts if part))

    def _snippet(self, response: requests.Response) -> str:
        return self._redacted(response.text)

    def _redacted(self, text: str) -> str:
        return self._http.redact(" ".join(text.split()))[:SNIPPET_CHARS]


class RunwayAnimator:
    """Brings a still to life with Runway image-to-video (a `RemoteAnimator`)."""

    name = "runway"

    def __init__(self, client: RunwayClient, model: str) -> None:
        if model not in VIDEO_RATIOS:
            raise ConfigError(
                f"RUNWAY_VIDEO_MODEL={model} is not an image-to-video model this bot knows; "
                f"choose one of {', '.join(sorted(VIDEO_RATIOS))}"
            )
        self.model = model
        self._client = client

    def billed_seconds(self, seconds: float) -> float:
        return float(pick_duration(seconds, VIDEO_DURATIONS[self.model]))

    def submit(self, still: Path, prompt: str, seconds: float, size: tuple[int, int]) -> dict:
        payload: dict[str, Any] = {
            "model": self.model,
            "promptImage": image_data_uri(Path(still)),
            "ratio": closest_ratio(size, VIDEO_RATIOS[self.model]),
            "duration": pick_duration(seconds, VIDEO_DURATIONS[self.model]),
        }
        prompt_text = truncate_utf16(prompt.strip())
        if prompt_text:
            payload["promptText"] = prompt_text
        task_id = self._client.create_task("/v1/image_to_video", payload)
        log.info(
            "runway animation submitted task=%s model=%s ratio=%s duration=%d",
            task_id,
            self.model,
            payload["ratio"],
            payload["duration"],
        )
        return {"id": task_id}

    def status(self, handle: dict) -> AnimationStatus:
        return task_status(self._client.task(handle["id"]))

    def download(self, status: AnimationStatus, out_path: Path) -> None:
        if status.state != "succeeded" or not status.output_url:
            raise ValueError(f"no clip to download from a task in state {status.state}")
        self._client.download(status.output_url, Path(out_path))

    def cancel(self, handle: dict) -> None:
        try:
            self._client.delete_task(handle["id"])
        except BotError as exc:
            log.warning("runway cancel failed task=%s error=%s", handle.get("id"), exc)


def task_status(task: dict[str, Any]) -> AnimationStatus:
    """A task body from `GET /v1/tasks/{id}` as an `AnimationStatus`."""
    state = task.get("status")
    if state == "SUCCEEDED":
        output = task.get("output") or []
        if output and isinstance(output[0], str):
            return AnimationStatus("succeeded", output_url=output[0], progress=1.0)
        return AnimationStatus("failed", error="Runway reported success but gave no output")
    if state in FAILED_STATES:
        failure = task.get("failure") or ("the task was cancelled" if state == "CANCELLED" else "")
        code = task.get("failureCode")
        error = f"{state}: {failure}" + (f" (failureCode={code})" if code else "")
        return AnimationStatus("failed", error=error)
    if state in QUEUED_STATES:
        return AnimationStatus("queued")
    if state != "RUNNING":
        log.warning("runway task in an unknown status task=%s status=%s", task.get("id"), state)
    progress = task.get("progress")
    return AnimationStatus(
        "running", progress=float(progress) if isinstance(progress, (int, float)) else None
    )


def image_data_uri(path: Path, limit: int = DATA_URI_LIMIT) -> str:
    """The image at `path` as a data URI under `limit` characters: as it is when it is a JPEG,
    PNG or WebP small enough, else re-encoded as JPEG (smaller and smaller until it fits)."""
    raw = path.read_bytes()
    try:
        with Image.open(io.BytesIO(raw)) as image:
            image_format = image.format or ""
            image.load()
            picture = image.copy()
    except (UnidentifiedImageError, OSError):
        raise PermanentError(f"the still {path.name} is not an image") from None
    mime = _DIRECT_IMAGE_TYPES.get(image_format)
    if mime and _data_uri_length(len(raw), mime) <= limit:
        return _data_uri(raw, mime)
    picture = ImageOps.exif_transpose(picture).convert("RGB")
    for scale, quality in ((1.0, 92), (1.0, 80), (0.75, 80), (0.5, 75), (0.35, 70)):
        candidate = picture
        if scale < 1.0:
            candidate = picture.resize(
                (max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                Image.Resampling.LANCZOS,
            )
        buffer = io.BytesIO()
        candidate.save(buffer, "JPEG", quality=quality)
        if _data_uri_length(buffer.tell(), "image/jpeg") <= limit:
            log.info(
                "runway still re-encoded path=%s from=%s bytes=%d scale=%.2f quality=%d",
                path.name,
                image_format or "unknown",
                buffer.tell(),
                scale,
                quality,
            )
            return _data_uri(buffer.getvalue(), "image/jpeg")
    raise PermanentError(f"the still {path.name} does not fit Runway's data URI limit")


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _data_uri_length(size: int, mime: str) -> int:
    return len(f"data:{mime};base64,") + 4 * math.ceil(size / 3)


class RunwayVisuals:
    """Draws each scene with Runway text-to-image (a `RemoteVisuals`): `submit` creates the
    task, `status` reads it, `download` fetches the picture and fits it to the video frame.
    Nothing here waits: the step `media` records each handle and polls (shared/pipeline/media.py).
    """

    name = "runway"

    def __init__(self, client: RunwayClient, model: str) -> None:
        if model not in IMAGE_RATIOS:
            raise ConfigError(
                f"RUNWAY_IMAGE_MODEL={model} is not a text-to-image model this bot knows; "
                f"choose one of {', '.join(sorted(IMAGE_RATIOS))}"
            )
        self.model = model
        self._client = client

    def submit(self, plan: ScenePlan, index: int, size: tuple[int, int], variant: int = 0) -> dict:
        scene = plan.scenes[index]
        prompt = (scene.visual_prompt or scene.narration).strip().rstrip(".")
        payload = {
            "model": self.model,
            "promptText": truncate_utf16(f"{truncate_utf16(prompt, 900)}. {IMAGE_STYLE}"),
            "ratio": closest_ratio(size, IMAGE_RATIOS[self.model]),
            "seed": zlib.crc32(f"{prompt}|{variant}".encode()) % (MAX_SEED + 1),
        }
        task_id = self._client.create_task("/v1/text_to_image", payload)
        log.info(
            "runway still submitted task=%s scene=%d variant=%d ratio=%s",
            task_id,
            index,
            variant,
            payload["ratio"],
        )
        return {"id": task_id}

    def status(self, handle: dict) -> AnimationStatus:
        return task_status(self._client.task(handle["id"]))

    def download(self, status: AnimationStatus, size: tuple[int, int], out_path: Path) -> None:
        if status.state != "succeeded" or not status.output_url:
            raise ValueError(f"no picture to download from a task in state {status.state}")
        out_path = Path(out_path)
        download = out_path.with_name(out_path.name + ".download")
        try:
            self._client.download(status.output_url, download)
            _save_fitted_png(download, size, out_path)
        finally:
            download.unlink(missing_ok=True)

    def cancel(self, handle: dict) -> None:
        try:
            self._client.delete_task(handle["id"])
        except BotError as exc:
            log.warning("runway cancel failed task=%s error=%s", handle.get("id"), exc)


def _save_fitted_png(source: Path, size: tuple[int, int], out_path: Path) -> None:
    """Scale and centre-crop the image at `source` to exactly `size`, saved as PNG."""
    try:
        with Image.open(source) as image:
            fitted = ImageOps.fit(image.convert("RGB"), size, method=Image.Resampling.LANCZOS)
    except (UnidentifiedImageError, OSError):
        raise PermanentError("Runway's output is not an image") from None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fitted.save(out_path, "PNG")
