-- create_job's reads of the line stay bounded however stale the table's statistics are.
-- Its two reads of the due jobs (the slots taken, at most `max_running` rows, and the place in
-- line, at most 100) are meant to stop early in jobs_queued_run_at. While the planner still
-- counts a few queued rows (before autovacuum's next ANALYZE, and for the life of a plan a
-- webhook connection keeps), it picks a bitmap scan, which reads every due job's index entry
-- before the LIMIT applies: each description then cost time in proportion to the backlog,
-- 0.2 ms more at 7,500 queued jobs and growing (a burst is exactly when the backlog grows).
-- Without bitmap scans, both are index scans that stop at their LIMIT. Every other read of
-- create_job is an index scan already (the user's jobs, the update's key).
ALTER FUNCTION create_job(bigint, bigint, bigint, text, text, integer, text, bigint, bigint,
                          bigint, bigint, bigint, text)
    SET enable_bitmapscan = off;
