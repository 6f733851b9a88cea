-- Remote animation tasks (ANIMATION_PROVIDER runway or fal): one row per submission of one scene's
-- still, so that a task is paid for once however the worker runs end. A row is written before
-- the request leaves and holds the provider's handle the moment it answers; polling only ever
-- uses recorded handles. Its states:
--   submitting  the intent: the request is about to leave (or left, and its answer is not
--               recorded yet)
--   running     the provider took it: `handle` is what polling needs
--   succeeded   the clip was downloaded and saved as the job's artifact clip/NN.mp4
--   failed      the provider said it failed, refused it, or it ran past ANIMATION_TIMEOUT_SECONDS
--               (then it was cancelled, best effort): the scene falls back to its still
--   uncertain   the request may have reached the provider but no answer was recorded (no answer
--               came back, or a later run found the row still `submitting` because the run that
--               sent it died): never submitted again automatically, the scene falls back to its
--               still; only a new variant (🔁 at the videos gate) pays again
--   unsent      surely never reached the provider (the connection never opened, a 429): the
--               scene's next attempt is a new row
-- A scene's clip is its row with the highest attempt for the job's stills and videos variants.
CREATE TABLE remote_tasks (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    scene INTEGER NOT NULL CHECK (scene >= 0),
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    stills_variant INTEGER NOT NULL,
    videos_variant INTEGER NOT NULL,
    attempt INTEGER NOT NULL CHECK (attempt >= 1),
    state TEXT NOT NULL
        CHECK (state IN ('submitting', 'running', 'succeeded', 'failed', 'uncertain', 'unsent')),
    handle JSONB,
    output_url TEXT,
    error TEXT,
    seconds_billed NUMERIC(8, 2),
    usd NUMERIC(12, 6),
    created_at TIMESTAMPTZ NOT NULL,
    submitted_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    UNIQUE (job_id, scene, stills_variant, videos_variant, attempt),
    CHECK ((state IN ('running', 'succeeded')) <= (handle IS NOT NULL))
);
CREATE INDEX remote_tasks_in_flight ON remote_tasks (provider) WHERE state IN ('submitting', 'running');

-- Record the intent to submit scene `scene`'s task, when `provider` has fewer than `slots` tasks
-- in flight across all jobs; the provider's advisory lock (held until the statement's transaction
-- commits) makes two workers take turns, so they cannot both pass the limit. In flight: rows
-- submitting or running, of an unfinished job, younger than `timeout_seconds` (an older one is
-- past its deadline: its job cancels it). Fenced by the job's lease: held = false when the lease
-- is lost; task_id NULL when no slot is free.
CREATE FUNCTION begin_remote_task(
    job_id bigint, token uuid, scene integer, provider text, model text, stills_variant integer,
    videos_variant integer, attempt integer, slots integer, timeout_seconds float8,
    OUT task_id bigint, OUT held boolean
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
        WHERE t.provider = begin_remote_task.provider AND t.state IN ('submitting', 'running')
          AND j.state IN ('queued', 'running', 'waiting')
          AND t.created_at > now() - make_interval(secs => begin_remote_task.timeout_seconds))
       >= begin_remote_task.slots THEN
        RETURN;
    END IF;
    INSERT INTO remote_tasks (job_id, scene, provider, model, stills_variant, videos_variant,
                              attempt, state, created_at)
    VALUES (begin_remote_task.job_id, begin_remote_task.scene, begin_remote_task.provider,
            begin_remote_task.model, begin_remote_task.stills_variant,
            begin_remote_task.videos_variant, begin_remote_task.attempt, 'submitting', now())
    RETURNING id INTO task_id;
END
$$;
