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
                 AND (a.approval_type = :gate::text OR a.status = 'cancelled')) AS decided,
       EXISTS (SELECT 1 FROM job_revisions r
               WHERE r.job_id = :job_id::bigint AND r.gate = :gate::text
                 AND r.consumed_at IS NULL) AS revision_pending;

-- name: recent_jobs
SELECT id, state, step, gate, description
FROM jobs
WHERE user_id = :user_id::bigint
ORDER BY created_at DESC, id DESC
LIMIT :limit::integer;
