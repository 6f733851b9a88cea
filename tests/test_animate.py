"""The step `animate` and the videos gate end to end: real worker ticks and processes, the real
database, the local Telegram Bot API and the Runway and fal.ai stand-ins over HTTP, real ffmpeg.
Remote tasks are durable and paid for once (shared/pipeline/animate.py): every test counts the
submissions the stand-in saw."""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from localapi.fal_server import FalServer
from localapi.runway_server import RunwayServer
from shared import queue
from shared.buttons import callback_data
from shared.media import probe
from tests.support import (
    CHAT,
    Worker,
    child_env,
    enqueue,
    job,
    kill_worker_when,
    manage,
    post,
    press,
    scenes_of,
    texts_sent,
    wait_out_lease,
    worker_process,
)

DESCRIPTION = "A lighthouse at dawn. Waves crash on the rocks. A ship comes home safely."


@pytest.fixture
def env(worker_env: dict[str, str]) -> dict[str, str]:
    """The worker's environment with a short film and fast polling; each test picks its
    ANIMATION_PROVIDER."""
    return dict(worker_env, VIDEO_SECONDS="6", ANIMATION_POLL_SECONDS="0.1")


@pytest.fixture
def fal() -> Iterator[FalServer]:
    server = FalServer(task_seconds=0.5)
    server.start()
    yield server
    server.stop()


def runway_env(env: dict[str, str], server: RunwayServer, **extra: str) -> dict[str, str]:
    return dict(
        env,
        ANIMATION_PROVIDER="runway",
        RUNWAY_API_KEY=server.api_key,
        RUNWAY_API_BASE=server.base_url,
        **extra,
    )


def fal_env(env: dict[str, str], server: FalServer, **extra: str) -> dict[str, str]:
    return dict(
        env, ANIMATION_PROVIDER="fal", FAL_KEY=server.key, FAL_QUEUE_BASE=server.base_url, **extra
    )


def tasks(db, job_id: int) -> list[dict[str, Any]]:
    return [
        dict(zip(("scene", "attempt", "state", "videos_variant", "output_url"), row))
        for row in db.execute(
            "SELECT scene, attempt, state, videos_variant, output_url FROM remote_tasks "
            "WHERE job_id = :j ORDER BY videos_variant, scene, attempt",
            j=job_id,
        )
    ]


def to_videos_gate(worker: Worker, db, job_id: int) -> None:
    """Approve the script and the images as an operator's SQL would; run to the videos gate."""
    for gate in ("script", "images"):
        assert worker.tick() == 1
        assert (job(db, job_id)["state"], job(db, job_id)["gate"]) == ("waiting", gate)
        decide_by_sql(db, job_id, gate)
    assert worker.tick() == 1
    assert (job(db, job_id)["state"], job(db, job_id)["gate"]) == ("waiting", "videos")


def decide_by_sql(db, job_id: int, gate: str) -> None:
    """The runbook's emergency INSERT, exactly as an operator types it."""
    db.execute(
        f"INSERT INTO {db.schema}.approval_statuses (job_id, approval_type, status, expires_at) "
        f"VALUES ('{job_id}', '{gate}', 'approved', now()+interval '1 day')"
    )


def preview_of(telegram, job_id: int, nth: int = -1):
    """The videos gate's message: a sendVideo that carries the gate's buttons."""
    previews = [call for call in telegram.calls_to("sendVideo") if "reply_markup" in call.params]
    call = previews[nth]
    buttons = [
        b["callback_data"] for row in call.params["reply_markup"]["inline_keyboard"] for b in row
    ]
    assert buttons == [
        callback_data(job_id, "videos", a) for a in ("approve", "regenerate", "cancel")
    ]
    return call


def delivered(telegram, tmp_path: Path) -> Path:
    final = [call for call in telegram.calls_to("sendVideo") if "reply_markup" not in call.params]
    [upload] = final
    path = tmp_path / "delivered.mp4"
    path.write_bytes(upload.files["video"].content)
    return path


def test_local_clips_pass_the_videos_gate_by_its_buttons_and_regenerate_makes_new_ones(
    db, env, telegram, client, tmp_path
):
    """The local animator, and the videos gate decided by pressing its buttons through the
    webhook: 🔁 animates again (a new variant), ✅ renders the film from the clips."""
    worker = Worker(dict(env, ANIMATION_PROVIDER="local"))
    job_id = enqueue(db, DESCRIPTION)
    to_videos_gate(worker, db, job_id)
    scenes = scenes_of(db, job_id)
    preview = preview_of(telegram, job_id)
    sheet = tmp_path / "preview.mp4"
    sheet.write_bytes(preview.files["video"].content)
    info = probe(sheet)
    assert (info.video_codec, info.audio_codec, info.width) == ("h264", None, 360)
    assert info.duration <= 2.0 * scenes + 0.5
    assert (
        "Clips for" in preview.params["caption"] and "stay stills" not in preview.params["caption"]
    )
    animated = job(db, job_id)["checkpoints"]["animate"]
    assert (animated["clips"], animated["videos_variant"]) == (list(range(scenes)), 0)
    status_texts = [c.params.get("text", "") for c in telegram.calls_to("editMessageText")]
    assert any(
        text.startswith("🎞 Animating scene") for text in [*status_texts, *texts_sent(telegram)]
    )
    first_clips = queue.load_artifacts(db, job_id, "clip/")

    message_id = preview.response["result"]["message_id"]

    def press_gate(update_id: int, action: str) -> None:
        update = press(update_id, callback_data(job_id, "videos", action), message_id, user_id=CHAT)
        message = update["callback_query"]["message"]
        message.pop("text")
        message["caption"] = preview.params["caption"]
        message["video"] = preview.response["result"]["video"]
        assert post(client, update).status_code == 200

    press_gate(70001, "regenerate")
    assert worker.tick() == 1
    assert job(db, job_id)["gate"] == "videos"
    assert job(db, job_id)["checkpoints"]["animate"]["videos_variant"] == 1
    assert queue.load_artifacts(db, job_id, "clip/") != first_clips, "🔁 must make new clips"
    message_id = preview_of(telegram, job_id).response["result"]["message_id"]
    press_gate(70002, "approve")
    assert worker.tick() == 1
    assert job(db, job_id)["state"] == "done"
    video = probe(delivered(telegram, tmp_path))
    assert (video.video_codec, video.audio_codec, video.width) == ("h264", "aac", 720)


@pytest.mark.parametrize("provider", ["runway", "fal"])
def test_remote_clips_come_from_the_provider_once_per_scene_and_sql_decides_the_gate(
    db, env, telegram, runway, fal, tmp_path, provider
):
    server = runway if provider == "runway" else fal
    settings = runway_env(env, runway) if provider == "runway" else fal_env(env, fal)
    worker = Worker(settings)
    job_id = enqueue(db, DESCRIPTION)
    to_videos_gate(worker, db, job_id)
    scenes = scenes_of(db, job_id)
    assert len(server.submissions) == scenes
    rows = tasks(db, job_id)
    assert [row["state"] for row in rows] == ["succeeded"] * scenes
    assert all(row["output_url"].startswith(server.base_url) for row in rows)
    assert job(db, job_id)["checkpoints"]["animate"]["clips"] == list(range(scenes))
    calls = db.execute(
        "SELECT provider, count(*), sum(usd) FROM provider_calls WHERE kind = 'animation' "
        "AND job_id = :j GROUP BY provider",
        j=job_id,
    )
    assert calls[0][0] == provider and calls[0][1] == scenes and calls[0][2] > 0
    preview_of(telegram, job_id)

    decide_by_sql(db, job_id, "videos")
    assert worker.tick() == 1
    assert job(db, job_id)["state"] == "done"
    assert probe(delivered(telegram, tmp_path)).video_codec == "h264"
    assert len(server.submissions) == scenes, "no task is submitted twice"


def test_worker_killed_while_tasks_run_is_resumed_with_every_clip_and_no_second_submission(
    db, env, telegram, runway
):
    runway.task_seconds = 7.0
    settings = runway_env(env, runway, WORKER_LEASE_SECONDS="5")
    worker = Worker(settings)
    job_id = enqueue(db, DESCRIPTION)
    for gate in ("script", "images"):
        assert worker.tick() == 1
        decide_by_sql(db, job_id, gate)
    scenes = scenes_of(db, job_id)
    kill_worker_when(
        child_env(settings),
        lambda: [row["state"] for row in tasks(db, job_id)] == ["running"] * scenes,
        lambda: tasks(db, job_id),
    )
    assert job(db, job_id)["state"] == "running"
    assert len(runway.submissions) == scenes
    wait_out_lease(db, job_id)
    assert worker.tick() == 1
    assert (job(db, job_id)["state"], job(db, job_id)["gate"]) == ("waiting", "videos")
    assert len(runway.submissions) == scenes
    assert [row["state"] for row in tasks(db, job_id)] == ["succeeded"] * scenes
    assert job(db, job_id)["checkpoints"]["animate"]["clips"] == list(range(scenes))


def test_a_submission_whose_worker_died_before_the_answer_is_never_sent_again(
    db, env, telegram, runway
):
    """kill -9 while the first submission waits for its answer: the stand-in takes the task
    after the worker is gone. The next run finds the row still `submitting`, marks it uncertain
    and submits only the other scenes; the scene falls back and the user is told."""
    settings = runway_env(env, runway, WORKER_LEASE_SECONDS="5")
    worker = Worker(settings)
    job_id = enqueue(db, DESCRIPTION)
    for gate in ("script", "images"):
        assert worker.tick() == 1
        decide_by_sql(db, job_id, gate)
    scenes = scenes_of(db, job_id)
    runway.delay_seconds = 2.5
    first = worker_process(child_env(settings))
    try:
        deadline = time.monotonic() + 60
        while [row["state"] for row in tasks(db, job_id)] != ["submitting"]:
            assert time.monotonic() < deadline, tasks(db, job_id)
            assert first.poll() is None
            time.sleep(0.02)
        time.sleep(0.5)  # the request is sent: the stand-in holds it for delay_seconds
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    time.sleep(runway.delay_seconds)
    runway.delay_seconds = 0.0
    assert len(runway.submissions) == 1, "the stand-in took the task the dead worker sent"
    wait_out_lease(db, job_id)
    assert worker.tick() == 1
    assert job(db, job_id)["gate"] == "videos"
    assert len(runway.submissions) == scenes
    states = [row["state"] for row in tasks(db, job_id)]
    assert states == ["uncertain"] + ["succeeded"] * (scenes - 1)
    assert "Scene(s) 1 stay stills" in preview_of(telegram, job_id).params["caption"]


def test_a_dropped_submission_is_never_sent_again_unasked_and_only_regenerate_pays_again(
    db, env, telegram, runway
):
    """The stand-in takes the first task and drops the connection: its outcome is unknown, so
    the scene stays a still, the user is told, and only 🔁 at the videos gate submits it again."""
    settings = runway_env(env, runway)
    worker = Worker(settings)
    job_id = enqueue(db, DESCRIPTION)
    for gate in ("script", "images"):
        assert worker.tick() == 1
        decide_by_sql(db, job_id, gate)
    runway.drop_next_submissions(1)
    assert worker.tick() == 1
    assert job(db, job_id)["gate"] == "videos"
    scenes = scenes_of(db, job_id)
    assert len(runway.submissions) == scenes
    states = [row["state"] for row in tasks(db, job_id)]
    assert states == ["uncertain"] + ["succeeded"] * (scenes - 1)
    animated = job(db, job_id)["checkpoints"]["animate"]
    assert (animated["clips"], animated["fallback"]) == (list(range(1, scenes)), [0])
    assert "Scene(s) 1 stay stills" in preview_of(telegram, job_id).params["caption"]
    calls = db.execute("SELECT count(*) FROM provider_calls WHERE kind = 'animation'")[0][0]
    assert calls == scenes - 1
    shown = manage(settings, "show", str(job_id)).stdout
    assert re.search(r"scene 1 +runway +uncertain +attempt 1 .* id - ", shown), shown
    assert len(re.findall(r"runway +succeeded", shown)) == scenes - 1

    assert queue.add_revision(db, job_id, "videos", "regenerate", None)
    assert worker.tick() == 1
    assert len(runway.submissions) == 2 * scenes
    assert job(db, job_id)["checkpoints"]["animate"]["fallback"] == []
    assert "stay stills" not in preview_of(telegram, job_id).params["caption"]


def test_a_failed_task_falls_back_to_its_still_and_the_film_is_delivered(
    db, env, telegram, fal, tmp_path
):
    """With the videos gate off, the user is told in a message which scene stays a still."""
    worker = Worker(fal_env(env, fal, APPROVAL_GATES=""))
    job_id = enqueue(db, DESCRIPTION)
    fal.fail_next_tasks(1)
    assert worker.tick() == 1
    assert job(db, job_id)["state"] == "done"
    scenes = scenes_of(db, job_id)
    assert len(fal.submissions) == scenes
    states = [row["state"] for row in tasks(db, job_id)]
    assert sorted(states) == ["failed"] + ["succeeded"] * (scenes - 1)
    failed = states.index("failed")
    animated = job(db, job_id)["checkpoints"]["animate"]
    assert animated["fallback"] == [failed]
    assert len(animated["clips"]) == scenes - 1
    assert any(f"scene(s) {failed + 1} stay stills" in text for text in texts_sent(telegram))
    assert probe(delivered(telegram, tmp_path)).video_codec == "h264"


def test_a_job_parked_on_remote_tasks_holds_no_lease_and_another_worker_resumes_it(
    db, env, telegram, runway
):
    runway.task_seconds = 3.0
    settings = runway_env(env, runway, APPROVAL_GATES="videos")
    job_id = enqueue(db, DESCRIPTION)
    assert Worker(dict(settings, WORKER_MAX_SECONDS="1")).tick() == 1
    row = db.execute(
        "SELECT state, step, lease_token, run_at > now(), attempts FROM jobs WHERE id = :j",
        j=job_id,
    )[0]
    assert row[:4] == ["queued", "animate", None, True]
    scenes = scenes_of(db, job_id)
    assert [row["state"] for row in tasks(db, job_id)] == ["running"] * scenes
    parked = db.execute(
        "SELECT outcome FROM step_runs WHERE job_id = :j AND step = 'animate'", j=job_id
    )
    assert parked == [["parked"]]

    time.sleep(0.3)
    assert Worker(settings).tick() == 1
    assert (job(db, job_id)["state"], job(db, job_id)["gate"]) == ("waiting", "videos")
    assert len(runway.submissions) == scenes
    assert job(db, job_id)["attempts"] == 1


def test_concurrency_caps_the_tasks_in_flight_per_provider_across_jobs(db, env, telegram, runway):
    """Two jobs animated by two workers at once, ANIMATION_CONCURRENCY=2: the stand-in never has
    more than 2 tasks running, and did run 2 side by side."""
    runway.task_seconds = 1.0
    settings = runway_env(env, runway, APPROVAL_GATES="videos", ANIMATION_CONCURRENCY="2")
    job_ids = [enqueue(db, DESCRIPTION), enqueue(db, "A cat sleeps. A dog barks. Rain falls.")]
    workers = [Worker(settings), Worker(settings)]
    threads = [threading.Thread(target=worker.tick) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(job(db, job_id)["gate"] == "videos" for job_id in job_ids)
    spans = [(t["created"], t["created"] + runway.task_seconds) for t in runway.tasks.values()]
    assert len(spans) == sum(scenes_of(db, job_id) for job_id in job_ids)
    overlap = max(sum(start <= at < end for start, end in spans) for at, _ in spans)
    assert overlap == 2


def test_tasks_past_the_timeout_are_cancelled_and_their_scenes_stay_stills(
    db, env, telegram, runway, tmp_path
):
    """The timeout counts from when Runway starts running a task (PENDING for its first 2 s
    here), and a task that runs past it is cancelled."""
    runway.task_seconds = 10.0
    settings = runway_env(env, runway, APPROVAL_GATES="", ANIMATION_TIMEOUT_SECONDS="1")
    job_id = enqueue(db, DESCRIPTION)
    assert Worker(settings).tick() == 1
    assert job(db, job_id)["state"] == "done"
    scenes = scenes_of(db, job_id)
    assert sorted(runway.deleted) == sorted(runway.tasks), "each timed-out task is cancelled"
    assert [row["state"] for row in tasks(db, job_id)] == ["failed"] * scenes
    assert job(db, job_id)["checkpoints"]["animate"]["fallback"] == list(range(scenes))
    numbers = ", ".join(str(scene + 1) for scene in range(scenes))
    assert any(f"scene(s) {numbers} stay stills" in text for text in texts_sent(telegram))
    assert probe(delivered(telegram, tmp_path)).video_codec == "h264"


def test_a_submission_refused_with_429_is_sent_again_and_paid_once(db, env, telegram, runway):
    """A 429 means the task was not created: the scene's next attempt is a new row, and the
    stand-in still makes one task per scene."""
    settings = runway_env(env, runway, APPROVAL_GATES="videos")
    job_id = enqueue(db, DESCRIPTION)
    runway.rate_limit_next(12, retry_after=0.01)
    assert Worker(settings).tick() == 1
    assert job(db, job_id)["gate"] == "videos"
    scenes = scenes_of(db, job_id)
    rows = tasks(db, job_id)
    assert {row["state"] for row in rows} == {"unsent", "succeeded"}
    assert [row["scene"] for row in rows if row["state"] == "succeeded"] == list(range(scenes))
    assert len(runway.submissions) == scenes
    calls = db.execute("SELECT count(*) FROM provider_calls WHERE kind = 'animation'")[0][0]
    assert calls == scenes


def test_waiting_in_the_providers_line_never_turns_a_clip_into_a_still(db, env, telegram):
    """A crowd: Runway runs one task at a time and the others wait THROTTLED, each scene longer
    than ANIMATION_TIMEOUT_SECONDS in all, though none runs that long. Every scene gets its
    clip, because the timeout counts from when Runway starts running the task."""
    with RunwayServer(task_seconds=0.8, concurrency=1) as runway:
        settings = runway_env(env, runway, APPROVAL_GATES="videos", ANIMATION_TIMEOUT_SECONDS="1")
        job_id = enqueue(db, DESCRIPTION)
        assert Worker(settings).tick() == 1
        scenes = scenes_of(db, job_id)
        assert scenes * runway.task_seconds > 2, "the last scene waits in line past the timeout"
        assert job(db, job_id)["gate"] == "videos"
        assert [row["state"] for row in tasks(db, job_id)] == ["succeeded"] * scenes
        assert runway.deleted == []
        assert job(db, job_id)["checkpoints"]["animate"]["fallback"] == []
        waited = [task for task in runway.tasks.values() if task["started"] > task["created"]]
        assert len(waited) == scenes - 1
