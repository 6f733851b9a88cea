-- What the conversation (shared/bot/) reads, and its record of updates. Every update is
-- recorded in telegram_updates in the same transaction as its effects, so a redelivered
-- update_id finds its row and changes nothing. What it writes to jobs, decisions, revisions
-- and blocked chats goes through shared/queue.py (sql/queries/queue.sql).
-- Parameters carry explicit casts: statements are prepared without parameter types.

-- name: record_update
-- Record an update; no row back means it was seen before.
INSERT INTO telegram_updates (update_id, kind) VALUES (:update_id::bigint, :kind::text)
ON CONFLICT (update_id) DO NOTHING
RETURNING update_id;

-- name: job_for_gate_message
-- The user's job whose gate buttons sit on message :message_id of the chat, if any.
SELECT id FROM jobs
WHERE user_id = :user_id::bigint AND chat_id = :chat_id::bigint
  AND gate_message_id = :message_id::bigint
ORDER BY id DESC
LIMIT 1;

-- name: lock_job
-- The job a press or a script edit is about, locked so that two decisions take turns (the
-- worker's claim skips it meanwhile).
SELECT id, user_id, chat_id, state, gate, gate_message_id,
       gate_deadline <= now() AS gate_expired
FROM jobs
WHERE id = :job_id::bigint
FOR UPDATE;

-- name: gate_decisions
-- Run after lock_job as its own statement, so it sees a decision committed while we waited.
SELECT EXISTS (SELECT 1 FROM approval_statuses a
               WHERE a.job_id = :job_id::bigint::text
                 AND (a.approval_type = ANY (gate_approval_types(:gate::text))
                      OR a.status = 'cancelled')) AS decided,
       EXISTS (SELECT 1 FROM job_revisions r
               WHERE r.job_id = :job_id::bigint AND r.gate = :gate::text
                 AND r.consumed_at IS NULL) AS revision_pending;

-- name: recent_jobs
SELECT id, state, step, gate, description
FROM jobs
WHERE user_id = :user_id::bigint
ORDER BY created_at DESC, id DESC
LIMIT :limit::integer;

-- ---- time and cost (sql/008_costs.sql) ----------------------------------------------------------

-- name: recent_work_seconds
-- The median working time (its finished step runs, gates excluded) of the last :jobs jobs
-- done with these :providers, among the last 100 finished; NULL when there are none. The
-- acknowledgement gets it from create_job; both are the function in sql/011_create_job.sql.
SELECT recent_work_seconds(:providers::text, :jobs::integer) AS median_seconds;

-- name: recent_job_costs
-- The cost and working time of the jobs recent_jobs lists.
SELECT j.id,
       (SELECT coalesce(sum(p.usd), 0) FROM provider_calls p WHERE p.job_id = j.id)::float8
           AS usd,
       (SELECT coalesce(sum(extract(epoch FROM r.finished_at - r.started_at)), 0)
        FROM step_runs r WHERE r.job_id = j.id AND r.finished_at IS NOT NULL)::float8
           AS work_seconds
FROM jobs j
WHERE j.user_id = :user_id::bigint
ORDER BY j.created_at DESC, j.id DESC
LIMIT :limit::integer;

-- name: owner_stats
-- The owner's /stats: jobs by state, the UTC day's cost, the job waiting longest at a gate,
-- and the database size.
SELECT (SELECT coalesce(jsonb_object_agg(state, jobs), '{}'::jsonb)
        FROM (SELECT state, count(*) AS jobs FROM jobs GROUP BY state) s) AS jobs_by_state,
       (SELECT coalesce(sum(usd), 0) FROM provider_calls
        WHERE at >= date_trunc('day', now(), 'UTC'))::float8 AS usd_today,
       (SELECT count(*) FROM provider_calls
        WHERE at >= date_trunc('day', now(), 'UTC')) AS calls_today,
       w.id AS waiting_id, w.gate AS waiting_gate, w.seconds AS waiting_seconds,
       pg_database_size(current_database()) AS database_bytes
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (
    SELECT id, gate, extract(epoch FROM now() - updated_at)::float8 AS seconds
    FROM jobs WHERE state = 'waiting'
    ORDER BY updated_at, id
    LIMIT 1
) w ON true;
