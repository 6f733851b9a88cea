"""The step `media` draws every still at once (shared/pipeline/media.py), end to end: real worker
ticks and processes, the real database, the local Telegram Bot API and the Runway and OpenAI
stand-ins over HTTP. Every still is paid for once: each test counts the requests the stand-in
saw."""

from __future__ import annotations

import time
from typing import Any, Iterator

import pytest

from localapi import Reply
from localapi.openai_server import OpenAIServer
from localapi.runway_server import RunwayServer
from shared import queue
from tests.support import (
    Worker,
    child_env,
    decide,
    enqueue,
    job,
    kill_worker_when,
    scenes_of,
    texts_sent,
    wait_out_lease,
)

DESCRIPTION = "A lighthouse at dawn. Waves crash on the rocks. A ship comes home safely."
IMAGES = "/v1/images/generations"


@pytest.fixture
def openai() -> Iterator[OpenAIServer]:
    with OpenAIServer() as server:
        yield server


def runway_env(env: dict[str, str], server: RunwayServer, **extra: str) -> dict[str, str]:
    return dict(
        env,
        VISUALS_PROVIDER="runway",
        RUNWAY_API_KEY=server.api_key,
        RUNWAY_API_BASE=server.base_url,
        ANIMATION_POLL_SECONDS="0.1",
        **extra,
    )


def openai_env(env: dict[str, str], server: OpenAIServer, **extra: str) -> dict[str, str]:
    return dict(
        env,
        VISUALS_PROVIDER="openai",
        OPENAI_BASE_URL=f"{server.base_url}/v1",
        OPENAI_API_KEY=server.api_key,
        **extra,
    )


def stills(db, job_id: int) -> list[dict[str, Any]]:
    return [
        dict(zip(("scene", "provider", "attempt", "state", "stills_variant", "usd"), row))
        for row in db.execute(
            "SELECT scene, provider, attempt, state, stills_variant, usd FROM remote_tasks "
            "WHERE job_id = :j AND kind = 'still' ORDER BY stills_variant, scene, attempt",
            j=job_id,
        )
    ]


def storyboard_caption(telegram) -> str:
    [photo] = telegram.calls_to("sendPhoto")
    return photo.params["caption"]


def test_runway_stills_are_submitted_at_once_and_the_storyboard_shows_them(
    db, worker_env, telegram, runway
):
    settings = runway_env(worker_env, runway, APPROVAL_GATES="images")
    job_id = enqueue(db, DESCRIPTION)
    assert Worker(settings).tick() == 1
    assert (job(db, job_id)["state"], job(db, job_id)["gate"]) == ("waiting", "images")
    scenes = scenes_of(db, job_id)
    assert len(runway.submissions) == scenes
    assert all(body["model"] == "gen4_image" for body in runway.submissions)
    rows = stills(db, job_id)
    assert [row["state"] for row in rows] == ["succeeded"] * scenes
    assert all(row["provider"] == "runway" and row["usd"] > 0 for row in rows)
    spans = [(task["created"], task["created"] + task["seconds"]) for task in runway.tasks.values()]
    assert max(sum(start <= at < end for start, end in spans) for at, _ in spans) == scenes, (
        "every still was asked for before the first was in"
    )
    assert len(queue.load_artifacts(db, job_id, "image/")) == scenes
    assert len(queue.load_artifacts(db, job_id, "voice/")) == scenes
    assert len(queue.load_artifacts(db, job_id, "board/")) == 1, "drawn once the stills were in"
    assert "plain cards" not in storyboard_caption(telegram)
    calls = db.execute(
        "SELECT count(*) FROM provider_calls WHERE kind = 'visuals' AND job_id = :j", j=job_id
    )[0][0]
    assert calls == scenes


def test_worker_killed_with_stills_in_flight_is_resumed_and_pays_each_still_once(
    db, worker_env, telegram, runway
):
    runway.image_seconds = 7.0
    settings = runway_env(worker_env, runway, APPROVAL_GATES="script,images")
    settings["WORKER_LEASE_SECONDS"] = "5"
    worker = Worker(settings)
    job_id = enqueue(db, DESCRIPTION)
    assert worker.tick() == 1
    decide(db, job_id, "script")
    scenes = scenes_of(db, job_id)
    kill_worker_when(
        child_env(settings),
        lambda: [row["state"] for row in stills(db, job_id)] == ["running"] * scenes,
        lambda: stills(db, job_id),
    )
    assert job(db, job_id)["state"] == "running"
    assert len(runway.submissions) == scenes
    wait_out_lease(db, job_id)

    assert worker.tick() == 1

    assert (job(db, job_id)["state"], job(db, job_id)["gate"]) == ("waiting", "images")
    assert len(runway.submissions) == scenes, "no still is paid for twice"
    assert [row["state"] for row in stills(db, job_id)] == ["succeeded"] * scenes
    made = queue.load_artifacts(db, job_id, "image/")
    assert len(made) == scenes
    assert len(queue.load_artifacts(db, job_id, "voice/")) == scenes
    assert job(db, job_id)["checkpoints"]["media"]["stills_fallback"] == []


def test_a_failed_still_becomes_a_card_and_the_user_is_told(db, worker_env, telegram, runway):
    """With the images gate off, a message names the scene; the film is delivered whole."""
    runway.fail_next_tasks(1, code="SAFETY.INPUT.TEXT")
    job_id = enqueue(db, DESCRIPTION)
    assert Worker(runway_env(worker_env, runway, APPROVAL_GATES="")).tick() == 1
    assert job(db, job_id)["state"] == "done", job(db, job_id)["last_error"]
    scenes = scenes_of(db, job_id)
    assert len(runway.submissions) == scenes
    assert [row["state"] for row in stills(db, job_id)] == ["failed"] + ["succeeded"] * (scenes - 1)
    assert job(db, job_id)["checkpoints"]["media"]["stills_fallback"] == [0]
    assert any("scene(s) 1 are plain cards" in text for text in texts_sent(telegram))
    assert len(telegram.calls_to("sendVideo")) == 1


def test_openai_stills_are_drawn_side_by_side_and_a_lost_answer_is_never_asked_again(
    db, worker_env, telegram, openai
):
    """The first call's answer is lost (the connection closes after the request went out): the
    picture may be paid for, so it is never asked for again unasked; its scene is a card, the
    storyboard says so, and only 🔁 at the images gate pays again."""
    openai.image_seconds = 0.5
    openai.respond_next(IMAGES, Reply.no_answer())
    settings = openai_env(worker_env, openai, APPROVAL_GATES="images", IMAGE_CONCURRENCY="8")
    worker = Worker(settings)
    job_id = enqueue(db, DESCRIPTION)
    assert worker.tick() == 1
    assert job(db, job_id)["gate"] == "images"
    scenes = scenes_of(db, job_id)
    assert len(openai.requests_to(IMAGES)) == scenes
    rows = stills(db, job_id)
    assert sorted(row["state"] for row in rows) == ["succeeded"] * (scenes - 1) + ["uncertain"]
    assert all(row["provider"] == "openai" for row in rows)
    lost = next(row["scene"] for row in rows if row["state"] == "uncertain")
    assert job(db, job_id)["checkpoints"]["media"]["stills_fallback"] == [lost]
    assert f"Scene(s) {lost + 1} are plain cards" in storyboard_caption(telegram)
    assert len(queue.load_artifacts(db, job_id, "image/")) == scenes
    calls = db.execute("SELECT count(*) FROM provider_calls WHERE kind = 'visuals'")[0][0]
    assert calls == scenes - 1
    assert openai.images_peak == scenes - 1, "every picture was drawn side by side"

    assert queue.add_revision(db, job_id, "images", "regenerate", None)
    assert worker.tick() == 1
    assert len(openai.requests_to(IMAGES)) == 2 * scenes
    assert job(db, job_id)["checkpoints"]["media"]["stills_fallback"] == []
    assert [row["state"] for row in stills(db, job_id) if row["stills_variant"] == 1] == [
        "succeeded"
    ] * scenes


def test_a_worker_killed_during_openai_calls_asks_for_no_still_again(
    db, worker_env, telegram, openai
):
    """kill -9 while every call waits for its picture: the next run finds their rows still
    `submitting`, so whether they were paid for is unknown; none is asked for again, every
    scene becomes a card, and the job goes on."""
    openai.image_seconds = 3.0
    settings = openai_env(worker_env, openai, APPROVAL_GATES="script,images")
    settings["WORKER_LEASE_SECONDS"] = "5"
    worker = Worker(settings)
    job_id = enqueue(db, DESCRIPTION)
    assert worker.tick() == 1
    decide(db, job_id, "script")
    scenes = scenes_of(db, job_id)
    kill_worker_when(
        child_env(settings),
        lambda: openai.images_drawing >= scenes,  # every request has reached the stand-in
        lambda: stills(db, job_id),
        pause=0.02,
    )
    assert [row["state"] for row in stills(db, job_id)] == ["submitting"] * scenes
    deadline = time.monotonic() + 60
    while len(openai.requests_to(IMAGES)) < scenes:  # the stand-in answers the dead worker
        assert time.monotonic() < deadline
        time.sleep(0.05)
    wait_out_lease(db, job_id)

    assert worker.tick() == 1

    assert job(db, job_id)["gate"] == "images"
    assert len(openai.requests_to(IMAGES)) == scenes, "no still is asked for again"
    assert [row["state"] for row in stills(db, job_id)] == ["uncertain"] * scenes
    assert job(db, job_id)["checkpoints"]["media"]["stills_fallback"] == list(range(scenes))
    assert len(queue.load_artifacts(db, job_id, "image/")) == scenes
