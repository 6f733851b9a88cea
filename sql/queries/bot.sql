-- The conversation (shared/bot.py). Every update is recorded in telegram_updates in the same
-- transaction as its effects, so a redelivered update_id finds its row and changes nothing.
-- Parameters carry explicit casts: statements are prepared without parameter types.

-- name: create_job_from_update
-- One statement per new description: record the update (a redelivery stops here), unblock the
-- chat, check the user's limits, insert the job. outcome: created | duplicate |
-- too_many_active | daily_limit. The day is the UTC calendar day.
WITH recorded AS (
    INSERT INTO telegram_updates (update_id, kind) VALUES (:update_id::bigint, 'message')
    ON CONFLICT (update_id) DO NOTHING
    RETURNING update_id
), unblocked AS (
    DELETE FROM blocked_chats
    WHERE chat_id = :chat_id::bigint AND EXISTS (SELECT 1 FROM recorded)
), usage AS (
    SELECT count(*) FILTER (WHERE state IN ('queued', 'running', 'waiting')) AS active,
           count(*) FILTER (WHERE created_at >= date_trunc('day', now(), 'UTC')) AS today
    FROM jobs
    WHERE user_id = :user_id::bigint
), inserted AS (
    INSERT INTO jobs (chat_id, user_id, language, description, max_attempts)
    SELECT :chat_id::bigint, :user_id::bigint, :language::text, :description::text,
           :max_attempts::integer
    FROM recorded, usage
    WHERE usage.active < :max_active::bigint AND usage.today < :max_per_day::bigint
    RETURNING id
)
SELECT CASE
         WHEN NOT EXISTS (SELECT 1 FROM recorded) THEN 'duplicate'
         WHEN EXISTS (SELECT 1 FROM inserted) THEN 'created'
         WHEN usage.active >= :max_active::bigint THEN 'too_many_active'
         ELSE 'daily_limit'
       END AS outcome,
       (SELECT id FROM inserted) AS job_id
FROM usage;

-- name: record_update
-- Record an update; no row back means it was seen before. A message from a blocked chat
-- (:chat_id not NULL) unblocks it: the user is talking to the bot again.
WITH recorded AS (
    INSERT INTO telegram_updates (update_id, kind) VALUES (:update_id::bigint, :kind::text)
    ON CONFLICT (update_id) DO NOTHING
    RETURNING update_id
), unblocked AS (
    DELETE FROM blocked_chats
    WHERE chat_id = :chat_id::bigint AND EXISTS (SELECT 1 FROM recorded)
)
SELECT update_id FROM recorded;

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

-- name: insert_revision
-- Regenerate, or an edited script (:text), at an open gate; one pending revision per gate.
WITH revised AS (
    INSERT INTO job_revisions (job_id, gate, kind, text)
    VALUES (:job_id::bigint, :gate::text, :kind::text, :text::text)
    ON CONFLICT (job_id, gate) WHERE consumed_at IS NULL DO NOTHING
    RETURNING id
), event AS (
    INSERT INTO job_events (job_id, event, step, detail)
    SELECT j.id, 'gate_' || :kind::text, j.step, :gate::text
    FROM jobs j WHERE j.id = :job_id::bigint AND EXISTS (SELECT 1 FROM revised)
)
SELECT id FROM revised;

-- name: recent_jobs
SELECT id, state, step, gate, description
FROM jobs
WHERE user_id = :user_id::bigint
ORDER BY created_at DESC, id DESC
LIMIT :limit::integer;
