-- What the operator's CLI (manage.py, shared/operator/ops.py) reads, and prune. Its
-- transitions (approve, cancel, retry, resend) go through shared/queue.py and the SQL functions
-- of sql/005_state_functions.sql. Parameters carry explicit casts: statements are prepared
-- without parameter types, and a NULL filter must still have one.

-- name: ops_list_jobs
-- Newest first; every filter is optional (NULL = no filter). Ages are in seconds.
SELECT id, state, step, gate, attempts, max_attempts, chat_id, last_error,
       extract(epoch FROM now() - created_at)::float8 AS age_seconds
FROM jobs
WHERE (:state::text IS NULL OR state = :state::text)
  AND (:chat_id::bigint IS NULL OR chat_id = :chat_id::bigint)
  AND (:older_than_hours::float8 IS NULL
       OR created_at < now() - make_interval(secs => :older_than_hours::float8 * 3600))
  AND (:newer_than_hours::float8 IS NULL
       OR created_at >= now() - make_interval(secs => :newer_than_hours::float8 * 3600))
ORDER BY id DESC
LIMIT :limit::integer;

-- name: ops_get_job
SELECT *, extract(epoch FROM now() - created_at)::float8 AS age_seconds
FROM jobs WHERE id = :id::bigint;

-- name: ops_job_approvals
SELECT approval_type, status, created_at, expires_at
FROM approval_statuses WHERE job_id = :id::bigint::text ORDER BY id;

-- name: ops_job_revisions
SELECT gate, kind, text, created_at, consumed_at
FROM job_revisions WHERE job_id = :id::bigint ORDER BY id;

-- name: ops_job_remote_tasks
-- Each submission of a scene's animation, in order, with the provider's id for its support.
SELECT scene, stills_variant, videos_variant, attempt, provider, state, handle ->> 'id' AS remote_id,
       seconds_billed, usd, error, created_at, submitted_at, finished_at
FROM remote_tasks WHERE job_id = :id::bigint ORDER BY id;

-- name: ops_job_delivery
SELECT state, telegram_message_id, started_at, sent_at, attempts, resends, last_error
FROM deliveries WHERE job_id = :id::bigint;

-- name: ops_job_events
SELECT at, event, step, attempt, detail
FROM job_events WHERE job_id = :id::bigint ORDER BY id;

-- name: ops_jobs_by_state
SELECT state, count(*) AS jobs FROM jobs GROUP BY state ORDER BY state;

-- name: ops_queue_health
-- The numbers an operator watches: how late the queue is, dead workers, stuck gates.
SELECT
    (SELECT extract(epoch FROM now() - min(run_at))::float8 FROM jobs
     WHERE state = 'queued' AND run_at <= now()) AS oldest_runnable_seconds,
    (SELECT count(*) FROM jobs
     WHERE state = 'running' AND lease_expires_at < now()) AS expired_leases,
    (SELECT count(*) FROM jobs WHERE state = 'waiting') AS waiting_gates,
    (SELECT count(*) FROM jobs
     WHERE state = 'waiting' AND gate_deadline < now()) AS gates_past_deadline;

-- name: ops_workers
-- Worker processes seen in the last hour, with the jobs each runs now (in flight: running, its
-- lease held) and how long ago it last renewed its heartbeat.
SELECT w.host, w.pid, w.slots, w.render_slots,
       (SELECT count(*) FROM jobs j WHERE j.worker_id = w.id AND j.state = 'running') AS in_flight,
       extract(epoch FROM now() - w.heartbeat_at)::float8 AS heartbeat_age_seconds,
       w.stopped_at IS NOT NULL AS stopped
FROM workers w
WHERE w.stopped_at IS NULL OR w.stopped_at > now() - interval '1 hour'
ORDER BY w.stopped_at IS NOT NULL, w.started_at;

-- name: ops_table_sizes
-- Sizes in bytes, indexes and TOAST included, of this schema's tables.
SELECT c.relname AS table_name, pg_total_relation_size(c.oid) AS bytes
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind = 'r'
ORDER BY bytes DESC, table_name;

-- name: database_size
-- The operator's stats and the worker's size warning.
SELECT pg_database_size(current_database()) AS bytes;

-- ---- time and cost (sql/008_costs.sql) ----------------------------------------------------------

-- name: ops_job_steps
-- Per step of a job, in the order they first ran: its runs, their working seconds, its
-- provider calls and their estimated cost.
WITH runs AS (
    SELECT step, min(id) AS first_run, count(*) AS runs,
           sum(extract(epoch FROM finished_at - started_at))::float8 AS seconds
    FROM step_runs WHERE job_id = :id::bigint GROUP BY step
), calls AS (
    SELECT step, count(*) AS calls, sum(usd)::float8 AS usd,
           string_agg(DISTINCT model, ',') AS models
    FROM provider_calls WHERE job_id = :id::bigint GROUP BY step
)
SELECT coalesce(r.step, c.step) AS step, coalesce(r.runs, 0) AS runs, r.seconds,
       coalesce(c.calls, 0) AS calls, coalesce(c.usd, 0)::float8 AS usd, c.models
FROM runs r FULL JOIN calls c ON c.step = r.step
ORDER BY r.first_run NULLS LAST, 1;

-- name: ops_costs
-- The bot's estimated spending: the current UTC day and all that is recorded.
SELECT coalesce(sum(usd) FILTER (WHERE at >= date_trunc('day', now(), 'UTC')), 0)::float8
           AS usd_today,
       count(*) FILTER (WHERE at >= date_trunc('day', now(), 'UTC')) AS calls_today,
       coalesce(sum(usd), 0)::float8 AS usd_total,
       count(*) AS calls_total
FROM provider_calls;
