-- The bot's job for a new description, in one call: the webhook's one round trip per
-- description (shared/queue.py create_job_from_update), and what a person at psql calls too:
--   SELECT * FROM ai_video_bot.create_job(42, 7, 7, 'en', 'A fox in the snow', 5, NULL,
--                                         1, 10, 5, 20, 5, 'openai/openai/openai/local');
-- Called as one statement it is its own transaction, so what it writes commits together:
-- the update's record (telegram_updates is the bot's dedup record: a redelivered update_id
-- stops there as 'duplicate' and changes nothing), the chat unblocked (the user is talking to
-- the bot again), and the job when every limit of the user passes (a spoken description, with
-- the voice message's `voice_file_id`, starts at the step `transcribe`).
--
-- outcome: created | duplicate | too_many_active (`max_active` unfinished jobs) | daily_limit
-- (`max_per_day` jobs created this UTC calendar day) | rate_limit_hour | rate_limit_minute
-- (`per_hour`, `per_minute` jobs created in the last hour, minute).
-- retry_after: when a rate window is full, the whole seconds until enough of its jobs leave it.
-- ahead: for a created job that cannot start at once because the `max_running` generation
-- slots are taken (running jobs and due jobs before it fill them), the due jobs in line before
-- it, counted up to 100 (100 means 100 or more); else NULL.
-- work_seconds: for a created job, when `providers` (shared.costs.providers_key) is given, the
-- acknowledgement's time estimate: recent_work_seconds(providers, 10); else NULL.
--
-- The user's advisory lock, taken after the update is recorded, makes two descriptions of the
-- same user take turns until the first commits, so they cannot both pass a limit. The counts
-- after it see the other's job: in READ COMMITTED (the default; do not call it in REPEATABLE
-- READ or SERIALIZABLE) each statement of a function takes a fresh snapshot.
--
-- Every read here is bounded, whatever the size of the queue or of the history: the user's
-- unfinished jobs and those of this day or hour (jobs_active_user, jobs_user_created), the
-- slots (at most `max_running` rows of jobs_running_by_worker and jobs_queued_run_at), the line
-- (at most 100 rows of jobs_queued_run_at) and the estimate (at most 100 finished jobs).
-- A new job sends no NOTIFY (sql/013_quiet_job_inserts.sql): workers find it at their next
-- poll, WORKER_POLL_SECONDS.

-- The due jobs in line, oldest first: the slot check and the count of the line read only these
-- (jobs_active_run_at holds the waiting ones too, which can be many and sit at its old end).
CREATE INDEX jobs_queued_run_at ON jobs (run_at, id) WHERE state = 'queued';

-- The median working time (its finished step runs, gates excluded) of the last `job_count`
-- jobs done with these `providers`, looked for among the last 100 finished jobs only, so that
-- its cost stays bounded when few or none used them (after a change of providers); NULL when
-- there are none. The webhook gets it from create_job; `SELECT recent_work_seconds(...)` at psql.
-- enable_sort = off: the last 100 come from jobs_finished, in its order, however few jobs
-- there were when the plan was made. A connection keeps its plan (the webhook's live for
-- days), and one made while the table was small sorted a scan of every job, so each
-- description read the whole table until an ANALYZE replanned it.
CREATE FUNCTION recent_work_seconds(providers text, job_count integer) RETURNS float8
LANGUAGE sql STABLE SET search_path FROM CURRENT SET enable_sort = off AS $$
    -- latest comes in the order of jobs_finished, so recent reads it only until it has
    -- `job_count` jobs (that many rows while the providers stay the same), at most 100 rows.
    WITH recent AS (
        SELECT latest.id
        FROM (SELECT j.id, j.state, j.finished_at FROM jobs j
              WHERE j.finished_at IS NOT NULL
              ORDER BY j.finished_at DESC
              LIMIT 100) AS latest
        WHERE latest.state = 'done'
          AND EXISTS (SELECT 1 FROM step_runs r
                      WHERE r.job_id = latest.id AND r.providers = recent_work_seconds.providers)
        ORDER BY latest.finished_at DESC
        LIMIT recent_work_seconds.job_count
    ), work AS (
        SELECT sum(extract(epoch FROM r.finished_at - r.started_at)) AS seconds
        FROM step_runs r JOIN recent ON recent.id = r.job_id
        WHERE r.finished_at IS NOT NULL
        GROUP BY r.job_id
    )
    SELECT (percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds))::float8 FROM work
$$;

CREATE FUNCTION create_job(
    update_id bigint, chat_id bigint, user_id bigint, language text, description text,
    max_attempts integer, voice_file_id text,
    max_active bigint, max_per_day bigint, per_minute bigint, per_hour bigint, max_running bigint,
    providers text DEFAULT NULL,
    OUT outcome text, OUT job_id bigint, OUT retry_after integer, OUT ahead bigint,
    OUT work_seconds float8
)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    recorded bigint;
    usage record;
    free_at timestamptz;
BEGIN
    -- Three statements (each one costs the webhook's description time, issue 17): the update
    -- recorded, its chat unblocked and the user's lock taken; the user's counts and the slots;
    -- the job inserted with its place in line and the estimate.
    -- A redelivered update_id inserts no row, so unblocks and locks nothing.
    WITH new_update AS (
        INSERT INTO telegram_updates (update_id, kind) VALUES (create_job.update_id, 'message')
        ON CONFLICT (update_id) DO NOTHING
        RETURNING update_id
    ), unblocked AS (
        DELETE FROM blocked_chats
        WHERE chat_id = create_job.chat_id AND EXISTS (SELECT FROM new_update)
    ), locked AS (
        SELECT pg_advisory_xact_lock(
                   hashtextextended(current_schema() || '.user_jobs.' || create_job.user_id, 0))
        FROM new_update
    )
    SELECT count(*) INTO recorded FROM locked;
    IF recorded = 0 THEN
        outcome := 'duplicate';
        RETURN;
    END IF;

    -- Only the rows the counts can take, however long the user's history: the unfinished
    -- (jobs_active_user) and those of this day or hour (jobs_user_created). `taken`: the slots
    -- taken before the new job is in line, the running jobs and the due jobs, at most
    -- `max_running` of them (a backlog costs each new description nothing more).
    SELECT (SELECT count(*) FROM jobs
            WHERE user_id = create_job.user_id
              AND state IN ('queued', 'running', 'waiting')) AS active,
           count(*) FILTER (WHERE created_at >= date_trunc('day', now(), 'UTC')) AS today,
           count(*) FILTER (WHERE created_at > now() - interval '1 minute') AS last_minute,
           count(*) FILTER (WHERE created_at > now() - interval '1 hour') AS last_hour,
           array_agg(created_at ORDER BY created_at)
               FILTER (WHERE created_at > now() - interval '1 hour') AS hour_times,
           (SELECT count(*) FROM (
                (SELECT 1 FROM jobs WHERE state = 'running' LIMIT create_job.max_running)
                UNION ALL
                (SELECT 1 FROM jobs WHERE state = 'queued' AND run_at <= now()
                 LIMIT create_job.max_running)
                LIMIT create_job.max_running) AS slots) AS taken
    INTO usage
    FROM jobs
    WHERE user_id = create_job.user_id
      AND created_at >= LEAST(date_trunc('day', now(), 'UTC'), now() - interval '1 hour');

    -- When each full window lets one more in: its (count - limit + 1)th oldest job leaves it
    -- (hour_times ends with the minute's jobs, so both index it). GREATEST skips NULLs.
    free_at := GREATEST(
        CASE WHEN usage.last_minute >= create_job.per_minute
             THEN usage.hour_times[(usage.last_hour - create_job.per_minute + 1)::integer]
                  + interval '1 minute' END,
        CASE WHEN usage.last_hour >= create_job.per_hour
             THEN usage.hour_times[(usage.last_hour - create_job.per_hour + 1)::integer]
                  + interval '1 hour' END);
    IF free_at IS NOT NULL THEN
        retry_after := GREATEST(ceil(extract(epoch FROM free_at - now())), 1)::integer;
    END IF;

    outcome := CASE
        WHEN usage.active >= create_job.max_active THEN 'too_many_active'
        WHEN usage.today >= create_job.max_per_day THEN 'daily_limit'
        WHEN usage.last_hour >= create_job.per_hour THEN 'rate_limit_hour'
        WHEN usage.last_minute >= create_job.per_minute THEN 'rate_limit_minute'
        ELSE 'created'
    END;
    IF outcome <> 'created' THEN
        RETURN;
    END IF;

    -- created_at by the transaction's now(), the clock the windows above are measured by.
    -- RETURNING reads with the statement's snapshot, which holds the line as it was before
    -- this job: only when every slot is taken is the line counted, and that up to 100.
    INSERT INTO jobs (chat_id, user_id, language, description, max_attempts, voice_file_id, step,
                      created_at)
    VALUES (create_job.chat_id, create_job.user_id, create_job.language, create_job.description,
            create_job.max_attempts, create_job.voice_file_id,
            CASE WHEN create_job.voice_file_id IS NULL THEN 'script' ELSE 'transcribe' END, now())
    RETURNING id,
              CASE WHEN usage.taken >= create_job.max_running THEN
                  (SELECT count(*) FROM (
                       SELECT 1 FROM jobs WHERE state = 'queued' AND run_at <= now() LIMIT 100
                   ) AS line)
              END,
              CASE WHEN create_job.providers IS NOT NULL THEN
                  recent_work_seconds(create_job.providers, 10)
              END
    INTO job_id, ahead, work_seconds;
END
$$;
