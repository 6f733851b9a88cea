-- A new job no longer sends a NOTIFY (issue 17). The notify queue's lock is held from a
-- notifying transaction's pre-commit until its commit record is flushed, so notifying commits
-- take turns, each waiting for its own fsync: under a burst of descriptions the trigger capped
-- the webhook at a fraction of what the database commits otherwise. Workers find a new job at
-- their next poll instead: idle slots claim again every WORKER_POLL_SECONDS, in `--loop` and
-- during a cron run's WORKER_LISTEN_SECONDS window (functions/worker/pool.py).
-- What a person waits on at the screen still wakes a listening worker at once, and is rare: a
-- decision (approval_statuses: the bot's, the CLI's, an operator's INSERT) and a revision at a
-- gate (job_revisions), by their triggers and notify_wake of sql/002_notify.sql.
DROP TRIGGER jobs_wake ON jobs;
