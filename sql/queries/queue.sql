-- The job state machine, and the only place that writes job state (jobs, their decisions,
-- revisions, delivery records, blocked chats), run through shared/queue.py. Every transition is
-- one statement or one SQL function (sql/005_state_functions.sql); every write after a claim is
-- fenced by (id, lease_token, state = 'running'), so a worker that lost its lease changes
-- nothing. The history (job_events) of every change of state is written by the trigger
-- jobs_state_event; the statements here write only the events that are not state changes.
-- Parameters that may be NULL, or that reach a function, carry explicit casts: statements are
-- prepared without parameter types.

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

-- name: create_job_from_update
-- The bot's job for a new description: the function create_job (sql/011_create_job.sql)
-- records the update, takes the user's lock, checks the user's limits, inserts the job and
-- reads the time estimate (for :providers, when not NULL), as one statement and so one
-- transaction: one round trip.
SELECT outcome, job_id, retry_after, ahead, work_seconds
FROM create_job(:update_id::bigint, :chat_id::bigint, :user_id::bigint, :language::text,
                :description::text, :max_attempts::integer, :voice_file_id::text,
                :max_active::bigint, :max_per_day::bigint, :per_minute::bigint,
                :per_hour::bigint, :max_running::bigint, :providers::text);

-- name: lock_claims
-- Claims take turns while a cap on running jobs holds (queue.claim): its own statement, before
-- claim_jobs, so that the claim's count sees the jobs another worker claimed meanwhile.
SELECT true AS locked FROM pg_advisory_xact_lock(hashtextextended(current_schema() || '.claims', 0));

-- name: claim_jobs
-- Take up to :n runnable jobs: queued and due (or asked to cancel), running with an expired
-- lease (the worker died), or waiting at a gate that has a decision, a pending revision, or a
-- passed deadline.
-- A gate wake-up starts the next step afresh (attempts = 1); any other claim counts an attempt.
-- :max_running (NULL: no cap) caps the running jobs: a job that would start work waits in line,
-- queued or waiting, while that many run. Taking over a running job (it is counted already) or
-- acting on a cancel request is not capped. Run after lock_claims, in its transaction.
-- :worker_id (NULL for a claim outside a worker process) names the process that holds the lease.
-- A gate's decision is its first row under the gate's name or an alias (gate_approval_types).
-- The line is the jobs' order of arrival (id), not of due time: a job that comes back from a
-- remote task or a gate goes before the jobs that came after it, so a worker finishes the films
-- it started while newer jobs wait on providers, instead of starting every job first.
WITH busy AS (
    SELECT count(*) AS running FROM jobs WHERE state = 'running'
), candidates AS (
    SELECT j.id, j.state AS prev_state, j.gate AS prev_gate,
           j.gate_deadline <= now() AS gate_expired,
           j.run_at,
           j.state = 'running' OR EXISTS (SELECT 1 FROM approval_statuses a
                                          WHERE a.job_id = j.id::text
                                            AND a.status = 'cancelled') AS uncapped
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
                              AND (a.approval_type = ANY (gate_approval_types(j.gate))
                                   OR a.status = 'cancelled'))
                 OR EXISTS (SELECT 1 FROM job_revisions r
                            WHERE r.job_id = j.id AND r.gate = j.gate AND r.consumed_at IS NULL)
          END
      AND (j.state = 'running'
           OR :max_running::bigint IS NULL
           OR (SELECT running FROM busy) < :max_running::bigint
           OR EXISTS (SELECT 1 FROM approval_statuses a
                      WHERE a.job_id = j.id::text AND a.status = 'cancelled'))
    ORDER BY j.id
    LIMIT :n
    FOR UPDATE SKIP LOCKED
), chosen AS (
    -- FOR UPDATE admits no window function: the free slots are handed out here, in line order.
    SELECT c.*, count(*) FILTER (WHERE NOT c.uncapped) OVER (ORDER BY c.id) AS nth
    FROM candidates c
)
UPDATE jobs j
SET state = 'running',
    attempts = CASE WHEN c.prev_state = 'waiting' THEN 1 ELSE j.attempts + 1 END,
    lease_token = gen_random_uuid(),
    lease_expires_at = now() + make_interval(secs => :lease_seconds::float8),
    worker_id = :worker_id::uuid,
    gate = NULL,
    gate_deadline = NULL,
    updated_at = now()
FROM chosen c
WHERE j.id = c.id
  AND (c.uncapped OR :max_running::bigint IS NULL
       OR c.nth <= :max_running::bigint - (SELECT running FROM busy))
RETURNING j.id, j.chat_id, j.user_id, j.language, j.description, j.step, j.attempts,
          j.max_attempts, j.lease_token, j.checkpoints, j.gate_message_id, j.status_message_id,
          j.status_text, j.created_at, c.prev_state, c.prev_gate, c.gate_expired,
          (SELECT a.status FROM approval_statuses a
           WHERE a.job_id = j.id::text AND a.approval_type = ANY (gate_approval_types(c.prev_gate))
           ORDER BY a.id LIMIT 1) AS gate_decision,
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
UPDATE jobs
SET state = 'waiting', gate = :gate,
    gate_deadline = now() + make_interval(secs => :ttl_seconds::float8),
    gate_message_id = :message_id, lease_token = NULL, lease_expires_at = NULL,
    updated_at = now()
WHERE id = :id AND lease_token = :token AND state = 'running'
RETURNING id;

-- name: complete_job
WITH finished AS (
    UPDATE jobs
    SET state = 'done', lease_token = NULL, lease_expires_at = NULL, last_error = NULL,
        finished_at = now(), updated_at = now()
    WHERE id = :id AND lease_token = :token AND state = 'running'
    RETURNING id
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
-- The attempt given back is what the history tells a 'deferred' from a 'retry_scheduled' by.
UPDATE jobs
SET state = 'queued', run_at = now() + make_interval(secs => :delay::float8),
    attempts = GREATEST(attempts - 1, 0), lease_token = NULL, lease_expires_at = NULL,
    last_error = :reason, updated_at = now()
WHERE id = :id AND lease_token = :token AND state = 'running'
RETURNING id;

-- name: fail_job
-- Retry later with capped exponential backoff and equal jitter, at least :retry_after seconds;
-- after max_attempts, or when :permanent, the job is failed. A failed job keeps its artifacts so
-- that an operator's retry resumes where it stopped; prune removes them.
UPDATE jobs
SET state = CASE WHEN :permanent OR attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
    run_at = now() + make_interval(secs => GREATEST(
        :retry_after::float8,
        LEAST(:max_delay::float8, :base_delay::float8 * 2 ^ GREATEST(attempts - 1, 0))
            * (0.5 + random() / 2))),
    finished_at = CASE WHEN :permanent OR attempts >= max_attempts THEN now() END,
    lease_token = NULL, lease_expires_at = NULL, last_error = :error, updated_at = now()
WHERE id = :id AND lease_token = :token AND state = 'running'
RETURNING id, state, run_at;

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
    RETURNING id
), artifacts AS (
    DELETE FROM job_artifacts WHERE job_id IN (SELECT id FROM cancelled)
)
SELECT id FROM cancelled;

-- name: decide
-- A decision row exactly as an operator's emergency INSERT writes it (see decide() in
-- sql/005_state_functions.sql). false: that (job, approval_type) is decided already.
SELECT decide(:job_id::bigint, :approval_type::text, :status::text, :decided_by::text) AS written;

-- name: request_cancel
-- The operator's cancel request (cancel_job()); false: one was made already.
SELECT cancel_job(:job_id::bigint, :reason::text) AS written;

-- name: retry_job
-- A failed or cancelled job queued again where it stopped (retry_job()); returns the step.
SELECT retry_job(:job_id::bigint) AS step;

-- name: save_artifact
-- Fenced: a worker that lost its lease cannot overwrite the new owner's files.
INSERT INTO job_artifacts (job_id, name, content)
SELECT id, :name, :content FROM jobs
WHERE id = :id AND lease_token = :token AND state = 'running'
ON CONFLICT (job_id, name) DO UPDATE SET content = EXCLUDED.content, created_at = now()
RETURNING job_id;

-- name: load_artifacts
SELECT name, content FROM job_artifacts WHERE job_id = :id AND name LIKE :prefix || '%' ORDER BY name;

-- name: artifact_names
SELECT name FROM job_artifacts WHERE job_id = :id AND name LIKE :prefix || '%' ORDER BY name;

-- name: insert_revision
-- Regenerate, or an edited script (:text), at an open gate; one pending revision per gate.
-- Not a change of state: the event is written here.
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

-- name: pending_revision
SELECT id, kind, text FROM job_revisions
WHERE job_id = :id AND gate = :gate AND consumed_at IS NULL;

-- name: consume_revision
-- Fenced: no row back when the lease is lost (or the revision was taken already).
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
-- A video whose delivery is unknown, asked for once more (resend_video()); false: nothing to
-- resend.
SELECT resend_video(:job_id::bigint, :requested_by::text) AS requested;

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

-- name: prune_finished
-- Delete finished jobs (their events, artifacts, deliveries and revisions go by ON DELETE
-- CASCADE), their decision rows, and old update-dedup records; return what went.
WITH doomed AS (
    DELETE FROM jobs
    WHERE state IN ('done', 'failed', 'cancelled')
      AND finished_at < now() - make_interval(days => :days::integer)
    RETURNING id
), approvals AS (
    DELETE FROM approval_statuses
    WHERE job_id IN (SELECT id::text FROM doomed)
    RETURNING id
), updates AS (
    DELETE FROM telegram_updates
    WHERE received_at < now() - make_interval(days => :days::integer)
    RETURNING update_id
)
SELECT (SELECT count(*) FROM doomed) AS jobs,
       (SELECT count(*) FROM job_events WHERE job_id IN (SELECT id FROM doomed)) AS job_events,
       (SELECT count(*) FROM approvals) AS approval_statuses,
       (SELECT count(*) FROM updates) AS telegram_updates;

-- name: set_description
-- A spoken description's text, heard by the step `transcribe`, becomes the job's description.
UPDATE jobs SET description = :description, updated_at = now()
WHERE id = :id AND lease_token = :token AND state = 'running'
RETURNING id;

-- ---- time and cost (sql/008_costs.sql) ----------------------------------------------------------

-- name: begin_step_run
-- The runner starts a step: fenced, so a worker that lost its lease records nothing.
INSERT INTO step_runs (job_id, step, attempt, providers, started_at)
SELECT id, :step::text, :attempt::integer, :providers::text, now() FROM jobs
WHERE id = :id AND lease_token = :token AND state = 'running'
RETURNING id;

-- name: end_step_run
-- The step returned or raised: :outcome is continue, gate (parked at a gate), parked (deferred),
-- finished or stopped (an error, a cancel, a lost lease). Not fenced: the row is this run's own
-- record, and a run that opened a gate or finished the job holds no lease any more.
UPDATE step_runs SET finished_at = now(), outcome = :outcome::text
WHERE id = :run_id::bigint AND finished_at IS NULL
RETURNING id;

-- name: record_provider_call
-- What a provider call consumed and its estimated price; fenced like every write of a run.
INSERT INTO provider_calls (job_id, step, kind, provider, model, units, usd, at)
SELECT id, :step::text, :kind::text, :provider::text, :model::text, :units::jsonb,
       :usd::numeric, now()
FROM jobs
WHERE id = :id AND lease_token = :token AND state = 'running'
RETURNING id;

-- name: job_cost
SELECT coalesce(sum(usd), 0)::float8 AS usd FROM provider_calls WHERE job_id = :id::bigint;

-- name: cost_today
-- What the whole bot spent on the current UTC day.
SELECT coalesce(sum(usd), 0)::float8 AS usd FROM provider_calls
WHERE at >= date_trunc('day', now(), 'UTC');

-- name: job_times
-- A job's time in seconds: in all (until it finished, or now), deciding (from each gate's
-- opening to the job's next run, or to its end, or now) and working (its finished step runs);
-- and its cost.
WITH runs AS (
    SELECT outcome, finished_at, lead(started_at) OVER (ORDER BY id) AS next_start
    FROM step_runs WHERE job_id = :id::bigint
)
SELECT extract(epoch FROM coalesce(j.finished_at, now()) - j.created_at)::float8 AS total_seconds,
       coalesce((SELECT sum(extract(epoch FROM coalesce(r.next_start, j.finished_at, now())
                                              - r.finished_at))
                 FROM runs r WHERE r.outcome = 'gate'), 0)::float8 AS deciding_seconds,
       coalesce((SELECT sum(extract(epoch FROM s.finished_at - s.started_at))
                 FROM step_runs s WHERE s.job_id = j.id AND s.finished_at IS NOT NULL),
                0)::float8 AS work_seconds,
       (SELECT coalesce(sum(usd), 0) FROM provider_calls p WHERE p.job_id = j.id)::float8 AS usd
FROM jobs j WHERE j.id = :id::bigint;

-- ---- remote tasks: clips and stills (sql/009_remote_tasks.sql, sql/010_remote_stills.sql) ---------

-- name: begin_remote_task
-- The intent to submit one scene's task, if the provider has a slot for its kind
-- (begin_remote_task()).
SELECT * FROM begin_remote_task(:job_id::bigint, :token::uuid, :kind::text, :scene::integer,
                                :provider::text, :model::text, :stills_variant::integer,
                                :videos_variant::integer, :attempt::integer, :slots::integer,
                                :timeout_seconds::float8);

-- name: remote_task_submitted
-- The provider took the task: its handle, the seconds it bills and their price, recorded the
-- moment submit returned. No row back: the lease is lost (or the row is no longer submitting).
UPDATE remote_tasks t
SET state = 'running', handle = :handle::jsonb, seconds_billed = :seconds_billed::numeric,
    usd = :usd::numeric, submitted_at = now()
FROM jobs j
WHERE t.id = :task_id::bigint AND t.state = 'submitting'
  AND j.id = t.job_id AND j.lease_token = :token::uuid AND j.state = 'running'
RETURNING t.id;

-- name: remote_task_started
-- Polling saw the provider run the task (it left the provider's line): its timeout counts from
-- now. Set once; no row back: the lease is lost.
UPDATE remote_tasks t
SET started_at = coalesce(t.started_at, now())
FROM jobs j
WHERE t.id = :task_id::bigint AND t.state IN ('running', 'succeeded')
  AND j.id = t.job_id AND j.lease_token = :token::uuid AND j.state = 'running'
RETURNING t.id;

-- name: remote_task_answered
-- A synchronous call (a gpt-image-1 still) answered and its picture is saved as the job's
-- artifact: from submitting straight to succeeded, with its price. No row back: the lease is
-- lost (or the row is no longer submitting).
UPDATE remote_tasks t
SET state = 'succeeded', handle = :handle::jsonb, usd = :usd::numeric, submitted_at = now(),
    started_at = t.created_at, finished_at = now()
FROM jobs j
WHERE t.id = :task_id::bigint AND t.state = 'submitting'
  AND j.id = t.job_id AND j.lease_token = :token::uuid AND j.state = 'running'
RETURNING t.id;

-- name: end_remote_task
-- A task's end: from submitting, 'unsent', 'uncertain' or 'failed' (refused); from running,
-- 'succeeded' (its clip is saved) or 'failed'. A succeeded task whose clip is gone (a cancelled
-- job's files go) is fetched again by its handle: 'succeeded' again, or 'failed' when it cannot
-- be. Fenced by the lease like every write of a run.
UPDATE remote_tasks t
SET state = :state::text, error = :error::text,
    output_url = coalesce(:output_url::text, t.output_url), finished_at = now()
FROM jobs j
WHERE t.id = :task_id::bigint
  AND ((t.state = 'submitting' AND :state::text IN ('unsent', 'uncertain', 'failed'))
       OR (t.state IN ('running', 'succeeded') AND :state::text IN ('succeeded', 'failed')))
  AND j.id = t.job_id AND j.lease_token = :token::uuid AND j.state = 'running'
RETURNING t.id;

-- name: settle_stale_submissions
-- At the start of a run: a row of this job still 'submitting' was left by a run that ended
-- between sending and recording the answer, so whether the provider took it is unknown.
UPDATE remote_tasks t
SET state = 'uncertain', finished_at = now(),
    error = 'the run that submitted it ended before recording the answer'
FROM jobs j
WHERE t.job_id = :job_id::bigint AND t.state = 'submitting'
  AND j.id = t.job_id AND j.lease_token = :token::uuid AND j.state = 'running'
RETURNING t.id, t.kind, t.scene;

-- name: remote_tasks
-- The latest attempt of each scene of the job for this kind and these variants, with the
-- seconds since the provider started running it (by the database's clock, as
-- ANIMATION_TIMEOUT_SECONDS is measured; NULL while it waits in the provider's line), and how
-- many attempts never reached the provider.
SELECT DISTINCT ON (t.scene)
       t.id, t.scene, t.attempt, t.state, t.handle, t.output_url, t.error,
       t.started_at IS NOT NULL AS started,
       extract(epoch FROM now() - t.started_at)::float8 AS age_seconds,
       (SELECT count(*) FROM remote_tasks u
        WHERE u.job_id = t.job_id AND u.kind = t.kind AND u.scene = t.scene
          AND u.state = 'unsent' AND u.stills_variant = t.stills_variant
          AND u.videos_variant = t.videos_variant)::integer AS unsent
FROM remote_tasks t
WHERE t.job_id = :job_id::bigint AND t.kind = :kind::text
  AND t.stills_variant = :stills_variant::integer AND t.videos_variant = :videos_variant::integer
ORDER BY t.scene, t.attempt DESC;

-- name: others_due
-- Whether another job is queued and due: a job polling remote tasks parks for it rather than
-- keep the worker's run to itself.
SELECT EXISTS (SELECT 1 FROM jobs
               WHERE state = 'queued' AND run_at <= now() AND id <> :job_id::bigint) AS due;

-- name: register_worker
-- A worker process starts (or renews its heartbeat): its row in `workers`.
INSERT INTO workers (id, host, pid, slots, render_slots, started_at, heartbeat_at)
VALUES (:worker_id, :host, :pid, :slots, :render_slots, now(), now())
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), stopped_at = NULL;

-- name: stop_worker
-- A worker process exits cleanly; rows of processes gone more than a day are forgotten.
WITH stopped AS (
    UPDATE workers SET stopped_at = now(), heartbeat_at = now() WHERE id = :worker_id
)
DELETE FROM workers WHERE heartbeat_at < now() - interval '1 day';
