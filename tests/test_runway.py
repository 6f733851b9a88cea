"""The Runway providers against the local Runway stand-in, over real HTTP."""

from __future__ import annotations

import logging
import math
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from localapi.runway_server import RunwayServer
from shared.config import ConfigError
from shared.errors import OutcomeUnknown, OwnerActionNeeded, PermanentError, TransientError
from shared.http import RetryPolicy
from shared.media import probe
from shared.plan import Scene, ScenePlan
from shared.providers.base import AnimationStatus
from shared.providers.runway import (
    IMAGE_RATIOS,
    VIDEO_DURATIONS,
    VIDEO_RATIOS,
    RunwayAnimator,
    RunwayClient,
    RunwayVisuals,
    closest_ratio,
    image_data_uri,
    pick_duration,
    task_status,
    truncate_utf16,
)

API_KEY = "rw-test-secret-0123456789abcdef"
VERSION = "2024-11-06"
ALL_RATIOS = sorted({ratios for ratios in (*VIDEO_RATIOS.values(), *IMAGE_RATIOS.values())})


@pytest.fixture
def server() -> Iterator[RunwayServer]:
    with RunwayServer(API_KEY, task_seconds=0.2) as running:
        yield running


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_client(base_url: str, sleeps: list[float], key: str = API_KEY) -> RunwayClient:
    return RunwayClient(
        base_url,
        key,
        VERSION,
        sleep=sleeps.append,
        connect_timeout=2.0,
        read_timeout=10.0,
        policy=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=5.0),
    )


@pytest.fixture
def client(server: RunwayServer, sleeps: list[float]) -> RunwayClient:
    return make_client(server.base_url, sleeps)


@pytest.fixture
def animator(client: RunwayClient) -> RunwayAnimator:
    return RunwayAnimator(client, "gen4_turbo")


@pytest.fixture
def still(tmp_path: Path) -> Path:
    path = tmp_path / "still.png"
    gradient = Image.linear_gradient("L").resize((540, 960))
    Image.merge("RGB", [gradient, gradient.rotate(90, expand=False), gradient]).save(path)
    return path


def wait(
    provider: RunwayAnimator | RunwayVisuals, handle: dict, timeout: float = 10.0
) -> AnimationStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = provider.status(handle)
        if status.state not in ("queued", "running") or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def test_round_trip_gives_a_clip_of_the_asked_size_and_duration(
    server: RunwayServer, animator: RunwayAnimator, still: Path, tmp_path: Path
) -> None:
    handle = animator.submit(still, "slow push-in, leaves drifting", 1.6, (1080, 1920))

    status = wait(animator, handle)
    clip = tmp_path / "clip.mp4"
    animator.download(status, clip)  # the file host refuses an Authorization header

    assert status.state == "succeeded"
    info = probe(clip)
    assert (info.width, info.height, info.video_codec) == (720, 1280, "h264")
    assert math.isclose(info.duration, 2.0, abs_tol=0.15)
    assert animator.billed_seconds(1.6) == 2.0
    [body] = server.submissions
    assert body["model"] == "gen4_turbo"
    assert (body["ratio"], body["duration"]) == ("720:1280", 2)
    assert body["promptText"] == "slow push-in, leaves drifting"
    assert body["promptImage"] == still.stat().st_size  # sent as it is: a small PNG
    assert server.tasks[handle["id"]]["status"] == "SUCCEEDED"
    assert server.polls >= 2


def test_the_api_refuses_requests_without_a_known_version_header(server: RunwayServer) -> None:
    url = f"{server.base_url}/v1/tasks/00000000-0000-0000-0000-000000000000"
    auth = {"Authorization": f"Bearer {API_KEY}"}

    missing = requests.get(url, headers=auth, timeout=5)
    unknown = requests.get(url, headers={**auth, "X-Runway-Version": "2023-01-01"}, timeout=5)
    known = requests.get(url, headers={**auth, "X-Runway-Version": VERSION}, timeout=5)

    assert missing.status_code == 400 and "X-Runway-Version" in missing.json()["error"]
    assert unknown.status_code == 400 and "X-Runway-Version" in unknown.json()["error"]
    assert known.status_code == 404  # past the version check: the task does not exist


def test_a_429_is_retried_after_the_asked_delay(
    server: RunwayServer, animator: RunwayAnimator, still: Path, sleeps: list[float]
) -> None:
    server.rate_limit_next(1, retry_after=0.25)

    handle = animator.submit(still, "pan left", 5, (1920, 1080))

    assert sleeps == [0.25]
    assert list(server.tasks) == [handle["id"]]
    assert server.submissions[0]["ratio"] == "1280:720"


def test_a_lasting_429_raises_transient_with_retry_after(
    server: RunwayServer, animator: RunwayAnimator, still: Path
) -> None:
    server.rate_limit_next(5, retry_after=60)

    with pytest.raises(TransientError) as raised:
        animator.submit(still, "pan left", 5, (1080, 1920))

    assert raised.value.retry_after == 60
    assert not isinstance(raised.value, OutcomeUnknown)
    assert server.submissions == []


def test_a_failed_task_is_failed_with_its_code(
    server: RunwayServer, animator: RunwayAnimator, still: Path
) -> None:
    server.fail_next_tasks(1, code="SAFETY.INPUT.IMAGE")

    status = wait(animator, animator.submit(still, "", 5, (1080, 1920)))

    assert status.state == "failed"
    assert status.error is not None and "SAFETY.INPUT.IMAGE" in status.error
    assert "promptText" not in server.submissions[0]  # an empty prompt is left out


def test_a_dropped_submission_is_outcome_unknown_and_never_resent(
    server: RunwayServer, animator: RunwayAnimator, still: Path
) -> None:
    server.drop_next_submissions(1)

    with pytest.raises(OutcomeUnknown):
        animator.submit(still, "pan", 5, (1080, 1920))

    assert len(server.submissions) == 1
    assert len(server.tasks) == 1


def test_a_connection_that_never_opened_is_retried(still: Path, sleeps: list[float]) -> None:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    animator = RunwayAnimator(make_client(f"http://127.0.0.1:{port}", sleeps), "gen4_turbo")

    with pytest.raises(TransientError) as raised:
        animator.submit(still, "pan", 5, (1080, 1920))

    assert not isinstance(raised.value, OutcomeUnknown)
    assert len(sleeps) == 2  # three attempts


def test_a_bad_key_needs_the_owner_and_is_never_shown(
    server: RunwayServer, still: Path, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong_key = "rw-wrong-secret-fedcba9876543210"
    animator = RunwayAnimator(make_client(server.base_url, sleeps, wrong_key), "gen4_turbo")

    with pytest.raises(OwnerActionNeeded) as raised:
        animator.submit(still, "pan", 5, (1080, 1920))

    assert "RUNWAY_API_KEY" in str(raised.value)
    assert wrong_key not in str(raised.value)
    assert caplog.records
    assert not [r for r in caplog.records if wrong_key in r.getMessage()]
    assert server.tasks == {}


def test_no_credits_needs_the_owner(
    server: RunwayServer, animator: RunwayAnimator, still: Path
) -> None:
    server.out_of_credits = True

    with pytest.raises(OwnerActionNeeded, match="credits"):
        animator.submit(still, "pan", 5, (1080, 1920))


def test_a_refused_body_is_permanent_with_runways_message(
    server: RunwayServer, client: RunwayClient, still: Path
) -> None:
    payload = {"model": "gen4_turbo", "promptImage": image_data_uri(still), "ratio": "16:9"}

    with pytest.raises(PermanentError) as raised:
        client.create_task("/v1/image_to_video", payload)

    assert not isinstance(raised.value, OwnerActionNeeded)
    assert "ratio" in str(raised.value) and "1280:720" in str(raised.value)


def test_a_broken_download_is_retried(
    server: RunwayServer, animator: RunwayAnimator, still: Path, tmp_path: Path
) -> None:
    status = wait(animator, animator.submit(still, "pan", 2, (1080, 1920)))
    server.drop_next_downloads(1)

    animator.download(status, tmp_path / "clip.mp4")

    assert server.downloads == 2
    assert probe(tmp_path / "clip.mp4").duration > 1.5
    assert not list(tmp_path.glob("*.part"))


def test_downloads_carry_no_authorization_even_from_a_session_default(
    server: RunwayServer, still: Path, tmp_path: Path
) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {API_KEY}"
    client = RunwayClient(server.base_url, API_KEY, VERSION, session=session)
    animator = RunwayAnimator(client, "gen4_turbo")
    status = wait(animator, animator.submit(still, "pan", 2, (1080, 1920)))

    animator.download(status, tmp_path / "clip.mp4")  # the file host answers 400 to one

    assert probe(tmp_path / "clip.mp4").width == 720


def test_cancel_deletes_the_task_and_never_raises(
    server: RunwayServer, animator: RunwayAnimator, still: Path
) -> None:
    server.task_seconds = 30
    handle = animator.submit(still, "pan", 5, (1080, 1920))

    animator.cancel(handle)
    animator.cancel({"id": "00000000-0000-0000-0000-000000000000"})  # unknown: logged only

    assert server.deleted == [handle["id"]]
    status = animator.status(handle)
    assert status.state == "failed" and status.error is not None and "CANCELLED" in status.error


def test_visuals_tasks_give_a_png_of_exactly_the_size(
    server: RunwayServer, client: RunwayClient, tmp_path: Path
) -> None:
    server.throttle = True
    scene = Scene("Narration.", "Text", "a lighthouse at dusk, watercolor", 4.0)
    plan = ScenePlan("Sea", "en", (scene, scene, scene))
    visuals = RunwayVisuals(client, "gen4_image")

    first = visuals.submit(plan, 0, (540, 960))
    second = visuals.submit(plan, 0, (540, 960), variant=1)
    visuals.download(wait(visuals, first), (540, 960), tmp_path / "a.png")
    visuals.download(wait(visuals, second), (540, 960), tmp_path / "b.png")

    with Image.open(tmp_path / "a.png") as image:
        assert (image.format, image.size) == ("PNG", (540, 960))
    body_a, body_b = server.submissions
    assert body_a["ratio"] == "1080:1920"
    assert body_a["promptText"].startswith("a lighthouse at dusk, watercolor")
    assert "no letters" in body_a["promptText"].lower()
    assert body_a["seed"] != body_b["seed"]
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "b.png").read_bytes()
    assert not list(tmp_path.glob("*.download"))


def test_a_failed_still_task_reports_its_code(server: RunwayServer, client: RunwayClient) -> None:
    server.fail_next_tasks(1, code="SAFETY.INPUT.TEXT")
    scene = Scene("Narration.", "Text", "a lighthouse", 4.0)
    visuals = RunwayVisuals(client, "gen4_image")

    status = wait(visuals, visuals.submit(ScenePlan("Sea", "en", (scene,) * 3), 0, (540, 960)))

    assert status.state == "failed"
    assert status.error is not None and "SAFETY.INPUT.TEXT" in status.error


def test_the_stand_ins_line_runs_at_most_its_concurrency_and_times_from_the_start(
    sleeps: list[float],
) -> None:
    """Tasks past `concurrency` wait THROTTLED (the provider's line: 'queued'), in the order
    they came; each runs its full seconds from when it leaves the line."""
    scene = Scene("Narration.", "Text", "a lighthouse", 4.0)
    plan = ScenePlan("Sea", "en", (scene,) * 3)
    with RunwayServer(API_KEY, task_seconds=5.0, image_seconds=0.5, concurrency=1) as server:
        visuals = RunwayVisuals(make_client(server.base_url, sleeps), "gen4_image")
        handles = [visuals.submit(plan, 0, (540, 960), variant=v) for v in range(3)]

        waiting = [visuals.status(handle).state for handle in handles[1:]]
        statuses = [wait(visuals, handle) for handle in handles]

        tasks = [server.tasks[handle["id"]] for handle in handles]
    assert waiting == ["queued", "queued"]
    assert [status.state for status in statuses] == ["succeeded"] * 3
    assert all(task["seconds"] == 0.5 for task in tasks), "an image runs image_seconds"
    for before, after in zip(tasks, tasks[1:]):
        assert after["started"] == before["started"] + before["seconds"]


def test_statuses_map_to_animation_states() -> None:
    assert task_status({"status": "PENDING"}) == AnimationStatus("queued")
    assert task_status({"status": "THROTTLED"}) == AnimationStatus("queued")
    assert task_status({"status": "RUNNING"}).state == "running"
    assert task_status({"status": "RUNNING", "progress": 0.4}).progress == 0.4
    assert task_status({"status": "SUCCEEDED", "output": []}).state == "failed"


def test_a_large_still_is_reencoded_as_jpeg_within_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "noise.png"
    Image.effect_noise((800, 800), 90).convert("RGB").save(path)
    assert path.stat().st_size > 200_000

    uri = image_data_uri(path, limit=200_000)

    assert uri.startswith("data:image/jpeg;base64,") and len(uri) <= 200_000


def test_unknown_models_are_a_configuration_error(client: RunwayClient) -> None:
    with pytest.raises(ConfigError, match="RUNWAY_VIDEO_MODEL"):
        RunwayAnimator(client, "gen2")
    with pytest.raises(ConfigError, match="RUNWAY_IMAGE_MODEL"):
        RunwayVisuals(client, "dall-e-3")


def _distance(size: tuple[int, int], ratio: str) -> float:
    width, height = map(int, ratio.split(":"))
    return abs(math.log(width / height) - math.log(size[0] / size[1]))


@given(
    size=st.tuples(st.integers(1, 8000), st.integers(1, 8000)),
    ratios=st.sampled_from(ALL_RATIOS),
)
def test_the_chosen_ratio_is_accepted_and_closest(
    size: tuple[int, int], ratios: tuple[str, ...]
) -> None:
    chosen = closest_ratio(size, ratios)

    assert chosen in ratios
    assert all(_distance(size, chosen) <= _distance(size, other) for other in ratios)


@given(
    seconds=st.floats(0.1, 30, allow_nan=False),
    model=st.sampled_from(sorted(VIDEO_DURATIONS)),
)
def test_the_chosen_duration_is_the_shortest_that_covers_the_scene(
    seconds: float, model: str
) -> None:
    durations = VIDEO_DURATIONS[model]

    chosen = pick_duration(seconds, durations)

    assert chosen in durations
    if chosen < seconds - 1e-6:
        assert chosen == max(durations)
    assert not [d for d in durations if seconds - 1e-6 <= d < chosen]


@given(st.text(max_size=1200))
def test_prompts_are_cut_to_1000_utf16_units(text: str) -> None:
    cut = truncate_utf16(text)

    assert len(cut.encode("utf-16-le")) // 2 <= 1000
    assert text.startswith(cut)
    assert cut == text or len(text.encode("utf-16-le")) // 2 > 1000
