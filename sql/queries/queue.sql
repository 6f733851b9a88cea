-- The job state machine. Every transition is one statement; every write after a claim is
-- fenced by (id, lease_token, state = 'running'), so a worker that lost its lease changes nothing.

-- name: enqueue_job
-- Idempotent by key: a second call with the same key returns the first job (created = false).
WITH inserted AS (
    INSERT INTO jobs (idempotency_key, chat_id, user_id, language, description, max_attempts)
    VALUES (:idempotency_key, :chat_id, :user_id, :language, :description, :max_attempts)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id
)
SELECT id, true AS created FROM inserted
UNION ALL
SELECT id, false AS created FROM jobs
WHERE idempotency_key = :idempotency_key AND NOT EXISTS (SELECT 1 FROM inserted);

-- name: claim_jobs
-- Take up to :n runnable jobs: queued and due (or asked to cancel), running with an expired
-- lease (the worker died), or waiting at a gate that has a decision, a pending revision, or a
-- passed deadline.
-- A gate wake-up starts the next step afresh (attempts = 1); any other claim counts an attempt.
WITH candidates AS (
    SELECT j.id, j.state AS prev_state, j.gate AS prev_gate,
           j.gate_deadline <= now() AS gate_expired
    FROM jobs j
    WHERE j.state IN ('queued', 'running', 'waiting')
      AND CASE j.state
            WHEN 'queued' THEN j.run_at <= now()
                 OR EXISTS (SELECT 1 FROM approval_statuses a
                            WHERE a.job_id = j.id::text AND a.status = 'cancelled')
            WHEN 'running' THEN j.lease_expires_at <= now()
            ELSE j.gate_deadline <= now()
                 OR EXISTS (SELECT 1 FROM approval_statuses a
                            WHERE a.job_id = j.id::text
                              AND (a.approval_type = j.gate OR a.status = 'cancelled'))
                 OR EXISTS (SELECT 1 FROM job_revisions r
                            WHERE r.job_id = j.id AND r.gate = j.gate AND r.consumed_at IS NULL)
          END
    ORDER BY j.run_at, j.id
    LIMIT :n
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs j
SET state = 'running',
    attempts = CASE WHEN c.prev_state = 'waiting' THEN 1 ELSE j.attempts + 1 END,
    lease_token = gen_random_uuid(),
    lease_expires_at = now() + make_interval(secs => :lease_seconds::float8),
    gate = NULL,
    gate_deadline = NULL,
    updated_at = now()
FROM candidates c
WHERE j.id = c.id
RETURNING j.id, j.chat_id, j.user_id, j.language, j.description, j.step, j.attempts,
          j.max_attempts, j.lease_token, j.checkpoints, j.gate_message_id, j.status_message_id,
          j.status_text, j.created_at, c.prev_state, c.prev_gate, c.gate_expired,
          (SELECT a.status FROM approval_statuses a
           WHERE a.job_id = j.id::text AND a.approval_type = c.prev_gate) AS gate_decision,
          EXISTS (SELECT 1 FROM approval_statuses a
                  WHERE a.job_id = j.id::text AND a.status = 'cancelled') AS cancel_requested;

-- name: extend_lease
-- Heartbeat. No row back means the lease is lost; cancel_requested means an operator or the
-- user asked to cancel through approval_statuses.
UPDATE jobs
SET lease_expires_at = now() + make_interval(secs => :lease_seconds::float8), updated_at = now()
WHERE id = :id AND lease_token = :token AND state = 'running'
RETURNING EXISTS (SELECT 1 FROM approval_statuses a
                  WHERE a.job_id = jobs.id::text AND a.status = 'cancelled') AS cancel_requested;

-- name: checkpoint_step
-- Store a finished step's result under its name and move to :next_step. Progress resets the
-- attempt count: this run is attempt 1 of the next step.
UPDATE jobs
SET checkpoints = checkpoints || jsonb_build_object(:step::text, :result::jsonb),
    step = :next_step,
    attempts = 1,
    lease_expires_at = now() + make_interval(secs => :lease_seconds::float8),
    updated_at = now()
WHERE id = :id AND lease_token = :token AND state = 'running'
RETURNING checkpoints;

-- name: set_status_message
-- The progress message (:message_id) and the text it shows now.
UPDATE jobs SET status_message_id = :message_id, status_text = :text, updated_at = now()
WHERE id = :id AND lease_token = :token AND state = 'running'
RETURNING id;

-- name: open_gate
-- Park the job at a gate: no lease, a deadline, the message that carries the buttons.
WITH parked AS (
    UPDATE jobs
    SET state = 'waiting', gate = :gate,
        gate_deadline = now() + make_interval(secs => :ttl_seconds::float8),
        gate_message_id = :message_id, lease_token = NULL, lease_expires_at = NULL,
        updated_at = now()
    WHERE id = :id AND lease_token = :token AND state = 'running'
    RETURNING id, step, attempts, gate
), event AS (
    INSERT INTO job_events (job_id, event, step, attempt, detail)
    SELECT id, 'gate_opened', step, attempts, gate FROM parked
)
SELECT id FROM parked;

-- name: complete_job
WITH finished AS (
    UPDATE jobs
    SET state = 'done', lease_token = NULL, lease_expires_at = NULL, last_error = NULL,
        finished_at = now(), updated_at = now()
    WHERE id = :id AND lease_token = :token AND state = 'running'
    RETURNING id, step, attempts
), event AS (
    INSERT INTO job_events (job_id, event, step, attempt)
    SELECT id, 'done', step, attempts FROM finished
), artifacts AS (
    -- A video whose delivery is unknown stays until the user asks for it again or prune.
    DELETE FROM job_artifacts
    WHERE job_id IN (SELECT id FROM finished)
      AND NOT EXISTS (SELECT 1 FROM deliveries d
                      WHERE d.job_id = job_artifacts.job_id AND d.state = 'unknown')
)
SELECT id FROM finished;

-- name: defer_job
-- Run the job again in :delay seconds without counting this attempt (the claim counted one):
-- Telegram asked the bot to wait (a 429's retry_after), which says nothing about the job, so
-- a rate limit can never use up max_attempts and lose a finished video.
WITH deferred AS (
    UPDATE jobs
    SET state = 'queued', run_at = now() + make_interval(secs => :delay::float8),
        attempts = GREATEST(attempts - 1, 0), lease_token = NULL, lease_expires_at = NULL,
        last_error = :reason, updated_at = now()
    WHERE id = :id AND lease_token = :token AND state = 'running'
    RETURNING id, step, attempts
), event AS (
    INSERT INTO job_events (job_id, event, step, attempt, detail)
    SELECT id, 'deferred', step, attempts, :reason FROM deferred
)
SELECT id FROM deferred;

-- name: fail_job
-- Retry later with capped exponential backoff and equal jitter, at least :retry_after seconds;
-- after max_attempts, or when :permanent, the job is failed. A failed job keeps its artifacts so
-- that an operator's retry resumes where it stopped; prune removes them.
WITH failed AS (
    UPDATE jobs
    SET state = CASE WHEN :permanent OR attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
        run_at = now() + make_interval(secs => GREATEST(
            :retry_after::float8,
            LEAST(:max_delay::float8, :base_delay::float8 * 2 ^ GREATEST(attempts - 1, 0))
                * (0.5 + random() / 2))),
        finished_at = CASE WHEN :permanent OR attempts >= max_attempts THEN now() END,
        lease_token = NULL, lease_expires_at = NULL, last_error = :error, updated_at = now()
    WHERE id = :id AND lease_token = :token AND state = 'running'
    RETURNING id, state, step, attempts, run_at
), event AS (
    INSERT INTO job_events (job_id, event, step, attempt, detail)
    SELECT id, CASE WHEN state = 'failed' THEN 'failed' ELSE 'retry_scheduled' END,
           step, attempts, :error
    FROM failed
)
SELECT id, state, run_at FROM failed;

-- name: cancel_jobs
-- Cancel unfinished jobs: job :id, or all of user :user_id's (they blocked the bot, or sent
-- /cancel). With :token, only while this worker holds the lease; without one (the user, an
-- operator), whatever state the job is in: a worker running it loses its lease and stops.
WITH cancelled AS (
    UPDATE jobs
    SET state = 'cancelled', cancel_reason = :reason, lease_token = NULL,
        lease_expires_at = NULL, gate = NULL, gate_deadline = NULL,
        finished_at = now(), updated_at = now()
    WHERE (id = :id::bigint OR user_id = :user_id::bigint)
      AND state IN ('queued', 'running', 'waiting')
      AND (:token::uuid IS NULL OR (lease_token = :token::uuid AND state = 'running'))
    RETURNING id, step, attempts
), event AS (
    INSERT INTO job_events (job_id, event, step, attempt, detail)
    SELECT id, 'cancelled', step, attempts, :reason FROM cancelled
), artifacts AS (
    DELETE FROM job_artifacts WHERE job_id IN (SELECT id FROM cancelled)
)
SELECT id FROM cancelled;

-- name: insert_decision
-- A decision row exactly as an operator's emergency INSERT writes it, by the user's button or
-- the operator's CLI (:decided_by). It expires with the gate's deadline when the job waits at
-- this gate, else in a day. No row back: that (job, approval_type) is decided already.
WITH decided AS (
    INSERT INTO approval_statuses (job_id, approval_type, status, expires_at)
    SELECT id::text, :approval_type::text, :status::text,
           CASE WHEN gate = :approval_type::text THEN gate_deadline ELSE now() + interval '1 day' END
    FROM jobs WHERE id = :job_id::bigint
    ON CONFLICT (job_id, approval_type) DO NOTHING
    RETURNING id
), event AS (
    INSERT INTO job_events (job_id, event, step, detail)
    SELECT j.id, :decided_by::text || '_' || :status::text, j.step, :approval_type::text
    FROM jobs j WHERE j.id = :job_id::bigint AND EXISTS (SELECT 1 FROM decided)
)
SELECT id FROM decided;

-- name: save_artifact
-- Fenced: a worker that lost its lease cannot overwrite the new owner's files.
INSERT INTO job_artifacts (job_id, name, content)
SELECT id, :name, :content FROM jobs
WHERE id = :id AND lease_token = :token AND state = 'running'
ON CONFLICT (job_id, name) DO UPDATE SET content = EXCLUDED.content, created_at = now()
RETURNING job_id;

-- name: load_artifacts
SELECT name, content FROM job_artifacts WHERE job_id = :id AND name LIKE :prefix || '%' ORDER BY name;

-- name: pending_revision
SELECT id, kind, text FROM job_revisions
WHERE job_id = :id AND gate = :gate AND consumed_at IS NULL;

-- name: consume_revision
UPDATE job_revisions r SET consumed_at = now()
FROM jobs j
WHERE r.id = :revision_id AND r.consumed_at IS NULL
  AND j.id = r.job_id AND j.lease_token = :token AND j.state = 'running'
RETURNING r.id;

-- name: begin_delivery
-- Start an upload (see sql/003_delivery_outcomes.sql for the states): a new record, or one
-- whose last upload is known not to have been sent ('failed') or was asked for again
-- ('resend'). created = false: a record in another state (an upload began, or ended sent or
-- unknown), so this run must not send. No row back: the lease is lost.
WITH started AS (
    INSERT INTO deliveries (job_id, state)
    SELECT id, 'sending' FROM jobs WHERE id = :id AND lease_token = :token AND state = 'running'
    ON CONFLICT (job_id) DO UPDATE
    SET state = 'sending', attempts = deliveries.attempts + 1, started_at = now(),
        updated_at = now()
    WHERE deliveries.state IN ('failed', 'resend')
    RETURNING job_id
)
SELECT true AS created FROM started
UNION ALL
SELECT false FROM deliveries d WHERE d.job_id = :id AND NOT EXISTS (SELECT 1 FROM started);

-- name: finish_delivery
-- Telegram answered with the message: sent.
UPDATE deliveries d
SET state = 'sent', telegram_message_id = :message_id, sent_at = now(), last_error = NULL,
    updated_at = now()
FROM jobs j
WHERE d.job_id = :id AND d.state = 'sending'
  AND j.id = d.job_id AND j.lease_token = :token AND j.state = 'running'
RETURNING d.job_id;

-- name: end_delivery
-- An upload that did not end in a message: :outcome 'failed' (Telegram answered with an error,
-- or the request never left) or 'unknown' (no answer came back; or a later run found the
-- record still 'sending' because the run that began it died).
UPDATE deliveries d
SET state = :outcome::text, last_error = :error, updated_at = now()
FROM jobs j
WHERE d.job_id = :id AND d.state = 'sending' AND :outcome::text IN ('failed', 'unknown')
  AND j.id = d.job_id AND j.lease_token = :token AND j.state = 'running'
RETURNING d.job_id;

-- name: request_resend
-- The user's button or the operator's CLI (:requested_by) asks for a video whose delivery is
-- unknown once more: the record becomes 'resend' and a finished job is queued again at its
-- deliver step, where the worker sends it. Only an 'unknown' record moves, so a second press
-- asks for nothing more. Not while a worker runs the job (it is about to finish it), nor for a
-- cancelled job (its files are gone). No row back: nothing to resend.
WITH requested AS (
    UPDATE deliveries d
    SET state = 'resend', resends = d.resends + 1, updated_at = now()
    FROM jobs j
    WHERE d.job_id = :job_id::bigint AND d.state = 'unknown'
      AND j.id = d.job_id AND j.state IN ('queued', 'done', 'failed')
    RETURNING d.job_id
), requeued AS (
    UPDATE jobs
    SET state = 'queued', step = 'deliver', attempts = 0, run_at = now(), finished_at = NULL,
        last_error = NULL, updated_at = now()
    WHERE id IN (SELECT job_id FROM requested) AND state IN ('done', 'failed')
), event AS (
    INSERT INTO job_events (job_id, event, step, detail)
    SELECT job_id, :requested_by::text || '_resend', 'deliver', 'video asked for again'
    FROM requested
)
SELECT job_id FROM requested;

-- name: delivery_state
SELECT state, telegram_message_id FROM deliveries WHERE job_id = :id;

-- name: block_chat
INSERT INTO blocked_chats (chat_id) VALUES (:chat_id) ON CONFLICT (chat_id) DO NOTHING;

-- name: unblock_chat
DELETE FROM blocked_chats WHERE chat_id = :chat_id;

-- name: chat_is_blocked
SELECT EXISTS (SELECT 1 FROM blocked_chats WHERE chat_id = :chat_id) AS blocked;

-- name: get_job
SELECT * FROM jobs WHERE id = :id;
