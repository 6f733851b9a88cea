-- The gates as the seed bot names them: `script`, `images` (until now `storyboard`) and, for a
-- later step, `videos`. Jobs in flight, their pending revisions and their decision rows move to
-- the new name; so does the review step (`review_storyboard` -> `review_images`) and its
-- checkpoint, which holds the gate's last revision. approval_statuses keeps its shape exactly
-- (the operators' emergency interface): only the values in its rows change.
--
-- A `storyboard` row that an operator writes from habit is still honoured, as an alias of
-- `images`: the claim's wake-up and the decision it reads ask gate_approval_types(gate), and
-- decide() writes the new name.

ALTER TABLE jobs DROP CONSTRAINT jobs_gate_check;
ALTER TABLE job_revisions DROP CONSTRAINT job_revisions_gate_check;

UPDATE jobs SET gate = 'images' WHERE gate = 'storyboard';
UPDATE jobs SET step = 'review_images' WHERE step = 'review_storyboard';
UPDATE jobs
SET checkpoints = (checkpoints - 'review_storyboard')
                  || jsonb_build_object('review_images', checkpoints -> 'review_storyboard')
WHERE checkpoints ? 'review_storyboard';
UPDATE job_revisions SET gate = 'images' WHERE gate = 'storyboard';
-- A job with rows under both names keeps both: the claim reads the first one written.
UPDATE approval_statuses s SET approval_type = 'images'
WHERE s.approval_type = 'storyboard'
  AND NOT EXISTS (SELECT 1 FROM approval_statuses i
                  WHERE i.job_id = s.job_id AND i.approval_type = 'images');

ALTER TABLE jobs ADD CONSTRAINT jobs_gate_check CHECK (gate IN ('script', 'images', 'videos'));
ALTER TABLE job_revisions
    ADD CONSTRAINT job_revisions_gate_check CHECK (gate IN ('script', 'images', 'videos'));

-- The approval_type values that decide `gate`: its name, and for `images` the old name too.
-- No table is read, so the planner inlines it into the claim.
CREATE FUNCTION gate_approval_types(gate text) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE gate WHEN 'images' THEN ARRAY['images', 'storyboard'] ELSE ARRAY[gate] END
$$;

-- decide() as in sql/005_state_functions.sql, with the alias: `storyboard` is written as
-- `images`, and a row under either name is a decision already (false).
CREATE OR REPLACE FUNCTION decide(job_id bigint, gate text, status text, decided_by text)
RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    job jobs%ROWTYPE;
    gate_name text := CASE decide.gate WHEN 'storyboard' THEN 'images' ELSE decide.gate END;
BEGIN
    SELECT * INTO job FROM jobs WHERE id = decide.job_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no job %', decide.job_id USING ERRCODE = 'no_data_found';
    END IF;
    IF job.state IN ('done', 'failed', 'cancelled') THEN
        RAISE EXCEPTION 'job % is %: there is nothing to decide', job.id, job.state;
    END IF;
    IF EXISTS (SELECT 1 FROM approval_statuses a
               WHERE a.job_id = job.id::text
                 AND a.approval_type = ANY (gate_approval_types(gate_name))) THEN
        RETURN false;
    END IF;
    INSERT INTO approval_statuses (job_id, approval_type, status, expires_at)
    VALUES (job.id::text, gate_name, decide.status,
            CASE WHEN job.gate = gate_name THEN job.gate_deadline
                 ELSE now() + interval '1 day' END)
    ON CONFLICT (job_id, approval_type) DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO job_events (job_id, event, step, detail)
    VALUES (job.id, decide.decided_by || '_' || decide.status, job.step, gate_name);
    RETURN true;
END
$$;
