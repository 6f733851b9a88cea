"""Crowd bench: N people send a description at the same moment; how long until each has a film?

    python -m bench.crowd [--people 20] [--still-seconds 20] [--clip-seconds 60]
                          [--speech-seconds 2] [--slots 1,2,4] [--processes 2]

Gates off, 6-scene descriptions, real worker processes (`python -m functions.worker --loop`)
against PostgreSQL (DATABASE_URL, else the embedded server) and the local stand-ins with the
latencies of the real services: speech from OpenAI's `/audio/speech` (`--speech-seconds`), stills
from `gpt-image-1`, which answers synchronously, or from Runway's `text_to_image` tasks
(`--stills runway`), either taking `--still-seconds`; clips from Runway's `image_to_video` tasks
(`--clip-seconds`). The script is the local one (it costs nothing).

It first times a lone job on one slot, the baseline: its chain of provider waits (the voices in
rounds of VOICE_CONCURRENCY, one still, one clip) and, from its wall time less that chain, its
CPU work (stills fitted, clips fetched, the render, the upload). The provider-bound ideal for N
people is that chain plus N times that CPU work, as if every wait overlapped and the CPU never
idled. Then, for each of `--slots` job slots in one process, and for `--processes` processes of
two slots each, it times the first and the last film of the crowd. The last line printed is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

from localapi.openai_server import OpenAIServer
from localapi.runway_server import RunwayServer
from localapi.telegram_server import TelegramServer
from shared import db as dbmod
from shared import queue
from shared.config import REPO_ROOT, load_settings
from shared.migrate import migrate

DESCRIPTION = (
    "A lighthouse stands on a cliff at dawn. Waves crash on the black rocks below. "
    "A small fishing boat turns toward the harbour. Gulls circle over the tired crew. "
    "The keeper waves from the gallery. The boat ties up as the sun comes out."
)
FIRST_CHAT = 500_000
VOICE_CONCURRENCY = 4


@dataclass(frozen=True)
class Latency:
    still: float
    clip: float
    speech: float

    def chain(self, scenes: int) -> float:
        """The provider waits of one job that cannot overlap: its voices (in rounds of
        VOICE_CONCURRENCY), then one still, then one clip."""
        return math.ceil(scenes / VOICE_CONCURRENCY) * self.speech + self.still + self.clip


@dataclass(frozen=True)
class CrowdRun:
    label: str
    people: int
    first_s: float
    last_s: float
    scenes: int


class Stands:
    """The stand-ins, shared by every run of the bench."""

    def __init__(self, latency: Latency) -> None:
        self.telegram = TelegramServer()
        self.openai = OpenAIServer(image_seconds=latency.still, speech_seconds=latency.speech)
        self.runway = RunwayServer(task_seconds=latency.clip, image_seconds=latency.still)

    def __enter__(self) -> "Stands":
        for server in (self.telegram, self.openai, self.runway):
            server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for server in (self.telegram, self.openai, self.runway):
            server.stop()

    def env(self, database_url: str, schema: str, people: int, args: argparse.Namespace) -> dict:
        in_flight = str(max(8, 6 * people))
        return {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "DATABASE_URL": database_url,
            "DATABASE_SCHEMA": schema,
            "TELEGRAM_BOT_TOKEN": self.telegram.token,
            "TELEGRAM_API_BASE": self.telegram.base_url,
            "APPROVAL_GATES": "",
            "VIDEO_SECONDS": str(args.video_seconds),
            "VIDEO_RESOLUTION": str(args.resolution),
            "SCRIPT_PROVIDER": "local",
            "VOICE_PROVIDER": "openai",
            "VISUALS_PROVIDER": args.stills,
            "OPENAI_API_KEY": self.openai.api_key,
            "OPENAI_BASE_URL": f"{self.openai.base_url}/v1",
            "ANIMATION_PROVIDER": "runway",
            "RUNWAY_API_KEY": self.runway.api_key,
            "RUNWAY_API_BASE": self.runway.base_url,
            "ANIMATION_POLL_SECONDS": "1",
            "ANIMATION_CONCURRENCY": in_flight,
            "IMAGE_CONCURRENCY": in_flight,
            "VOICE_CONCURRENCY": str(VOICE_CONCURRENCY),
            "MAX_CONCURRENT_JOBS": str(max(5, people)),
            "MAX_JOBS_PER_DAY": "1000",
            "WORKER_POLL_SECONDS": "1",
            "LOG_LEVEL": "WARNING",
        }


def run_crowd(
    stands: Stands, args: argparse.Namespace, label: str, people: int, processes: int, slots: int
) -> CrowdRun:
    """A fresh schema, `processes` looping workers of `slots` slots, `people` descriptions
    committed at once; the seconds from that commit to the first and the last film."""
    database_url = dbmod.database_url(load_settings())
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    env = stands.env(database_url, schema, people, args)
    database = dbmod.connect(load_settings(env), "bench")
    migrate(database)
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "functions.worker", "--loop"],
            cwd=REPO_ROOT,
            env=dict(env, WORKER_CONCURRENCY=str(slots)),
            stdout=subprocess.DEVNULL,
        )
        for _ in range(processes)
    ]
    try:
        time.sleep(3.0)  # the workers start and listen before the crowd arrives
        chats = {FIRST_CHAT + person for person in range(people)}
        before = len(stands.telegram.calls_to("sendVideo"))
        sent_at = time.time()
        with database.transaction():
            job_ids = [
                queue.enqueue(
                    database,
                    chat_id=chat,
                    user_id=chat,
                    description=DESCRIPTION,
                    language="en",
                    max_attempts=5,
                )[0]
                for chat in sorted(chats)
            ]
        films = wait_for_films(stands.telegram, database, job_ids, before, args.timeout)
        [[scenes]] = database.execute(
            "SELECT max(jsonb_array_length(checkpoints->'script'->'scenes')) FROM jobs"
        )
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=120)
        database.execute(f"DROP SCHEMA {schema} CASCADE")
        database.close()
    arrivals = sorted(at - sent_at for at in films)
    run = CrowdRun(label, people, round(arrivals[0], 1), round(arrivals[-1], 1), scenes)
    print(
        f"{label:>14}: {people} people, first film {run.first_s:7.1f} s, "
        f"last film {run.last_s:7.1f} s",
        flush=True,
    )
    return run


def wait_for_films(
    telegram: TelegramServer, database: dbmod.Database, job_ids: list[int], before: int, timeout
) -> list[float]:
    """When each job's film arrived; raises when a job failed or the time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        films = telegram.calls_to("sendVideo")[before:]
        if len(films) >= len(job_ids):
            return [call.at for call in films]
        failed = database.execute(
            "SELECT id, last_error FROM jobs WHERE id = ANY(:ids) AND state IN ('failed', "
            "'cancelled')",
            ids=job_ids,
        )
        if failed:
            raise RuntimeError(f"jobs failed: {failed}")
        time.sleep(0.2)
    raise TimeoutError(f"{len(job_ids)} films not all sent within {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=20)
    parser.add_argument("--still-seconds", type=float, default=20.0)
    parser.add_argument("--clip-seconds", type=float, default=60.0)
    parser.add_argument("--speech-seconds", type=float, default=2.0)
    parser.add_argument(
        "--stills",
        choices=("openai", "runway"),
        default="openai",
        help="gpt-image-1 (synchronous: a slot waits) or Runway tasks (the job parks)",
    )
    parser.add_argument(
        "--slots",
        default="1,2,4",
        help="job slots of the one-process runs (0: what the machine's CPUs and memory hold)",
    )
    parser.add_argument("--processes", type=int, default=2, help="processes of 2 slots each")
    parser.add_argument("--resolution", type=int, choices=(720, 1080), default=720)
    parser.add_argument("--video-seconds", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args()
    latency = Latency(args.still_seconds, args.clip_seconds, args.speech_seconds)
    slot_counts = [int(count) for count in args.slots.split(",")]
    print(
        f"crowd bench: {args.people} people, stills {latency.still:g} s, clips "
        f"{latency.clip:g} s, speech {latency.speech:g} s, {args.resolution}p, "
        f"{args.video_seconds} s films, stills from {args.stills}",
        flush=True,
    )
    with Stands(latency) as stands:
        lone = run_crowd(stands, args, "lone job", 1, 1, 1)
        chain = latency.chain(lone.scenes)
        cpu_s = max(0.0, lone.last_s - chain)
        ideal = chain + args.people * cpu_s
        print(f"one job: {lone.last_s} s = waits {chain:g} s + work {cpu_s:.1f} s", flush=True)
        print(f"provider-bound ideal for {args.people}: {ideal:.1f} s", flush=True)
        runs = [
            run_crowd(stands, args, f"1 x {slots or 'derived'} slots", args.people, 1, slots)
            for slots in slot_counts
        ]
        if args.processes > 1:
            label = f"{args.processes} x 2 slots"
            runs.append(run_crowd(stands, args, label, args.people, args.processes, 2))
    result: dict[str, Any] = {
        "bench": "crowd",
        "people": args.people,
        "stills": args.stills,
        "scenes": lone.scenes,
        "latency_s": {"still": latency.still, "clip": latency.clip, "speech": latency.speech},
        "lone_job_s": lone.last_s,
        "job_cpu_s": round(cpu_s, 1),
        "ideal_s": round(ideal, 1),
        "runs": {
            run.label: {
                "first_s": run.first_s,
                "last_s": run.last_s,
                "last_over_ideal": round(run.last_s / ideal, 2),
            }
            for run in runs
        },
    }
    by_slots = {run.label: run.last_s for run in runs}
    one, four = by_slots.get("1 x 1 slots"), by_slots.get("1 x 4 slots")
    if one and four:
        result["speedup_1_to_4_slots"] = round(one / four, 2)
        print(f"1 -> 4 slots: {result['speedup_1_to_4_slots']}x faster", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
