-- The whole state of the bot. Runs with search_path set to DATABASE_SCHEMA.

-- The operators' emergency interface: keep this shape exactly as the deployment note defines it.
-- A row (job id as text, gate, 'approved') resumes a job waiting at that gate; a 'cancelled' row
-- for any approval_type cancels the job at the next worker run.
CREATE TABLE approval_statuses (
    id SERIAL PRIMARY KEY,
    job_id VARCHAR(100) NOT NULL,
    approval_type VARCHAR(50) NOT NULL,
    status VARCHAR(20) NOT NULL CHECK (status IN ('approved', 'cancelled')),
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    expires_at TIMESTAMP NOT NULL,
    CONSTRAINT unique_job_approval UNIQUE (job_id, approval_type)
);
CREATE INDEX idx_approval_job_type ON approval_statuses (job_id, approval_type);
CREATE INDEX idx_approval_expires ON approval_statuses (expires_at);

CREATE TABLE jobs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    idempotency_key TEXT UNIQUE,
    chat_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    language TEXT NOT NULL DEFAULT 'ru',
    description TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'running', 'waiting', 'done', 'failed', 'cancelled')),
    step TEXT NOT NULL DEFAULT 'script',
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    run_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_token UUID,
    lease_expires_at TIMESTAMPTZ,
    gate TEXT CHECK (gate IN ('script', 'storyboard')),
    gate_deadline TIMESTAMPTZ,
    gate_message_id BIGINT,
    status_message_id BIGINT,
    checkpoints JSONB NOT NULL DEFAULT '{}'::jsonb,
    last_error TEXT,
    cancel_reason TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ,
    CHECK ((state = 'running') = (lease_token IS NOT NULL)),
    CHECK ((state = 'waiting') = (gate IS NOT NULL AND gate_deadline IS NOT NULL))
);
-- Only unfinished rows are indexed, so claims stay fast however many finished rows pile up.
CREATE INDEX jobs_active_run_at ON jobs (run_at, id) WHERE state IN ('queued', 'running', 'waiting');
CREATE INDEX jobs_active_user ON jobs (user_id) WHERE state IN ('queued', 'running', 'waiting');
CREATE INDEX jobs_user_created ON jobs (user_id, created_at);
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- Every Telegram update we have acted on: the dedup record for webhook redeliveries.
CREATE TABLE telegram_updates (
    update_id BIGINT PRIMARY KEY,
    kind TEXT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX telegram_updates_received ON telegram_updates (received_at);

-- History of each job: claims that failed, retries, gates, decisions, the end.
CREATE TABLE job_events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at TIMESTAMPTZ NOT NULL DEFAULT now(),
    event TEXT NOT NULL,
    step TEXT,
    attempt INTEGER,
    detail TEXT
);
CREATE INDEX job_events_job ON job_events (job_id, id);

-- Files a later worker run needs (voice, stills, the rendered video): cron runs share no disk.
CREATE TABLE job_artifacts (
    job_id BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    content BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, name)
);

-- The idempotency record of the one external effect that must never repeat: sending the video.
CREATE TABLE deliveries (
    job_id BIGINT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    state TEXT NOT NULL CHECK (state IN ('sending', 'sent')),
    telegram_message_id BIGINT,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at TIMESTAMPTZ
);

-- A user's request at an open gate that is not a plain yes or no: regenerate, or edited text.
CREATE TABLE job_revisions (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    gate TEXT NOT NULL CHECK (gate IN ('script', 'storyboard')),
    kind TEXT NOT NULL CHECK (kind IN ('regenerate', 'edit')),
    text TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    consumed_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX job_revisions_one_pending ON job_revisions (job_id, gate) WHERE consumed_at IS NULL;

-- Chats whose user blocked the bot: nothing more is sent there until they write again.
CREATE TABLE blocked_chats (
    chat_id BIGINT PRIMARY KEY,
    blocked_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
