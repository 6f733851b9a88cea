-- Wake a listening worker (WORKER_LISTEN_SECONDS, `--loop`) the moment there is work: a new job,
-- a decision (the webhook's, the CLI's, or an operator's bare INSERT from the runbook), or a
-- revision at a gate. NOTIFY is part of the inserting transaction: it is delivered when that
-- commits and never if it rolls back, so a woken worker's claim sees the row.
-- Channel `<schema>_wake` (the schema cut to 58 characters, so that the name fits PostgreSQL's
-- 63), as shared.db.wake_channel spells it; payload: the job id, from the column TG_ARGV[0].
CREATE FUNCTION notify_wake() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(left(TG_TABLE_SCHEMA, 58) || '_wake', to_jsonb(NEW) ->> TG_ARGV[0]);
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_wake AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION notify_wake('id');
CREATE TRIGGER approval_statuses_wake AFTER INSERT ON approval_statuses
    FOR EACH ROW EXECUTE FUNCTION notify_wake('job_id');
CREATE TRIGGER job_revisions_wake AFTER INSERT ON job_revisions
    FOR EACH ROW EXECUTE FUNCTION notify_wake('job_id');
