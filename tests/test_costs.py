"""Time and cost: what each step took and each provider call cost, where the owner and the user
see it, the acknowledgement's estimate, and the limits that stop a job before it spends more."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask.testing import FlaskClient

from localapi.openai_server import OpenAIServer
from localapi.telegram_server import TelegramServer
from shared import queue
from shared.config import load_settings
from shared.costs import DEFAULT_PRICES, chosen, estimate, load_prices, providers_key
from shared.db import Database
from shared.webhook import create_app, webhook_of
from tests.support import (
    CHAT,
    DatabaseClock,
    Worker,
    decide,
    enqueue,
    job,
    manage,
    post,
    text_message,
    texts_sent,
)

IMAGES = "/v1/images/generations"
DESCRIPTION = "A fox wakes up. It runs through the snow. It finds its den."


@pytest.fixture
def openai() -> Iterator[OpenAIServer]:
    with OpenAIServer() as server:
        yield server


def openai_env(env: dict[str, str], server: OpenAIServer, **extra: str) -> dict[str, str]:
    return dict(
        env,
        SCRIPT_PROVIDER="openai",
        VOICE_PROVIDER="openai",
        VISUALS_PROVIDER="openai",
        OPENAI_BASE_URL=f"{server.base_url}/v1",
        OPENAI_API_KEY=server.api_key,
        **extra,
    )


def reply_text(client: FlaskClient, update: dict[str, Any]) -> str:
    response = post(client, update)
    assert response.status_code == 200
    return response.get_json()["text"]


def test_prices_default_and_file_override(tmp_path: Path) -> None:
    prices = load_prices(None)
    assert estimate(
        "script", "gpt-4o-mini", {"input_tokens": 1e6, "output_tokens": 1e6}, prices
    ) == (pytest.approx(0.75))
    assert estimate("voice", "gpt-4o-mini-tts", {"audio_seconds": 120}, prices) == pytest.approx(
        0.03
    )
    assert estimate("visuals", "local", {"images": 5}, prices) == 0
    # An unknown model is priced as its kind's default; the file can make it free.
    assert estimate("visuals", "flux", {"images": 2}, prices) == pytest.approx(
        2 * DEFAULT_PRICES["gpt-image-1"]["usd_per_image"]
    )
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"flux": {}, "gpt-image-1": {"usd_per_image": 0.5}}))
    overridden = load_prices(path)
    assert estimate("visuals", "flux", {"images": 2}, overridden) == 0
    assert estimate("visuals", "gpt-image-1", {"images": 2}, overridden) == 1.0


@pytest.mark.parametrize(
    ("env", "kind", "expected", "usd"),
    [
        ({"VISUALS_PROVIDER": "runway"}, "visuals", ("runway", "gen4_image"), 0.08),
        ({"VISUALS_PROVIDER": "local"}, "visuals", ("local", "local"), 0.0),
        ({"ANIMATION_PROVIDER": "runway"}, "animation", ("runway", "gen4_turbo"), 0.25),
        ({"ANIMATION_PROVIDER": "local"}, "animation", ("local", "local"), 0.0),
        ({"ANIMATION_PROVIDER": "none"}, "animation", ("local", "local"), 0.0),
    ],
)
def test_each_provider_is_priced_by_its_own_model(
    env: dict[str, str], kind: str, expected: tuple[str, str], usd: float
) -> None:
    """One still, or 5 s of video: Runway's are paid, local ones free."""
    provider, model = chosen(load_settings(env), kind)
    assert (provider, model) == expected
    units = {"images": 1} if kind == "visuals" else {"video_seconds": 5}
    assert estimate(kind, model, units, load_prices(None)) == pytest.approx(usd)


def test_a_jobs_time_and_cost_are_recorded_and_shown(
    db: Database,
    worker_env: dict[str, str],
    webhook_env: dict[str, str],
    telegram: TelegramServer,
    openai: OpenAIServer,
    clock: DatabaseClock,
) -> None:
    worker = Worker(openai_env(worker_env, openai))
    job_id = enqueue(db, DESCRIPTION)
    worker.tick()
    while job(db, job_id)["state"] == "waiting":
        clock.advance(90)  # the user takes a minute and a half at each gate
        decide(db, job_id, job(db, job_id)["gate"])
        worker.tick()
    assert job(db, job_id)["state"] == "done", job(db, job_id)["last_error"]

    times = queue.job_times(db, job_id)
    assert times["deciding_seconds"] >= 180
    assert times["total_seconds"] >= times["deciding_seconds"] + times["work_seconds"]
    images = len(openai.requests_to(IMAGES))
    assert times["usd"] >= images * DEFAULT_PRICES["gpt-image-1"]["usd_per_image"]
    calls = db.execute("SELECT step, kind, model, units FROM provider_calls ORDER BY id")
    assert calls[0][:3] == ["script", "script", "gpt-4o-mini"]
    assert calls[0][3]["input_tokens"] > 0 and calls[0][3]["output_tokens"] > 0
    assert {tuple(call[:2]) for call in calls} == {
        ("script", "script"),
        ("media", "voice"),
        ("media", "visuals"),
    }
    caption = telegram.calls_to("sendVideo")[0].params["caption"]
    assert "of it waiting for your decisions" in caption and "3 min" in caption

    shown = manage(worker_env, "show", str(job_id))
    assert shown.returncode == 0, shown.stderr
    assert "steps:" in shown.stdout and "gpt-image-1" in shown.stdout
    assert "cost: $" in shown.stdout and "waiting for decisions" in shown.stdout
    stats = manage(worker_env, "stats")
    assert "cost today (UTC): $" in stats.stdout and f"in {len(calls)} calls" in stats.stdout

    app = create_app(load_settings({**webhook_env, "OWNER_USER_IDS": str(CHAT)}))
    try:
        client = app.test_client()
        status = reply_text(client, text_message("/status", 7001, user_id=CHAT))
        assert "💵 $" in status and "⏱" in status
        owner = reply_text(client, text_message("/stats", 7002, user_id=CHAT))
        assert "done 1" in owner and "Today (UTC): $" in owner and "MB" in owner
    finally:
        webhook_of(app).close()


def test_the_job_cost_limit_stops_before_the_call_that_would_pass_it(
    db: Database, worker_env: dict[str, str], telegram: TelegramServer, openai: OpenAIServer
) -> None:
    # The script and voices cost a fraction of a cent, each still $0.063: a limit of $0.10
    # leaves room for one still and stops the job before the second is asked for.
    env = openai_env(worker_env, openai, APPROVAL_GATES="", JOB_COST_LIMIT_USD="0.10")
    worker = Worker(env)
    job_id = enqueue(db, DESCRIPTION)
    worker.tick()
    row = job(db, job_id)
    assert row["state"] == "failed" and "cost limit of the job" in row["last_error"]
    assert len(openai.requests_to(IMAGES)) == 1
    assert queue.job_cost(db, job_id) <= 0.10
    assert any("would cost more than the owner allows" in text for text in texts_sent(telegram))


def test_the_daily_limit_stops_every_job_until_the_utc_day_ends(
    db: Database,
    worker_env: dict[str, str],
    telegram: TelegramServer,
    openai: OpenAIServer,
    clock: DatabaseClock,
    tmp_path: Path,
) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"gpt-image-1": {"usd_per_image": 1.0}, "gpt-4o-mini": {}}))
    env = dict(
        worker_env,
        APPROVAL_GATES="",
        VISUALS_PROVIDER="openai",
        OPENAI_BASE_URL=f"{openai.base_url}/v1",
        OPENAI_API_KEY=openai.api_key,
        PRICES_FILE=str(prices),
        DAILY_COST_LIMIT_USD="3.5",  # room for the three stills of one job
    )
    worker = Worker(env)
    first = enqueue(db, DESCRIPTION)
    worker.tick()
    assert job(db, first)["state"] == "done"
    spent = queue.cost_today(db)
    assert spent == len(openai.requests_to(IMAGES)) == 3

    second = enqueue(db, "A lighthouse at dawn. Waves crash on the rocks. A boat comes home.")
    worker.tick()
    row = job(db, second)
    assert row["state"] == "failed" and "cost limit of the day" in row["last_error"]
    assert len(openai.requests_to(IMAGES)) == spent  # nothing more was asked for
    assert any("spent all the owner allows for today" in text for text in texts_sent(telegram))

    clock.advance(86400)  # a new UTC day: the job may spend again
    queue.retry(db, second)
    worker.tick()
    assert job(db, second)["state"] == "done", job(db, second)["last_error"]


def test_the_acknowledgement_estimates_from_recent_jobs(
    client: FlaskClient, db: Database, clock: DatabaseClock, webhook_env: dict[str, str]
) -> None:
    first = reply_text(client, text_message("A fox in the snow.", 7101, user_id=1))
    assert "About 1–2 min of work" in first

    # One job done with these providers, that worked 150 s (and waited an hour at a gate).
    [claimed] = queue.claim(db, 1, lease_seconds=60)
    run = queue.begin_step_run(db, claimed, providers_key(load_settings(webhook_env)))
    clock.advance(150)
    queue.end_step_run(db, run, "gate")
    clock.advance(3600)
    queue.complete(db, claimed)

    second = reply_text(client, text_message("A boat at dawn.", 7102, user_id=2))
    assert "About 3 min of work" in second
    other = db.one("recent_work_seconds", providers="openai/openai/openai", jobs=10)
    assert other["median_seconds"] is None
