"""Throughput and latency of the webhook as deployed, against a webhook doing a bare insert
over the same HTTP connections, measured in the same run (issue 17).

    python -m bench.webhook [--updates 6000] [--rounds 4] [--concurrency 32] [--workers 2]
                            [--threads 8]

It starts two gunicorns on loopback with the deployed configuration (`-w 2 --threads 8`, see
render.yaml), against DATABASE_URL if set or else the embedded PostgreSQL in VIDEOBOT_DATA_DIR,
in a fresh schema:
- webhook: `functions.webhook.main:create()`, our webhook;
- bare: `bench.bare_webhook:create()`, a plain WSGI app that checks the secret header, parses
  the update and makes ONE bare INSERT of a row on its thread's own connection, answering 200:
  the cheapest webhook there is, everything but the description path's work equal.
`--concurrency` senders, each on its own keep-alive connection (asyncio, so the load generator
costs little CPU), POST new-description updates, each from a distinct user so that each creates
a job. The updates are sent in `--rounds` rounds, each round one batch to each server, in the
order webhook, bare, then bare, webhook (so a change in the shared machine's load weighs on
both alike). `ratio` = webhook / bare, updates per second (issue 17 asks for >= 0.7); p50 and
p99 of both.

Then, with the servers stopped, two secondary figures that explain where the time goes, from the
same shape of client without HTTP (`--workers` processes of `--threads` threads, each its own
pg8000 connection, as many as a server holds), each thread writing in a loop:
- insert: the bare webhook's INSERT;
- statement: our webhook's description statement (`queue.create_job_from_update`).
statement / insert is what the SQL costs over a bare insert; webhook / statement and
bare / insert what the HTTP layers cost. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Callable

from bench.bare_webhook import CREATE_TABLE, INSERT
from shared import db as dbmod
from shared import queue
from shared.config import REPO_ROOT, Settings, load_settings
from shared.costs import providers_key
from shared.migrate import migrate

SECRET = "bench-secret"
FIRST_USER_ID = 10_000_000
SERVERS = {"webhook": "functions.webhook.main:create()", "bare": "bench.bare_webhook:create()"}
LOOP_FIRST = {"insert": 50_000_000, "statement": 60_000_000}
"""Where the loops' update numbers start, apart from the servers' (and from each other)."""


def description_text(number: int) -> str:
    return f"A paper boat sailing down a rainy street, take {number}"


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
                "text": description_text(number),
            },
        }
    ).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(
    env: dict[str, str], app: str, port: int, workers: int, threads: int, log_path: Path
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
        app,
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
    raise RuntimeError(f"gunicorn {app} did not become healthy; see {log_path}")


@dataclass
class Tally:
    """One server's load: updates sent, seconds spent sending them, latencies, statuses."""

    updates: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.updates / self.seconds

    def p(self, fraction: float) -> float:
        """The latency at `fraction` (0.5: the median), in milliseconds."""
        if fraction == 0.5:
            return statistics.median(self.latencies) * 1000
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


async def sender(port: int, numbers: list[int], tally: Tally) -> None:
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
        tally.latencies.append(time.perf_counter() - started)
        status = int(head.split(b" ", 2)[1])
        tally.statuses[status] = tally.statuses.get(status, 0) + 1
    writer.close()


async def load(port: int, first: int, count: int, concurrency: int, tally: Tally) -> None:
    """Send updates first .. first + count - 1 over `concurrency` connections into `tally`."""
    numbers = list(range(first, first + count))
    started = time.perf_counter()
    await asyncio.gather(
        *(sender(port, numbers[i::concurrency], tally) for i in range(concurrency))
    )
    tally.seconds += time.perf_counter() - started
    tally.updates += count


def writer(database: dbmod.Database, kind: str, settings: Settings) -> Callable[[int], None]:
    """One update's write without HTTP: the bare webhook's INSERT (a prepared statement, as
    there) or our webhook's description statement, its time estimate included."""
    if kind == "insert":
        insert = database.conn.prepare(INSERT)
        return lambda number: insert.run(
            update_id=number, user_id=FIRST_USER_ID + number, text=description_text(number)
        )
    return lambda number: queue.create_job_from_update(
        database,
        update_id=number,
        chat_id=FIRST_USER_ID + number,
        user_id=FIRST_USER_ID + number,
        language="en",
        description=description_text(number),
        max_attempts=settings.job_max_attempts,
        max_active=settings.max_active_jobs_per_user,
        max_per_day=settings.max_jobs_per_day,
        per_minute=settings.rate_limit_per_minute,
        per_hour=settings.rate_limit_per_hour,
        max_running=settings.max_concurrent_jobs,
        providers=providers_key(settings),
    )


def loop_process(
    settings: Settings, kind: str, numbers: list[int], threads: int, start: Barrier
) -> None:
    """One process of the client: `threads` threads, each its own connection, writing its
    share of `numbers` in a loop. The first write of each is made before `start` (untimed)."""
    connections = [dbmod.connect(settings, f"bench-{kind}") for _ in range(threads)]
    shares = [numbers[i::threads] for i in range(threads)]
    writes = [writer(database, kind, settings) for database in connections]
    for write, share in zip(writes, shares):
        write(share[0])

    def run(write: Callable[[int], None], share: list[int]) -> None:
        for number in share:
            write(number)

    workers = [
        threading.Thread(target=run, args=(write, share[1:]))
        for write, share in zip(writes, shares)
    ]
    start.wait()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for database in connections:
        database.close()


def loop_rate(settings: Settings, kind: str, count: int, workers: int, threads: int) -> float:
    """Writes/s of `kind` by `workers` processes of `threads` connections, from their common
    start (every connection open, its first write made) to the last one done."""
    context = multiprocessing.get_context("fork")
    start = context.Barrier(workers + 1)
    numbers = list(range(LOOP_FIRST[kind], LOOP_FIRST[kind] + count))
    processes = [
        context.Process(
            target=loop_process, args=(settings, kind, numbers[i::workers], threads, start)
        )
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    start.wait()
    started = time.perf_counter()
    for process in processes:
        process.join()
    elapsed = time.perf_counter() - started
    failed = [process.exitcode for process in processes if process.exitcode]
    if failed:
        raise RuntimeError(f"a {kind} loop process failed: exit codes {failed}")
    return (count - workers * threads) / elapsed


def serve_and_load(
    env: dict[str, str], workdir: Path, args: argparse.Namespace
) -> dict[str, Tally]:
    """Both servers up, warmed up, then loaded in alternating rounds; their tallies."""
    ports = {name: free_port() for name in SERVERS}
    processes: list[subprocess.Popen[bytes]] = []
    tallies = {name: Tally() for name in SERVERS}
    try:
        for name, app in SERVERS.items():
            log_path = workdir / f"{name}.log"
            processes.append(
                start_gunicorn(env, app, ports[name], args.workers, args.threads, log_path)
            )
        for name in SERVERS:
            asyncio.run(load(ports[name], 1, args.warmup, args.concurrency, Tally()))
        batch = args.updates // args.rounds
        first = args.warmup + 1
        for round_number in range(args.rounds):
            order = list(SERVERS) if round_number % 2 == 0 else list(reversed(SERVERS))
            for name in order:
                asyncio.run(load(ports[name], first, batch, args.concurrency, tallies[name]))
            first += batch
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)
    return tallies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=6000, help="per server, all rounds")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--loop-updates", type=int, default=3000)
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
    admin.execute(CREATE_TABLE)
    try:
        tallies = serve_and_load(env, workdir, args)
        jobs = admin.execute("SELECT count(*) FROM jobs")[0][0]
        bare_rows = admin.execute("SELECT count(*) FROM bench_bare_updates")[0][0]
        loops = dict(count=args.loop_updates, workers=args.workers, threads=args.threads)
        insert = loop_rate(settings, "insert", **loops)
        statement = loop_rate(settings, "statement", **loops)
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()
        shutil.rmtree(workdir, ignore_errors=True)

    ours, bare = tallies["webhook"], tallies["bare"]
    result = {
        "bench": "webhook",
        "updates_per_s": round(ours.rate, 1),
        "p50_ms": round(ours.p(0.5), 2),
        "p99_ms": round(ours.p(0.99), 2),
        "bare_per_s": round(bare.rate, 1),
        "bare_p50_ms": round(bare.p(0.5), 2),
        "bare_p99_ms": round(bare.p(0.99), 2),
        "ratio": round(ours.rate / bare.rate, 3),
        "loop_insert_per_s": round(insert, 1),
        "loop_statement_per_s": round(statement, 1),
        "statement_ratio": round(statement / insert, 3),
    }
    connections = args.workers * args.threads
    print(
        f"updates={args.updates} per server in {args.rounds} rounds, "
        f"concurrency={args.concurrency}, gunicorn -w {args.workers} --threads {args.threads}"
    )
    print(
        f"webhook: statuses={ours.statuses}, jobs_created={jobs} (warm-up {args.warmup} "
        f"included); bare: statuses={bare.statuses}, rows={bare_rows}"
    )
    print(
        f"webhook: {ours.rate:.0f} updates/s, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms"
    )
    print(
        f"bare-insert webhook: {bare.rate:.0f} updates/s, p50 {result['bare_p50_ms']} ms, "
        f"p99 {result['bare_p99_ms']} ms"
    )
    print(f"webhook / bare-insert webhook = {result['ratio']}")
    print(
        f"without HTTP ({connections} connections in a loop): bare INSERT {insert:.0f}/s, "
        f"description statement {statement:.0f}/s; statement/insert = "
        f"{result['statement_ratio']}, webhook/statement = {ours.rate / statement:.3f}, "
        f"bare webhook/insert = {bare.rate / insert:.3f}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
