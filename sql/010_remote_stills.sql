-- Remote stills, and timeouts that count from when the provider starts a task.
--
-- `kind` tells a scene's clip (the step `animate`) from its still (the step `media`): a still is
-- a Runway text_to_image task, or one synchronous gpt-image-1 call (provider 'openai', whose row
-- goes from submitting straight to succeeded once the picture is saved, or to failed, uncertain
-- or unsent like a task's). A still's row has stills_variant = the images gate's variant and
-- videos_variant = 0. The states and the policy for an uncertain submission are those of
-- sql/009_remote_tasks.sql.
--
-- `started_at` is when polling first saw the provider run the task (Runway RUNNING, fal
-- IN_PROGRESS). In a crowd a task waits in the provider's line first (Runway PENDING or
-- THROTTLED, fal IN_QUEUE); that wait never counts against ANIMATION_TIMEOUT_SECONDS.
ALTER TABLE remote_tasks
    ADD COLUMN kind TEXT NOT NULL DEFAULT 'clip' CHECK (kind IN ('clip', 'still')),
    ADD COLUMN started_at TIMESTAMPTZ;

DO $$
DECLARE
    old_unique text;
BEGIN
    SELECT c.conname INTO old_unique
    FROM pg_constraint c
    WHERE c.conrelid = 'remote_tasks'::regclass AND c.contype = 'u';
    EXECUTE format('ALTER TABLE remote_tasks DROP CONSTRAINT %I', old_unique);
END
$$;
ALTER TABLE remote_tasks ADD CONSTRAINT remote_tasks_attempt_key
    UNIQUE (job_id, kind, scene, stills_variant, videos_variant, attempt);

DROP INDEX remote_tasks_in_flight;
CREATE INDEX remote_tasks_in_flight ON remote_tasks (provider, kind)
    WHERE state IN ('submitting', 'running');

DROP FUNCTION begin_remote_task(bigint, uuid, integer, text, text, integer, integer, integer,
                                integer, float8);

-- Record the intent to submit scene `scene`'s task of `kind`, when `provider` has fewer than
-- `slots` tasks of that kind in flight across all jobs; the provider's advisory lock (held until
-- the statement's transaction commits) makes two workers take turns, so they cannot both pass
-- the limit. In flight: rows submitting or running, of an unfinished job, that are not past
-- their timeout counted from `started_at` (a row the provider has not started yet is in flight
-- however long it has waited in line; one past its deadline is its job's to cancel). Fenced by
-- the job's lease: held = false when the lease is lost; task_id NULL when no slot is free.
CREATE FUNCTION begin_remote_task(
    job_id bigint, token uuid, kind text, scene integer, provider text, model text,
    stills_variant integer, videos_variant integer, attempt integer, slots integer,
    timeout_seconds float8, OUT task_id bigint, OUT held boolean
)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
BEGIN
    PERFORM pg_advisory_xact_lock(
        hashtextextended(current_schema() || '.remote_tasks.' || begin_remote_task.provider, 0));
    held := EXISTS (SELECT 1 FROM jobs j
                    WHERE j.id = begin_remote_task.job_id AND j.lease_token = begin_remote_task.token
                      AND j.state = 'running');
    IF NOT held THEN
        RETURN;
    END IF;
    IF (SELECT count(*) FROM remote_tasks t JOIN jobs j ON j.id = t.job_id
        WHERE t.provider = begin_remote_task.provider AND t.kind = begin_remote_task.kind
          AND t.state IN ('submitting', 'running')
          AND j.state IN ('queued', 'running', 'waiting')
          AND (t.started_at IS NULL
               OR t.started_at > now() - make_interval(secs => begin_remote_task.timeout_seconds)))
       >= begin_remote_task.slots THEN
        RETURN;
    END IF;
    INSERT INTO remote_tasks (job_id, kind, scene, provider, model, stills_variant,
                              videos_variant, attempt, state, created_at)
    VALUES (begin_remote_task.job_id, begin_remote_task.kind, begin_remote_task.scene,
            begin_remote_task.provider, begin_remote_task.model, begin_remote_task.stills_variant,
            begin_remote_task.videos_variant, begin_remote_task.attempt, 'submitting', now())
    RETURNING id INTO task_id;
END
$$;
