"""Work a job has done is not done or paid for again: a retried media step reuses the stills it
saved, and a step re-run in a new worker process does not re-send the progress text it shows."""

from __future__ import annotations

import requests

from localapi import Reply
from localapi.openai_server import OpenAIServer
from localapi.telegram_server import TelegramServer
from shared.db import Database
from shared.operator import ops
from tests.support import CHAT, Worker, decide, enqueue, job

STILLS = "/v1/images/generations"


def test_a_retried_media_step_reuses_the_stills_it_already_paid_for(
    db: Database, worker_env: dict[str, str], telegram: TelegramServer
) -> None:
    with OpenAIServer() as openai:
        env = dict(
            worker_env,
            APPROVAL_GATES="",
            VISUALS_PROVIDER="openai",
            OPENAI_BASE_URL=f"{openai.base_url}/v1",
            OPENAI_API_KEY=openai.api_key,
        )
        worker = Worker(env)
        job_id = enqueue(db, "A fox wakes up. It runs through the snow. It finds its den.")
        # The stills are asked for at once: two are drawn, the server rejects the key for the
        # third (only the owner can fix that: the job fails), and the others are drawn.
        drawn = requests.post(
            f"{openai.base_url}{STILLS}",
            json={"model": "gpt-image-1", "prompt": "a fox", "size": "1024x1536"},
            headers={"Authorization": f"Bearer {openai.api_key}"},
            timeout=10,
        ).json()
        openai.respond_next(STILLS, Reply.json(200, drawn), times=2)
        openai.fail_next(STILLS, 401)
        paid_before = len(openai.requests_to(STILLS))

        worker.tick()
        assert job(db, job_id)["state"] == "failed"
        scenes = len(job(db, job_id)["checkpoints"]["script"]["scenes"])
        assert len(openai.requests_to(STILLS)) - paid_before == scenes

        ops.retry(db, job_id)
        worker.tick()

    row = job(db, job_id)
    assert row["state"] == "done", row["last_error"]
    assert len(openai.requests_to(STILLS)) - paid_before == scenes + 1, "only the refused one"
    assert len(telegram.calls_to("sendVideo")) == 1


def test_a_step_rerun_by_a_new_worker_does_not_edit_the_progress_to_the_same_text(
    db: Database, worker_env: dict[str, str], telegram: TelegramServer
) -> None:
    job_id = enqueue(db, "A kite over the sea. The wind drops. The kite lands on the sand.")
    Worker(dict(worker_env, APPROVAL_GATES="script")).tick()
    assert job(db, job_id)["gate"] == "script"
    db.run("insert_revision", job_id=job_id, gate="script", kind="regenerate", text=None)

    Worker(
        dict(worker_env, APPROVAL_GATES="script")
    ).tick()  # a new process: 🔁 re-runs the script step
    decide(db, job_id, "script")
    Worker(dict(worker_env, APPROVAL_GATES="script")).tick()

    assert job(db, job_id)["state"] == "done"
    edits = telegram.calls_to("editMessageText")
    assert edits and all(call.status == 200 for call in edits), [c.response for c in edits]
    status = telegram.message(CHAT, job(db, job_id)["status_message_id"])
    assert status["text"] == "✅ Done"
