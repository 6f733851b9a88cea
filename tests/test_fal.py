"""FalAnimator against the local fal.ai queue stand-in, over real HTTP: no mocks."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests
from PIL import Image, ImageChops, ImageDraw

from localapi.fal_server import FalServer
from shared.errors import OutcomeUnknown, OwnerActionNeeded, PermanentError, TransientError
from shared.http import RetryPolicy
from shared.media import ffmpeg_exe, probe
from shared.providers.base import AnimationStatus
from shared.providers.fal import FalAnimator, data_uri, family_of

KLING = "fal-ai/kling-video/v2.1/standard/image-to-video"
MINIMAX = "fal-ai/minimax/hailuo-02/standard/image-to-video"
VEO3_FAST = "fal-ai/veo3/fast/image-to-video"
SEEDANCE = "fal-ai/bytedance/seedance/v1/lite/image-to-video"
WAN = "fal-ai/wan/v2.2-a14b/image-to-video"
UNKNOWN = "someone/custom-i2v"
PROMPT = "slow push-in on a lighthouse at dusk"
FAST_POLICY = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=1.0)


@pytest.fixture
def fal() -> Iterator[FalServer]:
    server = FalServer(task_seconds=0.2)
    server.start()
    yield server
    server.stop()


def make_still(path: Path, size: tuple[int, int] = (640, 360)) -> Path:
    image = Image.new("RGB", size, (30, 60, 120))
    draw = ImageDraw.Draw(image)
    for x in range(0, size[0], 40):
        draw.rectangle([x, 0, x + 19, size[1]], fill=(200, 120 + x % 100, 40))
    draw.ellipse([size[0] // 3, size[1] // 3, size[0] // 2, size[1] // 2], fill=(250, 250, 250))
    image.save(path)
    return path


@pytest.fixture
def still(tmp_path: Path) -> Path:
    return make_still(tmp_path / "still.png")


def animator(server: FalServer, model: str, key: str | None = None) -> FalAnimator:
    return FalAnimator(
        server.base_url,
        key or server.key,
        model,
        sleep=lambda seconds: None,
        timeout=10.0,
        policy=FAST_POLICY,
    )


def finish(fal_animator: FalAnimator, handle: dict, timeout: float = 10.0) -> AnimationStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = fal_animator.status(handle)
        if status.state not in ("queued", "running"):
            return status
        assert time.monotonic() < deadline, "the request never finished"
        time.sleep(0.05)


def test_a_request_in_fals_line_is_queued_and_then_running(fal: FalServer, still: Path) -> None:
    """IN_QUEUE is the provider's line (its timeout has not begun), IN_PROGRESS is running."""
    fal.task_seconds = 4.0  # IN_QUEUE for its first second
    fal_animator = animator(fal, KLING)
    handle = fal_animator.submit(still, PROMPT, 4.2, (1280, 720))

    queued = fal_animator.status(handle).state
    time.sleep(1.2)
    running = fal_animator.status(handle).state
    fal_animator.cancel(handle)

    assert (queued, running) == ("queued", "running")


def frame(video: Path, at: float, out: Path) -> Image.Image:
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-ss", f"{at}", "-i", str(video), "-frames:v", "1"]
        + [str(out)],
        check=True,
        capture_output=True,
    )
    with Image.open(out) as image:
        return image.convert("RGB")


@pytest.mark.parametrize(
    ("model", "seconds", "expected"),
    [
        (
            KLING,
            4.2,
            {
                "prompt": PROMPT,
                "duration": "5",
                "negative_prompt": "blur, distort, and low quality, text, watermark",
            },
        ),
        (MINIMAX, 4.2, {"prompt": PROMPT, "duration": "6", "prompt_optimizer": True}),
    ],
)
def test_round_trip_gives_a_decodable_clip(
    fal: FalServer, still: Path, tmp_path: Path, model: str, seconds: float, expected: dict
) -> None:
    fal_animator = animator(fal, model)
    handle = fal_animator.submit(still, PROMPT, seconds, (1280, 720))

    assert set(handle) == {"id", "status_url", "response_url", "cancel_url"}
    app = "/".join(model.split("/")[:2])
    base = f"{fal.base_url}/{app}/requests/{handle['id']}"
    assert handle["status_url"] == f"{base}/status"  # not under the submit path
    assert handle["response_url"] == base
    assert fal_animator.status(handle).state in ("queued", "running")
    [(submitted_model, body)] = fal.submissions
    assert submitted_model == model
    assert body == {"image_url": still.stat().st_size, **expected}

    status = finish(fal_animator, handle)
    assert status.state == "succeeded", status.error
    assert status.output_url == f"{fal.base_url}/files/{handle['id']}.mp4"
    clip = tmp_path / "clip.mp4"
    fal_animator.download(status, clip)

    info = probe(clip)
    billed = fal_animator.billed_seconds(seconds)
    assert billed == float(expected["duration"])
    assert info.video_codec == "h264"
    assert (info.width, info.height) == (640, 360)
    assert abs(info.duration - billed) < 0.2
    first, last = frame(clip, 0, tmp_path / "a.png"), frame(clip, billed - 0.5, tmp_path / "b.png")
    assert ImageChops.difference(first, last).getbbox() is not None, "the clip does not move"
    assert fal.status_polls >= 2
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize(
    ("model", "seconds", "size", "expected"),
    [
        (KLING, 14, (1280, 720), {"duration": "10"}),  # capped at the longest
        (MINIMAX, 6, (1280, 720), {"duration": "6"}),
        (VEO3_FAST, 5, (1280, 720), {"duration": "8s", "aspect_ratio": "16:9"}),
        (VEO3_FAST, 5, (1080, 1920), {"duration": "8s", "aspect_ratio": "9:16"}),
        (SEEDANCE, 4.5, (1080, 1920), {"duration": "5", "aspect_ratio": "9:16"}),
        (SEEDANCE, 2.0, (1000, 1000), {"duration": "3", "aspect_ratio": "1:1"}),
        (WAN, 4.0, (1280, 720), {"aspect_ratio": "16:9"}),
    ],
)
def test_each_family_is_accepted_with_its_own_input_names(
    fal: FalServer,
    still: Path,
    model: str,
    seconds: float,
    size: tuple[int, int],
    expected: dict,
) -> None:
    handle = animator(fal, model).submit(still, PROMPT, seconds, size)

    assert handle["id"] in fal.requests
    [(_, body)] = fal.submissions
    assert expected.items() <= body.items()
    assert "duration" in body or model == WAN


def test_billed_seconds_follow_the_duration_asked_for(fal: FalServer) -> None:
    assert animator(fal, KLING).billed_seconds(5.0) == 5.0
    assert animator(fal, KLING).billed_seconds(5.5) == 10.0
    assert animator(fal, VEO3_FAST).billed_seconds(3.0) == 8.0
    assert animator(fal, WAN).billed_seconds(3.0) == pytest.approx(81 / 16)
    assert animator(fal, UNKNOWN).billed_seconds(3.0) == 3.0


def test_unknown_model_uses_the_common_shape(fal: FalServer, still: Path) -> None:
    fal_animator = animator(fal, UNKNOWN)
    handle = fal_animator.submit(still, PROMPT, 4.0, (1280, 720))

    assert family_of(UNKNOWN).prefix == ""
    [(model, body)] = fal.submissions
    assert model == UNKNOWN
    assert body == {"image_url": still.stat().st_size, "prompt": PROMPT}
    assert handle["status_url"].startswith(f"{fal.base_url}/someone/custom-i2v/requests/")
    assert finish(fal_animator, handle).state == "succeeded"


def test_wrong_input_names_are_refused_with_fals_detail(fal: FalServer, still: Path) -> None:
    # A Kling model fed MiniMax's input names: the stand-in refuses them as fal does (422).
    fal_animator = animator(fal, KLING)
    fal_animator.family = family_of(MINIMAX)

    with pytest.raises(PermanentError) as refused:
        fal_animator.submit(still, PROMPT, 4.0, (1280, 720))

    assert not isinstance(refused.value, OwnerActionNeeded)
    assert "HTTP 422" in str(refused.value)
    assert "duration" in str(refused.value) and "prompt_optimizer" in str(refused.value)
    assert fal.submissions == []


def test_stand_in_validates_like_fal(fal: FalServer, still: Path) -> None:
    image, _ = data_uri(still)
    answer = requests.post(
        f"{fal.base_url}/{KLING}",
        json={"prompt": PROMPT, "duration": "6"},
        headers={"Authorization": f"Key {fal.key}"},
        timeout=10,
    )
    assert answer.status_code == 422
    problems = {tuple(item["loc"]): item["type"] for item in answer.json()["detail"]}
    assert problems == {
        ("body", "image_url"): "value_error.missing",
        ("body", "duration"): "type_error.enum",
    }

    answer = requests.post(
        f"{fal.base_url}/{KLING}",
        json={"prompt": PROMPT, "image_url": image},
        headers={"Authorization": "Bearer nope"},
        timeout=10,
    )
    assert answer.status_code == 401
    assert fal.submissions == []


def test_a_429_is_retried_then_succeeds(
    fal: FalServer, still: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fal.rate_limit_next(1)
    caplog.set_level(logging.WARNING)

    handle = animator(fal, KLING).submit(still, PROMPT, 5.0, (1280, 720))

    assert list(fal.requests) == [handle["id"]]
    assert len(fal.submissions) == 1
    assert any("http retry" in record.getMessage() for record in caplog.records)


def test_a_long_429_becomes_a_transient_error_with_retry_after(fal: FalServer, still: Path) -> None:
    fal.rate_limit_next(1, retry_after=120)

    with pytest.raises(TransientError) as limited:
        animator(fal, KLING).submit(still, PROMPT, 5.0, (1280, 720))

    assert limited.value.retry_after == 120
    assert fal.submissions == []


def test_a_failed_request_maps_to_failed_with_fals_message(fal: FalServer, still: Path) -> None:
    message = "The content could not be processed by the model."
    fal.fail_next_tasks(1, message=message, error_type="downstream_service_error")
    fal_animator = animator(fal, KLING)

    handle = fal_animator.submit(still, PROMPT, 5.0, (1280, 720))
    status = finish(fal_animator, handle)

    assert status.state == "failed"
    assert status.output_url is None
    assert message in (status.error or "")
    assert "downstream_service_error" in (status.error or "")
    # The result call tells the same story, as fal stores the failed answer.
    answer = requests.get(
        handle["response_url"], headers={"Authorization": f"Key {fal.key}"}, timeout=10
    )
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["msg"] == message


def test_a_dropped_submission_is_an_unknown_outcome_sent_once(fal: FalServer, still: Path) -> None:
    fal.drop_next_submissions(1)

    with pytest.raises(OutcomeUnknown):
        animator(fal, KLING).submit(still, PROMPT, 5.0, (1280, 720))

    assert len(fal.submissions) == 1
    assert len(fal.requests) == 1  # it was queued all the same


def test_a_bad_key_needs_the_owner_and_is_never_echoed(
    fal: FalServer, still: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "fal-bad-0123456789abcdef"
    caplog.set_level(logging.DEBUG)
    good = animator(fal, KLING)
    handle = good.submit(still, PROMPT, 5.0, (1280, 720))
    bad = animator(fal, KLING, key=secret)

    with pytest.raises(OwnerActionNeeded) as on_submit:
        bad.submit(still, PROMPT, 5.0, (1280, 720))
    with pytest.raises(OwnerActionNeeded) as on_status:
        bad.status(handle)

    for refused in (on_submit.value, on_status.value):
        assert "FAL_KEY" in str(refused)
        assert secret not in str(refused)
    assert len(fal.submissions) == 1
    assert all(secret not in record.getMessage() for record in caplog.records)
    assert all(fal.key not in record.getMessage() for record in caplog.records)


def test_cancel_is_best_effort(fal: FalServer, still: Path) -> None:
    fal.task_seconds = 30
    fal_animator = animator(fal, KLING)
    handle = fal_animator.submit(still, PROMPT, 5.0, (1280, 720))

    fal_animator.cancel(handle)

    assert fal.cancelled == [handle["id"]]
    assert fal_animator.status(handle).state == "failed"
    fal_animator.cancel(handle)  # already over: fal answers 400, nothing raised
    fal.stop()
    fal_animator.cancel(handle)  # nobody answers: logged, nothing raised


def test_a_broken_download_is_retried(
    fal: FalServer, still: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    fal_animator = animator(fal, UNKNOWN)
    status = finish(fal_animator, fal_animator.submit(still, PROMPT, 2.0, (1280, 720)))
    fal.drop_next_downloads(1)
    clip = tmp_path / "clip.mp4"

    fal_animator.download(status, clip)

    assert probe(clip).video_codec == "h264"
    assert any("fal download retry" in record.getMessage() for record in caplog.records)


def test_download_sends_no_key(fal: FalServer, still: Path, tmp_path: Path) -> None:
    fal_animator = animator(fal, UNKNOWN)
    status = finish(fal_animator, fal_animator.submit(still, PROMPT, 2.0, (1280, 720)))
    assert status.output_url is not None

    answer = requests.get(status.output_url, timeout=10)  # the CDN needs no key

    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "video/mp4"
    fal_animator.download(status, tmp_path / "clip.mp4")


def test_a_large_still_goes_as_jpeg(fal: FalServer, tmp_path: Path) -> None:
    noisy = tmp_path / "noisy.png"
    Image.frombytes("RGB", (1280, 720), os.urandom(1280 * 720 * 3)).save(noisy)
    assert noisy.stat().st_size > 1_000_000

    uri, size = data_uri(noisy)
    animator(fal, UNKNOWN).submit(noisy, PROMPT, 3.0, (1280, 720))

    assert uri.startswith("data:image/jpeg;base64,")
    [(_, body)] = fal.submissions
    assert body["image_url"] == size < noisy.stat().st_size
