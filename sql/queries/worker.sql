-- Queries the worker runs outside the job state machine.

-- name: database_size_mb
SELECT pg_database_size(current_database()) / (1024 * 1024) AS size_mb;
