-- Worker processes, so that an operator sees who runs what (manage.py stats): one row per
-- process, written when it starts, its heartbeat renewed while it runs, marked stopped when it
-- exits cleanly. A job's `worker_id` names the process that holds (or last held) its lease.
-- Nothing coordinates through this table: the claim and the leases do that, as before.
CREATE TABLE workers (
    id UUID PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    slots INTEGER NOT NULL CHECK (slots >= 1),
    render_slots INTEGER NOT NULL CHECK (render_slots >= 1),
    started_at TIMESTAMPTZ NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL,
    stopped_at TIMESTAMPTZ
);

ALTER TABLE jobs ADD COLUMN worker_id UUID;
CREATE INDEX jobs_running_by_worker ON jobs (worker_id) WHERE state = 'running';
