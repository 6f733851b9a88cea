-- The operator's transitions as functions in the schema, so that the CLI (shared/queue.py) and a
-- person at psql call the same thing: `SELECT ai_video_bot.retry_job(42);`. Each one runs with
-- the schema's search_path (SET search_path FROM CURRENT), whatever the caller's is. A refusal
-- raises an error whose message says why, for the operator to read as it is.
--
-- And the job's history (job_events) for every change of state, written by a trigger, so that no
-- statement, nor an operator's bare UPDATE, can change a state without leaving a trace.

-- A row in job_events for each change of jobs.state, except into 'running' (a claim: the next
-- event says how that run ended). The event names:
--   gate_opened      parked at a gate (detail: the gate)
--   retry_scheduled  a failed attempt, run again after backoff (detail: the error)
--   deferred         put back without counting the attempt: a rate limit (detail: the reason)
--   requeued         a failed, cancelled or done job queued again: retry_job or resend_video
--                    (detail: the state it left, and its error or cancel reason)
--   done, failed, cancelled   the end (detail: the error, or the cancel reason)
CREATE FUNCTION record_job_event() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO job_events (job_id, event, step, attempt, detail)
    VALUES (
        NEW.id,
        CASE
            WHEN NEW.state = 'waiting' THEN 'gate_opened'
            WHEN NEW.state <> 'queued' THEN NEW.state
            WHEN OLD.state <> 'running' THEN 'requeued'
            WHEN NEW.attempts < OLD.attempts THEN 'deferred'
            ELSE 'retry_scheduled'
        END,
        NEW.step,
        NEW.attempts,
        CASE
            WHEN NEW.state = 'waiting' THEN NEW.gate
            WHEN NEW.state = 'cancelled' THEN NEW.cancel_reason
            WHEN NEW.state = 'queued' AND OLD.state <> 'running'
                THEN OLD.state || coalesce(': ' || CASE OLD.state WHEN 'cancelled'
                                                    THEN OLD.cancel_reason ELSE OLD.last_error END, '')
            ELSE NEW.last_error
        END
    );
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_state_event AFTER UPDATE OF state ON jobs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state AND NEW.state <> 'running')
    EXECUTE FUNCTION record_job_event();

-- Decide a gate exactly as the emergency INSERT does: a row in approval_statuses for
-- (job, gate) with `status` 'approved' or 'cancelled' (a 'cancelled' row cancels the job
-- whatever it is doing). It expires with the gate's deadline when the job waits at this gate,
-- else in a day. The first decision wins: false when (job, gate) is decided already. The
-- decision is recorded in the history as '<decided_by>_<status>' (user_approved,
-- operator_cancelled, ...).
CREATE FUNCTION decide(job_id bigint, gate text, status text, decided_by text) RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    job jobs%ROWTYPE;
BEGIN
    SELECT * INTO job FROM jobs WHERE id = decide.job_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no job %', decide.job_id USING ERRCODE = 'no_data_found';
    END IF;
    IF job.state IN ('done', 'failed', 'cancelled') THEN
        RAISE EXCEPTION 'job % is %: there is nothing to decide', job.id, job.state;
    END IF;
    INSERT INTO approval_statuses (job_id, approval_type, status, expires_at)
    VALUES (job.id::text, decide.gate, decide.status,
            CASE WHEN job.gate = decide.gate THEN job.gate_deadline
                 ELSE now() + interval '1 day' END)
    ON CONFLICT (job_id, approval_type) DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO job_events (job_id, event, step, detail)
    VALUES (job.id, decide.decided_by || '_' || decide.status, job.step, decide.gate);
    RETURN true;
END
$$;

-- Ask to cancel an unfinished job, whatever it is doing: the operator's 'cancelled' decision
-- row, which the next worker run acts on (a queued or waiting job is claimed at once, a running
-- job's heartbeat notices within a third of its lease) and tells the user. False when the
-- operator asked already. Recorded as 'operator_cancelled' with `reason`.
CREATE FUNCTION cancel_job(job_id bigint, reason text) RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    job jobs%ROWTYPE;
BEGIN
    SELECT * INTO job FROM jobs WHERE id = cancel_job.job_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no job %', cancel_job.job_id USING ERRCODE = 'no_data_found';
    END IF;
    IF job.state IN ('done', 'failed', 'cancelled') THEN
        RAISE EXCEPTION 'job % is already %', job.id, job.state;
    END IF;
    INSERT INTO approval_statuses (job_id, approval_type, status, expires_at)
    VALUES (job.id::text, 'operator', 'cancelled', now() + interval '1 day')
    ON CONFLICT (job_id, approval_type) DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO job_events (job_id, event, step, detail)
    VALUES (job.id, 'operator_cancelled', job.step, cancel_job.reason);
    RETURN true;
END
$$;

-- Queue a failed or cancelled job again at the step where it stopped (its checkpoints stay, so
-- finished steps are not redone), with a fresh attempt count. Its 'cancelled' decision rows go,
-- or the next claim would cancel it again at once. last_error and cancel_reason are cleared,
-- as the job is no longer failed or cancelled; the 'requeued' event keeps them in the history.
-- Returns the step. A done job is refused: its video was delivered (see resend_video).
CREATE FUNCTION retry_job(job_id bigint) RETURNS text
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    job jobs%ROWTYPE;
BEGIN
    SELECT * INTO job FROM jobs WHERE id = retry_job.job_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no job %', retry_job.job_id USING ERRCODE = 'no_data_found';
    END IF;
    IF job.state = 'done' THEN
        RAISE EXCEPTION 'job % is done: a delivered job cannot be retried', job.id;
    END IF;
    IF job.state NOT IN ('failed', 'cancelled') THEN
        RAISE EXCEPTION 'job % is %: only failed or cancelled jobs can be retried', job.id, job.state;
    END IF;
    DELETE FROM approval_statuses WHERE job_id = job.id::text AND status = 'cancelled';
    UPDATE jobs
    SET state = 'queued', attempts = 0, run_at = now(), finished_at = NULL, last_error = NULL,
        cancel_reason = NULL, updated_at = now()
    WHERE id = job.id;
    RETURN job.step;
END
$$;

-- Send a video whose delivery is unknown once more (the user's 📤 button, the operator): the
-- delivery record becomes 'resend' and a done or failed job is queued again at its deliver
-- step, where the worker sends it. Only an 'unknown' record moves, so a second request asks for
-- nothing more. Not while a worker runs the job (it is about to finish it), nor for a cancelled
-- job (its files are gone). False: nothing to resend. Recorded as '<requested_by>_resend'.
CREATE FUNCTION resend_video(job_id bigint, requested_by text) RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
BEGIN
    UPDATE deliveries d
    SET state = 'resend', resends = d.resends + 1, updated_at = now()
    FROM jobs j
    WHERE d.job_id = resend_video.job_id AND d.state = 'unknown'
      AND j.id = d.job_id AND j.state IN ('queued', 'done', 'failed');
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO job_events (job_id, event, step, detail)
    VALUES (resend_video.job_id, resend_video.requested_by || '_resend', 'deliver',
            'video asked for again');
    UPDATE jobs
    SET state = 'queued', step = 'deliver', attempts = 0, run_at = now(), finished_at = NULL,
        last_error = NULL, updated_at = now()
    WHERE id = resend_video.job_id AND state IN ('done', 'failed');
    RETURN true;
END
$$;
