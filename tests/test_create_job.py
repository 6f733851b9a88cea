"""A description costs the webhook one statement, the SQL function create_job
(sql/011_create_job.sql): no START/COMMIT around it, the acknowledgement's time estimate read in
it, and no NOTIFY sent by it; under it descriptions sent at the same instant by one user still
cannot pass a limit together, nor a redelivered update make a job."""

from __future__ import annotations

import itertools
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import bot, queue
from shared import db as dbmod
from shared.config import Settings
from tests.support import USER_ID, text_message

OPEN = dict(max_attempts=3, max_active=100, max_per_day=100, per_minute=100, per_hour=100)
REFUSAL = {
    "max_active": "too_many_active",
    "max_per_day": "daily_limit",
    "per_hour": "rate_limit_hour",
    "per_minute": "rate_limit_minute",
}
_users = itertools.count(900_000)
_updates = itertools.count(900_000)


class RecordingDatabase(dbmod.Database):
    """A real connection that also lists what it sends: named queries, literal SQL, and the
    START TRANSACTION of `transaction()`."""

    def __init__(self, settings: Settings) -> None:
        params = dbmod.parse_database_url(dbmod.database_url(settings))
        super().__init__(params, settings.database_schema, "tests")
        self.sent: list[str] = []

    def run(self, query_name: str, /, **params: Any) -> list[dict[str, Any]]:
        self.sent.append(query_name)
        return super().run(query_name, **params)

    def execute(self, text: str, **params: Any) -> list[list[Any]]:
        self.sent.append(text)
        return super().execute(text, **params)

    @contextmanager
    def transaction(self, *, dry_run: bool = False) -> Iterator[dbmod.Database]:
        self.sent.append("START TRANSACTION")
        with super().transaction(dry_run=dry_run) as database:
            yield database


def sent_for(database: RecordingDatabase, settings: Settings, update: dict[str, Any]) -> list:
    """What handling `update` as the webhook does sent to the database."""
    database.sent.clear()
    bot.handle_update(database, settings, update)
    return list(database.sent)


def test_a_description_is_one_statement(db: dbmod.Database, settings: Settings) -> None:
    recording = RecordingDatabase(settings)
    try:
        created = sent_for(recording, settings, text_message("A fox in the snow.", 1))
        assert created == ["create_job_from_update"], "the time estimate comes with the job"
        refused = sent_for(recording, settings, text_message("A second fox.", 2))
        assert refused == ["create_job_from_update"], "MAX_ACTIVE_JOBS_PER_USER is 1"
        redelivered = sent_for(recording, settings, text_message("A fox in the snow.", 1))
        assert redelivered == ["create_job_from_update"]
    finally:
        recording.close()
    assert db.execute("SELECT user_id, description, step FROM jobs") == [
        [USER_ID, "A fox in the snow.", "script"]
    ]
    assert db.execute("SELECT update_id, kind FROM telegram_updates ORDER BY 1") == [
        [1, "message"],
        [2, "message"],
    ]


def test_create_job_is_callable_from_psql_with_any_search_path(db: dbmod.Database) -> None:
    """As an operator would call it: schema-qualified, whatever the session's search_path; a
    spoken description starts at `transcribe` and a new message unblocks the chat."""
    db.execute("INSERT INTO blocked_chats (chat_id) VALUES (7)")
    db.execute("SET search_path TO public")
    call = (
        f"SELECT * FROM {db.schema}.create_job(:update_id, 7, 7, 'en', '🎙', 3, 'voice-file-1', "
        "1, 10, 5, 20, 5)"
    )
    assert db.execute(call, update_id=41)[0][0] == "created"
    assert db.execute(call, update_id=42)[0][:3] == ["too_many_active", None, None]
    assert db.execute(call, update_id=41)[0] == ["duplicate", None, None, None, None]
    jobs = db.execute(f"SELECT step, voice_file_id, chat_id FROM {db.schema}.jobs")
    assert jobs == [["transcribe", "voice-file-1", 7]]
    assert db.execute(f"SELECT count(*) FROM {db.schema}.blocked_chats")[0][0] == 0


def at_once(count: int, settings: Settings, work: Callable[[dbmod.Database, int], Any]) -> list:
    """`work(db, i)` in `count` threads, each with its own connection, released together."""
    connections = [dbmod.connect(settings, "tests") for _ in range(count)]
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        results[i] = work(connections[i], i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for connection in connections:
        connection.close()
    return results


def describe(database: dbmod.Database, update_id: int, user_id: int, **limits: Any) -> Any:
    return queue.create_job_from_update(
        database,
        update_id=update_id,
        chat_id=user_id,
        user_id=user_id,
        language="en",
        description=f"a cat, take {update_id}",
        max_running=5,
        **{**OPEN, **limits},
    )


@settings(max_examples=12, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    limit_name=st.sampled_from(sorted(REFUSAL)),
    limit=st.integers(min_value=1, max_value=3),
    senders=st.integers(min_value=2, max_value=6),
)
def test_simultaneous_descriptions_pass_a_limit_exactly_up_to_it(
    db: dbmod.Database, settings: Settings, limit_name: str, limit: int, senders: int
) -> None:
    user = next(_users)
    first = next(_updates) * 10
    results = at_once(
        senders, settings, lambda conn, i: describe(conn, first + i, user, **{limit_name: limit})
    )
    outcomes = sorted(result.outcome for result in results)
    passed = min(senders, limit)
    assert outcomes == sorted(["created"] * passed + [REFUSAL[limit_name]] * (senders - passed))
    assert db.execute("SELECT count(*) FROM jobs WHERE user_id = :u", u=user)[0][0] == passed


def test_an_update_delivered_twice_at_once_makes_one_job(
    db: dbmod.Database, settings: Settings
) -> None:
    user = next(_users)
    results = at_once(6, settings, lambda conn, i: describe(conn, 77, user))
    assert sorted(result.outcome for result in results) == ["created"] + ["duplicate"] * 5
    assert db.execute("SELECT count(*) FROM jobs WHERE user_id = :u", u=user)[0][0] == 1


def test_a_new_job_wakes_no_listener_but_a_cancel_of_it_does(
    db: dbmod.Database, settings: Settings
) -> None:
    """Workers find a new job at their next poll (sql/013_quiet_job_inserts.sql); a decision,
    here an operator's cancel, still wakes them at once."""
    listener = dbmod.connect(settings, "tests-listen")
    listener.listen(dbmod.wake_channel(settings.database_schema))
    try:
        created = describe(db, next(_updates), next(_users))
        assert created.outcome == "created"
        assert listener.wait_for_notify(0.5) == []
        queue.request_cancel(db, created.job_id, "changed my mind")
        assert listener.wait_for_notify(5) == [str(created.job_id)]
    finally:
        listener.close()


def finished_jobs(db: dbmod.Database, count: int, providers: str, work_seconds: int) -> None:
    """`count` jobs done with `providers`, one after another after every job finished so far,
    each `work_seconds` of work."""
    db.execute(
        """
        WITH done AS (
            INSERT INTO jobs (chat_id, user_id, description, state, finished_at)
            SELECT 1, 1, 'done before', 'done', last.at + make_interval(secs => n)
            FROM generate_series(1, :count) AS n,
                 (SELECT coalesce(max(finished_at), now()) AS at FROM jobs) AS last
            RETURNING id, finished_at
        )
        INSERT INTO step_runs (job_id, step, attempt, providers, started_at, finished_at,
                               outcome)
        SELECT id, 'script', 1, :providers, finished_at - make_interval(secs => :work),
               finished_at, 'finished'
        FROM done
        """,
        count=count,
        providers=providers,
        work=work_seconds,
    )


def test_the_estimate_is_the_median_of_recent_jobs_with_the_same_providers(
    db: dbmod.Database,
) -> None:
    """The last 10 done with these providers count; one older than the last 100 finished jobs
    is not looked for (its cost stays bounded after a change of providers)."""
    same = "openai/openai/openai/none"
    assert describe(db, next(_updates), next(_users), providers=same).work_seconds is None
    finished_jobs(db, 1, same, work_seconds=600)
    assert describe(db, next(_updates), next(_users), providers=same).work_seconds == 600
    finished_jobs(db, 100, "local/local/local/none", work_seconds=60)
    assert describe(db, next(_updates), next(_users), providers=same).work_seconds is None
    finished_jobs(db, 6, same, work_seconds=600)
    finished_jobs(db, 5, same, work_seconds=60)
    created = describe(db, next(_updates), next(_users), providers=same)
    assert created.work_seconds == (60 + 600) / 2, "the median of 5 x 60 s and 5 x 600 s"
    assert describe(db, next(_updates), next(_users)).work_seconds is None, "not asked for"
