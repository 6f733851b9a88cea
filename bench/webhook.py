"""Throughput and latency of the webhook as deployed, against the database's own ceiling.

    python -m bench.webhook [--updates 5000] [--concurrency 32] [--workers 2] [--threads 8]

It starts gunicorn (`gunicorn -w 2 --threads 8 'functions.webhook.main:create()'`, the deployed
configuration) on loopback, against DATABASE_URL if set or else the embedded PostgreSQL in
VIDEOBOT_DATA_DIR, in a fresh schema. `--concurrency` senders, each on its own keep-alive connection (asyncio, so
the load generator costs little CPU), POST new-description updates, each from a distinct user so
that each creates a job. Then one pg8000 connection runs the same prepared statement
(`create_job_from_update`) in a loop: the database's ceiling for these writes. The last line of
output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from shared import db as dbmod
from shared import queue
from shared.config import REPO_ROOT, load_settings
from shared.migrate import migrate

SECRET = "bench-secret"
FIRST_USER_ID = 10_000_000


def description_update(number: int) -> bytes:
    """A new description from user FIRST_USER_ID + number, with update_id `number`."""
    user = {
        "id": FIRST_USER_ID + number,
        "is_bot": False,
        "first_name": "Bench",
        "language_code": "en",
    }
    return json.dumps(
        {
            "update_id": number,
            "message": {
                "message_id": 1,
                "date": 1735689600,
                "from": user,
                "chat": {"id": FIRST_USER_ID + number, "type": "private", "first_name": "Bench"},
                "text": f"A paper boat sailing down a rainy street, take {number}",
            },
        }
    ).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(
    env: dict[str, str], port: int, workers: int, threads: int, log_path: Path
) -> subprocess.Popen[bytes]:
    command = [
        str(Path(sys.executable).parent / "gunicorn"),
        "-w",
        str(workers),
        "--threads",
        str(threads),
        "-b",
        f"127.0.0.1:{port}",
        "--keep-alive",
        "30",
        "functions.webhook.main:create()",
    ]
    print("server: gunicorn " + " ".join(command[1:]))
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log_path.open("wb")
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.1)
    process.terminate()
    raise RuntimeError(f"gunicorn did not become healthy; see {log_path}")


async def sender(
    port: int, numbers: list[int], latencies: list[float], statuses: dict[int, int]
) -> None:
    """POST each update on one keep-alive connection, waiting for each response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for number in numbers:
        body = description_update(number)
        request = (
            f"POST /telegram HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"X-Telegram-Bot-Api-Secret-Token: {SECRET}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        started = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - started)
        status = int(head.split(b" ", 2)[1])
        statuses[status] = statuses.get(status, 0) + 1
    writer.close()


async def load(
    port: int, first: int, count: int, concurrency: int
) -> tuple[float, list[float], dict[int, int]]:
    numbers = list(range(first, first + count))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    started = time.perf_counter()
    await asyncio.gather(
        *(sender(port, numbers[i::concurrency], latencies, statuses) for i in range(concurrency))
    )
    return time.perf_counter() - started, latencies, statuses


def ceiling(settings: Any, first: int, count: int) -> float:
    """Updates/s of the same prepared statement in a loop on one connection."""
    database = dbmod.connect(settings, "bench-ceiling")
    started = time.perf_counter()
    for number in range(first, first + count):
        queue.create_job_from_update(
            database,
            update_id=number,
            chat_id=FIRST_USER_ID + number,
            user_id=FIRST_USER_ID + number,
            language="en",
            description=f"ceiling take {number}",
            max_attempts=settings.job_max_attempts,
            max_active=settings.max_active_jobs_per_user,
            max_per_day=settings.max_jobs_per_day,
            per_minute=settings.rate_limit_per_minute,
            per_hour=settings.rate_limit_per_hour,
            max_running=settings.max_concurrent_jobs,
        )
    elapsed = time.perf_counter() - started
    database.close()
    return count / elapsed


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=500)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-webhook-", dir="/tmp"))
    url = dbmod.database_url(load_settings())
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DATABASE_SCHEMA": schema,
        "TELEGRAM_WEBHOOK_SECRET": SECRET,
        "TELEGRAM_BOT_TOKEN": "1:bench",
        "PYTHONPATH": str(REPO_ROOT),
    }
    settings = load_settings(env)
    admin = dbmod.connect(settings, "bench-admin")
    migrate(admin)
    port = free_port()
    process = start_gunicorn(env, port, args.workers, args.threads, workdir / "gunicorn.log")
    try:
        asyncio.run(load(port, 1, args.warmup, args.concurrency))
        elapsed, latencies, statuses = asyncio.run(
            load(port, args.warmup + 1, args.updates, args.concurrency)
        )
    finally:
        process.terminate()
        process.wait(timeout=10)
    jobs = admin.execute("SELECT count(*) FROM jobs")[0][0]
    db_ceiling = ceiling(settings, 10_000_000, args.updates)
    admin.execute(f"DROP SCHEMA {schema} CASCADE")
    admin.close()
    shutil.rmtree(workdir, ignore_errors=True)

    rate = args.updates / elapsed
    result = {
        "bench": "webhook",
        "updates_per_s": round(rate, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "ceiling_per_s": round(db_ceiling, 1),
        "ratio": round(rate / db_ceiling, 3),
    }
    print(
        f"updates={args.updates} concurrency={args.concurrency} statuses={statuses} "
        f"jobs_created={jobs} (warm-up {args.warmup} included)"
    )
    print(f"webhook: {rate:.0f} updates/s, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms")
    print(f"database ceiling (one connection, same prepared statement): {db_ceiling:.0f} updates/s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
