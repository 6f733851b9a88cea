-- Time and cost. Every time is set by the statements in sql/queries/queue.sql with now() (no
-- column default), so that a test's clock moves them too.

-- One run of one step: from the moment the runner starts it until it returns or raises. A run
-- that parks at a gate ends when the gate opens, so the time the user takes to decide is the
-- gap between a 'gate' run and the job's next run. `providers` names the providers the run used
-- (script/voice/visuals), which is what the acknowledgement's estimate compares.
CREATE TABLE step_runs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    step TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    providers TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    outcome TEXT CHECK (outcome IN ('continue', 'gate', 'parked', 'finished', 'stopped'))
);
CREATE INDEX step_runs_job ON step_runs (job_id, id);

-- What each paid call consumed (tokens, characters, seconds of audio, images) and its price
-- estimated from the price table (shared/costs.py) at the time of the call.
CREATE TABLE provider_calls (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    step TEXT NOT NULL,
    kind TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    units JSONB NOT NULL,
    usd NUMERIC(12, 6) NOT NULL CHECK (usd >= 0),
    at TIMESTAMPTZ NOT NULL
);
CREATE INDEX provider_calls_job ON provider_calls (job_id, id);
CREATE INDEX provider_calls_at ON provider_calls (at);
