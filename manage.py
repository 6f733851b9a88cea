"""The operator's command line for ai_video_bot.

    python manage.py jobs --state failed --limit 20
    python manage.py show 42
    python manage.py approve 42            (the gate it waits at)
    python manage.py cancel 42 | retry 42
    python manage.py resend 42              (a video whose delivery is unknown)
    python manage.py stats
    python manage.py prune --older-than 30 --dry-run
    python manage.py migrate
    python manage.py sql "SELECT id, state FROM ai_video_bot.jobs"   (the runbook without psql)
    python manage.py set-webhook [https://bot.example.com/] [--drop-pending]
    python manage.py delete-webhook | webhook-info
    python manage.py demo "A cat on a skateboard" [--interactive] [--seconds 10]
    python manage.py poll [--once]          (live, long polling, no public URL needed)

Exit codes: 0 done, 1 the operator's request cannot be carried out (unknown job, wrong state,
bad argument, Telegram refused), 2 configuration missing or wrong, database or Telegram
unreachable (`shared.errors.exit_code`, shared with the worker and migrate). A sub-command is one
`cmd_*` function plus its entry in `build_parser`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlsplit

import pg8000.native

from shared import db as dbmod
from shared import queue
from shared.config import GATE_ALIASES, GATES, VIDEO_FORMATS, ConfigError, Settings, load_settings
from shared.costs import format_usd
from shared.errors import ConfigurationError, Unavailable, run_main
from shared.logs import setup_logging
from shared.migrate import migrate
from shared.operator import ops
from shared.telegram import TelegramClient
from shared.texts import LANGUAGES

if TYPE_CHECKING:
    from shared.operator.polling import UpdatePoller, WorkerThread

log = logging.getLogger("manage")


@dataclass
class Context:
    """What a command may use; the database connection is opened on first use."""

    settings: Settings
    _database: dbmod.Database | None = field(default=None, init=False)

    def database(self) -> dbmod.Database:
        if self._database is None:
            try:
                self._database = dbmod.connect(self.settings, "ai_video_bot-manage")
            except ConfigurationError:
                raise
            except Exception as exc:
                raise Unavailable(
                    f"cannot connect to the database ({dbmod.describe(self.settings)}): {exc}"
                ) from None
            log.debug("manage connected %s", dbmod.describe(self.settings))
        return self._database

    def telegram(self) -> TelegramClient:
        if not self.settings.telegram_bot_token:
            raise ConfigError("TELEGRAM_BOT_TOKEN is not set")
        return TelegramClient(self.settings.telegram_bot_token, self.settings.telegram_api_base)

    def close(self) -> None:
        if self._database is not None:
            self._database.close()


Command = Callable[[argparse.Namespace, Context], int]


# ---- jobs ---------------------------------------------------------------------------------------


def cmd_jobs(args: argparse.Namespace, ctx: Context) -> int:
    jobs = ops.list_jobs(
        ctx.database(),
        state=args.state,
        chat_id=args.chat,
        older_than_hours=args.older_than_hours,
        newer_than_hours=args.newer_than_hours,
        limit=args.limit,
    )
    print(ops.jobs_table(jobs) if jobs else "no jobs match")
    return 0


def cmd_show(args: argparse.Namespace, ctx: Context) -> int:
    detail = ops.job_detail(ctx.database(), args.job)
    print(_describe_job(detail.job))
    print(
        _section(
            "approvals",
            detail.approvals,
            lambda a: (
                f"{a['approval_type']:<10}  {a['status']:<9}  at {ops.format_time(a['created_at'])}"
                f"  expires {ops.format_time(a['expires_at'])}"
            ),
        )
    )
    print(
        _section(
            "revisions",
            detail.revisions,
            lambda r: (
                f"{r['gate']:<10}  {r['kind']:<10}  at {ops.format_time(r['created_at'])}"
                f"  consumed {ops.format_time(r['consumed_at'])}  {ops.short(r['text'])}"
            ),
        )
    )
    print(
        _section(
            "remote tasks",
            detail.remote_tasks,
            lambda r: (
                f"scene {r['scene'] + 1:<2}  {r['provider']:<6}  {r['state']:<10}  "
                f"attempt {r['attempt']}  variants {r['stills_variant']}/{r['videos_variant']}  "
                f"id {r['remote_id'] or '-'}  {r['seconds_billed'] or 0} s  "
                f"submitted {ops.format_time(r['submitted_at'])}  "
                f"finished {ops.format_time(r['finished_at'])}  {ops.short(r['error'])}"
            ),
        )
    )
    print(f"delivery: {_describe_delivery(detail.delivery)}")
    print(
        _section(
            "events",
            detail.events,
            lambda e: (
                f"{ops.format_time(e['at'])}  {e['event']:<16}  step={e['step'] or '-'}"
                f"  attempt={e['attempt'] if e['attempt'] is not None else '-'}  {ops.short(e['detail'], 100)}"
            ),
        )
    )
    print(_describe_costs(detail))
    return 0


def _describe_costs(detail: ops.JobDetail) -> str:
    """The time and the estimated cost of each step, and the job's totals."""
    times = detail.times
    rows = [
        (
            f"  {s['step']}",
            s["runs"],
            ops.format_age(s["seconds"]),
            s["calls"],
            format_usd(s["usd"]),
            s["models"] or "-",
        )
        for s in detail.steps
    ]
    table = ops.format_table(("  STEP", "RUNS", "TIME", "CALLS", "COST", "MODELS"), rows)
    return "\n".join(
        [
            "steps:" if rows else "steps: -",
            *([table] if rows else []),
            f"time: {ops.format_age(times['total_seconds'])} in all, "
            f"{ops.format_age(times['work_seconds'])} working, "
            f"{ops.format_age(times['deciding_seconds'])} waiting for decisions",
            f"cost: {format_usd(times['usd'])} (estimated)",
        ]
    )


def _describe_job(job: dict[str, Any]) -> str:
    steps_done = ", ".join(job["checkpoints"]) or "-"
    return "\n".join(
        [
            f"job {job['id']}: {job['state']} at step {job['step']}",
            f"  chat {job['chat_id']}  user {job['user_id']}  language {job['language']}",
            f"  description: {ops.short(job['description'], 200)}",
            f"  attempts: {job['attempts']}/{job['max_attempts']}  run at {ops.format_time(job['run_at'])}",
            f"  lease until: {ops.format_time(job['lease_expires_at'])}",
            f"  gate: {job['gate'] or '-'}  deadline {ops.format_time(job['gate_deadline'])}",
            f"  steps done: {steps_done}",
            f"  last error: {job['last_error'] or '-'}",
            f"  cancel reason: {job['cancel_reason'] or '-'}",
            f"  created {ops.format_time(job['created_at'])} ({ops.format_age(job['age_seconds'])} ago)"
            f"  updated {ops.format_time(job['updated_at'])}"
            f"  finished {ops.format_time(job['finished_at'])}",
        ]
    )


def _describe_delivery(delivery: dict[str, Any] | None) -> str:
    if delivery is None:
        return "-"
    return (
        f"{delivery['state']}  message {delivery['telegram_message_id'] or '-'}"
        f"  started {ops.format_time(delivery['started_at'])}"
        f"  sent {ops.format_time(delivery['sent_at'])}"
        f"  uploads {delivery['attempts']}  resends {delivery['resends']}"
        f"  last error {ops.short(delivery['last_error'])}"
    )


def _section(title: str, rows: list[dict[str, Any]], line: Callable[[dict[str, Any]], str]) -> str:
    if not rows:
        return f"{title}: -"
    return "\n".join([f"{title}:"] + [f"  {line(row)}" for row in rows])


# ---- decisions ----------------------------------------------------------------------------------


def cmd_approve(args: argparse.Namespace, ctx: Context) -> int:
    gate = ops.approve(ctx.database(), args.job, args.gate)
    print(f"job {args.job}: {gate} approved; the next worker run resumes it")
    return 0


def cmd_cancel(args: argparse.Namespace, ctx: Context) -> int:
    ops.cancel(ctx.database(), args.job)
    print(f"job {args.job}: cancel requested; the next worker run cancels it and tells the user")
    return 0


def cmd_retry(args: argparse.Namespace, ctx: Context) -> int:
    step = ops.retry(ctx.database(), args.job)
    print(f"job {args.job}: queued again at step {step}")
    return 0


def cmd_resend(args: argparse.Namespace, ctx: Context) -> int:
    ops.resend(ctx.database(), args.job)
    print(f"job {args.job}: the next worker run sends the video again")
    return 0


# ---- health and housekeeping --------------------------------------------------------------------


def cmd_stats(args: argparse.Namespace, ctx: Context) -> int:
    stats = ops.stats(ctx.database())
    states = queue.ACTIVE_STATES + queue.FINAL_STATES
    print("jobs by state:")
    print(
        ops.format_table(
            ("  STATE", "JOBS"), [(f"  {s}", stats.jobs_by_state.get(s, 0)) for s in states]
        )
    )
    print(f"oldest runnable job: {ops.format_age(stats.oldest_runnable_seconds)}")
    print(f"expired leases: {stats.expired_leases}")
    print(
        f"waiting at a gate: {stats.waiting_gates} ({stats.gates_past_deadline} past the deadline)"
    )
    print("workers (the last hour):")
    print(
        ops.format_table(
            ("  HOST", "PID", "SLOTS", "RENDERS", "IN FLIGHT", "HEARTBEAT"),
            [
                (
                    f"  {w['host']}",
                    w["pid"],
                    w["slots"],
                    w["render_slots"],
                    w["in_flight"],
                    "stopped" if w["stopped"] else ops.format_age(w["heartbeat_age_seconds"]),
                )
                for w in stats.workers
            ],
        )
        if stats.workers
        else "  none"
    )
    print("table sizes:")
    print(
        ops.format_table(
            ("  TABLE", "SIZE"),
            [(f"  {name}", ops.format_bytes(size)) for name, size in stats.table_bytes.items()],
        )
    )
    print(f"database size: {ops.format_bytes(stats.database_bytes)}")
    costs = stats.costs
    print(
        f"cost today (UTC): {format_usd(costs['usd_today'])} in {costs['calls_today']} calls;"
        f" in all: {format_usd(costs['usd_total'])} in {costs['calls_total']} calls (estimated)"
    )
    return 0


def cmd_prune(args: argparse.Namespace, ctx: Context) -> int:
    counts = ops.prune(ctx.database(), args.older_than, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    print(
        f"{verb}: {counts.jobs} jobs ({counts.job_events} events), "
        f"{counts.approval_statuses} approval rows, {counts.telegram_updates} telegram updates"
    )
    return 0


def cmd_sql(args: argparse.Namespace, ctx: Context) -> int:
    """Run the runbook's SQL where no psql is installed (a Render Shell): one statement from the
    argument or standard input, committed, its rows printed as a table."""
    statement = args.statement if args.statement is not None else sys.stdin.read()
    if not statement.strip():
        raise ops.OperatorError("give one SQL statement, as an argument or on standard input")
    database = ctx.database()
    try:
        rows = database.execute(statement)
    except pg8000.native.DatabaseError as exc:
        error = exc.args[0] if exc.args else {}
        message = error.get("M", str(error)) if isinstance(error, dict) else str(error)
        raise ops.OperatorError(f"the database refused the statement: {message}") from None
    columns = database.conn.columns
    if columns:
        print(ops.format_table([column["name"] for column in columns], rows))
    count = database.conn.row_count
    if count >= 0:
        print(f"({count} row{'' if count == 1 else 's'})")
    return 0


def cmd_migrate(args: argparse.Namespace, ctx: Context) -> int:
    applied = migrate(ctx.database())
    print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
    return 0


# ---- Telegram webhook ---------------------------------------------------------------------------


def cmd_set_webhook(args: argparse.Namespace, ctx: Context) -> int:
    telegram = ctx.telegram()
    secret = ctx.settings.webhook_secret_token
    if not secret:
        raise ConfigError(
            "TELEGRAM_WEBHOOK_SECRET is not set: the webhook accepts only updates that carry it"
        )
    url = args.url or ops.render_webhook_url(ctx.settings.public_url)
    ops.check_webhook_url(url)
    telegram.set_webhook(
        url, secret, list(ops.WEBHOOK_UPDATES), drop_pending_updates=args.drop_pending
    )
    log.info("webhook set url=%s drop_pending=%s", url, args.drop_pending)
    print(f"webhook set to {url} for {', '.join(ops.WEBHOOK_UPDATES)}")
    return 0


def cmd_delete_webhook(args: argparse.Namespace, ctx: Context) -> int:
    ctx.telegram().delete_webhook()
    log.info("webhook deleted")
    print("webhook deleted")
    return 0


def cmd_webhook_info(args: argparse.Namespace, ctx: Context) -> int:
    info = ctx.telegram().get_webhook_info()
    print(f"url: {info.get('url') or '-'}")
    print(f"pending_update_count: {info.get('pending_update_count', 0)}")
    print(f"last_error_date: {ops.format_time(info.get('last_error_date'))}")
    print(f"last_error_message: {info.get('last_error_message') or '-'}")
    return 0


# ---- local runs ---------------------------------------------------------------------------------
# The worker's pipeline (ffmpeg, Pillow, the providers) is imported only by the commands that run
# it, so the operator commands above start quickly.


def cmd_demo(args: argparse.Namespace, ctx: Context) -> int:
    from functions.worker.main import run_tick, start
    from shared.operator import demo

    options = demo.DemoOptions(
        description=args.description,
        language=args.lang,
        interactive=args.interactive,
        out=args.out,
        video_format=args.video_format,
        video_seconds=args.seconds,
        verbose=args.verbose,
    )
    try:
        return demo.run(options, start, run_tick)
    except demo.DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo interrupted", file=sys.stderr)
        return 1


def cmd_poll(args: argparse.Namespace, ctx: Context) -> int:
    from functions.worker.main import run_tick, start
    from shared.operator.polling import UpdatePoller, WorkerThread

    telegram = ctx.telegram()
    webhook_url = telegram.get_webhook_info().get("url")
    if webhook_url:
        print(
            f"error: a webhook is set (to {urlsplit(webhook_url).hostname}), and Telegram answers "
            "getUpdates with 409 Conflict while it is: run `python manage.py delete-webhook` first",
            file=sys.stderr,
        )
        return 1
    settings = ctx.settings
    worker_database, worker_telegram, providers = start(settings)
    poller = UpdatePoller(settings, telegram)
    try:
        if args.once:
            handled = poller.drain()
            ran = run_tick(settings, worker_database, worker_telegram, providers)
            worker_database.close()
            print(f"handled {handled} updates; the worker ran {ran} jobs")
            return 0
        worker = WorkerThread(settings, worker_database, worker_telegram, providers, run_tick)
        _poll_until_interrupted(poller, worker)
        return 0
    finally:
        poller.close()


def _poll_until_interrupted(poller: "UpdatePoller", worker: "WorkerThread") -> None:
    worker.start()
    print("polling Telegram for updates, worker running; Ctrl-C stops")
    try:
        poller.run_forever()
    except KeyboardInterrupt:
        print(
            "stopping: the worker finishes its current tick (Ctrl-C again quits at once; "
            "an unfinished job resumes on the next run once its lease expires)"
        )
    finally:
        try:
            worker.stop()
        except KeyboardInterrupt:
            print("stopped without waiting for the worker")


# ---- wiring -------------------------------------------------------------------------------------


def _job_id(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"a job id is a number, not {text!r}")
    return int(text)


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="manage.py", description="Operate ai_video_bot.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    jobs = commands.add_parser("jobs", help="list jobs, newest first")
    jobs.add_argument("--state", choices=queue.ACTIVE_STATES + queue.FINAL_STATES)
    jobs.add_argument("--chat", type=int, metavar="ID", help="only this chat's jobs")
    age = jobs.add_mutually_exclusive_group()
    age.add_argument("--older-than-hours", type=_positive(float), metavar="H")
    age.add_argument("--newer-than-hours", type=_positive(float), metavar="H")
    jobs.add_argument("--limit", type=_positive(int), default=50, metavar="N")
    jobs.set_defaults(run=cmd_jobs)

    show = commands.add_parser("show", help="everything about one job")
    show.add_argument("job", type=_job_id)
    show.set_defaults(run=cmd_show)

    approve = commands.add_parser("approve", help="approve a gate (default: where the job waits)")
    approve.add_argument("job", type=_job_id)
    approve.add_argument("gate", nargs="?", choices=[*GATES, *GATE_ALIASES])
    approve.set_defaults(run=cmd_approve)

    cancel = commands.add_parser("cancel", help="cancel an unfinished job")
    cancel.add_argument("job", type=_job_id)
    cancel.set_defaults(run=cmd_cancel)

    retry = commands.add_parser("retry", help="requeue a failed or cancelled job where it stopped")
    retry.add_argument("job", type=_job_id)
    retry.set_defaults(run=cmd_retry)

    resend = commands.add_parser("resend", help="send again a video whose delivery is unknown")
    resend.add_argument("job", type=_job_id)
    resend.set_defaults(run=cmd_resend)

    stats = commands.add_parser("stats", help="queue health and table sizes")
    stats.set_defaults(run=cmd_stats)

    prune = commands.add_parser("prune", help="delete finished jobs and old update records")
    prune.add_argument("--older-than", type=_positive(int), required=True, metavar="DAYS")
    prune.add_argument("--dry-run", action="store_true", help="only count what would go")
    prune.set_defaults(run=cmd_prune)

    sql_cmd = commands.add_parser("sql", help="run one SQL statement (the runbook, without psql)")
    sql_cmd.add_argument("statement", nargs="?", help="the statement (default: standard input)")
    sql_cmd.set_defaults(run=cmd_sql)

    migrate_cmd = commands.add_parser("migrate", help="apply pending migrations")
    migrate_cmd.set_defaults(run=cmd_migrate)

    set_webhook = commands.add_parser("set-webhook", help="point Telegram at the webhook URL")
    set_webhook.add_argument(
        "url",
        nargs="?",
        help="the webhook's public https URL (default: RENDER_EXTERNAL_URL, set by Render)",
    )
    set_webhook.add_argument(
        "--drop-pending", action="store_true", help="discard updates Telegram holds for the bot"
    )
    set_webhook.set_defaults(run=cmd_set_webhook)

    delete_webhook = commands.add_parser("delete-webhook", help="stop webhook delivery")
    delete_webhook.set_defaults(run=cmd_delete_webhook)

    webhook_info = commands.add_parser("webhook-info", help="what Telegram knows of the webhook")
    webhook_info.set_defaults(run=cmd_webhook_info)

    demo = commands.add_parser(
        "demo",
        help="the whole bot on this machine, Telegram played locally: description in, MP4 out",
    )
    demo.add_argument("description", help="what the video should be about")
    demo.add_argument(
        "--lang", choices=LANGUAGES, default="en", help="the user's Telegram language"
    )
    demo.add_argument(
        "--interactive", action="store_true", help="ask at each gate instead of approving"
    )
    demo.add_argument(
        "--out",
        type=Path,
        metavar="PATH",
        help="where to write the MP4 (default out/demo-<job id>.mp4)",
    )
    demo.add_argument(
        "--format",
        choices=tuple(VIDEO_FORMATS),
        dest="video_format",
        help="picture format (default VIDEO_FORMAT)",
    )
    demo.add_argument(
        "--seconds", type=_positive(int), metavar="N", help="video length (default VIDEO_SECONDS)"
    )
    demo.add_argument("-v", "--verbose", action="store_true", help="show INFO logs")
    demo.set_defaults(run=cmd_demo)

    poll = commands.add_parser("poll", help="run the bot live with long polling, worker included")
    poll.add_argument(
        "--once", action="store_true", help="handle the pending updates, run one worker tick, exit"
    )
    poll.set_defaults(run=cmd_poll)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit codes as `shared.errors.exit_code` maps them; a usage mistake is 1."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse said why; a usage mistake is an operator error
        return 0 if exc.code == 0 else 1
    return run_main(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    settings = load_settings()
    setup_logging(settings.log_level)
    ctx = Context(settings)
    run: Command = args.run
    try:
        return run(args, ctx)
    finally:
        ctx.close()


if __name__ == "__main__":
    sys.exit(main())
